"""The hub's storage interface. Two implementations: SQLite (embedded default) and PostgreSQL.

Every method is synchronous and safe to call from several threads; the web layer runs them in a
worker thread. ``apply_sync`` is the idempotent heart of edge sync: in one transaction it stores
only the readings and events above the edge's high-water marks, turns the *new* events into
incidents, and moves the marks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from protocols.mqtt.codec import DeadLetter
from protocols.reading import Reading
from protocols.wire import Event, SyncAck, SyncBatch


class NewIncident(msgspec.Struct, frozen=True, kw_only=True):
    timestamp: datetime
    type: str
    device_id: str
    severity: str
    description: str
    agent: str
    substation: str = ""
    metric: str = ""
    value: float | None = None


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


class EdgeState(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: str
    substation: str
    readings_acked_through: int
    events_acked_through: int
    gaps: int
    last_sync: datetime | None


IncidentMaker = Callable[[Sequence[Event]], list[NewIncident]]

INCIDENT_STATUSES = ("OPEN", "ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED")


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

    def ack(self, edge_id: str) -> SyncAck:
        return SyncAck(
            edge_id=edge_id, readings_acked_through=self.readings_acked_through,
            events_acked_through=self.events_acked_through, readings_stored=len(self.readings),
            events_stored=len(self.events), duplicates=self.duplicates, gaps=self.gaps,
        )


def plan_sync(batch: SyncBatch, readings_hwm: int, events_hwm: int) -> SyncPlan:
    """Items at or below a mark are duplicates; the rest are new; a jump past mark + 1 is a gap."""
    dup = gaps = 0
    out: list[tuple[list, int, int]] = []
    for run, hwm in ((batch.readings, readings_hwm), (batch.events, events_hwm)):
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
    (readings, r_first, r_hwm), (events, e_first, e_hwm) = out
    return SyncPlan(readings=readings, readings_first=r_first, events=events, events_first=e_first,
                    readings_acked_through=r_hwm, events_acked_through=e_hwm, duplicates=dup, gaps=gaps)
