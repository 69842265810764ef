"""Several hubs on one database: the agents run on one replica only (the holder of the agents'
leader lock), the others stand by, and when the leader is killed another takes over."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from hub.storage import open_storage
from hub.storage.sqlite import SQLiteStorage
from tests.conftest import free_port
from tests.support.hub_auth import ADMIN_KEY
from tests.support.procs import sentinel_process


def test_one_holder_of_a_leader_lock_at_a_time_on_postgresql(postgres_url: str) -> None:
    a, b = open_storage(postgres_url), open_storage(postgres_url)
    try:
        la, lb = a.leader_lock("agents"), b.leader_lock("agents")
        assert la.acquire() and la.acquire()  # taken, then confirmed
        assert not lb.acquire()
        other = b.leader_lock("exports")  # another job's lock is another lock
        assert other.acquire()
        la.release()
        assert lb.acquire() and not la.acquire()
        lb.release()
        other.release()
    finally:
        a.close()
        b.close()


def test_one_holder_of_a_leader_lock_at_a_time_on_sqlite(tmp_path: Path) -> None:
    a, b = SQLiteStorage(tmp_path / "hub.db"), SQLiteStorage(tmp_path / "hub.db")
    try:
        la, lb = a.leader_lock("agents"), b.leader_lock("agents")
        assert la.acquire() and not lb.acquire()
        la.release()
        assert lb.acquire() and not la.acquire()
        lb.release()
    finally:
        a.close()
        b.close()
    memory = SQLiteStorage(":memory:")
    try:
        assert memory.leader_lock("agents").acquire()  # one process by definition
    finally:
        memory.close()


def _agents(url: str) -> list[dict]:
    r = httpx.get(f"{url}/agents", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5)
    r.raise_for_status()
    return r.json()["agents"]


def _wait(what, timeout_s: float = 40.0):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            got = what()
        except httpx.HTTPError:
            got = None
        if got:
            return got
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout_s} s")


@pytest.mark.postgres
def test_two_hub_replicas_run_the_agents_once_and_the_standby_takes_over_when_the_leader_is_killed(
        postgres_url: str, tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")},
           "SENTINEL_ADMIN_KEY": ADMIN_KEY, "SENTINEL_AGENT_INTERVAL_S": "1",
           "SENTINEL_MODEL_REGISTRY": str(tmp_path / "models")}
    ports = free_port(), free_port()
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    with sentinel_process("hub", "serve", "--port", str(ports[0]), "--database", postgres_url, cwd=tmp_path,
                          env=env) as first:
        _wait(lambda: _agents(urls[0]))
        leader_runs = _wait(lambda: [a["runs"] for a in _agents(urls[0]) if a["runs"] >= 1])
        assert leader_runs
        with sentinel_process("hub", "serve", "--port", str(ports[1]), "--database", postgres_url, cwd=tmp_path,
                              env=env) as second:
            standby = _wait(lambda: all(a["state"] == "standby" for a in _agents(urls[1])) and _agents(urls[1]))
            time.sleep(3)  # several intervals: the standby still ran nothing, the leader went on
            assert all(a["runs"] == 0 and a["state"] == "standby" for a in _agents(urls[1])), standby
            assert max(a["runs"] for a in _agents(urls[0])) > max(leader_runs)
            first.send_signal(signal.SIGKILL)  # the leader dies without a word: its session, and lock, go
            first.wait(timeout=10)
            took_over = _wait(lambda: [a for a in _agents(urls[1]) if a["runs"] >= 1 and a["state"] != "standby"])
            assert took_over
            second.send_signal(signal.SIGINT)
            second.wait(timeout=20)
            assert second.returncode == 0


@pytest.mark.postgres
def test_a_websocket_client_on_one_replica_sees_an_incident_made_through_another(postgres_url: str,
                                                                                 tmp_path: Path) -> None:
    """Two hubs on one database (in this process, each its own storage): a sag posted to replica A
    becomes an incident that a WebSocket client of replica B sees, within the stream's poll."""
    import asyncio
    import json
    from datetime import UTC, datetime

    from websockets.asyncio.client import connect

    from hub.fleet import LivenessSettings
    from hub.settings import Settings
    from hub.stream import StreamSettings
    from tests.support.hub_auth import ADMIN
    from tests.support.live_hub import LiveHub

    settings = Settings(admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"), agents=None,
                        liveness=LivenessSettings(sync_interval_s=0.5, offline_multiple=2.0, check_interval_s=0.1),
                        stream=StreamSettings(heartbeat_s=5.0, poll_s=0.5, min_gap_s=0.05))
    a_store, b_store = open_storage(postgres_url), open_storage(postgres_url)

    async def scenario(a: LiveHub, b: LiveHub) -> float:
        async with connect(b.url.replace("http://", "ws://") + "/ws/grid-status", additional_headers=ADMIN,
                           open_timeout=10, max_size=None) as ws:
            snap = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snap["type"] == "snapshot" and snap["alerts"] == []
            now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            async with httpx.AsyncClient(base_url=a.url, headers=ADMIN, timeout=10) as http:
                posted = time.monotonic()
                r = await http.post("/sensors/process", json={"sensor_readings": [
                    {"device_id": "FEEDER-F12", "sensor_type": "voltage", "metric": "voltage_l1", "value": 200.0,
                     "unit": "kV", "nominal": 220.0, "substation": "NAIROBI-S1", "timestamp": now}]})
                assert r.status_code == 200, r.text
            while True:
                m = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if m["type"] == "update" and any(x["device_id"] == "FEEDER-F12" for x in m["alerts"]):
                    return time.monotonic() - posted

    try:
        with LiveHub(a_store, settings) as a, LiveHub(b_store, settings) as b:
            seen_after = asyncio.run(scenario(a, b))
        assert seen_after < 3.0  # poll_s 0.5: B reads the shared database on its own
    finally:
        a_store.close()
        b_store.close()
