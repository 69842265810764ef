"""SQLite storage: the hub's embedded default. No server to install; fine for one site or a demo."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from hub.storage import rollups
from hub.storage.base import (
    Document,
    EdgeState,
    HourlyMean,
    Incident,
    INCIDENT_COLUMNS,
    IncidentDialect,
    IncidentError,
    IncidentMaker,
    NewIncident,
    QUESTION_CHUNK_HOURS,
    ReadingBucket,
    SeriesExtent,
    SHARD_SQL_SQLITE,
    ShardSpec,
    SqlTx,
    StatusChange,
    SubstationSummary,
    TimeWindows,
    WINDOW_COLUMNS,
    WINDOW_FIRST_US,
    check_chunking,
    check_transition,
    epoch_us,
    first_of_each_key,
    from_epoch_us,
    incident_from_row,
    incident_id,
    parse_incident_id,
    plan_sync,
    reading_rows,
    readings_from_rows,
    shard_of,
    upsert_incidents,
)
from hub.storage.fifo_lock import FifoLock
from hub.storage.leader import FileLeaderLock
from hub.storage.migrations import (SCHEMA_TABLE_SQLITE, Migration, MigrationStatus,
                                    pending_after)
from hub.storage.rollups import ROLLUP_MEAN
from protocols.mqtt.codec import DeadLetter
from protocols.otlog import OtLogEvent
from protocols.reading import Reading
from protocols.wire import EdgeHealth, Event, SyncAck, SyncBatch

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    ts REAL NOT NULL,            -- seconds since the epoch, UTC
    substation TEXT NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    unit TEXT NOT NULL,
    quality REAL NOT NULL,
    flags INTEGER NOT NULL,
    source TEXT NOT NULL,        -- edge id, or 'http' / 'mqtt'
    seq INTEGER,                 -- the edge's sequence number, NULL for other sources
    anomaly_score REAL,          -- the edge's anomaly score 0..1, NULL if not scored
    anomaly_type TEXT
);
CREATE INDEX IF NOT EXISTS readings_device_metric_ts ON readings (device_id, metric, ts);
CREATE TABLE IF NOT EXISTS events (
    ts REAL NOT NULL,
    substation TEXT NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    type TEXT NOT NULL,
    state TEXT NOT NULL,
    severity TEXT NOT NULL,
    value REAL,
    threshold REAL,
    nominal REAL,
    unit TEXT NOT NULL,
    description TEXT NOT NULL,
    edge_id TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    type TEXT NOT NULL,
    device_id TEXT NOT NULL,
    severity TEXT NOT NULL,
    description TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'OPEN',
    agent TEXT NOT NULL,
    substation TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS incidents_status_severity ON incidents (status, severity);
CREATE TABLE IF NOT EXISTS incident_history (
    number INTEGER NOT NULL,     -- the incident's
    ts REAL NOT NULL,
    status TEXT NOT NULL,
    actor TEXT NOT NULL,
    note TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_history_number ON incident_history (number);
CREATE TABLE IF NOT EXISTS documents (
    kind TEXT NOT NULL,          -- forecast | maintenance | agent_run
    key TEXT NOT NULL,
    ts REAL NOT NULL,
    body TEXT NOT NULL,          -- JSON
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS ot_logs (
    ts REAL NOT NULL,
    substation TEXT NOT NULL,
    device_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,        -- who sent it: 'http', an edge id, 'mqtt'
    body TEXT NOT NULL           -- the entry as JSON (protocols/schemas/ot_log.schema.json)
);
CREATE INDEX IF NOT EXISTS ot_logs_ts ON ot_logs (ts);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
CREATE TABLE IF NOT EXISTS dead_letters (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,            -- when it was received, seconds since the epoch, UTC
    source TEXT NOT NULL,        -- who received it: '<device>@<broker>' (edge), 'hub@<broker>'
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,       -- as text, cut at 64 KiB
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS edge_sync (
    edge_id TEXT PRIMARY KEY,
    substation TEXT NOT NULL,
    readings_acked_through INTEGER NOT NULL DEFAULT 0,
    events_acked_through INTEGER NOT NULL DEFAULT 0,
    gaps INTEGER NOT NULL DEFAULT 0,
    last_sync REAL,
    ot_logs_acked_through INTEGER NOT NULL DEFAULT 0,
    buffer_id TEXT               -- the edge's buffer the marks count in (NULL: an edge that names none)
);
"""

_READING_SQL = ("INSERT INTO readings (ts, substation, device_id, metric, value, unit, quality, flags, source, seq,"
                " anomaly_score, anomaly_type) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
_SCORE_COLUMNS = (("anomaly_score", "REAL"), ("anomaly_type", "TEXT"))
# insert_new_readings: the batch's keys, to find those already held in one query on readings_device_metric_ts
_KEYS_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS reading_keys"
               " (k INTEGER PRIMARY KEY, substation TEXT, device_id TEXT, metric TEXT, ts REAL)")
_HELD_SQL = ("SELECT k.k FROM reading_keys AS k WHERE EXISTS (SELECT 1 FROM readings AS r"
             " WHERE r.device_id = k.device_id AND r.metric = k.metric AND r.ts = k.ts"
             " AND r.substation = k.substation)")
_EVENT_SQL = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
# one incident not RESOLVED per condition, as PostgreSQL's index ('' is what the column migration gives
# incidents made before: never a finding's key)
_OPEN_KEY_INDEX = ("CREATE UNIQUE INDEX IF NOT EXISTS incidents_open_key ON incidents (condition_key)"
                   " WHERE status <> 'RESOLVED' AND condition_key <> ''")
# open incidents that are not their condition's newest: (number, ts, condition_key, the newest's number and ts)
_OPEN_DUPLICATES = """
SELECT d.number, d.ts, d.condition_key, k.number, k.ts FROM (
    SELECT number, ts, condition_key, max(number) OVER (PARTITION BY condition_key) AS kept FROM incidents
    WHERE status <> 'RESOLVED' AND condition_key <> '') AS d JOIN incidents AS k ON k.number = d.kept
WHERE d.number <> d.kept ORDER BY d.number"""
# columns added after the first release: (name, type) to ALTER TABLE ... ADD COLUMN where missing
_INCIDENT_COLUMNS = (("condition_key", "TEXT NOT NULL DEFAULT ''"), ("recommendation", "TEXT NOT NULL DEFAULT ''"),
                     ("confidence", "REAL"), ("occurrences", "INTEGER NOT NULL DEFAULT 1"), ("last_seen", "REAL"),
                     ("facts", "TEXT NOT NULL DEFAULT '{}'"), ("narrative", "TEXT NOT NULL DEFAULT ''"))


_ROLLUPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollups (
    width INTEGER NOT NULL,       -- seconds: 60, 3600, 86400
    bucket INTEGER NOT NULL,      -- its start, epoch seconds (aligned on the epoch: UTC)
    substation TEXT NOT NULL,
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    vmin REAL NOT NULL,
    vmax REAL NOT NULL,
    vsum REAL NOT NULL,
    n INTEGER NOT NULL,
    last_ts REAL NOT NULL,        -- the newest reading's time and value (of a tie, the largest value)
    last_value REAL NOT NULL,
    PRIMARY KEY (width, device_id, metric, substation, bucket)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_dirty (  -- hours with readings the rollups do not count yet
    device_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    substation TEXT NOT NULL,
    hour INTEGER NOT NULL,        -- its start, epoch seconds
    marks INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (device_id, metric, substation, hour)
) WITHOUT ROWID"""
# the hours of the readings matching {where}, marked (k: whole microseconds, as every bucket here counts),
# each with its earliest reading (since): a fold recomputes the hour's minutes from since's on, and the
# hour from its minutes (see _refresh_marks). A since of NULL (marks made before migration 6) stays
# NULL: the whole hour is recomputed. SQLite has one writer, and a refresh holds the write lock from
# taking marks to commit: a mark is never claimed while a reading comes
_MARK_DIRTY = """
INSERT INTO rollup_dirty (device_id, metric, substation, hour, since)
SELECT device_id, metric, substation, (CAST(round(ts * 1000000) AS INTEGER) / 3600000000) * 3600, min(ts)
FROM readings WHERE {where} GROUP BY 1, 2, 3, 4
ON CONFLICT (device_id, metric, substation, hour) DO UPDATE SET since = excluded.since WHERE excluded.since < since"""
# migration 2's marks, as that release made them (migration 6 adds since)
_MARK_ALL_V2 = """
INSERT INTO rollup_dirty (device_id, metric, substation, hour)
SELECT DISTINCT device_id, metric, substation, (CAST(round(ts * 1000000) AS INTEGER) / 3600000000) * 3600
FROM readings WHERE 1 = 1
ON CONFLICT (device_id, metric, substation, hour) DO NOTHING"""
# the marks a fold does; lo: the first minute to recompute (since's, or the hour's first), epoch seconds
_TODO_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS rollup_todo_v6 (device_id TEXT, metric TEXT, substation TEXT,"
               " hour INTEGER, lo INTEGER, PRIMARY KEY (device_id, metric, substation, hour)) WITHOUT ROWID")
_REPLACE = """
ON CONFLICT (width, device_id, metric, substation, bucket) DO UPDATE SET vmin = excluded.vmin, vmax = excluded.vmax,
    vsum = excluded.vsum, n = excluded.n, last_ts = excluded.last_ts, last_value = excluded.last_value"""
# The three recomputes name their join order (CROSS JOIN: the marks to do outside, an index search of
# their rows inside). With no statistics on the fresh temp table, SQLite's planner walked the whole
# readings index (or the whole 1-minute rollups) and looked each row up among the marks: every fold
# read every reading held (docs/rollups.md; tests/hub/test_rollups.py checks the plan).
# the 1-minute rollups of the hours to do from their first minute to recompute (lo) on, from the
# readings; sums in a fixed order (as PostgreSQL adds them: the same bits on both). The minutes before
# lo hold no reading the mark is for, so the hour still filling costs the minutes since its last fold
_RECOMPUTE_MINUTES = """
INSERT INTO rollups (width, bucket, substation, device_id, metric, vmin, vmax, vsum, n, last_ts, last_value)
SELECT 60, k * 60, substation, device_id, metric, min(value), max(value), max(CASE WHEN rn = 1 THEN total END),
       count(*), max(ts), max(CASE WHEN rn = 1 THEN value END)
FROM (SELECT CAST(round(r.ts * 1000000) AS INTEGER) / 60000000 AS k, r.substation, r.device_id,
             r.metric, r.value, r.ts, row_number() OVER p AS rn,
             sum(r.value) OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
      FROM rollup_todo_v6 AS d
      CROSS JOIN readings AS r ON r.device_id = d.device_id AND r.metric = d.metric AND r.ts >= d.lo - 1
           AND r.ts < d.hour + 3601 AND r.substation = d.substation
           AND CAST(round(r.ts * 1000000) AS INTEGER) / 60000000 >= d.lo / 60
           AND CAST(round(r.ts * 1000000) AS INTEGER) / 3600000000 = d.hour / 3600
      WHERE r.value IS NOT NULL AND (r.flags & 1) = 0
      WINDOW p AS (PARTITION BY r.device_id, r.metric, r.substation, CAST(round(r.ts * 1000000) AS INTEGER) / 60000000
                   ORDER BY r.ts DESC, r.value DESC))
WHERE true
GROUP BY k, substation, device_id, metric""" + _REPLACE
# the 1-hour rollups of the hours to do, from their minutes (as the days from the hours)
_RECOMPUTE_HOURS = """
INSERT INTO rollups (width, bucket, substation, device_id, metric, vmin, vmax, vsum, n, last_ts, last_value)
SELECT 3600, hour, substation, device_id, metric, min(vmin), max(vmax), max(CASE WHEN rn = 1 THEN total END), sum(n),
       max(last_ts), max(CASE WHEN rn = 1 THEN last_value END)
FROM (SELECT d.hour, m.substation, m.device_id, m.metric, m.vmin, m.vmax, m.n, m.last_ts, m.last_value,
             row_number() OVER p AS rn,
             sum(m.vsum) OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
      FROM rollup_todo_v6 AS d
      CROSS JOIN rollups AS m ON m.width = 60 AND m.device_id = d.device_id AND m.metric = d.metric
           AND m.substation = d.substation AND m.bucket >= d.hour AND m.bucket < d.hour + 3600
      WINDOW p AS (PARTITION BY m.device_id, m.metric, m.substation, d.hour
                   ORDER BY m.last_ts DESC, m.last_value DESC, m.bucket DESC))
WHERE true
GROUP BY hour, substation, device_id, metric""" + _REPLACE
# the 1-day rollups of their days, from the hours
_RECOMPUTE_DAYS = """
INSERT INTO rollups (width, bucket, substation, device_id, metric, vmin, vmax, vsum, n, last_ts, last_value)
SELECT 86400, day, substation, device_id, metric, min(vmin), max(vmax), max(CASE WHEN rn = 1 THEN total END), sum(n),
       max(last_ts), max(CASE WHEN rn = 1 THEN last_value END)
FROM (SELECT h.bucket / 86400 * 86400 AS day, h.substation, h.device_id, h.metric, h.vmin, h.vmax, h.n, h.last_ts,
             h.last_value, row_number() OVER p AS rn,
             sum(h.vsum) OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
      FROM (SELECT DISTINCT device_id, metric, substation, hour / 86400 * 86400 AS day FROM rollup_todo_v6) AS d
      CROSS JOIN rollups AS h ON h.width = 3600 AND h.device_id = d.device_id AND h.metric = d.metric
           AND h.substation = d.substation AND h.bucket >= d.day AND h.bucket < d.day + 86400
      WINDOW p AS (PARTITION BY h.device_id, h.metric, h.substation, h.bucket / 86400
                   ORDER BY h.last_ts DESC, h.last_value DESC, h.bucket DESC))
WHERE true
GROUP BY day, substation, device_id, metric""" + _REPLACE
_ROLLUP_BUCKETS = f"""
SELECT bucket, substation, device_id, metric, vmin, vmax, {ROLLUP_MEAN.format(least="min", greatest="max")},
       last_value, n FROM rollups
WHERE width = ? AND metric IN ({{marks}}){{where}} AND bucket >= ? AND bucket < ?
ORDER BY bucket, substation"""


_HEALTH = msgspec.json.Decoder(EdgeHealth)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _reading_rows(readings: Sequence[Reading], source: str, first_seq: int | None) -> list[tuple]:
    return reading_rows(readings, source, first_seq, ts=datetime.timestamp)


def _readings(rows: Sequence[tuple]) -> list[Reading]:
    return readings_from_rows(rows, ts=_utc)


# the incident upsert (hub.storage.base.upsert_incidents) in SQLite's words
_INCIDENTS = IncidentDialect(ts=datetime.timestamp, greatest="max", json="?")


class SQLiteStorage:
    backend = "sqlite"

    def __init__(self, path: str | Path, *, migrate: bool = True) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = FifoLock()  # first come, first served: a chunked job cannot starve a request
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.create_function("sentinel_shard_of", 2, shard_of, deterministic=True)  # SHARD_SQL_SQLITE
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: each commit is on disk before it returns, so an ack to an edge (which then forgets
        # the data) survives a power cut too; NORMAL would survive only a crash of this process
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate(migrate)

    def leader_lock(self, name: str) -> FileLeaderLock:
        """A lock one hub process holds at a time, for a job that must run once (``hub.storage.leader``)."""
        return FileLeaderLock(None if self.path == ":memory:" else self.path, name)

    def schema_version(self) -> int | None:
        """The applied migrations' highest version; 0: made before versioning; None: no hub schema."""
        have = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'"
                                               " AND name IN ('schema_migrations', 'readings')")}
        if "schema_migrations" in have:
            return self._db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
        return 0 if "readings" in have else None

    def migration_status(self) -> MigrationStatus:
        version = self.schema_version()
        applied = [] if version is None or version == 0 else [
            (v, name, _utc(at).isoformat()) for v, name, at in
            self._db.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")]
        return MigrationStatus(version, applied, pending_after(version, self.path))

    def _migrate(self, migrate: bool) -> list[Migration]:
        """The base schema, then the pending migrations, each committed with its record
        (:mod:`hub.storage.migrations`); the ones applied."""
        todo = pending_after(self.schema_version(), self.path, migrate=migrate)
        self._db.executescript(SCHEMA)
        self._db.execute(SCHEMA_TABLE_SQLITE)
        for m in todo:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                MIGRATION_STEPS[m.version](self)
                self._db.execute("INSERT OR REPLACE INTO schema_migrations VALUES (?, ?, ?)",
                                 (m.version, m.name, datetime.now(UTC).timestamp()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            log.info("%s: applied schema migration %d (%s)", self.path, m.version, m.name)
        return todo

    def _legacy_upgrades(self) -> None:
        """Migration 1: what hub 0.1.0 and earlier applied in place at start (each a no-op where done)."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(readings)")}
        for name, kind in _SCORE_COLUMNS:  # databases made before edge scoring
            if name not in have:
                self._db.execute(f"ALTER TABLE readings ADD COLUMN {name} {kind}")
        have = {r[1] for r in self._db.execute("PRAGMA table_info(incidents)")}
        for name, kind in _INCIDENT_COLUMNS:  # databases made before incident correlation
            if name not in have:
                self._db.execute(f"ALTER TABLE incidents ADD COLUMN {name} {kind}")
        self._one_open_incident_per_condition()
        have = {r[1] for r in self._db.execute("PRAGMA table_info(edge_sync)")}
        if "ot_logs_acked_through" not in have:  # databases made before edges forwarded OT logs
            self._db.execute("ALTER TABLE edge_sync ADD COLUMN ot_logs_acked_through INTEGER NOT NULL DEFAULT 0")
        if "buffer_id" not in have:  # databases made before edges named their buffers
            self._db.execute("ALTER TABLE edge_sync ADD COLUMN buffer_id TEXT")

    def _rollups(self) -> None:
        """Migration 2: the rollups and their dirty hours; every hour held is marked (the first
        question, or the hub's refresher, fills it)."""
        for statement in _ROLLUPS_SCHEMA.split(";"):  # not executescript: that would commit the migration's transaction
            self._db.execute(statement)
        self._db.execute(_MARK_ALL_V2)

    def _edge_health_table(self) -> None:
        """Migration 3: each edge's latest health report."""
        self._db.execute("CREATE TABLE IF NOT EXISTS edge_health (edge_id TEXT PRIMARY KEY, received_at REAL NOT NULL,"
                         " body TEXT NOT NULL)")

    def _live_range_columns(self) -> None:
        """Migration 5: each edge's live range past its readings mark (protocols.wire, "Live first")."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(edge_sync)")}
        for name in ("live_lo", "live_hi"):
            if name not in have:
                self._db.execute(f"ALTER TABLE edge_sync ADD COLUMN {name} INTEGER NOT NULL DEFAULT 0")

    def edge_health(self) -> dict[str, tuple[datetime, EdgeHealth]]:
        with self._lock:
            rows = self._db.execute("SELECT edge_id, received_at, body FROM edge_health").fetchall()
        return {r[0]: (_utc(r[1]), _HEALTH.decode(r[2])) for r in rows}

    def _mark_dirty(self, after_rowid: int | None) -> None:
        """In the caller's transaction: the hours of the readings inserted after ``after_rowid``."""
        self._db.execute(_MARK_DIRTY.format(where="rowid > ?"), (after_rowid or 0,))

    def _last_rowid(self) -> int | None:
        return self._db.execute("SELECT max(rowid) FROM readings").fetchone()[0]

    def refresh_rollups(self, *, device_id: str | None = None, metric: str | None = None,
                        substation: str | None = None, start: datetime | None = None, end: datetime | None = None,
                        limit: int | None = None) -> int:
        where, args = "1 = 1", []
        for column, value in (("device_id", device_id), ("metric", metric), ("substation", substation)):
            if value is not None:
                where, args = where + f" AND {column} = ?", [*args, value]
        if start is not None:  # the hours that overlap [start, end)
            where, args = where + " AND hour > ?", [*args, epoch_us(start) // 10**6 - 3600]
        if end is not None:
            where, args = where + " AND hour < ?", [*args, -(-epoch_us(end) // 10**6)]
        if limit is None:  # a question: every mark of its range, a chunk per transaction
            total = 0
            while (n := self._refresh_marks(where, args, QUESTION_CHUNK_HOURS)) >= QUESTION_CHUNK_HOURS:
                total += n
            return total + n
        return self._refresh_marks(where, args, limit)

    def _refresh_marks(self, where: str, args: list[Any], limit: int) -> int:
        """Fold up to ``limit`` marked hours matching ``where`` in one transaction, the longest waiting
        first (the earliest ``since``; none first); how many.

        Each hour's minutes are recomputed from its mark's earliest reading's minute on (all of them
        when the mark has no ``since``), the hour from its minutes, the day from its hours: every
        reading the rollups do not count yet is in a mark no later than it."""
        with self._lock:
            db = self._db
            if db.execute(f"SELECT 1 FROM rollup_dirty WHERE {where} LIMIT 1", args).fetchone() is None:
                return 0  # the usual case when asked: nothing to do, and no write lock taken
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(_TODO_TABLE)
                db.execute("DELETE FROM rollup_todo_v6")
                db.execute(f"INSERT INTO rollup_todo_v6 SELECT device_id, metric, substation, hour,"
                           f" coalesce((CAST(round(since * 1000000) AS INTEGER) / 60000000) * 60, hour)"
                           f" FROM rollup_dirty WHERE {where} ORDER BY since, hour LIMIT ?", [*args, limit])
                n = db.execute("DELETE FROM rollup_dirty WHERE (device_id, metric, substation, hour) IN"
                               " (SELECT device_id, metric, substation, hour FROM rollup_todo_v6)").rowcount
                db.execute(_RECOMPUTE_MINUTES)
                db.execute(_RECOMPUTE_HOURS)
                db.execute(_RECOMPUTE_DAYS)
                db.execute("DELETE FROM rollup_todo_v6")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return n

    def _one_open_incident_per_condition(self) -> None:
        """PostgreSQL's unique ``incidents_open_key``: at most one incident not RESOLVED per condition.
        Databases made before it had a plain index of that name, and may hold duplicates: the older
        ones are resolved first (the newest is the one the upsert has been updating), each with a
        history entry, and logged."""
        index = self._db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'incidents_open_key'"
                                 ).fetchone()
        if index is not None and index[0] is not None and " UNIQUE " in f" {index[0].upper()} ":
            return
        # within the migration's transaction
        dupes = [(number, incident_id(_utc(ts).year, number), key, incident_id(_utc(kept_ts).year, kept))
                 for number, ts, key, kept, kept_ts in self._db.execute(_OPEN_DUPLICATES).fetchall()]
        if dupes:
            now = datetime.now(UTC).timestamp()
            self._db.executemany("UPDATE incidents SET status = 'RESOLVED', updated_at = ? WHERE number = ?",
                                 [(now, number) for number, *_ in dupes])
            self._db.executemany("INSERT INTO incident_history (number, ts, status, actor, note) VALUES (?,?,?,?,?)",
                                 [(number, now, "RESOLVED", "hub", f"duplicate of {kept} (the same condition, "
                                   f"{key!r}, open twice): resolved when the hub made it one open incident per "
                                   "condition") for number, _, key, kept in dupes])
            log.warning("%s: resolved %d duplicate open incidents, keeping the newest of each condition open: %s",
                        self.path, len(dupes), ", ".join(f"{dup} (duplicate of {kept})" for _, dup, _, kept in dupes))
        self._db.execute("DROP INDEX IF EXISTS incidents_open_key")
        self._db.execute(_OPEN_KEY_INDEX)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield SqlTx(self._db.cursor(), self.backend)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def data_time_range(self) -> tuple[datetime, datetime] | None:
        with self._lock:
            lo, hi = self._db.execute("SELECT min(lo), max(hi) FROM (SELECT min(ts) AS lo, max(ts) AS hi FROM readings"
                " UNION ALL SELECT min(ts), max(ts) FROM ot_logs) AS spans").fetchone()
        return None if lo is None else (_utc(lo), _utc(hi))

    # -- writes -------------------------------------------------------------------------------

    def _insert_incidents(self, incidents: Sequence[NewIncident]) -> list[int]:
        """:func:`hub.storage.base.upsert_incidents`, in the transaction the caller holds open."""
        return upsert_incidents(SqlTx(self._db.cursor(), self.backend), incidents, _INCIDENTS)

    def apply_sync(self, batch: SyncBatch, make_incidents: IncidentMaker) -> SyncAck:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT readings_acked_through, events_acked_through, gaps, ot_logs_acked_through, buffer_id,"
                    " live_lo, live_hi FROM edge_sync WHERE edge_id = ?",
                    (batch.edge_id,),
                ).fetchone()
                r_hwm, e_hwm, gaps, o_hwm, buffer_id, live_lo, live_hi = row if row else (0, 0, 0, 0, None, 0, 0)
                # SequenceError: nothing stored
                plan = plan_sync(batch, r_hwm, e_hwm, o_hwm, buffer_id, (live_lo, live_hi))
                if plan.readings or plan.live:
                    before = self._last_rowid()
                    db.executemany(_READING_SQL, _reading_rows(plan.readings, batch.edge_id, plan.readings_first)
                                   + _reading_rows(plan.live, batch.edge_id, plan.live_first))
                    self._mark_dirty(before)
                if plan.events:
                    db.executemany(
                        _EVENT_SQL,
                        [
                            (e.ts.timestamp(), e.substation, e.device_id, e.metric, e.type, e.state, e.severity,
                             e.value, e.threshold, e.nominal, e.unit, e.description, batch.edge_id,
                             plan.events_first + i)
                            for i, e in enumerate(plan.events)
                        ],
                    )
                    self._insert_incidents(make_incidents(plan.events))
                if plan.ot_logs:
                    db.executemany("INSERT INTO ot_logs VALUES (?,?,?,?,?,?)", _ot_log_rows(plan.ot_logs, batch.edge_id))
                db.execute(
                    "INSERT INTO edge_sync (edge_id, substation, readings_acked_through, events_acked_through, gaps,"
                    " last_sync, ot_logs_acked_through, buffer_id, live_lo, live_hi) VALUES (?,?,?,?,?,?,?,?,?,?)"
                    " ON CONFLICT (edge_id) DO UPDATE SET substation=excluded.substation,"
                    " readings_acked_through=excluded.readings_acked_through,"
                    " events_acked_through=excluded.events_acked_through, gaps=excluded.gaps,"
                    " last_sync=excluded.last_sync, ot_logs_acked_through=excluded.ot_logs_acked_through,"
                    " buffer_id=excluded.buffer_id, live_lo=excluded.live_lo, live_hi=excluded.live_hi",
                    (batch.edge_id, batch.substation, plan.readings_acked_through, plan.events_acked_through,
                     gaps + plan.gaps, datetime.now(UTC).timestamp(), plan.ot_logs_acked_through, plan.buffer_id,
                     plan.live_lo, plan.live_hi),
                )
                if batch.health is not None:
                    db.execute("INSERT INTO edge_health VALUES (?,?,?) ON CONFLICT (edge_id) DO UPDATE SET"
                               " received_at = excluded.received_at, body = excluded.body",
                               (batch.edge_id, datetime.now(UTC).timestamp(), msgspec.json.encode(batch.health).decode()))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return plan.ack(batch.edge_id)

    def insert_readings(self, readings: Sequence[Reading], source: str) -> int:
        return len(self.insert_new_readings(readings, source))

    def insert_new_readings(self, readings: Sequence[Reading], source: str) -> list[int]:
        first = first_of_each_key(readings)
        if not first:
            return []
        rows = _reading_rows([readings[i] for i in first], source, None)
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(_KEYS_TABLE)
                db.execute("DELETE FROM reading_keys")
                db.executemany("INSERT INTO reading_keys VALUES (?,?,?,?,?)",
                               [(k, row[1], row[2], row[3], row[0]) for k, row in enumerate(rows)])
                held = {k for (k,) in db.execute(_HELD_SQL)}
                new = [k for k in range(len(rows)) if k not in held] if held else range(len(rows))
                before = self._last_rowid()
                db.executemany(_READING_SQL, [rows[k] for k in new] if held else rows)
                self._mark_dirty(before)
                db.execute("DELETE FROM reading_keys")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return [first[k] for k in new]

    def add_incidents(self, incidents: Sequence[NewIncident]) -> list[Incident]:
        if not incidents:
            return []
        with self._lock:
            # IMMEDIATE: the upsert reads, then writes; a deferred transaction could not take the write
            # lock after another process wrote (SQLITE_BUSY at once, not after the busy timeout)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                numbers = self._insert_incidents(incidents)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            unique = list(dict.fromkeys(numbers))
            marks = ",".join("?" * len(unique))
            rows = self._db.execute(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE number IN ({marks}) ORDER BY number",
                                    unique).fetchall()
        return [_incident(r) for r in rows]

    def get_incident(self, incident_id: str) -> Incident:
        number = parse_incident_id(incident_id)
        with self._lock:
            row = self._db.execute(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE number = ?", (number,)).fetchone()
            history = self._db.execute(
                "SELECT ts, status, actor, note FROM incident_history WHERE number = ? ORDER BY rowid", (number,)
            ).fetchall()
        if row is None or _incident(row).id != incident_id:
            raise IncidentError(f"no incident {incident_id}")
        return msgspec.structs.replace(_incident(row), history=[
            StatusChange(timestamp=_utc(h[0]), status=h[1], actor=h[2], note=h[3]) for h in history])

    def set_incident_status(self, incident_id: str, status: str, actor: str, note: str = "") -> Incident:
        current = self.get_incident(incident_id)
        check_transition(incident_id, current.status, status)
        number = parse_incident_id(incident_id)
        now = datetime.now(UTC).timestamp()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute("UPDATE incidents SET status = ?, updated_at = ? WHERE number = ? AND status = ?",
                                       (status, now, number, current.status))
                if cur.rowcount != 1:
                    raise IncidentError(f"{incident_id} changed while it was being updated; try again")
                self._db.execute("INSERT INTO incident_history VALUES (?,?,?,?,?)", (number, now, status, actor, note))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.get_incident(incident_id)

    def set_incident_narrative(self, incident_id: str, narrative: str) -> None:
        with self._lock:
            self._db.execute("UPDATE incidents SET narrative = ? WHERE number = ?",
                             (narrative, parse_incident_id(incident_id)))

    def rollup_buckets(self, width: int, start: datetime, end: datetime, metrics: Sequence[str], *,
                       device_id: str | None = None, substation: str | None = None,
                       shard: ShardSpec | None = None) -> list[ReadingBucket]:
        for m in dict.fromkeys(metrics):  # the marked hours of the range first: exact answers
            self.refresh_rollups(device_id=device_id, metric=m, substation=substation, start=start, end=end)
        where, args = "", []
        for column, value in (("device_id", device_id), ("substation", substation)):
            if value is not None:
                where, args = where + f" AND {column} = ?", [*args, value]
        if shard is not None:
            where, args = where + f" AND {SHARD_SQL_SQLITE}", [*args, shard[1], shard[0]]
        with self._lock:
            rows = self._db.execute(_ROLLUP_BUCKETS.format(marks=",".join("?" * len(metrics)), where=where),
                                    (width, *metrics, *args, epoch_us(start) // 10**6,
                                     epoch_us(end) // 10**6)).fetchall()
        make, utc = ReadingBucket._make, datetime.fromtimestamp
        return [make((utc(t, UTC), sub, dev, m, lo, hi, avg, last, n)) for t, sub, dev, m, lo, hi, avg, last, n in rows]

    def raw_buckets(self, start: datetime, end: datetime, width: int, metrics: Sequence[str], *,
                    device_id: str | None = None, substation: str | None = None,
                    shard: ShardSpec | None = None) -> list[ReadingBucket]:
        return [b for chunk in self.iter_buckets(start, end, width, metrics=metrics,
                                                 devices=None if device_id is None else [device_id],
                                                 substations=None if substation is None else [substation],
                                                 shard=shard)
                for b in chunk]

    def series_buckets(self, start: datetime, end: datetime, bucket_s: int, device_id: str, metric: str,
                       substation: str | None = None) -> list[ReadingBucket]:
        return rollups.series_buckets(self, start, end, bucket_s, device_id, metric, substation)

    def hourly_means(self, metrics: Sequence[str], start: datetime, end: datetime, *,
                     shard: ShardSpec | None = None) -> list[HourlyMean]:
        return rollups.hourly_means(self, metrics, start, end, shard)

    def put_documents(self, docs: Sequence[Document]) -> None:
        rows = [(d.kind, d.key, d.timestamp.timestamp(), _json(d.body)) for d in docs]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO documents VALUES (?,?,?,?) ON CONFLICT (kind, key) DO UPDATE SET"
                    " ts = excluded.ts, body = excluded.body", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def latest_documents(self, kind: str) -> list[Document]:
        with self._lock:
            rows = self._db.execute("SELECT kind, key, ts, body FROM documents WHERE kind = ? ORDER BY key",
                                    (kind,)).fetchall()
        return [Document(kind=r[0], key=r[1], timestamp=_utc(r[2]), body=msgspec.json.decode(r[3])) for r in rows]

    def add_ot_logs(self, events: Sequence[OtLogEvent], source: str) -> int:
        rows = _ot_log_rows(events, source)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO ot_logs VALUES (?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def ot_logs_between(self, start: datetime, end: datetime, limit: int = 1_000_000) -> list[OtLogEvent]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM ot_logs WHERE ts >= ? AND ts < ? ORDER BY ts, rowid LIMIT ?",
                                    (start.timestamp(), end.timestamp(), limit)).fetchall()
        return [_OT_DECODER.decode(r[0]) for r in rows]

    def list_events(self, state: str | None = None, limit: int = 10_000) -> list[Event]:
        sql = ("SELECT ts, substation, device_id, metric, type, state, severity, value, threshold, nominal, unit,"
               " description FROM events")
        args: tuple = ()
        if state:
            sql += " WHERE state = ?"
            args = (state,)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY ts, rowid LIMIT ?", (*args, limit)).fetchall()
        return [Event(ts=_utc(r[0]), substation=r[1], device_id=r[2], metric=r[3], type=r[4], state=r[5],
                      severity=r[6], value=r[7], threshold=r[8], nominal=r[9], unit=r[10], description=r[11])
                for r in rows]

    def readings_between(self, start: datetime, end: datetime, limit: int = 2_000_000) -> list[Reading]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
                " FROM readings WHERE ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                (start.timestamp(), end.timestamp(), limit)).fetchall()
        return _readings(rows)

    # -- long ranges in chunks (exports, history) -----------------------------------------------
    # LIMIT-keyset queries over TimeWindows: each query is short and holds the lock only while it
    # runs, so ingest goes on during an export; a window that holds more than a chunk is read on
    # from the last row returned, (ts, substation, device_id, metric, rowid).

    def iter_readings(self, start: datetime, end: datetime, *, substations: Sequence[str] | None = None,
                      devices: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                      chunk_rows: int = 50_000) -> Iterator[list[Reading]]:
        check_chunking(chunk_rows)
        windows = TimeWindows(epoch_us(start), epoch_us(end), chunk_rows, next_us=self._next_reading_us)
        return self._iter_readings(windows, *_series_where(substations, devices, metrics), chunk_rows)

    def iter_window_rows(self, start: datetime, end: datetime, chunk_rows: int = 200_000, *,
                         substations: Sequence[str] | None = None) -> Iterator[list[tuple]]:
        check_chunking(chunk_rows)
        query, extra = _WINDOW_ROWS, ()
        if substations is not None:  # the list as one JSON argument: no limit on the number of variables
            if not substations:
                return iter(())
            query += " AND substation IN (SELECT value FROM json_each(?))"
            extra = (json.dumps(list(dict.fromkeys(substations))),)
        windows = TimeWindows(epoch_us(start), epoch_us(end), chunk_rows, first_us=WINDOW_FIRST_US,
                              next_us=self._next_reading_us)
        return self._iter_window_rows(windows, query, extra)

    def devices_between(self, start: datetime, end: datetime) -> list[tuple[str, str]]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT substation, device_id FROM readings WHERE ts >= ? AND ts < ?",
                                    (start.timestamp(), end.timestamp())).fetchall()
        return [(r[0], r[1]) for r in rows]

    def _iter_window_rows(self, windows: TimeWindows, query: str, extra: tuple = ()) -> Iterator[list[tuple]]:
        for lo, hi in windows:
            with self._lock:
                rows = self._db.execute(query, (lo / 10**6, hi / 10**6, *extra)).fetchall()
            windows.done(len(rows))
            if rows:
                yield rows
            del rows

    def _iter_readings(self, windows: TimeWindows, where: str, args: list[str],
                       chunk_rows: int) -> Iterator[list[Reading]]:
        for lo, hi in windows:
            held, after = 0, None
            while True:
                if after is None:
                    sql, params = _EXPORT_READINGS.format(keyset="", where=where), (lo / 10**6, hi / 10**6)
                else:  # from the last row's ts on, after the last row
                    sql = _EXPORT_READINGS.format(keyset=_READINGS_KEYSET, where=where)
                    params = (after[0], hi / 10**6, *after)
                with self._lock:
                    rows = self._db.execute(sql, (*params, *args, chunk_rows)).fetchall()
                n = len(rows)
                held += n
                if n == chunk_rows:
                    last = rows[-1]
                    after = (last[0], last[1], last[2], last[3], last[10])
                chunk = _readings(rows)  # one str per name in a chunk, not one per row
                del rows  # before the caller works on the chunk, and before the next query
                if chunk:
                    yield chunk
                del chunk
                if n < chunk_rows:
                    break
            windows.done(held)

    def iter_buckets(self, start: datetime, end: datetime, bucket_s: int, *,
                     substations: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                     metrics: Sequence[str] | None = None, chunk_rows: int = 50_000,
                     shard: ShardSpec | None = None) -> Iterator[list[ReadingBucket]]:
        check_chunking(chunk_rows, bucket_s)
        bucket_us = int(bucket_s) * 10**6
        windows = TimeWindows(epoch_us(start), epoch_us(end), chunk_rows, align_us=bucket_us,
                              next_us=self._next_reading_us)
        where, args = _series_where(substations, devices, metrics)
        if shard is not None:
            where, args = where + f" AND {SHARD_SQL_SQLITE}", [*args, shard[1], shard[0]]
        return self._iter_buckets(windows, bucket_us, where, args, chunk_rows)

    def _iter_buckets(self, windows: TimeWindows, bucket_us: int, where: str, args: list[str],
                      chunk_rows: int) -> Iterator[list[ReadingBucket]]:
        for lo, hi in windows:
            held, after = 0, None
            while True:
                base = lo - lo % bucket_us  # k: buckets after this one (the window's first)
                if after is None:
                    sql, keyset = _EXPORT_BUCKETS.format(where=where, having=""), ()
                else:
                    sql, keyset = _EXPORT_BUCKETS.format(where=where, having=_BUCKETS_KEYSET), after
                with self._lock:
                    rows = self._db.execute(sql, (base, bucket_us, lo / 10**6, hi / 10**6, *args, *keyset,
                                                  chunk_rows)).fetchall()
                n = len(rows)
                held += n
                if n == chunk_rows:  # read on from the last bucket's start, after the last series returned of it
                    last = rows[-1]
                    lo = max(lo, base + last[0] * bucket_us)
                    after = (0, last[1], last[2], last[3])
                chunk = [ReadingBucket(from_epoch_us(base + r[0] * bucket_us), r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                                       r[8]) for r in rows]
                del rows
                if chunk:
                    yield chunk
                del chunk
                if n < chunk_rows:
                    break
            windows.done(held)

    def _next_reading_us(self, at_us: int) -> int | None:
        """The first timestamp held at or after ``at_us`` (any series), rounded down to the microsecond."""
        with self._lock:
            (ts,) = self._db.execute("SELECT min(ts) FROM readings WHERE ts >= ?", (at_us / 10**6,)).fetchone()
        return None if ts is None else math.floor(ts * 10**6)

    # -- the readings API (hub/readings) ------------------------------------------------------

    def series_extent(self, device_id: str, metric: str, substation: str | None = None) -> SeriesExtent | None:
        where, args = "device_id = ? AND metric = ?", [device_id, metric]
        if substation is not None:
            where, args = where + " AND substation = ?", [*args, substation]
        with self._lock:
            row = self._db.execute(_SERIES_EXTENT.format(where=where), args * 3).fetchone()
        return None if row is None else SeriesExtent(first=_utc(row[0]), last=_utc(row[1]), unit=row[2])

    def latest_readings(self, substations: Sequence[str] | None = None) -> list[Reading]:
        where, args = _series_where(substations, None, None)
        with self._lock:
            rows = self._db.execute(_LATEST_READINGS.format(where=where), args).fetchall()
        return _readings(rows)

    def substation_summaries(self) -> list[SubstationSummary]:
        with self._lock:
            rows = self._db.execute(_SUBSTATION_SUMMARIES).fetchall()
        return [SubstationSummary(substation=r[0], devices=r[1], points=r[2], readings=r[3], first_reading=_utc(r[4]),
                                  last_reading=_utc(r[5])) for r in rows]

    def open_incident_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            rows = self._db.execute("SELECT substation, severity, count(*) FROM incidents WHERE status <> 'RESOLVED'"
                                    " GROUP BY substation, severity").fetchall()
        return {(sub, sev): n for sub, sev, n in rows}

    def add_dead_letters(self, items: Sequence[DeadLetter]) -> int:
        if not items:
            return 0
        rows = [(d.ts.timestamp(), d.source, d.topic, d.payload, d.reason) for d in items]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT INTO dead_letters (ts, source, topic, payload, reason) VALUES (?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    # -- reads --------------------------------------------------------------------------------

    def list_incidents(self, status: str | None = None, severity: str | None = None, limit: int = 100) -> list[Incident]:
        where, args = [], []
        if status:
            where.append("status = ?")
            args.append(status)
        if severity:
            where.append("severity = ?")
            args.append(severity)
        sql = f"SELECT {_INCIDENT_COLS} FROM incidents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY number DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [_incident(r) for r in rows]

    def reading_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT substation, count(*) FROM readings GROUP BY substation").fetchall())

    def incident_counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            rows = self._db.execute("SELECT type, severity, count(*) FROM incidents GROUP BY type, severity").fetchall()
        return {(t, s): n for t, s, n in rows}

    def edge_states(self) -> list[EdgeState]:
        with self._lock:
            rows = self._db.execute(
                "SELECT edge_id, substation, readings_acked_through, events_acked_through, gaps, last_sync,"
                " ot_logs_acked_through, live_lo, live_hi"
                " FROM edge_sync ORDER BY edge_id"
            ).fetchall()
        return [
            EdgeState(edge_id=r[0], substation=r[1], readings_acked_through=r[2], events_acked_through=r[3],
                      gaps=r[4], last_sync=_utc(r[5]) if r[5] is not None else None, ot_logs_acked_through=r[6],
                      live_lo=r[7], live_hi=r[8])
            for r in rows
        ]

    def latest_reading_times(self, start: datetime, end: datetime) -> list[tuple[str, str, datetime]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT substation, device_id, max(ts) FROM readings WHERE ts >= ? AND ts < ? AND (flags & 17) = 0"
                " GROUP BY substation, device_id", (start.timestamp(), end.timestamp())).fetchall()
        return [(r[0], r[1], _utc(r[2])) for r in rows]

    def query_readings(self, device_id: str, metric: str, start: datetime | None = None,
                       end: datetime | None = None, limit: int = 10_000) -> list[Reading]:
        lo = start.timestamp() if start else float("-inf")
        hi = end.timestamp() if end else float("inf")
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
                " FROM readings WHERE device_id = ? AND metric = ? AND ts >= ? AND ts < ? ORDER BY ts LIMIT ?",
                (device_id, metric, lo, hi, limit),
            ).fetchall()
        return _readings(rows)


    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, source, topic, payload, reason FROM dead_letters ORDER BY number DESC LIMIT ?", (limit,)
            ).fetchall()
        return [DeadLetter(ts=_utc(r[0]), source=r[1], topic=r[2], payload=r[3], reason=r[4]) for r in rows]

    def dead_letter_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]


_INCIDENT_COLS = INCIDENT_COLUMNS
_OT_DECODER = msgspec.json.Decoder(OtLogEvent)

# iter_window_rows: a slice of an agents' window, whole (no order, no keyset: the agents group it)
_WINDOW_ROWS = f"SELECT ts, {WINDOW_COLUMNS} FROM readings WHERE ts >= ? AND ts < ?"
# iter_readings: one chunk of a window, from a keyset on
_EXPORT_READINGS = (
    "SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type, rowid"
    " FROM readings WHERE ts >= ? AND ts < ?{keyset}{where}"
    " ORDER BY ts, substation, device_id, metric, rowid LIMIT ?")
_READINGS_KEYSET = " AND (ts, substation, device_id, metric, rowid) > (?, ?, ?, ?, ?)"
# iter_buckets: k, the bucket's number from the window's first (whole microseconds, as PostgreSQL
# counts them); last, the value of the newest reading, by ts then value; avg, the sum taken in that
# same order (newest first: so PostgreSQL adds the same floats in the same order and gets the same
# avg, whatever its plan), over count, clamped into [min, max] (0.1 ten times sums to 0.9999999999999999)
_EXPORT_BUCKETS = """
SELECT k, substation, device_id, metric, min(value), max(value),
       max(min(max(CASE WHEN rn = 1 THEN total END) / count(*), max(value)), min(value)),
       max(CASE WHEN rn = 1 THEN value END), count(*)
FROM (SELECT k, substation, device_id, metric, value,
             row_number() OVER (PARTITION BY substation, device_id, metric, k ORDER BY ts DESC, value DESC) AS rn,
             sum(value) OVER (PARTITION BY substation, device_id, metric, k ORDER BY ts DESC, value DESC
                              ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
      FROM (SELECT (CAST(round(ts * 1000000) AS INTEGER) - ?) / ? AS k, ts, substation, device_id, metric, value
            FROM readings WHERE ts >= ? AND ts < ? AND value IS NOT NULL AND (flags & 1) = 0{where}))
GROUP BY k, substation, device_id, metric{having}
ORDER BY k, substation, device_id, metric LIMIT ?"""
_BUCKETS_KEYSET = " HAVING (k, substation, device_id, metric) > (?, ?, ?, ?)"
# series_extent: three probes of the (device_id, metric, ts) index, never a scan of the series
_SERIES_EXTENT = """
SELECT first.ts, last.ts, (SELECT min(unit) FROM readings WHERE {where} AND ts = last.ts)
FROM (SELECT ts FROM readings WHERE {where} ORDER BY ts LIMIT 1) AS first,
     (SELECT ts FROM readings WHERE {where} ORDER BY ts DESC LIMIT 1) AS last"""
# latest_readings: each series' newest timestamp, then its readings there through the index, one
# chosen of several (two edges sending the same point) as the docstring says
_LATEST_READINGS = """
SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type
FROM (SELECT r.*, row_number() OVER (PARTITION BY r.substation, r.device_id, r.metric
                                     ORDER BY r.value DESC NULLS LAST, r.quality DESC, r.flags, r.unit) AS rn
      FROM (SELECT substation, device_id, metric, max(ts) AS ts FROM readings WHERE 1 = 1{where}
            GROUP BY substation, device_id, metric) AS n
      JOIN readings AS r ON r.device_id = n.device_id AND r.metric = n.metric AND r.ts = n.ts
                         AND r.substation = n.substation) AS x
WHERE rn = 1 ORDER BY substation, device_id, metric"""
_SUBSTATION_SUMMARIES = """
SELECT substation, count(DISTINCT device_id), count(*), sum(n), min(lo), max(hi)
FROM (SELECT substation, device_id, metric, count(*) AS n, min(ts) AS lo, max(ts) AS hi FROM readings
      GROUP BY substation, device_id, metric) AS series
GROUP BY substation ORDER BY substation"""


def _series_where(substations: Sequence[str] | None, devices: Sequence[str] | None,
                  metrics: Sequence[str] | None) -> tuple[str, list[str]]:
    """`` AND substation IN (?, ...)`` and so on for the filters given, with their arguments."""
    sql, args = "", []
    for column, values in (("substation", substations), ("device_id", devices), ("metric", metrics)):
        if values:
            unique = list(dict.fromkeys(values))
            sql += f" AND {column} IN ({','.join('?' * len(unique))})"
            args += unique
    return sql, args


def _ot_log_rows(events: Sequence[OtLogEvent], source: str) -> list[tuple]:
    return [(e.ts.timestamp(), e.substation, e.device_id, e.kind, source, msgspec.json.encode(e).decode())
            for e in events]


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


def _incident(r: tuple) -> Incident:
    return incident_from_row(r, ts=_utc)


def _marks_since(storage: SQLiteStorage) -> None:
    """Migration 6: each rollup mark's earliest reading (``since``), so that a fold recomputes the hour's
    minutes from there on; marks made before it have none (the whole hour)."""
    if "since" not in {r[1] for r in storage._db.execute("PRAGMA table_info(rollup_dirty)")}:  # noqa: SLF001
        storage._db.execute("ALTER TABLE rollup_dirty ADD COLUMN since REAL")  # noqa: SLF001


# each migration's step on SQLite, by version (hub.storage.migrations.MIGRATIONS)
MIGRATION_STEPS = {1: SQLiteStorage._legacy_upgrades, 2: SQLiteStorage._rollups, 3: SQLiteStorage._edge_health_table,
                   4: lambda storage: None,  # 4: continuous aggregates, on TimescaleDB only
                   5: SQLiteStorage._live_range_columns, 6: _marks_since,
                   7: lambda storage: None}  # 7: device_newest, on PostgreSQL only (its ts index serves it here)
