"""PostgreSQL storage: the hub's server-backed implementation, for many sites and long histories.

Behaves exactly as :class:`hub.storage.sqlite.SQLiteStorage` does (same high-water marks, duplicates,
gaps, incident ids, ordering and return types); only the physical layout differs. One of two layouts
is chosen when the storage opens, and named in :attr:`PostgresStorage.backend`:

``"timescaledb"``
    when ``CREATE EXTENSION IF NOT EXISTS timescaledb`` succeeds: ``readings`` is a hypertable on
    ``ts`` (one-day chunks) with a compression policy and, if asked for, a retention policy; the
    rollups are continuous aggregates (schema migration 4), so ingest marks no rollup hours.
``"postgresql"``
    otherwise: ``readings`` is natively range-partitioned on ``ts``, one partition per UTC day, made
    before the first COPY that touches that day (and remembered), plus a DEFAULT partition as a
    safety net. A BRIN index on ``ts`` serves time ranges, a btree on ``(device_id, metric, ts)``
    serves one series.

On both, ``device_newest`` holds each device's newest reading for the liveness check, written by
each process at most every 5 s (``hub.storage.newest``), not read off the readings.

Readings arrive by binary COPY. ``apply_sync`` is one transaction that starts by locking the edge's
``edge_sync`` row, so two concurrent syncs from one edge are applied one after the other and cannot
both store the same sequence numbers.

With a read replica (``read_url``: a streaming standby of this database, ``hub.storage.read_replica``),
the history reads (``query_readings``, ``series_extent``, ``latest_readings``, ``substation_summaries``,
``readings_between``, the rollups' and buckets' reads, ``iter_readings``/``iter_buckets``) go to it once
it has replayed what the primary holds, and to the primary otherwise; everything else stays on the
primary. A question on the plain layout folds its rollup marks on the primary first, then reads.

Incidents are one per ongoing condition (``NewIncident.key()``): a transaction that records findings
first takes a transaction-level advisory lock per condition (in a fixed order, so two transactions
cannot deadlock on them), then updates the condition's incident that is not RESOLVED or opens one.
A partial unique index (one not-RESOLVED incident per condition) backs that up.
"""

from __future__ import annotations

import contextlib
import logging
import re
import select
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

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
    ROLLUP_WIDTHS,
    ReadingBucket,
    SeriesExtent,
    SHARD_SQL_POSTGRES,
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
    parse_incident_id,
    plan_sync,
    reading_rows,
    readings_from_rows,
    upsert_incidents,
)
from hub.storage.leader import PostgresLeaderLock
from hub.storage.migrations import SCHEMA_TABLE_POSTGRES, MigrationStatus, pending_after
from hub.storage.newest import NOT_HEARD_FLAGS, DeviceNewest
from hub.storage.read_replica import ReadReplica
from hub.storage.rollups import ROLLUP_MEAN
from protocols.mqtt.codec import DeadLetter
from protocols.otlog import OtLogEvent
from protocols.reading import Reading
from protocols.wire import EdgeHealth, Event, SyncAck, SyncBatch

__all__ = ["PostgresStorage", "PostgresUnavailable"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_SCHEMA_LOCK = 0x5E47_0001  # advisory lock keys: schema creation, partition creation
_PARTITION_LOCK = 0x5E47_0002
# held by each rollup fold (transaction-level): folds run one at a time, each reading the readings as
# they are after the one before committed, so an older view never overwrites a newer one (two folds of
# one hour: the refresher's and a question's, two replicas'). Locking the hours' rollup rows instead (in
# key order) still deadlocked in test_refreshes_racing_over_a_filling_hour_count_each_reading_once: the
# rows a fold inserts were under no such lock
_FOLD_LOCK = 0x5E47_0006
# advisory locks (two-int4 form, a key space apart from the bigint locks above): (this, hashtext(condition))
_CONDITION_LOCK_CLASS = 0x5E47_0003
# (this, bucket of (device_id, metric)): de-duplicating inserts of the same series run one after the other
_READING_KEY_LOCK_CLASS = 0x5E47_0004
_READING_KEY_BUCKETS = 64

_READING_COLUMNS = ("ts, substation, device_id, metric, value, unit, quality, flags, source, seq, anomaly_score,"
                    " anomaly_type")
_READING_TYPES = ["timestamptz", "text", "text", "text", "float8", "text", "float8", "int4", "text", "int8", "float8",
                  "text"]
NEWEST_WRITE_WAIT_S = 5.0  # the longest device_newest's write waits for a pooled connection
_COPY_READINGS = f"COPY readings ({_READING_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGED = f"COPY readings_staged (k, {_READING_COLUMNS}) FROM STDIN (FORMAT BINARY)"
# insert_new_readings: the batch staged (k: its index), then only what readings does not hold yet, within
# the batch's time range (partition pruning; the (device_id, metric, ts) index does the rest)
_ROLLUPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollups (
    width integer NOT NULL,           -- seconds: 60, 3600, 86400
    bucket timestamptz NOT NULL,      -- its start (aligned on the epoch: UTC)
    substation text NOT NULL,
    device_id text NOT NULL,
    metric text NOT NULL,
    vmin double precision NOT NULL,
    vmax double precision NOT NULL,
    vsum double precision NOT NULL,
    n bigint NOT NULL,
    last_ts timestamptz NOT NULL,     -- the newest reading's time and value (of a tie, the largest value)
    last_value double precision NOT NULL,
    PRIMARY KEY (width, device_id, metric, substation, bucket)
);
CREATE TABLE IF NOT EXISTS rollup_dirty (  -- hours with readings the rollups do not count yet
    device_id text NOT NULL,
    metric text NOT NULL,
    substation text NOT NULL,
    hour timestamptz NOT NULL,
    marks bigint NOT NULL DEFAULT 1,
    PRIMARY KEY (device_id, metric, substation, hour)
)"""
_HOUR = "date_bin('1 hour', {ts}, timestamptz '1970-01-01 00:00:00+00')"
# the hours of {source} (as s) marked, each with the earliest of its readings (since): a fold recomputes
# the hour's minutes from since's on, and the hour from its minutes (see _fold_marks). A mark a refresh
# has claimed (marks < 0: its hour is being folded, see _claim_marks) is marked again (marks = 1), since
# its new readings' earliest, so the refresh leaves it for the next one (the fold may not have seen
# these readings). Otherwise the mark is locked, and rewritten only when a reading comes earlier than
# its since (no new row version as readings come in order): marking took 1.83 ms of PostgreSQL time per
# sync of 200 series with `SET marks = marks + 1`, 0.82 ms so (bench_hub_http.py). A since of NULL
# (marks made before migration 6, or left by a fold that failed) stays NULL: the whole hour is recomputed.
_MARK_DIRTY = """
INSERT INTO rollup_dirty AS t (device_id, metric, substation, hour, since)
SELECT s.device_id, s.metric, s.substation, """ + _HOUR.format(ts="s.ts") + """, min(s.ts) FROM {source}
GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
ON CONFLICT (device_id, metric, substation, hour) DO UPDATE
SET marks = 1, since = excluded.since
WHERE t.marks < 0 OR excluded.since < t.since"""
# the (series, earliest reading) pairs of each hour as one JSON array of [device_id, metric, substation,
# ISO time] (exact to the microsecond): one string for psycopg to send (as four arrays, dumping them
# was 12 % of the hub's CPU in a sync)
_MARK_DIRTY_JSON = _MARK_DIRTY.format(
    source="(SELECT e ->> 0 AS device_id, e ->> 1 AS metric, e ->> 2 AS substation,"
           " (e ->> 3)::timestamptz AS ts FROM json_array_elements(%s::json) AS e) AS s")
# migration 2's marks, as that release made them (migration 6 adds since)
_MARK_ALL_V2 = """
INSERT INTO rollup_dirty AS t (device_id, metric, substation, hour)
SELECT DISTINCT s.device_id, s.metric, s.substation, """ + _HOUR.format(ts="s.ts") + """ FROM readings AS s
ORDER BY 1, 2, 3, 4
ON CONFLICT (device_id, metric, substation, hour) DO NOTHING"""
# the marks a fold does; lo: the first minute to recompute (since's, or the hour's first)
_TODO_TABLE = ("CREATE TEMP TABLE IF NOT EXISTS rollup_todo_v6 (device_id text, metric text, substation text,"
               " hour timestamptz, lo timestamptz, PRIMARY KEY (device_id, metric, substation, hour))"
               " ON COMMIT DELETE ROWS")
_REPLACE = """
ON CONFLICT (width, device_id, metric, substation, bucket) DO UPDATE SET vmin = excluded.vmin, vmax = excluded.vmax,
    vsum = excluded.vsum, n = excluded.n, last_ts = excluded.last_ts, last_value = excluded.last_value"""
_MINUTE = "date_bin('1 minute', {ts}, timestamptz '1970-01-01 00:00:00+00')"
# the 1-minute rollups of the hours to do from their first minute to recompute (lo) on, from the
# readings; sums in a fixed order (as SQLite adds them: the same bits on both); rows written in key
# order (no deadlock between refreshes). The minutes before lo hold no reading the mark is for, so
# the hour still filling costs the minutes since its last fold, not all of it.
_RECOMPUTE_MINUTES = f"""
INSERT INTO rollups (width, bucket, substation, device_id, metric, vmin, vmax, vsum, n, last_ts, last_value)
SELECT 60, b, substation, device_id, metric, min(value), max(value), max(CASE WHEN rn = 1 THEN total END),
       count(*), max(ts), max(CASE WHEN rn = 1 THEN value END)
FROM (SELECT {_MINUTE.format(ts="r.ts")} AS b, r.substation, r.device_id, r.metric, r.value, r.ts,
             row_number() OVER p AS rn, sum(r.value) OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
             AS total
      FROM rollup_todo_v6 AS d
      JOIN readings AS r ON r.device_id = d.device_id AND r.metric = d.metric AND r.ts >= d.lo
           AND r.ts < d.hour + interval '1 hour' AND r.substation = d.substation
      WHERE r.value IS NOT NULL AND r.value <> 'NaN'::float8 AND (r.flags & 1) = 0
        -- one UTC day at a time, its bounds as values: the planner keeps that day's partitions only
        -- (for a join parameter it cannot, and every marked hour would probe every day's index)
        AND d.hour >= %(lo)s AND d.hour < %(hi)s AND r.ts >= %(lo)s AND r.ts < %(hi)s
      WINDOW p AS (PARTITION BY r.device_id, r.metric, r.substation, {_MINUTE.format(ts="r.ts")}
                   ORDER BY r.ts DESC, r.value DESC)) AS x
GROUP BY b, substation, device_id, metric
ORDER BY device_id, metric, substation, b""" + _REPLACE
# the 1-hour rollups of the hours to do, from their minutes (as the days from the hours)
_RECOMPUTE_HOURS = f"""
INSERT INTO rollups (width, bucket, substation, device_id, metric, vmin, vmax, vsum, n, last_ts, last_value)
SELECT 3600, hour, substation, device_id, metric, min(vmin), max(vmax), max(CASE WHEN rn = 1 THEN total END), sum(n),
       max(last_ts), max(CASE WHEN rn = 1 THEN last_value END)
FROM (SELECT d.hour, m.substation, m.device_id, m.metric, m.vmin, m.vmax, m.n, m.last_ts, m.last_value,
             row_number() OVER p AS rn, sum(m.vsum) OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
             AS total
      FROM rollup_todo_v6 AS d
      JOIN rollups AS m ON m.width = 60 AND m.device_id = d.device_id AND m.metric = d.metric
           AND m.substation = d.substation AND m.bucket >= d.hour AND m.bucket < d.hour + interval '1 hour'
      WINDOW p AS (PARTITION BY m.device_id, m.metric, m.substation, d.hour
                   ORDER BY m.last_ts DESC, m.last_value DESC, m.bucket DESC)) AS x
GROUP BY hour, substation, device_id, metric
ORDER BY device_id, metric, substation, hour""" + _REPLACE
# the 1-day rollups of their days, from the hours
_DAY = "date_bin('1 day', {ts}, timestamptz '1970-01-01 00:00:00+00')"
_RECOMPUTE_DAYS = f"""
INSERT INTO rollups (width, bucket, substation, device_id, metric, vmin, vmax, vsum, n, last_ts, last_value)
SELECT 86400, day, substation, device_id, metric, min(vmin), max(vmax), max(CASE WHEN rn = 1 THEN total END), sum(n),
       max(last_ts), max(CASE WHEN rn = 1 THEN last_value END)
FROM (SELECT {_DAY.format(ts="h.bucket")} AS day, h.substation, h.device_id, h.metric, h.vmin, h.vmax, h.n,
             h.last_ts, h.last_value, row_number() OVER p AS rn,
             sum(h.vsum) OVER (p ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
      FROM (SELECT DISTINCT device_id, metric, substation, {_DAY.format(ts="hour")} AS day FROM rollup_todo_v6) AS d
      JOIN rollups AS h ON h.width = 3600 AND h.device_id = d.device_id AND h.metric = d.metric
           AND h.substation = d.substation AND h.bucket >= d.day AND h.bucket < d.day + interval '1 day'
      WINDOW p AS (PARTITION BY h.device_id, h.metric, h.substation, {_DAY.format(ts="h.bucket")}
                   ORDER BY h.last_ts DESC, h.last_value DESC, h.bucket DESC)) AS x
GROUP BY day, substation, device_id, metric
ORDER BY device_id, metric, substation, day""" + _REPLACE
_PG_MEAN = ROLLUP_MEAN.format(least="least", greatest="greatest")
_ROLLUP_BUCKETS = f"""
SELECT bucket, substation, device_id, metric, vmin, vmax, {_PG_MEAN}, last_value, n FROM rollups
WHERE width = %s AND metric = ANY(%s){{where}} AND bucket >= %s AND bucket < %s
ORDER BY bucket, substation"""
_INSERT_STAGED = f"""
WITH new AS MATERIALIZED (
    SELECT s.* FROM readings_staged AS s WHERE NOT EXISTS (
        SELECT 1 FROM readings AS r WHERE r.device_id = s.device_id AND r.metric = s.metric AND r.ts = s.ts
        AND r.substation = s.substation
        AND r.ts >= (SELECT min(ts) FROM readings_staged) AND r.ts <= (SELECT max(ts) FROM readings_staged))
), stored AS (
    INSERT INTO readings ({_READING_COLUMNS}) SELECT {_READING_COLUMNS} FROM new
){{marked}}
SELECT k FROM new ORDER BY k"""
_INSERT_STAGED_MARKED = _INSERT_STAGED.format(marked=f""", marked AS ({_MARK_DIRTY.format(source="new AS s")}
)""")
_INSERT_STAGED = _INSERT_STAGED.format(marked="")  # TimescaleDB: its continuous aggregates track changes themselves

# TimescaleDB (schema migration 4): the rollups are continuous aggregates, one per width, each made from
# the one below (hierarchical: 1 h from 1 min, 1 day from 1 h), with real-time aggregation (a question
# sees readings not materialized yet). The same columns as table rollups, but the last reading as one
# float8[2] (its time in microseconds since the epoch, exact below 2^53, and its value): max() of it
# picks the newest reading and, of a tie, the largest value, and composes from bucket to bucket.
# time_bucket's buckets of 1 min, 1 h and 1 day align on the epoch (its origin is a UTC midnight).
# One index per aggregate, a series' buckets in order, instead of TimescaleDB's one per grouping column.
_CAGG_WIDTHS = {60: "rollups_1m", 3600: "rollups_1h", 86_400: "rollups_1d"}
_CAGG_OF_READINGS = """
CREATE MATERIALIZED VIEW IF NOT EXISTS rollups_1m WITH (timescaledb.continuous, timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false)
AS SELECT time_bucket(INTERVAL '1 minute', ts) AS bucket, substation, device_id, metric, min(value) AS vmin,
          max(value) AS vmax, sum(value) AS vsum, count(*) AS n,
          max(ARRAY[(extract(epoch FROM ts - timestamptz '1970-01-01 00:00:00+00') * 1000000)::float8, value]) AS last
FROM readings WHERE value IS NOT NULL AND value <> 'NaN'::float8 AND (flags & 1) = 0  -- not QualityFlag.INVALID
GROUP BY 1, device_id, metric, substation WITH NO DATA"""
_CAGG_OF_CAGG = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {name} WITH (timescaledb.continuous, timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false)
AS SELECT time_bucket(INTERVAL '{width}', bucket) AS bucket, substation, device_id, metric, min(vmin) AS vmin,
          max(vmax) AS vmax, sum(vsum) AS vsum, sum(n)::bigint AS n, max(last) AS last
FROM {source} GROUP BY 1, device_id, metric, substation WITH NO DATA"""
_CAGG_BUCKETS = f"""
SELECT bucket, substation, device_id, metric, vmin, vmax, {_PG_MEAN}, last[2], n FROM {{view}}
WHERE metric = ANY(%s){{where}} AND bucket >= %s AND bucket < %s
ORDER BY bucket, substation"""
# how often TimescaleDB's own jobs fold what arrived (every late reading too: the whole range, start_offset NULL)
_CAGG_SCHEDULE = {"rollups_1m": "1 minute", "rollups_1h": "5 minutes", "rollups_1d": "1 hour"}

_READINGS_COLUMNS_DDL = """
    ts timestamptz NOT NULL,
    substation text NOT NULL,
    device_id text NOT NULL,
    metric text NOT NULL,
    value double precision,
    unit text NOT NULL,
    quality double precision NOT NULL,
    flags integer NOT NULL,
    source text NOT NULL,             -- edge id, or 'http' / 'mqtt'
    seq bigint,                       -- the edge's sequence number, NULL for other sources
    anomaly_score double precision,   -- the edge's anomaly score 0..1, NULL if not scored
    anomaly_type text
"""

_COMMON_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    number bigint GENERATED BY DEFAULT AS IDENTITY,  -- arrival order (list_events' tie-break)
    ts timestamptz NOT NULL,
    substation text NOT NULL,
    device_id text NOT NULL,
    metric text NOT NULL,
    type text NOT NULL,
    state text NOT NULL,
    severity text NOT NULL,
    value double precision,
    threshold double precision,
    nominal double precision,
    unit text NOT NULL,
    description text NOT NULL,
    edge_id text NOT NULL,
    seq bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS incidents (
    number bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    ts timestamptz NOT NULL,
    type text NOT NULL,
    device_id text NOT NULL,
    severity text NOT NULL,
    description text NOT NULL,
    status text NOT NULL DEFAULT 'OPEN',
    agent text NOT NULL,
    substation text NOT NULL,
    metric text NOT NULL,
    value double precision,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    condition_key text NOT NULL DEFAULT '',
    recommendation text NOT NULL DEFAULT '',
    confidence double precision,
    occurrences integer NOT NULL DEFAULT 1,
    last_seen timestamptz,
    facts json NOT NULL DEFAULT '{}',     -- json, not jsonb: keeps the finding's key order, as SQLite does
    narrative text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS incidents_status_severity ON incidents (status, severity);
CREATE TABLE IF NOT EXISTS incident_history (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    number bigint NOT NULL,           -- the incident's
    ts timestamptz NOT NULL,
    status text NOT NULL,
    actor text NOT NULL,
    note text NOT NULL
);
CREATE INDEX IF NOT EXISTS incident_history_number ON incident_history (number, id);
CREATE TABLE IF NOT EXISTS documents (
    kind text NOT NULL,               -- forecast | maintenance | agent_run
    key text NOT NULL,
    ts timestamptz NOT NULL,
    body json NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS ot_logs (
    id bigint GENERATED BY DEFAULT AS IDENTITY,  -- arrival order (tie-break within one ts)
    ts timestamptz NOT NULL,
    substation text NOT NULL,
    device_id text NOT NULL,
    kind text NOT NULL,
    source text NOT NULL,             -- who sent it: 'http', an edge id, 'mqtt'
    body json NOT NULL                -- the entry (protocols/schemas/ot_log.schema.json)
);
CREATE INDEX IF NOT EXISTS ot_logs_ts ON ot_logs (ts, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    number bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    ts timestamptz NOT NULL,          -- when it was received
    source text NOT NULL,             -- who received it: '<device>@<broker>' (edge), 'hub@<broker>'
    topic text NOT NULL,
    payload text NOT NULL,            -- as text, cut at 64 KiB
    reason text NOT NULL
);
CREATE TABLE IF NOT EXISTS edge_sync (
    edge_id text PRIMARY KEY,
    substation text NOT NULL,
    readings_acked_through bigint NOT NULL DEFAULT 0,
    events_acked_through bigint NOT NULL DEFAULT 0,
    gaps bigint NOT NULL DEFAULT 0,
    last_sync timestamptz
);
"""

_PARTITIONED_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS readings ({_READINGS_COLUMNS_DDL}) PARTITION BY RANGE (ts);
CREATE TABLE IF NOT EXISTS readings_default PARTITION OF readings DEFAULT;
CREATE INDEX IF NOT EXISTS readings_ts_brin ON readings USING brin (ts);
CREATE INDEX IF NOT EXISTS readings_device_metric_ts ON readings (device_id, metric, ts);
"""
_STAGED_SCHEMA = (f"CREATE TEMP TABLE IF NOT EXISTS readings_staged (k int4 NOT NULL, {_READINGS_COLUMNS_DDL})"
                  " ON COMMIT DELETE ROWS")

_EVENT_SQL = (
    "INSERT INTO events (ts, substation, device_id, metric, type, state, severity, value, threshold, nominal,"
    " unit, description, edge_id, seq) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
)
# databases made before incident correlation and OT log sync (no-op otherwise); one not-RESOLVED incident per
# condition ('' is what the migration gives incidents made before: never a finding's key)
_INCIDENT_MIGRATION = """
ALTER TABLE incidents
    ADD COLUMN IF NOT EXISTS condition_key text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS recommendation text NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS confidence double precision,
    ADD COLUMN IF NOT EXISTS occurrences integer NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS last_seen timestamptz,
    ADD COLUMN IF NOT EXISTS facts json NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS narrative text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX IF NOT EXISTS incidents_open_key ON incidents (condition_key)
    WHERE status <> 'RESOLVED' AND condition_key <> '';
ALTER TABLE edge_sync ADD COLUMN IF NOT EXISTS ot_logs_acked_through bigint NOT NULL DEFAULT 0;
ALTER TABLE edge_sync ADD COLUMN IF NOT EXISTS buffer_id text;  -- the edge's buffer the marks count in
"""

_INCIDENT_COLS = INCIDENT_COLUMNS.replace(" facts,", " facts::text,")
_HISTORY_SQL = "INSERT INTO incident_history (number, ts, status, actor, note) VALUES (%s,%s,%s,%s,%s)"
_EVENT_COLS = "ts, substation, device_id, metric, type, state, severity, value, threshold, nominal, unit, description"
_COPY_OT_LOGS = "COPY ot_logs (ts, substation, device_id, kind, source, body) FROM STDIN"
# exports: series in byte order, as SQLite sorts them
_SERIES_ORDER = 'substation COLLATE "C", device_id COLLATE "C", metric COLLATE "C"'
# iter_buckets: k, the bucket's number from the window's first, in whole microseconds (as SQLite
# counts); last, the value of the newest reading, by ts then value; avg, the sum taken in that same
# order, over count, clamped into [min, max]: SQLite's query, float for float (avg() would add in the
# plan's order). NaN is left out (SQLite holds none).
_EXPORT_BUCKETS = f"""
SELECT k, substation, device_id, metric, min(value), max(value),
       greatest(least(max(CASE WHEN rn = 1 THEN total END) / count(*), max(value)), min(value)),
       max(CASE WHEN rn = 1 THEN value END), count(*)
FROM (SELECT k, substation, device_id, metric, value,
             row_number() OVER (PARTITION BY substation, device_id, metric, k ORDER BY ts DESC, value DESC) AS rn,
             sum(value) OVER (PARTITION BY substation, device_id, metric, k ORDER BY ts DESC, value DESC
                              ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS total
      FROM (SELECT ((extract(epoch FROM ts) * 1000000)::bigint - %s) / %s AS k, ts, substation, device_id, metric,
                   value
            FROM readings WHERE ts >= %s AND ts < %s AND value IS NOT NULL AND value <> 'NaN'::float8
            AND (flags & 1) = 0{{where}}) AS r) AS w
GROUP BY k, substation, device_id, metric
ORDER BY k, {_SERIES_ORDER}"""

# the readings API: SQLite's queries (see there), text compared as bytes
_SERIES_EXTENT = """
SELECT first.ts, last.ts, (SELECT min(unit COLLATE "C") FROM readings WHERE {where} AND ts = last.ts)
FROM (SELECT ts FROM readings WHERE {where} ORDER BY ts LIMIT 1) AS first,
     (SELECT ts FROM readings WHERE {where} ORDER BY ts DESC LIMIT 1) AS last"""
_LATEST_READINGS = f"""
SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type
FROM (SELECT r.*, row_number() OVER (PARTITION BY r.substation, r.device_id, r.metric
                                     ORDER BY r.value DESC NULLS LAST, r.quality DESC, r.flags,
                                              r.unit COLLATE "C") AS rn
      FROM (SELECT substation, device_id, metric, max(ts) AS ts FROM readings WHERE TRUE{{where}}
            GROUP BY substation, device_id, metric) AS n
      JOIN readings AS r ON r.device_id = n.device_id AND r.metric = n.metric AND r.ts = n.ts
                         AND r.substation = n.substation) AS x
WHERE rn = 1 ORDER BY {_SERIES_ORDER}"""
_SUBSTATION_SUMMARIES = """
SELECT substation, count(DISTINCT device_id), count(*), sum(n), min(lo), max(hi)
FROM (SELECT substation, device_id, metric, count(*) AS n, min(ts) AS lo, max(ts) AS hi FROM readings
      GROUP BY substation, device_id, metric) AS series
GROUP BY substation
ORDER BY substation COLLATE "C"
"""


def _bucket_rows(cursor: psycopg.Cursor) -> Callable[[Sequence[Any]], ReadingBucket]:
    """A row factory: each row of a ``_ROLLUP_BUCKETS`` query a :class:`ReadingBucket` as it is decoded."""
    return ReadingBucket._make


def _series_where(substations: Sequence[str] | None, devices: Sequence[str] | None,
                  metrics: Sequence[str] | None) -> tuple[str, list[list[str]]]:
    """`` AND substation = ANY(%s)`` and so on for the filters given, with their arguments."""
    sql, args = "", []
    for column, values in (("substation", substations), ("device_id", devices), ("metric", metrics)):
        if values:
            sql += f" AND {column} = ANY(%s)"
            args.append(list(dict.fromkeys(values)))
    return sql, args
_OT_DECODER = msgspec.json.Decoder(OtLogEvent)
_HEALTH = msgspec.json.Decoder(EdgeHealth)


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL server named by the URL could not be reached or prepared."""


def _where(url: str) -> str:
    """``host:port/dbname`` of a connection URL, without user or password, for error messages."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparseable URL>"
    return f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"


def _utc_days(readings: Iterable[Reading]) -> set[int]:
    """The UTC dates (as ordinals) of the readings' timestamps."""
    days: set[int] = set()
    add = days.add
    for r in readings:
        ts = r.ts
        add(ts.toordinal() if ts.tzinfo is UTC else ts.astimezone(UTC).toordinal())  # the fast path is common
    return days


def _partition_name(day: int) -> str:
    d = date.fromordinal(day)
    return f"readings_p{d.year:04d}{d.month:02d}{d.day:02d}"


def _midnight(day: int) -> str:
    if day > date.max.toordinal():  # the end of 9999-12-31 (an edge with a broken clock): past Python's dates
        return "infinity"
    return datetime.combine(date.fromordinal(day), time(), UTC).isoformat()


_reading_rows = reading_rows  # timestamptz takes the datetime as it is (hub.storage.base)
# the incident upsert (hub.storage.base.upsert_incidents) in PostgreSQL's words
_INCIDENTS = IncidentDialect(ts=lambda t: t, greatest="greatest", json="?::json")


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


_incident = incident_from_row  # timestamptz comes back an aware datetime (the pool's sessions run in UTC)


PARTITION_DAYS_BACK = 366 * 30  # history older than this (imports of old records) shares the default partition


def _check_if_spoken_to(conn: psycopg.Connection) -> None:
    """The pool's check before it lends a connection, with a round trip only when the server has said
    something: an idle connection's socket has nothing to read unless the server closed it (a restart,
    an administrator's terminate), or sent a notice. A round trip on every lend was a tenth of an edge
    sync's time at the hub."""
    if conn.closed:
        ConnectionPool.check_connection(conn)
        return
    poll = select.poll()  # not select.select: a busy hub's descriptors pass 1024
    poll.register(conn.fileno(), select.POLLIN)
    if poll.poll(0):
        ConnectionPool.check_connection(conn)


class PostgresStorage:
    """Hub storage on PostgreSQL (with TimescaleDB when the server has it).

    ``url`` is a libpq URL (``postgresql://user@host:port/db``). Connections come from a pool of at
    most ``pool_size``; every session runs in UTC, so timestamps come back as UTC-aware datetimes.
    ``compress_after`` and ``retain_for`` apply to the TimescaleDB layout only (``retain_for=None``:
    keep readings forever). ``read_url``: a streaming standby of this database for the history reads,
    used when it has replayed what the primary holds (waiting up to ``read_wait_s``), else the primary
    (after a failure there, tried again after ``read_retry_s``).
    """

    backend: str

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout_s: float = 10.0,
                 compress_after: timedelta = timedelta(days=7), retain_for: timedelta | None = None,
                 migrate: bool = True, read_url: str | None = None, read_wait_s: float = 0.2,
                 read_retry_s: float = 5.0) -> None:
        self._url = url
        self._replica: ReadReplica | None = None
        self._auto_migrate = migrate
        self._where = _where(url)
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._compress_after = compress_after
        self._retain_for = retain_for
        self._partitions: set[int] = set()  # UTC dates (ordinals) that have their own partition
        self._partition_lock = threading.Lock()
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, open=False, name="hub-storage",
            # a connection is checked before it is lent: after PostgreSQL restarts, the pool's old
            # connections are replaced instead of failing the next request on each of them
            check=_check_if_spoken_to,
            # synchronous_commit on, whatever the server's default: an edge forgets what the hub
            # acknowledged, so a commit must be on disk before the ack leaves (with it off, a crash of
            # PostgreSQL loses the last commits: found by the fault suite, tests/faults)
            kwargs={"options": "-c TimeZone=UTC -c synchronous_commit=on", "connect_timeout": self._connect_timeout},
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise PostgresUnavailable(
                f"cannot connect to PostgreSQL at {self._where} within {connect_timeout_s:g} s"
            ) from exc
        self._newest = DeviceNewest(self._write_newest)  # device_newest: see hub.storage.newest
        try:
            self.backend = self._create_schema()
            if self.backend != "timescaledb":  # claims of a refresh that died with its process: for the refresher
                with self._pool.connection() as conn:
                    conn.execute("DO $$ BEGIN IF to_regclass('rollup_dirty') IS NOT NULL THEN"
                                 " UPDATE rollup_dirty SET marks = 1, since = NULL WHERE marks < 0; END IF; END $$")
        except BaseException:
            self._pool.close()
            raise
        log.info("hub storage: PostgreSQL at %s, layout %s", self._where, self.backend)
        if read_url is not None:
            self._replica = ReadReplica(read_url, self._pool, where=_where(read_url), max_wait_s=read_wait_s,
                                        retry_s=read_retry_s, pool_size=pool_size, connect_timeout_s=connect_timeout_s)
            log.info("hub storage: history reads from the read replica at %s when it has caught up",
                     self._replica.where)

    def close(self) -> None:
        self._newest.close()  # its last write waits at most NEWEST_WRITE_WAIT_S for a connection
        if self._replica is not None:
            self._replica.close()
        self._pool.close()

    def _read(self, what: str, fn: Callable[[psycopg.Connection], _T]) -> _T:
        """``fn`` on a pooled connection for a history read: the read replica's when it has caught up
        with the primary (``hub.storage.read_replica``), else the primary's."""
        if self._replica is None:
            with self._pool.connection() as conn:
                return fn(conn)
        return self._replica.read(what, fn)

    def read_counts(self) -> dict[str, int] | None:
        """History reads answered by the read replica and by the primary; None: no read replica."""
        return None if self._replica is None else self._replica.counts()

    @contextmanager
    def transaction(self) -> Iterator[SqlTx]:
        with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            yield SqlTx(cur, self.backend)

    def data_time_range(self) -> tuple[datetime, datetime] | None:
        with self._pool.connection() as conn:
            lo, hi = conn.execute("SELECT min(lo), max(hi) FROM (SELECT min(ts) AS lo, max(ts) AS hi FROM readings"
                " UNION ALL SELECT min(ts), max(ts) FROM ot_logs) AS spans").fetchone()
        return None if lo is None else (lo, hi)

    def __enter__(self) -> PostgresStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------------

    def _create_schema(self) -> str:
        """Create what is missing (safe to run again, and from several processes); return the layout."""
        with self._pool.connection() as conn:
            row = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass('readings')").fetchone()
        kind = row[0] if row else None
        if kind == "p":
            backend = "postgresql"  # partitioned already: keep it, even if TimescaleDB came later
        elif self._try_timescaledb():
            backend = "timescaledb"
        elif kind is not None:
            raise PostgresUnavailable(
                f"table 'readings' at {self._where} is neither partitioned nor a hypertable, and TimescaleDB is "
                "not available: move it aside, the hub recreates it partitioned"
            )
        else:
            backend = "postgresql"
        with self._pool.connection() as conn:  # one transaction: the base schema and every pending migration
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            todo = pending_after(self._schema_version(conn), self._where, migrate=self._auto_migrate)
            conn.execute(_COMMON_SCHEMA)
            if backend == "timescaledb":
                self._create_hypertable(conn)
            else:
                conn.execute(_PARTITIONED_SCHEMA)
                rows = conn.execute(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                    " WHERE i.inhparent = 'readings'::regclass"
                ).fetchall()
                for (name,) in rows:
                    if re.fullmatch(r"readings_p\d{8}", name):
                        self._partitions.add(datetime.strptime(name[len("readings_p"):], "%Y%m%d").toordinal())
            conn.execute(SCHEMA_TABLE_POSTGRES)
            for m in todo:
                MIGRATION_STEPS[m.version](conn)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)"
                             " ON CONFLICT (version) DO UPDATE SET name = excluded.name, applied_at = now()",
                             (m.version, m.name))
                log.info("%s: applied schema migration %d (%s)", self._where, m.version, m.name)
            if backend == "timescaledb":
                self._aggregate_policies(conn)
        return backend

    @staticmethod
    def _schema_version(conn: psycopg.Connection) -> int | None:
        """The applied migrations' highest version; 0: made before versioning; None: no hub schema."""
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone()[0] is not None:
            return conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]
        return 0 if conn.execute("SELECT to_regclass('readings')").fetchone()[0] is not None else None

    def migration_status(self) -> MigrationStatus:
        with self._pool.connection() as conn:
            version = self._schema_version(conn)
            applied = [] if not version else [
                (v, name, at.isoformat()) for v, name, at in
                conn.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")]
        return MigrationStatus(version, applied, pending_after(version, self._where))

    def schema_version(self) -> int | None:
        with self._pool.connection() as conn:
            return self._schema_version(conn)

    def edge_health(self) -> dict[str, tuple[datetime, EdgeHealth]]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT edge_id, received_at, body FROM edge_health").fetchall()
        return {r[0]: (r[1].astimezone(UTC), _HEALTH.decode(r[2])) for r in rows}

    def leader_lock(self, name: str) -> PostgresLeaderLock:
        """A lock one hub replica holds at a time, for a job that must run once (``hub.storage.leader``)."""
        return PostgresLeaderLock(self._url, name, self._connect_timeout)

    def _try_timescaledb(self) -> bool:
        """``CREATE EXTENSION IF NOT EXISTS timescaledb``; whether it is there now.

        On a connection of its own, outside the pool: where the library is installed but not
        preloaded, some TimescaleDB versions answer with FATAL, which ends the session.
        """
        try:
            with psycopg.connect(self._url, autocommit=True, options="-c TimeZone=UTC",
                                 connect_timeout=self._connect_timeout) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            return True
        except psycopg.Error as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # Another hub process may have created it at the same moment (unique violation on pg_extension).
        with self._pool.connection() as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
                return True
        log.info("TimescaleDB not available (%s); readings are partitioned by day natively", reason)
        return False

    def _create_hypertable(self, conn: psycopg.Connection) -> None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS readings ({_READINGS_COLUMNS_DDL})")
        (version,) = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
        # if_not_exists: already a hypertable is fine; migrate_data: a plain table with rows is converted.
        if major_minor >= (2, 13):
            conn.execute("SELECT create_hypertable('readings', by_range('ts', INTERVAL '1 day'),"
                         " if_not_exists => TRUE, migrate_data => TRUE)")
        else:  # the interface before 2.13
            conn.execute("SELECT create_hypertable('readings', 'ts', chunk_time_interval => INTERVAL '1 day',"
                         " if_not_exists => TRUE, migrate_data => TRUE)")
        conn.execute("CREATE INDEX IF NOT EXISTS readings_device_metric_ts ON readings (device_id, metric, ts)")
        # Compression settings cannot be changed while compressed chunks exist: set them only once.
        row = conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings'"
        ).fetchone()
        if not (row and row[0]):
            conn.execute("ALTER TABLE readings SET (timescaledb.compress,"
                         " timescaledb.compress_segmentby = 'device_id, metric', timescaledb.compress_orderby = 'ts')")
        conn.execute("SELECT add_compression_policy('readings', compress_after => %s::interval,"
                     " if_not_exists => TRUE)", (self._compress_after,))
        if self._retain_for is not None:
            # if_not_exists keeps an existing policy as it is (with a notice) even if its window differs.
            conn.execute("SELECT add_retention_policy('readings', drop_after => %s::interval,"
                         " if_not_exists => TRUE)", (self._retain_for,))

    def _aggregate_policies(self, conn: psycopg.Connection) -> None:
        """The continuous aggregates' jobs (each a no-op where it exists): refresh every range that
        changed (start_offset NULL: late readings too), and compress the 1-minute and 1-hour rollups
        after ``compress_after`` (refreshing a compressed range still works). They are kept past the
        readings' retention: no retention policy of their own."""
        compressed = dict(conn.execute(
            "SELECT view_name, compression_enabled FROM timescaledb_information.continuous_aggregates"
            " WHERE view_schema = current_schema()").fetchall())
        if set(compressed) != set(_CAGG_SCHEDULE):
            return  # before migration 4 (a hub started with migrations pending refuses to run anyway)
        for name, every in _CAGG_SCHEDULE.items():
            conn.execute("SELECT add_continuous_aggregate_policy(%s::regclass, start_offset => NULL,"
                         " end_offset => NULL, schedule_interval => %s::interval, if_not_exists => TRUE)",
                         (name, every))
        for name in ("rollups_1m", "rollups_1h"):
            if not compressed.get(name):
                conn.execute(f"ALTER MATERIALIZED VIEW {name} SET (timescaledb.compress = true)")
            conn.execute("SELECT add_compression_policy(%s::regclass, compress_after => %s::interval,"
                         " if_not_exists => TRUE)", (name, self._compress_after))

    def _ensure_partitions(self, readings: Iterable[Reading]) -> None:
        """Give every UTC day in ``readings`` its partition before a COPY writes to it.

        Runs in its own short transaction, outside any ingest transaction: creating a partition locks
        the parent table, and holding that beside an open COPY could deadlock two ingests.
        """
        if self.backend != "postgresql":
            return
        # a day far from today is a broken clock's (stored flagged by the hub, or bogus): such rows go
        # to the default partition, so no clock can make the hub create thousands of partitions
        today = datetime.now(UTC).date().toordinal()
        days = {d for d in _utc_days(readings) if today - PARTITION_DAYS_BACK <= d <= today + 2}
        if days <= self._partitions:
            return
        with self._partition_lock, self._pool.connection() as conn:
            missing = sorted(days - self._partitions)
            if not missing:
                return
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for day in missing:
                self._create_partition(conn, day)
            conn.commit()
            self._partitions.update(missing)

    @staticmethod
    def _create_partition(conn: psycopg.Connection, day: int) -> None:
        name = _partition_name(day)
        lo, hi = _midnight(day), _midnight(day + 1)
        if conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is not None:
            return
        bounds = sql.SQL("FOR VALUES FROM ({}) TO ({})").format(sql.Literal(lo), sql.Literal(hi))
        try:
            with conn.transaction():
                conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF readings {}").format(sql.Identifier(name), bounds))
        except psycopg.errors.CheckViolation:
            # Rows for this day already sit in the DEFAULT partition (its partition was dropped by
            # hand, say): move them into a new table and attach that as the day's partition.
            log.warning("moving readings of %s out of readings_default into their own partition", lo[:10])
            with conn.transaction():
                conn.execute(sql.SQL("CREATE TABLE {} (LIKE readings INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
                             .format(sql.Identifier(name)))
                conn.execute(
                    sql.SQL("WITH moved AS (DELETE FROM readings_default WHERE ts >= {lo} AND ts < {hi} RETURNING *)"
                            " INSERT INTO {name} SELECT * FROM moved").format(
                        lo=sql.Literal(lo), hi=sql.Literal(hi), name=sql.Identifier(name)))
                conn.execute(sql.SQL("ALTER TABLE readings ATTACH PARTITION {} {}")
                             .format(sql.Identifier(name), bounds))

    # -- writes ---------------------------------------------------------------------------------

    @staticmethod
    def _copy_readings(cur: psycopg.Cursor, rows: list[tuple]) -> None:
        with cur.copy(_COPY_READINGS) as copy:
            copy.set_types(_READING_TYPES)
            write = copy.write_row
            for row in rows:
                write(row)

    @staticmethod
    def _dirty_hours(rows: list[tuple]) -> list[str]:
        """The parameter of ``_MARK_DIRTY_JSON`` for stored reading rows (``_READING_COLUMNS``
        order): their (series, hour) pairs, each with its earliest reading; a batch holds few of them."""
        since: dict[tuple, datetime] = {}
        for r in rows:
            ts = r[0]
            key = (r[2], r[3], r[1], ts.timestamp() // 3600)
            if (held := since.get(key)) is None or ts < held:
                since[key] = ts
        return [msgspec.json.encode([[d, m, sub, ts] for (d, m, sub, _), ts in since.items()]).decode()]

    def refresh_rollups(self, *, device_id: str | None = None, metric: str | None = None,
                        substation: str | None = None, start: datetime | None = None, end: datetime | None = None,
                        limit: int | None = None) -> int:
        if self.backend == "timescaledb":  # nothing marked: a question's range refreshed (TimescaleDB's jobs do the
            if limit is None and (start is not None or end is not None):  # rest, the background refresher's part)
                self._refresh_aggregates(ROLLUP_WIDTHS, start, end)
            return 0
        where, args = "true", []
        for column, value in (("device_id", device_id), ("metric", metric), ("substation", substation)):
            if value is not None:
                where, args = where + f" AND {column} = %s", [*args, value]
        if start is not None:  # the hours that overlap [start, end)
            where, args = where + " AND hour > %s", [*args, start - timedelta(hours=1)]
        if end is not None:
            where, args = where + " AND hour < %s", [*args, end]
        if limit is None:  # a question: every mark of its range, folded a chunk per transaction (see below)
            taken = self._claim_marks(where, args, None)
            for i in range(0, len(taken), QUESTION_CHUNK_HOURS):
                self._fold_marks(taken[i:i + QUESTION_CHUNK_HOURS])
            return len(taken)
        taken = self._claim_marks(where, args, limit)
        self._fold_marks(taken)
        return len(taken)

    def _claim_marks(self, where: str, args: list[Any], limit: int | None) -> list[tuple]:
        """Claim the marked hours matching ``where`` (``marks = -1``) in a transaction of its own;
        the claimed (device_id, metric, substation, hour).

        Marks are folded in two transactions, so that ingest never waits for a recompute: this one
        claims them and commits at once; :meth:`_fold_marks` recomputes their hours from the readings
        and deletes the marks still claimed. A sync that marks a claimed hour meanwhile sets it back to
        1 (``_MARK_DIRTY``): that mark stays for the next refresh. Before, one transaction took the
        marks (``DELETE ... FOR UPDATE``) and held them through the recompute (0.2-0.4 s for hours of
        1 Hz data), and every sync marking one of those hours waited for it: under 10,000 readings/s
        the syncs queued on the marks, held every pooled connection, and `GET /incidents` took
        0.4-2.3 s (docs/scaling.md, "Rollup marks under load").

        ``limit`` (the background refresher): up to that many unclaimed marks, skipping those another
        transaction holds, the longest waiting first (the earliest ``since``; none first). In key
        order, a series at the front, marked again by each sync, was claimed again each time, and the
        series behind it waited: their marks' readings went back to the start of the load, and each
        of their folds, when it came, took seconds (bench_hub_http.py --soak). None (a question): every mark of the range, claimed or not, as it stands
        now; the question recomputes them itself, so its answer is exact even while another refresh
        recomputes the same hours. A claim left by a refresh that died is folded by the next question
        over it, or made unclaimed again when a hub opens the database."""
        with self._pool.connection() as conn, conn.cursor() as cur:
            if cur.execute(f"SELECT 1 FROM rollup_dirty WHERE {where} LIMIT 1", args).fetchone() is None:
                return []  # the usual case when asked: nothing to do
            pick = " ORDER BY device_id, metric, substation, hour FOR UPDATE" if limit is None else \
                " AND marks > 0 ORDER BY since NULLS FIRST, hour LIMIT %s FOR UPDATE SKIP LOCKED"
            return cur.execute(
                "UPDATE rollup_dirty SET marks = -1 WHERE (device_id, metric, substation, hour) IN"
                f" (SELECT device_id, metric, substation, hour FROM rollup_dirty WHERE {where}{pick})"
                " RETURNING device_id, metric, substation, hour, since", args if limit is None else [*args, limit]).fetchall()

    def _fold_marks(self, taken: list[tuple]) -> None:
        """Fold the claimed hours ``taken`` (:meth:`_claim_marks`) into the rollups in one
        transaction, and delete their marks if still claimed; on failure, unclaim them for the next
        refresh, to be recomputed whole.

        Each hour's minutes are recomputed from its mark's earliest reading's minute on (all of
        them when the mark has no ``since``), the hour from its minutes, the day from its hours.
        Every reading the rollups do not count yet is in a mark no later than it (a reading a fold
        did not see has marked its hour again since the claim), so the minutes before stay right;
        recomputing rather than adding makes a reading counted twice impossible, however the folds
        and syncs interleave. Folds run one at a time (``_FOLD_LOCK``): they are short (the
        refresher's about 50 ms), and a question's waits for the refresher's."""
        if not taken:
            return
        claimed = _json([[d, m, sub, h.isoformat(), None if since is None else since.isoformat()]
                         for d, m, sub, h, since in taken])
        try:
            with self._pool.connection() as conn, conn.cursor() as cur:
                cur.execute(_TODO_TABLE)
                cur.execute("INSERT INTO rollup_todo_v6 SELECT e ->> 0, e ->> 1, e ->> 2, (e ->> 3)::timestamptz,"
                            f" coalesce({_MINUTE.format(ts='(e ->> 4)::timestamptz')}, (e ->> 3)::timestamptz)"
                            " FROM json_array_elements(%s::json) AS e", (claimed,))
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_FOLD_LOCK,))
                days = [r[0] for r in cur.execute(f"SELECT DISTINCT {_DAY.format(ts='hour')} FROM rollup_todo_v6"
                                                  " ORDER BY 1")]
                for day in days:
                    cur.execute(_RECOMPUTE_MINUTES, {"lo": day, "hi": day + timedelta(days=1)})
                cur.execute(_RECOMPUTE_HOURS)
                cur.execute(_RECOMPUTE_DAYS)
                cur.execute("DELETE FROM rollup_dirty AS d USING rollup_todo_v6 AS t WHERE d.device_id = t.device_id"
                            " AND d.metric = t.metric AND d.substation = t.substation AND d.hour = t.hour"
                            " AND d.marks < 0")
        except BaseException:
            with contextlib.suppress(Exception), self._pool.connection() as conn:  # unclaimed again, if it can
                conn.execute("UPDATE rollup_dirty AS d SET marks = 1, since = NULL FROM json_array_elements(%s::json) AS e"
                             " WHERE d.device_id = e ->> 0 AND d.metric = e ->> 1 AND d.substation = e ->> 2"
                             " AND d.hour = (e ->> 3)::timestamptz", (claimed,))
            raise

    def _refresh_aggregates(self, widths: Iterable[int], start: datetime | None, end: datetime | None) -> None:
        """TimescaleDB: bring the continuous aggregates of these widths up to date over [start, end)
        (None: unbounded), each from the one below, so finest first. Only what changed there since
        their last refresh is recomputed: under 1 ms an aggregate when nothing did (measured)."""
        with self._pool.connection() as conn:
            conn.autocommit = True  # refresh_continuous_aggregate runs outside a transaction only
            try:
                for width in sorted(widths):
                    w = width * 10**6
                    lo = None if start is None else from_epoch_us(epoch_us(start) // w * w)
                    hi = None if end is None else from_epoch_us(-(-epoch_us(end) // w) * w)
                    if lo is not None and hi is not None and lo >= hi:
                        continue  # an empty range: nothing to refresh (TimescaleDB refuses it)
                    conn.execute("CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, %s::timestamptz)",
                                 (_CAGG_WIDTHS[width], lo, hi))
            finally:
                conn.autocommit = False

    def rollup_buckets(self, width: int, start: datetime, end: datetime, metrics: Sequence[str], *,
                       device_id: str | None = None, substation: str | None = None,
                       shard: ShardSpec | None = None) -> list[ReadingBucket]:
        where, args = "", []
        for column, value in (("device_id", device_id), ("substation", substation)):
            if value is not None:
                where, args = where + f" AND {column} = %s", [*args, value]
        if shard is not None:
            where, args = where + f" AND {SHARD_SQL_POSTGRES}", [*args, shard[1], shard[0]]
        if self.backend == "timescaledb":  # refreshed first: readings that came late, or twice, are counted as stored
            self._refresh_aggregates([w for w in ROLLUP_WIDTHS if w <= width], start, end)
            query, params = _CAGG_BUCKETS.format(view=_CAGG_WIDTHS[width], where=where), (list(metrics), *args, start, end)
        else:  # the marked hours of the range folded first
            for m in dict.fromkeys(metrics):
                self.refresh_rollups(device_id=device_id, metric=m, substation=substation, start=start, end=end)
            query, params = _ROLLUP_BUCKETS.format(where=where), (width, list(metrics), *args, start, end)

        def read(conn: psycopg.Connection) -> list[ReadingBucket]:
            # binary: a year of hours decodes in 2/3 of the time; each row made a bucket as it is decoded
            with conn.cursor(binary=True, row_factory=_bucket_rows) as cur:
                return cur.execute(query, params).fetchall()

        return self._read("rollup_buckets", read)

    @staticmethod
    def _insert_incidents(cur: psycopg.Cursor, incidents: Sequence[NewIncident]) -> list[int]:
        """One incident per ongoing condition: a finding whose condition has an incident that is not
        RESOLVED updates it (newest description, value and facts; severity never lowered; one more
        occurrence); otherwise it opens a new one. Returns the incidents' numbers, in order.

        Runs inside the caller's transaction. The advisory locks on the conditions (taken in hash
        order, held to the end of the transaction) make a concurrent transaction recording the same
        condition wait, then see the incident this one opened.
        """
        if not incidents:
            return []
        cur.execute(
            "SELECT pg_advisory_xact_lock(%s, h) FROM"
            " (SELECT DISTINCT hashtext(k) AS h FROM unnest(%s::text[]) AS k ORDER BY h) AS conditions",
            (_CONDITION_LOCK_CLASS, sorted({inc.key() for inc in incidents})),
        )
        return upsert_incidents(SqlTx(cur, "postgresql"), incidents, _INCIDENTS)

    def apply_sync(self, batch: SyncBatch, make_incidents: IncidentMaker) -> SyncAck:
        for run in (batch.readings, batch.live):
            if run is not None and run.items:
                self._ensure_partitions(run.items)
        with self._pool.connection() as conn, conn.cursor() as cur:
            # Lock this edge's row first (made if new; DO UPDATE locks it as FOR UPDATE would) and read
            # its marks, in one round trip: a concurrent sync from the same edge waits here, then sees
            # the marks this one leaves.
            cur.execute("INSERT INTO edge_sync (edge_id, substation) VALUES (%s, %s) ON CONFLICT (edge_id)"
                        " DO UPDATE SET edge_id = excluded.edge_id RETURNING readings_acked_through,"
                        " events_acked_through, gaps, ot_logs_acked_through, buffer_id, live_lo, live_hi",
                        (batch.edge_id, batch.substation))
            r_hwm, e_hwm, gaps, o_hwm, buffer_id, live_lo, live_hi = cur.fetchone()
            # SequenceError: rolled back, nothing stored
            plan = plan_sync(batch, r_hwm, e_hwm, o_hwm, buffer_id, (live_lo, live_hi))
            rows: list[tuple] = []
            last: list[str] = []  # statements sent with the marks' update, as CTEs: one round trip
            params: list[Any] = []
            if plan.readings or plan.live:
                rows = (_reading_rows(plan.readings, batch.edge_id, plan.readings_first)
                        + _reading_rows(plan.live, batch.edge_id, plan.live_first))
                self._copy_readings(cur, rows)
                if self.backend != "timescaledb":  # there, the continuous aggregates track what changed
                    last.append(f"marked AS ({_MARK_DIRTY_JSON})")
                    params += self._dirty_hours(rows)
            if plan.events:
                cur.executemany(_EVENT_SQL, [
                    (e.ts, e.substation, e.device_id, e.metric, e.type, e.state, e.severity, e.value, e.threshold,
                     e.nominal, e.unit, e.description, batch.edge_id, plan.events_first + i)
                    for i, e in enumerate(plan.events)
                ])
                incidents = make_incidents(plan.events)
                if incidents:
                    self._insert_incidents(cur, incidents)
            if plan.ot_logs:  # source = the edge id, as add_ot_logs stores 'http' or 'mqtt'
                encode = msgspec.json.Encoder().encode
                with cur.copy(_COPY_OT_LOGS) as copy:
                    for e in plan.ot_logs:
                        copy.write_row((e.ts, e.substation, e.device_id, e.kind, batch.edge_id, encode(e).decode()))
            if batch.health is not None:
                last.append("health AS (INSERT INTO edge_health VALUES (%s, %s, %s) ON CONFLICT (edge_id) DO UPDATE"
                            " SET received_at = excluded.received_at, body = excluded.body)")
                params += [batch.edge_id, datetime.now(UTC), msgspec.json.encode(batch.health).decode()]
            cur.execute(
                ("WITH " + ", ".join(last) + " " if last else "")
                + "UPDATE edge_sync SET substation = %s, readings_acked_through = %s, events_acked_through = %s,"
                " gaps = %s, last_sync = %s, ot_logs_acked_through = %s, buffer_id = %s, live_lo = %s, live_hi = %s"
                " WHERE edge_id = %s",
                (*params, batch.substation, plan.readings_acked_through, plan.events_acked_through, gaps + plan.gaps,
                 datetime.now(UTC), plan.ot_logs_acked_through, plan.buffer_id, plan.live_lo, plan.live_hi,
                 batch.edge_id),
            )
        # Leaving the pool's context committed the transaction (or rolled it back on an exception).
        self._newest.note(rows)
        return plan.ack(batch.edge_id)

    def insert_readings(self, readings: Sequence[Reading], source: str) -> int:
        return len(self.insert_new_readings(readings, source))

    def insert_new_readings(self, readings: Sequence[Reading], source: str) -> list[int]:
        first = first_of_each_key(readings)
        if not first:
            return []
        chosen = [readings[i] for i in first]
        self._ensure_partitions(chosen)
        rows = _reading_rows(chosen, source, None)
        buckets = sorted({zlib.crc32(f"{r.device_id}\x1f{r.metric}".encode()) % _READING_KEY_BUCKETS for r in chosen})
        with self._pool.connection() as conn, conn.cursor() as cur:
            # a concurrent insert of the same series waits here, then sees what this one stored
            cur.execute("SELECT pg_advisory_xact_lock(%s, b)"
                        " FROM (SELECT unnest(%s::int4[]) AS b ORDER BY b) AS buckets", (_READING_KEY_LOCK_CLASS, buckets))
            cur.execute(_STAGED_SCHEMA)  # once per session; emptied at every commit
            with cur.copy(_COPY_STAGED) as copy:
                copy.set_types(["int4", *_READING_TYPES])
                for k, row in enumerate(rows):
                    copy.write_row((k, *row))
            insert = _INSERT_STAGED if self.backend == "timescaledb" else _INSERT_STAGED_MARKED
            new = [k for (k,) in cur.execute(insert).fetchall()]
        self._newest.note(rows)  # committed (the ones held already are no newer)
        return [first[k] for k in new]

    def add_incidents(self, incidents: Sequence[NewIncident]) -> list[Incident]:
        """The distinct incidents the findings opened or updated, by number."""
        if not incidents:
            return []
        with self._pool.connection() as conn, conn.cursor() as cur:
            numbers = sorted(set(self._insert_incidents(cur, incidents)))
            rows = cur.execute(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE number = ANY(%s) ORDER BY number",
                               (numbers,)).fetchall()
        return [_incident(r) for r in rows]

    def set_incident_status(self, incident_id: str, status: str, actor: str, note: str = "") -> Incident:
        current = self.get_incident(incident_id)
        check_transition(incident_id, current.status, status)
        number = parse_incident_id(incident_id)
        now = datetime.now(UTC)
        with self._pool.connection() as conn, conn.cursor() as cur:
            # guarded by the status it was read with: a concurrent change makes this match no row
            cur.execute("UPDATE incidents SET status = %s, updated_at = %s WHERE number = %s AND status = %s",
                        (status, now, number, current.status))
            if cur.rowcount != 1:
                raise IncidentError(f"{incident_id} changed while it was being updated; try again")
            cur.execute(_HISTORY_SQL, (number, now, status, actor, note))
        return self.get_incident(incident_id)

    def set_incident_narrative(self, incident_id: str, narrative: str) -> None:
        number = parse_incident_id(incident_id)
        with self._pool.connection() as conn:
            conn.execute("UPDATE incidents SET narrative = %s WHERE number = %s", (narrative, number))

    def put_documents(self, docs: Sequence[Document]) -> None:
        if not docs:
            return
        rows = [(d.kind, d.key, d.timestamp, _json(d.body)) for d in docs]
        with self._pool.connection() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO documents (kind, key, ts, body) VALUES (%s,%s,%s,%s::json)"
                            " ON CONFLICT (kind, key) DO UPDATE SET ts = excluded.ts, body = excluded.body", rows)

    def add_ot_logs(self, events: Sequence[OtLogEvent], source: str) -> int:
        if not events:
            return 0
        encode = msgspec.json.Encoder().encode
        rows = [(e.ts, e.substation, e.device_id, e.kind, source, encode(e).decode()) for e in events]
        with self._pool.connection() as conn, conn.cursor() as cur, cur.copy(_COPY_OT_LOGS) as copy:
            for row in rows:
                copy.write_row(row)
        return len(rows)

    def add_dead_letters(self, items: Sequence[DeadLetter]) -> int:
        if not items:
            return 0
        rows = [(d.ts, d.source, d.topic, d.payload, d.reason) for d in items]
        with self._pool.connection() as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO dead_letters (ts, source, topic, payload, reason) VALUES (%s,%s,%s,%s,%s)",
                            rows)
        return len(rows)

    # -- reads ----------------------------------------------------------------------------------

    def list_incidents(self, status: str | None = None, severity: str | None = None,
                       limit: int = 100) -> list[Incident]:
        where, args = [], []
        if status:
            where.append("status = %s")
            args.append(status)
        if severity:
            where.append("severity = %s")
            args.append(severity)
        query = f"SELECT {_INCIDENT_COLS} FROM incidents"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY number DESC LIMIT %s"
        with self._pool.connection() as conn:
            rows = conn.execute(query, (*args, limit)).fetchall()
        return [_incident(r) for r in rows]

    def reading_counts(self) -> dict[str, int]:
        with self._pool.connection() as conn:
            return dict(conn.execute("SELECT substation, count(*) FROM readings GROUP BY substation").fetchall())

    def incident_counts(self) -> dict[tuple[str, str], int]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT type, severity, count(*) FROM incidents GROUP BY type, severity").fetchall()
        return {(t, s): n for t, s, n in rows}

    def edge_states(self) -> list[EdgeState]:
        with self._pool.connection() as conn:
            rows = conn.execute(
                "SELECT edge_id, substation, readings_acked_through, events_acked_through, gaps, last_sync,"
                " ot_logs_acked_through, live_lo, live_hi"
                ' FROM edge_sync ORDER BY edge_id COLLATE "C"'  # byte order, as SQLite sorts
            ).fetchall()
        return [
            EdgeState(edge_id=r[0], substation=r[1], readings_acked_through=r[2], events_acked_through=r[3],
                      gaps=r[4], last_sync=r[5], ot_logs_acked_through=r[6], live_lo=r[7], live_hi=r[8])
            for r in rows
        ]

    def latest_reading_times(self, start: datetime, end: datetime) -> list[tuple[str, str, datetime]]:
        """From ``device_newest`` (hub.storage.newest), not the readings, with this process's notes
        not written yet laid over it; another process's show within 5 s."""
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT substation, device_id, ts FROM device_newest WHERE ts >= %s AND ts < %s",
                                (start, end)).fetchall()
        return self._newest.overlay(rows, start, end)

    def _write_newest(self, rows: list[tuple[str, str, datetime]]) -> None:
        # not the pool's 30 s: with PostgreSQL down, closing the hub waited that long for this write,
        # and a write that fails keeps its notes for the next one anyway
        with self._pool.connection(timeout=NEWEST_WRITE_WAIT_S) as conn:
            conn.execute(_NEWEST_UPSERT, ([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]))

    def query_readings(self, device_id: str, metric: str, start: datetime | None = None,
                       end: datetime | None = None, limit: int = 10_000) -> list[Reading]:
        query = ("SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
                 " FROM readings WHERE device_id = %s AND metric = %s")
        args: list[object] = [device_id, metric]
        if start is not None:
            query += " AND ts >= %s"
            args.append(start)
        if end is not None:
            query += " AND ts < %s"
            args.append(end)
        query += " ORDER BY ts LIMIT %s"
        args.append(limit)
        rows = self._read("query_readings", lambda conn: conn.execute(query, args).fetchall())
        return readings_from_rows(rows)

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT ts, source, topic, payload, reason FROM dead_letters"
                                " ORDER BY number DESC LIMIT %s", (limit,)).fetchall()
        return [DeadLetter(ts=r[0], source=r[1], topic=r[2], payload=r[3], reason=r[4]) for r in rows]

    def dead_letter_count(self) -> int:
        with self._pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0]

    def get_incident(self, incident_id: str) -> Incident:
        number = parse_incident_id(incident_id)
        with self._pool.connection() as conn:
            row = conn.execute(f"SELECT {_INCIDENT_COLS} FROM incidents WHERE number = %s", (number,)).fetchone()
            history = conn.execute("SELECT ts, status, actor, note FROM incident_history WHERE number = %s"
                                   " ORDER BY id", (number,)).fetchall()
        if row is None or _incident(row).id != incident_id:
            raise IncidentError(f"no incident {incident_id}")
        return msgspec.structs.replace(_incident(row), history=[
            StatusChange(timestamp=h[0], status=h[1], actor=h[2], note=h[3]) for h in history])

    def latest_documents(self, kind: str) -> list[Document]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT kind, key, ts, body::text FROM documents WHERE kind = %s"
                                ' ORDER BY key COLLATE "C"', (kind,)).fetchall()  # byte order, as SQLite sorts
        return [Document(kind=r[0], key=r[1], timestamp=r[2], body=msgspec.json.decode(r[3])) for r in rows]

    def ot_logs_between(self, start: datetime, end: datetime, limit: int = 1_000_000) -> list[OtLogEvent]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT body::text FROM ot_logs WHERE ts >= %s AND ts < %s ORDER BY ts, id LIMIT %s",
                                (start, end, limit)).fetchall()
        return [_OT_DECODER.decode(r[0]) for r in rows]

    def list_events(self, state: str | None = None, limit: int = 10_000) -> list[Event]:
        query = f"SELECT {_EVENT_COLS} FROM events"
        args: tuple = ()
        if state:
            query += " WHERE state = %s"
            args = (state,)
        with self._pool.connection() as conn:
            rows = conn.execute(query + " ORDER BY ts, number LIMIT %s", (*args, limit)).fetchall()
        return [Event(ts=r[0], substation=r[1], device_id=r[2], metric=r[3], type=r[4], state=r[5], severity=r[6],
                      value=r[7], threshold=r[8], nominal=r[9], unit=r[10], description=r[11])
                for r in rows]

    def raw_buckets(self, start: datetime, end: datetime, width: int, metrics: Sequence[str], *,
                    device_id: str | None = None, substation: str | None = None,
                    shard: ShardSpec | None = None) -> list[ReadingBucket]:
        # iter_buckets' query on a pooled connection (iter_buckets opens one of its own: a few ms)
        where, args = _series_where(None if substation is None else [substation],
                                    None if device_id is None else [device_id], metrics)
        if shard is not None:
            where, args = where + f" AND {SHARD_SQL_POSTGRES}", [*args, shard[1], shard[0]]
        w = width * 10**6
        base = epoch_us(start) // w * w
        rows = self._read("raw_buckets", lambda conn: conn.execute(_EXPORT_BUCKETS.format(where=where),
                                                                   (base, w, start, end, *args)).fetchall())
        return [ReadingBucket(from_epoch_us(base + r[0] * w), *r[1:]) for r in rows]

    def series_buckets(self, start: datetime, end: datetime, bucket_s: int, device_id: str, metric: str,
                       substation: str | None = None) -> list[ReadingBucket]:
        return rollups.series_buckets(self, start, end, bucket_s, device_id, metric, substation)

    def hourly_means(self, metrics: Sequence[str], start: datetime, end: datetime, *,
                     shard: ShardSpec | None = None) -> list[HourlyMean]:
        return rollups.hourly_means(self, metrics, start, end, shard)

    def readings_between(self, start: datetime, end: datetime, limit: int = 2_000_000) -> list[Reading]:
        rows = self._read("readings_between", lambda conn: conn.execute(
            "SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
            " FROM readings WHERE ts >= %s AND ts < %s ORDER BY ts LIMIT %s", (start, end, limit)).fetchall())
        return readings_from_rows(rows)

    # -- the readings API (hub/readings) --------------------------------------------------------

    def series_extent(self, device_id: str, metric: str, substation: str | None = None) -> SeriesExtent | None:
        where, args = "device_id = %s AND metric = %s", [device_id, metric]
        if substation is not None:
            where, args = where + " AND substation = %s", [*args, substation]
        row = self._read("series_extent", lambda conn: conn.execute(_SERIES_EXTENT.format(where=where),
                                                                    args * 3).fetchone())
        return None if row is None else SeriesExtent(first=row[0], last=row[1], unit=row[2])

    def latest_readings(self, substations: Sequence[str] | None = None) -> list[Reading]:
        where, args = _series_where(substations, None, None)
        rows = self._read("latest_readings", lambda conn: conn.execute(_LATEST_READINGS.format(where=where),
                                                                       args).fetchall())
        return readings_from_rows(rows)

    def substation_summaries(self) -> list[SubstationSummary]:
        rows = self._read("substation_summaries", lambda conn: conn.execute(_SUBSTATION_SUMMARIES).fetchall())
        return [SubstationSummary(substation=r[0], devices=r[1], points=r[2], readings=int(r[3]), first_reading=r[4],
                                  last_reading=r[5]) for r in rows]

    def open_incident_counts(self) -> dict[tuple[str, str], int]:
        with self._pool.connection() as conn:
            rows = conn.execute("SELECT substation, severity, count(*) FROM incidents WHERE status <> 'RESOLVED'"
                                " GROUP BY substation, severity").fetchall()
        return {(sub, sev): n for sub, sev, n in rows}

    # -- long ranges in chunks (exports, history) -----------------------------------------------
    # One query per TimeWindows window, read through a server-side cursor WITH HOLD on a connection
    # of the export's own (not the pool's: a long export must not starve ingest of connections).
    # In autocommit, the DECLARE is its own transaction: the window's rows are materialised on the
    # server when it commits, and its locks are gone before the first FETCH, so a slow client never
    # holds a lock on readings (one that would stall the next day's partition, and ingest behind it).

    def iter_readings(self, start: datetime, end: datetime, *, substations: Sequence[str] | None = None,
                      devices: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                      chunk_rows: int = 50_000) -> Iterator[list[Reading]]:
        check_chunking(chunk_rows)
        where, args = _series_where(substations, devices, metrics)
        query = ("SELECT ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
                 f" FROM readings WHERE ts >= %s AND ts < %s{where} ORDER BY ts, {_SERIES_ORDER}")
        windows = TimeWindows(epoch_us(start), epoch_us(end), chunk_rows)

        def chunk(rows: list[tuple]) -> list[Reading]:
            return readings_from_rows(rows)  # one str per name in a chunk, not one per row

        return self._iter_windows(windows, query, lambda lo, hi: (from_epoch_us(lo), from_epoch_us(hi), *args),
                                  chunk, chunk_rows)

    def iter_window_rows(self, start: datetime, end: datetime, chunk_rows: int = 200_000, *,
                         substations: Sequence[str] | None = None) -> Iterator[list[tuple]]:
        check_chunking(chunk_rows)
        query = f"SELECT date_part('epoch', ts), {WINDOW_COLUMNS} FROM readings WHERE ts >= %s AND ts < %s"
        extra: tuple = ()
        if substations is not None:  # a hashed semi-join, whatever the plan: not a scan of the list per row
            if not substations:
                return iter(())
            query += " AND substation IN (SELECT unnest(%s::text[]))"
            extra = (list(dict.fromkeys(substations)),)
        windows = TimeWindows(epoch_us(start), epoch_us(end), chunk_rows, first_us=WINDOW_FIRST_US)
        return self._iter_window_rows(windows, query, extra)

    def devices_between(self, start: datetime, end: datetime) -> list[tuple[str, str]]:
        rows = self._read("devices_between", lambda conn: conn.execute(
            "SELECT DISTINCT substation, device_id FROM readings WHERE ts >= %s AND ts < %s", (start, end)).fetchall())
        return [(r[0], r[1]) for r in rows]

    def _iter_window_rows(self, windows: TimeWindows, query: str, extra: tuple = ()) -> Iterator[list[tuple]]:
        # a plain query a slice, on a pooled connection (the replica's when it has caught up): no
        # cursor held over, so nothing is materialised twice on the server
        for lo, hi in windows:
            rows = self._read("window_rows", lambda conn, lo=lo, hi=hi: conn.execute(
                query, (from_epoch_us(lo), from_epoch_us(hi), *extra), binary=True).fetchall())
            windows.done(len(rows))
            if rows:
                yield rows
            del rows

    def iter_buckets(self, start: datetime, end: datetime, bucket_s: int, *,
                     substations: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                     metrics: Sequence[str] | None = None, chunk_rows: int = 50_000) -> Iterator[list[ReadingBucket]]:
        check_chunking(chunk_rows, bucket_s)
        bucket_us = int(bucket_s) * 10**6
        where, args = _series_where(substations, devices, metrics)
        query = _EXPORT_BUCKETS.format(where=where)
        windows = TimeWindows(epoch_us(start), epoch_us(end), chunk_rows, align_us=bucket_us)
        bases: list[int] = []  # the window's first bucket, k counts from it

        def params(lo: int, hi: int) -> tuple:
            bases[:] = [lo - lo % bucket_us]
            return (bases[0], bucket_us, from_epoch_us(lo), from_epoch_us(hi), *args)

        def chunk(rows: list[tuple]) -> list[ReadingBucket]:
            base = bases[0]
            return [ReadingBucket(from_epoch_us(base + r[0] * bucket_us), r[1], r[2], r[3], r[4], r[5], r[6], r[7],
                                  r[8]) for r in rows]

        return self._iter_windows(windows, query, params, chunk, chunk_rows)

    def _connect_export(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self._url, autocommit=True, options="-c TimeZone=UTC",
                                   connect_timeout=self._connect_timeout)
        except psycopg.OperationalError as exc:
            raise PostgresUnavailable(f"cannot connect to PostgreSQL at {self._where}: {exc}") from exc

    def _iter_windows(self, windows: TimeWindows, query: str, params: Callable[[int, int], tuple],
                      chunk: Callable[[list[tuple]], list[Any]], chunk_rows: int) -> Iterator[list[Any]]:
        replica = self._replica
        conn = self._connect_export() if replica is None else replica.connect("export", self._connect_export)
        with conn:
            for lo, hi in windows:
                held = 0
                with conn.cursor(name="sentinel_export", withhold=True) as cur:
                    cur.execute(query, params(lo, hi))
                    while rows := cur.fetchmany(chunk_rows):
                        held += len(rows)
                        data = chunk(rows)
                        del rows  # before the caller works on the chunk, and before the next fetch
                        yield data
                        del data
                windows.done(held)


def _legacy_upgrades(conn: psycopg.Connection) -> None:
    """Migration 1: what hub 0.1.0 and earlier applied in place at start (each a no-op where done)."""
    # databases made before edge scoring
    conn.execute("ALTER TABLE readings ADD COLUMN IF NOT EXISTS anomaly_score double precision,"
                 " ADD COLUMN IF NOT EXISTS anomaly_type text")
    # databases made before list_events: events get their arrival order. Checked rather than
    # ADD COLUMN IF NOT EXISTS, which on some versions makes the identity's sequence regardless.
    if not conn.execute("SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
                        " AND table_name = 'events' AND column_name = 'number'").fetchone():
        conn.execute("ALTER TABLE events ADD COLUMN number bigint GENERATED BY DEFAULT AS IDENTITY")
    conn.execute(_INCIDENT_MIGRATION)


def _rollups(conn: psycopg.Connection) -> None:
    """Migration 2: the rollups and their dirty hours; every hour held is marked (the first question,
    or the hub's refresher, fills it)."""
    conn.execute(_ROLLUPS_SCHEMA)
    conn.execute(_MARK_ALL_V2)


def _edge_health_table(conn: psycopg.Connection) -> None:
    """Migration 3: each edge's latest health report."""
    conn.execute("CREATE TABLE IF NOT EXISTS edge_health (edge_id text PRIMARY KEY, received_at timestamptz NOT NULL,"
                 " body text NOT NULL)")


def _continuous_aggregates(conn: psycopg.Connection) -> None:
    """Migration 4: on the TimescaleDB layout, the rollups become continuous aggregates (rollups_1m,
    rollups_1h, rollups_1d) and the hub's table and marks go; nothing on the plain layout. Made empty
    (a refresh cannot run in the migration's transaction): TimescaleDB's refresh jobs fill them from
    the readings held, and questions meanwhile refresh the range they ask (or read it in real time)."""
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return
    if not conn.execute("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_schema = current_schema()"
                        " AND hypertable_name = 'readings'").fetchone():
        return  # partitioned: a plain database on a server that has TimescaleDB too
    conn.execute(_CAGG_OF_READINGS)
    conn.execute(_CAGG_OF_CAGG.format(name="rollups_1h", width="1 hour", source="rollups_1m"))
    conn.execute(_CAGG_OF_CAGG.format(name="rollups_1d", width="1 day", source="rollups_1h"))
    for name in _CAGG_WIDTHS.values():
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name}_series ON {name} (device_id, metric, substation, bucket)")
    conn.execute("DROP TABLE IF EXISTS rollups, rollup_dirty")


def _live_range_columns(conn: psycopg.Connection) -> None:
    """Migration 5: each edge's live range past its readings mark (protocols.wire, "Live first")."""
    conn.execute("ALTER TABLE edge_sync ADD COLUMN IF NOT EXISTS live_lo bigint NOT NULL DEFAULT 0,"
                 " ADD COLUMN IF NOT EXISTS live_hi bigint NOT NULL DEFAULT 0")


def _marks_since(conn: psycopg.Connection) -> None:
    """Migration 6: each rollup mark's earliest reading (``since``), so that a fold recomputes the
    hour's minutes from there on; marks made before it have none (the whole hour). Nothing on the
    TimescaleDB layout (no marks)."""
    conn.execute("ALTER TABLE IF EXISTS rollup_dirty ADD COLUMN IF NOT EXISTS since timestamptz")


_NEWEST_TABLE = """CREATE TABLE IF NOT EXISTS device_newest (
    substation text NOT NULL,
    device_id text NOT NULL,
    ts timestamptz NOT NULL,  -- the newest reading that measured something (hub.storage.newest)
    PRIMARY KEY (substation, device_id)
)"""
# rows in key order (unnest keeps it): two processes' upserts lock their rows in the same order
_NEWEST_UPSERT = ("INSERT INTO device_newest AS t (substation, device_id, ts)"
                  " SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[])"
                  " ON CONFLICT (substation, device_id) DO UPDATE SET ts = excluded.ts WHERE excluded.ts > t.ts")


def _device_newest(conn: psycopg.Connection) -> None:
    """Migration 7: each device's newest reading, for the liveness check (``hub.storage.newest``),
    filled from the readings of the last day (older ones are past any liveness window)."""
    conn.execute(_NEWEST_TABLE)
    conn.execute("INSERT INTO device_newest (substation, device_id, ts)"
                 " SELECT substation, device_id, max(ts) FROM readings"
                 f" WHERE ts >= now() - interval '1 day' AND (flags & {NOT_HEARD_FLAGS}) = 0 GROUP BY 1, 2"
                 " ON CONFLICT (substation, device_id) DO UPDATE SET ts = greatest(device_newest.ts, excluded.ts)")


# each migration's step on PostgreSQL, by version (hub.storage.migrations.MIGRATIONS)
MIGRATION_STEPS = {1: _legacy_upgrades, 2: _rollups, 3: _edge_health_table, 4: _continuous_aggregates,
                   5: _live_range_columns, 6: _marks_since, 7: _device_newest}
