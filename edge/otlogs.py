"""Collecting the substation's OT logs for the hub's cyber sentinel.

The RTUs, gateways and HMIs log authentication events, control commands and configuration changes
locally; the edge is the box that can reach them. Two collectors, configured under ``[ot_logs]``
(:class:`protocols.config.OtLogSettings`), each a task of the daemon:

- :class:`MqttCollector` subscribes to a topic filter on a broker (a gateway's log forwarder) with
  the MQTT driver's :class:`~protocols.mqtt.source.BrokerSession`;
- :class:`FileFollower` follows a JSON-lines file as it grows. Its position (file identity, byte
  offset, line number) is committed with the entries read up to it, in one buffer transaction, so a
  restart neither skips nor repeats a line. A file truncated or replaced (rotated) is read from its
  start; a rotated file left in the same directory under another name (logrotate's ``ot.jsonl.1``)
  is finished first, also across a restart.

Both decode entries with :func:`protocols.otlog.decode` (one entry, a list, or ``{"events": [...]}``)
and hand them to a sink, which buffers them (:meth:`edge.buffer.Buffer.append_ot_logs`). Malformed
entries, and entries naming another substation than the edge's, become dead letters whose reason
names the entry and the field (``OT log: line 12: [3].source: not an IPv4 or IPv6 address``); they
never hold up the good ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from edge.backoff import Backoff
from protocols import otlog
from protocols.config import OtLogFile, OtLogMqtt
from protocols.mqtt.codec import DeadLetter
from protocols.mqtt.source import BrokerOptions, BrokerSession, MqttStats
from protocols.otlog import OtLogEvent
from protocols.sources import SourceError

__all__ = ["FileFollower", "MqttCollector", "OtLogSink", "OtLogSourceStats", "decode_entries"]

log = logging.getLogger(__name__)

OtLogSink = Callable[[list[OtLogEvent], list[DeadLetter], "tuple[str, str] | None"], Awaitable[None]]
"""Buffers (entries, dead letters, a followed file's new position as (meta key, value)) atomically."""

CHUNK_BYTES = 1 << 20  # read a followed file this much at a time; also the longest line taken
_HEAD_BYTES = 256  # a file's first bytes, fingerprinted: tells a rewritten file from the one we read


@dataclass
class OtLogSourceStats:
    """Counters of one collector, for ``sentinel edge status``."""

    kind: str  # "mqtt" | "file"
    where: str  # mqtt://host:port/filter, or the file's path
    up: bool | None = None  # connected / file readable; None until tried
    entries: int = 0
    rejected: int = 0
    last_error: str = ""
    offset: int | None = None  # file: bytes read
    line: int | None = None  # file: lines read


class _Probe(msgspec.Struct):
    events: msgspec.Raw = msgspec.Raw(b"")


def _prefix(payload: bytes) -> str:
    """How entry ``i`` of a payload is named in reasons: ``[i]`` (a list), ``events[i]`` (an
    envelope), or nothing (one entry)."""
    head = payload.lstrip(b" \t\r\n")[:1]
    if head == b"[":
        return "[{}]."
    try:
        if len(msgspec.json.decode(payload, type=_Probe).events) > 0:
            return "events[{}]."
    except msgspec.MsgspecError:
        pass
    return ""


def decode_entries(payload: bytes, substation: str) -> tuple[list[OtLogEvent], list[str]]:
    """The good entries of a payload and, for each bad one, the reason (naming index and field).

    An entry naming another substation than ``substation`` (the edge's) is bad: an edge speaks only
    for its own substation, and the hub refuses a batch that does otherwise.
    """
    decoded = otlog.decode(payload)
    reasons = [str(e) for e in decoded.errors]
    good: list[OtLogEvent] = []
    prefix: str | None = None
    for event, i in zip(decoded.events, decoded.items, strict=True):
        if event.substation == substation:
            good.append(event)
            continue
        if prefix is None:
            prefix = _prefix(payload)
        reasons.append(f"{prefix.format(i)}substation: {event.substation!r} is not this edge's substation "
                       f"{substation!r}")
    return good, reasons


class MqttCollector:
    """OT log entries from a topic filter on a broker; reconnects with capped, jittered backoff and
    logs the broker going away and coming back once each."""

    def __init__(self, settings: OtLogMqtt, edge_id: str, substation: str, sink: OtLogSink) -> None:
        self.settings = settings
        self.substation = substation
        self.sink = sink
        options = BrokerOptions(
            host=settings.host, port=settings.port, client_id=settings.client_id or f"{edge_id}-ot-logs",
            qos=settings.qos, mqtt_version=settings.mqtt_version, clean_session=settings.clean_session,
            session_expiry_s=settings.session_expiry_s, keepalive_s=settings.keepalive_s,
            connect_timeout_s=settings.connect_timeout_s, tls=settings.tls, username=settings.username,
            password_env=settings.password_env)
        self.mqtt = MqttStats()
        self.session = BrokerSession(options, [settings.topic], name="ot-logs", stats=self.mqtt)
        self.stats = OtLogSourceStats("mqtt", f"{options.endpoint}/{settings.topic}")
        self._dead_source = f"ot-logs@{settings.host}:{settings.port}"

    def snapshot(self) -> dict:
        out = dataclasses.asdict(self.stats)
        if self.mqtt.connected:
            out["up"] = True
        return out

    def decode(self, batch: Sequence[tuple[str, bytes, float]]) -> tuple[list[OtLogEvent], list[DeadLetter]]:
        """Messages as received (topic, payload, time of receipt): good entries and dead letters."""
        entries: list[OtLogEvent] = []
        letters: list[DeadLetter] = []
        for topic, payload, received in batch:
            good, reasons = decode_entries(payload, self.substation)
            entries.extend(good)
            letters.extend(DeadLetter.make(self._dead_source, topic, payload, f"OT log: {r}", received)
                           for r in reasons)
        return entries, letters

    async def run(self) -> None:
        backoff = Backoff(1.0, 30.0)
        stats = self.stats
        connects = 0
        while True:
            try:
                async with contextlib.aclosing(self.session.batches()) as batches:  # disconnects when cancelled
                    async for batch in batches:
                        if stats.up is False:
                            log.info("OT logs: receiving from %s again", self.session.endpoint)
                        stats.up = True
                        backoff.reset()
                        entries, letters = self.decode(batch)
                        await self.sink(entries, letters, None)
                        stats.entries += len(entries)
                        stats.rejected += len(letters)
                        if letters:
                            stats.last_error = letters[-1].reason
            except SourceError as exc:
                if self.mqtt.connects > connects:
                    backoff.reset()  # it had connected: the next try comes soon
                connects = self.mqtt.connects
                if stats.up is not False:
                    log.error("OT logs: %s", exc)
                stats.up = False
                stats.last_error = exc.reason
            await asyncio.sleep(backoff.next_delay())


class _Position(msgspec.Struct, frozen=True):
    """Where a followed file was read up to: which file (device, inode and a fingerprint of its
    first bytes), the byte offset just past the last whole line taken, and that line's number."""

    dev: int
    ino: int
    offset: int
    line: int
    head_len: int
    head: str


@dataclass
class _Chunk:
    entries: list[OtLogEvent]
    letters: list[DeadLetter]
    position: _Position | None  # what to store with them (None: nothing moved)
    more: bool  # a full chunk was read: read again without waiting


def _fingerprint(fd: int, length: int) -> str:
    return hashlib.sha256(os.pread(fd, length, 0)).hexdigest()[:32]


class FileFollower:
    """Follows a JSON-lines file of OT log entries (``tail -F`` with a memory in the buffer)."""

    def __init__(self, settings: OtLogFile, substation: str, sink: OtLogSink,
                 load_position: Callable[[str], str | None]) -> None:
        self.settings = settings
        self.path = Path(settings.path)
        self.substation = substation
        self.sink = sink
        self.key = f"ot_logs.file:{self.path.absolute()}"
        self._load_position = load_position
        self.stats = OtLogSourceStats("file", str(self.path))
        self._fd: int | None = None
        self._pos: _Position | None = None  # of the open file
        self._skipping = False  # inside a line longer than CHUNK_BYTES: drop bytes up to its end
        self._reading: asyncio.Future[_Chunk] | None = None

    def snapshot(self) -> dict:
        return dataclasses.asdict(self.stats)

    async def run(self) -> None:
        stats = self.stats
        try:
            while True:
                # shielded, and waited for below: the worker thread owns the file until it returns
                self._reading = asyncio.ensure_future(asyncio.to_thread(self._read))
                try:
                    chunk = await asyncio.shield(self._reading)
                except OSError as exc:
                    reason = f"{exc.strerror or exc}: {exc.filename or self.path}"
                    if stats.up is not False:
                        log.error("OT logs: cannot read %s: %s", self.path, reason)
                    stats.up, stats.last_error = False, reason
                    self._close()
                    await asyncio.sleep(self.settings.poll_interval_s)
                    continue
                if stats.up is False:
                    log.info("OT logs: reading %s again", self.path)
                stats.up = True
                if chunk.position is not None:
                    position = (self.key, msgspec.json.encode(chunk.position).decode())
                    await self.sink(chunk.entries, chunk.letters, position)
                    self._pos = chunk.position  # only once stored: a failed write is read again
                    stats.offset, stats.line = chunk.position.offset, chunk.position.line
                    stats.entries += len(chunk.entries)
                    stats.rejected += len(chunk.letters)
                    if chunk.letters:
                        stats.last_error = chunk.letters[-1].reason
                if not chunk.more:
                    await asyncio.sleep(self.settings.poll_interval_s)
        finally:
            if self._reading is not None and not self._reading.done():
                await asyncio.wait([self._reading])
            self._close()

    # -- in a worker thread ---------------------------------------------------------------------

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._pos = None, None

    def _open(self) -> None:
        """Open the file where the stored position says, or the configured path from its start."""
        stored = self._load_position(self.key)
        pos = None
        if stored:
            try:
                pos = msgspec.json.decode(stored, type=_Position)
            except msgspec.MsgspecError:
                log.warning("OT logs: unreadable stored position for %s; reading it from the start", self.path)
        if pos is not None:
            for candidate in self._candidates(pos):
                try:
                    fd = os.open(candidate, os.O_RDONLY)
                except FileNotFoundError:
                    continue
                st = os.fstat(fd)
                if ((st.st_dev, st.st_ino) == (pos.dev, pos.ino) and st.st_size >= pos.offset
                        and _fingerprint(fd, pos.head_len) == pos.head):
                    if candidate != self.path:
                        log.info("OT logs: %s was rotated while the edge was stopped; finishing %s first",
                                 self.path, candidate)
                    self._fd, self._pos = fd, pos
                    return
                os.close(fd)
            log.warning("OT logs: %s was rotated or truncated while the edge was stopped; reading it from the start",
                        self.path)
        self._restart(os.open(self.path, os.O_RDONLY))

    def _candidates(self, pos: _Position) -> list[Path]:
        """The configured path, then files beside it with the stored inode (the file, rotated)."""
        out = [self.path]
        try:
            with os.scandir(self.path.parent) as it:
                for entry in it:
                    if entry.name != self.path.name and entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                        if (st.st_dev, st.st_ino) == (pos.dev, pos.ino):
                            out.append(Path(entry.path))
        except OSError:
            pass
        return out

    def _restart(self, fd: int) -> None:
        """Read ``fd`` from its start."""
        st = os.fstat(fd)
        self._fd, self._pos, self._skipping = fd, _Position(st.st_dev, st.st_ino, 0, 0, 0, _fingerprint(fd, 0)), False

    def _rewritten(self) -> bool:
        """The open file was truncated, or rewritten from its start (copytruncate, then written again)."""
        assert self._fd is not None and self._pos is not None
        pos = self._pos
        return os.fstat(self._fd).st_size < pos.offset or _fingerprint(self._fd, pos.head_len) != pos.head

    def _rotated(self) -> bool:
        """The path now names another file than the one open (renamed aside and made again)."""
        assert self._pos is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False  # renamed aside, the new one not made yet: keep reading the old one
        return (st.st_dev, st.st_ino) != (self._pos.dev, self._pos.ino)

    def _read(self) -> _Chunk:
        if self._fd is None:
            self._open()
        assert self._fd is not None and self._pos is not None
        if self._rewritten():
            log.info("OT logs: %s was truncated; reading it from the start", self.path)
            self._restart(self._fd)
        pos = self._pos
        data = os.pread(self._fd, CHUNK_BYTES, pos.offset)
        end = data.rfind(b"\n")
        if end >= 0:
            chunk = self._lines(data[:end + 1], pos)
            chunk.more = len(data) == CHUNK_BYTES
            return chunk
        if len(data) == CHUNK_BYTES:  # inside a line longer than a chunk: drop it, say so once
            letters = [] if self._skipping else [self._letter(pos.line + 1, data, f"longer than {CHUNK_BYTES} bytes")]
            self._skipping = True
            return _Chunk([], letters, self._moved(pos.offset + len(data), pos.line), more=True)
        if not self._rotated():
            return _Chunk([], [], None, more=False)  # nothing new: wait
        # The old file is finished (a last line without its newline counts as a line); the new one
        # is read from its start, and its position is stored with the old file's last entries.
        last = self._lines(data + b"\n", pos) if data.strip() else _Chunk([], [], None, more=False)
        old = self._fd
        self._restart(os.open(self.path, os.O_RDONLY))
        os.close(old)
        log.info("OT logs: %s was rotated; reading the new file from its start", self.path)
        return _Chunk(last.entries, last.letters, self._pos, more=True)

    def _moved(self, offset: int, line: int) -> _Position:
        assert self._fd is not None and self._pos is not None
        head_len = min(offset, _HEAD_BYTES)
        head = self._pos.head if head_len == self._pos.head_len else _fingerprint(self._fd, head_len)
        return _Position(self._pos.dev, self._pos.ino, offset, line, head_len, head)

    def _lines(self, data: bytes, pos: _Position) -> _Chunk:
        """Whole lines (``data`` ends with a newline) read at ``pos``: entries, dead letters, the
        position after them."""
        entries: list[OtLogEvent] = []
        letters: list[DeadLetter] = []
        line = pos.line
        lines = data.split(b"\n")[:-1]
        if self._skipping and lines:  # the end of an overlong line
            lines[0] = b""
            self._skipping = False
        for raw in lines:
            line += 1
            text = raw.rstrip(b"\r")
            if not text.strip():
                continue
            good, reasons = decode_entries(text, self.substation)
            entries.extend(good)
            letters.extend(self._letter(line, text, r) for r in reasons)
        return _Chunk(entries, letters, self._moved(pos.offset + len(data), line), more=False)

    def _letter(self, line: int, payload: bytes, reason: str) -> DeadLetter:
        return DeadLetter.make(f"ot-logs@{self.path}", str(self.path), payload, f"OT log: line {line}: {reason}")
