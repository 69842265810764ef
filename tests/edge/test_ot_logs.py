"""The edge forwards the substation's OT logs: from a real Mosquitto and from a followed file, through
its buffer, to a real hub, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.buffer import Buffer
from edge.daemon import EdgeDaemon
from edge.status import format_status, read_status
from edge.sync import SyncLoop
from hub.server import HubServer
from hub.storage.sqlite import SQLiteStorage
from protocols.config import FirmwareConfig, parse_config
from protocols.wire import SyncAck, SyncBatch
from tests.conftest import free_port
from tests.support.mosquitto import MosquittoBroker
from tests.support.hub_auth import provision_edge

pytestmark = pytest.mark.timeout(120)

SUB = "KISUMU-S1"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def entry(i: int, **changes: object) -> dict:
    """OT log entry number i (its event_id is e<i>), as JSON in the OT log schema."""
    e = {"ts": (T0 + timedelta(seconds=i)).isoformat().replace("+00:00", "Z"), "kind": "command",
         "substation": SUB, "device_id": "RTU-K01", "result": "success", "command": "breaker_open",
         "point": "CB-12", "protocol": "dnp3", "source": "10.20.0.5", "user": "operator", "event_id": f"e{i}"}
    e.update(changes)
    return {k: v for k, v in e.items() if v is not None}


def config(hub_port: int, broker_port: int, ot_logs: str) -> FirmwareConfig:
    return parse_config(f"""
[identity]
edge_id = "edge-kisumu-01"
substation = "{SUB}"

[hub]
url = "http://127.0.0.1:{hub_port}"
sync_interval_s = 0.2
timeout_s = 2.0
backoff_initial_s = 0.1
backoff_max_s = 0.5

[[devices]]
id = "AMB-K1"
protocol = "mqtt"
host = "127.0.0.1"
port = {broker_port}
connect_timeout_s = 2.0
points = [{{ metric = "ambient_temperature", unit = "degC" }}]

{ot_logs}
""", "test.toml")


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def publish(port: int, topic: str, payload: object) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="scada-gateway")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        client.publish(topic, data, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def ids(events: list) -> list[str]:
    return [e.event_id for e in events]


def test_entries_from_a_broker_reach_the_hub_once_across_a_hub_outage(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker:
        hub_port = free_port()
        cfg = config(hub_port, broker.port, f"""
[ot_logs.mqtt]
host = "127.0.0.1"
port = {broker.port}
topic = "scada/logs/#"
connect_timeout_s = 2.0
""")
        storage = SQLiteStorage(tmp_path / "hub.db")

        token = provision_edge(storage, cfg.identity.edge_id)

        def at_hub() -> list[str]:
            return ids(storage.ot_logs_between(*ALL_TIME))

        async def main() -> EdgeDaemon:
            hub = HubServer(storage, hub_port)
            await hub.start()
            daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db", token=token)
            task = asyncio.create_task(daemon.run())
            try:
                collector = daemon.ot_log_sources[0]
                await until(lambda: collector.mqtt.connected, 10, "the OT log subscription")
                await asyncio.sleep(0.3)  # the SUBACK
                pub = broker.port
                await asyncio.to_thread(publish, pub, "scada/logs/RTU-K01", entry(1))  # one entry
                await asyncio.to_thread(publish, pub, "scada/logs/RTU-K01",  # a list with a bad entry
                                        [entry(2), entry(3), entry(99, source="10.0.0.300")])
                await asyncio.to_thread(publish, pub, "scada/logs/GW-1",  # an envelope, one from elsewhere
                                        {"events": [entry(4), entry(98, substation="NAIROBI-S1")]})
                await asyncio.to_thread(publish, pub, "scada/logs/GW-1", b"not json")
                await until(lambda: len(at_hub()) >= 4, 15, "the first entries at the hub")

                await hub.stop()  # the hub goes away; entries keep coming and wait in the buffer
                await asyncio.to_thread(publish, pub, "scada/logs/GW-1", [entry(5), entry(6), entry(7)])
                await until(lambda: daemon.buffer.stats().ot_logs_pending == 3 and daemon.sync.stats.hub_up is False,
                            15, "entries buffered while the hub is down")
                assert len(at_hub()) == 4

                hub = HubServer(storage, hub_port)  # back, on the same port
                await hub.start()
                await until(lambda: len(at_hub()) >= 7 and daemon.buffer.stats().ot_logs_pending == 0, 15,
                            "the backlog at the hub")
                await asyncio.sleep(0.6)  # a few more sync rounds: nothing arrives twice
                status = daemon.status_snapshot()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await hub.stop()
            assert status["ot_logs"]["sent"] == 7
            assert status["ot_logs"]["sources"][0]["entries"] == 7
            assert status["ot_logs"]["sources"][0]["rejected"] == 3
            return daemon

        daemon = asyncio.run(main())
        assert at_hub() == [f"e{i}" for i in range(1, 8)]  # each once, in order
        stored = storage.ot_logs_between(*ALL_TIME)
        assert stored[0].command == "breaker_open" and stored[0].source == "10.20.0.5"
        storage.close()

    buf = Buffer(tmp_path / "edge.db", SUB)
    try:
        reasons = sorted(d[4] for d in buf.dead_letters())
        topics = {d[2] for d in buf.dead_letters()}
        assert buf.pending_ot_logs() is None
    finally:
        buf.close()
    assert daemon.stats.dead_letters == 3
    assert reasons[0].startswith("OT log: [2].source: not an IPv4 or IPv6 address: '10.0.0.300'"), reasons
    assert reasons[1] == "OT log: events[1].substation: 'NAIROBI-S1' is not this edge's substation 'KISUMU-S1'"
    assert reasons[2].startswith("OT log: invalid JSON")
    assert topics == {"scada/logs/RTU-K01", "scada/logs/GW-1"}


def _line(i: int, **changes: object) -> str:
    return json.dumps(entry(i, **changes)) + "\n"


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def test_a_followed_file_is_read_once_across_restarts_rotations_and_a_truncation(tmp_path: Path) -> None:
    log_path = tmp_path / "logs" / "ot.jsonl"
    log_path.parent.mkdir()
    rotated = log_path.with_name("ot.jsonl.1")
    cfg = config(free_port(), free_port(), f"""
[ot_logs.file]
path = "{log_path}"
poll_interval_s = 0.05
""")  # hub and broker ports where nothing listens: everything stays buffered
    buffer_path = tmp_path / "edge.db"

    def run_edge(step: Callable[[EdgeDaemon], object]) -> None:
        """Run the edge while ``step`` (an async function of the daemon) runs, then stop it."""
        async def main() -> None:
            daemon = EdgeDaemon(cfg, buffer_path=buffer_path)
            task = asyncio.create_task(daemon.run())
            try:
                await step(daemon)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        asyncio.run(main())

    def pending(daemon: EdgeDaemon) -> int:
        return daemon.buffer.stats().ot_logs_pending

    # 1. two lines (one malformed), and half of a third
    log_path.write_text(_line(1) + _line(2, kind="auth", command=None, point=None, protocol=None) + _line(3)[:40])

    async def first(daemon: EdgeDaemon) -> None:
        await until(lambda: pending(daemon) == 1 and daemon.buffer.stats().dead_letters == 1, 10, "line 1")
        await asyncio.sleep(0.2)
        assert pending(daemon) == 1  # the half line waits for its end
        _append(log_path, _line(3)[40:] + _line(4))
        await until(lambda: pending(daemon) == 3, 10, "lines 3 and 4")

    run_edge(first)

    # 2. written while the edge is stopped; then, running, the file is rotated (and the old one
    #    gets one more line after the rename, as a writer that has not reopened yet would write)
    _append(log_path, _line(5) + _line(6))

    async def second(daemon: EdgeDaemon) -> None:
        await until(lambda: pending(daemon) == 5, 10, "lines written while stopped")
        os.rename(log_path, rotated)
        _append(rotated, _line(7))
        log_path.write_text(_line(8) + _line(9))
        await until(lambda: pending(daemon) == 8, 10, "the rotated file's last line and the new file")

    run_edge(second)

    # 3. rotated while the edge is stopped: the old file is finished first, then the new one
    _append(log_path, _line(10))
    os.rename(log_path, rotated)
    log_path.write_text(_line(11))

    async def third(daemon: EdgeDaemon) -> None:
        await until(lambda: pending(daemon) == 10, 10, "the file rotated while stopped")
        # copytruncate: the same file emptied and written again
        with log_path.open("r+") as f:
            f.truncate(0)
        log_path.write_text(_line(12))
        await until(lambda: pending(daemon) == 11, 10, "the truncated file from its start")
        await asyncio.sleep(0.3)

    run_edge(third)

    buf = Buffer(buffer_path, SUB)
    try:
        run = buf.pending_ot_logs()
        dead = buf.dead_letters()
    finally:
        buf.close()
    assert run is not None
    assert ids(run.items) == [f"e{i}" for i in (1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)]  # each once, in order
    assert len(dead) == 1
    assert dead[0][2] == str(log_path)
    assert dead[0][4].startswith("OT log: line 2: "), dead[0][4]
    assert "action" in dead[0][4] or "command" in dead[0][4]

    status = read_status(cfg, buffer_path)
    assert status["ot_logs_pending"] == 11
    text = format_status(status)
    assert "ot logs: 11 entries waiting" in text
    # the last run: line 10 (the rotated file), 11 (the new one), 12 (after the truncation)
    assert f"file {log_path}: up, 3 entries, 0 rejected, read to line 1" in text


def test_an_older_hub_that_refuses_ot_logs_still_gets_readings_and_events(tmp_path: Path) -> None:
    """A hub from before OT log forwarding answers 400 to a batch with ot_logs (an unknown field)."""
    cfg = config(free_port(), free_port(), f'[ot_logs.file]\npath = "{tmp_path / "ot.jsonl"}"\n')
    buf = Buffer(tmp_path / "edge.db", SUB)
    from protocols.otlog import OtLogEvent

    buf.append_ot_logs([msgspec.json.decode(json.dumps(entry(1)), type=OtLogEvent)])
    buf.append([(T0.timestamp(), "AMB-K1", "ambient_temperature", 25.0, "degC", 1.0, 0)])
    seen: list[dict] = []

    def old_hub(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        if "ot_logs" in body:
            return httpx.Response(400, json={"status_code": 400, "detail": "Validation failed for POST /edge/sync",
                                             "extra": [{"message": "Object contains unknown field `ot_logs`"}]})
        batch = msgspec.json.decode(request.content, type=SyncBatch)
        assert batch.readings is not None
        return httpx.Response(200, content=msgspec.json.encode(SyncAck(
            edge_id=batch.edge_id, readings_acked_through=batch.readings.last_seq, events_acked_through=0,
            readings_stored=1, events_stored=0, duplicates=0)))

    async def main() -> int | None:
        client = httpx.AsyncClient(base_url="http://hub", transport=httpx.MockTransport(old_hub))
        loop = SyncLoop(cfg, buf, client=client)
        try:
            return await loop.sync_once()
        finally:
            await loop.aclose()

    try:
        assert asyncio.run(main()) == 1
        stats = buf.stats()
        assert stats.readings_pending == 0 and stats.ot_logs_pending == 1  # kept for a hub that takes them
    finally:
        buf.close()
    assert ["ot_logs" in b for b in seen] == [True, False]
