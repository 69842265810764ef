# Two commands on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-llm contract venv system-deps bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-install when pyproject.toml changes.
$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## The demo: a hub on SQLite, two simulated substations and their edges, a scenario.
demo: $(STAMP)
	$(VENV)/bin/sentinel demo $(DEMO_ARGS)

## System packages the tests start servers from (PostgreSQL, Mosquitto, socat, mbpoll);
## installed with apt-get when missing and we are root, otherwise we say what is missing.
system-deps:
	@bash scripts/system-deps.sh

## The tests, against real servers the fixtures start on 127.0.0.1; then the LLM narration tests
## in a venv of their own with the `llm` extra (crewai downgrades packages the rest relies on).
test: $(STAMP) system-deps
	$(PY) -m pytest $(PYTEST_ARGS)
	@if [ -z "$(PYTEST_ARGS)" ]; then $(MAKE) --no-print-directory test-llm; fi

## The API contract, the long run: schemathesis against a live hub with every check, 500 examples
## per operation and phase (make test runs 50). A seed other than the fixed one: CONTRACT_SEED=N.
CONTRACT_EXAMPLES ?= 500
contract: $(STAMP)
	SENTINEL_CONTRACT_EXAMPLES=$(CONTRACT_EXAMPLES) $(if $(CONTRACT_SEED),SENTINEL_CONTRACT_SEED=$(CONTRACT_SEED)) \
		$(PY) -m pytest tests/hub/test_contract.py $(PYTEST_ARGS)

LLM_VENV  ?= .venv-llm
LLM_STAMP := $(LLM_VENV)/.installed

$(LLM_STAMP): pyproject.toml
	$(PYTHON) -m venv $(LLM_VENV)
	$(LLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(LLM_VENV)/bin/python -m pip install -q -e '.[dev,llm]'
	touch $(LLM_STAMP)

## CrewAI narration against a local OpenAI-compatible server (nothing leaves 127.0.0.1).
test-llm: $(LLM_STAMP)
	CREWAI_DISABLE_TELEMETRY=true OTEL_SDK_DISABLED=true $(LLM_VENV)/bin/python -m pytest tests/agents/test_narration.py

bench: $(STAMP) system-deps
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(LLM_VENV) var build *.egg-info .pytest_cache
