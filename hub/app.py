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
from litestar import Litestar, Request, Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.datastructures import State
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.params import FromQuery, JSONBody, QueryParameter

from agents import grid_monitor
from hub.agents_api import ROUTES as AGENT_ROUTES
from hub.auth import EDGE, OPERATOR, PUBLIC, VIEWER, AuthStore, Principal
from hub.auth.store import check_bootstrap_key
from hub.auth.audit import record
from hub.auth.guards import FailureWindow, RateLimiter, allow, principal, require_policy
from hub.auth.routes import ROUTES as AUTH_ROUTES
from hub.dashboard import ROUTES as DASHBOARD_ROUTES
from hub.exports import ROUTES as EXPORT_ROUTES
from hub.limits import body_limits
from hub.metrics import HubMetrics, prometheus_metrics
from hub.models_api import get_model_file, latest_model, list_models, retrain_model
from hub.openapi import ClosedStructSchemaPlugin, describe_refusals, error, openapi_config, strict_json_body
from hub.readings import ROUTES as READING_ROUTES
from hub.fleet import ROUTES as FLEET_ROUTES
from hub.settings import Settings
from hub.storage import EdgeState, Incident, NewIncident, Storage, open_storage
from hub.storage.base import SequenceError
from hub.telemetry import impossible_fields, incident_from_finding, sanitise_sync, store_telemetry
from hub.stream import ROUTES as STREAM_ROUTES, live_services
from hub.webhooks import ROUTES as WEBHOOK_ROUTES, WebhookDispatcher, WebhookStore
from protocols.severity import Severity
from protocols.telemetry import SensorBatch
from protocols.wire import SYNC_PATH, Event, SyncAck, SyncBatch, SyncConflict

log = logging.getLogger(__name__)

Status = Literal["OPEN", "ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED"]


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


def incidents_from_events(events: list[Event], **window: Any) -> list[NewIncident]:
    """Raised events become incidents; the edge's ``anomaly_*`` events are the anomaly detector's.
    Events with an impossible value or timestamp do not (``window``: max_future_skew_s, floor)."""
    return [incident_from_finding(f) for f in grid_monitor.findings_from_events(events, **window)]


def _storage(state: State) -> Storage:
    return state.storage


def _notify(state: State) -> None:
    """New data: the orchestrator runs the agents soon. Handlers run in worker threads, so the
    event is set from the loop's thread."""
    orch = getattr(state, "orchestrator", None)
    if orch is not None:
        orch.loop.call_soon_threadsafe(orch.notify)
    stream = getattr(state, "broadcaster", None)  # WS /ws/grid-status: new incidents, statuses (hub.stream)
    if stream is not None:
        stream.notify_threadsafe()


class SequenceConflict(HTTPException):
    """409 for a batch that does not continue its edge's sequence; the body is a :class:`SyncConflict`
    (the hub's marks), which the edge reads to resend from the right place."""

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
    for name, run in (("readings", data.readings), ("events", data.events)):
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
    try:
        ack = _storage(state).apply_sync(data, lambda events: incidents_from_events(events, **window))
    except SequenceError as exc:  # a gap or a jump: refused whole, with the marks the edge needs
        raise SequenceConflict(exc) from exc
    state.metrics.ingested("edge_sync", ack.readings_stored)
    if ack.new_buffer is True:  # a re-imaged box (or a replaced buffer file): its numbers start again
        log.warning("edge %s synced from a new buffer (%s): its sequence starts again", data.edge_id, data.buffer_id)
        record(request, "edge.new_buffer", data.edge_id, buffer_id=data.buffer_id)
    _notify(state)
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
    _notify(state)
    return ProcessResult(
        success=True, readings_stored=stored, incidents_detected=len(incidents),
        critical_alerts=[i for i in incidents if i.severity in ("CRITICAL", "EMERGENCY")], forecasts={},
        processing_time_ms=round((time.perf_counter() - started) * 1000, 3),
    )


@get("/incidents", guards=[allow(VIEWER)], sync_to_thread=True, summary="List incidents, newest first")
def list_incidents(
    state: State,
    status: FromQuery[Status | None] = None,
    severity: FromQuery[Severity | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
) -> IncidentList:
    return IncidentList(incidents=_storage(state).list_incidents(status, severity, limit))


@get("/stats", guards=[allow(VIEWER)], sync_to_thread=True, summary="Readings per substation, incidents per type and severity, edges")
def stats(state: State) -> Stats:
    storage = _storage(state)
    incidents = [
        {"type": t, "severity": s, "count": n} for (t, s), n in sorted(storage.incident_counts().items())
    ]
    return Stats(readings_by_substation=storage.reading_counts(), incidents=incidents, edges=storage.edge_states())


@get("/healthz", guards=[allow(PUBLIC)], sync_to_thread=False, summary="Liveness and the storage backend in use")
def healthz(state: State) -> Health:
    return Health(status="ok", database=_storage(state).backend)


def _open_auth(storage: Storage, settings: Settings) -> AuthStore:
    """The credential store; ``SENTINEL_ADMIN_KEY`` made an admin key (once, audited)."""
    auth = AuthStore(storage)
    if settings.admin_key and auth.ensure_bootstrap_key(settings.admin_key):
        auth.audit("env:SENTINEL_ADMIN_KEY", "local", "key.bootstrap", "bootstrap-admin")
        log.info("SENTINEL_ADMIN_KEY stored as an admin key (hashed)")
    if auth.edge_count() == 0:
        log.warning("no edge is registered: edges cannot sync until one is added with `sentinel hub edges add "
                    "EDGE_ID`")
    return auth


def create_app(settings: Settings, storage: Storage | None = None) -> Litestar:
    """Build the hub. ``storage`` may be passed in (tests, the demo); otherwise it is opened from
    ``settings.database_url`` at start-up and closed at shutdown."""
    if settings.admin_key:
        check_bootstrap_key(settings.admin_key)  # a ValueError naming the variable, before anything starts

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = storage is None
        app.state.storage = open_storage(settings.database_url) if own else storage
        try:
            app.state.auth = await asyncio.to_thread(_open_auth, app.state.storage, settings)
            app.state.webhooks = await asyncio.to_thread(WebhookStore, app.state.storage,
                                                         watch=settings.webhooks is not None)
        except BaseException:
            if own:
                app.state.storage.close()
            raise
        orch_task = None
        if settings.agents is not None:
            from hub.orchestrator import Orchestrator

            agents = dataclasses.replace(settings.agents, agents=dataclasses.replace(
                settings.agents.agents, model_registry=settings.agents.agents.model_registry or settings.model_registry))
            orch = app.state.orchestrator = Orchestrator(app.state.storage, agents, narrator=settings.narrator,
                                                         on_run=app.state.metrics.agent_run)
            orch_task = asyncio.create_task(orch.run(), name="hub.orchestrator")
        mqtt_task = None
        if settings.mqtt is not None:  # telemetry straight from a utility's broker
            from hub.mqtt_ingest import MqttIngest

            orch = getattr(app.state, "orchestrator", None)
            ingest = app.state.mqtt_ingest = MqttIngest(app.state.storage, settings.mqtt,
                                                        on_data=orch.notify if orch is not None else None)
            mqtt_task = asyncio.create_task(ingest.run(), name="hub.mqtt")
        webhook_task = None
        if settings.webhooks is not None:  # reads incidents on its own: ingest never waits on a receiver
            dispatcher = WebhookDispatcher(app.state.storage, app.state.webhooks, settings.webhooks,
                                           on_attempt=app.state.metrics.webhook_attempt)
            webhook_task = asyncio.create_task(dispatcher.run(), name="hub.webhooks")
        try:
            yield
        finally:
            if webhook_task is not None:
                webhook_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await webhook_task
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

    metrics = HubMetrics()  # Prometheus, this app's own registry (hub/metrics.py)
    app = Litestar(
        route_handlers=[edge_sync, sensors_process, list_incidents, stats, healthz, list_models, latest_model,
                        get_model_file, retrain_model, prometheus_metrics, *AGENT_ROUTES, *AUTH_ROUTES, *EXPORT_ROUTES,
                        *WEBHOOK_ROUTES, *READING_ROUTES, *FLEET_ROUTES, *STREAM_ROUTES,
                        *DASHBOARD_ROUTES],
        lifespan=[lifespan, live_services(settings)],  # liveness and the stream, once storage and auth are open
        guards=[require_policy],
        before_request=strict_json_body,  # bodies as typed as the document says
        middleware=[metrics.request_timer(),  # outermost: times the body limits' refusals too
                    body_limits(settings.max_body_bytes, settings.max_json_depth)],  # before any decoder
        request_max_body_size=settings.max_body_bytes,
        state=State({"settings": settings,
                     "ingest_limiter": RateLimiter(settings.ingest_rate_per_s, settings.ingest_burst),
                     "login_failures": FailureWindow(settings.login_max_failures, settings.login_window_s),
                     "metrics": metrics}),
        openapi_config=openapi_config(),  # /docs, served offline
        plugins=[ClosedStructSchemaPlugin()],
        exception_handlers={HTTPException: _http_error},
        # No Litestar LoggingConfig: it runs logging.config.dictConfig on every app, which closes
        # every handler the process already has and starts a queue thread per app. Errors are logged
        # by _log_error through this module's logger; the process (the CLI) configures logging.
        logging_config=None,
        after_exception=[_log_error],
    )
    describe_refusals(app, max_body_bytes=settings.max_body_bytes, max_json_depth=settings.max_json_depth)
    metrics.watch(app.state)  # storage, agents and MQTT ingest, read at scrape time
    return app


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

    if isinstance(exc, SequenceConflict):
        return Response(exc.body, status_code=409)
    body: dict[str, Any] = {"status_code": exc.status_code, "detail": exc.detail}
    if exc.extra:
        body["errors"] = exc.extra
        if isinstance(exc.extra, list) and exc.extra and isinstance(exc.extra[0], dict):
            first = exc.extra[0]
            where = first.get("key")
            named = f"{where}: {first.get('message', '')}".rstrip(": ")
            if where and named not in exc.detail:  # the detail names the field once, never twice
                body["detail"] = f"{exc.detail}: {named}"
    return Response(body, status_code=exc.status_code, headers=exc.headers)  # WWW-Authenticate, Allow, Retry-After
