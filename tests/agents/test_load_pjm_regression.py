"""The day-ahead forecaster on real utility load (PJM's AEP, DAYTON and DOM zones, ../shared/data/load),
at the levels docs/forecasting.md reports, beside the baselines of the same run. Samples of 2017 (every
ninth or fifth day, which cycle through the weekdays) keep it to seconds; skipped when the data is
absent. Scores, not timings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.demand_forecaster.evaluate import evaluate_load, read_load_csv

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
    assert 0.72 <= day1["coverage"] <= 0.88 and 0.65 <= day2["coverage"] <= 0.90


# The harder zones with the two years of history the hub hands the agent, on every fifth day of 2017
# (73 issues). Full year: DAYTON 3.50 % beside 4.59 % (per-hour linear), DOM 4.22 % beside 5.80 %. On
# this sample the forecaster before the level features, season weights and error correction gave
# DAYTON 4.13 % (0.816 of the linear model) and DOM 4.40 % (0.769); now 4.01 % (0.792) and 4.30 % (0.751).
SAMPLE_LEVELS = {"DAYTON": (4.05, 0.80), "DOM": (4.35, 0.76)}


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
    assert 0.72 <= day1["coverage"] <= 0.88 and 0.68 <= day2["coverage"] <= 0.90, (day1, day2)
