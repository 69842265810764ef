"""The hub's storage interface. Two implementations: SQLite (embedded default) and PostgreSQL.

Every method is synchronous and safe to call from several threads; the web layer runs them in a
worker thread. ``apply_sync`` is the idempotent heart of edge sync: in one transaction it stores
only the readings and events above the edge's high-water marks, turns the *new* events into
incidents, and moves the marks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import msgspec

from protocols.mqtt.codec import DeadLetter
from protocols.otlog import OtLogEvent
from protocols.reading import Reading
from protocols.wire import Event, SyncAck, SyncBatch


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


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    """One step of an incident's lifecycle: who moved it to which status, when, and why."""

    timestamp: datetime
    status: str
    actor: str
    note: str = ""


class Incident(msgspec.Struct, frozen=True, kw_only=True):
    """An incident as the API serves it (the seed's shape, plus substation, metric and value)."""

    id: str
    timestamp: datetime
    type: str
    device_id: str
    severity: str
    description: str
    status: str
    agent: str
    substation: str = ""
    metric: str = ""
    value: float | None = None
    condition_key: str = ""
    recommendation: str = ""
    confidence: float | None = None
    occurrences: int = 1  # findings folded into this incident
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    updated_at: datetime | None = None
    facts: dict[str, Any] = msgspec.field(default_factory=dict)
    narrative: str = ""  # the LLM's (or the template's) explanation, when one was written
    history: list[StatusChange] = msgspec.field(default_factory=list)  # filled by get_incident


class Document(msgspec.Struct, frozen=True, kw_only=True):
    """A stored agent product: a demand forecast, a maintenance prediction, an agent run's report.
    ``body`` is the product's JSON; ``kind`` and ``key`` (e.g. the device) say what it is of."""

    kind: str  # "forecast" | "maintenance" | "agent_run"
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


class IncidentError(ValueError):
    """An incident that does not exist, or a status change the lifecycle does not allow."""


class EdgeState(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: str
    substation: str
    readings_acked_through: int
    events_acked_through: int
    gaps: int
    last_sync: datetime | None
    ot_logs_acked_through: int = 0


IncidentMaker = Callable[[Sequence[Event]], list[NewIncident]]

INCIDENT_STATUSES = ("OPEN", "ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED")
# OPEN -> ACKNOWLEDGED -> IN_PROGRESS -> RESOLVED; a step may be skipped forward (an operator may
# resolve a false alarm straight away), never taken back. A RESOLVED incident stays resolved: the
# condition coming back opens a new incident.
SEVERITY_ORDER = {"INFO": 0, "WARNING": 1, "CRITICAL": 2, "EMERGENCY": 3}


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
    if len(parts) != 3 or parts[0] != "INC" or not parts[1].isdigit() or not parts[2].isdigit():
        raise IncidentError(f"not an incident id: {incident_id!r} (expected INC-<year>-<number>)")
    return int(parts[2])


def merge_incident(old_severity: str, new: NewIncident) -> str:
    """The severity of an ongoing condition after a new finding: never lowered while it is open."""
    return max(old_severity, new.severity, key=lambda s: SEVERITY_ORDER.get(s, 0))


def incident_id(year: int, number: int) -> str:
    return f"INC-{year}-{number:06d}"


class Storage(Protocol):
    backend: str  # "sqlite" | "postgresql" | "timescaledb"

    def close(self) -> None: ...

    def apply_sync(self, batch: SyncBatch, make_incidents: IncidentMaker) -> SyncAck:
        """Store what is new in ``batch`` and its incidents, atomically; answer with the ack."""
        ...

    def insert_readings(self, readings: Sequence[Reading], source: str) -> int:
        """Store readings that came without a sequence (HTTP, MQTT); returns how many."""
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

    def hourly_means(self, metrics: Sequence[str], start: datetime, end: datetime) -> list[HourlyMean]:
        """Mean value per (substation, device, metric) and UTC hour, for the given metrics, over
        start <= ts < end; readings without a value are left out. Ordered by series, then hour."""
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

    def ack(self, edge_id: str) -> SyncAck:
        return SyncAck(
            edge_id=edge_id, readings_acked_through=self.readings_acked_through,
            events_acked_through=self.events_acked_through, readings_stored=len(self.readings),
            events_stored=len(self.events), duplicates=self.duplicates, gaps=self.gaps,
            ot_logs_acked_through=self.ot_logs_acked_through, ot_logs_stored=len(self.ot_logs),
        )


def plan_sync(batch: SyncBatch, readings_hwm: int, events_hwm: int, ot_logs_hwm: int = 0) -> SyncPlan:
    """Items at or below a mark are duplicates; the rest are new; a jump past mark + 1 is a gap.
    The same arithmetic for each of the three runs (readings, events, OT log entries)."""
    dup = gaps = 0
    out: list[tuple[list, int, int]] = []
    for run, hwm in ((batch.readings, readings_hwm), (batch.events, events_hwm), (batch.ot_logs, ot_logs_hwm)):
        if run is None or not run.items:
            out.append(([], 0, hwm))
            continue
        skip = max(0, min(len(run.items), hwm - run.first_seq + 1))
        dup += skip
        new = list(run.items[skip:])
        if new:
            gaps += max(0, run.first_seq - hwm - 1)
            hwm = run.last_seq
        out.append((new, run.first_seq + skip, hwm))
    (readings, r_first, r_hwm), (events, e_first, e_hwm), (ot_logs, o_first, o_hwm) = out
    return SyncPlan(readings=readings, readings_first=r_first, events=events, events_first=e_first,
                    readings_acked_through=r_hwm, events_acked_through=e_hwm, duplicates=dup, gaps=gaps,
                    ot_logs=ot_logs, ot_logs_first=o_first, ot_logs_acked_through=o_hwm)
