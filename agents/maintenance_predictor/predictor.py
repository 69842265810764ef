"""The entry point: ``assess(assets)`` -> one MaintenancePrediction per asset. Pure computation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import numpy as np

from agents.findings import Finding
from agents.maintenance_predictor import health as hl
from agents.maintenance_predictor import thermal as th
from agents.maintenance_predictor.config import MaintenanceConfig
from agents.maintenance_predictor.dga import FAULT_DESCRIPTIONS, assess_dga
from agents.maintenance_predictor.precursor import Precursor, PrecursorConfig, assess_precursor
from agents.maintenance_predictor.trend import TrendFit, theil_sen, vibration_zone
from agents.maintenance_predictor.window import MaintenanceWindow, best_window, to_datetime64

__all__ = ["AGENT", "AssetData", "DgaSeries", "MaintenancePrediction", "Series", "assess"]

AGENT = "maintenance_predictor"
_TYPES = {"thermal": "transformer_ageing", "oil_temperature": "oil_temperature_trend", "dga": "dga_fault",
          "vibration": "vibration_trend"}
_PRECURSOR_TYPES = {"oil_temperature": "oil_temperature_precursor", "vibration": "vibration_precursor"}


class Series(msgspec.Struct, frozen=True):
    """Samples of one quantity. Timestamps are datetimes (aware ones are converted to UTC, naive ones
    are UTC) or, built in code, a numpy datetime64 array; values a list or float array."""

    timestamps: list[datetime]
    values: list[float]


class DgaSeries(msgspec.Struct, frozen=True):
    """Oil samples: ppm per gas (any of H2, CH4, C2H6, C2H4, C2H2, CO, CO2), one value per timestamp."""

    timestamps: list[datetime]
    gases: dict[str, list[float]]


class AssetData(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    device_id: str
    substation: str = ""
    kind: str = "transformer"
    cooling_mode: str = "ONAF"  # one of thermal.COOLING_MODES
    paper: str = "normal"  # or "upgraded" (thermally upgraded paper)
    thermal: dict[str, float] = {}  # test-report values overriding the standard's: delta_theta_or_k, R, H, ...
    rated_load: float | None = None  # in the unit of ``load`` (MVA, A): load / rated_load is K
    age_years: float | None = None
    design_life_years: float = 40.0
    last_maintenance: datetime | None = None
    top_oil_alarm_c: float | None = None  # this unit's limits, where they differ from the config's
    top_oil_trip_c: float | None = None
    load: Series | None = None
    load_factor: Series | None = None  # K, per unit of rated load
    ambient: Series | None = None  # degC
    top_oil: Series | None = None  # degC
    hot_spot: Series | None = None  # degC (fibre-optic probe or winding temperature indicator)
    vibration: Series | None = None  # mm/s RMS
    dga: DgaSeries | None = None
    load_forecast: Series | None = None  # future load, any unit: only its shape matters


class MaintenancePrediction(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    substation: str
    timestamp: datetime  # the assessment's "now"
    health: float  # 0..100
    failure_probability: dict[str, float]  # "24h", "48h", "168h"
    recommended_action: str  # emergency_maintenance / schedule_maintenance / monitor / none
    maintenance_window: MaintenanceWindow | None
    components: dict[str, float]  # factor -> contribution (<= 0); health = 100 + sum
    confidence: float
    finding: Finding | None = None


# ---------------------------------------------------------------------------------------- helpers

def _hours_since(ts: np.ndarray, now64: np.datetime64) -> np.ndarray:
    return (ts - now64).astype("timedelta64[us]").astype(np.float64) / 3.6e9


def _window(series: Series | None, now64: np.datetime64, days: float) -> tuple[np.ndarray, np.ndarray] | None:
    """(hours relative to now, values) of the samples in the last ``days``, sorted, finite only."""
    if series is None or len(series.timestamps) == 0:
        return None
    h = _hours_since(to_datetime64(series.timestamps), now64)
    v = np.asarray(series.values, dtype=np.float64)
    keep = (h <= 0) & (h >= -24.0 * days) & np.isfinite(v)
    if not keep.any():
        return None
    order = np.argsort(h[keep], kind="stable")
    return h[keep][order], v[keep][order]


def _fit(series: Series | None, now64: np.datetime64, cfg: MaintenanceConfig) -> TrendFit | None:
    w = _window(series, now64, cfg.trend_window_days)
    if w is None or w[0].size < cfg.trend_min_points:
        return None
    return theil_sen(w[0] / 24.0, w[1], cfg.trend_confidence)


def _num(x: float) -> float | None:
    """A JSON-safe figure: None for inf/NaN."""
    return float(x) if math.isfinite(x) else None


def _r(x: float, nd: int = 3) -> float | None:
    return round(float(x), nd) if math.isfinite(x) else None


def _latest(asset: AssetData) -> datetime | None:
    latest = None
    for s in (asset.load, asset.load_factor, asset.ambient, asset.top_oil, asset.hot_spot, asset.vibration, asset.dga):
        if s is not None and len(s.timestamps):
            t = to_datetime64(s.timestamps).max()
            latest = t if latest is None or t > latest else latest
    if latest is None:
        return None
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=int(latest.astype(np.int64)))


# ------------------------------------------------------------------------------------------- thermal

def _thermal_all(assets: Sequence[AssetData], now64: np.datetime64, cfg: MaintenanceConfig) -> dict[int, dict[str, Any]]:
    """Hot-spot temperature and loss of life over the window for every transformer that has the data,
    the models of all of them stepped together."""
    out: dict[int, dict[str, Any]] = {}
    rows: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, th.ThermalParameters, np.ndarray | None]] = []
    days = cfg.trend_window_days
    for i, a in enumerate(assets):
        if a.kind != "transformer":
            continue
        measured = _window(a.hot_spot, now64, days)
        if measured is not None and measured[0].size >= 2:
            out[i] = {"source": "measured", "hours": measured[0], "hot_spot_c": measured[1]}
            continue
        k = _window(a.load_factor, now64, days)
        if k is None and a.load is not None and a.rated_load:
            k = _window(a.load, now64, days)
            k = None if k is None else (k[0], k[1] / a.rated_load)
        if k is None or k[0].size < 2:
            continue
        params = th.parameters_for(a.cooling_mode, **a.thermal)
        amb = _window(a.ambient, now64, days + 1.0)
        top = _window(a.top_oil, now64, days + 1.0)
        if amb is not None:
            rows.append((i, k[0], k[1], np.interp(k[0], amb[0], amb[1]), params, None))
        elif top is not None:  # measured top oil + the modelled hot-spot gradient
            rows.append((i, k[0], k[1], np.zeros_like(k[1]), params, np.interp(k[0], top[0], top[1])))
    if rows:
        length = max(r[1].size for r in rows)

        def pad(x: np.ndarray) -> np.ndarray:
            return np.pad(x, (0, length - x.size), mode="edge")

        minutes = np.stack([pad(r[1]) * 60.0 for r in rows])
        res = th.simulate(minutes, np.stack([pad(r[2]) for r in rows]), np.stack([pad(r[3]) for r in rows]),
                          [r[4] for r in rows])
        for j, (i, hours, _, _, _, top_oil) in enumerate(rows):
            hot = res.hot_spot_c[j, : hours.size]
            if top_oil is None:
                out[i] = {"source": "model (load, ambient)", "hours": hours, "hot_spot_c": hot}
            else:
                gradient = hot - res.top_oil_c[j, : hours.size]
                out[i] = {"source": "model gradient over measured top oil", "hours": hours, "hot_spot_c": top_oil + gradient}
    for i, d in out.items():
        paper = assets[i].paper
        span = float(d["hours"][-1] - d["hours"][0])
        loss = float(th.loss_of_life_hours(d["hours"] * 60.0, d["hot_spot_c"], paper))
        d.update(span_hours=span, loss_of_life_hours=loss, mean_ageing_rate=loss / span if span > 0 else math.nan)
    return {i: d for i, d in out.items() if d["span_hours"] > 0}


# -------------------------------------------------------------------------------------------- assess

def assess(
    assets: Sequence[AssetData], config: MaintenanceConfig = MaintenanceConfig(), now: datetime | None = None
) -> list[MaintenancePrediction]:
    """Health, failure probability, recommended action and maintenance window for each asset.

    ``now`` defaults to the latest sample among all the assets (else the clock). Only samples at or
    before ``now`` and within ``config.trend_window_days`` count; the load forecast is searched from
    ``now`` on. A factor without data is skipped and lowers the confidence.
    """
    if now is None:
        latest = [t for t in (_latest(a) for a in assets) if t is not None]
        now = max(latest) if latest else datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    now64 = to_datetime64([now])[0]
    thermal = _thermal_all(assets, now64, config)
    return [_assess_one(i, a, config, now, now64, thermal.get(i)) for i, a in enumerate(assets)]


def _assess_one(i: int, a: AssetData, cfg: MaintenanceConfig, now: datetime, now64: np.datetime64,
                thermal: dict[str, Any] | None) -> MaintenancePrediction:
    sev: dict[str, float] = {}
    facts: dict[str, Any] = {"kind": a.kind}
    trends: list[tuple[str, TrendFit, float]] = []  # (factor, fit, limit) for the crossing probability
    trip = a.top_oil_trip_c if a.top_oil_trip_c is not None else cfg.top_oil_trip_c
    alarm = a.top_oil_alarm_c if a.top_oil_alarm_c is not None else cfg.top_oil_alarm_c

    if thermal is not None:
        sev["thermal"] = hl.thermal_severity(thermal["mean_ageing_rate"], cfg)
        facts["thermal"] = {
            "hot_spot_source": thermal["source"], "paper": a.paper, "cooling_mode": a.cooling_mode,
            "window_hours": _r(thermal["span_hours"], 2), "loss_of_life_hours": _r(thermal["loss_of_life_hours"], 4),
            "normal_loss_of_life_hours": _r(thermal["span_hours"], 2),
            "mean_ageing_rate": _r(thermal["mean_ageing_rate"], 4),
            "max_hot_spot_c": _r(float(np.max(thermal["hot_spot_c"])), 2),
            "latest_hot_spot_c": _r(float(thermal["hot_spot_c"][-1]), 2), "severity": _r(sev["thermal"], 4)}

    oil = _fit(a.top_oil, now64, cfg)
    if oil is not None:
        s, parts = hl.oil_temperature_severity(oil, trip, cfg)
        sev["oil_temperature"] = s
        trends.append(("oil_temperature", oil, trip))
        facts["oil_temperature"] = {
            "slope_c_per_day": _r(oil.slope_per_day), "slope_ci_c_per_day": [_r(oil.slope_low), _r(oil.slope_high)],
            "confidence_level": oil.confidence_level, "samples": oil.n, "window_days": cfg.trend_window_days,
            "level_now_c": _r(oil.level_now, 2), "alarm_c": alarm, "trip_c": trip,
            "hours_to_alarm": _num(oil.hours_to_exceed(alarm)), "hours_to_trip": _num(oil.hours_to_exceed(trip)),
            "severity": _r(s, 4), "severity_parts": {k: _r(v, 4) for k, v in parts.items()}}

    if a.dga is not None and len(a.dga.timestamps):
        h = _hours_since(to_datetime64(a.dga.timestamps), now64)
        past = np.flatnonzero(h <= 0)
        if past.size:
            j = int(past[np.argmax(h[past])])
            sample = {g: float(v[j]) for g, v in a.dga.gases.items() if v is not None and len(v) > j}
            d = assess_dga(sample, cfg.dga_typical_ppm)
            s, parts = hl.dga_severity(d.fault, d.worst_ratio_to_typical, cfg)
            sev["dga"] = s
            facts["dga"] = {
                "sample_age_hours": _r(-float(h[j]), 2), "gas_ppm": d.gas_ppm, "fault": d.fault,
                "fault_description": FAULT_DESCRIPTIONS.get(d.fault, d.fault), "duval_zone": d.duval_zone,
                "duval_percent": {k: _r(v, 2) for k, v in d.duval_percent.items()}, "iec60599_case": d.iec_case,
                "ratios": {k: _num(v) for k, v in d.ratios.items()},
                "ratio_to_typical": {k: _r(v, 3) for k, v in d.ratio_to_typical.items()},
                "worst_gas": d.worst_gas, "typical_ppm": dict(cfg.dga_typical_ppm),
                "severity": _r(s, 4), "severity_parts": parts}

    vib = _fit(a.vibration, now64, cfg)
    if vib is not None:
        s, parts = hl.vibration_severity(vib, cfg)
        sev["vibration"] = s
        limit = cfg.vibration_zones_mm_s[2]
        trends.append(("vibration", vib, limit))
        facts["vibration"] = {
            "level_now_mm_s": _r(vib.level_now), "zone": vibration_zone(vib.level_now, cfg.vibration_zones_mm_s),
            "zone_boundaries_mm_s": list(cfg.vibration_zones_mm_s), "slope_mm_s_per_day": _r(vib.slope_per_day, 4),
            "slope_ci_mm_s_per_day": [_r(vib.slope_low, 4), _r(vib.slope_high, 4)], "samples": vib.n,
            "hours_to_zone_d": _num(vib.hours_to_exceed(limit)), "severity": _r(s, 4),
            "severity_parts": {k: _r(v, 4) for k, v in parts.items()}}

    if a.age_years is not None:
        sev["age"] = hl.age_severity(a.age_years, a.design_life_years)
        facts["age"] = {"age_years": a.age_years, "design_life_years": a.design_life_years,
                        "severity": _r(sev["age"], 4)}
    if a.last_maintenance is not None:
        last = a.last_maintenance if a.last_maintenance.tzinfo else a.last_maintenance.replace(tzinfo=timezone.utc)
        days = (now - last).total_seconds() / 86400.0
        sev["maintenance"] = hl.maintenance_severity(days, cfg.maintenance_interval_days)
        facts["maintenance"] = {"days_since_last": _r(days, 2), "interval_days": cfg.maintenance_interval_days,
                                "severity": _r(sev["maintenance"], 4)}

    health, components, confidence = hl.combine(sev, cfg)

    probability: dict[str, float] = {}
    crossing: dict[str, dict[str, float | None]] = {}
    for hours in hl.HORIZONS_H:
        survive = 1.0 - hl.hazard_probability(health, hours, cfg)
        for factor, fit, limit in trends:
            p = hl.crossing_probability(fit, limit, hours, hl.trend_sigma(fit, cfg))
            crossing.setdefault(factor, {})[f"{hours:g}h"] = _r(p, 4)
            survive *= 1.0 - p
        probability[f"{hours:g}h"] = 1.0 - survive
    predicted: tuple[float, float] | None = None
    if oil is not None:
        predicted = hl.crossing_time_range_hours(oil, trip, hl.trend_sigma(oil, cfg))
        facts["oil_temperature"]["predicted_trip_hours"] = [_num(predicted[0]), _num(predicted[1])]
    facts["failure_probability"] = {
        "model": "1 - (1 - hazard) * prod(1 - trend crossing)",
        "hazard": {f"{h:g}h": _r(hl.hazard_probability(health, h, cfg), 6) for h in hl.HORIZONS_H},
        "trend_crossing": crossing}

    action = hl.action_for(health, probability, cfg)
    window, within = None, None
    if action in ("emergency_maintenance", "schedule_maintenance") and a.load_forecast is not None \
            and len(a.load_forecast.timestamps) >= 2:
        deadline = cfg.emergency_within_hours if action == "emergency_maintenance" else cfg.schedule_within_hours
        fc = a.load_forecast
        window = best_window(fc.timestamps, fc.values, cfg.maintenance_duration_hours, earliest=now,
                             latest_start=now + timedelta(hours=deadline))
        within = window is not None
        if window is None:
            window = best_window(fc.timestamps, fc.values, cfg.maintenance_duration_hours, earliest=now)

    dominant = min(components, key=components.__getitem__) if components else ""
    facts.update(health=_r(health, 2), components={k: _r(v, 4) for k, v in components.items()},
                 dominant_factor=dominant, confidence=_r(confidence, 3),
                 failure_probability_by_horizon={k: _r(v, 4) for k, v in probability.items()},
                 recommended_action=action)
    if window is not None:
        facts["maintenance_window"] = {"start": window.start.isoformat(), "end": window.end.isoformat(),
                                       "mean_load": _r(window.mean_load, 4), "within_deadline": within}

    precursors = _precursors(a, cfg, now64, alarm) if cfg.precursor_enabled else {}
    if precursors:
        facts["precursor"] = {k: _precursor_facts(p, now) for k, p in precursors.items()}

    finding = None
    text, severity = hl.ACTIONS[action]
    if severity is not None:
        finding = _finding(a, cfg, now, health, probability, action, text, severity, dominant, oil, predicted, window,
                           confidence, facts)
    warned = {k: p for k, p in precursors.items() if p.warning}
    if warned:
        finding = _with_precursor(finding, warned, a, now, confidence, facts)
    return MaintenancePrediction(
        device_id=a.device_id, substation=a.substation, timestamp=now, health=health, failure_probability=probability,
        recommended_action=action, maintenance_window=window, components=components, confidence=confidence,
        finding=finding)


def _window_text(window: MaintenanceWindow, now: datetime, utc_offset_h: float) -> str:
    """``22:00-06:00 UTC today``, or on the site's clock: ``01:00-09:00 local (UTC+3) tomorrow``."""
    tz = timezone(timedelta(hours=utc_offset_h))
    zone = "UTC" if utc_offset_h == 0 else f"local (UTC{utc_offset_h:+g})"
    start, end = window.start.astimezone(tz), window.end.astimezone(tz)
    days = (start.date() - now.astimezone(tz).date()).days
    day = "today" if days == 0 else "tomorrow" if days == 1 else f"on {start:%a %Y-%m-%d}"
    return f"{start:%H:%M}-{end:%H:%M} {zone} {day}"


def _finding(a: AssetData, cfg: MaintenanceConfig, now: datetime, health: float, probability: dict[str, float],
             action: str, text: str, severity: str, dominant: str, oil: TrendFit | None,
             predicted: tuple[float, float] | None, window: MaintenanceWindow | None, confidence: float,
             facts: dict[str, Any]) -> Finding:
    kind = a.kind.replace("_", " ").capitalize()
    parts = [f"{kind} {a.device_id} at {health:.0f}% health."]
    if oil is not None:
        days = min(cfg.trend_window_days, (oil.t_last_days - _first_day(a, now, cfg)))
        parts.append(f"Temperature trend: {oil.slope_per_day:+.1f}°C/day for {days:.0f} days.")
    if predicted is not None and math.isfinite(predicted[1]) and probability["168h"] >= cfg.monitor_probability_168h:
        parts.append(f"Predicted failure: {predicted[0]:.0f}-{predicted[1]:.0f} hours.")
    parts.append(f"Failure probability: {100 * probability['48h']:.0f}% in 48 h, {100 * probability['168h']:.0f}% in 7 days.")
    recommendation = text.format(hours=cfg.emergency_within_hours, days=cfg.schedule_within_hours / 24.0)
    parts.append(f"RECOMMEND: {recommendation}.")
    if window is not None:
        parts.append(f"Maintenance window: {_window_text(window, now, cfg.utc_offset_h)} (low load period).")
    if action == "emergency_maintenance" and probability["48h"] >= cfg.critical_probability_48h:
        threshold, metric, value = cfg.critical_probability_48h, "failure_probability_48h", probability["48h"]
    elif action == "emergency_maintenance":
        threshold, metric, value = cfg.critical_health, "health", health
    elif health < cfg.warning_health:
        threshold, metric, value = cfg.warning_health, "health", health
    else:
        threshold, metric, value = cfg.warning_probability_168h, "failure_probability_168h", probability["168h"]
    # the type names the factor that took most off the score; the key stays one per device, so an
    # ongoing condition keeps its incident when the leading factor changes
    ftype = _TYPES.get(dominant, "") if a.kind == "transformer" or dominant == "vibration" else ""
    ftype = ftype or f"{a.kind}_health"
    return Finding(
        agent=AGENT, type=ftype, severity=severity, timestamp=now, device_id=a.device_id, substation=a.substation,
        description=" ".join(parts), metric=metric, value=round(float(value), 4), threshold=threshold,
        confidence=round(confidence, 3), recommendation=recommendation, facts=facts,
        key=f"{AGENT}:health:{a.substation}:{a.device_id}")


# ----------------------------------------------------------------------------------------- precursors

def _precursor_inputs(target: Series | None, drivers: Sequence[Series | None], now64: np.datetime64, days: float
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(hours, values, drivers interpolated at those hours) over the last ``days``; a driver sample
    further than 2 h from a target sample leaves that sample out (NaN, dropped by the precursor)."""
    w = _window(target, now64, days)
    if w is None:
        return None
    cols = []
    for d in drivers:
        dw = _window(d, now64, days + 1.0)
        if dw is None or dw[0].size < 2:
            continue
        x = np.interp(w[0], dw[0], dw[1])
        near = np.abs(dw[0][np.clip(np.searchsorted(dw[0], w[0]), 0, dw[0].size - 1)] - w[0]) <= 2.0
        near |= np.abs(dw[0][np.clip(np.searchsorted(dw[0], w[0]) - 1, 0, dw[0].size - 1)] - w[0]) <= 2.0
        cols.append(np.where(near, x, np.nan))
    return w[0], w[1], (np.column_stack(cols) if cols else np.zeros((w[0].size, 0)))


def _precursors(a: AssetData, cfg: MaintenanceConfig, now64: np.datetime64, alarm: float) -> dict[str, Precursor]:
    """Top oil against load and ambient (limit: the excess that counts as a fault, and the alarm), and
    vibration's trend toward the C/D boundary (against load where given)."""
    out: dict[str, Precursor] = {}
    load = a.load_factor if a.load_factor is not None else a.load
    jobs: list[tuple[str, Series | None, list[Series | None], PrecursorConfig, float | None, float]] = [
        ("oil_temperature", a.top_oil, [load, a.ambient], cfg.precursor_oil, cfg.precursor_oil_excess_c, alarm),
        ("vibration", a.vibration, [load], cfg.precursor_vibration, None, cfg.vibration_zones_mm_s[2])]
    for name, target, drivers, pcfg, residual_limit, limit in jobs:
        inputs = _precursor_inputs(target, drivers, now64, (pcfg.reference_hours + pcfg.window_hours) / 24.0)
        if inputs is None:
            continue
        t, v, x = inputs
        out[name] = assess_precursor(t, v, x, now_h=0.0, residual_limit=residual_limit, limit=limit, config=pcfg)
    return out


def _at(now: datetime, hours: float) -> str | None:
    return (now + timedelta(hours=hours)).isoformat() if math.isfinite(hours) and abs(hours) < 1e6 else None


def _precursor_facts(p: Precursor, now: datetime) -> dict[str, Any]:
    f = p.facts()
    f.update(window_start=_at(now, p.window_h[0]), window_end=_at(now, p.window_h[1]),
             reference_start=_at(now, p.reference_h[0]), estimated_crossing=_at(now, p.hours_to_limit),
             estimated_crossing_range=[_at(now, p.hours_to_limit_range[0]), _at(now, p.hours_to_limit_range[1])])
    return f


def _precursor_text(name: str, p: Precursor, unit: str) -> str:
    what = "Top-oil temperature" if name == "oil_temperature" else "Vibration"
    lo, hi = p.hours_to_limit_range
    limit = (f"+{p.residual_limit:g} {unit} fault limit" if p.limiting == "residual"
             else f"{p.limit:g} {unit} limit")
    span = "" if not math.isfinite(hi) else f"-{hi:.0f}"
    against = "what its drivers explain" if p.drivers_used else "its reference level"
    return (f"Precursor: {what.lower()} {p.excess_now:+.1f} {unit} against {against}, rising "
            f"{p.slope_per_day:.2f} {unit}/day ({p.slope_low:.2f}-{p.slope_high:.2f}) over "
            f"{(p.window_h[1] - p.window_h[0]) / 24.0:.0f} days (fit R² {p.r2:.2f}); the {limit} is due in about "
            f"{p.hours_to_limit:.0f} h ({lo:.0f}{span} h).")


def _with_precursor(finding: Finding | None, warned: dict[str, Precursor], a: AssetData, now: datetime,
                    confidence: float, facts: dict[str, Any]) -> Finding:
    """An early WARNING for a precursor, or the health finding with the precursor's evidence added.
    The key stays the device's one maintenance condition."""
    name, p = min(warned.items(), key=lambda kv: kv[1].hours_to_limit)
    texts = " ".join(_precursor_text(k, q, "K" if k == "oil_temperature" else "mm/s") for k, q in warned.items())
    lo = p.hours_to_limit_range[0]
    what = "the cooling (fans, pumps, radiators, oil level)" if name == "oil_temperature" else \
        "bearings, alignment and mounting"
    recommendation = f"Inspect {what} before the limit: within {max(lo, 0.0) / 24.0:.1f} days"
    if finding is not None:
        return msgspec.structs.replace(finding, description=f"{finding.description} {texts}",
                                       recommendation=f"{finding.recommendation}; {recommendation}")
    kind = a.kind.replace("_", " ").capitalize()
    return Finding(
        agent=AGENT, type=_PRECURSOR_TYPES[name], severity="WARNING", timestamp=now, device_id=a.device_id,
        substation=a.substation, description=f"{kind} {a.device_id}: early warning. {texts} RECOMMEND: {recommendation}.",
        metric=f"{name}_hours_to_limit", value=round(float(p.hours_to_limit), 1), threshold=None,
        nominal=None, confidence=round(confidence, 3), recommendation=recommendation, facts=facts,
        start=now + timedelta(hours=p.window_h[0]), key=f"{AGENT}:health:{a.substation}:{a.device_id}")


def _first_day(a: AssetData, now: datetime, cfg: MaintenanceConfig) -> float:
    """Days (relative to now) of the first top-oil sample inside the window."""
    w = _window(a.top_oil, to_datetime64([now])[0], cfg.trend_window_days)
    return float(w[0][0] / 24.0) if w is not None else 0.0
