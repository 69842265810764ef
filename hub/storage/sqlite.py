"""SQLite storage: the hub's embedded default. No server to install; fine for one site or a demo."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from hub.storage.base import EdgeState, Incident, IncidentMaker, NewIncident, incident_id, plan_sync
from protocols.mqtt.codec import DeadLetter
from protocols.reading import Reading
from protocols.wire import SyncAck, SyncBatch

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
    last_sync REAL
);
"""

_READING_SQL = ("INSERT INTO readings (ts, substation, device_id, metric, value, unit, quality, flags, source, seq,"
                " anomaly_score, anomaly_type) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)")
_SCORE_COLUMNS = (("anomaly_score", "REAL"), ("anomaly_type", "TEXT"))
_EVENT_SQL = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_INCIDENT_SQL = (
    "INSERT INTO incidents (ts, type, device_id, severity, description, status, agent, substation, metric,"
    " value, created_at, updated_at) VALUES (?,?,?,?,?,'OPEN',?,?,?,?,?,?)"
)


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def reading_rows(readings: Sequence[Reading], source: str, first_seq: int | None) -> list[tuple]:
    if first_seq is None:
        return [
            (r.ts.timestamp(), r.substation, r.device_id, r.metric, r.value, r.unit, r.quality, r.flags, source, None,
             r.anomaly_score, r.anomaly_type)
            for r in readings
        ]
    return [
        (r.ts.timestamp(), r.substation, r.device_id, r.metric, r.value, r.unit, r.quality, r.flags, source,
         first_seq + i, r.anomaly_score, r.anomaly_type)
        for i, r in enumerate(readings)
    ]


class SQLiteStorage:
    backend = "sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(readings)")}
        for name, kind in _SCORE_COLUMNS:  # databases made before edge scoring
            if name not in have:
                self._db.execute(f"ALTER TABLE readings ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes -------------------------------------------------------------------------------

    def _insert_incidents(self, incidents: Sequence[NewIncident]) -> list[int]:
        now = datetime.now(UTC).timestamp()
        numbers = []
        for inc in incidents:
            cur = self._db.execute(
                _INCIDENT_SQL,
                (inc.timestamp.timestamp(), inc.type, inc.device_id, inc.severity, inc.description, inc.agent,
                 inc.substation, inc.metric, inc.value, now, now),
            )
            numbers.append(cur.lastrowid)
        return numbers

    def apply_sync(self, batch: SyncBatch, make_incidents: IncidentMaker) -> SyncAck:
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT readings_acked_through, events_acked_through, gaps FROM edge_sync WHERE edge_id = ?",
                    (batch.edge_id,),
                ).fetchone()
                r_hwm, e_hwm, gaps = row if row else (0, 0, 0)
                plan = plan_sync(batch, r_hwm, e_hwm)
                if plan.readings:
                    db.executemany(_READING_SQL, reading_rows(plan.readings, batch.edge_id, plan.readings_first))
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
                db.execute(
                    "INSERT INTO edge_sync VALUES (?,?,?,?,?,?) ON CONFLICT (edge_id) DO UPDATE SET"
                    " substation=excluded.substation, readings_acked_through=excluded.readings_acked_through,"
                    " events_acked_through=excluded.events_acked_through, gaps=excluded.gaps,"
                    " last_sync=excluded.last_sync",
                    (batch.edge_id, batch.substation, plan.readings_acked_through, plan.events_acked_through,
                     gaps + plan.gaps, datetime.now(UTC).timestamp()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return plan.ack(batch.edge_id)

    def insert_readings(self, readings: Sequence[Reading], source: str) -> int:
        rows = reading_rows(readings, source, None)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_READING_SQL, rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def add_incidents(self, incidents: Sequence[NewIncident]) -> list[Incident]:
        if not incidents:
            return []
        with self._lock:
            self._db.execute("BEGIN")
            try:
                numbers = self._insert_incidents(incidents)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            marks = ",".join("?" * len(numbers))
            rows = self._db.execute(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE number IN ({marks}) ORDER BY number",
                                    numbers).fetchall()
        return [_incident(r) for r in rows]

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
                "SELECT edge_id, substation, readings_acked_through, events_acked_through, gaps, last_sync"
                " FROM edge_sync ORDER BY edge_id"
            ).fetchall()
        return [
            EdgeState(edge_id=r[0], substation=r[1], readings_acked_through=r[2], events_acked_through=r[3],
                      gaps=r[4], last_sync=_utc(r[5]) if r[5] is not None else None)
            for r in rows
        ]

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
        return [
            Reading(ts=_utc(r[0]), substation=r[1], device_id=r[2], metric=r[3], value=r[4], unit=r[5],
                    quality=r[6], flags=r[7], anomaly_score=r[8], anomaly_type=r[9])
            for r in rows
        ]


    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._lock:
            rows = self._db.execute(
                "SELECT ts, source, topic, payload, reason FROM dead_letters ORDER BY number DESC LIMIT ?", (limit,)
            ).fetchall()
        return [DeadLetter(ts=_utc(r[0]), source=r[1], topic=r[2], payload=r[3], reason=r[4]) for r in rows]

    def dead_letter_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM dead_letters").fetchone()[0]


_INCIDENT_COLS = "number, ts, type, device_id, severity, description, status, agent, substation, metric, value"


def _incident(r: tuple) -> Incident:
    ts = _utc(r[1])
    return Incident(id=incident_id(ts.year, r[0]), timestamp=ts, type=r[2], device_id=r[3], severity=r[4],
                    description=r[5], status=r[6], agent=r[7], substation=r[8], metric=r[9], value=r[10])
