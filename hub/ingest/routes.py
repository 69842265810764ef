"""Data in: ``POST /edge/sync`` (an edge's batch, idempotent), ``POST /sensors/process`` (the seed's
telemetry API) and ``POST /ot-logs`` (OT log entries for the cyber sentinel).

- ``POST /edge/sync``: only an edge's own credential may send its batches; items at or below the
  edge's high-water marks are acknowledged, not stored again; a batch that does not continue the
  edge's sequence is a 409 with the hub's marks (:class:`SequenceConflict`).
- ``POST /sensors/process``: a reading with an impossible value or timestamp is a 400 naming it.
- ``POST /ot-logs``: OT log entries (protocols/schemas/ot_log.schema.json: one, a list, or
  ``{"events": [...]}``); good entries are stored even when others are bad, and the answer names
  each bad one; 400 only when none is good.

The work is in :mod:`hub.ingest.telemetry` (shared with MQTT ingest, :mod:`hub.ingest.mqtt`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
from litestar import Request, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import JSONBody

from agents import grid_monitor
from hub.auth import EDGE, OPERATOR, Principal
from hub.auth.audit import record
from hub.auth.guards import allow, principal
from hub.ingest.schemas import OtLogResult, ProcessResult
from hub.ingest.telemetry import impossible_fields, incident_from_finding, sanitise_sync, store_telemetry
from hub.openapi import error
from hub.storage import NewIncident, Storage
from hub.storage.base import SequenceError
from protocols import otlog
from protocols.telemetry import SensorBatch
from protocols.wire import SYNC_PATH, Event, SyncAck, SyncBatch, SyncConflict

if TYPE_CHECKING:
    from hub.settings import Settings

__all__ = ["ROUTES", "SequenceConflict", "incidents_from_events", "notify"]

log = logging.getLogger(__name__)


def incidents_from_events(events: list[Event], **window: Any) -> list[NewIncident]:
    """Raised events become incidents; the edge's ``anomaly_*`` events are the anomaly detector's.
    Events with an impossible value or timestamp do not (``window``: max_future_skew_s, floor)."""
    return [incident_from_finding(f) for f in grid_monitor.findings_from_events(events, **window)]


def _storage(state: State) -> Storage:
    return state.storage


def notify(state: State, urgent: bool = False) -> None:
    """New data: the orchestrator runs the agents soon. Handlers run in worker threads, so the
    event is set from the loop's thread. ``urgent``: new events or incidents were stored, and the
    stream reads them at once rather than after its gap."""
    orch = getattr(state, "orchestrator", None)
    if orch is not None:
        orch.loop.call_soon_threadsafe(orch.notify)
    stream = getattr(state, "broadcaster", None)  # WS /ws/grid-status: new incidents, statuses (hub.stream)
    if stream is not None:
        stream.notify_threadsafe(urgent)


class SequenceConflict(HTTPException):
    """409 for a batch that does not continue its edge's sequence; the body is a :class:`SyncConflict`
    (the hub's marks and live range), which the edge reads to resend from the right place."""

    status_code = 409

    def __init__(self, cause: SequenceError) -> None:
        super().__init__(detail=str(cause))
        self.body = cause.conflict()


def _check_edge_identity(who: Principal, batch: SyncBatch) -> None:
    """An edge speaks only for itself: the batch's edge id (and substation, when its credential
    names one) must be the credential's."""
    if batch.edge_id != who.name:
        raise PermissionDeniedException(detail=f"edge_id is {batch.edge_id!r}, but this credential belongs to edge "
                                               f"{who.name!r}; nothing was stored")
    if who.substation and batch.substation != who.substation:
        raise PermissionDeniedException(detail=f"substation is {batch.substation!r}, but edge {who.name!r} is "
                                               f"registered for {who.substation!r}; nothing was stored")


@post(SYNC_PATH, guards=[allow(EDGE)], sync_to_thread=True, status_code=200,
      summary="Edge sync: store a batch, answer with an ack",
      responses={400: error("the batch does not match this document, or an item's substation is not the batch's"),
                 409: ResponseSpec(SyncConflict, generate_examples=False,
                                   description="the batch does not continue the edge's sequence; nothing stored; "
                                               "the hub's marks")})
def edge_sync(data: JSONBody[SyncBatch], request: Request, state: State) -> SyncAck:
    """Idempotent: items at or below the edge's high-water marks are acknowledged, not stored again.
    Only an edge's own credential may send its batches (403 otherwise, nothing stored)."""
    _check_edge_identity(principal(request), data)
    for name, run in (("readings", data.readings), ("events", data.events), ("live", data.live)):
        for i, item in enumerate(run.items if run else ()):
            if item.substation != data.substation:
                raise ValidationException(
                    detail=f"{name}.items[{i}].substation is {item.substation!r}, but the batch is from "
                    f"substation {data.substation!r}",
                    extra=[{"key": f"{name}.items[{i}].substation", "source": "body",
                            "message": "does not match the batch's substation"}],
                )
    settings: Settings = state.settings  # impossible readings are stored flagged invalid, not refused (resent for ever)
    window = {"max_future_skew_s": settings.max_future_skew_s, "floor": settings.timestamp_floor}
    data = sanitise_sync(data, **window)
    if data.live is not None:  # the live run's readings, marked as the readings run's are
        live = sanitise_sync(msgspec.structs.replace(data, readings=data.live, live=None), **window).readings
        data = msgspec.structs.replace(data, live=live)
    try:
        ack = _storage(state).apply_sync(data, lambda events: incidents_from_events(events, **window))
    except SequenceError as exc:  # a gap or a jump: refused whole, with the marks the edge needs
        raise SequenceConflict(exc) from exc
    state.metrics.ingested("edge_sync", ack.readings_stored)
    if ack.new_buffer is True:  # a re-imaged box (or a replaced buffer file): its numbers start again
        log.warning("edge %s synced from a new buffer (%s): its sequence starts again", data.edge_id, data.buffer_id)
        record(request, "edge.new_buffer", data.edge_id, buffer_id=data.buffer_id)
    notify(state, urgent=ack.events_stored > 0)
    return ack


@post("/sensors/process", guards=[allow(OPERATOR.with_rate_limit())], sync_to_thread=True, status_code=200, summary="Ingest readings (the seed's API)",
      responses={400: error("the body does not match this document, or a reading has an impossible value or "
                            "timestamp (each named in `errors`); nothing was stored")})
def sensors_process(data: JSONBody[SensorBatch], state: State) -> ProcessResult:
    """Store readings in the telemetry schema, check them against the grid code, raise incidents.
    A reading with an impossible value or timestamp is a 400 naming it; nothing of the request is
    stored. Idempotent: a reading whose (device_id, metric, timestamp) is held is not stored again
    (``readings_stored`` counts the new ones) and raises nothing again."""
    started = time.perf_counter()
    settings: Settings = state.settings
    readings = [r.to_reading(settings.default_substation) for r in data.sensor_readings]
    if errors := impossible_fields(readings, "sensor_readings", max_future_skew_s=settings.max_future_skew_s,
                                   floor=settings.timestamp_floor):
        raise ValidationException(detail="impossible readings, nothing was stored", extra=errors)
    stored, incidents = store_telemetry(_storage(state), readings, [r.nominal for r in data.sensor_readings],
                                        settings.limits, source="http")
    state.metrics.ingested("http", stored)
    notify(state, urgent=bool(incidents))
    return ProcessResult(
        success=True, readings_stored=stored, incidents_detected=len(incidents),
        critical_alerts=[i for i in incidents if i.severity in ("CRITICAL", "EMERGENCY")], forecasts={},
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


def _ot_log_body() -> RequestBody:
    """The body ``POST /ot-logs`` takes, from the published schema of an entry (``otlog.schema()``):
    one entry, a list of them, or ``{"events": [...]}``. The handler reads the raw body (a bad entry
    must not lose the good ones), so Litestar cannot derive this from a type."""
    published = otlog.schema()
    # the decoder refuses any other field, even a null one (the file allows those: a discrepancy)
    entry = {k: v for k, v in published.items() if not k.startswith("$")} | {"additionalProperties": False}
    # each element is judged on its own: good ones stored, bad ones named in `rejected`; 400 if none is good
    entries = {"type": "array", "contains": entry, "minItems": 1, "maxItems": 100_000}
    batch = {**published["$defs"]["batch"], "additionalProperties": False,
             "properties": {"events": entries}}
    return RequestBody(required=True, description=published["description"], content={
        "application/json": OpenAPIMediaType(schema=Schema(one_of=[entry, entries, batch]))})


@dataclass
class _OtLogsOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _ot_log_body()


@post("/ot-logs", guards=[allow(OPERATOR.with_rate_limit())], status_code=200, summary="OT log entries in (authentication, commands, configuration changes)",
      operation_class=_OtLogsOperation, responses={400: error("no usable entry: each bad one is named in `errors`")})
async def post_ot_logs(request: Request, state: State) -> OtLogResult:
    body = await request.body()
    decoded = otlog.decode(body)
    rejected = [{"index": e.index, "field": e.field, "message": e.message, "detail": str(e)} for e in decoded.errors]
    if not decoded.events:
        first = str(decoded.errors[0]) if decoded.errors else "no entries"
        raise ValidationException(detail=f"no usable OT log entry: {first}", extra=rejected)
    stored = await asyncio.to_thread(_storage(state).add_ot_logs, decoded.events, "http")
    orch = getattr(state, "orchestrator", None)
    if orch is not None:
        orch.notify()
    return OtLogResult(accepted=stored, rejected=rejected)


ROUTES = [edge_sync, sensors_process, post_ot_logs]
