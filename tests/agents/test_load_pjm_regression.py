"""The day-ahead forecaster on real utility load (PJM's AEP, DAYTON and DOM zones, ../shared/data/load),
at the levels docs/forecasting.md reports, beside the baselines of the same run. Samples of 2017 (every
ninth or fifth day, which cycle through the weekdays) keep it to seconds; skipped when the data is
absent. Scores, not timings."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest

from agents.demand_forecaster.dayahead import forecast_day_ahead
from agents.demand_forecaster.evaluate import evaluate_load, read_load_csv, us_load_holidays

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "load"


@pytest.fixture(scope="module")
def aep():
    path = DATA / "AEP_hourly.csv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return read_load_csv(path)


def test_the_file_is_read_as_it_is(aep) -> None:
    assert aep.name == "AEP_MW" and aep.rows > 100_000
    assert aep.duplicates == 4 and 11 <= aep.missing <= 27  # DST repeats; gaps (data README)
    assert "rows not in time order: sorted" in aep.notes
    assert np.isfinite(aep.values).sum() == len(aep.values) - aep.missing


def test_day_ahead_mape_below_3_5_pct_and_calibrated_intervals(aep) -> None:
    r = evaluate_load(aep, history_days=365, years=[2017], every=9)
    day1, day2 = r["horizons"][24], r["horizons"][48]
    assert r["issues"] >= 40 and day1["hours"] >= 40 * 23
    # measured on the full year: 2.87 % beside 3.89 % (per-hour linear) and 6.23 % (same hour yesterday)
    assert day1["forecaster_mape"] < 3.5
    assert day1["forecaster_mape"] < 0.9 * day1["linear_per_hour_mape"]
    assert day1["forecaster_mape"] < 0.6 * day1["same_hour_yesterday_mape"]
    # two days ahead the weather dominates: level with the per-hour linear model, well ahead of the naive ones
    assert day2["forecaster_mape"] < 1.05 * day2["linear_per_hour_mape"]
    assert day2["forecaster_mape"] < 0.8 * min(day2["same_hour_yesterday_mape"], day2["same_hour_last_week_mape"])
    # coverage on this 41-day sample: 81.7 % (24 h) and 75.1 % (48 h); 41 days move it by several points
    assert 0.78 <= day1["coverage"] <= 0.825 and 0.72 <= day2["coverage"] <= 0.80  # 83.1 % before day 1 moved in


# The harder zones with the two years of history the hub hands the agent, on every fifth day of 2017
# (73 issues). Full year: DAYTON 3.50 % beside 4.59 % (per-hour linear), DOM 4.22 % beside 5.80 %. On
# this sample the forecaster before the level features, season weights and error correction gave
# DAYTON 4.13 % (0.816 of the linear model) and DOM 4.40 % (0.769); now 4.01 % (0.792) and 4.30 % (0.751).
# 10-90 % coverage, full year: DAYTON 79.9 % (24 h) and 79.1 % (48 h), DOM 80.4 % and 78.8 %; on this
# sample (73 days: a few stormy days move it by points) DAYTON 73.4 % and 74.4 %, DOM 79.6 % and 73.7 %.
SAMPLE_LEVELS = {"DAYTON": (4.05, 0.80), "DOM": (4.35, 0.76)}
SAMPLE_COVERAGE = {"DAYTON": (0.734, 0.744), "DOM": (0.796, 0.737)}


@pytest.mark.parametrize("zone", sorted(SAMPLE_LEVELS))
def test_two_years_of_history_hold_the_measured_levels(zone: str) -> None:
    path = DATA / f"{zone}_hourly.csv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    r = evaluate_load(read_load_csv(path), history_days=730, years=[2017], every=5)
    day1, day2 = r["horizons"][24], r["horizons"][48]
    assert r["issues"] == 73 and day1["hours"] >= 73 * 23
    most, ratio = SAMPLE_LEVELS[zone]
    assert day1["forecaster_mape"] < most, day1
    assert day1["forecaster_mape"] < ratio * day1["linear_per_hour_mape"], day1
    assert day1["forecaster_mape"] < 0.55 * day1["same_hour_yesterday_mape"], day1
    assert day2["forecaster_mape"] < 0.98 * day2["linear_per_hour_mape"], day2
    cover1, cover2 = SAMPLE_COVERAGE[zone]
    assert abs(day1["coverage"] - cover1) < 0.015 and abs(day2["coverage"] - cover2) < 0.015, (day1, day2)


def test_the_first_day_takes_the_conformal_levels_one_point_in(aep) -> None:
    """Split-conformal at rank ceil((n + 1) q) of the last 112 days for the second day (102 of 112 for
    90 %), one rank in for the first (101): its leave-one-out residuals overstate the day-ahead error
    (2016: 80.8-82.2 % covered at 24 h with the conformal rank, 78.6-80.6 % at 48 h; docs/forecasting.md)."""
    i0 = aep.day_index(date(2017, 6, 1))
    lo = i0 - 730 * 24
    hol = np.asarray([d.toordinal() - date(1970, 1, 1).toordinal() for d in us_load_holidays(range(2014, 2018))])
    now = forecast_day_ahead(aep.values[lo:i0], aep.start_s + 3600.0 * lo, 48, holidays=hol)
    before = forecast_day_ahead(aep.values[lo:i0], aep.start_s + 3600.0 * lo, 48, holidays=hol, day1_level_in=0.0)
    assert now.info["calib_days"] == 112
    assert now.info["levels"] == pytest.approx((1 - 102 / 112, 102 / 112))
    assert now.info["levels_day1"] == pytest.approx((1 - 101 / 112, 101 / 112))
    np.testing.assert_array_equal(now.point, before.point)
    np.testing.assert_array_equal(now.upper[24:], before.upper[24:])
    np.testing.assert_array_equal(now.lower[24:], before.lower[24:])
    width, wider = (now.upper - now.lower)[:24], (before.upper - before.lower)[:24]
    assert np.all(width <= wider) and 0.85 < width.mean() / wider.mean() < 0.99


def test_three_years_of_history_bring_dayton_under_3_5_pct() -> None:
    """The hub hands the forecaster up to three years (AgentSettings.load_history_days, 1,095 days).
    Full year 2017: DAYTON 3.45 % at 24 h beside 4.58 % (per-hour linear), 3.50 % with 730 days;
    coverage 80.5 % / 79.6 %. On this sample (every third day, 122 issues) 3.645 % against 3.706 % with
    730 days, coverage 78.8 % and 79.1 %."""
    from agents.demand_forecaster.forecaster import ForecastConfig
    from hub.insights.agent_inputs import AgentSettings

    assert ForecastConfig().max_history_days == 1095 and AgentSettings().load_history_days == 1095
    path = DATA / "DAYTON_hourly.csv"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    r = evaluate_load(read_load_csv(path), history_days=1095, years=[2017], every=3)
    day1, day2 = r["horizons"][24], r["horizons"][48]
    assert r["issues"] == 122
    assert day1["forecaster_mape"] < 3.67 and day1["forecaster_mape"] < 0.77 * day1["linear_per_hour_mape"], day1
    assert abs(day1["coverage"] - 0.788) < 0.015 and abs(day2["coverage"] - 0.791) < 0.015, (day1, day2)
