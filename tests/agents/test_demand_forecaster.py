"""The demand forecaster: the peak hour of a daily + weekly load, margin arithmetic, capacity risk
findings, and the profile fallback when the history is short."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import msgspec
import numpy as np
import pytest

from agents.demand_forecaster import (
    ForecastConfig,
    InsufficientHistory,
    LoadForecast,
    LoadHistory,
    forecast,
    train_model,
)

START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday


def _profile(hours: np.ndarray) -> np.ndarray:
    """MW: a morning shoulder, an evening peak at 18:00, 15 % less at weekends."""
    hod = hours % 24
    daily = 600 + 250 * np.exp(-0.5 * ((hod - 18) / 2.0) ** 2) + 80 * np.exp(-0.5 * ((hod - 9) / 2.5) ** 2)
    return daily * np.where((hours // 24) % 7 >= 5, 0.85, 1.0)


def _history(days: float, *, capacity: float = 1000.0, per_hour: int = 1, noise: float = 8.0,
             seed: int = 0) -> LoadHistory:
    n = int(days * 24 * per_hour)
    hours = np.arange(n) / per_hour
    values = _profile(np.floor(hours)) + np.random.default_rng(seed).normal(0, noise, n)
    stamps = [START + timedelta(hours=float(h)) for h in hours]
    return LoadHistory(device_id="feeder-7", substation="kisumu-east", timestamps=stamps, values=values.tolist(),
                       capacity=capacity, unit="MW")


@pytest.fixture(scope="module")
def four_weeks() -> LoadHistory:
    return _history(28)


def test_model_forecast_puts_the_peak_at_18_00(four_weeks: LoadHistory) -> None:
    f = forecast(four_weeks)
    assert f.method == "linear_model" and "trained now" in f.method_note
    assert len(f.points) == 48
    assert f.points[0].timestamp == START + timedelta(days=28)  # the hour after the last one with data
    assert f.peak_time.hour == 18 and f.peak_time.weekday() < 5
    assert f.peak_value == pytest.approx(_profile(np.array([18.0]))[0], rel=0.03)
    assert all(p.lower <= p.value <= p.upper for p in f.points)
    assert f.status == "normal" and f.finding is None and f.severity == "INFO"
    assert f.description.startswith("DEMAND FORECAST: Peak demand expected ") and " at 18:00 UTC: " in f.description
    assert f.description.endswith("Normal. No action needed.")
    msgspec.json.decode(msgspec.json.encode(f), type=LoadForecast)  # travels as JSON


def test_a_model_handed_in_is_scored_with_the_runtime_only(four_weeks: LoadHistory) -> None:
    onnx = train_model(four_weeks)
    f = forecast(four_weeks, model=onnx)
    assert f.method == "linear_model" and "trained now" not in f.method_note
    assert f.peak_time.hour == 18


def test_margin_arithmetic_and_the_seed_wording() -> None:
    f = forecast(_history(10, capacity=1000.0, noise=0.0), now=START + timedelta(days=9, hours=23))
    assert f.generated_at == START + timedelta(days=9, hours=23)
    assert f.margin == pytest.approx(1000.0 - f.peak_value)
    assert f.margin_pct == pytest.approx(100.0 * (1000.0 - f.peak_value) / 1000.0)
    assert f.peak_time.hour == 18 and f.peak_time.date() == date(2026, 1, 15)
    half = 100 * (f.peak_upper - f.peak_lower) / 2 / f.peak_value
    assert (f"DEMAND FORECAST: Peak demand expected tomorrow at 18:00 UTC: {f.peak_value:,.0f} MW (±{half:.0f}%). "
            f"Current capacity: 1,000 MW. Margin: {f.margin:,.0f} MW ({f.margin_pct:.1f}%). Normal. No action needed."
            ) == f.description
    assert f.exceed_probability < 0.01


def test_times_are_told_on_the_local_clock_when_the_site_sets_one() -> None:
    """Generated 23:00 UTC on the 14th = 02:00 on the 15th at UTC+3: the 18:00 UTC peak is 21:00
    local, the same local day ("today", where UTC says "tomorrow")."""
    local = ForecastConfig(utc_offset_h=3.0)
    f = forecast(_history(10, capacity=1000.0, noise=0.0), local, now=START + timedelta(days=9, hours=23))
    assert f.peak_time == datetime(2026, 1, 15, 18, tzinfo=timezone.utc)
    assert f.description.startswith("DEMAND FORECAST: Peak demand expected today at 21:00 local (UTC+3): ")
    peak = float(_profile(np.array([18.0]))[0])
    over = forecast(_history(10, capacity=peak * 0.97), local)
    assert over.finding is not None and " local (UTC+3): transfer load" in over.finding.recommendation
    assert " UTC: transfer load" in forecast(_history(10, capacity=peak * 0.97)).finding.recommendation


def test_capacity_risk_finding_when_the_forecast_approaches_capacity() -> None:
    peak = float(_profile(np.array([18.0]))[0])
    near = forecast(_history(10, capacity=peak * 1.01))
    assert near.status in ("warning", "critical") and near.finding is not None
    finding = near.finding
    assert (finding.agent, finding.type, finding.device_id, finding.substation) == (
        "demand_forecaster", "capacity_risk", "feeder-7", "kisumu-east")
    assert finding.severity == near.severity and finding.value == near.peak_value
    assert finding.facts["margin"] == pytest.approx(near.margin) and finding.facts["capacity"] == peak * 1.01
    assert "Probability of exceeding capacity" in finding.description and finding.recommendation
    over = forecast(_history(10, capacity=peak * 0.97))
    assert over.severity == "CRITICAL" and over.margin < 0 and over.exceed_probability > 0.5
    # a stricter configuration turns a comfortable margin into a warning
    roomy = _history(10, capacity=peak * 1.08)
    assert forecast(roomy).finding is None
    assert forecast(roomy, ForecastConfig(margin_warning_pct=10.0)).severity == "WARNING"


def test_short_history_falls_back_to_profiles() -> None:
    daily = forecast(_history(4, per_hour=4))  # 15-minute samples, aggregated to hours
    assert daily.method == "daily_profile" and "a model needs 504 h" in daily.method_note
    assert daily.history_hours == 96 and daily.peak_time.hour == 18
    assert all(p.lower < p.value < p.upper for p in daily.points)
    weekly = forecast(_history(11.5))  # ends Friday 11:00: the forecast runs into the weekend
    assert weekly.method == "weekly_profile" and weekly.peak_time.hour == 18
    weekend = [p for p in weekly.points if p.timestamp.weekday() >= 5]
    weekday = [p for p in weekly.points if p.timestamp.weekday() < 5]
    assert max(p.value for p in weekend) < 0.9 * max(p.value for p in weekday)  # the week's shape kept
    with pytest.raises(InsufficientHistory):
        forecast(_history(0.5))


def test_a_holiday_takes_the_sunday_profile() -> None:
    monday = _history(14)  # ends Sunday 23:00: the forecast covers Monday 19 and Tuesday 20 January
    plain = forecast(monday)
    holiday = forecast(monday, ForecastConfig(holidays=(date(2026, 1, 19),)))
    at = {p.timestamp: p.value for p in holiday.points}
    plain_at = {p.timestamp: p.value for p in plain.points}
    mon18 = datetime(2026, 1, 19, 18, tzinfo=timezone.utc)
    assert at[mon18] < 0.9 * plain_at[mon18]
    tue18 = datetime(2026, 1, 20, 18, tzinfo=timezone.utc)
    assert at[tue18] == pytest.approx(plain_at[tue18])


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="horizon_hours"):
        ForecastConfig(horizon_hours=72)
    with pytest.raises(ValueError, match="risk"):
        ForecastConfig(risk_warning=0.6, risk_critical=0.5)
