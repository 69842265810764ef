"""The edge's Prometheus endpoint: ``GET /metrics`` on ``[metrics] listen`` (off without the table).

The daemon makes one :class:`EdgeMetrics` when its config has a ``[metrics]`` table; ``EdgeDaemon.run``
starts it before polling and stops it first on the way out. It has its own ``CollectorRegistry``
(the demo runs several edges in one process) and serves it with prometheus-client's HTTP server in
a thread of its own: a scrape never waits on the event loop, nor the loop on a scrape. The
endpoint has no authentication: it listens on loopback by default, and the edge warns when it is
bound elsewhere. A port that cannot be bound is logged (ERROR) and the edge runs without it:
polling matters more than watching it.

Nearly everything is read at scrape time from what the daemon counts anyway (no cost on the poll
path); only the scoring time is observed as it happens, once per buffered batch:

- ``sentinel_edge_polls_total{device,outcome}``: polls (for pushed sources: updates) that
  answered (``ok``) or failed (``failed``); ``sentinel_edge_device_up{device}`` 1 / 0 (absent before
  the first poll); ``sentinel_edge_device_poll_latency_seconds{device}``: the last poll's.
- ``sentinel_edge_buffer_pending{stream}`` (readings, events, ot_logs: waiting for the hub),
  ``sentinel_edge_buffer_oldest_unsent_age_seconds{stream}`` (telemetry: readings and events;
  ot_logs; 0 when nothing waits), ``sentinel_edge_buffer_capacity_rows``.
- ``sentinel_edge_sync_attempts_total{outcome}``: ``ok``, or the hub fault's kind
  (``unreachable``, ``timeout``, ``sequence``, ... see :class:`edge.sync.HubFault`), or
  ``internal`` (a fault of ours, e.g. the disk); ``sentinel_edge_sync_items_total{stream}`` acked by
  the hub; ``sentinel_edge_hub_up`` (absent before the first attempt).
- ``sentinel_edge_scoring_duration_seconds``: one scorer call per buffered batch;
  ``sentinel_edge_readings_scored_total``.
- ``sentinel_edge_buffer_used_bytes`` and ``sentinel_edge_buffer_limit_bytes`` (``[buffer] max_bytes``).
- ``sentinel_edge_dropped_total{stream,reason}``: ``readings`` / ``ot_logs`` with ``buffer_full`` (the
  oldest unsent rows, dropped past ``[buffer] max_rows``), readings with ``buffer_bytes`` (past
  ``max_bytes``), ``buffer_age`` (older than ``max_age_s``), ``buffer_full_new`` (not stored: policy
  ``drop_newest`` at a limit), or ``buffer_unwritable`` (readings and
  ``events`` held in memory while the buffer could not be written, dropped past ``[buffer]
  hold_rows``), ``messages`` with ``dead_letter`` (pushed
  messages and OT log entries that could not be used, kept in the dead-letter table). The buffer
  keeps these counts, so they survive a restart. Readings the edge cannot trust (not finite, a
  device's failure) are not dropped: they are buffered with quality 0 and their flags.
- ``sentinel_edge_info{edge_id,substation}`` 1, and the process's own (``process_*``, ``python_*``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import (CollectorRegistry, GCCollector, Histogram, PlatformCollector, ProcessCollector,
                               disable_created_metrics, start_http_server)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edge.buffer import DROPPED_UNWRITABLE, EVENTS_DROPPED_UNWRITABLE
from protocols.config import MetricsSettings

if TYPE_CHECKING:
    from edge.daemon import EdgeDaemon

__all__ = ["EdgeMetrics"]

log = logging.getLogger(__name__)

# seconds per scorer call: about 2 ms fixed, more for large batches (a backlog drained at once)
SCORING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class EdgeMetrics:
    """One edge daemon's registry and its HTTP endpoint. ``await start()``, ``await stop()``."""

    def __init__(self, daemon: EdgeDaemon, settings: MetricsSettings) -> None:
        disable_created_metrics()  # no `_created` series beside every counter and histogram (process-wide)
        self.settings = settings
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.scoring = Histogram("sentinel_edge_scoring_duration_seconds",
                                 "One scorer call over a buffered batch of readings", buckets=SCORING_BUCKETS,
                                 registry=self.registry)
        self.registry.register(_DaemonCollector(daemon))
        self.address: tuple[str, int] | None = None  # where it listens, once started (port 0: the one chosen)
        self._server: WSGIServer | None = None
        self._starting: asyncio.Future[WSGIServer | None] | None = None

    def scored(self, seconds: float) -> None:
        """A scorer call took ``seconds`` (called from the writer's worker thread)."""
        self.scoring.observe(seconds)

    async def start(self) -> None:
        """Bind and serve (in a thread: binding looks the host name up). A port that cannot be bound
        is logged; the edge goes on without the endpoint."""
        self._starting = asyncio.ensure_future(asyncio.to_thread(self._serve))
        await asyncio.shield(self._starting)  # cancelled meanwhile: stop() still finds the server

    def _serve(self) -> WSGIServer | None:
        host, port = self.settings.address()
        try:
            server, _thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            log.error("metrics: cannot listen on %s: %s; running without the /metrics endpoint",
                      self.settings.listen, exc.strerror or exc)
            return None
        self._server = server
        self.address = (host, server.server_address[1])
        where = f"[{host}]:{self.address[1]}" if ":" in host else f"{host}:{self.address[1]}"
        if self.settings.loopback:
            log.info("metrics: serving http://%s/metrics", where)
        else:
            log.warning("metrics: serving http://%s/metrics beyond this box, without authentication: anyone who can "
                        "reach it reads the edge's devices and backlog (listen on 127.0.0.1 and scrape through a "
                        "local agent or a tunnel, or firewall the port)", where)
        return server

    async def stop(self) -> None:
        """Stop serving (waits for a start still binding)."""
        if self._starting is None:
            return
        server = await asyncio.shield(self._starting)
        self._starting = None
        if server is not None:
            await asyncio.to_thread(server.shutdown)  # returns within the serve loop's 0.5 s poll
            server.server_close()
            self._server = None


class _DaemonCollector(Collector):
    """The metrics read from the daemon, its buffer and its sync loop when Prometheus scrapes (in
    the HTTP server's thread: the buffer is thread-safe, the counters are plain numbers)."""

    def __init__(self, daemon: EdgeDaemon) -> None:
        self.daemon = daemon

    def collect(self) -> Iterator[Metric]:
        d = self.daemon
        ident = d.config.identity
        info = GaugeMetricFamily("sentinel_edge_info", "This edge box", labels=["edge_id", "substation"])
        info.add_metric([ident.edge_id, ident.substation], 1)
        yield info
        yield from self._devices()
        yield from self._buffer()
        yield from self._sync()
        yield CounterMetricFamily("sentinel_edge_readings_scored", "Readings scored for anomalies",
                                  value=d.scoring.readings_scored)

    def _devices(self) -> Iterator[Metric]:
        polls = CounterMetricFamily("sentinel_edge_polls", "Polls (pushed sources: updates) by outcome",
                                    labels=["device", "outcome"])
        up = GaugeMetricFamily("sentinel_edge_device_up", "1 when the device's last poll answered", labels=["device"])
        latency = GaugeMetricFamily("sentinel_edge_device_poll_latency_seconds", "The device's last poll",
                                    labels=["device"])
        for health in list(self.daemon.stats.devices.values()):
            polls.add_metric([health.device_id, "ok"], health.polls)
            polls.add_metric([health.device_id, "failed"], health.failures)
            if health.online is not None:
                up.add_metric([health.device_id], 1.0 if health.online else 0.0)
            if health.last_latency_s is not None:
                latency.add_metric([health.device_id], health.last_latency_s)
        return iter([polls, up, latency])

    def _unpersisted(self, stream: str) -> int:
        """Drops counted by the daemon but not yet committed to the buffer (it cannot be written)."""
        key = DROPPED_UNWRITABLE if stream == "readings" else EVENTS_DROPPED_UNWRITABLE
        return self.daemon.unpersisted_drops().get(key, 0)

    def _buffer(self) -> Iterator[Metric]:
        d = self.daemon
        st = d.buffer.stats()
        now = time.time()
        pending = GaugeMetricFamily("sentinel_edge_buffer_pending", "Items in the buffer waiting for the hub",
                                    labels=["stream"])
        pending.add_metric(["readings"], st.readings_pending)
        pending.add_metric(["events"], st.events_pending)
        pending.add_metric(["ot_logs"], st.ot_logs_pending)
        oldest = GaugeMetricFamily("sentinel_edge_buffer_oldest_unsent_age_seconds",
                                   "Age of the oldest item waiting for the hub (0: none waits)", labels=["stream"])
        for stream, at in (("telemetry", st.oldest_pending), ("ot_logs", st.ot_logs_oldest_pending)):
            oldest.add_metric([stream], max(0.0, now - at.timestamp()) if at is not None else 0.0)
        dropped = CounterMetricFamily("sentinel_edge_dropped", "Items dropped, by what and why",
                                      labels=["stream", "reason"])
        by = st.dropped_by or {}
        dropped.add_metric(["readings", "buffer_full"], by.get("rows", 0))
        dropped.add_metric(["readings", "buffer_bytes"], by.get("bytes", 0))
        dropped.add_metric(["readings", "buffer_age"], by.get("age", 0))
        dropped.add_metric(["readings", "buffer_full_new"], by.get("new", 0))
        # readings dropped before the counts by reason were kept (older buffer files)
        dropped.add_metric(["readings", "buffer_limit"], max(0, st.dropped - sum(by.values())))
        dropped.add_metric(["ot_logs", "buffer_full"], st.ot_logs_dropped)
        dropped.add_metric(["readings", "buffer_unwritable"], st.dropped_unwritable + self._unpersisted("readings"))
        dropped.add_metric(["events", "buffer_unwritable"], st.events_dropped_unwritable + self._unpersisted("events"))
        dropped.add_metric(["messages", "dead_letter"], st.dead_letters)
        capacity = GaugeMetricFamily("sentinel_edge_buffer_capacity_rows",
                                     "Unsent readings (and OT log entries) kept before the oldest are dropped",
                                     value=d.config.buffer.max_rows)
        used = GaugeMetricFamily("sentinel_edge_buffer_used_bytes", "The buffer file's pages in use",
                                 value=st.used_bytes)
        limit = GaugeMetricFamily("sentinel_edge_buffer_limit_bytes", "[buffer] max_bytes (0: no limit)",
                                  value=d.config.buffer.max_bytes)
        return iter([pending, oldest, dropped, capacity, used, limit])

    def _sync(self) -> Iterator[Metric]:
        s = self.daemon.sync.stats
        faults = dict(s.faults)  # a copy: the loop may add a kind meanwhile
        attempts = CounterMetricFamily("sentinel_edge_sync_attempts", "Sync attempts: ok, or the kind of failure",
                                       labels=["outcome"])
        attempts.add_metric(["ok"], s.batches)
        for kind, n in sorted(faults.items()):
            attempts.add_metric([kind], n)
        items = CounterMetricFamily("sentinel_edge_sync_items", "Items the hub acknowledged", labels=["stream"])
        items.add_metric(["readings"], s.readings_sent)
        items.add_metric(["events"], s.events_sent)
        items.add_metric(["ot_logs"], s.ot_logs_sent)
        families: list[Metric] = [attempts, items]
        if s.hub_up is not None:
            families.append(GaugeMetricFamily("sentinel_edge_hub_up", "1 when the last sync attempt succeeded",
                                              value=1.0 if s.hub_up else 0.0))
        return iter(families)
