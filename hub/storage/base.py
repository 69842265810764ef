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
