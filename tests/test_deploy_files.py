"""Deployment files carry no secrets: every password, key or token comes from the operator."""

from __future__ import annotations

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
