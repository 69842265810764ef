"""The hub's Prometheus metrics: ``GET /metrics`` (viewer), in the text exposition format.

Each app has its own :class:`HubMetrics` (made in ``create_app``, kept as ``app.state.metrics``)
with its own ``CollectorRegistry``, never prometheus-client's global one: tests build many apps in
one process, and the demo runs a hub beside its edges.

Counted as it happens, one increment per request or batch, never per reading:

- ``sentinel_hub_http_request_duration_seconds{route,method,status}``: every routed request
  (:class:`RequestTimer`, an ASGI middleware outside all others). ``route`` is the route's path
  template (``/incidents/{incident_id}``), never the raw path, so the label values are the hub's
  routes and no more. A request that matches no route (404, 405) is not timed.
- ``sentinel_hub_readings_ingested_total{source}``: readings newly stored, by ``edge_sync`` and
  ``http`` (``POST /edge/sync``, ``POST /sensors/process``: :meth:`HubMetrics.ingested`, per
  request) and ``mqtt`` (the MQTT ingest's own count, read at scrape time). A resent reading that
  was already held is not counted again.
- ``sentinel_hub_agent_runs_total{agent,outcome}`` and
  ``sentinel_hub_agent_run_duration_seconds{agent}``: each agent's run in each orchestrator cycle
  (the orchestrator's ``on_run`` hook): ``ok``, ``failed``, ``timed_out`` (past its budget), ``busy``
  (not started: its previous run is still going past the budget; no duration).

Read at scrape time from what the hub keeps anyway (cheap queries, in the handler's worker thread):

- per edge (``storage.edge_states()``): ``sentinel_hub_edge_sync_lag_seconds`` (now minus its
  last sync), ``sentinel_hub_edge_readings_acked_through``, ``sentinel_hub_edge_sequence_gaps``,
  ``sentinel_hub_edge_backlog_readings`` (after an outage: the sequence numbers between the hub's mark
  and the live range it holds, still to come; 0 in step; :mod:`hub.fleet.catchup`);
- incidents: ``sentinel_hub_incidents_active{status,severity,type}`` (not resolved yet) and
  ``sentinel_hub_incidents_total{severity,type}`` (every incident recorded);
- agents (the orchestrator's status): ``sentinel_hub_agent_consecutive_failures{agent}``;
- MQTT ingest, when it runs: ``sentinel_hub_mqtt_dead_letters_total``,
  ``sentinel_hub_mqtt_store_failures_total``;
- ``sentinel_hub_history_reads_total{pool}``: with a read replica (``SENTINEL_READ_DATABASE_URL``),
  the history reads it answered (``replica``) and those the primary answered instead (``primary``:
  the replica was down or behind; :mod:`hub.storage.read_replica`);
- ``sentinel_hub_storage_up``: 0 when those queries failed (the families drawn from the storage
  are then left out of that scrape, not reported as zeros).

- ``sentinel_hub_webhook_attempts_total{result}`` and ``sentinel_hub_webhook_deliveries_total{outcome}``:
  each POST to a webhook (``ok``: a 2xx, ``http_error``: another status, ``error``: no answer), and
  each delivery finished (``delivered``, or ``failed``: no attempt left) (the dispatcher's
  ``on_attempt`` hook, :mod:`hub.webhooks.dispatcher`).

- ``WS /ws/grid-status`` (:mod:`hub.stream`): ``sentinel_hub_ws_clients`` (connected now),
  ``sentinel_hub_ws_connections_total{result}`` (``accepted``, ``refused``),
  ``sentinel_hub_ws_messages_sent_total{type}`` (``snapshot``, ``update``, ``heartbeat``) and
  ``sentinel_hub_ws_updates_coalesced_total``: updates a slow client never got, replaced in its
  one-message slot by a newer state before it took them.

Plus the process's own (``process_*``, ``python_gc_*``, ``python_info``). ``docs/monitoring.md``
has the Prometheus scrape config (a viewer API key as bearer token) and the Grafana dashboard.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.middleware import DefineMiddleware
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, GCCollector, Histogram,
                               PlatformCollector, ProcessCollector, disable_created_metrics, generate_latest)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.auth import VIEWER
from hub.auth.guards import allow
from hub.fleet.catchup import live_backlog

__all__ = ["INGEST_SOURCES", "HubMetrics", "RequestTimer", "prometheus_metrics"]

log = logging.getLogger(__name__)

INGEST_SOURCES = ("edge_sync", "http", "mqtt")
ACTIVE_STATUSES = ("OPEN", "ACKNOWLEDGED", "IN_PROGRESS")  # an incident not resolved yet
ACTIVE_LISTED = 10_000  # incidents read per status and scrape (one per ongoing condition: few)
# seconds; agents get a 30 s budget by default
AGENT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class HubMetrics:
    """One hub's metrics: its registry, the metrics counted as things happen, and (after
    :meth:`watch`) those read from the app's state at scrape time."""

    def __init__(self) -> None:
        disable_created_metrics()  # no `_created` series beside every counter and histogram (process-wide)
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.request_duration = Histogram(
            "sentinel_hub_http_request_duration_seconds", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=self.registry)
        self.agent_runs = Counter("sentinel_hub_agent_runs", "Agent runs by outcome (ok, failed, timed_out, busy)",
                                  ["agent", "outcome"], registry=self.registry)
        self.agent_duration = Histogram("sentinel_hub_agent_run_duration_seconds",
                                        "How long each agent run took (failed and timed-out runs too)", ["agent"],
                                        buckets=AGENT_BUCKETS, registry=self.registry)
        self.webhook_attempts = Counter("sentinel_hub_webhook_attempts", "POSTs to webhooks by result (ok: a 2xx, "
                                        "http_error: another status, error: no answer)", ["result"],
                                        registry=self.registry)
        self.webhook_deliveries = Counter("sentinel_hub_webhook_deliveries", "Webhook deliveries finished, by outcome "
                                          "(delivered; failed: no attempt left)", ["outcome"], registry=self.registry)
        for result in ("ok", "http_error", "error"):  # every series from the start, at 0
            self.webhook_attempts.labels(result)
        for outcome in ("delivered", "failed"):
            self.webhook_deliveries.labels(outcome)
        self.ws_clients = Gauge("sentinel_hub_ws_clients", "WebSocket clients connected to /ws/grid-status",
                                registry=self.registry)
        self.ws_connections = Counter("sentinel_hub_ws_connections", "WebSocket connections by result (accepted, "
                                      "refused)", ["result"], registry=self.registry)
        self.ws_messages = Counter("sentinel_hub_ws_messages_sent", "WebSocket messages sent by type (snapshot, "
                                   "update, heartbeat)", ["type"], registry=self.registry)
        self.ws_coalesced_updates = Counter("sentinel_hub_ws_updates_coalesced", "Updates a slow WebSocket client "
                                            "never got: replaced by a newer state before it took them",
                                            registry=self.registry)
        for result in ("accepted", "refused"):
            self.ws_connections.labels(result)
        for kind in ("snapshot", "update", "heartbeat"):
            self.ws_messages.labels(kind)
        self._ingested = dict.fromkeys(INGEST_SOURCES[:2], 0)  # mqtt: the MQTT ingest's own count
        self._lock = threading.Lock()

    def watch(self, state: State) -> None:
        """Read the app's storage, orchestrator and MQTT ingest at scrape time (they are made in
        the lifespan; what is missing yet is left out)."""
        self.registry.register(_StateCollector(state, self))

    def request_timer(self) -> DefineMiddleware:
        """:class:`RequestTimer` as the first entry of ``Litestar(middleware=[...])``."""
        return DefineMiddleware(RequestTimer, histogram=self.request_duration)

    def ingested(self, source: str, readings: int) -> None:
        """``readings`` newly stored by ``source`` (``edge_sync``, ``http``); from worker threads."""
        with self._lock:
            self._ingested[source] += readings

    def ingested_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._ingested)

    def agent_run(self, agent: str, outcome: str, seconds: float | None) -> None:
        """The orchestrator's ``on_run`` hook: one agent's run in a cycle."""
        self.agent_runs.labels(agent, outcome).inc()
        if seconds is not None:
            self.agent_duration.labels(agent).observe(seconds)

    def webhook_attempt(self, result: str, outcome: str | None) -> None:
        """The webhook dispatcher's ``on_attempt`` hook: one POST's ``result``, and the delivery's
        ``outcome`` when it is finished (None: it will be retried)."""
        self.webhook_attempts.labels(result).inc()
        if outcome is not None:
            self.webhook_deliveries.labels(outcome).inc()

    # the stream's hooks (hub.stream), on the event loop
    def ws_connection(self, result: str) -> None:
        self.ws_connections.labels(result).inc()

    def ws_client(self, delta: int) -> None:
        self.ws_clients.inc(delta)

    def ws_sent(self, kind: str) -> None:
        self.ws_messages.labels(kind).inc()

    def ws_coalesced(self) -> None:
        self.ws_coalesced_updates.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class RequestTimer:
    """ASGI middleware: time every request to a route, labelled by the route's path template, the
    method and the status answered (an exception on its way to the app's error handler: its status,
    or 500)."""

    def __init__(self, app: Any, *, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except HTTPException as exc:  # refused by a middleware inside this one (413): answered outside
            status = exc.status_code
            raise
        finally:
            self.histogram.labels(scope.get("path_template") or "", scope["method"], str(status)).observe(
                time.perf_counter() - started)


class _StateCollector(Collector):
    """The metrics read from the hub's state when Prometheus scrapes."""

    def __init__(self, state: State, metrics: HubMetrics) -> None:
        self.state = state
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._ingest()
        yield from self._agents()
        storage = getattr(self.state, "storage", None)
        if storage is None:
            return
        yield from self._history_reads(storage)
        try:
            families = self._storage(storage)
        except Exception as exc:  # the database is down: say so, and still answer the scrape
            log.warning("/metrics: the storage did not answer: %s", exc)
            families = []
        yield GaugeMetricFamily("sentinel_hub_storage_up", "1 when the scrape-time storage queries worked",
                                value=1.0 if families else 0.0)
        yield from families

    def _ingest(self) -> Iterator[Metric]:
        counts = self.metrics.ingested_counts()
        mqtt = getattr(self.state, "mqtt_ingest", None)
        counts["mqtt"] = mqtt.stats.readings_stored if mqtt is not None else 0
        family = CounterMetricFamily("sentinel_hub_readings_ingested", "Readings newly stored, by source",
                                     labels=["source"])
        for source in INGEST_SOURCES:
            family.add_metric([source], counts[source])
        yield family
        if mqtt is not None:
            yield CounterMetricFamily("sentinel_hub_mqtt_dead_letters", "MQTT messages that could not be used "
                                      "(kept in the dead-letter table)", value=mqtt.stats.dead_letters)
            yield CounterMetricFamily("sentinel_hub_mqtt_store_failures", "MQTT batches that could not be stored",
                                      value=mqtt.stats.store_failures)

    @staticmethod
    def _history_reads(storage: Any) -> Iterator[Metric]:
        read_counts = getattr(storage, "read_counts", None)  # PostgreSQL with a read replica only
        counts = read_counts() if read_counts is not None else None
        if counts is None:
            return
        family = CounterMetricFamily("sentinel_hub_history_reads", "History reads (readings API, exports, the agents' "
                                     "windows) by the pool that answered: replica (caught up) or primary",
                                     labels=["pool"])
        for pool in ("replica", "primary"):
            family.add_metric([pool], counts[pool])
        yield family

    def _agents(self) -> Iterator[Metric]:
        orch = getattr(self.state, "orchestrator", None)
        if orch is None:
            return
        failing = GaugeMetricFamily("sentinel_hub_agent_consecutive_failures",
                                    "Runs in a row that failed or timed out (0: the last one was ok)", labels=["agent"])
        for st in orch.status():
            failing.add_metric([st.name], st.failures)
        yield failing

    def _storage(self, storage: Any) -> list[Metric]:
        now = datetime.now(UTC)
        edge_labels = ["edge_id", "substation"]
        lag = GaugeMetricFamily("sentinel_hub_edge_sync_lag_seconds", "Seconds since the edge's last sync",
                                labels=edge_labels)
        acked = GaugeMetricFamily("sentinel_hub_edge_readings_acked_through",
                                  "The highest reading sequence number the hub holds for the edge", labels=edge_labels)
        gaps = GaugeMetricFamily("sentinel_hub_edge_sequence_gaps",
                                 "Sequence numbers the edge declared lost (its buffer dropped them before sending)",
                                 labels=edge_labels)
        backlog = GaugeMetricFamily("sentinel_hub_edge_backlog_readings",
                                    "After an outage: readings (sequence numbers) between the hub's mark and the live "
                                    "range it holds for the edge, still to come; 0 when in step", labels=edge_labels)
        for edge in storage.edge_states():
            labels = [edge.edge_id, edge.substation]
            if edge.last_sync is not None:
                lag.add_metric(labels, max(0.0, (now - edge.last_sync).total_seconds()))
            acked.add_metric(labels, edge.readings_acked_through)
            gaps.add_metric(labels, edge.gaps)
            backlog.add_metric(labels, live_backlog(edge))
        active = GaugeMetricFamily("sentinel_hub_incidents_active", "Incidents not resolved yet",
                                   labels=["status", "severity", "type"])
        for status in ACTIVE_STATUSES:
            counts: dict[tuple[str, str], int] = {}
            for inc in storage.list_incidents(status=status, limit=ACTIVE_LISTED):
                counts[(inc.severity, inc.type)] = counts.get((inc.severity, inc.type), 0) + 1
            for (severity, kind), n in sorted(counts.items()):
                active.add_metric([status, severity, kind], n)
        recorded = CounterMetricFamily("sentinel_hub_incidents", "Incidents recorded, whatever their status",
                                       labels=["severity", "type"])
        for (kind, severity), n in sorted(storage.incident_counts().items()):
            recorded.add_metric([severity, kind], n)
        return [lag, acked, gaps, backlog, active, recorded]


@get("/metrics", guards=[allow(VIEWER)], sync_to_thread=True, media_type=MediaType.TEXT,
     summary="Prometheus metrics (text exposition format)")
def prometheus_metrics(state: State) -> Response[bytes]:
    """The hub's metrics for Prometheus: requests, ingest by source, sync lag per edge, agent runs,
    incidents. Scrape with a viewer API key (``authorization`` in the scrape config); the names and
    their meaning are in ``docs/monitoring.md``."""
    return Response(state.metrics.exposition(), headers={"content-type": CONTENT_TYPE_LATEST})
