"""What each agent is handed: storage reads shaped into the agents' input types, and the agents'
products shaped back into incidents and documents. Blocking (storage is synchronous): the
orchestrator calls these in worker threads.

Each ``run_*`` function takes the storage, the agents' settings and ``now``, and returns an
:class:`AgentOutput`. The agents themselves (``agents/``) never touch storage.
"""

from __future__ import annotations

import itertools
import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import numpy as np

from agents import anomaly_detector, cyber_sentinel, demand_forecaster, grid_monitor, maintenance_predictor
from agents.findings import Finding
from hub.insights.explanations import explain_findings
from hub.insights.shards import Shard, splitting
from hub.site import SiteConfig
from hub.storage.base import Document, HourlyMean, Storage, series_of_key
from protocols import gridcode
from protocols.config import Limits
from protocols.reading import QualityFlag, sensor_type
from protocols.validation import physical_range

__all__ = ["AgentOutput", "AgentSettings", "EPISODES_KIND", "RUNNERS"]

log = logging.getLogger(__name__)

# what the maintenance predictor reads of a transformer; DGA monitors report ppm as dga_<gas>
DGA_METRICS = {f"dga_{gas.lower()}": gas for gas in maintenance_predictor.GASES}
TRANSFORMER_METRICS = ("oil_temperature", "winding_temperature", "load_current", "ambient_temperature", "vibration",
                       *DGA_METRICS)
LOAD_METRICS = ("active_power",)


@dataclass(frozen=True)
class AgentSettings:
    """How much data each agent looks at, and the site facts the hub cannot measure."""

    grid_window_s: float = 900.0  # the grid monitor's window of readings
    anomaly_window_s: float = 3600.0  # readings whose edge scores the anomaly detector groups
    baseline_days: float = 30.0  # hourly history for the anomaly detector's baselines
    history_days: float = 28.0  # hourly transformer history (health)
    # hourly load history for the demand forecaster: its day-ahead MAPE on real PJM zones falls from
    # about 6 % with 28 days to 2.8-4.2 % with 730 and 2.7-4.2 % with 1,095 (docs/forecasting.md); it
    # uses whatever is stored
    load_history_days: float = 1095.0
    cyber_window_s: float = 86_400.0
    # keep the 1 Hz windows between cycles and read only what arrived since (WindowCache;
    # SENTINEL_AGENT_INCREMENTAL=on): for regions of thousands of points, where reading the windows
    # whole takes most of a cycle. Readings later than 2 minutes are seen at the next full read
    # (every 10 minutes).
    incremental_windows: bool = False
    limits: Limits = field(default_factory=Limits)
    # feeder ratings and adjacency, capacities and holidays, the cyber policy (hub/site.py); a
    # feeder or substation without a capacity gets 1.25 x its highest hourly load, and says so
    site: SiteConfig = field(default_factory=SiteConfig)
    # the model registry whose IsolationForests explain multivariate anomalies (hub.insights.explanations)
    model_registry: str | None = None
    # this process's share of the substations (`sentinel hub agents --shard I/N`, SENTINEL_AGENT_SHARD;
    # hub/insights/shards.py); None: every substation
    shard: Shard | None = None
    # split: how old another shard's stored episodes may be for shard 0 to correlate them (a few of
    # its cycles); older ones are of a shard whose process stopped
    shard_episodes_max_age_s: float = 300.0


@dataclass
class AgentOutput:
    findings: list[Finding] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


_UNUSABLE = int(QualityFlag.INVALID | QualityFlag.COMM_LOST)


@dataclass(frozen=True, slots=True)
class _Window:
    """One series' readings in a window, as arrays in time order. ``values`` and ``scores`` are NaN
    where the reading measured nothing of the grid: flagged invalid (edge sync keeps impossible
    values so), a lost device's placeholder, or a value no instrument can give (stored before it
    was refused): the agents see a missing sample, so it never becomes a finding."""

    substation: str
    device_id: str
    metric: str
    unit: str  # the newest reading's
    ts: np.ndarray  # epoch seconds
    values: np.ndarray
    scores: np.ndarray  # the edge's anomaly scores, NaN where none
    types: np.ndarray  # the edge's anomaly types (object: str or None)


def _windows(storage: Storage, start: datetime, end: datetime, chunk_rows: int = 200_000, *,
             substations: Sequence[str] | None = None) -> list[_Window]:
    """Every series' readings in [start, end) (of ``substations`` only, if given), read in chunks
    and shaped into arrays: one dict lookup per row for its series (and one for its unit), the rest
    numpy; no Reading per row, and a window of millions of rows is read whole, not cut at a row
    limit. Series in order of their first key seen, readings in time order."""
    series: dict[str, int] = {}  # key -> the number of the row that first held it (unique, increasing)
    units: dict[str, int] = {}
    rows_seen, units_seen = itertools.count(), itertools.count()
    parts: list[tuple[np.ndarray, ...]] = []
    for rows in storage.iter_window_rows(start, end, chunk_rows, substations=substations):
        ts, keys, values, unit, flags, scores, types = zip(*rows)
        n = len(rows)
        del rows
        parts.append((np.fromiter(map(series.setdefault, keys, rows_seen), np.int64, n),
                      np.fromiter(map(units.setdefault, unit, units_seen), np.int64, n),
                      np.array(ts, dtype=np.float64), np.array(values, dtype=np.float64),
                      np.array(flags, dtype=np.int64), np.array(scores, dtype=np.float64),
                      np.array(types, dtype=object)))
        del ts, keys, values, unit, flags, scores, types
    if not parts:
        return []
    ids, unit_ids, ts, values, flags, scores, types = (np.concatenate(c) for c in zip(*parts))
    del parts
    ids, unit_ids = _dense(ids, series), _dense(unit_ids, units)
    order = np.lexsort((ts, ids))  # by series, in time order within each
    bounds = np.cumsum(np.bincount(ids, minlength=len(series)))[:-1]
    unit_names = list(units)
    out = []
    for key, idx in zip(series, np.split(order, bounds)):
        substation, device_id, metric = series_of_key(key)
        v, u = values[idx], unit_ids[idx]
        bad = (flags[idx] & _UNUSABLE) != 0
        for j in np.unique(u).tolist():
            bad |= _impossible(metric, unit_names[j], v) & (u == j)
        v[bad] = np.nan
        sc = scores[idx]
        sc[bad] = np.nan  # the edge scored a broken sensor, not the grid
        out.append(_Window(substation, device_id, metric, unit_names[int(u[-1])], ts[idx], v, sc, types[idx]))
    return out


def _dense(ids: np.ndarray, first: dict[str, int]) -> np.ndarray:
    """``ids`` (each key's first row number, as ``first`` holds them) as 0, 1, 2 ... in ``first``'s order."""
    lut = np.zeros(int(ids.max()) + 1, dtype=np.int64)
    lut[np.fromiter(first.values(), np.int64, len(first))] = np.arange(len(first))
    return lut[ids]


def _impossible(metric: str, unit: str, values: np.ndarray) -> np.ndarray:
    """Which of ``values`` (NaN: missing) no instrument measuring ``metric`` in ``unit`` can give
    (:func:`protocols.validation.physical_range`, as ingest checks)."""
    r = physical_range(metric, unit)
    with np.errstate(invalid="ignore"):
        bad = np.isinf(values) | (values < r.low) | (values > r.high)
        if r.low_open:
            bad |= values == r.low
        if r.high_open:
            bad |= values == r.high
    return bad


class WindowCache:
    """The agents' 1 Hz windows kept between cycles (``AgentSettings.incremental_windows``), so a
    cycle reads what arrived since the last one, not the whole window again: at 20,000 points a
    15-minute window is 18 M readings, a minute of new data 1.2 M (docs/scaling.md).

    It holds the last ``span_s`` seconds of every series before the newest ``end`` asked. A cycle
    later in time reads from ``margin_s`` before where the last read ended, so readings that came
    in up to that late are seen (the margin is read again and replaces what was held of it);
    every ``full_every_s`` the whole span is read again, which brings in anything later still (an
    edge's backlog after an outage). A question about an earlier time, or a longer span, is read
    from storage as it stands, the cache untouched. Thread-safe: the agents ask concurrently."""

    def __init__(self, span_s: float, *, margin_s: float = 120.0, full_every_s: float = 600.0) -> None:
        self.span_s, self.margin_s, self.full_every_s = span_s, margin_s, full_every_s
        self._series: dict[tuple[str, str, str], _Window] = {}
        self._substations: frozenset[str] | None = None  # what the held windows are of (None: all)
        self._read_to: float | None = None
        self._full_at = -np.inf
        self._lock = threading.Lock()
        self.reads = {"full": 0, "incremental": 0, "direct": 0}  # what the windows came from

    def windows(self, storage: Storage, start: datetime, end: datetime,
                substations: Sequence[str] | None = None) -> list[_Window]:
        """The windows of ``substations`` (None: all); when they differ from those held (a shard's
        substations changed), the span is read whole again."""
        lo, hi = start.timestamp(), end.timestamp()
        subs = None if substations is None else frozenset(substations)
        with self._lock:
            if hi - lo > self.span_s or (self._read_to is not None and hi < self._read_to):
                self.reads["direct"] += 1
                return _windows(storage, start, end, substations=substations)
            if self._read_to is None or hi - self._full_at >= self.full_every_s or subs != self._substations:
                self._series = {(w.substation, w.device_id, w.metric): w
                                for w in _windows(storage, end - timedelta(seconds=self.span_s), end,
                                                  substations=substations)}
                self._read_to = self._full_at = hi
                self._substations = subs
                self.reads["full"] += 1
            elif hi > self._read_to:
                self._merge(storage, hi)
                self.reads["incremental"] += 1
            # copies: an agent may change its input in place, the cache must not see it
            return [w for w in (_slice(w, lo, hi, copy=True) for w in self._series.values()) if w is not None]

    def _merge(self, storage: Storage, hi: float) -> None:
        assert self._read_to is not None
        since = max(self._read_to - self.margin_s, hi - self.span_s)
        subs = None if self._substations is None else sorted(self._substations)
        fresh = {(w.substation, w.device_id, w.metric): w
                 for w in _windows(storage, datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(hi, UTC),
                                   substations=subs)}
        merged: dict[tuple[str, str, str], _Window] = {}
        for key in [*self._series, *(k for k in fresh if k not in self._series)]:
            old, new = self._series.get(key), fresh.get(key)
            kept = _slice(old, hi - self.span_s, since) if old is not None else None
            if kept is None:
                if new is not None:
                    merged[key] = new
                continue
            if new is None:
                merged[key] = kept
                continue
            merged[key] = _Window(key[0], key[1], key[2], new.unit, np.concatenate([kept.ts, new.ts]),
                                  np.concatenate([kept.values, new.values]),
                                  np.concatenate([kept.scores, new.scores]), np.concatenate([kept.types, new.types]))
        self._series, self._read_to = merged, hi


def _slice(w: _Window, lo: float, hi: float, *, copy: bool = False) -> _Window | None:
    """``w``'s readings with lo <= ts < hi (views of its arrays, or copies); None if none."""
    a, b = np.searchsorted(w.ts, [lo, hi], side="left")
    if a >= b:
        return None
    if a == 0 and b == len(w.ts) and not copy:
        return w
    cut = (lambda x: x[a:b].copy()) if copy else (lambda x: x[a:b])  # noqa: E731
    return _Window(w.substation, w.device_id, w.metric, w.unit, cut(w.ts), cut(w.values), cut(w.scores),
                   cut(w.types))


# per storage: the cache of every substation's windows ("all") and that of a shard's ("shard")
_CACHES: weakref.WeakKeyDictionary[Any, dict[str, WindowCache]] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _agent_windows(storage: Storage, s: AgentSettings, start: datetime, end: datetime,
                   substations: Sequence[str] | None = None, agent: str = "grid_monitor") -> list[_Window]:
    """The window [start, end) of ``substations`` (None: all): from this storage's
    :class:`WindowCache` with ``s.incremental_windows``, else read whole. The unsplit agents share
    one cache; a shard's grid monitor and anomaly detector read different substations (the grid
    monitor's adjacent feeders too) and windows, so each has its own."""
    if not s.incremental_windows:
        return _windows(storage, start, end, substations=substations)
    with _CACHES_LOCK:
        caches = _CACHES.setdefault(storage, {})
        tag = "all" if substations is None else f"shard {agent}"
        cache = caches.get(tag)
        if cache is None:
            cache = caches[tag] = WindowCache(
                max(s.grid_window_s, s.anomaly_window_s) if tag == "all"
                else s.anomaly_window_s if agent == "anomaly_detector" else s.grid_window_s)
    return cache.windows(storage, start, end, substations)


def _grid_scope(storage: Storage, s: AgentSettings, start: datetime, end: datetime
                ) -> tuple[list[str] | None, set[str] | None]:
    """(the substations whose windows the grid monitor reads, those it reports on); (None, None):
    all. A shard reads its own substations, and those holding a feeder adjacent to one of its
    feeders (site config): a load-transfer recommendation weighs that feeder's present load."""
    shard = splitting(s.shard)
    if shard is None:
        return None, None
    devices = storage.devices_between(start, end)
    own = {sub for sub, _ in devices if shard.holds(sub)}
    read = set(own)
    adjacency = s.site.adjacency()
    if adjacency:
        ties: dict[str, set[str]] = defaultdict(set)  # undirected, as the grid monitor reads them
        for a, bs in adjacency.items():
            for b in bs:
                ties[a].add(b)
                ties[b].add(a)
        mine = {dev for sub, dev in devices if sub in own and dev in ties}
        wanted = set().union(*(ties[dev] for dev in mine))
        read |= {sub for sub, dev in devices if dev in wanted}
    return sorted(read), own


# -- grid monitor -----------------------------------------------------------------------------------

def run_grid_monitor(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    series = []
    start = now - timedelta(seconds=s.grid_window_s)
    read, own = _grid_scope(storage, s, start, now)
    for w in _agent_windows(storage, s, start, now, read):
        nominal = None
        if sensor_type(w.metric) == "voltage" and np.isfinite(w.values).any():
            nominal = gridcode.infer_nominal_voltage(float(np.nanmedian(w.values)), w.unit)
        series.append(grid_monitor.Series(device_id=w.device_id, substation=w.substation, metric=w.metric,
                                          timestamps=w.ts, values=w.values, unit=w.unit, nominal=nominal))
    if not series:
        return AgentOutput(summary={"series": 0})
    feeders = [grid_monitor.FeederRating(device_id=name, rating=f.rating, unit=f.unit)
               for name, f in s.site.feeders.items()]
    snapshot = grid_monitor.GridSnapshot(series=series, feeders=feeders, adjacency=s.site.adjacency())
    report = grid_monitor.analyse(snapshot, grid_monitor.GridMonitorConfig(limits=s.limits))
    status, findings = report.substation_status, report.findings
    if own is not None:  # a shard reports on its own substations only (it read some others' feeders)
        status = {sub: st for sub, st in status.items() if sub in own}
        findings = [f for f in findings if f.substation in own]
        series = [x for x in series if x.substation in own]
    docs = [Document(kind="grid_status", key=sub, timestamp=now,
                     body={"status": st, "devices": report.device_status.get(sub, {})})
            for sub, st in status.items()]
    return AgentOutput(findings=findings, documents=docs, summary={"series": len(series), "status": status})


# -- anomaly detector -------------------------------------------------------------------------------

EPISODES_KIND = "anomaly_episodes"  # documents: a shard's score episodes (key: the shard, ``I/N``)


def run_anomaly_detector(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    """Deviations and episodes of the substations this process holds; episode findings from
    correlating them across the grid. Split by substation (``s.shard``), every shard finds its own
    deviations and episodes; shards past 0 store their episodes (a document of kind
    :data:`EPISODES_KIND`) and shard 0 correlates its own with the others' latest: so a grid-wide
    event seen in several shards is still one incident, raised once, by shard 0."""
    shard = splitting(s.shard)
    start = now - timedelta(seconds=s.anomaly_window_s)
    own = None if shard is None else shard.select(sub for sub, _ in storage.devices_between(start, now))
    windows = _agent_windows(storage, s, start, now, own, agent="anomaly_detector") if own != [] else []
    deviations: list[Finding] = []
    members: list[dict[str, Any]] = []
    if windows:
        metrics = sorted({w.metric for w in windows})
        history: dict[tuple[str, str, str], list[HourlyMean]] = defaultdict(list)
        for h in storage.hourly_means(metrics, now - timedelta(days=s.baseline_days), now,
                                      shard=None if shard is None else shard.spec):
            history[(h.substation, h.device_id, h.metric)].append(h)
        series = []
        for w in windows:
            hist = history.get((w.substation, w.device_id, w.metric), [])
            series.append(anomaly_detector.SensorSeries(
                substation=w.substation, device_id=w.device_id, metric=w.metric, unit=w.unit, timestamps=w.ts,
                values=w.values, scores=w.scores, types=[t or "" for t in w.types.tolist()],
                history_timestamps=np.array([h.hour.timestamp() + 1800.0 for h in hist]) if hist else None,
                history_values=np.array([h.mean for h in hist]) if hist else None,
            ))
        deviations, members = anomaly_detector.analyse_part(anomaly_detector.AnomalyInput(series=series), now=now)
    summary: dict[str, Any] = {"series": len(windows), "episodes": len(members)}
    if shard is not None and shard.index != 0:  # shard 0 correlates these with every other shard's
        doc = Document(kind=EPISODES_KIND, key=shard.label, timestamp=now, body={"episodes": members})
        return AgentOutput(findings=explain_findings(storage, s.model_registry, deviations), documents=[doc],
                           summary=summary)
    if shard is not None:
        others, problems = _other_shards_episodes(storage, s, shard, now)
        summary["episodes_from_other_shards"] = sum(len(m) for m in others.values())
        summary["shards_heard"] = sorted(others)
        if problems:
            summary["unreadable"] = problems
        members += [m for got in others.values() for m in got]
    if not windows and not members:
        return AgentOutput(summary={"series": 0})
    findings = anomaly_detector.ordered(deviations + anomaly_detector.correlate_episodes(members))
    return AgentOutput(findings=explain_findings(storage, s.model_registry, findings), summary=summary)


def _other_shards_episodes(storage: Storage, s: AgentSettings, shard: Shard, now: datetime
                           ) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """The latest episodes stored by each other shard of this split (by shard label), if its cycle
    was at most ``s.shard_episodes_max_age_s`` from ``now``: a shard whose process stopped adds
    nothing (its status in ``GET /agents`` says so) rather than the same old episodes again. And
    what could not be read (written by another process, perhaps another release): left out, named."""
    wanted = {Shard(i, shard.count).label for i in range(shard.count) if i != shard.index}
    out, problems = {}, []
    for doc in storage.latest_documents(EPISODES_KIND):
        if doc.key in wanted and abs((now - doc.timestamp).total_seconds()) <= s.shard_episodes_max_age_s:
            try:
                out[doc.key] = anomaly_detector.check_episodes(doc.body.get("episodes"),
                                                               f"shard {doc.key}'s stored episodes")
            except ValueError as exc:
                problems.append(str(exc))
                log.warning("left out of this cycle's correlation: %s", exc)
    return out, problems


# -- demand forecaster ------------------------------------------------------------------------------

def _hourly_series(rows: Sequence[HourlyMean]) -> tuple[list[datetime], list[float | None]]:
    return [h.hour for h in rows], [h.mean for h in rows]


def run_demand_forecaster(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    out = AgentOutput()
    by_series: dict[tuple[str, str], list[HourlyMean]] = defaultdict(list)
    shard = splitting(s.shard)  # this shard's substations, filtered by the query
    for h in storage.hourly_means(LOAD_METRICS, now - timedelta(days=s.load_history_days), now,
                                  shard=None if shard is None else shard.spec):
        by_series[(h.substation, h.device_id)].append(h)
    for (sub, dev), rows in sorted(by_series.items()):
        times, values = _hourly_series(rows)
        if len(times) < 24:
            continue  # not a day of history yet: nothing worth forecasting
        peak_seen = max(v for v in values if v is not None)
        capacity = s.site.demand.capacity_mw.get(dev) or s.site.demand.capacity_mw.get(sub)
        assumed = capacity is None
        if capacity is None:
            capacity = 1.25 * peak_seen if peak_seen > 0 else 1.0
        history = demand_forecaster.LoadHistory(device_id=dev, substation=sub, timestamps=times, values=values,
                                                capacity=float(capacity), unit="MW")
        config = demand_forecaster.ForecastConfig(holidays=s.site.demand.holidays, utc_offset_h=s.site.demand.utc_offset_h)
        fc = demand_forecaster.forecast(history, config, now=now)
        body = msgspec.to_builtins(msgspec.structs.replace(fc, finding=None))
        body["capacity_source"] = "assumed: 1.25 x the highest hourly load seen" if assumed else "configured"
        out.documents.append(Document(kind="forecast", key=f"{sub}/{dev}", timestamp=now, body=body))
        if fc.finding is not None:
            out.findings.append(fc.finding)
    out.summary = {"forecasts": len(out.documents)}
    return out


# -- maintenance predictor --------------------------------------------------------------------------

def substation_load_forecasts(docs: Sequence[Document]) -> dict[str, maintenance_predictor.Series]:
    """The forecast load of each substation: its feeders' forecasts (documents keyed
    ``substation/feeder``) summed hour by hour over the hours every feeder forecasts. A transformer
    carries all its substation's feeders; taking one feeder's forecast (as a dict keyed by
    substation once did, whichever came last) placed maintenance windows by one feeder's shape."""
    by_sub: dict[str, list[dict[datetime, float]]] = defaultdict(list)
    for d in docs:
        points = {datetime.fromisoformat(p[0]): float(p[1]) for p in d.body.get("points") or ()
                  if p[1] is not None}
        if points:
            by_sub[d.key.split("/", 1)[0]].append(points)
    out = {}
    for sub, feeders in by_sub.items():
        hours = sorted(set.intersection(*(set(f) for f in feeders)))
        if hours:
            out[sub] = maintenance_predictor.Series(timestamps=hours, values=[sum(f[h] for f in feeders) for h in hours])
    return out


def run_maintenance_predictor(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    by_device: dict[tuple[str, str], dict[str, list[HourlyMean]]] = defaultdict(lambda: defaultdict(list))
    shard = splitting(s.shard)  # this shard's substations, filtered by the query
    for h in storage.hourly_means(TRANSFORMER_METRICS, now - timedelta(days=s.history_days), now,
                                  shard=None if shard is None else shard.spec):
        by_device[(h.substation, h.device_id)][h.metric].append(h)
    forecasts = substation_load_forecasts(storage.latest_documents("forecast"))
    assets = []
    for (sub, dev), metrics in sorted(by_device.items()):
        if "oil_temperature" not in metrics:
            continue  # not a transformer we can assess

        def series(metric: str) -> maintenance_predictor.Series | None:
            rows = metrics.get(metric)
            if not rows:
                return None
            return maintenance_predictor.Series(timestamps=[h.hour for h in rows], values=[h.mean for h in rows])

        load_forecast = forecasts.get(sub)
        assets.append(maintenance_predictor.AssetData(
            device_id=dev, substation=sub, top_oil=series("oil_temperature"), hot_spot=series("winding_temperature"),
            load=series("load_current"), ambient=series("ambient_temperature"), vibration=series("vibration"),
            dga=_dga(metrics), load_forecast=load_forecast,
        ))
    if not assets:
        return AgentOutput(summary={"assets": 0})
    predictions = maintenance_predictor.assess(
        assets, maintenance_predictor.MaintenanceConfig(utc_offset_h=s.site.demand.utc_offset_h), now=now)
    out = AgentOutput(summary={"assets": len(assets)})
    for p in predictions:
        body = msgspec.to_builtins(msgspec.structs.replace(p, finding=None))
        if p.finding is not None:
            body["description"] = p.finding.description
            out.findings.append(p.finding)
        out.documents.append(Document(kind="maintenance", key=f"{p.substation}/{p.device_id}", timestamp=now,
                                      body=body))
    return out


def _dga(metrics: dict[str, list[HourlyMean]]) -> maintenance_predictor.DgaSeries | None:
    """Hours at which every gas reported was sampled, as one DGA series; None without gases."""
    gases = {DGA_METRICS[m]: {h.hour: h.mean for h in rows} for m, rows in metrics.items() if m in DGA_METRICS}
    if not gases:
        return None
    hours = sorted(set.intersection(*(set(v) for v in gases.values())))
    if not hours:
        return None
    return maintenance_predictor.DgaSeries(timestamps=hours, gases={g: [v[h] for h in hours] for g, v in gases.items()})


# -- cyber sentinel ---------------------------------------------------------------------------------

def run_cyber_sentinel(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    logs = storage.ot_logs_between(now - timedelta(seconds=s.cyber_window_s), now + timedelta(microseconds=1))
    if not logs:
        return AgentOutput(summary={"log_entries": 0})
    findings = cyber_sentinel.analyse(logs, s.site.cyber, now=now)
    return AgentOutput(findings=findings, summary={"log_entries": len(logs)})


RUNNERS = {
    grid_monitor.AGENT: run_grid_monitor,
    anomaly_detector.AGENT: run_anomaly_detector,
    demand_forecaster.AGENT: run_demand_forecaster,
    maintenance_predictor.AGENT: run_maintenance_predictor,
    cyber_sentinel.AGENT: run_cyber_sentinel,
}
