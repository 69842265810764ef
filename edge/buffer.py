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

Live first (see :mod:`protocols.wire`): with a backlog of more than a few batches the buffer hands
the sync loop two runs, the backlog below a live start ``L`` oldest-first and the newest rows from
``L`` on. ``L`` and the live range the hub has acknowledged (``live_lo`` .. ``live_hi`` in ``meta``)
only divide the rows between the two runs: every row is in one of them until an ack for it arrives,
and acknowledged live rows are deleted as any acked row is. While the hub holds no live range, ``L``
is chosen again at each sync (so the first batch the hub takes carries the newest readings).

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
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);  -- readings near an event are kept longest
-- readings near an anomalous one are kept longest (keep_score >= 0.5: this index serves the check)
CREATE INDEX IF NOT EXISTS readings_anomalous ON readings (device_id, ts) WHERE anomaly_score >= 0.5;
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

# meta counters of readings dropped by the limits, by reason (``dropped`` is their total)
DROPPED_BY = {"rows": "dropped_rows", "bytes": "dropped_bytes", "age": "dropped_age", "new": "dropped_new"}
DROPPED_KEPT = "dropped_kept"  # of those, readings around anomalies (dropped last, when nothing else was left)
POLICIES = ("drop_oldest", "drop_newest")
DROP_LOG_EVERY_S = 600.0

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
_LIMIT_WORDS = {"rows": "row limit", "bytes": "size limit", "age": "age limit", "new": "limit"}
# the oldest n readings that are not around an anomaly: not themselves scoring :score or more, and
# no event, nor reading of the same device scoring that much, within :w seconds of them
_DROP_UNKEPT = """
DELETE FROM readings WHERE seq IN (
    SELECT r.seq FROM readings AS r
    WHERE coalesce(r.anomaly_score, 0) < :score
      AND NOT EXISTS (SELECT 1 FROM events AS e WHERE e.ts BETWEEN r.ts - :w AND r.ts + :w)
      AND NOT EXISTS (SELECT 1 FROM readings AS a WHERE a.device_id = r.device_id AND a.anomaly_score >= 0.5
                      AND a.anomaly_score >= :score AND a.ts BETWEEN r.ts - :w AND r.ts + :w)
    ORDER BY r.seq LIMIT :n)"""
_PENDING_READINGS = ("SELECT seq, ts, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
                     " FROM readings WHERE {where} ORDER BY seq LIMIT ?")


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
    dropped_by: dict[str, int] | None = None  # readings dropped by the limits, by reason (rows, bytes, age, new)
    dropped_kept: int = 0  # of those, readings around anomalies
    used_bytes: int = 0  # the buffer file's pages in use
    live_lo: int = 0  # the live lane: its start L (0: not in use)
    live_hi: int = 0  # the newest reading the hub acknowledged in the live range (0: none yet; -1: unconfirmed)


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
    """The buffer at ``path``. Limits (``docs/buffer.md``): at most ``max_rows`` unsent readings,
    ``max_bytes`` of used file pages (0: none), readings no older than ``max_age_s`` (0: none);
    past one, ``policy`` ``drop_oldest`` drops the oldest readings (those within ``keep_window_s``
    of an event or of a reading scoring ``keep_score`` or more last), ``drop_newest`` stores no
    new readings until there is room. Events are never dropped by a limit."""

    def __init__(self, path: str | Path, substation: str, max_rows: int = 10_000_000, *, max_bytes: int = 0,
                 max_age_s: float = 0.0, policy: str = "drop_oldest", keep_window_s: float = 300.0,
                 keep_score: float = 0.8) -> None:
        if policy not in POLICIES:
            raise ValueError(f"buffer policy {policy!r}: not one of {', '.join(POLICIES)}")
        if keep_score < 0.5:
            raise ValueError(f"buffer keep_score {keep_score}: must be at least 0.5")
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.substation = substation
        self.max_rows = max_rows
        self.max_bytes, self.max_age_s, self.policy = max_bytes, max_age_s, policy
        self.keep_window_s, self.keep_score = keep_window_s, keep_score
        self.full = False  # drop_newest: at a limit, new readings are not stored
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a process crash; WAL fsyncs at checkpoints
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()
        self._db.executescript(SCHEMA)
        # made once per buffer file; INSERT OR IGNORE: another process opening the file meanwhile
        # (`sentinel edge status`) makes the same choice, whichever comes first
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('buffer_id', ?)", (secrets.token_hex(16),))
        self.buffer_id: str = self._db.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()[0]
        self._inserted_since_check = self._refused_since_check = 0
        self._check_every = max(100, min(10_000, max_rows // 10))  # readings between checks of the limits
        self._said_full = False
        self._unlogged: dict[str, int] = {}  # dropped since the last log line, by reason
        self._last_drop_log = 0.0

    def _migrate(self) -> None:
        """Buffers made before edge scoring lack the score columns: add them (NULL for old rows)."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(readings)")}
        if not have:
            return  # a new file: the schema makes them
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
            refused = len(readings) if self.full and readings else 0
            if refused:  # drop_newest at a limit: the backlog stays whole, new readings are counted, not stored
                readings, scores = (), None
                counters = {**counters, "dropped": counters.get("dropped", 0) + refused,
                            DROPPED_BY["new"]: counters.get(DROPPED_BY["new"], 0) + refused}
                self._refused_since_check += refused
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
            if (self._inserted_since_check >= self._check_every or self._refused_since_check >= self._check_every
                    or (self.max_bytes and readings and self._used_bytes() > self.max_bytes)):  # 3 cheap pragmas
                self._enforce_limits()

    # -- limits -------------------------------------------------------------------------------

    def _used_bytes(self) -> int:
        pages, free, size = (self._db.execute(f"PRAGMA {name}").fetchone()[0]
                             for name in ("page_count", "freelist_count", "page_size"))
        return (pages - free) * size

    def _enforce_limits(self, now: float | None = None) -> None:
        """Holding the lock, outside a transaction: apply the age, row and byte limits and the
        policy (class docstring); count what goes, by reason, in the same transaction."""
        self._inserted_since_check = self._refused_since_check = 0
        db = self._db
        now = time.time() if now is None else now
        db.execute("BEGIN IMMEDIATE")
        try:
            dropped: dict[str, int] = {}
            kept_dropped = 0
            if self.max_age_s > 0:  # bounded work: the oldest 100,000 by sequence at most, each time
                cutoff = now - self.max_age_s
                oldest = db.execute("SELECT ts FROM readings ORDER BY seq LIMIT 1").fetchone()
                if oldest is not None and oldest[0] < cutoff:
                    dropped["age"] = db.execute(
                        "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings ORDER BY seq LIMIT 100000)"
                        " AND ts < ?", (cutoff,)).rowcount
            lo, hi = db.execute("SELECT (SELECT min(seq) FROM readings), (SELECT max(seq) FROM readings)").fetchone()
            rows = 0 if lo is None else hi - lo + 1  # an upper bound; counted when it matters
            if rows > self.max_rows:
                rows = db.execute("SELECT count(*) FROM readings").fetchone()[0]
            over_rows = max(0, rows - self.max_rows)
            over_bytes = 0
            if self.max_bytes and rows and (used := self._used_bytes()) > self.max_bytes:
                over_bytes = min(rows, -(-rows * (used - 0.9 * self.max_bytes) // used))  # down to 90 % of it
            n = int(max(over_rows, over_bytes))
            reason = "bytes" if over_bytes > over_rows else "rows"
            self.full = self.policy == "drop_newest" and n > 0
            if n and self.policy == "drop_oldest":
                got = db.execute(_DROP_UNKEPT, {"n": n, "score": self.keep_score, "w": self.keep_window_s}).rowcount
                if got < n:  # only readings around anomalies left: the oldest of them go too
                    kept_dropped = db.execute("DELETE FROM readings WHERE seq IN (SELECT seq FROM readings"
                                              " ORDER BY seq LIMIT ?)", (n - got,)).rowcount
                dropped[reason] = got + kept_dropped
            total = sum(dropped.values())
            if total:
                self._set_meta("dropped", self._meta("dropped") + total)
                for why, k in dropped.items():
                    self._set_meta(DROPPED_BY[why], self._meta(DROPPED_BY[why]) + k)
                if kept_dropped:
                    self._set_meta(DROPPED_KEPT, self._meta(DROPPED_KEPT) + kept_dropped)
            db.execute("COMMIT")
        except BaseException:
            _rollback(db)
            raise
        for why, k in dropped.items():
            self._unlogged[why] = self._unlogged.get(why, 0) + k
        self._unlogged["kept"] = self._unlogged.get("kept", 0) + kept_dropped
        # one line when dropping starts, then a summary at most every DROP_LOG_EVERY_S (a long outage
        # drops at every check; the counters have the exact figures)
        if any(self._unlogged.get(why) for why in DROPPED_BY) and \
                time.monotonic() - self._last_drop_log >= (DROP_LOG_EVERY_S if self._last_drop_log else 0):
            self._last_drop_log = time.monotonic()
            parts = [f"{n:,} by the {_LIMIT_WORDS[why]}" for why, n in self._unlogged.items()
                     if n and why in DROPPED_BY]
            kept = self._unlogged.get("kept", 0)
            log.error("buffer full: dropped the oldest unsent readings: %s%s (policy %s; `sentinel edge status` "
                      "has the totals)", ", ".join(parts), f", {kept:,} of them around anomalies" if kept else "",
                      self.policy)
            self._unlogged = {}
        if self.full and not self._said_full:
            log.error("buffer at its %s limit: new readings are not stored until the hub takes some (policy "
                      "drop_newest)", _LIMIT_WORDS[reason])
        self._said_full = self.full

    def enforce_limits(self, now: float | None = None) -> None:
        """Apply the limits now (they are applied as rows arrive and after each ack)."""
        with self._lock:
            self._enforce_limits(now)

    def ack(self, readings_through: int | None, events_through: int | None,
            ot_logs_through: int | None = None, *, live: tuple[int, int] | None = None,
            live_sent_from: int = 0) -> None:
        """The hub holds everything up to these sequence numbers: forget it here. A stream given as
        None is left alone (the hub was not sent any of it). ``live``: the live range the hub holds
        now (``(lo, hi)``; ``(0, 0)``: none, the lane ends), kept to divide the rows between the
        runs; of it, the rows from ``live_sent_from`` (the live run's first, 0: none sent) to ``hi``
        are forgotten. Raises ValueError, forgetting nothing, for a number above what this buffer
        ever made: the sync loop refuses such an ack before it gets here; this is the last line."""
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
                if live is not None:
                    lo, hi = live
                    if hi > (made := self._made("readings")):
                        raise ValueError(f"an ack of a live range through {hi}, but this buffer made readings "
                                         f"only up to {made}")
                    if live_sent_from and hi >= live_sent_from:
                        db.execute("DELETE FROM readings WHERE seq BETWEEN ? AND ?", (live_sent_from, hi))
                    self._set_live(lo, hi)
                self._set_meta("last_sync", time.time())
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            if self.full:  # drop_newest: the hub took some; room again?
                self._enforce_limits()

    def _live(self) -> tuple[int, int]:
        return int(self._meta("live_lo")), int(self._meta("live_hi"))

    def _set_live(self, lo: int, hi: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('live_lo', ?), ('live_hi', ?)", (lo, hi))  # at once

    def live_range(self) -> tuple[int, int]:
        """The live lane: (its start L, the newest reading the hub acknowledged in it); 0: none."""
        with self._lock:
            return self._live()

    def set_live(self, lo: int, hi: int) -> None:
        """Take the hub's live range from a refusal (409): it only moves rows between the two runs."""
        with self._lock:
            self._set_live(lo, hi)

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

    def get_meta(self, key: str, default: float = 0) -> float:
        """A number the daemon keeps in the buffer (remote config versions)."""
        with self._lock:
            return self._meta(key, default)

    def set_meta(self, key: str, value: float) -> None:
        with self._lock:
            self._set_meta(key, value)

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
            rows = self._db.execute(_PENDING_READINGS.format(where="1 = 1"), (max_readings,)).fetchall()
            erows = self._db.execute("SELECT seq, body FROM events ORDER BY seq LIMIT ?", (max_events,)).fetchall()
        readings = self._reading_run(rows)
        events = None
        if erows:
            n = _contiguous([r[0] for r in erows])
            events = EventRun(first_seq=erows[0][0], items=[_event_dec.decode(r[1]) for r in erows[:n]])
        return readings, events

    def _reading_run(self, rows: list) -> ReadingRun | None:
        """The leading contiguous rows (seq, ts, device_id, ...) as a run."""
        if not rows:
            return None
        n = _contiguous([r[0] for r in rows])
        sub = self.substation
        fromts = datetime.fromtimestamp
        items = [Reading(ts=fromts(r[1], UTC), substation=sub, device_id=r[2], metric=r[3], value=r[4], unit=r[5],
                         quality=r[6], flags=r[7], anomaly_score=r[8], anomaly_type=r[9]) for r in rows[:n]]
        return ReadingRun(first_seq=rows[0][0], items=items)

    def pending_live(self, max_readings: int, live_max: int, live_after: int
                     ) -> tuple[ReadingRun | None, ReadingRun | None]:
        """The readings to send as (backlog run, live run), at most ``max_readings`` in all. The live
        lane is used while the hub holds a live range, or when more than ``live_after`` readings wait
        (``L`` then becomes the newest ``live_max`` readings' first); the live run is at most
        ``live_max`` from the lowest row at or past ``L``, the backlog run the oldest rows below
        ``L``. With the hub's range held and nothing left below ``L``, the backlog run has no items:
        it starts at ``L``, and the sync loop declares the numbers before it gone. ``live_max`` 0:
        the lane is off (a hub that does not take live runs): oldest-first, as :meth:`pending`."""
        with self._lock:
            db = self._db
            lo, hi = self._live()
            if live_max <= 0 or not hi:  # no range held: (re)choose L from the backlog as it is now
                first, last = db.execute("SELECT min(seq), max(seq) FROM readings").fetchone()
                # from the numbers' span, as backlog() counts (an upper bound when kept islands leave holes)
                backlog = 0 if first is None else last - first + 1
                new_lo = last - live_max + 1 if live_max > 0 and backlog > live_after else 0
                if (new_lo, 0) != (lo, hi):
                    self._set_live(new_lo, 0)
                lo, hi = new_lo, 0
            live_rows: list = []
            if lo:
                live_rows = db.execute(_PENDING_READINGS.format(where="seq >= ?"),
                                       (lo, min(live_max, max_readings))).fetchall()
                live_rows = live_rows[:_contiguous([r[0] for r in live_rows])]
            room = max_readings - len(live_rows)
            back_rows = db.execute(_PENDING_READINGS.format(where="seq < ?"), (lo, room)).fetchall() if lo and room \
                else []
            if lo and not back_rows and not hi:  # nothing below L after all: one run, oldest-first
                self._set_live(0, 0)
                lo = 0
            if not lo:
                live_rows = []
                back_rows = db.execute(_PENDING_READINGS.format(where="1 = 1"), (max_readings,)).fetchall()
        back, live = self._reading_run(back_rows), self._reading_run(live_rows)
        if back is None and lo and room:  # the hub holds a range and nothing waits below it: close up to it
            back = ReadingRun(first_seq=lo, items=[])
        return back, live

    def pending_ot_logs(self, max_items: int = 1000) -> OtLogRun | None:
        """The oldest unacknowledged OT log entries, as a contiguous run."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM ot_logs ORDER BY seq LIMIT ?", (max_items,)).fetchall()
        if not rows:
            return None
        n = _contiguous([r[0] for r in rows])
        return OtLogRun(first_seq=rows[0][0], items=[_ot_log_dec.decode(r[1]) for r in rows[:n]])

    def backlog(self) -> tuple[int, datetime | None, int]:
        """(unsent readings, the oldest one's time, readings dropped at the limits), cheaply: from the
        sequence numbers' range (an upper bound when kept islands leave holes), not a count of rows."""
        with self._lock:
            lo, hi = self._db.execute("SELECT (SELECT min(seq) FROM readings), (SELECT max(seq) FROM readings)"
                                      ).fetchone()
            oldest = self._db.execute("SELECT ts FROM readings ORDER BY seq LIMIT 1").fetchone()
            dropped = int(self._meta("dropped"))
            live_lo, live_hi = self._live()
        n = 0 if lo is None else hi - lo + 1
        if n and live_hi:  # the live range the hub holds is a hole in the numbers, not rows waiting
            n -= max(0, min(hi, live_hi) - max(lo, live_lo) + 1)
        return n, datetime.fromtimestamp(oldest[0], UTC) if oldest else None, dropped

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
                dropped_by={why: int(self._meta(key)) for why, key in DROPPED_BY.items()},
                dropped_kept=int(self._meta(DROPPED_KEPT)),
                used_bytes=self._used_bytes(),
                live_lo=int(self._meta("live_lo")),
                live_hi=int(self._meta("live_hi")),
            )
