"""Maintenance predictor: known answers from IEC 60076-7 and IEC 60599, hand computations, the seed's
TR-04 example, and the properties the health score promises (exact decomposition, monotone)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.findings import Finding
from agents.maintenance_predictor import (
    AssetData,
    DgaSeries,
    MaintenanceConfig,
    MaintenancePrediction,
    Series,
    assess,
    best_window,
)
from agents.maintenance_predictor import health as hl
from agents.maintenance_predictor import thermal as th
from agents.maintenance_predictor.dga import assess_dga, duval_triangle_1, gas_ratios, iec60599_ratio_case
from agents.maintenance_predictor.trend import theil_sen, vibration_zones

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------------- IEC 60076-7 ageing (Table 3)

def test_ageing_rate_non_upgraded_paper_table_3() -> None:
    theta = np.arange(80.0, 141.0, 6.0)
    expected = [0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]
    assert th.relative_ageing_rate(theta, "normal") == pytest.approx(expected, rel=1e-12)


def test_ageing_rate_upgraded_paper_table_3() -> None:
    theta = np.arange(80.0, 141.0, 6.0)
    table = [0.036, 0.073, 0.145, 0.282, 0.536, 1.0, 1.83, 3.29, 5.8, 10.1, 17.2]  # as printed, 3 figures
    v = th.relative_ageing_rate(theta, "upgraded")
    assert v[5] == pytest.approx(1.0, abs=1e-12)
    for got, want in zip(v, table):
        assert got == pytest.approx(want, rel=0.006)


def test_loss_of_life_sums_rate_times_duration() -> None:
    minutes = np.arange(0.0, 24 * 60 + 1, 10.0)
    assert th.loss_of_life_hours(minutes, np.full(minutes.size, 98.0)) == pytest.approx(24.0)
    assert th.loss_of_life_hours(minutes, np.full(minutes.size, 104.0)) == pytest.approx(48.0)
    assert th.loss_of_life_hours(minutes, np.full(minutes.size, 110.0), "upgraded") == pytest.approx(24.0)
    with pytest.raises(ValueError, match="unknown paper"):
        th.relative_ageing_rate(98.0, "kraft")


# ---------------------------------------------------------------------- IEC 60076-7 thermal model

def test_table_4_and_5_defaults_give_98_degC_hot_spot_at_rated_load_and_20_degC() -> None:
    for mode in th.COOLING_MODES:
        assert th.steady_hot_spot_c(1.0, 20.0, th.parameters_for(mode)) == pytest.approx(98.0)
    p = th.parameters_for("ONAF")
    assert (p.x, p.y, p.k11, p.k21, p.k22, p.tau_o_min, p.tau_w_min) == (0.8, 1.3, 0.5, 2.0, 2.0, 150.0, 7.0)
    od = th.parameters_for("OD")
    assert (od.x, od.y, od.k11, od.k21, od.k22, od.tau_o_min, od.tau_w_min) == (1.0, 2.0, 1.0, 1.0, 1.0, 90.0, 7.0)
    with pytest.raises(ValueError, match="unknown cooling mode"):
        th.parameters_for("ONXX")
    with pytest.raises(ValueError, match="unknown thermal parameter"):
        th.parameters_for("ONAF", tau=3)


def test_steady_state_against_hand_computation() -> None:
    p = th.parameters_for("ONAF")  # d_theta_or 52 K, R 6, x 0.8, H g_r 26 K, y 1.3
    k = 1.2
    top = 52.0 * ((1 + 6 * 1.44) / 7) ** 0.8
    hot = 26.0 * 1.2**1.3
    assert th.steady_top_oil_rise_k(k, p) == pytest.approx(top, rel=1e-12)
    assert th.steady_hot_spot_rise_k(k, p) == pytest.approx(hot, rel=1e-12)
    assert th.steady_hot_spot_c(k, 25.0, p) == pytest.approx(25.0 + top + hot, rel=1e-12)
    assert 25.0 + top + hot == pytest.approx(125.1258, abs=1e-4)


def test_constant_load_from_steady_state_stays_steady() -> None:
    p = th.parameters_for("ONAN")
    r = th.simulate(np.arange(0, 600, 15.0), 0.9, 30.0, p)
    assert np.allclose(r.hot_spot_c, th.steady_hot_spot_c(0.9, 30.0, p), atol=1e-9)
    assert np.allclose(r.top_oil_c, 30.0 + th.steady_top_oil_rise_k(0.9, p), atol=1e-9)


def _exponential_step(p: th.ThermalParameters, k0: float, k1: float, amb: float, t: np.ndarray):
    """Clause 8.2.2 exponential solution for a load step from steady state at k0 to k1 (increase)."""
    top_i, top_u = th.steady_top_oil_rise_k(k0, p), th.steady_top_oil_rise_k(k1, p)
    f1 = 1 - np.exp(-t / (p.k11 * p.tau_o_min))
    h_i, h_u = th.steady_hot_spot_rise_k(k0, p), th.steady_hot_spot_rise_k(k1, p)
    f2 = p.k21 * (1 - np.exp(-t / (p.k22 * p.tau_w_min))) - (p.k21 - 1) * (1 - np.exp(-t / (p.tau_o_min / p.k22)))
    top = amb + top_i + (top_u - top_i) * f1
    return top, top + h_i + (h_u - h_i) * f2


@pytest.mark.parametrize("mode", ["ONAN", "ONAF", "OF", "ONAN-distribution"])
def test_step_response_converges_to_the_exponential_solution(mode: str) -> None:
    p = th.parameters_for(mode)
    t = np.arange(0.0, 600.0 + 1e-9, 0.01)
    k = np.where(t > 0, 1.3, 0.5)
    r = th.simulate(t, k, 20.0, p, max_step_min=0.01)
    top, hot = _exponential_step(p, 0.5, 1.3, 20.0, t)
    assert np.max(np.abs(r.top_oil_c[0] - top)) < 0.01
    assert np.max(np.abs(r.hot_spot_c[0] - hot)) < 0.02
    # the hot spot overshoots its ultimate value when k21 > 1 (the oil has not caught up yet)
    if p.k21 > 1:
        assert r.hot_spot_c[0, int(60 / 0.01)] > hot[int(60 / 0.01)] - 0.02


def _annex_example(dt: float):
    """IEC 60076-7:2018's worked example of the dynamic (difference-equation) solution, in its annexes
    (the one alliander-opensource/transformer-thermal-model issue #32 compares with as "annex H"): ONAF,
    x 0.8, y 1.3, k11 0.5, k21 2, k22 2, tau_o 150 min, tau_w 7 min (Table 4), d_theta_or 38.3 K,
    H 1.4, g_r 14.5 K, R 1000, ambient 25.6 degC, initial top oil 38.3 degC with no hot-spot
    gradient, load factor 1.0 / 0.6 / 1.5 / 0.3 / 2.1 / 0 over 0-190-365-500-705-730-745 min."""
    p = th.parameters_for("ONAF", R=1000, H=1.4, g_r_k=14.5, delta_theta_or_k=38.3)
    t = np.arange(0.0, 745.0 + dt / 2, dt)
    k = np.select([t <= 190, t <= 365, t <= 500, t <= 705, t <= 730], [1.0, 0.6, 1.5, 0.3, 2.1], 0.0)
    return p, t, k


# The example's tabulated (top-oil, hot-spot) temperatures at the end of each load step, degC, as
# reproduced in Alliander's open-source transformer-thermal-model (tests/model/test_model.py,
# test_if_rise_matches_iec, "expected_results"; its tests/conftest.py iec_load_profile gives the load
# steps; added by its PR #39 to hold its model to the standard), which checks them within 1.1 K.
_ANNEX_TABLE = {190: (61.9, 83.8), 365: (44.4, 54.0), 500: (89.2, 127.0), 705: (35.0, 37.5),
                730: (67.9, 138.6), 745: (60.3, 75.3)}


@pytest.mark.parametrize("dt", [0.5, 1.0, 5.0, 5.0 / 3.0])
def test_annex_example_onaf_step_loads_within_1_K(dt: float) -> None:
    """The exact per-interval update reproduces the standard's dynamic example at every tabulated time,
    whatever the sampling interval that lands on the step times (0.5, 1, 5 min, 100 s).

    Top oil is within 1 K everywhere (0.65 K at 500 min, <= 0.1 K elsewhere); the hot spot is within
    0.1 K at five of the six times. At 500 min (end of 135 min at 1.5 pu) the exact solution of the
    standard's own equations is 128.05 degC against the printed 127.0: the difference equations at
    Dt = 0.5 min give the same 128.06, so the 1.05 K there is the printed figure, not the integration;
    that one point is held to 1.1 K (the tolerance the open implementation above uses throughout)."""
    p, t, k = _annex_example(dt)
    r = th.simulate(t, k, 25.6, p, th.ThermalState(top_oil_c=38.3))
    for minute, (top, hot) in _ANNEX_TABLE.items():
        i = int(round(minute / dt))
        assert t[i] == pytest.approx(minute)
        assert r.top_oil_c[0, i] == pytest.approx(top, abs=1.0), minute
        assert r.hot_spot_c[0, i] == pytest.approx(hot, abs=1.1 if minute == 500 else 1.0), minute
    at = {m: int(round(m / dt)) for m in _ANNEX_TABLE}
    assert max(abs(r.top_oil_c[0, at[m]] - top) for m, (top, _) in _ANNEX_TABLE.items() if m != 500) < 0.15
    assert max(abs(r.hot_spot_c[0, at[m]] - hot) for m, (_, hot) in _ANNEX_TABLE.items() if m != 500) < 0.15


def test_annex_example_exact_update_matches_fine_difference_equations() -> None:
    """The standard's difference equations at a tiny Dt converge on the exact update (and the exact
    update on a 5-min grid equals the one on a 0.5-min grid at the shared times)."""
    p, t, k = _annex_example(0.5)
    fine = th.simulate(t, k, 25.6, p, th.ThermalState(top_oil_c=38.3), max_step_min=0.01)
    exact = th.simulate(t, k, 25.6, p, th.ThermalState(top_oil_c=38.3))
    assert np.max(np.abs(fine.hot_spot_c - exact.hot_spot_c)) < 0.05
    assert np.max(np.abs(fine.top_oil_c - exact.top_oil_c)) < 0.02
    p5, t5, k5 = _annex_example(5.0)
    coarse = th.simulate(t5, k5, 25.6, p5, th.ThermalState(top_oil_c=38.3))
    assert np.allclose(coarse.hot_spot_c[0], exact.hot_spot_c[0, ::10], atol=1e-9)


def _hourly_step(mode: str, k_base: float):
    t_h = np.arange(0.0, 48 * 60 + 1, 60.0)
    t_f = np.arange(0.0, 48 * 60 + 1, 1.0)
    step = lambda t: np.select([t <= 12 * 60, t <= 20 * 60], [k_base, 2.1], k_base)  # noqa: E731
    return th.parameters_for(mode), t_h, step(t_h), t_f, step(t_f)


@pytest.mark.parametrize("mode", ["ONAF", "ONAN", "OF", "OD", "ONAN-distribution"])
@pytest.mark.parametrize("k_base", [0.0, 0.5, 1.0])
def test_hourly_fed_step_to_2_1_pu_tracks_a_fine_step_reference(mode: str, k_base: float) -> None:
    """Fed hourly, as the maintenance predictor feeds it: a step to 2.1 pu for 8 h and back. At every
    hourly sample the hot spot and top oil stay within 0.05 K of a reference stepping the difference
    equations at 0.005 min on a 1-min grid: no overshoot after the step up, no undershoot after the
    step down. Stepping hourly data at the standard's limit (half the smallest time constant) misses
    the reference by 0.4-5.9 K on the same profiles; this test shows that too, so it can tell them apart."""
    p, t_h, k_h, t_f, k_f = _hourly_step(mode, k_base)
    ref = th.simulate(t_f, k_f, 20.0, p, max_step_min=0.005)
    at = t_h.astype(int)
    hourly = th.simulate(t_h, k_h, 20.0, p)
    err = hourly.hot_spot_c[0] - ref.hot_spot_c[0, at]
    assert err.max() < 0.05 and err.min() > -0.05
    assert np.max(np.abs(hourly.top_oil_c[0] - ref.top_oil_c[0, at])) < 0.05
    assert hourly.hot_spot_c[0].max() <= ref.hot_spot_c[0].max() + 0.05  # never above the true peak
    euler = th.simulate(t_h, k_h, 20.0, p, max_step_min=p.max_step_min())
    assert np.max(np.abs(euler.hot_spot_c[0] - ref.hot_spot_c[0, at])) > 0.3


def test_hourly_samples_converge_to_the_ultimate_value() -> None:
    p = th.parameters_for("ONAF")
    t = np.arange(0.0, 24 * 60 + 1, 60.0)
    k = np.where(t > 0, 1.3, 0.5)
    r = th.simulate(t, k, 20.0, p)
    top, hot = _exponential_step(p, 0.5, 1.3, 20.0, t)
    assert np.max(np.abs(r.top_oil_c[0] - top)) < 1e-9  # clause 8.2.2's exponential solution, exactly
    assert np.max(np.abs(r.hot_spot_c[0] - hot)) < 1e-9
    assert r.hot_spot_c[0, -1] == pytest.approx(th.steady_hot_spot_c(1.3, 20.0, p), abs=0.05)
    with pytest.raises(ValueError, match="max_step_min"):
        th.simulate(t, k, 20.0, p, max_step_min=0.0)


def test_simulation_is_vectorised_across_transformers() -> None:
    t = np.arange(0.0, 720.0, 30.0)
    k = np.stack([0.6 + 0.5 * np.sin(t / 100.0) ** 2, np.full(t.size, 1.1)])
    amb = np.stack([np.full(t.size, 15.0), 25.0 + np.cos(t / 200.0)])
    ps = [th.parameters_for("ONAN"), th.parameters_for("OD")]
    both = th.simulate(t, k, amb, ps)
    for i in range(2):
        one = th.simulate(t, k[i], amb[i], ps[i])
        assert np.allclose(both.hot_spot_c[i], one.hot_spot_c[0], atol=1e-12)
        assert np.allclose(both.top_oil_c[i], one.top_oil_c[0], atol=1e-12)


# ----------------------------------------------------------------------------------------- trends

def test_theil_sen_exact_line_and_outliers() -> None:
    t = np.arange(0.0, 7.0, 1 / 24)
    y = 80.0 + 3.0 * t
    fit = theil_sen(t, y)
    assert fit is not None
    assert fit.slope_per_day == pytest.approx(3.0) and fit.intercept == pytest.approx(80.0)
    assert fit.slope_low == pytest.approx(3.0) and fit.slope_high == pytest.approx(3.0)
    y_bad = y.copy()
    y_bad[::10] = 200.0  # 10 % wild outliers
    robust = theil_sen(t, y_bad)
    assert robust is not None and robust.slope_per_day == pytest.approx(3.0, abs=0.05)
    assert theil_sen([0.0, 1.0], [1.0, 2.0]) is None
    assert fit.hours_to_exceed(fit.level_now + 6.0) == pytest.approx(48.0)
    assert fit.hours_to_exceed(fit.level_now - 1.0) == 0.0


def test_theil_sen_interval_covers_the_true_slope() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(0.0, 7.0, 1 / 24)
    covered = 0
    for _ in range(40):
        fit = theil_sen(t, 60.0 + 1.5 * t + rng.normal(0.0, 1.0, t.size))
        assert fit is not None and fit.slope_low <= fit.slope_per_day <= fit.slope_high
        covered += fit.slope_low <= 1.5 <= fit.slope_high
    assert covered >= 34  # 95 % nominal


def test_vibration_zones() -> None:
    z = vibration_zones(np.array([0.5, 2.3, 3.0, 4.5, 7.0, 7.1, 20.0]), (2.3, 4.5, 7.1))
    assert z.tolist() == ["A", "B", "B", "C", "C", "D", "D"]


# --------------------------------------------------------------------------------------------- DGA

@pytest.mark.parametrize(("ch4", "c2h4", "c2h2", "zone"), [
    (99.0, 0.5, 0.5, "PD"),
    (98.0, 1.0, 1.0, "PD"),  # on the PD line
    (50.0, 10.0, 40.0, "D1"),
    (80.1, 19.9, 0.0, "T1"),
    (79.9, 20.0, 0.1, "T2"),  # on the T1/T2 line
    (90.0, 8.0, 2.0, "T1"),
    (65.0, 33.0, 2.0, "T2"),
    (48.0, 50.0, 2.0, "T3"),  # on the T2/T3 line
    (30.0, 60.0, 10.0, "T3"),
    (86.0, 10.0, 4.0, "DT"),  # on the T1 C2H2 line: no longer thermal
    (62.0, 30.0, 8.0, "DT"),
    (64.01, 22.99, 13.0, "D1"),  # on the D1 C2H2 line
    (64.0, 23.0, 13.0, "D2"),  # corner: D2 side of the 23 % C2H4 line
    (20.0, 40.0, 40.0, "D2"),
    (31.0, 40.0, 29.0, "D2"),  # corner of the D2 step
    (31.1, 40.0, 28.9, "DT"),
    (10.0, 35.0, 55.0, "D2"),
    (20.0, 65.0, 15.0, "DT"),  # on the T3 C2H2 line
])
def test_duval_triangle_1_zones(ch4: float, c2h4: float, c2h2: float, zone: str) -> None:
    assert duval_triangle_1(ch4, c2h4, c2h2).tolist() == [zone]
    assert duval_triangle_1(ch4 * 4, c2h4 * 4, c2h2 * 4).tolist() == [zone]  # ppm in, any scale


def test_duval_is_vectorised_and_all_zero_is_not_determinable() -> None:
    ch4 = np.array([99.0, 50.0, 30.0, 0.0])
    c2h4 = np.array([0.5, 10.0, 60.0, 0.0])
    c2h2 = np.array([0.5, 40.0, 10.0, 0.0])
    assert duval_triangle_1(ch4, c2h4, c2h2).tolist() == ["PD", "D1", "T3", "ND"]


# (H2, CH4, C2H6, C2H4, C2H2) in ppm, each above a typical value, built from the rows of Table 1
IEC_CASES = [
    ((1000, 50, 100, 10, 0), "PD"),  # CH4/H2 0.05, C2H4/C2H6 0.1
    ((500, 100, 20, 40, 80), "D1"),  # C2H2/C2H4 2, CH4/H2 0.2, C2H4/C2H6 2 (not > 2: not D2)
    ((300, 150, 20, 100, 100), "D2"),  # 1.0, 0.5, 5
    ((300, 90, 20, 100, 200), "D2"),  # 2.0, 0.3, 5: in both D1 and D2 ranges, the more severe
    ((50, 200, 300, 100, 0), "T1"),  # CH4/H2 4, C2H4/C2H6 0.33
    ((100, 300, 100, 200, 5), "T2"),  # 0.025, 3, 2
    ((100, 300, 50, 400, 20), "T3"),  # 0.05, 3, 8
    ((200, 160, 50, 150, 75), "ND"),  # 0.5, 0.8, 3: in no row
    ((20, 10, 10, 10, 1), "N"),  # all below typical values
]


@pytest.mark.parametrize(("gases", "case"), IEC_CASES)
def test_iec60599_ratio_cases(gases: tuple[int, ...], case: str) -> None:
    assert iec60599_ratio_case(*gases).tolist() == [case]


def test_iec60599_is_vectorised_and_ratios_handle_zeros() -> None:
    cols = np.array([g for g, _ in IEC_CASES], dtype=float).T
    assert iec60599_ratio_case(*cols).tolist() == [c for _, c in IEC_CASES]
    r1, r2, r3 = gas_ratios(np.array([0.0]), np.array([5.0]), np.array([0.0]), np.array([0.0]), np.array([0.0]))
    assert (r1[0], r2[0], r3[0]) == (0.0, math.inf, 0.0)


def test_dga_assessment_of_one_sample() -> None:
    d = assess_dga({"H2": 300, "CH4": 150, "C2H6": 20, "C2H4": 100, "C2H2": 100, "CO": 300, "CO2": 2000})
    assert d.iec_case == "D2" and d.duval_zone == "D2" and d.fault == "D2"
    assert d.duval_percent == pytest.approx({"CH4": 42.857142, "C2H4": 28.571428, "C2H2": 28.571428})
    assert d.worst_gas == "C2H2" and d.worst_ratio_to_typical == pytest.approx(5.0)
    quiet = assess_dga({"H2": 20, "CH4": 10, "C2H6": 10, "C2H4": 10, "C2H2": 1})
    assert quiet.fault == "N" and quiet.duval_zone == "DT"  # a zone, but not significant


# ------------------------------------------------------------------------------------------ window

def _daily_curve(start: datetime, hours: int) -> tuple[list[datetime], np.ndarray]:
    ts = [start + timedelta(hours=h) for h in range(hours)]
    hod = np.array([t.hour for t in ts])
    load = np.where((hod >= 22) | (hod < 6), 0.35, 0.9) + 0.05 * np.cos(2 * np.pi * hod / 24)
    return ts, load


def test_best_window_is_the_night_trough() -> None:
    ts, load = _daily_curve(datetime(2025, 3, 1, 8, tzinfo=timezone.utc), 36)
    w = best_window(ts, load, 8.0)
    assert w is not None
    assert (w.start, w.end) == (datetime(2025, 3, 1, 22, tzinfo=timezone.utc), datetime(2025, 3, 2, 6, tzinfo=timezone.utc))
    hod = np.array([22, 23, 0, 1, 2, 3, 4, 5])
    assert w.mean_load == pytest.approx(float(np.mean(0.35 + 0.05 * np.cos(2 * np.pi * hod / 24))))


def test_best_window_matches_a_brute_force_convolution() -> None:
    rng = np.random.default_rng(3)
    load = rng.uniform(0.2, 1.0, 200)
    ts = np.datetime64("2025-01-01T00:00") + np.arange(200) * np.timedelta64(1, "h")
    sums = np.convolve(load, np.ones(5), mode="valid")
    w = best_window(ts, load, 5.0)
    assert w is not None
    assert w.start == datetime(2025, 1, 1, tzinfo=timezone.utc) + timedelta(hours=int(np.argmin(sums)))
    assert w.mean_load == pytest.approx(sums.min() / 5)


def test_best_window_skips_missing_values_gaps_and_respects_bounds() -> None:
    ts, load = _daily_curve(datetime(2025, 3, 1, 8, tzinfo=timezone.utc), 36)
    with_nan = load.copy()
    with_nan[16] = np.nan  # 2025-03-02 00:00 in the first trough
    w = best_window(ts, with_nan, 8.0)
    assert w is not None and w.start == datetime(2025, 3, 2, 1, tzinfo=timezone.utc)  # 01:00-09:00, after the NaN
    latest = datetime(2025, 3, 1, 20, tzinfo=timezone.utc)
    early = best_window(ts, load, 8.0, latest_start=latest)
    assert early is not None and early.start <= latest
    gap = ts[:15] + ts[18:]
    w_gap = best_window(gap, np.concatenate([load[:15], load[18:]]), 8.0)
    assert w_gap is not None and w_gap.start not in ts[8:18]
    assert best_window(ts[:4], load[:4], 8.0) is None


# ------------------------------------------------------------------------------------------ health

def test_config_is_checked_when_built() -> None:
    with pytest.raises(ValueError, match="add up to 100"):
        MaintenanceConfig(weights={"thermal": 50, "oil_temperature": 50, "dga": 50, "vibration": 0, "age": 0,
                                   "maintenance": 0})
    with pytest.raises(ValueError, match="unknown factor"):
        MaintenanceConfig(weights={"thermal": 100, "noise": 0})
    with pytest.raises(ValueError, match="top_oil"):
        MaintenanceConfig(top_oil_alarm_c=110.0)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"trend_window_dayz": 3}, MaintenanceConfig)


def test_hazard_model_anchors() -> None:
    cfg = MaintenanceConfig()
    assert hl.hazard_probability(100.0, 8760.0, cfg) == pytest.approx(1 - math.exp(-0.01))
    assert hl.hazard_probability(0.0, 24.0, cfg) == pytest.approx(1 - math.exp(-1.0))
    probs = [hl.hazard_probability(h, 48.0, cfg) for h in (100, 80, 60, 40, 20, 0)]
    assert probs == sorted(probs)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["thermal", "oil_temperature", "dga", "vibration", "age", "maintenance"]),
                       st.floats(0.0, 1.0), min_size=0, max_size=6),
       st.sampled_from(["thermal", "oil_temperature", "dga", "vibration", "age", "maintenance"]),
       st.floats(0.0, 1.0))
def test_health_is_an_exact_decomposition_and_monotone(sev: dict[str, float], factor: str, more: float) -> None:
    cfg = MaintenanceConfig()
    health, comps, conf = hl.combine(sev, cfg)
    assert health == pytest.approx(100.0 + sum(comps.values()), abs=1e-12)
    assert 0.0 <= health <= 100.0
    assert conf == pytest.approx(sum(cfg.weights[f] for f in sev) / 100.0)
    worse = dict(sev)
    worse[factor] = max(sev.get(factor, 0.0), more)
    assert hl.combine(worse, cfg)[0] <= health + 1e-12


def test_oil_severity_rises_with_slope_and_level() -> None:
    cfg = MaintenanceConfig()
    t = np.arange(0.0, 7.0, 1 / 24)
    last = 0.0
    for slope in (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0):
        for base in (60.0, 70.0, 80.0):
            fit = theil_sen(t, base + slope * t)
            assert fit is not None
            s, _ = hl.oil_temperature_severity(fit, 105.0, cfg)
            assert 0.0 <= s <= 1.0
        s, _ = hl.oil_temperature_severity(theil_sen(t, 70.0 + slope * t), 105.0, cfg)
        assert s >= last
        last = s


# --------------------------------------------------------------------------- assess: seed's TR-04

def _tr04(rise_start: datetime) -> AssetData:
    """Top oil steady at 79 degC for a week, then +3 degC/day for 7 days (hourly, small noise), and a
    load forecast with its trough at 22:00-06:00."""
    rng = np.random.default_rng(4)
    hours = np.arange(-7 * 24, 7 * 24 + 1)
    ts = [rise_start + timedelta(hours=int(h)) for h in hours]
    temp = 79.0 + 3.0 * np.clip(hours / 24.0, 0.0, None) + rng.normal(0.0, 0.2, hours.size)
    fc_ts, fc = _daily_curve(rise_start + timedelta(days=7), 48)
    return AssetData(device_id="TR-04", substation="Kisumu", top_oil=Series(ts, temp.tolist()),
                     load_forecast=Series(fc_ts, fc.tolist()))


def test_tr04_oil_temperature_climbing_3_degC_a_day() -> None:
    rise_start = datetime(2025, 3, 8, 12, tzinfo=timezone.utc)
    asset = _tr04(rise_start)
    day = {d: assess([asset], now=rise_start + timedelta(days=d))[0] for d in (0, 3, 7)}
    assert day[7].health < day[3].health < day[0].health
    p7 = day[7]
    # at 100 degC and +3 degC/day the 105 degC trip is 40 h away: P(slope >= 2.5 degC/day), the slope
    # taken as normal(3, 0.6), is Phi(0.833) = 0.80
    assert p7.failure_probability["48h"] == pytest.approx(0.80, abs=0.05)
    assert p7.failure_probability["24h"] < 0.2 < p7.failure_probability["48h"] <= p7.failure_probability["168h"]
    assert day[0].failure_probability["48h"] < 0.01
    assert p7.recommended_action == "emergency_maintenance"
    assert p7.maintenance_window is not None
    assert p7.maintenance_window.start == datetime(2025, 3, 15, 22, tzinfo=timezone.utc)
    assert p7.maintenance_window.end == datetime(2025, 3, 16, 6, tzinfo=timezone.utc)
    assert p7.confidence == pytest.approx(0.25)  # oil temperature only
    assert p7.health == pytest.approx(100.0 + sum(p7.components.values()), abs=1e-9)
    f = p7.finding
    assert isinstance(f, Finding)
    assert (f.agent, f.type, f.severity, f.device_id, f.substation) == (
        "maintenance_predictor", "oil_temperature_trend", "CRITICAL", "TR-04", "Kisumu")
    oil = f.facts["oil_temperature"]
    assert oil["slope_c_per_day"] == pytest.approx(3.0, abs=0.05)
    assert oil["level_now_c"] == pytest.approx(100.0, abs=0.3)
    assert oil["hours_to_trip"] == pytest.approx(40.0, abs=1.5)
    lo, hi = oil["predicted_trip_hours"]
    assert 30.0 < lo < 40.0 < hi < 50.0
    assert f.description.startswith(f"Transformer TR-04 at {p7.health:.0f}% health. Temperature trend: +3.0°C/day for 7 days.")
    assert "RECOMMEND: Emergency maintenance in next 12 hours." in f.description
    assert "Maintenance window: 22:00-06:00 UTC today (low load period)." in f.description
    # on the site's clock (Kisumu, UTC+3): 15:00 now, the window after midnight
    local = assess([asset], MaintenanceConfig(utc_offset_h=3), now=rise_start + timedelta(days=7))[0].finding
    assert "Maintenance window: 01:00-09:00 local (UTC+3) tomorrow (low load period)." in local.description
    assert f.facts["components"] == {"oil_temperature": pytest.approx(p7.components["oil_temperature"], abs=1e-4)}
    msgspec.json.encode(f)  # facts travel as JSON
    assert day[0].finding is None and day[0].maintenance_window is None


def test_missing_data_is_skipped_and_lowers_confidence() -> None:
    p = assess([AssetData(device_id="TR-09")], now=T0)[0]
    assert (p.health, p.confidence, p.components, p.recommended_action, p.finding) == (100.0, 0.0, {}, "none", None)
    old = assess([AssetData(device_id="TR-10", age_years=30, design_life_years=40,
                            last_maintenance=T0 - timedelta(days=365 + 182.5))], now=T0)[0]
    assert old.components == pytest.approx({"age": -7.5, "maintenance": -4.0})
    assert old.health == pytest.approx(88.5) and old.confidence == pytest.approx(0.18)
    assert old.recommended_action == "monitor" and old.finding is None


def test_thermal_factor_from_load_and_ambient_batched() -> None:
    hours = np.arange(0, 7 * 24 + 1)
    ts = [T0 + timedelta(hours=int(h)) for h in hours]
    now = ts[-1]
    rated = AssetData(device_id="TR-01", cooling_mode="ONAF", load=Series(ts, [40.0] * hours.size), rated_load=40.0,
                      ambient=Series(ts, [20.0] * hours.size))
    overloaded = AssetData(device_id="TR-02", cooling_mode="ONAN", load_factor=Series(ts, [1.3] * hours.size),
                           ambient=Series(ts, [20.0] * hours.size))
    probe = AssetData(device_id="TR-03", hot_spot=Series(ts, [104.0] * hours.size))
    a, b, c = assess([rated, overloaded, probe], now=now)
    fa, fc = a.finding, c.finding
    assert a.components == {"thermal": 0.0}  # 98 degC hot spot: normal ageing, V = 1
    hot_b = th.steady_hot_spot_c(1.3, 20.0, th.parameters_for("ONAN"))
    v_b = float(th.relative_ageing_rate(hot_b))
    assert b.components["thermal"] == pytest.approx(-20.0 * min(1.0, math.log2(v_b) / 4.0), rel=1e-6)
    assert c.components["thermal"] == pytest.approx(-20.0 * 1.0 / 4.0)  # V = 2 -> log2 2 / log2 16
    assert fa is None and fc is None
    assert b.health < a.health
    assert b.finding is None or b.finding.type == "transformer_ageing"


def test_dga_fault_and_vibration_drive_the_finding() -> None:
    ts = [T0 + timedelta(hours=h) for h in range(0, 7 * 24 + 1)]
    vib = np.linspace(3.0, 7.5, len(ts))
    asset = AssetData(
        device_id="TR-07", substation="S2", vibration=Series(ts, vib.tolist()),
        dga=DgaSeries([T0, ts[-1]], {"H2": [20, 300], "CH4": [10, 150], "C2H6": [10, 20], "C2H4": [10, 100],
                                     "C2H2": [0, 100], "CO": [200, 300], "CO2": [1500, 2000]}))
    p = assess([asset])[0]  # now defaults to the latest sample
    assert p.timestamp == ts[-1]
    assert p.finding is not None
    facts = p.finding.facts
    assert facts["dga"]["fault"] == "D2" and facts["dga"]["iec60599_case"] == "D2"
    assert facts["vibration"]["zone"] == "D"
    assert p.finding.type == "dga_fault"
    assert p.health == pytest.approx(100.0 + sum(p.components.values()), abs=1e-9)
    assert p.recommended_action == "emergency_maintenance"  # vibration already in zone D


def test_structs_decode_from_json() -> None:
    raw = msgspec.json.encode({
        "device_id": "TR-04", "substation": "Kisumu", "cooling_mode": "ONAN", "paper": "upgraded",
        "thermal": {"delta_theta_or_k": 50.0}, "age_years": 12,
        "top_oil": {"timestamps": ["2025-03-01T00:00:00Z", "2025-03-01T01:00:00Z"], "values": [60.0, 61.0]},
    })
    asset = msgspec.json.decode(raw, type=AssetData)
    assert asset.top_oil is not None and asset.top_oil.timestamps[0].tzinfo is not None
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(b'{"device_id": "x", "colour": "red"}', type=AssetData)
    p = assess([asset])[0]
    assert isinstance(p, MaintenancePrediction)
    assert msgspec.json.decode(msgspec.json.encode(p), type=MaintenancePrediction) == p
