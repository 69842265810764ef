"""Fault precursors: a slow residual ramp is warned of a day or more ahead with a time to the limit
whose range holds the truth; stationary noise, load-driven swings, constant and quantised sensors
raise nothing; hostile timestamps are cleaned; the maintenance predictor raises the early WARNING with
its evidence; and on the real ETTh1 record the false-warning rate and the lead on injected ramps hold
at the achieved levels."""

from __future__ import annotations

import importlib.util
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from agents.maintenance_predictor import AssetData, MaintenanceConfig, Series, assess
from agents.maintenance_predictor.precursor import PrecursorConfig, assess_precursor, clean_samples, scan
from agents.maintenance_predictor.trend import theil_sen

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
RAMP = 0.5  # K/day
LIMIT = 10.0  # K of excess: the "failure"
DAYS = 70
START_DAY = 35.0  # the ramp starts here; it reaches the limit 20 days later


def _ar1(rng: np.random.Generator, n: int, rho: float, sigma: float) -> np.ndarray:
    e = rng.normal(0.0, sigma * math.sqrt(1 - rho * rho), n)
    out = np.empty(n)
    out[0] = rng.normal(0.0, sigma)
    for i in range(1, n):
        out[i] = rho * out[i - 1] + e[i]
    return out


def _transformer(seed: int = 1, ramp: bool = True, days: int = DAYS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hourly top oil explained by load and ambient, AR(1) noise, and (optionally) a cooling fault's ramp."""
    rng = np.random.default_rng(seed)
    t = np.arange(days * 24, dtype=np.float64)
    load = 0.6 + 0.25 * np.sin(2 * np.pi * (t - 8) / 24) + 0.05 * rng.normal(size=t.size)
    ambient = 15 + 6 * np.sin(2 * np.pi * (t - 14) / 24) + _ar1(rng, t.size, 0.99, 2.0)
    oil = 20 + 25 * load + 0.8 * ambient + _ar1(rng, t.size, 0.9, 0.6)
    if ramp:
        oil = oil + np.clip((t / 24 - START_DAY) * RAMP, 0, None)
    return t, oil, np.column_stack([load, ambient])


def test_ramp_warned_a_day_ahead_with_time_to_limit_in_range() -> None:
    t, oil, x = _transformer()
    failure_h = (START_DAY + LIMIT / RAMP) * 24
    sc = scan(t, oil, x, every_hours=6.0, start_h=START_DAY * 24, end_h=failure_h, residual_limit=LIMIT)
    hits = np.flatnonzero(sc.warning)
    assert hits.size, "the ramp was never warned of"
    lead = failure_h - sc.now_h[hits[0]]
    assert lead >= 24.0
    # once the window lies inside the ramp, the true time to the limit sits inside the stated range
    now = failure_h - 96.0
    p = assess_precursor(t, oil, x, now_h=now, residual_limit=LIMIT)
    assert p.warning and p.limiting == "residual" and p.drivers_used == (0, 1)
    lo, hi = p.hours_to_limit_range
    assert lo <= 96.0 <= hi
    assert p.slope_low <= RAMP <= p.slope_high
    assert p.r2 > 0.8


def test_no_warning_before_the_ramp_starts_or_without_it() -> None:
    t, oil, x = _transformer(seed=2, ramp=False)
    sc = scan(t, oil, x, every_hours=6.0, residual_limit=LIMIT)
    assert sc.now_h.size > 100 and not sc.warning.any()


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_no_warning_on_stationary_noise(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(120 * 24, dtype=np.float64)
    y = 50 + _ar1(rng, t.size, 0.95, 2.0)
    sc = scan(t, y, None, every_hours=12.0, residual_limit=LIMIT, limit=60.0)
    assert not sc.warning.any()


def test_no_warning_on_load_driven_swings_with_a_flat_residual() -> None:
    rng = np.random.default_rng(6)
    t = np.arange(70 * 24, dtype=np.float64)
    swing = 0.3 * np.clip(np.sin(2 * np.pi * t / (24 * 28)), -1, 1)  # load rises for a week at a time
    load = 0.6 + swing + 0.2 * np.sin(2 * np.pi * t / 24) + 0.03 * rng.normal(size=t.size)
    oil = 25 + 30 * load + _ar1(rng, t.size, 0.9, 0.5)
    now = 28 * 24 + 6 * 24.0  # inside a rising stretch of load
    own = theil_sen(t[(t > now - 14 * 24) & (t <= now)] / 24, oil[(t > now - 14 * 24) & (t <= now)])
    assert own is not None and own.slope_low > 0.3  # the oil itself does rise: the test can fail
    sc = scan(t, oil, load, every_hours=6.0, residual_limit=LIMIT, limit=60.0)
    assert not sc.warning.any()


def test_constant_and_quantised_sensors_raise_nothing() -> None:
    t = np.arange(40 * 24, dtype=np.float64)
    p = assess_precursor(t, np.full(t.size, 42.0), None, residual_limit=LIMIT, limit=50.0)
    assert not p.warning and "constant" in p.reason
    rng = np.random.default_rng(7)
    quantised = np.round(40 + _ar1(rng, t.size, 0.9, 0.4))  # 1 K steps, a handful of values
    sc = scan(t, quantised, None, every_hours=6.0, residual_limit=LIMIT, limit=50.0)
    assert not sc.warning.any()


def test_hostile_timestamps_are_cleaned_and_counted() -> None:
    t, oil, x = _transformer(seed=8)
    now = (START_DAY + 14) * 24.0
    clean = assess_precursor(t, oil, x, now_h=now, residual_limit=LIMIT)
    # shuffled rows (a clock stepping back), 200 repeated rows, NaNs, and a 3-day gap in the reference
    rng = np.random.default_rng(9)
    rep = rng.choice(t.size, 200, replace=False)
    tt, yy, xx = np.r_[t, t[rep]], np.r_[oil, oil[rep]], np.r_[x, x[rep]]
    gap = (tt > 25 * 24) & (tt < 28 * 24)
    tt, yy, xx = tt[~gap], yy[~gap], xx[~gap]
    yy[rng.choice(tt.size, 50, replace=False)] = np.nan
    order = rng.permutation(tt.size)
    p = assess_precursor(tt[order], yy[order], xx[order], now_h=now, residual_limit=LIMIT)
    assert p.cleaning["repeated_timestamps"] >= 150 and p.cleaning["dropped_non_finite"] == 50
    assert p.cleaning["out_of_order"] > 0
    assert p.warning == clean.warning and p.hours_to_limit == pytest.approx(clean.hours_to_limit, rel=0.25)
    # a window mostly missing: no verdict on a trend, and it says why
    keep = (t < now - 10 * 24) | (t > now - 24)
    g = assess_precursor(t[keep], oil[keep], x[keep], now_h=now, residual_limit=LIMIT)
    assert not g.warning and "gaps" in g.reason


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        clean_samples(np.arange(5.0), np.arange(4.0))
    with pytest.raises(ValueError, match="drivers have 3 rows"):
        clean_samples(np.arange(5.0), np.arange(5.0), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="residual_limit and/or limit"):
        assess_precursor(np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="PrecursorConfig.bins"):
        PrecursorConfig(bins=2)


def _asset(t: np.ndarray, oil: np.ndarray, x: np.ndarray, now: datetime) -> AssetData:
    stamps = [now + timedelta(hours=float(h - t[-1])) for h in t]
    return AssetData(device_id="TR-9", substation="S1", top_oil=Series(stamps, oil.tolist()),
                     load_factor=Series(stamps, x[:, 0].tolist()), ambient=Series(stamps, x[:, 1].tolist()))


def test_predictor_raises_an_early_warning_with_its_evidence() -> None:
    t, oil, x = _transformer(seed=10)
    end = int((START_DAY + 14) * 24)  # 6 days before the limit
    now = datetime(2025, 7, 1, tzinfo=timezone.utc)
    p = assess([_asset(t[:end], oil[:end], x[:end], now)], now=now)[0]
    f = p.finding
    assert f is not None and f.severity == "WARNING" and f.type == "oil_temperature_precursor"
    ev = f.facts["precursor"]["oil_temperature"]
    assert ev["warning"] and ev["slope_per_day"] > 0 and ev["fit_r2"] > 0.8 and ev["residual_limit"] == LIMIT
    assert ev["drivers_used"] == [0, 1] and ev["window_start"] < ev["window_end"] == now.isoformat()
    true_crossing = now + timedelta(hours=6 * 24)
    lo, hi = (datetime.fromisoformat(s) for s in ev["estimated_crossing_range"])
    assert lo - timedelta(hours=24) <= true_crossing <= hi
    assert "Precursor" in f.description and "due in about" in f.description
    assert f.condition_key() == "maintenance_predictor:health:S1:TR-9"
    # the same unit without the fault: no finding; switched off: no precursor
    t2, oil2, x2 = _transformer(seed=10, ramp=False)
    assert assess([_asset(t2[:end], oil2[:end], x2[:end], now)], now=now)[0].finding is None
    off = assess([_asset(t[:end], oil[:end], x[:end], now)], MaintenanceConfig(precursor_enabled=False), now=now)[0]
    assert off.finding is None
    # the hub's existing path makes it a WARNING incident carrying the evidence
    from hub.incidents.service import incident_from_finding

    inc = incident_from_finding(f)
    assert inc.severity == "WARNING" and inc.type == "oil_temperature_precursor"
    assert inc.facts["precursor"]["oil_temperature"]["estimated_crossing"] == ev["estimated_crossing"]


def _eval_module():  # scripts/ is not a package: load the evaluation script by path
    path = Path(__file__).resolve().parents[2] / "scripts" / "precursor_eval.py"
    spec = importlib.util.spec_from_file_location("precursor_eval_script", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_etth1_false_warnings_and_injected_ramp_lead_at_achieved_levels() -> None:
    ett = DATA / "ett" / "ETTh1.csv"
    if not ett.exists():
        pytest.skip(f"{ett} not present")
    r = _eval_module().evaluate_etth1(ett, ramps=16, seed=0, step_h=12.0, include_baselines=False)["precursor"]
    # achieved at this setting (16 ramps, scan every 12 h): 5 false episodes in 1.99 years (2.52/yr),
    # 13/16 detected, 12/16 a day ahead, median lead 216 h. The full run beside its baselines is in
    # docs/precursors.md (scripts/precursor_eval.py).
    assert r["false_episodes_per_year"] <= 2.6
    assert r["detected"] >= 13 / 16 and r["lead_ge_24h"] >= 12 / 16
    assert r["median_lead_h"] >= 216.0


def test_creeping_vibration_is_warned_toward_zone_d() -> None:
    rng = np.random.default_rng(11)
    t = np.arange(28 * 24, dtype=np.float64)
    vib = 2.0 + 0.25 * np.clip(t / 24 - 12, 0, None) + _ar1(rng, t.size, 0.8, 0.1)  # 6 mm/s now, 7.1 at D
    now = datetime(2025, 8, 1, tzinfo=timezone.utc)
    stamps = [now + timedelta(hours=float(h - t[-1])) for h in t]
    asset = AssetData(device_id="P-1", kind="pump", vibration=Series(stamps, vib.tolist()))
    f = assess([asset], now=now)[0].finding
    assert f is not None and f.severity in ("WARNING", "CRITICAL")
    ev = f.facts["precursor"]["vibration"]
    assert ev["warning"] and ev["limiting"] == "quantity" and ev["limit"] == 7.1
    assert ev["hours_to_limit_range"][0] <= (7.1 - 6.0) / 0.25 * 24 <= ev["hours_to_limit_range"][1]
    assert "Precursor: vibration" in f.description
    flat = AssetData(device_id="P-2", kind="pump",
                     vibration=Series(stamps, (2.0 + _ar1(rng, t.size, 0.8, 0.1)).tolist()))
    assert assess([flat], now=now)[0].finding is None


def test_variance_inflation_widens_sen_interval_only() -> None:
    rng = np.random.default_rng(12)
    t = np.arange(40.0)
    y = 0.1 * t + rng.normal(0, 1, t.size)
    plain, wide = theil_sen(t, y), theil_sen(t, y, variance_inflation=9.0)
    assert plain is not None and wide is not None
    assert wide.slope_per_day == plain.slope_per_day and wide.intercept == plain.intercept
    assert wide.slope_low < plain.slope_low and wide.slope_high > plain.slope_high
    assert theil_sen(t, y, variance_inflation=0.5) == plain  # never narrower than independent samples
