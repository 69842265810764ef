"""Findings into incidents, and the counts ``GET /stats`` serves."""

from __future__ import annotations

from typing import Any

from agents.findings import Finding
from hub.incidents.schemas import EdgeSyncState, Stats
from hub.storage.base import NewIncident, Storage

__all__ = ["incident_from_finding", "stats"]


def incident_from_finding(f: Finding) -> NewIncident:
    """A finding of any agent as an incident to record (one per ongoing condition: its key)."""
    return NewIncident(timestamp=f.timestamp, type=f.type, device_id=f.device_id, severity=f.severity,
                       description=f.description, agent=f.agent, substation=f.substation, metric=f.metric,
                       value=f.value, condition_key=f.condition_key(), recommendation=f.recommendation,
                       confidence=f.confidence, facts=f.facts)


def stats(storage: Storage) -> Stats:
    """Readings per substation, incidents per type and severity, and each edge's sync state."""
    incidents: list[dict[str, Any]] = [
        {"type": t, "severity": s, "count": n} for (t, s), n in sorted(storage.incident_counts().items())
    ]
    edges = [EdgeSyncState(edge_id=e.edge_id, substation=e.substation, readings_acked_through=e.readings_acked_through,
                           events_acked_through=e.events_acked_through, gaps=e.gaps, last_sync=e.last_sync,
                           ot_logs_acked_through=e.ot_logs_acked_through) for e in storage.edge_states()]
    return Stats(readings_by_substation=storage.reading_counts(), incidents=incidents, edges=edges)
