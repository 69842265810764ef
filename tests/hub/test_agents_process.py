"""The agents in a process of their own, the hub on several workers: run as a user runs them.

``sentinel hub serve --agents off`` serves without the agents; ``sentinel hub agents`` runs them on
the same database, woken by new data (PostgreSQL LISTEN/NOTIFY, SQLite a change marker), under the
agents' leader lock; ``sentinel hub serve --workers N`` serves on N processes (PostgreSQL only)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import free_port
from tests.support.hub_auth import ADMIN, ADMIN_KEY
from tests.support.procs import sentinel_process

def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    # interval of an hour: a cycle within the test comes from new data (or the start), not the schedule
    return {**{k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")},
            "SENTINEL_ADMIN_KEY": ADMIN_KEY, "SENTINEL_AGENT_INTERVAL_S": "3600",
            "SENTINEL_MODEL_REGISTRY": str(tmp_path / "models"), **extra}


def _wait(what: Callable[[], Any], timeout_s: float = 30.0, why: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = what()
        except (httpx.HTTPError, OSError):
            got = None
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout_s} s: {why}")


def _get(url: str, path: str) -> Any:
    r = httpx.get(f"{url}{path}", headers=ADMIN, timeout=5)
    r.raise_for_status()
    return r.json()


def _failed_logins(device: str) -> list[dict]:
    """Four failed logins in the last minutes: the cyber sentinel's brute-force alert."""
    now = datetime.now(UTC)
    return [{"ts": (now - timedelta(minutes=4 - i)).isoformat(), "kind": "auth", "action": "login",
             "substation": "MOMBASA-S1", "device_id": device, "result": "failure", "source": "192.168.1.57",
             "user": "admin"} for i in range(4)]


def _agent_incident(url: str, device: str) -> dict | None:
    return next((i for i in _get(url, "/incidents?limit=500")["incidents"]
                 if i["agent"] == "cyber_sentinel" and i["device_id"] == device), None)


def _processes(url: str) -> set[str]:
    return {a["process"] for a in _get(url, "/agents")["agents"]}


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def test_a_hub_serving_without_agents_and_agents_processes_on_its_database_raise_incidents_and_take_over(
        db_url: str, tmp_path: Path) -> None:
    env = _env(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    host = socket.gethostname()
    with sentinel_process("hub", "serve", "--agents", "off", "--port", str(port), "--database", db_url,
                          cwd=tmp_path, env=env) as hub:
        assert "agents not here: run `sentinel hub agents`" in hub.stdout.readline()
        _wait(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, why="the hub answers")
        # no agents process yet: the hub says where the agents run and that none has reported
        before = _get(url, "/agents")["agents"]
        assert len(before) == 5 and all(a["state"] == "unknown" for a in before), before
        assert "sentinel hub agents" in before[0]["last_error"]
        refused = httpx.post(f"{url}/agents/run", headers=ADMIN, timeout=5)
        assert refused.status_code == 503 and "sentinel hub agents" in refused.json()["detail"]

        with sentinel_process("-v", "hub", "agents", "--database", db_url, cwd=tmp_path, env=env) as first:
            assert first.stdout.readline().startswith("agents: running against")
            # its first cycle (at start) is reported through the database
            _wait(lambda: _processes(url) == {f"{host}:{first.pid}"}, why="the agents process reports its status")
            with connect(url.replace("http://", "ws://") + "/ws/grid-status", additional_headers=ADMIN,
                         open_timeout=10, max_size=None) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "snapshot"
                posted = time.monotonic()
                r = httpx.post(f"{url}/ot-logs", json=_failed_logins("RTU-MOM01"), headers=ADMIN, timeout=5)
                assert r.status_code == 200 and r.json()["accepted"] == 4, r.text
                # the interval is an hour: the agents process learnt of the data from the database
                alert = _wait(lambda: _agent_incident(url, "RTU-MOM01"), 20, "the agents' incident in the API")
                assert alert["type"] == "brute_force", alert
                api_s = time.monotonic() - posted
                while True:  # and the serving hub's WebSocket feed carries it (its poll reads the database)
                    m = json.loads(ws.recv(timeout=10))
                    if any(a["agent"] == "cyber_sentinel" for a in m.get("alerts", [])):
                        break
            assert api_s < 10, api_s  # min_gap_s (5 s) after the start's cycle, then the cycle itself

            with sentinel_process("-v", "hub", "agents", "--database", db_url, cwd=tmp_path, env=env) as second:
                _wait(lambda: "stands by" in _read_some(second), 20, "the second agents process stands by")
                first.send_signal(signal.SIGKILL)  # the leader dies without a word: its lock goes with it
                first.wait(timeout=10)
                r = httpx.post(f"{url}/ot-logs", json=_failed_logins("RTU-MOM02"), headers=ADMIN, timeout=5)
                assert r.status_code == 200, r.text
                assert _wait(lambda: _agent_incident(url, "RTU-MOM02"), 30, "the second process's incident")
                _wait(lambda: _processes(url) == {f"{host}:{second.pid}"}, 10, "the second process reports")
                _stop(second)
        _stop(hub)


def test_two_agents_processes_each_a_shard_split_the_agents_as_docker_compose_runs_them(
        postgres_url: str, tmp_path: Path) -> None:
    """docker-compose.yml's agents-0 and agents-1: `sentinel hub agents` with SENTINEL_AGENT_SHARD
    0/2 and 1/2 beside a hub serving without agents. Both report through the database; the hub
    answers for the five agents with both shards named; an alert is raised once."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    host = socket.gethostname()
    with sentinel_process("hub", "serve", "--agents", "off", "--port", str(port), "--database", postgres_url,
                          cwd=tmp_path, env=_env(tmp_path)) as hub:
        _wait(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, why="the hub answers")
        with sentinel_process("hub", "agents", "--database", postgres_url, cwd=tmp_path,
                              env=_env(tmp_path, SENTINEL_AGENT_SHARD="0/2")) as shard0, \
                sentinel_process("hub", "agents", "--database", postgres_url, cwd=tmp_path,
                                 env=_env(tmp_path, SENTINEL_AGENT_SHARD="1/2")) as shard1:
            def both_report() -> bool:
                agents = {a["name"]: a for a in _get(url, "/agents")["agents"]}
                grid = agents.get("grid_monitor", {}).get("process", "")
                return (f"{host}:{shard0.pid} shard 0/2" in grid and f"{host}:{shard1.pid} shard 1/2" in grid
                        and agents["cyber_sentinel"]["process"] == f"{host}:{shard0.pid} shard 0/2")
            _wait(both_report, 30, "both shards report, the cyber sentinel from shard 0 only")
            r = httpx.post(f"{url}/ot-logs", json=_failed_logins("RTU-MOM03"), headers=ADMIN, timeout=5)
            assert r.status_code == 200, r.text
            alert = _wait(lambda: _agent_incident(url, "RTU-MOM03"), 30, "the cyber sentinel's incident")
            assert alert["type"] == "brute_force", alert
            time.sleep(1.0)  # a second process raising it too would show by now
            mine = [i for i in _get(url, "/incidents?limit=500")["incidents"] if i["device_id"] == "RTU-MOM03"]
            assert len(mine) == 1, mine
            agents = _get(url, "/agents")["agents"]
            assert len(agents) == 5 and not any("same N" in a["last_error"] for a in agents), agents
            _stop(shard1)
            _stop(shard0)
        _stop(hub)


def _read_some(proc: subprocess.Popen[str]) -> str:
    """The process's stderr so far (it logs with -v), read by a thread of its own."""
    lines = proc.__dict__.get("_lines")
    if lines is None:
        lines = proc.__dict__["_lines"] = []
        threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    return "".join(lines)


@pytest.mark.postgres
def test_serve_on_two_workers_answers_from_both_and_runs_the_agents_once(postgres_url: str, tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # its own process group: were the test to fail, its workers go too (killing uvicorn's supervisor
    # with SIGKILL leaves them running)
    with sentinel_process("hub", "serve", "--workers", "2", "--port", str(port), "--database", postgres_url,
                          cwd=tmp_path, env=_env(tmp_path, SENTINEL_AGENT_INTERVAL_S="1"),
                          start_new_session=True) as hub, _group_killed_on_failure(hub):
        assert "with 2 worker processes" in hub.stdout.readline()
        seen: dict[str, str] = {}

        def both_workers() -> bool:  # each worker answers /agents from its own orchestrator: its own pid
            with httpx.Client(headers=ADMIN, timeout=5) as fresh:  # a new connection: either worker takes it
                for a in fresh.get(f"{url}/agents").json()["agents"]:
                    seen[a["process"]] = a["state"]
            return len(seen) == 2

        _wait(both_workers, 30, f"answers from two worker processes (seen {seen})")
        _wait(lambda: both_workers() and sorted(seen.values()).count("standby") == 1, 30,
              f"one worker runs the agents, the other stands by ({seen})")
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        r = httpx.post(f"{url}/sensors/process", headers=ADMIN, timeout=5, json={"sensor_readings": [
            {"device_id": "FEEDER-F12", "sensor_type": "voltage", "metric": "voltage_l1", "value": 221.0,
             "unit": "kV", "nominal": 220.0, "substation": "NAIROBI-S1", "timestamp": now}]})
        assert r.status_code == 200, r.text
        for _ in range(6):  # every worker reads what one stored
            with httpx.Client(headers=ADMIN, timeout=5) as fresh:
                got = fresh.get(f"{url}/readings", params={"device_id": "FEEDER-F12", "metric": "voltage_l1",
                                                            "bucket": "raw"})
                assert got.status_code == 200 and got.json()["substation"] == "NAIROBI-S1", got.text
        workers = [int(p.rsplit(":", 1)[1]) for p in seen]
        _stop(hub)
        for pid in workers:  # the workers went with it
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


@contextmanager
def _group_killed_on_failure(proc: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_serve_on_several_workers_refuses_sqlite_naming_why(tmp_path: Path) -> None:
    with sentinel_process("hub", "serve", "--workers", "2", "--database", f"sqlite:///{tmp_path / 'hub.db'}",
                          cwd=tmp_path, env=_env(tmp_path)) as hub:
        _, err = hub.communicate(timeout=30)
    assert hub.returncode == 2
    assert "--workers 2 needs PostgreSQL" in err and "one writer at a time" in err, err
