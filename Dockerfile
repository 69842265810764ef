FROM python:3.11-slim
# DejaVu: incident reports (PDF) keep non-Latin text
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY protocols protocols
COPY models models
COPY edge edge
COPY hub hub
COPY agents agents
COPY export export
COPY simulator simulator
COPY sentinel_cli sentinel_cli
COPY firmware_configs firmware_configs
COPY scenarios scenarios
RUN pip install --no-cache-dir -e '.[edge,hub]'
