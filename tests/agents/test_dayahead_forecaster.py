"""The day-ahead forecaster on series the test makes (daily + weekly pattern, a drifting level, noise):
accuracy beside naive baselines, interval coverage, gaps, holidays, bad input; and the hub's agent
path through ``forecast``."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from agents.demand_forecaster import LoadHistory, forecast
from agents.demand_forecaster.dayahead import forecast_day_ahead
from agents.demand_forecaster.evaluate import us_load_holidays
from models.forecast_runtime import holiday_days

START_S = datetime(2021, 1, 4, tzinfo=timezone.utc).timestamp()  # a Monday


def _series(days: int, *, seed: int = 0, noise: float = 0.02) -> np.ndarray:
    """MW: an evening peak and a morning shoulder, 15 % less at weekends, a seasonal swing, a level
    that wanders day to day (AR(1) in logs), and hourly noise."""
    rng = np.random.default_rng(seed)
    h = np.arange(days * 24)
    hod, day = h % 24, h // 24
    daily = 1.0 + 0.35 * np.exp(-0.5 * ((hod - 18) / 2.5) ** 2) + 0.15 * np.exp(-0.5 * ((hod - 9) / 2.0) ** 2)
    weekly = np.where((day + 0) % 7 >= 5, 0.85, 1.0)
    season = 1.0 + 0.15 * np.cos(2 * np.pi * day / 365.25)
    level = np.zeros(days)
    shocks = rng.normal(0, 0.03, days)
    for d in range(1, days):
        level[d] = 0.8 * level[d - 1] + shocks[d]
    return 1000.0 * daily * weekly * season * np.exp(level[day] + rng.normal(0, noise, len(h)))


def _rolling(x: np.ndarray, history_days: int, issue_days: range) -> dict[str, float]:
    """Issue at each midnight of ``issue_days``; MAPE and coverage of the first 24 h, and the naive
    same-hour-yesterday MAPE on the same hours."""
    ape, naive, inside = [], [], []
    for d in issue_days:
        i0 = d * 24
        r = forecast_day_ahead(x[i0 - history_days * 24:i0], START_S + 3600.0 * (i0 - history_days * 24), 48)
        actual = x[i0:i0 + 24]
        ape.append(np.abs(r.point[:24] - actual) / actual)
        naive.append(np.abs(x[i0 - 24:i0] - actual) / actual)
        inside.append((actual >= r.lower[:24]) & (actual <= r.upper[:24]))
        assert np.all(r.lower <= r.point) and np.all(r.point <= r.upper) and len(r.point) == 48
    return {"mape": 100 * float(np.mean(ape)), "naive": 100 * float(np.mean(naive)),
            "coverage": float(np.mean(inside))}


@pytest.fixture(scope="module")
def year() -> np.ndarray:
    return _series(260)


def test_beats_same_hour_yesterday_and_its_interval_is_calibrated(year: np.ndarray) -> None:
    got = _rolling(year, 120, range(200, 250))
    # the day-to-day level shock (sd 3 %) is the floor no forecast beats; yesterday adds a weekly error
    assert got["mape"] < 0.6 * got["naive"], got
    assert got["mape"] < 4.0, got
    assert 0.72 <= got["coverage"] <= 0.88, got


def test_intervals_widen_with_noise(year: np.ndarray) -> None:
    calm = forecast_day_ahead(_series(120, noise=0.005)[:-24], START_S, 24)
    noisy = forecast_day_ahead(_series(120, noise=0.06)[:-24], START_S, 24)
    width = lambda r: float(np.mean((r.upper - r.lower) / r.point))  # noqa: E731
    assert width(noisy) > 1.5 * width(calm)


def test_gaps_and_short_history(year: np.ndarray) -> None:
    x = year[:60 * 24].copy()
    x[100:130] = np.nan  # a day and more missing
    x[-30:-20] = np.nan  # and some of the last day
    r = forecast_day_ahead(x, START_S, 48)
    assert np.isfinite(r.point).all() and np.all(r.point > 0)
    truth = year[60 * 24:60 * 24 + 48]
    assert float(np.mean(np.abs(r.point - truth) / truth)) < 0.1
    with pytest.raises(ValueError, match="at least 14 days"):
        forecast_day_ahead(year[:13 * 24], START_S, 48)
    bad = year[:30 * 24].copy()
    bad[::2] = np.nan
    with pytest.raises(ValueError, match="three quarters"):
        forecast_day_ahead(bad, START_S, 48)


def test_any_horizon_from_one_hour_to_six_days(year: np.ndarray) -> None:
    """Short and long horizons take the same path (the day-before error correction included)."""
    for horizon in (1, 12, 24, 30, 144):
        r = forecast_day_ahead(year[:200 * 24], START_S, horizon)
        truth = year[200 * 24:200 * 24 + horizon]
        assert len(r.point) == horizon and np.all(r.lower <= r.point) and np.all(r.point <= r.upper)
        assert float(np.mean(np.abs(r.point - truth) / truth)) < 0.1, horizon


def test_a_holiday_is_forecast_like_a_sunday() -> None:
    """A weekday holiday every four weeks in the history, at weekend level: the forecaster learns it
    and forecasts the next one low."""
    days = 200
    x = _series(days + 2, noise=0.01)
    day = np.arange(len(x)) // 24
    hol = [d for d in range(10, days + 2) if d % 28 == 9]  # Wednesdays
    for d in hol:
        x[day == d] *= 0.85
    issue = hol[-1] * 24
    r_hol = forecast_day_ahead(x[:issue], START_S, 24, holidays=np.array(hol) + int(START_S // 86400))
    r_plain = forecast_day_ahead(x[:issue], START_S, 24)
    actual = x[issue:issue + 24]
    err = lambda r: float(np.mean(np.abs(r.point - actual) / actual))  # noqa: E731
    assert err(r_hol) < 0.5 * err(r_plain)


def test_us_load_holidays_computed() -> None:
    got = us_load_holidays([2017, 2021])
    assert date(2017, 11, 23) in got and date(2017, 11, 24) in got  # Thanksgiving and the Friday after
    assert date(2017, 5, 29) in got and date(2017, 9, 4) in got  # Memorial Day, Labor Day
    assert date(2017, 12, 25) in got and date(2017, 1, 2) in got  # 1 January 2017 a Sunday: observed Monday
    assert date(2021, 7, 5) in got and date(2021, 12, 24) in got  # 4 July a Sunday, Christmas a Saturday


def test_the_agent_forecasts_with_it_and_reports_the_interval(year: np.ndarray) -> None:
    n = 200 * 24
    stamps = [datetime.fromtimestamp(START_S + 3600.0 * i, timezone.utc) for i in range(n)]
    history = LoadHistory(device_id="feeder-3", timestamps=stamps, values=year[:n].tolist(), capacity=5000.0)
    f = forecast(history)
    assert f.method == "linear_model" and "day-ahead ridge" in f.method_note and "200 days" not in f.method_note
    assert len(f.points) == 48 and f.points[0].timestamp == stamps[-1] + timedelta(hours=1)
    truth = year[n:n + 48]
    point = np.array([p.value for p in f.points])
    assert float(np.mean(np.abs(point - truth) / truth)) < 0.08
    assert all(p.lower <= p.value <= p.upper for p in f.points)


def test_holiday_days_agree_with_the_runtime_encoding() -> None:
    assert int(holiday_days([date(1970, 1, 2)])[0]) == 1
