"""``WS /ws/grid-status`` against a real hub on 127.0.0.1 (uvicorn), with a real WebSocket client
(``websockets``): who may listen, the snapshot and the updates, the substation filter, heartbeats,
and clients too slow to keep up: a deliberately slow one (a tiny receive buffer, reading nothing for
a while) must hold up neither a fast one nor ingest, and then get the latest state, not a backlog;
a stuck one is cut off and forgotten."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hub.fleet import LivenessSettings
from hub.settings import Settings
from hub.storage.sqlite import SQLiteStorage
from hub.stream import StreamSettings
from tests.support.hub_auth import ADMIN, ADMIN_KEY, bearer, edge_headers, role_headers
from tests.support.live_hub import LiveHub

FIELDS = {"type", "timestamp", "substations", "grid_status", "alerts", "forecasts", "maintenance_predictions"}


def _settings(tmp_path: Path, **stream: Any) -> Settings:
    return Settings(admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"), agents=None,
                    liveness=LivenessSettings(sync_interval_s=1.0, offline_multiple=2.0, check_interval_s=0.1),
                    stream=StreamSettings(**{"heartbeat_s": 5.0, "poll_s": 0.5, "min_gap_s": 0.05, **stream}))


@contextlib.contextmanager
def own_hub(tmp_path: Path, **stream: Any) -> Iterator[LiveHub]:
    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        with LiveHub(storage, _settings(tmp_path, **stream)) as hub:
            yield hub
    finally:
        storage.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveHub]:
    with own_hub(tmp_path) as hub:
        yield hub


class Hub:
    """The hub's HTTP API and its stream, from the test's event loop."""

    def __init__(self, live: LiveHub, http: httpx.AsyncClient) -> None:
        self.live, self.http = live, http
        self.ws_url = live.url.replace("http://", "ws://") + "/ws/grid-status"

    def listen(self, query: str = "", headers: dict[str, str] | None = None, **kw: Any) -> Any:
        return connect(self.ws_url + query, additional_headers=ADMIN if headers is None else headers,
                       max_size=None, open_timeout=10, **kw)

    async def post(self, substation: str, devices: list[str], value: float = 200.0) -> float:
        """Readings of ``devices`` (a 220 kV bus at ``value``: 200 sags); returns the seconds it took."""
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        rows = [{"device_id": d, "sensor_type": "voltage", "metric": "voltage_l1", "value": value, "unit": "kV",
                 "nominal": 220.0, "substation": substation, "timestamp": now} for d in devices]
        started = time.perf_counter()
        r = await self.http.post("/sensors/process", json={"sensor_readings": rows})
        took = time.perf_counter() - started
        assert r.status_code == 200, r.text
        return took

    async def metric(self, name: str) -> float:
        text = (await self.http.get("/metrics")).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def run(live: LiveHub, scenario: Callable[[Hub], Awaitable[None]]) -> None:
    """Play ``scenario`` against ``live`` in an event loop of the test's own (the hub has another)."""
    async def main() -> None:
        async with httpx.AsyncClient(base_url=live.url, headers=ADMIN, timeout=10) as http:
            await scenario(Hub(live, http))

    asyncio.run(main())


async def recv(ws: ClientConnection, timeout_s: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def next_message(ws: ClientConnection, want: Callable[[dict[str, Any]], bool] = lambda m: True,
                       kind: str = "update", timeout_s: float = 5.0) -> dict[str, Any]:
    """The next message of ``kind`` that ``want``s; heartbeats and other updates are passed over."""
    deadline = time.monotonic() + timeout_s
    while True:
        m = await recv(ws, max(0.01, deadline - time.monotonic()))
        if m["type"] == kind and want(m):
            return m


def devices_of(m: dict[str, Any]) -> set[str]:
    return {a["device_id"] for a in m["alerts"]}


async def refused(hub: Hub, query: str = "", headers: dict[str, str] | None = None) -> tuple[int, dict, Any]:
    with pytest.raises(InvalidStatus) as caught:
        async with hub.listen(query, headers):
            pass
    response = caught.value.response
    return response.status_code, json.loads(bytes(response.body)), response.headers


def test_only_viewers_and_above_may_listen_and_a_refusal_says_why(live: LiveHub) -> None:
    async def scenario(hub: Hub) -> None:
        status, body, headers = await refused(hub, headers={})
        assert (status, body["detail"]) == (401, "a credential is required: send Authorization: Bearer <key>")
        assert headers["www-authenticate"].startswith("Bearer")
        status, body, _ = await refused(hub, headers=bearer("sgk_not-a-key"))
        assert status == 401 and "unknown, revoked or expired" in body["detail"]
        edge = await asyncio.to_thread(edge_headers, httpx.Client(base_url=hub.live.url), "NRB-EDGE-01", "NAIROBI-S1")
        status, body, _ = await refused(hub, headers=edge)
        assert status == 403 and "needs viewer" in body["detail"]  # an edge syncs; it does not watch
        status, body, _ = await refused(hub, "?substation=")
        assert status == 400 and body["detail"].startswith("substation[0]")

        viewer = await asyncio.to_thread(role_headers, httpx.Client(base_url=hub.live.url), "viewer")
        async with hub.listen(headers=viewer) as ws:
            assert (await recv(ws))["type"] == "snapshot"

        # a browser: the login's session cookie, from the hub's own page only
        r = await hub.http.post("/auth/users", json={"name": "olga", "role": "viewer", "password": "a long password"})
        assert r.status_code == 201, r.text
        token = (await hub.http.post("/auth/login", json={"username": "olga", "password": "a long password"},
                                     headers={})).json()["token"]
        cookie = {"Cookie": f"sentinel_session={token}"}
        async with hub.listen(headers={**cookie, "Origin": hub.live.url}) as ws:
            assert (await recv(ws))["type"] == "snapshot"
        status, body, _ = await refused(hub, headers={**cookie, "Origin": "http://evil.example"})
        assert status == 403 and "origin http://evil.example is not this hub's" in body["detail"]
        assert await hub.metric('sentinel_hub_ws_connections_total{result="refused"}') == 5
        assert await hub.metric('sentinel_hub_ws_connections_total{result="accepted"}') == 2

    run(live, scenario)


def test_a_snapshot_on_connect_then_updates_as_things_change(live: LiveHub) -> None:
    async def scenario(hub: Hub) -> None:
        await hub.post("NAIROBI-S1", ["FEEDER-F12"])  # a sag before anyone listens
        async with hub.listen() as ws:
            snap = await recv(ws)
            assert set(snap) == FIELDS and snap["type"] == "snapshot" and snap["substations"] is None
            assert abs((datetime.now(UTC) - datetime.fromisoformat(snap["timestamp"])).total_seconds()) < 10
            (alert,) = snap["alerts"]
            assert (alert["device_id"], alert["type"], alert["status"]) == ("FEEDER-F12", "voltage_sag", "OPEN")
            assert snap["forecasts"] == [] and snap["maintenance_predictions"] == []

            posted = time.monotonic()
            await hub.post("NAIROBI-S1", ["FEEDER-F13"])  # new data: a new incident
            update = await next_message(ws, lambda m: "FEEDER-F13" in devices_of(m))
            assert time.monotonic() - posted < 3.0  # promptly: well before the 5 s heartbeat
            assert set(update) == FIELDS and update["alerts"][0]["device_id"] == "FEEDER-F13"  # newest first
            # the substation, just heard from, shows in that update or a later one (the liveness check's)
            if "NAIROBI-S1" not in update["grid_status"]:
                update = await next_message(ws, lambda m: "NAIROBI-S1" in m["grid_status"])
            status = update["grid_status"]["NAIROBI-S1"]
            assert status["stale"] is False and status["status"] == "UNKNOWN"  # heard, not judged (no agents here)

            r = await hub.http.post(f"/incidents/{alert['id']}/status", json={"status": "RESOLVED"})
            assert r.status_code == 200, r.text  # an operator's change, not new data: seen by the next read
            update = await next_message(ws, lambda m: "FEEDER-F12" not in devices_of(m))
            assert devices_of(update) == {"FEEDER-F13"}
            # the substation goes stale (telemetry silent for 2 s): that is a change too
            status = (await next_message(ws, lambda m: m["grid_status"]["NAIROBI-S1"]["stale"]))["grid_status"]
            assert status["NAIROBI-S1"]["status"] == "UNKNOWN" and "no reading for" in status["NAIROBI-S1"]["reason"]

    run(live, scenario)


def test_a_client_may_ask_for_some_substations_only(live: LiveHub) -> None:
    async def scenario(hub: Hub) -> None:
        async with hub.listen("?substation=NAIROBI-S1&substation=KISUMU-S1") as mine, hub.listen() as everything:
            assert (await recv(mine))["substations"] == ["KISUMU-S1", "NAIROBI-S1"]
            await recv(everything)
            await hub.post("MOMBASA-S1", ["MSA-F01"])
            await next_message(everything, lambda m: "MSA-F01" in devices_of(m))
            await hub.post("NAIROBI-S1", ["FEEDER-F12"])
            update = await next_message(mine, lambda m: bool(m["alerts"]))
            assert devices_of(update) == {"FEEDER-F12"}  # Mombasa's sag is not theirs
            later = await next_message(mine, lambda m: bool(m["grid_status"]))
            assert set(later["grid_status"]) == {"NAIROBI-S1"}
            assert all(a["substation"] == "NAIROBI-S1" for a in later["alerts"])
            full = await next_message(everything, lambda m: {"MOMBASA-S1", "NAIROBI-S1"} <= set(m["grid_status"]))
            assert devices_of(full) == {"MSA-F01", "FEEDER-F12"}

    run(live, scenario)


def test_a_new_incident_does_not_wait_out_the_streams_gap(tmp_path: Path) -> None:
    """Under load the stream reads the state at most every ``min_gap_s`` (here 6 s). A change that
    is only new readings waits for that; a new incident does not: it is on the WebSocket within a
    few seconds of being stored, though the stream read the state just before."""
    async def scenario(hub: Hub) -> None:
        async with hub.listen() as ws:
            await recv(ws)  # the snapshot
            await hub.post("MOMBASA-S1", ["BUS-1"], value=220.0)  # a substation heard: a change, not urgent
            await next_message(ws, lambda m: "MOMBASA-S1" in m["grid_status"], timeout_s=10)
            posted = time.monotonic()  # the stream has just read: its gap of 6 s starts now
            await hub.post("NAIROBI-S1", ["FEEDER-F12"])  # a sag: a new incident
            await next_message(ws, lambda m: "FEEDER-F12" in devices_of(m), timeout_s=10)
            assert time.monotonic() - posted < 3.0, "the new incident waited for the stream's gap"

    with own_hub(tmp_path, min_gap_s=6.0, poll_s=20.0) as hub:
        run(hub, scenario)


def test_heartbeats_keep_a_quiet_stream_alive(tmp_path: Path) -> None:
    async def scenario(hub: Hub) -> None:
        async with hub.listen("?substation=QUIET") as ws:
            assert (await recv(ws))["type"] == "snapshot"
            await hub.post("NAIROBI-S1", ["FEEDER-F12"])  # elsewhere: no update for this client
            beats = [await recv(ws, 2.0) for _ in range(3)]
            assert [b["type"] for b in beats] == ["heartbeat"] * 3
            assert all(set(b) == {"type", "timestamp", "substations"} and b["substations"] == ["QUIET"]
                       for b in beats)
            gaps = [(datetime.fromisoformat(b["timestamp"]) - datetime.fromisoformat(a["timestamp"])).total_seconds()
                    for a, b in zip(beats, beats[1:])]
            assert all(0.3 < g < 1.0 for g in gaps), gaps
        assert await hub.metric('sentinel_hub_ws_messages_sent_total{type="heartbeat"}') >= 3

    with own_hub(tmp_path, heartbeat_s=0.4) as live:
        run(live, scenario)


def tiny_socket(port: int, rcvbuf: int = 4096) -> socket.socket:
    """A client socket whose receive buffer is as small as the kernel allows: a reader that stops
    reading fills it, and the hub's side, at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


def test_a_slow_client_holds_up_no_one_and_then_gets_the_latest_state_not_a_backlog(live: LiveHub) -> None:
    async def scenario(hub: Hub) -> None:
        baseline = [await hub.post("BASE-S1", [f"B{i:02d}-{k}" for k in range(10)]) for i in range(8)]

        # the slow client: a tiny receive buffer, one message queued at most, and no compression (each
        # message its full ~150 KB on the wire: what the hub and kernel hold for it fills at once)
        async with hub.listen() as fast, hub.listen(sock=tiny_socket(hub.live.port), max_queue=1,
                                                    compression=None) as slow:
            await recv(fast)
            await recv(slow)
            heard: list[tuple[float, set[str]]] = []

            async def read_fast() -> None:
                while True:
                    m = await recv(fast, 30)
                    heard.append((time.monotonic(), devices_of(m)))

            reader = asyncio.create_task(read_fast())
            posted: list[tuple[float, str]] = []  # the slow client reads nothing meanwhile
            during = []
            for i in range(40):  # 10 new sags each: each update carries the 200 newest alerts (~150 KB)
                during.append(await hub.post("NAIROBI-S1", [f"F{i:02d}-{k}" for k in range(10)]))
                posted.append((time.monotonic(), f"F{i:02d}-9"))
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            reader.cancel()

            # the fast client heard of every post promptly
            delays = [next(t for t, devs in heard if t >= at - 0.5 and dev in devs) - at for at, dev in posted]
            assert statistics.median(delays) < 0.5 and max(delays) < 2.0, delays
            # ingest did not wait for the slow client
            assert statistics.median(during) < 4 * statistics.median(baseline) + 0.1, (baseline, during)
            assert max(during) < 2.0, during
            coalesced = await hub.metric("sentinel_hub_ws_updates_coalesced_total")
            assert coalesced >= 1  # updates the slow client never got: replaced in its slot

            # the slow client reads again: what the connection held, then the latest state, no backlog
            last_device = posted[-1][1]
            drained = 0
            while True:
                m = await recv(slow, 10)
                drained += 1
                if last_device in devices_of(m):
                    break
            assert len(m["alerts"]) == 200 and m["alerts"][0]["device_id"].startswith("F39-")
            updates = sum(1 for _ in heard)
            print(f"slow client: {drained} messages drained, {coalesced:g} coalesced; the fast one got {updates}")
            assert drained < updates / 2, (drained, updates, coalesced)
            assert drained + coalesced >= updates - 2  # each update reached it or was replaced (racing the last)
            with pytest.raises(TimeoutError):  # nothing older follows (newer may: the substation going stale)
                while True:
                    m = await recv(slow, 0.7)
                    assert m["type"] == "heartbeat" or last_device in devices_of(m)
        assert await hub.metric("sentinel_hub_ws_clients") == 0

    run(live, scenario)


def test_a_stuck_client_is_cut_off_and_forgotten(tmp_path: Path) -> None:
    async def scenario(hub: Hub) -> None:
        async with hub.listen(sock=tiny_socket(hub.live.port), max_queue=1, compression=None) as stuck, \
                hub.listen() as fine:
            await recv(stuck)
            await recv(fine)
            assert await hub.metric("sentinel_hub_ws_clients") == 2
            for i in range(30):  # far more than the connection holds
                await hub.post("NAIROBI-S1", [f"F{i:02d}-{k}" for k in range(10)])
                await asyncio.sleep(0.05)
            cut = time.monotonic()
            while await hub.metric("sentinel_hub_ws_clients") != 1:
                assert time.monotonic() - cut < 10, "the stuck client was not cut off"
                await asyncio.sleep(0.1)
            # the other client is served on
            await hub.post("NAIROBI-S1", ["LAST"])
            await next_message(fine, lambda m: "LAST" in devices_of(m))
            with pytest.raises(ConnectionClosed):  # the stuck one finds its connection closed
                while True:
                    await recv(stuck, 10)

    with own_hub(tmp_path, send_timeout_s=1.0) as live:
        run(live, scenario)


def test_a_new_incident_comes_with_the_agents_products_of_the_last_read_then_fresh_ones(tmp_path: Path) -> None:
    """A read for a new incident takes the forecasts and maintenance predictions from the last read
    when that is under ``poll_s`` old (with a forecast per feeder they were most of a read), and the
    next regular read brings them up to date."""
    from hub.storage.base import Document

    def prediction(days: float) -> Document:
        return Document(kind="maintenance", key="NAIROBI-S1/TX-1", timestamp=datetime.now(UTC),
                        body={"transformer_id": "TX-1", "days_to_failure": days})

    async def scenario(hub: Hub) -> None:
        hub.live.storage.put_documents([prediction(30.0)])
        async with hub.listen() as ws:
            snapshot = await recv(ws)
            assert [p["days_to_failure"] for p in snapshot["maintenance_predictions"]] == [30.0]
            hub.live.storage.put_documents([prediction(3.0)])  # no notification: the agents' product changed
            await hub.post("NAIROBI-S1", ["FEEDER-F12"])  # a sag: a new incident, an urgent read
            m = await next_message(ws, lambda m: "FEEDER-F12" in devices_of(m))
            assert [p["days_to_failure"] for p in m["maintenance_predictions"]] == [30.0]
            await hub.post("NAIROBI-S1", ["BUS-9"], value=220.0)  # readings only: a regular read
            m = await next_message(ws, lambda m: m["maintenance_predictions"][0]["days_to_failure"] == 3.0)
            assert "FEEDER-F12" in devices_of(m)

    with own_hub(tmp_path, min_gap_s=0.05, poll_s=20.0) as hub:
        run(hub, scenario)
