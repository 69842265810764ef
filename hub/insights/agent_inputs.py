"""What each agent is handed: storage reads shaped into the agents' input types, and the agents'
products shaped back into incidents and documents. Blocking (storage is synchronous): the
orchestrator calls these in worker threads.

Each ``run_*`` function takes the storage, the agents' settings and ``now``, and returns an
:class:`AgentOutput`. The agents themselves (``agents/``) never touch storage.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np

from agents import anomaly_detector, cyber_sentinel, demand_forecaster, grid_monitor, maintenance_predictor
from agents.findings import Finding
from hub.insights.explanations import explain_findings
from hub.site import SiteConfig
from hub.storage.base import Document, HourlyMean, Storage
from protocols import gridcode
from protocols.config import Limits
from protocols.reading import QualityFlag, Reading, sensor_type
from protocols.validation import impossible_values

__all__ = ["AgentOutput", "AgentSettings", "RUNNERS"]

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
    # about 6 % with 28 days to 3-3.6 % with 730 (docs/forecasting.md); it uses whatever is stored
    load_history_days: float = 730.0
    cyber_window_s: float = 86_400.0
    limits: Limits = field(default_factory=Limits)
    # feeder ratings and adjacency, capacities and holidays, the cyber policy (hub/site.py); a
    # feeder or substation without a capacity gets 1.25 x its highest hourly load, and says so
    site: SiteConfig = field(default_factory=SiteConfig)
    # the model registry whose IsolationForests explain multivariate anomalies (hub.insights.explanations)
    model_registry: str | None = None


@dataclass
class AgentOutput:
    findings: list[Finding] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def _group(readings: Iterable[Reading]) -> dict[tuple[str, str, str], list[Reading]]:
    out: dict[tuple[str, str, str], list[Reading]] = defaultdict(list)
    for r in readings:
        out[(r.substation, r.device_id, r.metric)].append(r)
    return out


_UNUSABLE = QualityFlag.INVALID | QualityFlag.COMM_LOST


def _unusable(rs: Sequence[Reading]) -> np.ndarray:
    """Readings that measured nothing of the grid: flagged invalid (edge sync keeps impossible values
    so), placeholders of a lost device, or values no instrument can give (stored before they were
    refused). The agents see them as missing samples, so they never become findings."""
    flagged = np.fromiter((r.flags & _UNUSABLE != 0 for r in rs), dtype=bool, count=len(rs))
    return flagged | impossible_values(rs)


def _arrays(rs: Sequence[Reading]) -> tuple[np.ndarray, np.ndarray]:
    ts = np.fromiter((r.ts.timestamp() for r in rs), dtype=np.float64, count=len(rs))
    values = np.fromiter((np.nan if r.value is None else r.value for r in rs), dtype=np.float64, count=len(rs))
    values[_unusable(rs)] = np.nan
    return ts, values


# -- grid monitor -----------------------------------------------------------------------------------

def run_grid_monitor(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    readings = storage.readings_between(now - timedelta(seconds=s.grid_window_s), now)
    series = []
    for (sub, dev, metric), rs in _group(readings).items():
        ts, values = _arrays(rs)
        unit = rs[-1].unit
        nominal = None
        if sensor_type(metric) == "voltage" and np.isfinite(values).any():
            nominal = gridcode.infer_nominal_voltage(float(np.nanmedian(values)), unit)
        series.append(grid_monitor.Series(device_id=dev, substation=sub, metric=metric, timestamps=ts,
                                          values=values, unit=unit, nominal=nominal))
    if not series:
        return AgentOutput(summary={"series": 0})
    feeders = [grid_monitor.FeederRating(device_id=name, rating=f.rating, unit=f.unit)
               for name, f in s.site.feeders.items()]
    snapshot = grid_monitor.GridSnapshot(series=series, feeders=feeders, adjacency=s.site.adjacency())
    report = grid_monitor.analyse(snapshot, grid_monitor.GridMonitorConfig(limits=s.limits))
    docs = [Document(kind="grid_status", key=sub, timestamp=now,
                     body={"status": status, "devices": report.device_status.get(sub, {})})
            for sub, status in report.substation_status.items()]
    return AgentOutput(findings=report.findings, documents=docs,
                       summary={"series": len(series), "status": report.substation_status})


# -- anomaly detector -------------------------------------------------------------------------------

def run_anomaly_detector(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    readings = storage.readings_between(now - timedelta(seconds=s.anomaly_window_s), now)
    groups = _group(readings)
    if not groups:
        return AgentOutput(summary={"series": 0})
    metrics = sorted({m for _, _, m in groups})
    history: dict[tuple[str, str, str], list[HourlyMean]] = defaultdict(list)
    for h in storage.hourly_means(metrics, now - timedelta(days=s.baseline_days), now):
        history[(h.substation, h.device_id, h.metric)].append(h)
    series = []
    for key, rs in groups.items():
        ts, values = _arrays(rs)
        scores = np.fromiter((np.nan if r.anomaly_score is None else r.anomaly_score for r in rs), dtype=np.float64,
                             count=len(rs))
        scores[_unusable(rs)] = np.nan  # the edge scored a broken sensor, not the grid
        hist = history.get(key, [])
        series.append(anomaly_detector.SensorSeries(
            substation=key[0], device_id=key[1], metric=key[2], unit=rs[-1].unit, timestamps=ts, values=values,
            scores=scores, types=[r.anomaly_type or "" for r in rs],
            history_timestamps=np.array([h.hour.timestamp() + 1800.0 for h in hist]) if hist else None,
            history_values=np.array([h.mean for h in hist]) if hist else None,
        ))
    findings = anomaly_detector.analyse(anomaly_detector.AnomalyInput(series=series), now=now)
    findings = explain_findings(storage, s.model_registry, findings)
    return AgentOutput(findings=findings, summary={"series": len(series)})


# -- demand forecaster ------------------------------------------------------------------------------

def _hourly_series(rows: Sequence[HourlyMean]) -> tuple[list[datetime], list[float | None]]:
    return [h.hour for h in rows], [h.mean for h in rows]


def run_demand_forecaster(storage: Storage, s: AgentSettings, now: datetime) -> AgentOutput:
    out = AgentOutput()
    by_series: dict[tuple[str, str], list[HourlyMean]] = defaultdict(list)
    for h in storage.hourly_means(LOAD_METRICS, now - timedelta(days=s.load_history_days), now):
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
    for h in storage.hourly_means(TRANSFORMER_METRICS, now - timedelta(days=s.history_days), now):
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
