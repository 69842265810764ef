"""Live data first after an outage (edge.sync, "Live first"): the first batch the hub takes brings
the newest readings, the backlog then arrives oldest first beside the live ones, and at the end
every reading the edge made is at the hub exactly once; also after a lost acknowledgement, and
with a hub from before live runs (which refuses the field: the edge goes oldest-first only).
Against the real hub on SQLite and on PostgreSQL in both layouts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from edge.buffer import Buffer
from edge.status import format_status, read_status
from edge.sync import HubFault, SyncLoop
from hub.settings import Settings
from hub.storage import open_storage
from hub.storage.base import Storage
from protocols.config import FirmwareConfig, load_config
from protocols.wire import decode_batch, encode
from sentinel_cli.faults.proxy import ChaosProxy
from tests.conftest import CONFIGS, free_port
from tests.edge.test_hostile_hub import FakeHub, no_incidents
from tests.support.hub_auth import provision_edge
from tests.support.live_hub import LiveHub

pytestmark = pytest.mark.timeout(180)

SUB, EDGE = "NAIROBI-S1", "edge-nairobi-01"
DEVICES = ("FEEDER-F12", "TX-1")
T0 = float(int(time.time()) - 86_400)  # a day ago: reading i was taken at T0 + i
BATCH = 400  # readings a batch: the live run takes up to 200, a backlog of more than 1,200 starts it
BACKENDS = ["sqlite", pytest.param("postgres-plain", marks=pytest.mark.postgres),
            pytest.param("postgres-timescaledb", marks=pytest.mark.postgres)]
_URL_FIXTURE = {"postgres-plain": "postgres_url", "postgres-timescaledb": "timescale_url"}


@pytest.fixture(params=BACKENDS)
def hub_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Storage, str]]:
    url = (f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite"
           else request.getfixturevalue(_URL_FIXTURE[request.param]))
    storage = open_storage(url)
    try:
        yield storage, url
    finally:
        storage.close()


def config(url: str) -> FirmwareConfig:
    cfg = load_config(CONFIGS / "nairobi-s1.toml")
    hub = msgspec.structs.replace(cfg.hub, url=url, batch_max_readings=BATCH, sync_interval_s=0.2, timeout_s=2.0,
                                  backoff_initial_s=0.05, backoff_max_s=0.2)
    return msgspec.structs.replace(cfg, hub=hub)


def rows(n: int, start: int) -> list[tuple]:
    """Readings ``start`` .. ``start + n - 1``, a second apart, the two devices in turn."""
    return [(T0 + i, DEVICES[i % 2], "voltage_l1", 11.0 + (i % 97) / 1000, "kV", 1.0, 0)
            for i in range(start, start + n)]


def at_hub(storage: Storage) -> Counter:
    """How often the hub holds each reading (by its second, which is its device, metric and ts)."""
    start, end = datetime.fromtimestamp(T0 - 1, UTC), datetime.fromtimestamp(T0 + 10**6, UTC)
    return Counter(round(r.ts.timestamp() - T0) for device in DEVICES
                   for r in storage.query_readings(device, "voltage_l1", start, end, limit=1_000_000))


def hub_settings(url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=url, agents=None, model_registry=str(tmp_path / "models"))


async def outage(buf: Buffer, cfg: FirmwareConfig, made: int, n: int) -> int:
    """``n`` readings arrive in chunks while the hub is down (every sync attempt fails); the new total."""
    sync = SyncLoop(config(f"http://127.0.0.1:{free_port()}"), buf, token="unused")
    try:
        for start in range(made, made + n, 1_000):
            buf.append(rows(min(1_000, made + n - start), start))
            with pytest.raises(HubFault):
                await sync.sync_once()
    finally:
        await sync.aclose()
    return made + n


def test_after_an_outage_the_newest_come_first_then_the_backlog_oldest_first_each_once(
        hub_storage: tuple[Storage, str], tmp_path: Path) -> None:
    storage, url = hub_storage
    token = provision_edge(storage, EDGE)
    buf = Buffer(tmp_path / "edge.db", SUB)
    made = asyncio.run(outage(buf, config(""), 0, 6_000))

    async def back(hub_url: str) -> list[str]:
        nonlocal made
        sync = SyncLoop(config(hub_url), buf, token=token)
        statuses = []
        try:
            assert await sync.sync_once() == BATCH
            held = at_hub(storage)
            assert max(held) == made - 1  # the newest reading is at the hub at once ...
            assert sorted(held) == [*range(200), *range(made - 200, made)]  # ... beside the oldest
            (state,) = storage.edge_states()
            assert state.readings_acked_through == 200
            statuses.append(format_status(read_status(config(hub_url), buf.path)))
            for _ in range(40):
                buf.append(rows(20, made))  # live data goes on arriving
                made += 20
                if await sync.sync_once() is None:
                    break
                held = at_hub(storage)
                (state,) = storage.edge_states()
                mark = state.readings_acked_through  # the backlog: always everything up to the mark, in order
                if buf.live_range()[0]:
                    assert made - 1 in held  # the live lane keeps up: the newest is at the hub after each sync
                    assert sorted(s for s in held if s < mark) == list(range(mark))
                statuses.append(format_status(read_status(config(hub_url), buf.path)))
            while await sync.sync_once() is not None:
                pass
            assert sync.stats.live_sent >= 200 + 20 * 10 and sync.stats.failures == 0
        finally:
            await sync.aclose()
        return statuses

    try:
        with LiveHub(storage, hub_settings(url, tmp_path)) as hub:
            statuses = asyncio.run(back(hub.url))
        held = at_hub(storage)
        assert sorted(held) == list(range(made)) and set(held.values()) == {1}  # every reading, once
        (state,) = storage.edge_states()
        assert (state.readings_acked_through, state.gaps) == (made, 0)
        assert buf.stats().readings_pending == 0 and buf.live_range() == (0, 0)
        assert "live lane: the newest readings go first, from #5,801 (the hub holds them through #6,000)" \
            in statuses[0]
        assert "live lane" not in statuses[-1]
    finally:
        buf.close()


def test_a_lost_acknowledgement_stores_nothing_twice(hub_storage: tuple[Storage, str], tmp_path: Path) -> None:
    """The hub stores the first batch (newest and oldest) but its answer is cut: the edge does not
    know the hub holds a live range, and by the next attempt newer readings have come, so it chooses
    a newer live start. The hub refuses that (409, with its range), the edge takes the hub's range
    and resends from there; nothing is stored twice, nothing is missing."""
    storage, url = hub_storage
    token = provision_edge(storage, EDGE)
    buf = Buffer(tmp_path / "edge.db", SUB)
    made = asyncio.run(outage(buf, config(""), 0, 3_000))

    async def cut(hub_port: int) -> None:
        nonlocal made
        proxy = ChaosProxy(target_port=hub_port)
        await proxy.start()
        sync = SyncLoop(config(f"http://127.0.0.1:{proxy.port}"), buf, token=token)
        try:
            proxy.set_mode("truncate")
            with pytest.raises(HubFault):
                await sync.sync_once()
            assert sorted(at_hub(storage)) == [*range(200), *range(2_800, 3_000)]  # stored, not heard
            assert buf.stats().readings_pending == 3_000 and buf.live_range() == (2_801, 0)
            buf.append(rows(300, made))
            made += 300
            proxy.set_mode("pass")
            faults = []
            for _ in range(60):
                try:
                    if await sync.sync_once() is None:
                        break
                except HubFault as fault:
                    faults.append(fault.kind)
            assert faults == ["sequence"], faults  # the newer live start, refused once with the hub's range
        finally:
            await sync.aclose()
            await proxy.stop()

    try:
        with LiveHub(storage, hub_settings(url, tmp_path)) as hub:
            asyncio.run(cut(hub.port))
        held = at_hub(storage)
        assert sorted(held) == list(range(made)) and set(held.values()) == {1}
        (state,) = storage.edge_states()
        assert (state.readings_acked_through, state.gaps) == (made, 0)
    finally:
        buf.close()


def test_a_hub_from_before_live_runs_gets_the_backlog_oldest_first(hub_storage: tuple[Storage, str],
                                                                   tmp_path: Path) -> None:
    """A hub that does not know `live` refuses it (400, unknown field, as its validation words it):
    the edge sends the same batch without it, once, and from then on oldest first only."""
    storage, _ = hub_storage
    buf = Buffer(tmp_path / "edge.db", SUB)
    made = asyncio.run(outage(buf, config(""), 0, 3_000))
    refused: list[str] = []
    marks: list[int] = []

    class OldHub(FakeHub):
        async def _answer(self, mode, body, reader, writer):  # type: ignore[override]
            if b'"live"' in body:
                refused.append("live")
                return await self._send(writer, "400 Bad Request", msgspec.json.encode(
                    {"status_code": 400, "detail": "Validation failed for POST /edge/sync: Object contains unknown "
                                                   "field `live`"}))
            ack = self.storage.apply_sync(decode_batch(body), no_incidents)
            marks.append(ack.readings_acked_through)
            return await self._send(writer, "200 OK", encode(ack))

    async def main() -> None:
        async with OldHub(storage) as hub:
            sync = SyncLoop(config(hub.url), buf)
            try:
                while await sync.sync_once() is not None:
                    pass
                assert sync.stats.failures == 0 and sync.stats.live_sent == 0
            finally:
                await sync.aclose()

    try:
        asyncio.run(main())
        assert refused == ["live"]
        assert marks == sorted(marks) and marks[0] == 200 and marks[-1] == made  # oldest first, all of it
        held = at_hub(storage)
        assert sorted(held) == list(range(made)) and set(held.values()) == {1}
        assert buf.live_range() == (0, 0)
    finally:
        buf.close()


def test_the_buffer_drops_the_oldest_with_a_live_range_held_and_the_gaps_add_up(
        hub_storage: tuple[Storage, str], tmp_path: Path) -> None:
    """The buffer fills while the hub holds a live range: the oldest backlog rows are dropped, the
    backlog closes up to the range by declaring what is gone, and the hub counts exactly that."""
    storage, url = hub_storage
    token = provision_edge(storage, EDGE)
    buf = Buffer(tmp_path / "edge.db", SUB, max_rows=4_000)
    made = asyncio.run(outage(buf, config(""), 0, 3_000))

    async def main(hub_url: str) -> None:
        nonlocal made
        sync = SyncLoop(config(hub_url), buf, token=token)
        try:
            await sync.sync_once()
            assert buf.live_range() == (2_801, 3_000)
            made = await outage(buf, config(""), made, 6_000)  # down again: the buffer drops its oldest
            assert buf.stats().dropped > 0
            with contextlib.suppress(HubFault):
                while await sync.sync_once() is not None:
                    pass
            while await sync.sync_once() is not None:
                pass
        finally:
            await sync.aclose()

    try:
        with LiveHub(storage, hub_settings(url, tmp_path)) as hub:
            asyncio.run(main(hub.url))
        held = at_hub(storage)
        dropped = buf.stats().dropped
        (state,) = storage.edge_states()
        assert set(held.values()) == {1} and len(held) == made - dropped
        assert (state.readings_acked_through, state.gaps) == (made, dropped)
        assert buf.stats().readings_pending == 0
    finally:
        buf.close()


def test_an_ack_that_misstates_the_live_range_forgets_nothing(tmp_path: Path) -> None:
    """A hub that acks a live range beyond the live run, one that does not lie past the mark, a mark
    that jumps over the range before the backlog reached it, or neither range nor mark covering the
    live run: each a hub fault, and the buffer keeps every row and its live lane as they were."""
    storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
    buf = Buffer(tmp_path / "edge.db", SUB)
    made = asyncio.run(outage(buf, config(""), 0, 3_000))
    lies: list = []

    class LyingHub(FakeHub):
        async def _answer(self, mode, body, reader, writer):  # type: ignore[override]
            if not lies:
                return await self._send(writer, *self._honest(body))
            batch = decode_batch(body)
            ack = {"edge_id": EDGE, "readings_stored": 0, "events_stored": 0, "duplicates": 0,
                   "events_acked_through": 0, **lies[0](batch)}
            return await self._send(writer, "200 OK", msgspec.json.encode(ack))

    async def main() -> None:
        async with LyingHub(storage) as hub:
            sync = SyncLoop(config(hub.url), buf)
            try:
                await sync.sync_once()  # honest: the hub holds 1..200 and the live range 2,801..3,000
                buf.append(rows(50, made))
                assert buf.live_range() == (2_801, 3_000)
                before = (buf.stats().readings_pending, buf.live_range())
                for kind, lie in [
                    ("ack_beyond_sent", lambda b: {"readings_acked_through": b.readings.last_seq, "live_lo": 2_801,
                                                   "live_hi": b.live.last_seq + 1}),
                    ("malformed_ack", lambda b: {"readings_acked_through": 400, "live_lo": 401,
                                                 "live_hi": b.live.last_seq}),
                    ("ack_beyond_sent", lambda b: {"readings_acked_through": 3_000}),  # the backlog is at 550
                    ("ack_short", lambda b: {"readings_acked_through": b.readings.last_seq}),
                ]:
                    lies[:] = [lie]
                    with pytest.raises(HubFault) as fault:
                        await sync.sync_once()
                    assert fault.value.kind == kind, (kind, str(fault.value))
                    assert (buf.stats().readings_pending, buf.live_range()) == before
                lies.clear()
                while await sync.sync_once() is not None:
                    pass
            finally:
                await sync.aclose()

    try:
        asyncio.run(main())
        held = at_hub(storage)
        assert sorted(held) == list(range(made + 50)) and set(held.values()) == {1}
    finally:
        buf.close()
        storage.close()
