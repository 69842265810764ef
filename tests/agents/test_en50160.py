"""EN 50160 statistics (agents/grid_monitor/en50160.py) on synthetic data made here: a compliant
week, weeks that fail each criterion, gaps giving insufficient coverage, gaps that cannot save a week,
daylight-saving and irregular timestamps, frequency at 10 s and at the readings' own resolution."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from agents.grid_monitor import en50160 as en

MONDAY = np.datetime64("2026-03-02T00:00:00", "s")  # a Monday
UN = 230.0


def _week_of_minutes(weeks: int = 1, start: np.datetime64 = MONDAY) -> np.ndarray:
    return start + np.arange(weeks * 7 * 1440) * np.timedelta64(60, "s")


def _healthy(t: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return UN * (1.0 + 0.03 * np.sin(np.arange(t.size) / 300.0)) + rng.normal(0, 1.0, t.size)


def test_compliant_week_and_its_statistics() -> None:
    t = _week_of_minutes()
    v = _healthy(t)
    (week,) = en.voltage_weeks(t, v, UN)
    assert week.verdict == "compliant"
    assert (week.intervals, week.intervals_with_data, week.coverage) == (1008, 1008, 1.0)
    assert week.within_band == 1008 and week.fraction_within == 1.0 and week.outside_limits == 0
    assert week.start == datetime(2026, 3, 2, tzinfo=timezone.utc) and week.end == week.start + timedelta(days=7)
    # the 10-min means are the r.m.s. of the readings in each interval; the extremes are theirs
    means = np.sqrt(np.mean(v.reshape(-1, 10) ** 2, axis=1))
    assert week.min == pytest.approx(means.min()) and week.max == pytest.approx(means.max())
    worst = max(means.max() - UN, means.min() - UN, key=abs) / UN * 100
    assert week.worst_deviation_pct == pytest.approx(worst, abs=1e-4)


def test_week_with_too_many_means_outside_10_pct_fails_and_one_fewer_passes() -> None:
    """1008 intervals: at most 50 may be outside +-10 % (95 % within)."""
    t = _week_of_minutes()
    v = np.full(t.size, UN)
    for n_low, verdict in ((50, "compliant"), (51, "non_compliant")):
        w = v.copy()
        w[: n_low * 10] = 0.88 * UN  # -12 %: outside the band, inside the -15 % limit
        (week,) = en.voltage_weeks(t, w, UN)
        assert week.within_band == 1008 - n_low
        assert week.outside_limits == 0
        assert week.verdict == verdict, week.reason


def test_a_single_mean_beyond_the_outer_limits_fails_the_week() -> None:
    t = _week_of_minutes()
    v = np.full(t.size, UN)
    v[5000:5010] = 0.84 * UN  # one 10-min mean at -16 %
    (week,) = en.voltage_weeks(t, v, UN)
    assert week.fraction_within > 0.99 and week.outside_limits == 1
    assert week.verdict == "non_compliant" and "limits" in week.reason
    assert week.worst_deviation_pct == pytest.approx(-16.0)
    v[5000:5010] = 1.12 * UN  # +12 %: over +10 %, the upper limit too
    assert en.voltage_weeks(t, v, UN)[0].verdict == "non_compliant"


def test_gaps_give_insufficient_data_unless_the_measured_part_already_decides() -> None:
    t = _week_of_minutes(2)
    v = _healthy(t)
    keep = np.ones(t.size, dtype=bool)
    keep[: 3 * 1440] = False  # week 1: three days missing (57 % coverage)
    w1, w2 = en.voltage_weeks(t[keep], v[keep], UN, start=MONDAY)
    assert w1.intervals_with_data == 576 and w1.coverage == pytest.approx(576 / 1008)
    assert w1.fraction_within == 1.0 and w1.verdict == "insufficient_data", w1.reason
    assert w2.verdict == "compliant"
    # 60 low means among the measured ones: more than 50, whatever the missing days held
    bad = v.copy()
    bad[4 * 1440: 4 * 1440 + 600] = 0.85 * UN + 1.0
    w1, _ = en.voltage_weeks(t[keep], bad[keep], UN, start=MONDAY)
    assert w1.verdict == "non_compliant" and "more than the 50" in w1.reason
    # a lower coverage threshold lets the gappy healthy week pass
    assert en.voltage_weeks(t[keep], v[keep], UN, start=MONDAY, min_coverage=0.5)[0].verdict == "compliant"


def test_partial_week_at_the_end_of_the_range_is_insufficient() -> None:
    t = _week_of_minutes(2)[: 10 * 1440]  # ten days
    weeks = en.voltage_weeks(t, _healthy(t), UN)
    assert [w.verdict for w in weeks] == ["compliant", "insufficient_data"]
    assert weeks[1].intervals_in_range == 432 and "past the range" in weeks[1].reason


def test_daylight_saving_and_irregular_timestamps() -> None:
    """Readings logged in local time with offsets across the autumn change (Europe/Berlin,
    2026-10-25 03:00 CEST -> 02:00 CET: 02:00-03:00 happens twice), shuffled, with repeats and
    jitter: every instant is counted once in its UTC interval and the week is whole."""
    berlin = ZoneInfo("Europe/Berlin")
    start_utc = datetime(2026, 10, 19, tzinfo=timezone.utc)  # Monday 00:00 UTC
    rng = np.random.default_rng(7)
    n = 7 * 1440
    jitter = rng.uniform(0, 50, n)  # seconds within each minute
    instants = [start_utc + timedelta(minutes=i, seconds=float(j)) for i, j in enumerate(jitter)]
    local = [u.astimezone(berlin) for u in instants]  # aware local times: the repeated hour keeps its offset
    values = np.full(n, UN)
    values[(np.arange(n) // 10) % 100 == 0] = 0.95 * UN
    order = rng.permutation(n)
    ts = [local[i] for i in order] + [local[i] for i in order[:500]]  # shuffled, 500 sent twice
    vs = np.concatenate([values[order], values[order[:500]]])
    (week,) = en.voltage_weeks(ts, vs, UN)
    assert week.start == start_utc and week.intervals_with_data == 1008 and week.verdict == "compliant"
    # the doubled local hour holds twelve 10-min intervals, not six
    means = en.interval_means(ts, vs, 600)
    hour_lo = datetime(2026, 10, 25, 0, 0, tzinfo=timezone.utc).timestamp()  # 02:00 CEST
    hour_hi = datetime(2026, 10, 25, 2, 0, tzinfo=timezone.utc).timestamp()  # 03:00 CET
    assert np.count_nonzero((means.start_s >= hour_lo) & (means.start_s < hour_hi)) == 12
    # the same readings as naive local clock times are refused, naming the first
    with pytest.raises(ValueError, match=r"timestamp 0 .* no time zone"):
        en.voltage_weeks([d.replace(tzinfo=None) for d in ts], vs, UN)


def test_interval_means_are_order_free_and_skip_missing_values() -> None:
    t = np.array([1205.0, 0.0, 599.0, 600.0, 30.0, np.nan, 1300.0])
    v = np.array([3.0, 1.0, 2.0, 4.0, np.nan, 9.0, 5.0])
    m = en.interval_means(t, v, 600)
    assert m.start_s.tolist() == [0, 600, 1200]
    assert m.mean.tolist() == [1.5, 4.0, 4.0] and m.count.tolist() == [2, 1, 2]
    with pytest.raises(ValueError, match="3 timestamps for 2 values"):
        en.interval_means([1, 2, 3], [1, 2], 600)


def _frequency(seconds: int, step_s: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    t = MONDAY + np.arange(0, seconds, step_s) * np.timedelta64(1, "s")
    return t, 50.0 + np.random.default_rng(seed).normal(0, 0.03, t.size)


def test_frequency_over_a_year_at_10_s_and_at_the_readings_own_spacing() -> None:
    t, f = _frequency(365 * 86_400, 60)  # a year of one-minute readings: 60-s means
    assert en.frequency_resolution_s(t) == 60
    (year,) = en.frequency_years(t, f)
    assert (year.interval_s, year.intervals, year.intervals_with_data) == (60, 525_600, 525_600)
    assert year.verdict == "compliant"
    # 0.5 % of a year may lie outside +-1 %: 2628 minutes; one more fails it
    for n_out, verdict in ((2628, "compliant"), (2629, "non_compliant")):
        g = f.copy()
        g[:n_out] = 49.4
        assert en.frequency_years(t, g)[0].verdict == verdict
    g = f.copy()
    g[1000] = 46.9  # below 47 Hz (-6 %) once
    (year,) = en.frequency_years(t, g)
    assert year.verdict == "non_compliant" and year.outside_limits == 1
    t10, f10 = _frequency(3600, 1)  # an hour of 1-s readings: 10-s means
    assert en.frequency_resolution_s(t10) == 10
    (part,) = en.frequency_years(t10, f10)
    assert part.interval_s == 10 and part.intervals_with_data == 360 and part.verdict == "insufficient_data"


def test_unbalance_weeks() -> None:
    t = _week_of_minutes()
    u = np.full(t.size, 1.0)
    assert en.unbalance_weeks(t, u)[0].verdict == "compliant"
    u[: 60 * 10] = 2.5  # 60 means over 2 %
    (week,) = en.unbalance_weeks(t, u)
    assert week.verdict == "non_compliant" and week.worst_deviation_pct is None and week.max == pytest.approx(2.5)


def test_bad_input_is_named() -> None:
    t = _week_of_minutes()
    with pytest.raises(ValueError, match="nominal voltage must be positive"):
        en.voltage_weeks(t, np.full(t.size, UN), 0.0)
    with pytest.raises(ValueError, match="must be after start"):
        en.voltage_weeks(t, np.full(t.size, UN), UN, start=MONDAY, end=MONDAY)
    with pytest.raises(ValueError, match="min_coverage"):
        en.voltage_weeks(t, np.full(t.size, UN), UN, min_coverage=1.5)
    with pytest.raises(ValueError, match="one per 600-s interval"):
        en.voltage_weeks(t, np.full(t.size, UN), UN, aggregated=True)
    with pytest.raises(ValueError, match="no readings"):
        en.voltage_weeks(t[:0], np.empty(0), UN)
