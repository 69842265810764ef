"""Deployment files carry no secrets: every password, key or token comes from the operator."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)\b", re.I)


def test_docker_compose_has_no_default_secrets() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    assert {"hub", "credentials", "edge-nairobi", "edge-mombasa", "db"} <= set(compose["services"])
    # ${VAR:-default} / ${VAR-default} give a secret a value in the file; ${VAR:?message} refuses to start
    for var, default in re.findall(r"\$\{(\w+):?-([^}]*)\}", text):
        assert not SECRET_WORDS.search(var), f"docker-compose.yml gives {var} the default {default!r}"
    for var in ("SENTINEL_ADMIN_KEY", "POSTGRES_PASSWORD"):
        assert re.search(rf"\$\{{{var}:\?", text), f"{var} must be required (${{{var}:?...}})"
    assert "SENTINEL_EDGE_TOKENS" not in text  # shared edge tokens are gone: one credential per edge
    # the edges take the credential the credentials service made for them, nothing else
    for edge, edge_id in (("edge-nairobi", "edge-nairobi-01"), ("edge-mombasa", "edge-mombasa-01")):
        service = compose["services"][edge]
        assert f"/credentials/{edge_id}" in service["command"]
        assert service["depends_on"]["credentials"]["condition"] == "service_completed_successfully"
    assert "sentinel hub edges add" in str(compose["services"]["credentials"]["command"])


def test_no_config_or_script_in_the_repo_holds_a_secret_value() -> None:
    files = [*REPO.glob("firmware_configs/**/*.toml"), *REPO.glob("hub/*.toml"), REPO / "Dockerfile",
             REPO / "Makefile", *REPO.glob("scripts/*")]
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"\s*(\w*(password|secret|token|api_key)\w*)\s*=\s*\"([^\"]+)\"", line, re.I)
            assert not m or m.group(1).endswith("_env"), f"{path.name}:{n}: {m.group(1)} holds a value"
