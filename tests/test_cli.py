"""The `sentinel` commands as a technician runs them: separate processes, talking over loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import CONFIGS, SCENARIOS, free_port
from tests.support.hub_auth import ADMIN, ADMIN_KEY

pytestmark = pytest.mark.timeout(120)


def _sentinel(*args: str, cwd: Path, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
    return subprocess.Popen([sys.executable, "-m", "sentinel_cli.main", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_http(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer")


def _stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise AssertionError(f"did not stop on Ctrl-C:\n{out}") from None
    return out


def test_hub_sim_and_edge_as_three_processes(tmp_path: Path) -> None:
    modbus, hub_port = free_port(), free_port()
    config = tmp_path / "nairobi.toml"
    config.write_text((CONFIGS / "nairobi-s1.toml").read_text().replace("port = 15020", f"port = {modbus}"))
    hub_url = f"http://127.0.0.1:{hub_port}"
    # the technician registers the edge at the hub and gives the box the credential printed (once)
    add = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "hub", "edges", "add", "edge-nairobi-01",
                          "--substation", "NAIROBI-S1", "--database", "sqlite:///hub.db"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr
    edge_token = add.stdout.strip().splitlines()[-1]
    assert edge_token.startswith("sge_") and "shown once" in add.stderr
    procs = [
        _sentinel("hub", "serve", "--port", str(hub_port), "--database", "sqlite:///hub.db", cwd=tmp_path,
                  SENTINEL_ADMIN_KEY=ADMIN_KEY),
        _sentinel("sim", "run", str(SCENARIOS / "medium_risk_voltage_fluctuation.json"), "--config", str(config),
                  cwd=tmp_path),
    ]
    try:
        _wait_http(f"{hub_url}/healthz")
        procs.append(_sentinel("edge", "run", "--config", str(config), "--hub-url", hub_url, cwd=tmp_path,
                               SENTINEL_EDGE_TOKEN=edge_token))
        deadline = time.monotonic() + 40
        incidents: list = []
        while time.monotonic() < deadline and not incidents:
            time.sleep(0.5)
            incidents = [i for i in httpx.get(f"{hub_url}/incidents", headers=ADMIN).json()["incidents"]
                         if i["device_id"] == "FEEDER-F12"]
        assert incidents, "no FEEDER-F12 incident within 40 s"
        assert incidents[0]["type"] in {"voltage_sag", "voltage_swell"}
        stats = httpx.get(f"{hub_url}/stats", headers=ADMIN).json()
        assert stats["readings_by_substation"]["NAIROBI-S1"] > 0
        assert stats["edges"][0]["edge_id"] == "edge-nairobi-01"
    finally:
        outs = [_stop(p) for p in reversed(procs)]
    edge_out, sim_out, hub_out = outs if len(outs) == 3 else ("", *outs)
    assert f"serving modbus_tcp 127.0.0.1:{modbus}" in sim_out
    assert "edge edge-nairobi-01 (NAIROBI-S1): polling 3 devices" in edge_out
    assert (tmp_path / "hub.db").exists() and (tmp_path / "var" / "edge-nairobi-01.db").exists()
    assert "Traceback" not in "".join(outs)


def test_hub_serve_refuses_a_bad_database_url(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "hub", "serve", "--database", "mysql://x"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("sentinel: error: unsupported database URL 'mysql://x'")


def test_every_command_has_help() -> None:
    for args in (["--help"], ["hub", "serve", "--help"], ["edge", "run", "--help"], ["sim", "run", "--help"],
                 ["demo", "--help"]):
        proc = subprocess.run([sys.executable, "-m", "sentinel_cli.main", *args], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0 and "usage: sentinel" in proc.stdout
