"""Storing telemetry readings with their grid-code check: shared by POST /sensors/process and MQTT ingest."""

from __future__ import annotations

from collections.abc import Sequence

from agents import grid_monitor
from agents.findings import Finding
from hub.storage import Incident, NewIncident, Storage
from protocols.config import Limits
from protocols.reading import Reading


def incident_from_finding(f: Finding) -> NewIncident:
    """A finding of any agent as an incident to record (one per ongoing condition: its key)."""
    return NewIncident(timestamp=f.timestamp, type=f.type, device_id=f.device_id, severity=f.severity,
                       description=f.description, agent=f.agent, substation=f.substation, metric=f.metric,
                       value=f.value, condition_key=f.condition_key(), recommendation=f.recommendation,
                       confidence=f.confidence, facts=f.facts)


def store_telemetry(storage: Storage, readings: Sequence[Reading], nominals: Sequence[float | None],
                    limits: Limits, source: str) -> tuple[int, list[Incident]]:
    """Store telemetry readings, check them against the grid code, store the incidents found.

    Returns (readings stored, incidents). Blocking (storage is synchronous): call it in a thread.
    """
    if not readings:
        return 0, []
    findings = grid_monitor.check_readings(readings, nominals, limits)
    stored = storage.insert_readings(readings, source=source)
    incidents = storage.add_incidents([incident_from_finding(f) for f in findings]) if findings else []
    return stored, incidents
