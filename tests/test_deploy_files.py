"""Deployment files carry no secrets: every password, key or token comes from the operator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SECRET_WORDS = re.compile(r"(PASSWORD|SECRET|TOKEN|_KEY)\b", re.I)


def test_docker_compose_has_no_default_secrets() -> None:
    text = (REPO / "docker-compose.yml").read_text()
    compose = yaml.safe_load(text)
    assert {"hub-1", "hub-2", "agents-0", "agents-1", "proxy", "mosquitto", "credentials", "edge-nairobi", "edge-mombasa",
            "db"} <= set(compose["services"])
    # the agents in a process of their own, the replicas without them (an agent cycle never slows ingest)
    # two shards of the substations (tests/hub/test_agents_process.py runs them so)
    for i in (0, 1):
        agents = compose["services"][f"agents-{i}"]
        assert agents["command"] == "sentinel hub agents"
        assert agents["environment"]["SENTINEL_AGENT_SHARD"] == f"{i}/2"
        assert agents["environment"]["SENTINEL_DATABASE_URL"] == compose["services"]["hub-1"]["environment"][
            "SENTINEL_DATABASE_URL"]
    assert all("--agents off" in compose["services"][h]["command"] for h in ("hub-1", "hub-2"))
    # ${VAR:-default} / ${VAR-default} give a secret a value in the file; ${VAR:?message} refuses to start
    for var, default in re.findall(r"\$\{(\w+):?-([^}]*)\}", text):
        assert not SECRET_WORDS.search(var), f"docker-compose.yml gives {var} the default {default!r}"
    for var in ("SENTINEL_ADMIN_KEY", "POSTGRES_PASSWORD", "MQTT_PASSWORD"):
        assert re.search(rf"\$\{{{var}:\?", text), f"{var} must be required (${{{var}:?...}})"
    assert "SENTINEL_EDGE_TOKENS" not in text  # shared edge tokens are gone: one credential per edge
    # the edges take the credential the credentials service made for them, nothing else
    for edge, edge_id in (("edge-nairobi", "edge-nairobi-01"), ("edge-mombasa", "edge-mombasa-01")):
        service = compose["services"][edge]
        assert f"/credentials/{edge_id}" in service["command"]
        assert service["depends_on"]["credentials"]["condition"] == "service_completed_successfully"
    assert "sentinel hub edges add" in str(compose["services"]["credentials"]["command"])


COMPOSE_ENV = {"SENTINEL_ADMIN_KEY": "k" * 32, "POSTGRES_PASSWORD": "p" * 24, "MQTT_PASSWORD": "m" * 24}


def _compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k not in COMPOSE_ENV}
    return subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config"], cwd=REPO,
                          env={**keep, **env}, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="no docker-compose (Debian: apt-get install docker-compose)")
def test_docker_compose_config_is_valid_and_refuses_to_run_without_each_secret() -> None:
    """Compose's own reading of the file (no daemon needed): valid with the secrets given; without
    any one of them it refuses, naming it. Every long-running service restarts by itself, and the
    stateful ones keep their state in volumes."""
    done = _compose_config(COMPOSE_ENV)
    assert done.returncode == 0, done.stderr
    compose = yaml.safe_load(done.stdout)
    services = compose["services"]
    for name, service in services.items():
        if name not in ("credentials", "mqtt-credentials"):  # the one-shots
            assert service.get("restart") == "unless-stopped", name
    for name, mount in (("db", "/var/lib/postgresql/data"), ("mosquitto", "/mosquitto/data"),
                        ("hub-1", "/var/lib/sentinel/models"), ("hub-2", "/var/lib/sentinel/models"),
                        ("agents-0", "/var/lib/sentinel/models"), ("agents-1", "/var/lib/sentinel/models"),
                        ("edge-nairobi", "/app/var"), ("edge-mombasa", "/app/var")):
        assert mount in {_named_volume_target(v, compose) for v in services[name]["volumes"]}, (name, mount)
    for hub in ("hub-1", "hub-2"):
        assert "healthz" in " ".join(services[hub]["healthcheck"]["test"])
        assert "share_group=hubs" in services[hub]["environment"]["SENTINEL_MQTT_URL"]
    for var in COMPOSE_ENV:
        missing = _compose_config({k: v for k, v in COMPOSE_ENV.items() if k != var})
        assert missing.returncode != 0 and var in missing.stderr, (var, missing.stderr)


def _named_volume_target(volume: str | dict, compose: dict) -> str | None:
    """Where a named volume (not a bind mount) is mounted: compose v1 writes ``name:/target:rw``,
    v2 a mapping."""
    if isinstance(volume, dict):
        return volume["target"] if volume.get("type") == "volume" else None
    source, target = volume.split(":")[:2]
    return target if source in compose.get("volumes", {}) else None


def test_each_compose_service_runs_a_command_the_end_to_end_tests_run() -> None:
    """What the deployment runs is what the tests run: every service of our image runs one of the
    commands tests/test_cli.py (or, for the agents, tests/hub/test_agents_process.py) runs as a
    subprocess against live servers."""
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    e2e = (REPO / "tests" / "test_cli.py").read_text() + (REPO / "tests" / "hub" / "test_agents_process.py").read_text()
    tested = {"sentinel hub serve": '"hub", "serve"', "sentinel hub edges add": '"hub", "edges", "add"',
              "sentinel sim run": '"sim", "run"', "sentinel edge run": '"edge", "run"',
              "sentinel hub agents": '"hub", "agents"', "--agents off": '"--agents", "off"'}
    for name, service in compose["services"].items():
        if service.get("image") != "smartgrid-sentinel:latest":
            continue
        command = service["command"] if isinstance(service["command"], str) else " ".join(service["command"])
        runs = [c for c in tested if c in command]
        assert runs, f"{name} runs {command!r}, which no end-to-end test runs"
        for c in runs:
            assert tested[c] in e2e, f"no end-to-end test runs {c}"
        if "SENTINEL_AGENT_SHARD" in service.get("environment", {}):  # the shards too, as configured here
            assert "SENTINEL_AGENT_SHARD=" in e2e, f"{name} runs a shard, which no end-to-end test runs"


def test_no_config_or_script_in_the_repo_holds_a_secret_value() -> None:
    files = [*REPO.glob("firmware_configs/**/*.toml"), *REPO.glob("hub/*.toml"), REPO / "Dockerfile",
             REPO / "Makefile", *REPO.glob("scripts/*")]
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"\s*(\w*(password|secret|token|api_key)\w*)\s*=\s*\"([^\"]+)\"", line, re.I)
            assert not m or m.group(1).endswith("_env"), f"{path.name}:{n}: {m.group(1)} holds a value"


UNIT = REPO / "deploy" / "systemd" / "sentinel-edge.service"


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify on the unit, its ExecStart pointed at this environment's sentinel
    (verify insists the command exists)."""
    sentinel = Path(sys.executable).with_name("sentinel")
    assert sentinel.exists(), f"no sentinel command beside {sys.executable}"
    path = tmp_path / "sentinel-edge.service"
    path.write_text(unit_text.replace("/opt/sentinel/bin/sentinel", str(sentinel)))
    return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze (Debian: apt-get install systemd)")
def test_the_edge_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    text = UNIT.read_text()
    r = _verify(text, tmp_path)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    # the check has teeth: a misspelt hardening option is reported
    bad = _verify(text.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"), tmp_path)
    assert "NoNewPrivilege" in bad.stderr


def test_the_edge_unit_runs_unprivileged_hardened_and_restarts() -> None:
    keys: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    assert keys["User"] == ["sentinel"] and keys["Group"] == ["sentinel"]
    assert keys["ExecStart"][0].split()[1:3] == ["edge", "run"]
    assert keys["Restart"] == ["on-failure"] and keys["StateDirectory"] == ["sentinel"]
    for option in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "RestrictSUIDSGID"):
        assert keys[option] == ["yes"], option
    assert keys["ProtectSystem"] == ["strict"] and keys["CapabilityBoundingSet"] == [""]
    assert keys["EnvironmentFile"] == ["/etc/sentinel/edge.env"]  # the credential, never in the unit
    assert not any(SECRET_WORDS.search(k) for k in keys)
    # the buffer is in the state directory, which survives restarts and upgrades
    assert "--buffer /var/lib/sentinel/" in keys["ExecStart"][0]
    # remote config replaces the config file and keeps its previous version beside it: under
    # ProtectSystem=strict its directory must be listed writable
    config = Path(keys["ExecStart"][0].split("--config ")[1].split()[0])
    assert str(config.parent) in " ".join(keys.get("ReadWritePaths", [])).split()
