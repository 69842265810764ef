"""The edge's store-and-forward buffer: SQLite in WAL mode.

Readings, events and OT log entries wait here until the hub acknowledges them; nothing is deleted
before that. A followed OT log file's position is kept here too, committed with the entries read up
to it, so a restart neither skips nor repeats a line.
Each table's ``seq`` is an AUTOINCREMENT key, so sequence numbers only ever grow, across restarts
too, and they are what the hub de-duplicates on (see :mod:`protocols.wire`). They are never
renumbered: a buffer is named by a random ``buffer_id`` made once, when its file is created (older
files get one when first opened), and a new buffer (a re-imaged box) is a new sequence space at the
hub, not a reason to move numbers. Rows are deleted only on an acknowledgement no higher than the
numbers this buffer made.

All methods are synchronous and thread-safe (one connection, one lock); the daemon calls them
through ``asyncio.to_thread`` so the event loop never waits on the disk.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from protocols.otlog import OtLogEvent
from protocols.reading import Reading
from protocols.wire import Event, EventRun, OtLogRun, ReadingRun

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL,
    quality REAL NOT NULL,
    flags INTEGER NOT NULL,
    anomaly_score REAL,           -- 0..1 from edge scoring; NULL if not scored
    anomaly_type TEXT
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    body BLOB NOT NULL            -- the Event, msgpack-encoded
);
CREATE TABLE IF NOT EXISTS ot_logs (  -- OT log entries for the hub's cyber sentinel
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,             -- when it arrived here (for the backlog's age)
    body BLOB NOT NULL            -- the OtLogEvent, msgpack-encoded
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS dead_letters (  -- messages a pushed source could not use, and why
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""

DEAD_LETTERS_KEPT = 10_000

DROPPED_UNWRITABLE = "dropped_unwritable"  # meta counters: readings and events dropped because the buffer
EVENTS_DROPPED_UNWRITABLE = "events_dropped_unwritable"  # could not be written for too long (disk full)

ReadingRow = tuple[float, str, str, float | None, str, float, int]
"""(ts, device_id, metric, value, unit, quality, flags) — what the poller hands the buffer."""

ReadingScores = tuple[Sequence[float | None], Sequence[str | None]]
"""(anomaly_score, anomaly_type) per reading row, in the rows' order."""

_SCORE_COLUMNS = (("anomaly_score", "REAL"), ("anomaly_type", "TEXT"))

_event_enc = msgspec.msgpack.Encoder()
_event_dec = msgspec.msgpack.Decoder(Event)
_ot_log_dec = msgspec.msgpack.Decoder(OtLogEvent)

_STREAMS = ("readings", "events", "ot_logs")


@dataclass(frozen=True, slots=True)
class BufferStats:
    readings_pending: int
    events_pending: int
    oldest_pending: datetime | None
    last_sync: datetime | None
    readings_acked_through: int
    dropped: int
    dead_letters: int = 0  # rejected messages received in all (the newest are kept in the table)
    ot_logs_pending: int = 0
    ot_logs_oldest_pending: datetime | None = None  # when the oldest unsent OT log entry arrived
    ot_logs_acked_through: int = 0
    ot_logs_dropped: int = 0
    dropped_unwritable: int = 0  # readings never stored: held in memory while the file could not be written, past
    events_dropped_unwritable: int = 0  # [buffer] hold_rows (disk full, I/O error)


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back, if SQLite has not already: a COMMIT that fails on a full disk can end the
    transaction itself, and a second error must not hide the first."""
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error as exc:
            log.warning("rollback failed: %s", exc)


def _contiguous(seqs: list[int]) -> int:
    """How many leading entries of ``seqs`` are consecutive numbers."""
    if not seqs:
        return 0
    first = seqs[0]
    for i, s in enumerate(seqs):
        if s != first + i:
            return i
    return len(seqs)


class Buffer:
    def __init__(self, path: str | Path, substation: str, max_rows: int = 10_000_000) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.substation = substation
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL fsyncs at checkpoints
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._migrate()
        # made once per buffer file; INSERT OR IGNORE: another process opening the file meanwhile
        # (`sentinel edge status`) makes the same choice, whichever comes first
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('buffer_id', ?)", (secrets.token_hex(16),))
        self.buffer_id: str = self._db.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
        self._inserted_since_check = 0

    def _migrate(self) -> None:
        """Buffers made before edge scoring lack the score columns: add them (NULL for old rows)."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(readings)")}
        for name, kind in _SCORE_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE readings ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _meta(self, key: str, default: float = 0) -> float:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # -- writes -------------------------------------------------------------------------------

    def append(self, readings: Sequence[ReadingRow], events: Sequence[Event] = (),
               scores: ReadingScores | None = None, counters: dict[str, int] | None = None) -> None:
        """Store readings (with their anomaly scores, if given) and events in one transaction, and
        add ``counters`` (meta key -> increment, e.g. what was dropped while the disk was full) in
        the same transaction. Raises sqlite3.Error, storing nothing, when the file cannot be written."""
        counters = {k: n for k, n in (counters or {}).items() if n}
        if not readings and not events and not counters:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                if readings and scores is not None:
                    db.executemany(
                        "INSERT INTO readings (ts, device_id, metric, value, unit, quality, flags, anomaly_score,"
                        " anomaly_type) VALUES (?,?,?,?,?,?,?,?,?)",
                        [(*r, s, t) for r, s, t in zip(readings, scores[0], scores[1], strict=True)],
                    )
                elif readings:
                    db.executemany(
                        "INSERT INTO readings (ts, device_id, metric, value, unit, quality, flags)"
                        " VALUES (?,?,?,?,?,?,?)",
                        readings,
                    )
                if events:
                    db.executemany(
                        "INSERT INTO events (ts, body) VALUES (?, ?)",
                        [(e.ts.timestamp(), _event_enc.encode(e)) for e in events],
                    )
                for key, n in counters.items():
                    self._set_meta(key, self._meta(key) + n)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            self._inserted_since_check += len(readings)
            if self._inserted_since_check >= 10_000:
                self._inserted_since_check = 0
                self._enforce_cap()

    def _enforce_cap(self) -> None:
        lo, hi = self._db.execute("SELECT (SELECT min(seq) FROM readings), (SELECT max(seq) FROM readings)").fetchone()
        if lo is None or hi - lo + 1 <= self.max_rows:
            return
        cut = hi - self.max_rows
        n = self._db.execute("DELETE FROM readings WHERE seq <= ?", (cut,)).rowcount
        self._set_meta("dropped", self._meta("dropped") + n)
        log.error("buffer full (%d rows): dropped the %d oldest unsent readings", self.max_rows, n)

    def ack(self, readings_through: int | None, events_through: int | None,
            ot_logs_through: int | None = None) -> None:
        """The hub holds everything up to these sequence numbers: forget it here. A stream given as
        None is left alone (the hub was not sent any of it). Raises ValueError, forgetting nothing,
        for a number above what this buffer ever made: the sync loop refuses such an ack before it
        gets here; this is the last line."""
        marks = {"readings": readings_through, "events": events_through, "ot_logs": ot_logs_through}
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                for table, through in marks.items():
                    if through is None:
                        continue
                    made = self._made(table)
                    if through > made:
                        raise ValueError(f"an ack of {table} through {through}, but this buffer made {table} "
                                         f"only up to {made}")
                    db.execute(f"DELETE FROM {table} WHERE seq <= ?", (through,))
                    key = f"{table}_acked_through"
                    self._set_meta(key, max(through, int(self._meta(key))))
                self._set_meta("last_sync", time.time())
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    def _made(self, table: str) -> int:
        """The highest sequence number ``table`` ever gave (0: none yet)."""
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        return int(row[0]) if row else 0

    def acked_through(self) -> dict[str, int]:
        """Per stream, the highest sequence number the hub has acknowledged to this buffer (0: none)."""
        with self._lock:
            return {t: int(self._meta(f"{t}_acked_through")) for t in _STREAMS}

    def add_dead_letters(self, letters: Sequence) -> None:
        """Keep rejected messages (protocols.mqtt.codec.DeadLetter) for inspection; the newest
        DEAD_LETTERS_KEPT stay."""
        if not letters:
            return
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                self._insert_dead_letters(letters)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    def _insert_dead_letters(self, letters: Sequence) -> None:
        """Inside the caller's transaction, holding the lock."""
        db = self._db
        db.executemany(
            "INSERT INTO dead_letters (ts, source, topic, payload, reason) VALUES (?,?,?,?,?)",
            [(d.ts.timestamp(), d.source, d.topic, d.payload, d.reason) for d in letters],
        )
        db.execute("DELETE FROM dead_letters WHERE id <= (SELECT max(id) FROM dead_letters) - ?",
                   (DEAD_LETTERS_KEPT,))
        self._set_meta("dead_letters_total", self._meta("dead_letters_total") + len(letters))

    def append_ot_logs(self, entries: Sequence[OtLogEvent], letters: Sequence = (),
                       position: tuple[str, str] | None = None) -> None:
        """Store OT log entries, the dead letters of the bad ones and, for a followed file, its
        new ``position`` (a meta key and its value), in one transaction: the position never gets
        ahead of the entries read up to it, nor behind."""
        if not entries and not letters and position is None:
            return
        now = time.time()
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                if entries:
                    db.executemany("INSERT INTO ot_logs (ts, body) VALUES (?, ?)",
                                   [(now, _event_enc.encode(e)) for e in entries])
                    self._enforce_ot_log_cap()
                if letters:
                    self._insert_dead_letters(letters)
                if position is not None:
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", position)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise

    def _enforce_ot_log_cap(self) -> None:
        lo, hi = self._db.execute("SELECT (SELECT min(seq) FROM ot_logs), (SELECT max(seq) FROM ot_logs)").fetchone()
        if lo is None or hi - lo + 1 <= self.max_rows:
            return
        n = self._db.execute("DELETE FROM ot_logs WHERE seq <= ?", (hi - self.max_rows,)).rowcount
        self._set_meta("ot_logs_dropped", self._meta("ot_logs_dropped") + n)
        log.error("buffer full (%d OT log entries): dropped the %d oldest unsent", self.max_rows, n)

    def position(self, key: str) -> str | None:
        """A followed file's position as :meth:`append_ot_logs` last stored it under ``key``."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def dead_letters(self, limit: int = 100) -> list[tuple[float, str, str, str, str]]:
        """Newest first: (ts, source, topic, payload, reason)."""
        with self._lock:
            return self._db.execute(
                "SELECT ts, source, topic, payload, reason FROM dead_letters ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()

    def set_status(self, status_json: str) -> None:
        """The daemon's latest health snapshot, for ``sentinel edge status`` in another process."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('status', ?)", (status_json,))

    def status(self) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
        return row[0] if row else None

    # -- reads --------------------------------------------------------------------------------

    def pending(self, max_readings: int, max_events: int = 1000) -> tuple[ReadingRun | None, EventRun | None]:
        """The oldest unacknowledged readings and events, as contiguous runs."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, ts, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
                " FROM readings ORDER BY seq LIMIT ?",
                (max_readings,),
            ).fetchall()
            erows = self._db.execute("SELECT seq, body FROM events ORDER BY seq LIMIT ?", (max_events,)).fetchall()
        readings = None
        if rows:
            n = _contiguous([r[0] for r in rows])
            sub = self.substation
            fromts = datetime.fromtimestamp
            items = [
                Reading(ts=fromts(r[1], UTC), substation=sub, device_id=r[2], metric=r[3], value=r[4],
                        unit=r[5], quality=r[6], flags=r[7], anomaly_score=r[8], anomaly_type=r[9])
                for r in rows[:n]
            ]
            readings = ReadingRun(first_seq=rows[0][0], items=items)
        events = None
        if erows:
            n = _contiguous([r[0] for r in erows])
            events = EventRun(first_seq=erows[0][0], items=[_event_dec.decode(r[1]) for r in erows[:n]])
        return readings, events

    def pending_ot_logs(self, max_items: int = 1000) -> OtLogRun | None:
        """The oldest unacknowledged OT log entries, as a contiguous run."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM ot_logs ORDER BY seq LIMIT ?", (max_items,)).fetchall()
        if not rows:
            return None
        n = _contiguous([r[0] for r in rows])
        return OtLogRun(first_seq=rows[0][0], items=[_ot_log_dec.decode(r[1]) for r in rows[:n]])

    def stats(self) -> BufferStats:
        with self._lock:
            db = self._db
            rp = db.execute("SELECT count(*), min(ts) FROM readings").fetchone()
            ep = db.execute("SELECT count(*), min(ts) FROM events").fetchone()
            op = db.execute("SELECT count(*), min(ts) FROM ot_logs").fetchone()
            oldest = min((t for t in (rp[1], ep[1]) if t is not None), default=None)
            last = self._meta("last_sync", 0)
            return BufferStats(
                readings_pending=rp[0],
                events_pending=ep[0],
                oldest_pending=datetime.fromtimestamp(oldest, UTC) if oldest is not None else None,
                last_sync=datetime.fromtimestamp(last, UTC) if last else None,
                readings_acked_through=int(self._meta("readings_acked_through")),
                dropped=int(self._meta("dropped")),
                dead_letters=int(self._meta("dead_letters_total")),
                ot_logs_pending=op[0],
                ot_logs_oldest_pending=datetime.fromtimestamp(op[1], UTC) if op[1] is not None else None,
                ot_logs_acked_through=int(self._meta("ot_logs_acked_through")),
                ot_logs_dropped=int(self._meta("ot_logs_dropped")),
                dropped_unwritable=int(self._meta(DROPPED_UNWRITABLE)),
                events_dropped_unwritable=int(self._meta(EVENTS_DROPPED_UNWRITABLE)),
            )
