"""Health score 0-100, failure probability and the recommended action.

**Health** = 100 - sum over factors of ``weight_f * severity_f``. Each severity is in 0..1 and never
falls as its stress rises; the weights add up to 100 (config ``weights``), so the score is in
0..100 without clipping and the components ``-weight_f * severity_f`` are an exact additive
decomposition of ``health - 100``. A factor without data contributes nothing and lowers the
confidence (the sum of the weights of the factors that had data, over 100).

Severities:

- thermal: mean relative ageing rate V over the window (IEC 60076-7 loss of life over the window's
  hours; V = 1 is normal ageing, 24 h of life per day): ``clip(log2 V / log2 V_full, 0, 1)``.
- oil_temperature: ``0.4 s_slope + 0.3 s_level + 0.3 s_time`` with s_slope = rise per day over
  ``oil_slope_full_c_per_day``, s_level = where the present (fitted) top-oil temperature sits between
  the normal level and the trip, s_time = ``1 - hours to trip / 168`` at the present trend.
- dga: ``0.6 s_zone + 0.4 s_level``: the fault zone's severity (:data:`DGA_ZONE_SEVERITY`) and the
  worst gas over its typical value (log scale, 1x -> 0, ``dga_level_full`` x -> 1).
- vibration: ``0.7 s_level + 0.3 s_slope``: the present level through the zone boundaries
  (A/B -> 0, B/C -> 0.4, C/D -> 0.8, 1.5 C/D -> 1) and the rise per week over the B-to-D span.
- age: age over design life.
- maintenance: 0 until the interval since the last maintenance is due, rising to 1 at twice it.

**Failure probability** in the next t hours: ``1 - (1 - P_hazard) prod (1 - P_trend)``.
P_hazard is a constant-rate model, ``1 - exp(-lambda t)``, with ``lambda = lambda_100 exp((100 -
health)/s)``: anchored at a healthy unit's annual failure rate (health 100) and a mean time to failure
at health 0 (``s`` follows from the two). P_trend, for the top-oil trend against the trip and the
vibration trend against the C/D boundary, is the chance that the slope is steep enough to cover the
margin within t, the slope taken as normal with the fit's spread:
``P = 1 - Phi((margin / t - slope) / sigma)``.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

from agents.maintenance_predictor.config import FACTORS, MaintenanceConfig
from agents.maintenance_predictor.trend import TrendFit

__all__ = [
    "ACTIONS",
    "DGA_ZONE_SEVERITY",
    "HORIZONS_H",
    "action_for",
    "age_severity",
    "combine",
    "crossing_probability",
    "crossing_time_range_hours",
    "dga_severity",
    "hazard_probability",
    "maintenance_severity",
    "oil_temperature_severity",
    "thermal_severity",
    "trend_sigma",
    "vibration_severity",
]

HORIZONS_H = (24.0, 48.0, 168.0)
DGA_ZONE_SEVERITY = {"N": 0.0, "ND": 0.3, "T1": 0.3, "PD": 0.4, "T2": 0.6, "D1": 0.6, "DT": 0.8, "T3": 0.9, "D2": 1.0}
# action -> (template text, severity of the finding or None)
ACTIONS = {
    "emergency_maintenance": ("Emergency maintenance in next {hours:g} hours", "CRITICAL"),
    "schedule_maintenance": ("Schedule maintenance within {days:g} days", "WARNING"),
    "monitor": ("Monitor: no maintenance needed yet", None),
    "none": ("No action", None),
}
_NORMAL = NormalDist()


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def thermal_severity(mean_ageing_rate: float, cfg: MaintenanceConfig) -> float:
    if mean_ageing_rate <= 1.0:
        return 0.0
    return _clip01(math.log2(mean_ageing_rate) / math.log2(cfg.ageing_rate_full))


def oil_temperature_severity(fit: TrendFit, trip_c: float, cfg: MaintenanceConfig,
                             normal_c: float | None = None) -> tuple[float, dict[str, float]]:
    normal = cfg.top_oil_normal_c if normal_c is None else normal_c
    s_slope = _clip01(fit.slope_per_day / cfg.oil_slope_full_c_per_day)
    s_level = _clip01((fit.level_now - normal) / (trip_c - normal))
    hours = fit.hours_to_exceed(trip_c)
    s_time = _clip01(1.0 - hours / HORIZONS_H[-1]) if math.isfinite(hours) else 0.0
    return 0.4 * s_slope + 0.3 * s_level + 0.3 * s_time, {"slope": s_slope, "level": s_level, "time_to_trip": s_time}


def dga_severity(fault: str, worst_ratio_to_typical: float, cfg: MaintenanceConfig) -> tuple[float, dict[str, float]]:
    s_zone = DGA_ZONE_SEVERITY.get(fault, 0.3)
    s_level = _clip01(math.log(worst_ratio_to_typical) / math.log(cfg.dga_level_full)) \
        if worst_ratio_to_typical > 1.0 else 0.0
    return 0.6 * s_zone + 0.4 * s_level, {"zone": s_zone, "level": s_level}


def vibration_severity(fit: TrendFit, cfg: MaintenanceConfig) -> tuple[float, dict[str, float]]:
    ab, bc, cd = cfg.vibration_zones_mm_s
    s_level = float(np.interp(fit.level_now, [ab, bc, cd, 1.5 * cd], [0.0, 0.4, 0.8, 1.0]))
    s_slope = _clip01(fit.slope_per_day * 7.0 / (cd - ab))
    return 0.7 * s_level + 0.3 * s_slope, {"level": s_level, "slope": s_slope}


def age_severity(age_years: float, design_life_years: float) -> float:
    return _clip01(age_years / design_life_years) if design_life_years > 0 else 0.0


def maintenance_severity(days_since: float, interval_days: float) -> float:
    return _clip01(days_since / interval_days - 1.0)


def combine(severities: dict[str, float], cfg: MaintenanceConfig) -> tuple[float, dict[str, float], float]:
    """(health, components, confidence) from the severities of the factors that had data."""
    components = {f: 0.0 - cfg.weights[f] * severities[f] for f in FACTORS if f in severities}  # never -0.0
    health = 100.0 + sum(components.values())
    confidence = sum(cfg.weights[f] for f in components) / 100.0
    return health, components, confidence


def hazard_probability(health: float, hours: float, cfg: MaintenanceConfig) -> float:
    """1 - exp(-lambda(health) t), lambda = lambda_100 exp((100 - health)/s)."""
    lam100 = cfg.annual_failure_rate_at_full_health / 8760.0
    lam0 = 1.0 / cfg.mttf_at_zero_health_hours
    s = 100.0 / math.log(lam0 / lam100)
    lam = lam100 * math.exp((100.0 - health) / s)
    return 1.0 - math.exp(-lam * hours)


def trend_sigma(fit: TrendFit, cfg: MaintenanceConfig) -> float:
    """The slope's standard deviation: from the confidence interval, never below the model floor."""
    z = _NORMAL.inv_cdf(0.5 + fit.confidence_level / 2.0)
    from_ci = (fit.slope_high - fit.slope_low) / (2.0 * z)
    return max(from_ci, cfg.trend_relative_uncertainty * abs(fit.slope_per_day), cfg.trend_min_uncertainty_per_day)


def crossing_probability(fit: TrendFit, limit: float, hours: float, sigma: float) -> float:
    """Chance that the trend carries the level over ``limit`` within ``hours``."""
    margin = limit - fit.level_now
    if margin <= 0:
        return 1.0
    needed = margin / (hours / 24.0)
    return 1.0 - _NORMAL.cdf((needed - fit.slope_per_day) / sigma)


def crossing_time_range_hours(fit: TrendFit, limit: float, sigma: float, central: float = 0.5) -> tuple[float, float]:
    """The central ``central`` range of the time to cross ``limit`` (hours; inf where the slope
    would not rise)."""
    margin = limit - fit.level_now
    if margin <= 0:
        return 0.0, 0.0
    z = _NORMAL.inv_cdf(0.5 + central / 2.0)
    fast, slow = fit.slope_per_day + z * sigma, fit.slope_per_day - z * sigma
    return (24.0 * margin / fast if fast > 0 else math.inf), (24.0 * margin / slow if slow > 0 else math.inf)


def action_for(health: float, probability: dict[str, float], cfg: MaintenanceConfig) -> str:
    if health < cfg.critical_health or probability["48h"] >= cfg.critical_probability_48h:
        return "emergency_maintenance"
    if health < cfg.warning_health or probability["168h"] >= cfg.warning_probability_168h:
        return "schedule_maintenance"
    if health < cfg.monitor_health or probability["168h"] >= cfg.monitor_probability_168h:
        return "monitor"
    return "none"
