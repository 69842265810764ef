"""What the ingest routes answer (their bodies are the shared contracts: :class:`protocols.wire.SyncBatch`,
:class:`protocols.telemetry.SensorBatch`, the OT log schema)."""

from __future__ import annotations

from typing import Any

import msgspec

from protocols.incident import Incident

__all__ = ["OtLogResult", "ProcessResult"]


class ProcessResult(msgspec.Struct, frozen=True):
    """The seed's response to ``POST /sensors/process``."""

    success: bool
    readings_stored: int
    incidents_detected: int
    critical_alerts: list[Incident]
    forecasts: dict[str, Any]
    processing_time_ms: float


class OtLogResult(msgspec.Struct, frozen=True):
    accepted: int
    rejected: list[dict[str, Any]]
