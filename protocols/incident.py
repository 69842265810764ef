"""An incident as the hub records and serves it: the shape of ``GET /incidents/{id}``, shared by
the hub (which stores incidents) and the writers that report on them (``export/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

__all__ = ["Incident", "StatusChange"]


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
