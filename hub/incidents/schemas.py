"""What the incident routes take and answer (:mod:`hub.incidents.routes`). An incident itself is the
shared shape, :class:`protocols.incident.Incident`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from protocols.incident import Incident

__all__ = ["EdgeSyncState", "IncidentList", "Stats", "Status", "StatusChangeRequest"]

Status = Literal["OPEN", "ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED"]


class IncidentList(msgspec.Struct, frozen=True):
    incidents: list[Incident]


class StatusChangeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Literal["ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED"]
    note: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    # accepted from older clients and ignored: the history records the authenticated caller
    actor: Annotated[str, msgspec.Meta(max_length=128)] = ""


class EdgeSyncState(msgspec.Struct, frozen=True, kw_only=True):
    """How far the hub has taken an edge's streams: its high-water marks, gaps, last sync."""

    edge_id: str
    substation: str
    readings_acked_through: int
    events_acked_through: int
    gaps: int
    last_sync: datetime | None
    ot_logs_acked_through: int = 0


class Stats(msgspec.Struct, frozen=True):
    readings_by_substation: dict[str, int]
    incidents: list[dict[str, Any]]
    edges: list[EdgeSyncState]
