"""The hub's Litestar application, built by ``create_app(settings)``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import msgspec
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotAuthorizedException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromQuery, JSONBody, QueryParameter

from agents import grid_monitor
from hub.agents_api import ROUTES as AGENT_ROUTES
from hub.models_api import get_model_file, latest_model, list_models, retrain_model
from hub.settings import Settings
from hub.storage import EdgeState, Incident, NewIncident, Storage, open_storage
from hub.telemetry import incident_from_finding, store_telemetry
from protocols.telemetry import SensorBatch
from protocols.wire import SYNC_PATH, Event, SyncAck, SyncBatch

log = logging.getLogger(__name__)

Status = Literal["OPEN", "ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED"]
SeverityName = Literal["INFO", "WARNING", "CRITICAL", "EMERGENCY"]


class IncidentList(msgspec.Struct, frozen=True):
    incidents: list[Incident]


class ProcessResult(msgspec.Struct, frozen=True):
    """The seed's response to ``POST /sensors/process``."""

    success: bool
    readings_stored: int
    incidents_detected: int
    critical_alerts: list[Incident]
    forecasts: dict[str, Any]
    processing_time_ms: float


class Health(msgspec.Struct, frozen=True):
    status: str
    database: str


class Stats(msgspec.Struct, frozen=True):
    readings_by_substation: dict[str, int]
    incidents: list[dict[str, Any]]
    edges: list[EdgeState]


ANOMALY_AGENT = grid_monitor.ANOMALY_AGENT


def incidents_from_events(events: list[Event]) -> list[NewIncident]:
    """Raised events become incidents; the edge's ``anomaly_*`` events are the anomaly detector's."""
    return [incident_from_finding(f) for f in grid_monitor.findings_from_events(events)]


def _storage(state: State) -> Storage:
    return state.storage


def _notify(state: State) -> None:
    """New data: the orchestrator runs the agents soon. Handlers run in worker threads, so the
    event is set from the loop's thread."""
    orch = getattr(state, "orchestrator", None)
    if orch is not None:
        orch.loop.call_soon_threadsafe(orch.notify)


def _check_token(request: Request, settings: Settings) -> None:
    if not settings.edge_tokens:
        return
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or token not in settings.edge_tokens:
        raise NotAuthorizedException("missing or unknown edge token (Authorization: Bearer <token>)")


@post(SYNC_PATH, sync_to_thread=True, status_code=200, summary="Edge sync: store a batch, answer with an ack")
def edge_sync(data: JSONBody[SyncBatch], request: Request, state: State) -> SyncAck:
    """Idempotent: items at or below the edge's high-water marks are acknowledged, not stored again."""
    _check_token(request, state.settings)
    for name, run in (("readings", data.readings), ("events", data.events)):
        for i, item in enumerate(run.items if run else ()):
            if item.substation != data.substation:
                raise ValidationException(
                    detail=f"{name}.items[{i}].substation is {item.substation!r}, but the batch is from "
                    f"substation {data.substation!r}",
                    extra=[{"key": f"{name}.items[{i}].substation", "source": "body",
                            "message": "does not match the batch's substation"}],
                )
    ack = _storage(state).apply_sync(data, incidents_from_events)
    _notify(state)
    return ack


@post("/sensors/process", sync_to_thread=True, status_code=200, summary="Ingest readings (the seed's API)")
def sensors_process(data: JSONBody[SensorBatch], state: State) -> ProcessResult:
    """Store readings in the telemetry schema, check them against the grid code, raise incidents."""
    started = time.perf_counter()
    settings: Settings = state.settings
    readings = [r.to_reading(settings.default_substation) for r in data.sensor_readings]
    stored, incidents = store_telemetry(_storage(state), readings, [r.nominal for r in data.sensor_readings],
                                        settings.limits, source="http")
    _notify(state)
    return ProcessResult(
        success=True, readings_stored=stored, incidents_detected=len(incidents),
        critical_alerts=[i for i in incidents if i.severity in ("CRITICAL", "EMERGENCY")], forecasts={},
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


@get("/incidents", sync_to_thread=True, summary="List incidents, newest first")
def list_incidents(
    state: State,
    status: FromQuery[Status | None] = None,
    severity: FromQuery[SeverityName | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
) -> IncidentList:
    return IncidentList(incidents=_storage(state).list_incidents(status, severity, limit))


@get("/stats", sync_to_thread=True, summary="Readings per substation, incidents per type and severity, edges")
def stats(state: State) -> Stats:
    storage = _storage(state)
    incidents = [
        {"type": t, "severity": s, "count": n} for (t, s), n in sorted(storage.incident_counts().items())
    ]
    return Stats(readings_by_substation=storage.reading_counts(), incidents=incidents, edges=storage.edge_states())


@get("/healthz", sync_to_thread=False, summary="Liveness and the storage backend in use")
def healthz(state: State) -> Health:
    return Health(status="ok", database=_storage(state).backend)


def create_app(settings: Settings, storage: Storage | None = None) -> Litestar:
    """Build the hub. ``storage`` may be passed in (tests, the demo); otherwise it is opened from
    ``settings.database_url`` at start-up and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = storage is None
        app.state.storage = open_storage(settings.database_url) if own else storage
        if not settings.edge_tokens:
            log.warning("no edge tokens configured (SENTINEL_EDGE_TOKENS): /edge/sync accepts any edge")
        orch_task = None
        if settings.agents is not None:
            from hub.orchestrator import Orchestrator

            agents = dataclasses.replace(settings.agents, agents=dataclasses.replace(
                settings.agents.agents, model_registry=settings.agents.agents.model_registry or settings.model_registry))
            orch = app.state.orchestrator = Orchestrator(app.state.storage, agents, narrator=settings.narrator)
            orch_task = asyncio.create_task(orch.run(), name="hub.orchestrator")
        mqtt_task = None
        if settings.mqtt is not None:  # telemetry straight from a utility's broker
            from hub.mqtt_ingest import MqttIngest

            orch = getattr(app.state, "orchestrator", None)
            ingest = app.state.mqtt_ingest = MqttIngest(app.state.storage, settings.mqtt,
                                                        on_data=orch.notify if orch is not None else None)
            mqtt_task = asyncio.create_task(ingest.run(), name="hub.mqtt")
        try:
            yield
        finally:
            if orch_task is not None:
                orch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await orch_task
                await app.state.orchestrator.aclose()
            if mqtt_task is not None:
                mqtt_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await mqtt_task
                await app.state.mqtt_ingest.close()
            if own:
                app.state.storage.close()

    return Litestar(
        route_handlers=[edge_sync, sensors_process, list_incidents, stats, healthz, list_models, latest_model,
                        get_model_file, retrain_model, *AGENT_ROUTES],
        lifespan=[lifespan],
        state=State({"settings": settings}),
        openapi_config=OpenAPIConfig(
            title="SmartGrid Sentinel hub", version="0.1.0", path="/docs",
            render_plugins=[SwaggerRenderPlugin()],
        ),
        exception_handlers={HTTPException: _http_error},
        # No Litestar LoggingConfig: it runs logging.config.dictConfig on every app, which closes
        # every handler the process already has and starts a queue thread per app. Errors are logged
        # by _log_error through this module's logger; the process (the CLI) configures logging.
        logging_config=None,
        after_exception=[_log_error],
    )


def _log_error(exc: Exception, scope: Any) -> None:
    """A client's mistake (4xx) is one line naming the request and what was wrong (a warning when it
    sent data, info when it asked); anything else is a fault of ours, logged with its traceback."""
    where = f"{scope.get('method', scope.get('type', ''))} {scope.get('path', '')}".strip()
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        detail = exc.detail
        if isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict) and exc.extra[0].get("key"):
            detail = f"{detail}: {exc.extra[0]['key']}: {exc.extra[0].get('message', '')}"
        # data turned away (an edge will keep resending it) is worth an operator's eye; a bad query is not
        level = logging.WARNING if scope.get("method") in ("POST", "PUT", "PATCH", "DELETE") else logging.INFO
        log.log(level, "%s rejected (%d): %s", where, exc.status_code, detail)
    else:
        log.error("%s failed: %s", where, exc, exc_info=exc)


def _http_error(request: Request, exc: HTTPException) -> Any:
    """One shape for every error: status_code, detail, and for validation errors the fields."""
    from litestar import Response

    body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["errors"] = exc.extra
        if isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict):
            first = exc.extra[0]
            where = first.get("key")
            if where:
                body["detail"] = f"{exc.detail}: {where}: {first.get('message', '')}".rstrip(": ")
    return Response(body, status_code=exc.status_code)
