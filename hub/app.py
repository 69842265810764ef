"""The hub's Litestar application, built by ``create_app(settings)`` (or, for uvicorn's worker
processes, by the factory ``hub.app:app_from_env``): the routes of every domain
package (``ingest``, ``incidents``, ``insights``, ``readings``, ``compliance``, ``modelship``, ``fleet``, ``auth``,
``webhooks``, ``exports``, ``stream``, ``dashboard``, ``system``), the lifespan that opens storage and
starts the services (orchestrator, or with ``agents_in_process`` off its stand-in that tells
``sentinel hub agents`` of new data, MQTT ingest, webhooks, liveness and the stream), and the one
place errors become HTTP answers (:func:`_http_error`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, Response
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from hub.auth import AuthStore
from hub.auth.store import check_bootstrap_key
from hub.auth.guards import FailureWindow, RateLimiter, require_policy
from hub.auth.routes import ROUTES as AUTH_ROUTES
from hub.compliance import ROUTES as COMPLIANCE_ROUTES
from hub.dashboard import ROUTES as DASHBOARD_ROUTES
from hub.exports import ROUTES as EXPORT_ROUTES
from hub.fleet import ROUTES as FLEET_ROUTES
from hub.incidents import ROUTES as INCIDENT_ROUTES
from hub.ingest import ROUTES as INGEST_ROUTES
from hub.ingest.routes import SequenceConflict
from hub.insights import ROUTES as INSIGHT_ROUTES
from hub.limits import body_limits
from hub.metrics import HubMetrics, prometheus_metrics
from hub.modelship import ROUTES as MODEL_ROUTES
from hub.openapi import ClosedStructSchemaPlugin, describe_refusals, openapi_config, strict_json_body
from hub.readings import ROUTES as READING_ROUTES
from hub.readings.rollups import refresh_rollups_forever
from hub.settings import Settings
from hub.storage import Storage, open_storage
from hub.stream import ROUTES as STREAM_ROUTES, live_services
from hub.system import ROUTES as SYSTEM_ROUTES
from hub.webhooks import ROUTES as WEBHOOK_ROUTES, WebhookDispatcher, WebhookStore

log = logging.getLogger(__name__)


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
        app.state.storage = open_storage(settings.database_url, migrate=settings.auto_migrate,
                                         read_url=settings.read_database_url,
                                         read_wait_s=settings.read_replica_wait_s) if own else storage
        try:
            app.state.auth = await asyncio.to_thread(_open_auth, app.state.storage, settings)
            app.state.webhooks = await asyncio.to_thread(WebhookStore, app.state.storage,
                                                         watch=settings.webhooks is not None)
        except BaseException:
            if own:
                app.state.storage.close()
            raise
        rollup_task = asyncio.create_task(refresh_rollups_forever(app.state.storage), name="hub.rollups")
        orch_task = None
        if settings.agents is not None and settings.agents_in_process:
            from hub.insights.elsewhere import make_orchestrator

            orch = app.state.orchestrator = make_orchestrator(app.state.storage, settings,
                                                              on_run=app.state.metrics.agent_run)
            orch_task = asyncio.create_task(orch.run(), name="hub.orchestrator")
        elif settings.agents is not None:  # `sentinel hub agents` runs them: tell it of new data, show its status
            from hub.insights.elsewhere import AgentsElsewhere

            elsewhere = app.state.orchestrator = AgentsElsewhere(app.state.storage, settings.database_url,
                                                                 settings.agents)
            orch_task = asyncio.create_task(elsewhere.run(), name="hub.agents-elsewhere")
        mqtt_task = None
        if settings.mqtt is not None:  # telemetry straight from a utility's broker
            from hub.ingest.mqtt import MqttIngest

            orch = getattr(app.state, "orchestrator", None)
            ingest = app.state.mqtt_ingest = MqttIngest(app.state.storage, settings.mqtt,
                                                        on_data=orch.notify if orch is not None else None)
            mqtt_task = asyncio.create_task(ingest.run(), name="hub.mqtt")
        webhook_task = None
        if settings.webhooks is not None:  # reads incidents on its own: ingest never waits on a receiver
            dispatcher = WebhookDispatcher(app.state.storage, app.state.webhooks, settings.webhooks,
                                           on_attempt=app.state.metrics.webhook_attempt)
            webhook_task = asyncio.create_task(dispatcher.run(), name="hub.webhooks")
        # what start-up made (modules, routes, schemas, pools) lives as long as the process: out of the
        # collector's sight, a full collection walks only what came since, and a year of hourly buckets
        # (8,760 objects) is no longer held up by one that walks the whole app (docs/rollups.md)
        if settings.freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            rollup_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rollup_task
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
        route_handlers=[*INGEST_ROUTES, *INCIDENT_ROUTES, *SYSTEM_ROUTES, *MODEL_ROUTES, prometheus_metrics,
                        *INSIGHT_ROUTES, *AUTH_ROUTES, *EXPORT_ROUTES, *WEBHOOK_ROUTES, *READING_ROUTES, *FLEET_ROUTES,
                        *STREAM_ROUTES, *DASHBOARD_ROUTES, *COMPLIANCE_ROUTES],
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


def prepare_database(settings: Settings) -> None:
    """What processes starting together on one database would race on, done once before they start
    (``sentinel hub serve --workers N``): its migrations and the bootstrap admin key (two workers
    storing it at once: one fails on the key's unique hash and cannot start)."""
    storage = open_storage(settings.database_url, migrate=settings.auto_migrate)
    try:
        _open_auth(storage, settings)
    finally:
        storage.close()


WORKER_LOG_LEVEL = "SENTINEL_WORKER_LOG_LEVEL"  # set by `sentinel hub serve --workers N` for its workers


def app_from_env() -> Litestar:
    """The hub of :meth:`Settings.from_env`: the factory uvicorn's worker processes import
    (``hub.app:app_from_env``). A worker is a fresh process: it logs as the CLI that started it."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=os.environ.get(WORKER_LOG_LEVEL, "WARNING"),
                            format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    return create_app(Settings.from_env(freeze_gc=True))


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
