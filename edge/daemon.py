"""The edge daemon: poll every device, check limits, buffer, sync.

One task per device (``edge.<device>.poll``), one buffer writer (``edge.buffer``) that batches
what the pollers produce into single transactions, one sync loop (``edge.sync``) and, with an
``[ot_logs]`` table, the OT log collectors (``edge.ot_logs.mqtt``, ``edge.ot_logs.file``, see
:mod:`edge.otlogs`), all in an ``asyncio.TaskGroup``; with a ``[metrics]`` table, a Prometheus
endpoint in a thread of its own (:mod:`edge.metrics`). Polling never waits on the hub: when the
hub is down, readings, events and OT log entries pile up in the SQLite buffer and flow out when
it returns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import edge._halt_imports  # noqa: F401  (first: halts imports the edge never uses)
from edge.backoff import Backoff
from edge.buffer import DROPPED_UNWRITABLE, EVENTS_DROPPED_UNWRITABLE, Buffer, ReadingRow, ReadingScores
from edge.limits import LimitMonitor
from edge.scoring import EdgeScoring
from edge.remote_config import ConfigPuller
from edge.sync import SyncLoop
from protocols.config import FirmwareConfig
from protocols.drivers import SourceFactory
from protocols.gridcode import PointSpec
from protocols.otlog import OtLogEvent
from protocols.reading import QualityFlag
from protocols.sources import PolledSource, PushedSource, SourceError, Update
from protocols.wire import DeviceState, EdgeHealth, Event

if TYPE_CHECKING:  # imported where used, only by a box configured for them (docs/edge-footprint.md):
    from edge.metrics import EdgeMetrics  # prometheus_client
    from edge.models import ModelPuller  # cryptography (verifying models)
    from edge.otlogs import FileFollower, MqttCollector  # the MQTT client

log = logging.getLogger(__name__)

_BAD = int(QualityFlag.INVALID | QualityFlag.COMM_LOST)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("smartgrid-sentinel")
    except Exception:  # noqa: BLE001  (run from a source tree without installing)
        return "unknown"


_SOFTWARE = _version()


@dataclass
class DeviceHealth:
    device_id: str
    online: bool | None = None  # None until the first poll
    polls: int = 0
    failures: int = 0
    last_error: str = ""
    last_poll: float | None = None
    last_latency_s: float | None = None
    # pushed sources: readings whose device timestamp stepped back or repeated (a clock step, a DST
    # repeat) and that were stored at the edge's receive time instead, flagged clock_unsync
    clock_retimed: int = 0
    clock_steps: int = 0  # episodes of that (an update with such readings after one without)


@dataclass
class EdgeStats:
    readings_buffered: int = 0
    events_buffered: int = 0
    anomaly_events: int = 0
    dead_letters: int = 0
    ot_logs_buffered: int = 0
    buffer_error: str = ""  # why the buffer cannot be written now ("": it can)
    readings_dropped_unwritable: int = 0  # this run; the buffer's meta keeps the total
    events_dropped_unwritable: int = 0
    devices: dict[str, DeviceHealth] = field(default_factory=dict)


class _Device:
    def __init__(self, source: PolledSource | PushedSource, monitor: LimitMonitor) -> None:
        self.id = source.device_id
        self.source = source
        self.monitor = monitor
        self.metrics = [p.metric for p in source.points]
        self.units = [p.unit for p in source.points]
        self.last = np.full(len(self.metrics), np.nan)  # latest value per point (pushed sources)
        self.held = np.full(len(self.metrics), np.nan)  # value the point has held ...
        self.held_since = np.zeros(len(self.metrics))  # ... since this time (for the stale flag)
        self.latest_ts = np.full(len(self.metrics), -np.inf)  # latest timestamp stored per point (pushed)
        self.clock_stepping = False  # the last update had readings retimed

    def monotonic_times(self, ts: np.ndarray, index: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray]:
        """``(times, retimed)`` for a pushed update's readings: the device's timestamps, except where one
        is not later than the latest stored for its point (the device's clock stepped back, or it
        repeated a time): those readings get the edge's receive time ``now`` (1 ms apart, after that
        latest), so nothing collides with what is stored (the hub keeps one reading per device,
        metric and time) and every reading is kept. Readings go through in time order per point."""
        ts = np.asarray(ts, dtype=np.float64)
        index = np.asarray(index, dtype=np.int64)
        order = np.lexsort((ts, index))
        t, i = ts[order], index[order]
        same_point = np.concatenate([[False], i[1:] == i[:-1]])
        prev = np.where(same_point, np.concatenate([[-np.inf], t[:-1]]), self.latest_ts[i])
        if len(t) == 0 or (t > prev).all():  # the usual case: every time is new
            np.maximum.at(self.latest_ts, index, ts)
            return ts, np.zeros(len(ts), dtype=bool)
        out = ts.copy()
        retimed = np.zeros(len(ts), dtype=bool)
        for k in order.tolist():  # rare: a step; one reading at a time, in time order per point
            p = int(index[k])
            if ts[k] > self.latest_ts[p]:
                self.latest_ts[p] = ts[k]
                continue
            out[k] = max(now, self.latest_ts[p] + 1e-3)
            self.latest_ts[p] = out[k]
            retimed[k] = True
        return out, retimed

    def stale_flags(self, ts: float, values: np.ndarray, index: np.ndarray | None, stale_after_s: float | None
                    ) -> np.ndarray:
        """STALE where a point's value has not changed for longer than ``stale_after_s``."""
        idx = np.arange(len(self.metrics)) if index is None else index
        changed = values != self.held[idx]  # NaN != anything: a missing value restarts the clock
        self.held[idx] = values
        self.held_since[idx] = np.where(changed, ts, self.held_since[idx])
        if stale_after_s is None:
            return np.zeros(len(idx), dtype=np.int64)
        return np.where(ts - self.held_since[idx] > stale_after_s, int(QualityFlag.STALE), 0).astype(np.int64)


class EdgeDaemon:
    def __init__(self, config: FirmwareConfig, buffer_path: str | Path | None = None, *,
                 token: str | None = None, config_path: str | Path | None = None) -> None:
        """``token``: this edge's hub credential, instead of the environment variable its config
        names (the demo and tests run several edges in one process). ``config_path``: the file the
        config came from; given, the edge takes new configs from the hub (edge/remote_config.py)."""
        self.config = config
        ident = config.identity
        b = config.buffer
        self.buffer = Buffer(buffer_path or config.buffer_path(), ident.substation, b.max_rows, max_bytes=b.max_bytes,
                             max_age_s=b.max_age_s, policy=b.policy, keep_window_s=b.keep_window_s,
                             keep_score=b.keep_score)
        self.sync = SyncLoop(config, self.buffer, token=token, health=self.health_report)
        self.stats = EdgeStats()
        self.scoring = EdgeScoring(ident.substation, config.scoring)
        cache = None if str(self.buffer.path) == ":memory:" else self.buffer.path.with_name(
            self.buffer.path.name + ".models")  # verified models kept beside the buffer
        self.models: ModelPuller | None = None
        if config.scoring.model:
            from edge.models import ModelPuller

            self.models = ModelPuller(config, self.scoring.scorer, cache_dir=cache, token=token)
        self.metrics: EdgeMetrics | None = None
        if config.metrics is not None:
            from edge.metrics import EdgeMetrics

            self.metrics = EdgeMetrics(self, config.metrics)
        self.remote_config = ConfigPuller(self, config_path, token=token) if config_path is not None else None
        self._queue: asyncio.Queue[tuple[list[ReadingRow], list[Event]]] = asyncio.Queue()
        self._taken: tuple[list[ReadingRow], list[Event]] | None = None  # off the queue, not yet written
        self._reading = 0  # polls with a read in flight
        self._round_done = asyncio.Event()  # set when the last read in flight ends
        # scored batches the buffer could not take yet (disk full): (rows, events, scores)
        self._held: collections.deque[tuple[list[ReadingRow], list[Event], ReadingScores]] = collections.deque()
        self._held_rows = 0
        self._unpersisted_drops: dict[str, int] = {}  # counted, not yet committed to the buffer's meta
        self._rejects: collections.deque = collections.deque(maxlen=10_000)
        self._inflight: asyncio.Future[int] | None = None  # the buffer write running in a worker thread
        self._factory = SourceFactory(ident.edge_id)
        self.devices: list[_Device] = []
        for dev in config.devices:
            for source in self._factory.create(dev):
                if hasattr(source, "on_reject"):  # pushed sources that can receive malformed messages
                    source.on_reject = self._reject
                specs = [PointSpec(p.metric, p.unit, p.nominal, p.limit_low, p.limit_high) for p in source.points]
                monitor = LimitMonitor(ident.substation, dev.id, specs, config.limits)
                self.devices.append(_Device(source, monitor))
            self.stats.devices[dev.id] = DeviceHealth(dev.id)
        self.ot_log_sources: list[MqttCollector | FileFollower] = []
        self._ot_writes: set[asyncio.Future[None]] = set()  # OT log writes running in worker threads
        if config.ot_logs is not None:
            from edge.otlogs import FileFollower, MqttCollector

            if config.ot_logs.mqtt is not None:
                self.ot_log_sources.append(MqttCollector(config.ot_logs.mqtt, ident.edge_id, ident.substation,
                                                         self._buffer_ot_logs))
            if config.ot_logs.file is not None:
                self.ot_log_sources.append(FileFollower(config.ot_logs.file, ident.substation, self._buffer_ot_logs,
                                                        self.buffer.position))

    async def run(self) -> None:
        """Run until cancelled; on the way out, flush what was polled into the buffer."""
        log.info("edge %s (%s): %d devices, hub %s", self.config.identity.edge_id,
                 self.config.identity.substation, len(self.devices), self.config.hub.url)
        try:
            if self.metrics is not None:
                await self.metrics.start()
            async with asyncio.TaskGroup() as tg:
                for d in self.devices:
                    if isinstance(d.source, PolledSource):
                        tg.create_task(self._poll(d), name=f"edge.{d.id}.poll")
                    else:
                        tg.create_task(self._listen(d), name=f"edge.{d.id}.listen")
                for src in self.ot_log_sources:
                    tg.create_task(src.run(), name=f"edge.ot_logs.{src.stats.kind}")
                tg.create_task(self._writer(), name="edge.buffer")
                tg.create_task(self._publish_status(), name="edge.status")
                tg.create_task(self.sync.run(), name="edge.sync")
                if self.models is not None:
                    tg.create_task(self.models.run(), name="edge.models")
                if self.remote_config is not None:
                    tg.create_task(self.remote_config.run(), name="edge.config")
        finally:
            if self.metrics is not None:
                await _bounded(self.metrics.stop(), "stopping the metrics endpoint")
            await self._flush()
            # a device or an HTTP connection that will not close must not hold the shutdown up: all
            # are closed at once, and the lot given CLOSE_TIMEOUT_S (not that much each, one by one)
            closing = [*(d.source.close() for d in self.devices), self._factory.aclose(), self.sync.aclose(),
                       *([self.models.aclose()] if self.models is not None else [])]
            await _bounded(asyncio.gather(*closing, return_exceptions=True),
                           "closing the devices' and the hub's connections")
            if self._held_rows or self._unpersisted_drops:
                log.error("shutting down with %d readings held that the buffer could not take (%s): they are lost",
                          self._held_rows, self.stats.buffer_error)
            try:
                self.buffer.set_status(json.dumps(self.status_snapshot()))  # the last word, for `edge status`
            except sqlite3.Error as exc:
                log.warning("last status not written: %s", exc)
            self.buffer.close()

    # -- polling ------------------------------------------------------------------------------

    async def _poll(self, d: _Device) -> None:
        loop = asyncio.get_running_loop()
        src = d.source
        assert isinstance(src, PolledSource)
        health = self.stats.devices[d.id]
        # reconnect attempts back off from one poll interval to a cap of 5 intervals (5-30 s)
        backoff = Backoff(src.poll_interval_s, min(30.0, max(5.0, 5 * src.poll_interval_s)))
        next_t = loop.time()
        while True:
            delay = next_t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            ts = time.time()
            started = loop.time()
            self._reading += 1
            try:
                values, flags = await src.read()
            except SourceError as exc:
                self._down(d, ts, exc)
                next_t = loop.time() + backoff.next_delay()
                continue
            finally:
                self._reading -= 1
                if not self._reading:
                    self._round_done.set()
            health.last_latency_s = loop.time() - started
            self._up(d, ts)
            backoff.reset()
            self._queue.put_nowait((self._rows(d, ts, values, flags), d.monitor.check(ts, values)))
            next_t += src.poll_interval_s
            if next_t < loop.time():  # fell behind (slow device): skip the missed slots
                next_t = loop.time()

    async def _listen(self, d: _Device) -> None:
        """Consume a pushed source; on failure back off and subscribe again."""
        src = d.source
        assert isinstance(src, PushedSource)
        backoff = Backoff(1.0, 30.0)
        while True:
            try:
                async for update in src.stream():
                    now = time.time()
                    self._up(d, now)
                    backoff.reset()
                    self._queue.put_nowait(self._update_rows(d, update))
            except SourceError as exc:
                self._down(d, time.time(), exc)
            await asyncio.sleep(backoff.next_delay())

    def _down(self, d: _Device, ts: float, exc: SourceError) -> None:
        health = self.stats.devices[d.id]
        health.failures += 1
        health.last_error = exc.reason
        if health.online is not False:  # log on change of state, not per failed poll
            log.error("device %s down: %s", d.id, exc)
            self._queue.put_nowait(([], [d.monitor.offline(ts, exc.reason, online=False)]))
        health.online = False

    def _up(self, d: _Device, ts: float) -> None:
        health = self.stats.devices[d.id]
        if health.online is False:
            log.info("device %s answers again", d.id)
            self._queue.put_nowait(([], [d.monitor.offline(ts, "", online=True)]))
        health.online = True
        health.polls += 1
        health.last_poll = ts

    def _update_rows(self, d: _Device, u: Update) -> tuple[list[ReadingRow], list[Event]]:
        """Rows for a pushed update; limits are checked on the device's latest value of every point."""
        events: list[Event] = []
        rows: list[ReadingRow] = []
        stamps, retimed = d.monotonic_times(u.ts, u.index, time.time())
        flags = u.flags
        if retimed.any():
            flags = np.where(retimed, u.flags | int(QualityFlag.CLOCK_UNSYNC), u.flags)
            health = self.stats.devices.get(d.id)
            if health is not None:
                health.clock_retimed += int(retimed.sum())
                health.clock_steps += 0 if d.clock_stepping else 1
            if not d.clock_stepping:
                log.warning("device %s: %d readings' timestamps step back or repeat one already stored (clock "
                            "step?); stored at the edge's receive time, flagged clock_unsync", d.id, int(retimed.sum()))
        d.clock_stepping = bool(retimed.any())
        order = np.argsort(stamps, kind="stable")
        for ts in np.unique(stamps[order]):
            sel = order[stamps[order] == ts]
            d.last[u.index[sel]] = u.values[sel]
            events.extend(d.monitor.check(float(ts), d.last))
            rows.extend(self._rows(d, float(ts), u.values[sel], flags[sel], u.index[sel]))
        return rows, events

    def _rows(self, d: _Device, ts: float, values: np.ndarray, flags: np.ndarray,
              index: np.ndarray | None = None) -> list[ReadingRow]:
        finite = np.isfinite(values)
        flags = np.where(finite, flags, flags | QualityFlag.INVALID)
        flags = flags | d.stale_flags(ts, values, index, self.config.quality.stale_after_s)
        quality = np.where(flags & _BAD, 0.0, np.where(flags != 0, 0.5, 1.0))
        metrics = d.metrics if index is None else [d.metrics[i] for i in index.tolist()]
        units = d.units if index is None else [d.units[i] for i in index.tolist()]
        return [
            (ts, d.id, m, v if ok else None, un, q, f)
            for m, v, ok, un, q, f in zip(metrics, values.tolist(), finite.tolist(), units, quality.tolist(),
                                          flags.tolist())
        ]

    # -- status -------------------------------------------------------------------------------

    STATUS_EVERY_S = 2.0

    def status_snapshot(self) -> dict:
        sync = self.sync.stats
        return {
            "edge_id": self.config.identity.edge_id,
            "substation": self.config.identity.substation,
            "updated_at": time.time(),
            "pid": os.getpid(),
            "hub": {"url": self.config.hub.url, "up": sync.hub_up, "last_error": sync.last_error,
                    "batches": sync.batches, "readings_sent": sync.readings_sent, "failures": sync.failures,
                    "hub_faults": sync.hub_faults, "last_fault": sync.last_fault},
            "devices": [asdict(h) for h in self.stats.devices.values()],
            "buffer": {"error": self.stats.buffer_error, "held_readings": self._held_rows,
                       "dropped_unwritable": self.stats.readings_dropped_unwritable},
            "scoring": self.scoring_status(),
            "ot_logs": {"sent": sync.ot_logs_sent, "hub_refuses": sync.ot_logs_refused,
                        "sources": [src.snapshot() for src in self.ot_log_sources]},
            "remote_config": self.remote_config.snapshot() if self.remote_config is not None else None,
        }

    def health_report(self) -> EdgeHealth:
        """What the hub's fleet view shows of this edge (sent with a sync now and then; blocking: reads
        the buffer)."""
        pending, oldest, dropped = self.buffer.backlog()
        model = self.scoring.scorer.model
        return EdgeHealth(software=_SOFTWARE, model=model.label if model is not None else "",
                          readings_pending=pending, oldest_pending=oldest, dropped=dropped,
                          config_version=int(self.buffer.get_meta("config_version")),
                          devices=[DeviceState(device_id=h.device_id, up=h.online is not False,
                                               error=h.last_error[:500] if h.online is False else "")
                                   for h in list(self.stats.devices.values())[:1000]])

    def scoring_status(self) -> dict:
        model = self.scoring.scorer.model
        pull = self.models
        return {"model": model.label if model is not None else None,
                "wanted": pull.name if pull else None, "refused": pull.refused if pull else "",
                "hub_error": pull.last_error if pull else "",
                "readings_scored": self.scoring.readings_scored, "anomaly_events": self.stats.anomaly_events,
                "active_anomalies": len(self.scoring.monitor.active)}

    async def _publish_status(self) -> None:
        while True:
            text = json.dumps(self.status_snapshot())
            try:
                await asyncio.to_thread(self.buffer.set_status, text)
            except sqlite3.Error as exc:  # disk full: the status is a convenience, the readings are not
                log.debug("status not written: %s", exc)
            await asyncio.sleep(self.STATUS_EVERY_S)

    # -- buffering ----------------------------------------------------------------------------

    ROUND_WAIT_S = 0.25  # the longest the writer waits for the rest of a poll round

    async def _writer(self) -> None:
        while True:
            self._taken = await self._queue.get()
            if not self._taken[1]:  # (an event is buffered and sent at once)
                await self._rest_of_round()
            (rows, events), self._taken = self._taken, None
            await self._write(rows, events)

    async def _rest_of_round(self) -> None:
        """Wait for the polls still reading (at most ``ROUND_WAIT_S``, and half the shortest poll
        interval), so that a round of polls is scored and buffered as one batch: a scorer call costs
        about as much for 100 series as for 500, and a transaction as much for 100 rows as for 500
        (docs/edge-footprint.md)."""
        if not self._reading:
            return
        polled = [d.source.poll_interval_s for d in self.devices if isinstance(d.source, PolledSource)]
        self._round_done.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min([self.ROUND_WAIT_S, *(0.5 * s for s in polled)])):
                await self._round_done.wait()

    async def _flush(self) -> None:
        if self._inflight is not None:  # a write the cancelled writer left running: let it finish first
            await asyncio.gather(self._inflight, return_exceptions=True)
        if self._ot_writes:  # and the OT log writes the cancelled collectors left running
            await asyncio.gather(*self._ot_writes, return_exceptions=True)
        if self._taken is not None or not self._queue.empty():
            (rows, events), self._taken = self._taken or ([], []), None
            await self._write(rows, events)

    def _score_and_append(self, rows: list[ReadingRow], events: list[Event]) -> int:
        """Score the batch's rows in one scorer call, then buffer rows, scores and events in one
        transaction, and count them (in a worker thread: one at a time, as the writer awaits it and
        the flush at shutdown awaits the one in flight). Returns how many anomaly events it made.

        A reading counts as received only once its transaction commits. When the buffer cannot be
        written (disk full, I/O error), scored batches are held in memory, up to ``[buffer]
        hold_rows`` readings, and written with the next batch that can be; past that the oldest held
        are dropped and counted (``dropped_unwritable``, committed with the first write that works)."""
        started = time.perf_counter()
        scores, anomalies = self.scoring.score(rows)
        if self.metrics is not None and rows:
            self.metrics.scored(time.perf_counter() - started)
        self._held.append((rows, events + anomalies, scores))
        self._held_rows += len(rows)
        all_rows = [r for b in self._held for r in b[0]]
        all_events = [e for b in self._held for e in b[1]]
        all_scores = ([s for b in self._held for s in b[2][0]], [t for b in self._held for t in b[2][1]])
        try:
            self.buffer.append(all_rows, all_events, all_scores if all_rows else None,
                               counters=self._unpersisted_drops)
        except sqlite3.Error as exc:
            self._cannot_store(exc)
            return len(anomalies)
        if self.stats.buffer_error:
            log.info("buffer writable again: %d held readings stored", len(all_rows))
            self.stats.buffer_error = ""
        self._held.clear()
        self._held_rows = 0
        self._unpersisted_drops = {}
        self.stats.readings_buffered += len(all_rows)
        self.stats.events_buffered += len(all_events)
        self.stats.anomaly_events += len(anomalies)
        return len(anomalies)

    def unpersisted_drops(self) -> dict[str, int]:
        """Drops counted but not yet committed to the buffer's meta (it cannot be written now)."""
        return dict(self._unpersisted_drops)

    def _cannot_store(self, exc: sqlite3.Error) -> None:
        """The buffer refused a write: keep the batch held, drop the oldest past the cap, counted."""
        if not self.stats.buffer_error:  # on change of state, not per write
            log.error("cannot write the buffer %s (%s): holding readings in memory (up to %d) until it can",
                      self.buffer.path, exc, self.config.buffer.hold_rows)
        self.stats.buffer_error = str(exc)
        cap = self.config.buffer.hold_rows
        dropped_rows = dropped_events = 0
        while self._held and self._held_rows > cap:
            rows, events, _ = self._held.popleft()
            self._held_rows -= len(rows)
            dropped_rows += len(rows)
            dropped_events += len(events)
        if dropped_rows or dropped_events:
            d = self._unpersisted_drops
            d[DROPPED_UNWRITABLE] = d.get(DROPPED_UNWRITABLE, 0) + dropped_rows
            d[EVENTS_DROPPED_UNWRITABLE] = d.get(EVENTS_DROPPED_UNWRITABLE, 0) + dropped_events
            self.stats.readings_dropped_unwritable += dropped_rows
            self.stats.events_dropped_unwritable += dropped_events
            log.error("buffer still unwritable: dropped the %d oldest held readings (and %d events); %d dropped "
                      "so far", dropped_rows, dropped_events, self.stats.readings_dropped_unwritable)

    async def _buffer_ot_logs(self, entries: list[OtLogEvent], letters: list,
                              position: tuple[str, str] | None) -> None:
        """The OT log collectors' sink: entries, dead letters and a file position in one transaction,
        in a worker thread; shielded, so a collector cancelled meanwhile does not lose it (the flush
        at shutdown waits for it)."""
        fut = asyncio.ensure_future(asyncio.to_thread(self.buffer.append_ot_logs, entries, letters, position))
        self._ot_writes.add(fut)
        fut.add_done_callback(self._ot_writes.discard)
        await asyncio.shield(fut)
        self.stats.ot_logs_buffered += len(entries)
        self.stats.dead_letters += len(letters)
        if entries:
            self.sync.wake.set()

    def _reject(self, letters: list) -> None:
        """Called by a pushed source (in the loop) with messages it could not use."""
        self._rejects.extend(letters)
        self.stats.dead_letters += len(letters)
        self._queue.put_nowait(([], []))  # wake the writer

    async def _write(self, rows: list[ReadingRow], events: list[Event]) -> None:
        rows, events = list(rows), list(events)
        while not self._queue.empty():  # take everything queued so far in one transaction
            r, e = self._queue.get_nowait()
            rows.extend(r)
            events.extend(e)
        if self._rejects:
            letters = list(self._rejects)
            self._rejects.clear()
            await asyncio.to_thread(self.buffer.add_dead_letters, letters)
        if not rows and not events:
            return
        # shielded: a cancelled writer does not lose the batch; _flush waits for it before its own write
        self._inflight = asyncio.ensure_future(asyncio.to_thread(self._score_and_append, rows, events))
        anomalies = await asyncio.shield(self._inflight)
        self._inflight = None
        if events or anomalies:
            self.sync.wake.set()


CLOSE_TIMEOUT_S = 5.0


async def _bounded(aw: Awaitable[object], what: str, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Await ``aw`` for at most ``timeout_s``; past that, log and go on with the shutdown."""
    try:
        async with asyncio.timeout(timeout_s):
            await aw
    except TimeoutError:
        log.warning("%s took longer than %g s; shutting down without waiting", what, timeout_s)
