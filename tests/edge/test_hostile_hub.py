"""The edge never trusts the hub: a hostile hub on 127.0.0.1 answers the edge's sync in every wrong
way we know of, and the edge neither crashes nor loses nor forgets a reading; once the hub turns
honest, everything arrives exactly once.

The fake hub is a raw HTTP/1.1 server written here (asyncio streams). When honest, it does what the
hub's sync handler does, through the hub's real storage: ``decode_batch``, then
``SQLiteStorage.apply_sync``, answering 200 with the ack, 409 with the hub's marks on a
:class:`SequenceError`, 400 on a :class:`WireError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sqlite3
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from edge.buffer import Buffer
from edge.daemon import EdgeDaemon
from edge.sync import HubFault, SyncLoop
from hub.storage.base import SequenceError
from hub.storage.sqlite import SQLiteStorage
from protocols.config import FirmwareConfig, load_config
from protocols.reading import Reading
from protocols.wire import (
    MAX_SEQ,
    SYNC_PATH,
    Event,
    ReadingRun,
    SyncAck,
    SyncBatch,
    WireError,
    decode_batch,
    encode,
)
from simulator.runner import Simulation
from tests.conftest import CONFIGS, free_port

pytestmark = pytest.mark.timeout(120)

EDGE = "edge-nairobi-01"
SUB = "NAIROBI-S1"


def no_incidents(_events: object) -> list:
    return []


# -- the fake hub ----------------------------------------------------------------------------------


class FakeHub:
    """``POST /edge/sync`` on 127.0.0.1, port 0, answered as :attr:`mode` says at the time."""

    def __init__(self, storage: SQLiteStorage) -> None:
        self.storage = storage
        self.mode = "honest"
        self.requests = 0  # sync requests received (whole bodies)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeHub:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._conns):
            t.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests += 1
                if not await self._answer(self.mode, body, reader, writer):
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, status: str, body: bytes = b"", headers: str = "") -> bool:
        writer.write(f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
                     f"{headers}\r\n".encode() + body)
        await writer.drain()
        return True

    def _honest(self, body: bytes) -> tuple[str, bytes]:
        try:
            ack = self.storage.apply_sync(decode_batch(body), no_incidents)
        except WireError as exc:
            return "400 Bad Request", msgspec.json.encode({"status_code": 400, "detail": str(exc)})
        except SequenceError as exc:
            return "409 Conflict", encode(exc.conflict())
        return "200 OK", encode(ack)

    async def _answer(self, mode: str, body: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether the connection may carry another."""
        if mode == "honest":
            return await self._send(writer, *self._honest(body))
        batch = decode_batch(body)
        runs = {"readings": batch.readings, "events": batch.events}

        def ack(through: Callable[[object], int], edge: str = batch.edge_id) -> bytes:
            marks = {name: through(run) if run is not None else 0 for name, run in runs.items()}
            return msgspec.json.encode({"edge_id": edge, "readings_acked_through": marks["readings"],
                                        "events_acked_through": marks["events"], "readings_stored": 0,
                                        "events_stored": 0, "duplicates": 0})

        if mode == "attack_ack":  # the reported attack's acknowledgement: near int64's end
            return await self._send(writer, "200 OK", ack(lambda run: 2**63 - 5))
        if mode == "ack_max":  # the largest number the wire allows: still beyond what was sent
            return await self._send(writer, "200 OK", ack(lambda run: MAX_SEQ))
        if mode == "ack_beyond":
            return await self._send(writer, "200 OK", ack(lambda run: run.last_seq + 1000))
        if mode == "ack_below":  # below what this hub acknowledged before
            return await self._send(writer, "200 OK", ack(lambda run: 0))
        if mode == "ack_short":  # "fine", but none of it held
            return await self._send(writer, "200 OK", ack(lambda run: run.first_seq - 1))
        if mode == "wrong_edge":
            return await self._send(writer, "200 OK", ack(lambda run: run.last_seq, edge="edge-mombasa-01"))
        if mode == "not_json":
            return await self._send(writer, "200 OK", b"<html>hello, edge</html>")
        if mode == "truncated":
            return await self._send(writer, "200 OK", ack(lambda run: run.last_seq)[:25])
        if mode == "wrong_types":
            return await self._send(writer, "200 OK", b'{"edge_id": 7, "readings_acked_through": "all"}')
        if mode == "no_content":
            return await self._send(writer, "204 No Content")
        if mode == "gzip":
            return await self._send(writer, "200 OK", b"\x1f\x8b\x08\x00", "content-encoding: gzip\r\n")
        if mode == "server_error":
            return await self._send(writer, "500 Internal Server Error", b'{"status_code": 500}')
        if mode == "refused":
            return await self._send(writer, "400 Bad Request", b'{"status_code": 400, "detail": "no"}')
        if mode == "unauthorized":
            return await self._send(writer, "401 Unauthorized", b'{"status_code": 401}')
        if mode == "redirect":
            return await self._send(writer, "307 Temporary Redirect", b"",
                                    f"location: {self.redirect_to}{SYNC_PATH}\r\n")
        if mode == "conflict_below":  # 409 claiming to hold less than it acknowledged before
            return await self._send(writer, "409 Conflict", msgspec.json.encode(
                {"status_code": 409, "detail": "lost my disk", "readings_acked_through": 0,
                 "events_acked_through": 0, "ot_logs_acked_through": 0}))
        if mode == "conflict_ahead":  # 409 claiming more than this buffer ever made
            return await self._send(writer, "409 Conflict", msgspec.json.encode(
                {"status_code": 409, "detail": "ahead", "readings_acked_through": 10**12,
                 "events_acked_through": 10**12, "ot_logs_acked_through": 0}))
        if mode == "conflict_garbage":
            return await self._send(writer, "409 Conflict", b"conflict!")
        if mode == "huge":  # a declared length of 1 GB, and bytes until the edge hangs up
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n")
            for _ in range(200):
                writer.write(b"x" * 1_000_000)
                await writer.drain()
            return False
        if mode == "huge_chunked":  # no declared length: chunks until the edge hangs up
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(200):
                writer.write(b"%x\r\n%s\r\n" % (1_000_000, b"x" * 1_000_000))
                await writer.drain()
            return False
        if mode == "hang":  # never answers: waits for the edge to give up
            await reader.read()
            return False
        if mode == "trickle":  # answers, one byte at a time, never finishing
            for b in b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-slow: " + b"y" * 10_000:
                writer.write(bytes([b]))
                await writer.drain()
                await asyncio.sleep(0.05)
            return False
        if mode == "reset":  # RST instead of an answer
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if mode == "close":  # hangs up without a word
            return False
        raise AssertionError(f"unknown mode {mode}")

    redirect_to = ""


# -- helpers ---------------------------------------------------------------------------------------


def edge_config(hub_url: str, timeout_s: float = 0.5) -> FirmwareConfig:
    cfg = load_config(CONFIGS / "nairobi-s1.toml")
    hub = msgspec.structs.replace(cfg.hub, url=hub_url, sync_interval_s=0.2, timeout_s=timeout_s,
                                  backoff_initial_s=0.05, backoff_max_s=0.2)
    return msgspec.structs.replace(cfg, hub=hub)


def rows(n: int, start: int = 0) -> list[tuple]:
    return [(1_700_000_000.0 + start + i, "FEEDER-F12", "voltage_l1", 11.0 + (start + i) / 1000, "kV", 1.0, 0)
            for i in range(n)]


def event(i: int) -> Event:
    return Event(ts=datetime.fromtimestamp(1_700_000_000 + i, UTC), substation=SUB, device_id="FEEDER-F12",
                 metric="voltage_l1", type="voltage_sag", state="raised", severity="WARNING", value=10.3,
                 threshold=10.45, nominal=11.0, unit="kV", description=f"sag {i}")


def at_hub(path: Path, table: str) -> tuple:
    """(count, distinct seq, min seq, max seq) of the edge's rows the hub holds."""
    col = "source" if table == "readings" else "edge_id"
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(f"SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM {table} WHERE {col} = ?",
                          (EDGE,)).fetchone()


async def drain(sync: SyncLoop, tries: int = 10) -> None:
    """Sync until nothing is pending (a 409 on the way is part of recovering)."""
    for _ in range(tries):
        try:
            if await sync.sync_once() is None:
                return
        except HubFault:
            continue
    raise AssertionError(f"still pending after {tries} tries: {sync.stats}")


# -- each hostile answer, on its own ---------------------------------------------------------------

HOSTILE = [
    ("attack_ack", "malformed_ack"),
    ("ack_max", "ack_beyond_sent"),
    ("ack_beyond", "ack_beyond_sent"),
    ("ack_below", "ack_below_acked"),
    ("ack_short", "ack_short"),
    ("wrong_edge", "wrong_edge"),
    ("not_json", "malformed_ack"),
    ("truncated", "malformed_ack"),
    ("wrong_types", "malformed_ack"),
    ("no_content", "malformed_ack"),
    ("gzip", "malformed_ack"),
    ("server_error", "server_error"),
    ("refused", "refused"),
    ("unauthorized", "refused"),
    ("redirect", "redirect"),
    ("conflict_below", "sequence"),
    ("conflict_ahead", "hub_ahead"),
    ("conflict_garbage", "sequence"),
    ("huge", "too_large"),
    ("huge_chunked", "too_large"),
    ("hang", "timeout"),
    ("trickle", "timeout"),
    ("reset", "connection"),
    ("close", "connection"),
]


@pytest.mark.parametrize(("mode", "kind"), HOSTILE, ids=[m for m, _ in HOSTILE])
def test_a_hostile_answer_is_a_hub_fault_that_keeps_the_data(mode: str, kind: str, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    buf = Buffer(tmp_path / "edge.db", SUB)

    async def main() -> None:
        async with FakeHub(storage) as hub, FakeHub(storage) as elsewhere:
            hub.redirect_to = elsewhere.url
            sync = SyncLoop(edge_config(hub.url), buf)
            try:
                buf.append(rows(10), [event(0), event(1)])
                assert await sync.sync_once() == 12  # honest at first: the buffer knows 10 and 2 were acked
                buf.append(rows(10, start=10), [event(2)])

                hub.mode = mode
                loop = asyncio.get_running_loop()
                for _ in range(2):
                    started = loop.time()
                    with pytest.raises(HubFault) as caught:
                        await sync.sync_once()
                    assert caught.value.kind == kind, caught.value
                    assert loop.time() - started < 5  # a hung or trickling hub costs 3 x timeout_s at most
                    readings, events = buf.pending(100)
                    assert (readings.first_seq, readings.last_seq) == (11, 20)  # every unacked reading is here
                    assert (events.first_seq, events.last_seq) == (3, 3)
                    assert buf.acked_through() == {"readings": 10, "events": 2, "ot_logs": 0}
                stats = sync.stats
                assert stats.faults[kind] == 2 and stats.hub_faults == 2 and stats.failures == 2
                assert stats.last_fault == kind and stats.last_error and stats.hub_up is False
                assert elsewhere.requests == 0  # a redirect is not followed: the batch goes nowhere else

                hub.mode = "honest"
                await drain(sync)
                assert sync.stats.hub_up is True and sync.stats.last_fault == ""
            finally:
                await sync.aclose()

    try:
        with caplog.at_level(logging.WARNING, logger="edge.sync"):
            asyncio.run(main())
        assert at_hub(tmp_path / "hub.db", "readings") == (20, 20, 1, 20)  # everything, exactly once
        assert at_hub(tmp_path / "hub.db", "events") == (3, 3, 1, 3)
        assert buf.stats().readings_pending == 0 and buf.stats().events_pending == 0
        logged = [r for r in caplog.records if r.getMessage().startswith(f"hub fault ({kind})")]
        assert len(logged) == 1, [r.getMessage() for r in caplog.records]  # two faults, one line
    finally:
        buf.close()
        storage.close()


def test_an_ack_for_a_stream_the_batch_did_not_carry_forgets_nothing_of_it(tmp_path: Path) -> None:
    """The hub acks readings honestly, and events "through 10**6" though none were sent: events
    buffered meanwhile stay, and go out later."""
    storage = SQLiteStorage(tmp_path / "hub.db")
    buf = Buffer(tmp_path / "edge.db", SUB)

    class Lying(FakeHub):
        async def _answer(self, mode, body, reader, writer):  # type: ignore[override]
            if mode != "lying":
                return await super()._answer(mode, body, reader, writer)
            status, answer = self._honest(body)
            ack = msgspec.structs.replace(msgspec.json.decode(answer, type=SyncAck), events_acked_through=10**6)
            buf.append([], [event(0)])  # an event buffered while the batch was on its way
            return await self._send(writer, status, encode(ack))

    async def main() -> None:
        async with Lying(storage) as hub:
            sync = SyncLoop(edge_config(hub.url), buf)
            try:
                buf.append(rows(5))
                hub.mode = "lying"
                assert await sync.sync_once() == 5
                assert buf.stats().events_pending == 1 and buf.acked_through()["events"] == 0
                hub.mode = "honest"
                await drain(sync)
            finally:
                await sync.aclose()

    try:
        asyncio.run(main())
        assert at_hub(tmp_path / "hub.db", "events") == (1, 1, 1, 1)
        assert at_hub(tmp_path / "hub.db", "readings") == (5, 5, 1, 5)
    finally:
        buf.close()
        storage.close()


# -- gaps, the attack, a new buffer ----------------------------------------------------------------


def test_rows_dropped_at_the_edge_are_declared_and_taken(tmp_path: Path) -> None:
    """The buffer dropped its oldest unsent rows (full): the edge declares the gap from what the hub
    acked, and the hub takes it and counts it; a lost ack on the way is recovered from the 409."""
    storage = SQLiteStorage(tmp_path / "hub.db")
    buf = Buffer(tmp_path / "edge.db", SUB, max_rows=1_000)

    async def main() -> None:
        async with FakeHub(storage) as hub:
            sync = SyncLoop(edge_config(hub.url), buf)
            try:
                buf.append(rows(10))
                assert await sync.sync_once() == 10
                buf.append(rows(12_000, start=10))  # past max_rows: the oldest unsent are dropped
                assert buf.stats().dropped > 0
                readings, _ = buf.pending(10)
                assert readings.first_seq > 11
                await drain(sync, tries=20)
                assert sync.stats.failures == 0  # declared from the buffer's own record: no 409 needed
            finally:
                await sync.aclose()

    try:
        asyncio.run(main())
        (state,) = storage.edge_states()
        made = 12_010
        assert state.readings_acked_through == made and state.gaps == buf.stats().dropped
        count, distinct, lo, hi = at_hub(tmp_path / "hub.db", "readings")
        assert count == distinct == made - state.gaps and (lo, hi) == (1, made)
    finally:
        buf.close()
        storage.close()


def test_a_hub_from_before_buffer_ids_and_declared_gaps_gets_batches_without_them(tmp_path: Path) -> None:
    """An older hub refuses `buffer_id` and `after` as unknown fields (400), and took gaps as they
    came: the edge sends without them, and everything that was not dropped arrives."""
    storage = SQLiteStorage(tmp_path / "hub.db")
    buf = Buffer(tmp_path / "edge.db", SUB, max_rows=1_000)
    refused: list[str] = []

    class OldHub(FakeHub):
        async def _answer(self, mode, body, reader, writer):  # type: ignore[override]
            raw = msgspec.json.decode(body)
            for where, obj in (("", raw), ("readings", raw.get("readings") or {})):
                unknown = {"buffer_id", "after"} & set(obj)
                if unknown:
                    field = sorted(unknown)[0]
                    refused.append(field)
                    detail = f"Object contains unknown field `{field}`" + (f" - at `$.{where}`" if where else "")
                    return await self._send(writer, "400 Bad Request", msgspec.json.encode(
                        {"status_code": 400, "detail": f"Validation failed for POST /edge/sync: {detail}"}))
            batch = decode_batch(body)
            if batch.readings is not None:  # an older hub took a gap as it came, counting it
                (state,) = storage.edge_states() or [None]
                mark = state.readings_acked_through if state else 0
                if batch.readings.first_seq > mark + 1:
                    batch = msgspec.structs.replace(batch, readings=msgspec.structs.replace(batch.readings,
                                                                                            after=mark))
            return await self._send(writer, "200 OK", encode(self.storage.apply_sync(batch, no_incidents)))

    async def main() -> None:
        async with OldHub(storage) as hub:
            sync = SyncLoop(edge_config(hub.url), buf)
            try:
                buf.append(rows(10))
                assert await sync.sync_once() == 10
                assert refused == ["buffer_id"]
                buf.append(rows(12_000, start=10))  # the oldest unsent are dropped: a gap to declare
                await drain(sync, tries=20)
                assert refused == ["buffer_id", "after"]  # each refused once, then left out
                assert sync.stats.failures == 0
            finally:
                await sync.aclose()

    try:
        asyncio.run(main())
        (state,) = storage.edge_states()
        assert state.readings_acked_through == 12_010 and state.gaps == buf.stats().dropped > 0
    finally:
        buf.close()
        storage.close()


def test_the_reported_attack_is_refused_and_the_edge_syncs_on(tmp_path: Path) -> None:
    """An anonymous batch claiming to be the edge with first_seq near 2**63, then one with a jump the
    wire allows: both refused, nothing stored, and the real edge goes on as if nothing happened."""
    storage = SQLiteStorage(tmp_path / "hub.db")
    buf = Buffer(tmp_path / "edge.db", SUB)

    async def main() -> None:
        async with FakeHub(storage) as hub:
            sync = SyncLoop(edge_config(hub.url), buf)
            try:
                buf.append(rows(10))
                assert await sync.sync_once() == 10
                forged = msgspec.json.decode(encode(forged_batch()))
                async with httpx.AsyncClient(base_url=hub.url) as attacker:
                    for first in (2**63 - 5, 10**15):
                        forged["readings"]["first_seq"] = first
                        r = await attacker.post(SYNC_PATH, content=msgspec.json.encode(forged))
                        assert r.status_code == (400 if first > MAX_SEQ else 409), r.text
                assert storage.edge_states()[0].readings_acked_through == 10
                buf.append(rows(5, start=10))
                assert await sync.sync_once() == 5
                assert sync.stats.hub_faults == 0
            finally:
                await sync.aclose()

    try:
        asyncio.run(main())
        assert at_hub(tmp_path / "hub.db", "readings") == (15, 15, 1, 15)
    finally:
        buf.close()
        storage.close()


def forged_batch() -> SyncBatch:
    """A batch as an attacker would forge it: this edge's ids, a few readings."""
    items = [Reading(ts=datetime.fromtimestamp(t, UTC), substation=SUB, device_id=d, metric=m, value=v, unit=u)
             for t, d, m, v, u, _q, _f in rows(3)]
    return SyncBatch(edge_id=EDGE, substation=SUB, sent_at=datetime.now(UTC),
                     readings=ReadingRun(first_seq=1, items=items))


def test_a_re_imaged_box_starts_a_new_sequence_space_at_the_hub(tmp_path: Path) -> None:
    """A new buffer file (the box re-imaged) counts from 1 again: the hub starts over for it, the
    old rows stay, and nothing of the new buffer is taken for a duplicate."""
    storage = SQLiteStorage(tmp_path / "hub.db")

    async def main() -> None:
        async with FakeHub(storage) as hub:
            for name, n in (("old.db", 30), ("new.db", 7)):
                buf = Buffer(tmp_path / name, SUB)
                sync = SyncLoop(edge_config(hub.url), buf)
                try:
                    buf.append(rows(n))
                    assert await sync.sync_once() == n
                    assert sync.stats.new_buffer is (name == "new.db")
                    assert buf.stats().readings_pending == 0
                finally:
                    await sync.aclose()
                    buf.close()

    try:
        asyncio.run(main())
        assert at_hub(tmp_path / "hub.db", "readings") == (37, 30, 1, 30)  # 1..30 from the old, 1..7 from the new
        assert storage.edge_states()[0].readings_acked_through == 7
    finally:
        storage.close()


# -- a real daemon polling a simulated substation --------------------------------------------------


def test_a_daemon_keeps_polling_through_a_hostile_hub_and_delivers_everything_once(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    buffer_path = tmp_path / "edge.db"
    modes = ["attack_ack", "ack_max", "hang", "reset", "huge_chunked", "conflict_below", "wrong_edge", "not_json",
             "redirect", "server_error"]

    async def main() -> tuple[int, set[str]]:
        async with FakeHub(storage) as hub:
            hub.redirect_to = hub.url
            base = edge_config(hub.url, timeout_s=0.3)
            cfg = msgspec.structs.replace(base, devices=[msgspec.structs.replace(d, port=free_port())
                                                         for d in base.devices[:1]])
            async with Simulation([cfg], None) as sim:
                sim_task = asyncio.create_task(sim.run())
                daemon = EdgeDaemon(cfg, buffer_path=buffer_path)
                edge_task = asyncio.create_task(daemon.run())
                try:
                    await asyncio.sleep(1.5)  # honest: some readings arrive
                    for mode in modes:
                        hub.mode = mode
                        before = daemon.stats.readings_buffered
                        await asyncio.sleep(1.0)
                        assert not edge_task.done(), edge_task
                        assert daemon.stats.readings_buffered > before  # polling goes on
                    kinds = {k for k, n in daemon.sync.stats.faults.items() if n}
                    assert daemon.stats.devices[cfg.devices[0].id].online is True
                    status = daemon.status_snapshot()["hub"]
                    assert status["hub_faults"] > 0 and status["up"] is False
                    hub.mode = "honest"
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 20
                    while daemon.sync.stats.hub_up is not True:
                        assert loop.time() < deadline, daemon.sync.stats
                        await asyncio.sleep(0.1)
                    await asyncio.sleep(0.5)
                finally:
                    edge_task.cancel()
                    await asyncio.gather(edge_task, return_exceptions=True)
                    sim_task.cancel()
                    await asyncio.gather(sim_task, return_exceptions=True)
            # polling has stopped; send what is left, as the daemon's next run would
            buf = Buffer(buffer_path, SUB)
            sync = SyncLoop(cfg, buf)
            try:
                await drain(sync)
                assert buf.stats().readings_pending == 0
            finally:
                await sync.aclose()
                buf.close()
        with contextlib.closing(sqlite3.connect(buffer_path)) as db:
            produced = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()[0]
        return produced, kinds

    try:
        produced, kinds = asyncio.run(main())
        assert produced > 50
        assert at_hub(tmp_path / "hub.db", "readings") == (produced, produced, 1, produced)
        assert {"malformed_ack", "ack_beyond_sent", "timeout", "connection", "too_large", "sequence",
                "wrong_edge", "redirect", "server_error"} <= kinds, kinds
    finally:
        storage.close()
