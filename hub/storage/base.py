"""The hub's storage interface. Two implementations: SQLite (embedded default) and PostgreSQL.

Every method is synchronous and safe to call from several threads; the web layer runs them in a
worker thread. ``apply_sync`` is the idempotent heart of edge sync: in one transaction it stores
only the readings and events above the edge's high-water marks, turns the *new* events into
incidents, and moves the marks. A batch that does not continue the edge's sequence is refused
whole with :class:`SequenceError` (the hub answers 409), and a batch from a new buffer of the edge
starts its marks again at 0 (see :mod:`protocols.wire`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

import msgspec

from hub.storage.migrations import MigrationStatus
from protocols.incident import Incident, StatusChange
from protocols.mqtt.codec import DeadLetter
from protocols.otlog import OtLogEvent
from protocols.reading import Reading
from protocols.severity import SEVERITIES
from protocols.wire import EdgeHealth, Event, SyncAck, SyncBatch, SyncConflict


class NewIncident(msgspec.Struct, frozen=True, kw_only=True):
    """A finding to record. Findings with the same ``condition_key`` are one ongoing condition: while
    its incident is not RESOLVED, a new finding updates it rather than opening another."""

    timestamp: datetime
    type: str
    device_id: str
    severity: str
    description: str
    agent: str
    substation: str = ""
    metric: str = ""
    value: float | None = None
    condition_key: str = ""  # default: agent:type:substation:device_id:metric
    recommendation: str = ""
    confidence: float | None = None
    facts: dict[str, Any] = msgspec.field(default_factory=dict)

    def key(self) -> str:
        return self.condition_key or f"{self.agent}:{self.type}:{self.substation}:{self.device_id}:{self.metric}"


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """A stored agent product: a demand forecast, a maintenance prediction, an agent run's report.
    ``body`` is the product's JSON; ``kind`` and ``key`` (e.g. the device) say what it is of."""

    kind: str  # "forecast" | "maintenance" | "agent_run" | "agent_status" (hub.insights.elsewhere) | "anomaly_episodes"
    key: str
    timestamp: datetime
    body: dict[str, Any]


class HourlyMean(msgspec.Struct, frozen=True, array_like=True):
    substation: str
    device_id: str
    metric: str
    hour: datetime  # the hour's start, UTC
    mean: float
    count: int


class ReadingBucket(NamedTuple):
    """One series' readings over one bucket of time (:meth:`Storage.iter_buckets`). A plain tuple, in
    the column order of a bucketed export, so a writer can take it without knowing the hub."""

    bucket_start: datetime  # UTC, whole buckets after the epoch (the first may start before the range asked)
    substation: str
    device_id: str
    metric: str
    min: float
    max: float
    avg: float
    last: float  # the value of the bucket's newest reading (of readings with the same timestamp, the largest value)
    count: int  # readings aggregated


class SeriesExtent(msgspec.Struct, frozen=True, kw_only=True):
    """The readings held of one series (:meth:`Storage.series_extent`): the oldest and newest
    timestamps (of any reading, with a value or not), and the newest reading's unit."""

    first: datetime
    last: datetime
    unit: str


class SubstationSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What a substation's readings hold (:meth:`Storage.substation_summaries`)."""

    substation: str
    devices: int  # distinct device_id
    points: int  # distinct (device_id, metric)
    readings: int
    first_reading: datetime
    last_reading: datetime


class IncidentError(ValueError):
    """An incident that does not exist, or a status change the lifecycle does not allow."""


def shard_of(substation: str, count: int) -> int:
    """The shard (0 to ``count`` - 1) a substation belongs to (``sentinel hub agents --shard I/N``):
    the first 32 bits of the MD5 of its id in UTF-8, mod ``count``. Stable on every machine and
    Python version (not Python's salted ``hash()``), and computed the same by the databases
    (:data:`SHARD_SQL_POSTGRES`, SQLite's ``sentinel_shard_of``), so a shard's reads are filtered
    where the rows are."""
    return int.from_bytes(hashlib.md5(substation.encode("utf-8"), usedforsecurity=False).digest()[:4], "big") % count


# ``shard_of(substation, %s) = %s`` in PostgreSQL's words (``bit(32)::bigint`` is unsigned)
SHARD_SQL_POSTGRES = "mod(('x' || left(md5(substation), 8))::bit(32)::bigint, %s) = %s"
# the same on SQLite, with the function SQLiteStorage registers
SHARD_SQL_SQLITE = "sentinel_shard_of(substation, ?) = ?"
ShardSpec = tuple[int, int]
"""(index, count): the substations with ``shard_of(substation, count) == index``."""


class EdgeState(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: str
    substation: str
    readings_acked_through: int
    events_acked_through: int
    gaps: int
    last_sync: datetime | None
    ot_logs_acked_through: int = 0
    live_lo: int = 0  # the live range held past the readings mark (0, 0: none; "Live first" in protocols.wire)
    live_hi: int = 0


IncidentMaker = Callable[[Sequence[Event]], list[NewIncident]]

INCIDENT_STATUSES = ("OPEN", "ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED")
# OPEN -> ACKNOWLEDGED -> IN_PROGRESS -> RESOLVED; a step may be skipped forward (an operator may
# resolve a false alarm straight away), never taken back. A RESOLVED incident stays resolved: the
# condition coming back opens a new incident.
SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}  # INFO 0 .. EMERGENCY 3


def check_transition(incident_id: str, current: str, new: str) -> None:
    """Raise :class:`IncidentError` unless ``current -> new`` moves forward in the lifecycle."""
    if new not in INCIDENT_STATUSES:
        raise IncidentError(f"unknown status {new!r}; expected one of {', '.join(INCIDENT_STATUSES)}")
    if INCIDENT_STATUSES.index(new) <= INCIDENT_STATUSES.index(current):
        raise IncidentError(f"{incident_id} is {current}; it can move only forward "
                            f"({' -> '.join(INCIDENT_STATUSES)}), not to {new}")


def parse_incident_id(incident_id: str) -> int:
    """``INC-2026-000042`` -> 42; anything else is an :class:`IncidentError` naming it."""
    parts = incident_id.split("-")
    if (len(parts) != 3 or parts[0] != "INC" or not parts[1].isdigit() or not parts[2].isdigit()
            or len(parts[1]) != 4 or len(parts[2]) > 15):  # a number no table holds is no incident
        raise IncidentError(f"not an incident id: {incident_id!r} (expected INC-<year>-<number>)")
    return int(parts[2])


def merge_incident(old_severity: str, new: NewIncident) -> str:
    """The severity of an ongoing condition after a new finding: never lowered while it is open."""
    return max(old_severity, new.severity, key=lambda s: SEVERITY_ORDER.get(s, 0))


def incident_id(year: int, number: int) -> str:
    return f"INC-{year}-{number:06d}"


# -- rows <-> our types, and the incident upsert: written once for both backends -------------------
# Each backend stores time its own way (SQLite: seconds since the epoch as REAL; PostgreSQL:
# timestamptz, which comes back as an aware datetime): a backend passes its converters, nothing else
# differs.

READING_COLUMNS = "ts, substation, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type"
"""The columns :func:`readings_from_rows` reads, in its order (a query may select more after them)."""

WINDOW_COLUMNS = ("length(substation) || ':' || substation || length(device_id) || ':' || device_id || metric,"
                  " value, unit, flags, anomaly_score, anomaly_type")
"""What :meth:`Storage.iter_window_rows` selects after the epoch seconds: the series as one key
(the lengths make it unambiguous whatever the names hold), and the reading's fields."""
WINDOW_FIRST_US = 5 * 10**6  # an agents' window is read from a first slice of 5 s (thousands of points at 1 Hz)


def series_of_key(key: str) -> tuple[str, str, str]:
    """(substation, device_id, metric) from a :data:`WINDOW_COLUMNS` series key."""
    i = key.index(":")
    n = int(key[:i])
    substation, rest = key[i + 1:i + 1 + n], key[i + 1 + n:]
    j = rest.index(":")
    m = int(rest[:j])
    return substation, rest[j + 1:j + 1 + m], rest[j + 1 + m:]


def _same(value: Any) -> Any:
    return value


def readings_from_rows(rows: Sequence[Sequence[Any]], ts: Callable[[Any], datetime] = _same) -> list[Reading]:
    """Rows of :data:`READING_COLUMNS` as Readings; ``ts`` makes the stored time an aware datetime.
    One str per name in the rows given, not one per row (a chunk of an export holds few names)."""
    text: Callable[[str, str], str] = {}.setdefault
    return [Reading(ts=ts(r[0]), substation=text(r[1], r[1]), device_id=text(r[2], r[2]), metric=text(r[3], r[3]),
                    value=r[4], unit=text(r[5], r[5]), quality=r[6], flags=r[7], anomaly_score=r[8],
                    anomaly_type=r[9]) for r in rows]


def reading_rows(readings: Sequence[Reading], source: str, first_seq: int | None,
                 ts: Callable[[datetime], Any] = _same) -> list[tuple]:
    """Readings as rows of the readings table: :data:`READING_COLUMNS`' values in the table's order
    (ts .. flags, source, seq, anomaly_score, anomaly_type); ``seq`` counts from ``first_seq`` (an
    edge's batch) or is NULL; ``ts`` makes the datetime what the backend stores."""
    return [(ts(r.ts), r.substation, r.device_id, r.metric, r.value, r.unit, r.quality, r.flags, source,
             None if first_seq is None else first_seq + i, r.anomaly_score, r.anomaly_type)
            for i, r in enumerate(readings)]


INCIDENT_COLUMNS = ("number, ts, type, device_id, severity, description, status, agent, substation, metric, value,"
                    " condition_key, recommendation, confidence, occurrences, last_seen, updated_at, facts, narrative")
"""The columns :func:`incident_from_row` reads, in its order (PostgreSQL selects ``facts::text``)."""


def incident_from_row(r: Sequence[Any], ts: Callable[[Any], datetime] = _same) -> Incident:
    """A row of :data:`INCIDENT_COLUMNS` as an Incident (first_seen = ts; last_seen defaults to ts)."""
    at = ts(r[1])
    return Incident(id=incident_id(at.year, r[0]), timestamp=at, type=r[2], device_id=r[3], severity=r[4],
                    description=r[5], status=r[6], agent=r[7], substation=r[8], metric=r[9], value=r[10],
                    condition_key=r[11], recommendation=r[12], confidence=r[13], occurrences=r[14], first_seen=at,
                    last_seen=ts(r[15]) if r[15] is not None else at, updated_at=ts(r[16]),
                    facts=msgspec.json.decode(r[17]) if r[17] else {}, narrative=r[18])


class IncidentDialect(NamedTuple):
    """What the incident upsert's SQL differs in between the backends."""

    ts: Callable[[datetime], Any]  # a datetime as the backend stores it
    greatest: str                  # the two-argument maximum: ``max`` (SQLite), ``greatest`` (PostgreSQL)
    json: str                      # a JSON parameter's placeholder: ``?``, or ``?::json``


def upsert_incidents(tx: SqlTx, incidents: Sequence[NewIncident], dialect: IncidentDialect) -> list[int]:
    """One incident per ongoing condition: a finding whose condition has an incident that is not
    RESOLVED updates it (newest description, value and facts; severity never lowered; one more
    occurrence); otherwise it opens a new one, with its first history entry. Returns the incidents'
    numbers, in order. Runs in the caller's transaction; both backends hold a unique index on the
    open condition (``incidents_open_key``), so a second open incident for it cannot exist."""
    now = dialect.ts(datetime.now(UTC))
    update = (f"UPDATE incidents SET severity = ?, description = ?, value = ?, recommendation = ?, confidence = ?,"
              f" facts = {dialect.json}, occurrences = occurrences + 1,"
              f" last_seen = {dialect.greatest}(coalesce(last_seen, ts), ?), updated_at = ? WHERE number = ?")
    insert = ("INSERT INTO incidents (ts, type, device_id, severity, description, status, agent, substation, metric,"
              " value, created_at, updated_at, condition_key, recommendation, confidence, occurrences, last_seen,"
              f" facts) VALUES (?,?,?,?,?,'OPEN',?,?,?,?,?,?,?,?,?,1,?,{dialect.json}) RETURNING number")
    numbers = []
    for inc in incidents:
        key = inc.key()
        ts = dialect.ts(inc.timestamp)
        facts = msgspec.json.encode(inc.facts).decode()
        row = tx.execute("SELECT number, severity FROM incidents WHERE condition_key = ? AND condition_key <> ''"
                         " AND status <> 'RESOLVED' ORDER BY number DESC LIMIT 1", (key,)).fetchone()
        if row is not None:
            tx.execute(update, (merge_incident(row[1], inc), inc.description, inc.value, inc.recommendation,
                                inc.confidence, facts, ts, now, row[0]))
            numbers.append(row[0])
            continue
        (number,) = tx.execute(insert, (ts, inc.type, inc.device_id, inc.severity, inc.description, inc.agent,
                                        inc.substation, inc.metric, inc.value, now, now, key, inc.recommendation,
                                        inc.confidence, ts, facts)).fetchone()
        tx.execute("INSERT INTO incident_history (number, ts, status, actor, note) VALUES (?,?,?,?,?)",
                   (number, now, "OPEN", inc.agent, "raised"))
        numbers.append(number)
    return numbers


class Storage(Protocol):
    backend: str  # "sqlite" | "postgresql" | "timescaledb"

    def close(self) -> None: ...

    def schema_version(self) -> int | None:
        """The highest schema migration applied (``hub.storage.migrations``)."""
        ...

    def edge_health(self) -> dict[str, tuple[datetime, EdgeHealth]]:
        """Each edge's latest health report (sent with its syncs) and when it came."""
        ...

    def leader_lock(self, name: str) -> Any:
        """A lock one hub replica holds at a time: ``acquire() -> bool`` (take it, or confirm it is still
        held), ``release()``, ``held`` (``hub.storage.leader``)."""
        ...

    def migration_status(self) -> MigrationStatus:
        """The schema's version, the migrations applied (when) and pending."""
        ...

    def apply_sync(self, batch: SyncBatch, make_incidents: IncidentMaker) -> SyncAck:
        """Store what is new in ``batch`` and its incidents, atomically; answer with the ack. Raises
        :class:`SequenceError`, storing nothing, for a batch that does not continue the edge's
        sequence (:func:`plan_sync`)."""
        ...

    def insert_readings(self, readings: Sequence[Reading], source: str) -> int:
        """Store readings that came without a sequence (HTTP, MQTT), de-duplicated as
        :meth:`insert_new_readings` does; returns how many were new."""
        ...

    def insert_new_readings(self, readings: Sequence[Reading], source: str) -> list[int]:
        """Store the readings whose (device_id, metric, ts) is held neither in storage nor earlier in
        ``readings`` (within their substation: two substations may each have a ``TR-01``); returns
        their indices in ``readings``, ascending. A resent HTTP request or MQTT message therefore
        stores nothing twice (whatever its source or value: the first one held wins)."""
        ...

    def add_incidents(self, incidents: Sequence[NewIncident]) -> list[Incident]: ...

    def list_incidents(
        self, status: str | None = None, severity: str | None = None, limit: int = 100
    ) -> list[Incident]:
        """Newest first."""
        ...

    def reading_counts(self) -> dict[str, int]:
        """Readings stored per substation."""
        ...

    def incident_counts(self) -> dict[tuple[str, str], int]:
        """Incidents per (type, severity)."""
        ...

    def edge_states(self) -> list[EdgeState]: ...

    def latest_reading_times(self, start: datetime, end: datetime) -> list[tuple[str, str, datetime]]:
        """(substation, device_id, newest ts) of each device's readings with start <= ts < end that
        measured something (not flagged INVALID or COMM_LOST): when the hub last heard from each
        device (hub.fleet.liveness). SQLite reads it on the ts index (keep the range short);
        PostgreSQL from ``device_newest`` (hub.storage.newest): a device's newest reading that is in
        the range (at most 5 s late when another process stored it)."""
        ...

    def query_readings(
        self, device_id: str, metric: str, start: datetime | None = None, end: datetime | None = None,
        limit: int = 10_000,
    ) -> list[Reading]:
        """Oldest first."""
        ...

    def add_dead_letters(self, items: Sequence[DeadLetter]) -> int:
        """Keep messages that could not be used (malformed MQTT payloads), with the reason; returns how many."""
        ...

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """Newest first (in the order they were added)."""
        ...

    def dead_letter_count(self) -> int: ...

    # -- incidents' lifecycle, agents' products ----------------------------------------------

    def get_incident(self, incident_id: str) -> Incident:
        """One incident with its facts and status history; :class:`IncidentError` if there is none."""
        ...

    def set_incident_status(self, incident_id: str, status: str, actor: str, note: str = "") -> Incident:
        """Move an incident forward in its lifecycle, recording who and when."""
        ...

    def set_incident_narrative(self, incident_id: str, narrative: str) -> None: ...

    def list_events(self, state: str | None = None, limit: int = 10_000) -> list[Event]:
        """Edge events as stored (raised, escalated, cleared), oldest first."""
        ...

    def readings_between(self, start: datetime, end: datetime, limit: int = 2_000_000) -> list[Reading]:
        """Every reading with start <= ts < end, oldest first (the agents' window)."""
        ...

    def iter_readings(
        self, start: datetime, end: datetime, *, substations: Sequence[str] | None = None,
        devices: Sequence[str] | None = None, metrics: Sequence[str] | None = None, chunk_rows: int = 50_000,
    ) -> Iterator[list[Reading]]:
        """Every reading with start <= ts < end of the substations, devices and metrics given (None or
        empty: all), in chunks of at most ``chunk_rows``, ordered by ts, then substation, device_id and
        metric (byte order, on both backends). Read in short queries over :class:`TimeWindows`, so
        memory holds about a chunk whatever the range, and no lock is held while the caller works
        on a chunk. Rows with the same (ts, substation, device_id, metric) (two edges sending the same
        point) come in no particular order. ``start`` and ``end`` must carry a time zone.

        Holds a database connection until exhausted or closed: close it when stopping early."""
        ...

    def iter_window_rows(self, start: datetime, end: datetime, chunk_rows: int = 200_000, *,
                         substations: Sequence[str] | None = None) -> Iterator[list[tuple]]:
        """Every reading with start <= ts < end as rows of :data:`WINDOW_COLUMNS` (ts in epoch
        seconds; the series as one key, :func:`series_of_key`), in chunks of about ``chunk_rows`` in
        no particular order, read in short queries over :class:`TimeWindows` (no lock held between
        chunks). For readers that shape whole windows into arrays (the agents) without a Reading or
        a tuple of names per row. Holds a database connection until exhausted or closed.
        ``substations``: only theirs (None: every substation's; an agents' shard, hub/insights/shards.py)."""
        ...

    def devices_between(self, start: datetime, end: datetime) -> list[tuple[str, str]]:
        """Every (substation, device_id) with a reading in start <= ts < end, whatever its flags;
        in no particular order (computed by the database: what an agents' shard splits)."""
        ...

    def iter_buckets(
        self, start: datetime, end: datetime, bucket_s: int, *, substations: Sequence[str] | None = None,
        devices: Sequence[str] | None = None, metrics: Sequence[str] | None = None, chunk_rows: int = 50_000,
    ) -> Iterator[list[ReadingBucket]]:
        """Per (substation, device_id, metric) and bucket of ``bucket_s`` seconds (aligned on the
        epoch, so one-day buckets are UTC days): min, max, avg, last and count of the readings with
        start <= ts < end that have a value and are not flagged INVALID, computed by the database.
        Filters, chunks, connection and memory as :meth:`iter_readings`; ordered by bucket start, then
        substation, device_id and metric. A bucket with no such reading is absent."""
        ...

    def refresh_rollups(self, *, device_id: str | None = None, metric: str | None = None,
                        substation: str | None = None, start: datetime | None = None, end: datetime | None = None,
                        limit: int | None = None) -> int:
        """Fold the hours ingest marked (those of this series and range; at most ``limit``) into the
        rollups, recomputed from their readings; how many (series, hour) marks were folded."""
        ...

    def series_buckets(self, start: datetime, end: datetime, bucket_s: int, device_id: str, metric: str,
                       substation: str | None = None) -> list[ReadingBucket]:
        """One point's buckets, as :meth:`iter_buckets` gives them (ordered by bucket, then substation),
        from the rollups where the range holds whole buckets of a rolled-up width (1 min, 1 h, 1 d)."""
        ...

    def hourly_means(self, metrics: Sequence[str], start: datetime, end: datetime, *,
                     shard: ShardSpec | None = None) -> list[HourlyMean]:
        """Mean value per (substation, device, metric) and UTC hour, for the given metrics, over
        start <= ts < end; readings without a value, or flagged INVALID, are left out. Ordered by series, then hour.
        ``shard``: of the substations of that shard only (:func:`shard_of`), filtered in the query."""
        ...

    def put_documents(self, docs: Sequence[Document]) -> None:
        """Store agent products; the newest per (kind, key) is what ``latest_documents`` serves."""
        ...

    def latest_documents(self, kind: str) -> list[Document]:
        """The newest document of each key of ``kind``, by key."""
        ...

    def add_ot_logs(self, events: Sequence[OtLogEvent], source: str) -> int:
        """Keep OT log entries (authentication, commands, configuration changes); returns how many."""
        ...

    def ot_logs_between(self, start: datetime, end: datetime, limit: int = 1_000_000) -> list[OtLogEvent]:
        """Oldest first."""
        ...

    def transaction(self) -> AbstractContextManager[SqlTx]:
        """A transaction for small tables kept by other hub modules (credentials, audit)."""
        ...

    def data_time_range(self) -> tuple[datetime, datetime] | None:
        """The oldest and newest timestamps of the readings and OT log entries held (None: none held)."""
        ...

    # -- the readings API (hub/readings) ------------------------------------------------------

    def series_extent(self, device_id: str, metric: str, substation: str | None = None) -> SeriesExtent | None:
        """The oldest and newest readings held of ``device_id``'s ``metric`` (in ``substation``, or in
        any), found through the (device_id, metric, ts) index; None if none is held."""
        ...

    def latest_readings(self, substations: Sequence[str] | None = None) -> list[Reading]:
        """The newest reading of every (substation, device_id, metric) of the substations given (None
        or empty: all), as stored (its value may be None; its flags say why). Of readings with the
        same newest timestamp: the one with a value, the largest, then the best quality. Ordered by
        substation, device_id and metric (byte order, on both backends)."""
        ...

    def substation_summaries(self) -> list[SubstationSummary]:
        """Per substation with readings: devices, points, readings, first and last reading time; by
        substation (byte order). Reads every reading: for an overview, not a hot path."""
        ...

    def open_incident_counts(self) -> dict[tuple[str, str], int]:
        """Incidents not RESOLVED (OPEN, ACKNOWLEDGED, IN_PROGRESS) per (substation, severity)."""
        ...


class SequenceError(ValueError):
    """A batch whose run does not continue the edge's sequence: it starts past the hub's mark + 1
    without declaring the gap, or declares one (``after``) that does not start at the mark; or a
    readings run that reaches into the live range, a live run that does not continue it (``message``
    says which). Nothing of the batch is stored. Carries the stream, what was asked and the hub's
    marks and live range for the edge (in the batch's sequence space), for the 409 answer
    (:meth:`conflict`)."""

    def __init__(self, edge_id: str, stream: str, first_seq: int, after: int | None,
                 readings_acked_through: int, events_acked_through: int, ot_logs_acked_through: int,
                 live_lo: int = 0, live_hi: int = 0, message: str = "") -> None:
        self.edge_id, self.stream, self.first_seq, self.after = edge_id, stream, first_seq, after
        self.readings_acked_through = readings_acked_through
        self.events_acked_through = events_acked_through
        self.ot_logs_acked_through = ot_logs_acked_through
        self.live_lo, self.live_hi = live_lo, live_hi
        if not message:
            hwm = self.marks()[stream]
            held = f"the hub holds {stream} through {hwm} for edge {edge_id}"
            if after is None:
                message = f"{stream}.first_seq is {first_seq}, but {held}; expected at most {hwm + 1}"
            else:
                message = (f"{stream}.after is {after} (a gap declared before first_seq {first_seq}), but {held}; "
                           f"a gap may be declared only after {hwm}")
        super().__init__(message)

    def marks(self) -> dict[str, int]:
        return {"readings": self.readings_acked_through, "events": self.events_acked_through,
                "ot_logs": self.ot_logs_acked_through}

    def conflict(self) -> SyncConflict:
        """The body of the 409 answer."""
        return SyncConflict(detail=str(self), stream=self.stream, readings_acked_through=self.readings_acked_through,
                            events_acked_through=self.events_acked_through,
                            ot_logs_acked_through=self.ot_logs_acked_through, live_lo=self.live_lo,
                            live_hi=self.live_hi)


def first_of_each_key(readings: Sequence[Reading]) -> list[int]:
    """Indices of the first reading of each (substation, device_id, metric, ts) in ``readings``, ascending."""
    seen: dict[tuple[str, str, str, datetime], int] = {}
    for i, r in enumerate(readings):
        seen.setdefault((r.substation, r.device_id, r.metric, r.ts), i)
    return list(seen.values()) if len(seen) < len(readings) else list(range(len(readings)))


class SyncPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What to store of a batch, given the edge's high-water marks: the sync contract's arithmetic."""

    readings: list[Reading]  # the new ones, numbered from readings_first
    readings_first: int
    events: list[Event]
    events_first: int
    readings_acked_through: int
    events_acked_through: int
    duplicates: int
    gaps: int
    ot_logs: list[OtLogEvent] = msgspec.field(default_factory=list)  # the new ones, from ot_logs_first
    ot_logs_first: int = 0
    ot_logs_acked_through: int = 0
    buffer_id: str | None = None  # the edge's buffer to hold from now on (None: none known)
    new_buffer: bool = False  # the batch's buffer differs from the one held: the marks began again at 0
    live: list[Reading] = msgspec.field(default_factory=list)  # the live run's new ones, from live_first
    live_first: int = 0
    live_lo: int = 0  # the live range held past the readings mark from now on (0, 0: none)
    live_hi: int = 0

    def ack(self, edge_id: str) -> SyncAck:
        unset = msgspec.UNSET
        return SyncAck(
            edge_id=edge_id, readings_acked_through=self.readings_acked_through,
            events_acked_through=self.events_acked_through, readings_stored=len(self.readings) + len(self.live),
            events_stored=len(self.events), duplicates=self.duplicates, gaps=self.gaps,
            ot_logs_acked_through=self.ot_logs_acked_through, ot_logs_stored=len(self.ot_logs),
            new_buffer=True if self.new_buffer else unset,
            live_lo=self.live_lo or unset, live_hi=self.live_hi if self.live_lo else unset,
        )


def plan_sync(batch: SyncBatch, readings_hwm: int, events_hwm: int, ot_logs_hwm: int = 0,
              buffer_id: str | None = None, live: tuple[int, int] = (0, 0)) -> SyncPlan:
    """Items at or below a mark are duplicates; the rest are new. A run starting past mark + 1 is a
    gap: taken only when the run declares it from the mark (``after == mark``), else the whole batch
    is refused with :class:`SequenceError`. The same arithmetic for each of the three runs
    (readings, events, OT log entries), and for the live run against the live range.

    ``live`` is the live range held past the readings mark (``(lo, hi)``; ``(0, 0)``: none; see
    "Live first" in :mod:`protocols.wire`). The readings run must end below it; when the mark
    reaches ``lo - 1`` it jumps to ``hi`` and the range is empty again. A readings run with no items
    but ``after`` declares the numbers after the mark up to its ``first_seq - 1`` lost. A live run
    continues the range (or starts it, past mark + 1), or, starting at or below mark + 1, the stream.

    ``buffer_id`` is the edge's buffer the hub holds (None: none yet). A batch naming another
    buffer starts a new sequence space: its marks are 0, and the plan says ``new_buffer``. A batch
    naming none (an edge from before buffer ids) is planned on the marks held."""
    new_buffer = batch.buffer_id is not None and bool(buffer_id) and batch.buffer_id != buffer_id
    if new_buffer:
        readings_hwm = events_hwm = ot_logs_hwm = 0
        live = (0, 0)
    lo, hi = live
    marks = (readings_hwm, events_hwm, ot_logs_hwm)
    edge = batch.edge_id

    def refused(stream: str, run: Any, message: str = "") -> SequenceError:  # with the marks and range held
        return SequenceError(edge, stream, run.first_seq, run.after, *marks, live_lo=live[0], live_hi=live[1],
                             message=message)

    dup = gaps = 0
    out: list[tuple[list, int, int]] = []
    for name, run, hwm in (("readings", batch.readings, readings_hwm), ("events", batch.events, events_hwm),
                           ("ot_logs", batch.ot_logs, ot_logs_hwm)):
        closing = name == "readings" and run is not None and not run.items and run.after is not None
        if run is None or not (run.items or closing):
            out.append(([], 0, hwm))
            continue
        if name == "readings" and lo and (run.last_seq if run.items else run.first_seq - 1) >= lo:
            raise refused(name, run, f"readings run {run.first_seq}..{run.last_seq} reaches into the live range "
                                     f"{lo}..{hi} the hub holds for edge {edge}: it must end below {lo}")
        if run.first_seq > hwm + 1 and run.after != hwm:
            raise refused(name, run)
        skip = max(0, min(len(run.items), hwm - run.first_seq + 1))
        dup += skip
        new = list(run.items[skip:])
        if new:
            gaps += max(0, run.first_seq - hwm - 1)
            hwm = run.last_seq
        elif closing and run.first_seq > hwm + 1:  # the backlog's last numbers were dropped at the edge
            gaps += run.first_seq - hwm - 1
            hwm = run.first_seq - 1
        if name == "readings" and lo and hwm == lo - 1:  # the backlog reached the live range: one stream again
            hwm, lo, hi = hi, 0, 0
        out.append((new, run.first_seq + skip, hwm))
    (readings, r_first, r_hwm), (events, e_first, e_hwm), (ot_logs, o_first, o_hwm) = out
    live_new: list[Reading] = []
    live_first = 0
    run = batch.live
    if run is not None and run.items:
        if not lo and (run.first_seq <= r_hwm + 1 or run.after is not None):  # it continues the stream
            if run.first_seq > r_hwm + 1 and run.after != r_hwm:
                raise refused("live", run, f"live.after is {run.after}, but the hub holds readings through {r_hwm} "
                                           f"and no live range for edge {edge}; a gap may be declared only after "
                                           f"{r_hwm}")
            skip = max(0, min(len(run.items), r_hwm - run.first_seq + 1))
            live_new = list(run.items[skip:])
            if live_new:
                gaps += max(0, run.first_seq - r_hwm - 1)
                r_hwm = run.last_seq
        elif not lo:  # a new live range, past the backlog
            lo, hi, skip, live_new = run.first_seq, run.last_seq, 0, list(run.items)
        else:
            if run.first_seq < lo:
                raise refused("live", run, f"live.first_seq is {run.first_seq}, below the live range {lo}..{hi} "
                                           f"the hub holds for edge {edge}; a live run continues it from {hi + 1}")
            if run.first_seq > hi + 1 and run.after != hi:
                raise refused("live", run, f"live.first_seq is {run.first_seq}, but the hub holds the live range "
                                           f"{lo}..{hi} for edge {edge}; expected at most {hi + 1}, or after = {hi} "
                                           "to declare a gap")
            skip = max(0, min(len(run.items), hi - run.first_seq + 1))
            live_new = list(run.items[skip:])
            if live_new:
                gaps += max(0, run.first_seq - hi - 1)
                hi = run.last_seq
        dup += skip
        live_first = run.first_seq + skip
    return SyncPlan(readings=readings, readings_first=r_first, events=events, events_first=e_first,
                    readings_acked_through=r_hwm, events_acked_through=e_hwm, duplicates=dup, gaps=gaps,
                    ot_logs=ot_logs, ot_logs_first=o_first, ot_logs_acked_through=o_hwm,
                    buffer_id=batch.buffer_id or buffer_id or None, new_buffer=new_buffer,
                    live=live_new, live_first=live_first, live_lo=lo, live_hi=hi)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def epoch_us(t: datetime) -> int:
    """``t`` (with a time zone) as whole microseconds since the epoch: exact, as ``timestamp()`` is not."""
    if t.tzinfo is None:
        raise ValueError(f"{t.isoformat()} has no time zone")
    return (t - EPOCH) // _US


def from_epoch_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


# -- rollups -------------------------------------------------------------------------------------
# The hub keeps min/max/sum/count/last of valid readings (a value, not flagged INVALID) per series and
# 1-minute, 1-hour and 1-day bucket (aligned on the epoch: UTC), in table ``rollups`` (schema
# migration 2). Ingest only marks the (series, hour) pairs it touched (``rollup_dirty``, in the same
# transaction); ``refresh_rollups`` recomputes the marked hours from their readings, and their days
# from the hours: the hub's refresher in the background, and every bucketed question for its own
# range first, so answers are exact. Questions of those widths read the rollups over the whole
# buckets of their range and the raw readings only at its two ragged ends (docs/rollups.md). On
# TimescaleDB the rollups are continuous aggregates instead (schema migration 4: nothing marked, the
# range refreshed before it is read); the questions themselves are shared (hub.storage.rollups).

ROLLUP_WIDTHS = (60, 3_600, 86_400)
# A question folds its range's marks this many hours a transaction: the hours it holds keep an ingest
# marking the same hour waiting (on SQLite, every storage call), so a backlog of a year must not be one
# transaction (an agent's hourly means over every series of a metric held edge syncs for over 10 s).
QUESTION_CHUNK_HOURS = 32


def rollup_span(start: datetime, end: datetime, width: int) -> tuple[datetime, datetime] | None:
    """The part of [start, end) made of whole ``width``-second buckets aligned on the epoch (None: no
    whole bucket fits)."""
    w = width * 10**6
    lo, hi = -(-epoch_us(start) // w) * w, epoch_us(end) // w * w
    return (from_epoch_us(lo), from_epoch_us(hi)) if lo < hi else None


def check_chunking(chunk_rows: int, bucket_s: int | None = None) -> None:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    if bucket_s is not None and (int(bucket_s) != bucket_s or bucket_s < 1):
        raise ValueError(f"bucket_s must be a whole number of seconds, at least 1, not {bucket_s}")


class TimeWindows:
    """Consecutive windows ``[lo, hi)`` in microseconds since the epoch, covering ``[start, end)``, each
    sized to hold about ``target`` rows: how the storages read a long range in short queries
    (:meth:`Storage.iter_readings`, :meth:`Storage.iter_buckets`) whatever the data's density.

    Bounds are whole multiples of ``align_us`` (a bucket's length) except at ``start`` and ``end``,
    so no bucket is split between two windows. The first window spans ``first_us``; after each,
    :meth:`done` is told how many rows it held and scales the next by ``target / rows`` (at most x4
    or /4 at a time). After an empty window, ``next_us(hi)`` (the first timestamp held at or after
    ``hi``, None if none: for a backend with a cheap way to ask) skips the gap; without it the next
    window grows x4, but not past a day by empty windows alone: after a long gap, the window must not
    hold months of dense data.

        windows = TimeWindows(lo, hi, 50_000)
        for lo, hi in windows:
            rows = ...  # read [lo, hi)
            windows.done(len(rows))
    """

    EMPTY_GROWTH_CAP_US = 86_400 * 10**6

    def __init__(self, start_us: int, end_us: int, target: int, *, align_us: int = 1, first_us: int = 60 * 10**6,
                 next_us: Callable[[int], int | None] | None = None) -> None:
        self.lo, self.end, self.target, self.align = start_us, end_us, max(1, target), max(1, align_us)
        self.span = _round_up(max(first_us, self.align), self.align)
        self._max_span = max(self.span, _round_up(end_us - start_us, self.align))
        self._next_us = next_us
        self._hi: int | None = None

    def __iter__(self) -> Iterator[tuple[int, int]]:
        while self.lo < self.end:
            lo = self.lo
            self._hi = hi = min(self.end, lo - lo % self.align + self.span)
            yield lo, hi
            if self._hi is not None:
                raise RuntimeError("TimeWindows: done() was not called for the window")

    def done(self, rows: int) -> None:
        """The window just read held ``rows`` rows (readings, or buckets)."""
        hi, self._hi = self._hi, None
        if hi is None:
            raise RuntimeError("TimeWindows.done() called twice, or outside a window")
        self.lo = hi
        if rows:
            span = int(self.span * min(4.0, max(0.25, self.target / rows)))
        elif self._next_us is not None:
            nxt = self._next_us(hi) if hi < self.end else None
            self.lo = self.end if nxt is None else max(hi, nxt)
            span = self.span
        else:
            span = max(self.span, min(self.span * 4, self.EMPTY_GROWTH_CAP_US))
        self.span = min(self._max_span, max(self.align, _round_up(span, self.align)))


def _round_up(x: int, step: int) -> int:
    return -(-x // step) * step


class SqlTx:
    """One transaction on either backend, for code that owns a few small tables of its own (the
    hub's credentials and audit log): ``execute(sql, params)`` with ``?`` placeholders, translated
    for PostgreSQL. Got from ``Storage.transaction()``; commits when the block ends, rolls back on
    an exception."""

    def __init__(self, cursor: Any, backend: str) -> None:
        self._cur = cursor
        self.backend = backend
        self._pg = backend != "sqlite"

    def execute(self, query: str, params: Sequence[Any] = ()) -> SqlTx:
        self._cur.execute(query.replace("?", "%s") if self._pg else query, tuple(params))
        return self

    def fetchone(self) -> tuple | None:
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount

    def lock(self, key: int) -> None:
        """Serialise this transaction with others taking the same key (SQLite's write transaction
        already is: BEGIN IMMEDIATE)."""
        if self._pg:
            self._cur.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
