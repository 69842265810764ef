"""The anomaly detector: hour-of-week baselines, score episodes, correlation, the seed's TR-07 alert."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import anomaly_detector as ad
from models.detectors import ANOMALY_TYPES

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)  # a Monday: the last hour is hour of week 14
NOW_S = NOW.timestamp()
HOUR, DAY = 3600.0, 86_400.0
SCALE = 1.4826 * 0.5  # every bucket of the histories below has MAD 0.5


def history(days: float, level, end: float = NOW_S - HOUR) -> tuple[np.ndarray, np.ndarray]:
    """Samples every 20 minutes over [end - days, end): in each hour ``level(hour of week)`` - 0.5,
    + 0, + 0.5, so every bucket's median is ``level(h)`` and its MAD 0.5 exactly."""
    t = end - days * DAY + np.arange(int(days * 72)) * 1200.0
    how = ad.hour_of_week(t)
    offsets = np.array([-0.5, 0.0, 0.5])[(np.floor_divide(t, 1200.0).astype(np.int64)) % 3]
    return t, level(how) + offsets


def last_hour(value: float, n: int = 60) -> np.ndarray:
    """(timestamps) one a minute in the hour before NOW, at half past each minute: all in one bucket."""
    return NOW_S - HOUR + 30.0 + np.arange(n) * 60.0


def weekly(how: np.ndarray) -> np.ndarray:
    return 50.0 + (how % 24) + (how // 24)  # a daily and a weekly pattern


# -- baselines ---------------------------------------------------------------------------------------


def test_hour_of_week_starts_on_monday_and_follows_the_offset() -> None:
    monday = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    assert ad.hour_of_week(np.array([0.0, monday, monday + 3599.0, monday + 3600.0, monday - 1.0])).tolist() == [
        72, 0, 0, 1, 167]
    # Sunday 21:00 UTC is Monday 00:00 at UTC+3
    assert ad.hour_of_week(np.array([monday - 3 * HOUR]), utc_offset_hours=3.0).tolist() == [0]
    assert ad.hour_of_week(np.array([monday]), utc_offset_hours=-5.0).tolist() == [163]


def test_grouped_median_by_hand() -> None:
    med, count = ad.grouped_median(np.array([2, 0, 2, 2, 0, 2]), np.array([4.0, 1.0, 1.0, 3.0, 9.0, 2.0]), 4)
    assert count.tolist() == [2, 0, 4, 0]
    assert med[0] == 5.0 and med[2] == 2.5 and np.isnan(med[1]) and np.isnan(med[3])


def test_baseline_median_mad_and_z_by_hand() -> None:
    t, v = history(35, weekly)
    end = NOW_S - HOUR
    b = ad.compute_baseline(np.zeros(t.size, dtype=np.int64), t, v, 1, end=end, window_days=35, min_count=4,
                            min_coverage=1.0)
    assert b.used.tolist() == [True] and b.window_days == 35
    assert (b.count == 15).all()  # 5 weeks x 3 samples an hour
    assert b.median[0, 14] == 50.0 + 14 and b.median[0, 24 + 3] == 50.0 + 3 + 1
    assert (b.mad == 0.5).all() and (b.scale == SCALE).all() and b.trusted.all()
    h14 = NOW_S - HOUR + 1800.0  # Monday 14:30, the middle of bucket 14
    z = b.z(np.zeros(3, dtype=np.int64), np.full(3, h14), np.array([64.0, 64.0 + 3 * SCALE, 64.0 - 1.5 * SCALE]))
    assert z[0] == 0.0
    assert z[1] == pytest.approx(3.0, abs=1e-12) and z[2] == pytest.approx(-1.5, abs=1e-12)
    # between the middles of two hours the location is interpolated: 14:00 is half-way from 63 to 64,
    # 14:45 a quarter of the way from 64 to 65; Monday 00:00 is half-way from Sunday 23:30 (79) to 00:30 (50)
    times = np.array([NOW_S - HOUR, NOW_S - HOUR + 2700.0, NOW_S - 15 * HOUR])  # ..., Monday 00:00
    location, scale, trusted = b.at(np.zeros(3, dtype=np.int64), times)
    assert location.tolist() == pytest.approx([63.5, 64.25, (50.0 + 23 + 6 + 50.0) / 2])
    assert (scale == SCALE).all() and trusted.all()


def test_a_bucket_with_zero_mad_falls_back_to_the_mean_absolute_deviation_and_a_constant_one_is_not_trusted() -> None:
    monday = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    weeks = monday + np.arange(5) * 7 * DAY
    t = np.concatenate([weeks, weeks + HOUR])  # bucket 0: 10, 10, 10, 10, 15; bucket 1: 7 five times
    v = np.array([10.0, 10.0, 10.0, 10.0, 15.0, 7.0, 7.0, 7.0, 7.0, 7.0])
    order = np.argsort(t, kind="stable")
    b = ad.compute_baseline(np.zeros(10, dtype=np.int64), t[order], v[order], 1, end=monday + 35 * DAY,
                            window_days=35, min_count=4, min_coverage=0.5)
    assert b.mad[0, 0] == 0.0 and b.scale[0, 0] == pytest.approx(1.2533 * 1.0)  # mean |x - 10| = 5 / 5
    assert b.trusted[0, 0] and not b.trusted[0, 1] and b.scale[0, 1] == 0.0
    assert np.isnan(b.z(np.zeros(1, dtype=np.int64), np.array([monday + HOUR]), np.array([8.0]))[0])


def test_a_short_history_skips_the_longer_windows() -> None:
    t, v = history(45, weekly)
    sensor = np.zeros(t.size, dtype=np.int64)
    used = [ad.compute_baseline(sensor, t, v, 1, end=NOW_S - HOUR, window_days=w).used[0] for w in (30, 60, 90)]
    assert used == [True, False, False]
    b60 = ad.compute_baseline(sensor, t, v, 1, end=NOW_S - HOUR, window_days=60)
    assert (b60.count == 0).all() and not b60.trusted.any()
    # 0.9 of a window is enough: 54 days cover the 60-day window, 53 do not
    for days, expect in ((54, True), (53.9, False)):
        t2, v2 = history(days, weekly)
        got = ad.compute_baseline(np.zeros(t2.size, dtype=np.int64), t2, v2, 1, end=NOW_S - HOUR, window_days=60)
        assert bool(got.used[0]) is expect


def sensor(metric: str = "oil_temperature", device: str = "TR-07", substation: str = "NAIROBI-S1", unit: str = "°C",
           **kw) -> ad.SensorSeries:
    return ad.SensorSeries(substation=substation, device_id=device, metric=metric, unit=unit, **kw)


def deviating(days: float, shift_z: float = 5.0) -> ad.AnomalyInput:
    ht, hv = history(days, weekly)
    t = last_hour(64.0)
    return ad.AnomalyInput(series=[sensor(timestamps=t, values=np.full(t.size, 64.0 + shift_z * SCALE),
                                          history_timestamps=ht, history_values=hv)])


def test_the_phases_of_one_quantity_deviating_together_are_one_finding() -> None:
    """voltage_l1..l3 of a feeder off their baselines at once: one condition, one incident; the phase
    furthest off leads. Another device's phase, and a phase within its band, stay out of it."""
    ht, hv = history(95, weekly)
    t = last_hour(64.0)

    def phase(metric: str, shift_z: float, device: str = "FEEDER-F12") -> ad.SensorSeries:
        return sensor(metric, device=device, unit="kV", timestamps=t, values=np.full(t.size, 64.0 + shift_z * SCALE),
                      history_timestamps=ht, history_values=hv)

    data = ad.AnomalyInput(series=[phase("voltage_l1", 5.0), phase("voltage_l2", -9.0), phase("voltage_l3", 2.0),
                                   phase("voltage_l1", 6.0, device="FEEDER-F13")])
    f12, f13 = sorted(ad.analyse(data, now=NOW), key=lambda f: f.device_id)
    assert f12.key == "anomaly_detector:baseline_deviation:NAIROBI-S1:FEEDER-F12:voltage"
    assert f12.metric == "voltage_l2" and f12.facts["level_z"] == pytest.approx(-9.0, abs=0.1)  # furthest off leads
    assert f12.severity == "CRITICAL"  # z 9 >= the critical z
    assert [(p["metric"], round(p["level_z"], 1)) for p in f12.facts["phases"]] == [("voltage_l2", -9.0),
                                                                                  ("voltage_l1", 5.0)]
    assert f12.description.endswith(" Also voltage_l1 (z +5.0).")
    assert f13.key.endswith(":FEEDER-F13:voltage") and "phases" not in f13.facts


@pytest.mark.parametrize(("days", "windows", "confidence"), [(95, [30, 60, 90], 1.0), (45, [30], 0.3333)])
def test_a_sustained_deviation_from_the_baseline(days: float, windows: list[int], confidence: float) -> None:
    (f,) = ad.analyse(deviating(days), now=NOW)
    assert (f.type, f.severity, f.agent, f.metric) == ("baseline_deviation", "WARNING", "anomaly_detector",
                                                       "oil_temperature")
    assert f.key == "anomaly_detector:baseline_deviation:NAIROBI-S1:TR-07:oil_temperature"
    assert f.facts["windows_used"] == windows and f.facts["window_days"] == windows[-1]
    assert f.confidence == confidence
    assert f.facts["median_abs_z"] == pytest.approx(5.0, abs=1e-9) and f.facts["readings"] == 60
    assert f.facts["baseline_median"] == 64.0 and f.facts["baseline_scale"] == SCALE
    assert f.facts["hours_of_week"] == [14] and f.nominal == 64.0
    assert f.value == 64.0 + 5 * SCALE and f.threshold == pytest.approx(64.0 + 4 * SCALE)  # the warning z: 4
    assert f.facts["deviation_pct"] == pytest.approx(5 * SCALE / 64.0 * 100)
    assert f.start == NOW - timedelta(seconds=3570) and f.timestamp == NOW - timedelta(seconds=30)
    assert f.description == ("Transformer TR-07 temperature (oil_temperature) at 67.71°C over the last hour, "
                             f"+5.8% from its hour-of-week baseline 64°C (z +5.0 over 60 readings, "
                             f"{windows[-1]}-day baseline).")
    assert f.recommendation == "Recommend thermal inspection."
    skipped = [w for w in f.facts["windows"] if not w["used"]]
    assert [w["window_days"] for w in skipped] == sorted({30, 60, 90} - set(windows))
    assert all(w["readings"] == 0 and w["median_abs_z"] is None for w in skipped)
    msgspec.json.encode(f)  # facts are plain JSON


def test_deviation_severity_and_quiet_cases() -> None:
    (f,) = ad.analyse(deviating(95, shift_z=7.0), now=NOW)
    assert f.severity == "CRITICAL"
    assert ad.analyse(deviating(95, shift_z=2.9), now=NOW) == []
    assert ad.analyse(deviating(20), now=NOW) == []  # no window covered: no baseline, no finding
    assert ad.analyse(deviating(95, shift_z=0.0), now=NOW) == []


def test_the_time_zone_offset_moves_the_buckets() -> None:
    # at UTC+3 the last hour is Monday 17:00 local, whose baseline is the history's 17:00 local (level 67)
    ht, hv = history(95, weekly)
    hv_local = weekly(ad.hour_of_week(ht, 3.0)) + (hv - weekly(ad.hour_of_week(ht)))
    t = last_hour(0.0)
    data = ad.AnomalyInput(series=[sensor(timestamps=t, values=np.full(t.size, 67.0 + 4.5 * SCALE),
                                          history_timestamps=ht, history_values=hv_local)])
    (f,) = ad.analyse(data, ad.AnomalyConfig(utc_offset_hours=3.0), now=NOW)
    assert f.facts["hours_of_week"] == [17] and f.facts["baseline_median"] == 67.0
    assert f.facts["median_z"] == pytest.approx(4.5, abs=1e-9)


def test_the_week_over_week_scale_by_hand() -> None:
    # sensor 0: 10 hourly means in week 1, the same + d in week 2; sensor 1: only 5 pairs (too few)
    t1 = NOW_S - 14 * DAY + np.arange(10) * HOUR + 1800.0
    d = np.array([-2.0, -1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 2.0, 4.0])
    base = 50.0 + np.arange(10.0)
    sensor = np.array([0] * 20 + [1] * 10, dtype=np.int64)
    t = np.concatenate([t1, t1 + 7 * DAY, t1[:5], t1[:5] + 7 * DAY])
    v = np.concatenate([base, base + d, base[:5], base[:5] + 1.0])
    floor = ad.week_over_week_scale(sensor, t, v, 2)
    # median of d is 0; |d - 0| sorted: 0 0 0 1 1 1 1 2 2 4 -> MAD 1
    assert floor[0] == pytest.approx(1.4826 / np.sqrt(2)) and floor[1] == 0.0
    # a sample 1 s off the week has no partner
    assert ad.week_over_week_scale(sensor[:20], np.concatenate([t1, t1 + 7 * DAY + 1]), v[:20], 1)[0] == 0.0


def noisy_site(rng: np.random.Generator, sensors: int, shift: np.ndarray) -> ad.AnomalyInput:
    """Each sensor: raw readings once a minute with noise 1 around a daily curve whose level also
    wanders from day to day (sigma 0.5); the history is its hourly means over 35 days (what the hub
    keeps), the last hour raw readings, shifted by ``shift[i]``."""
    series = []
    hours = np.arange(35 * 24)
    ht = NOW_S - HOUR - 35 * DAY + hours * HOUR + 1800.0
    for i in range(sensors):
        day_level = rng.normal(0.0, 0.5, 36)
        curve = 100.0 + 10.0 * np.sin(2 * np.pi * (ad.hour_of_week(ht) % 24) / 24)
        hv = curve + day_level[hours // 24] + rng.normal(0.0, 1.0, (hours.size, 60)).mean(axis=1)
        t = last_hour(0.0)
        level = 100.0 + 10.0 * np.sin(2 * np.pi * 14 / 24) + day_level[-1]
        v = level + shift[i] + rng.normal(0.0, 1.0, t.size)
        series.append(sensor(device=f"S{i}", timestamps=t, values=v, history_timestamps=ht, history_values=hv))
    return ad.AnomalyInput(series=series)


def test_noisy_sensors_at_their_usual_level_raise_nothing_and_a_level_shift_is_found() -> None:
    """A noisy sensor's readings scatter far more than its hourly means do: against a baseline of
    hourly means, what decides is the period's level, in the hour's week-to-week spread."""
    rng = np.random.default_rng(7)
    quiet = ad.analyse(noisy_site(rng, 40, np.zeros(40)), now=NOW)
    assert quiet == [], [f.description for f in quiet]
    shifted = ad.analyse(noisy_site(rng, 6, np.array([0.0, 0.0, 0.0, 5.0, 5.0, -5.0])), now=NOW)
    assert sorted(f.device_id for f in shifted) == ["S3", "S4", "S5"]
    for f in shifted:
        assert 0.3 < f.facts["baseline_scale"] < 1.0  # the day-to-day spread (0.5), not the mean noise 1/sqrt(60)
        assert abs(f.facts["median_z"]) > 5


def test_a_few_scattered_readings_do_not_pin_a_level_down() -> None:
    """Four readings whose median is 4.5 scales above the baseline: tight, a deviation; scattered
    over 18 scales, the median is too uncertain to call (its standard error is ~3.5 scales)."""
    ht, hv = history(95, weekly)
    t = NOW_S - 1800.0 + np.arange(4.0)  # 14:30:00 to 14:30:03, where the baseline is the bucket's 64
    for offsets, found in (([4.4, 4.5, 4.5, 4.6], True), ([-6.0, 4.5, 4.5, 12.0], False)):
        v = 64.0 + np.array(offsets) * SCALE
        data = ad.AnomalyInput(series=[sensor(timestamps=t, values=v, history_timestamps=ht, history_values=hv)])
        findings = ad.analyse(data, now=NOW)
        assert bool(findings) is found, [f.description for f in findings]
        if found:
            assert findings[0].facts["median_z"] == pytest.approx(4.5, abs=0.02)
            assert findings[0].facts["level_z"] == pytest.approx(4.5, abs=0.1)


def test_a_quantised_steady_sensor_is_judged_at_its_resolution() -> None:
    """Hourly means of a steady temperature hardly vary from week to week (scale ~0.01); the
    sensor reports 0.1 degC steps. Readings one step off the baseline are its resolution, not a
    deviation; ten steps off are."""
    rng = np.random.default_rng(3)
    ht, hv = history(35, lambda how: 40.0 + 0.0 * how)
    hv = 40.0 + rng.normal(0.0, 0.01, ht.size)
    t = last_hour(0.0)
    for offset, found in ((0.1, False), (1.0, True)):
        v = np.round((40.0 + offset + rng.normal(0.0, 0.03, t.size)) * 10) / 10
        data = ad.AnomalyInput(series=[sensor(timestamps=t, values=v, history_timestamps=ht, history_values=hv)])
        findings = ad.analyse(data, now=NOW)
        assert bool(findings) is found, [f.description for f in findings]


# -- episodes ----------------------------------------------------------------------------------------


def codes(*names: str) -> np.ndarray:
    return np.array([ANOMALY_TYPES.index(n) for n in names])


def test_episodes_by_hand() -> None:
    t = np.arange(20) * 10.0
    score = np.full(20, 0.1)
    score[[3, 4, 5, 6, 15]] = [0.85, 0.9, np.nan, 0.82, 0.99]
    types = codes(*(["none"] * 20))
    types[[3, 4, 6, 15]] = codes("spike", "step", "step", "spike")
    e = ad.find_episodes(np.zeros(20, dtype=np.int64), t, score, types, len(ANOMALY_TYPES), threshold=0.8, gap_s=50.0)
    assert len(e) == 2
    assert e.start.tolist() == [30.0, 150.0] and e.end.tolist() == [60.0, 150.0]
    assert e.peak.tolist() == [0.9, 0.99] and e.peak_index.tolist() == [4, 15]
    assert [ANOMALY_TYPES[c] for c in e.type_code] == ["step", "spike"]
    assert e.high_count.tolist() == [3, 1] and e.scored_share.tolist() == [0.75, 1.0]
    # a gap at or above gap_s splits; below it joins
    e = ad.find_episodes(np.zeros(20, dtype=np.int64), t, score, types, len(ANOMALY_TYPES), threshold=0.8, gap_s=90.0)
    assert e.start.tolist() == [30.0, 150.0]
    e = ad.find_episodes(np.zeros(20, dtype=np.int64), t, score, types, len(ANOMALY_TYPES), threshold=0.8, gap_s=90.1)
    assert e.start.tolist() == [30.0] and e.end.tolist() == [150.0] and e.peak.tolist() == [0.99]
    # a score exactly at the threshold is high
    assert len(ad.find_episodes(np.zeros(1, dtype=np.int64), np.zeros(1), np.array([0.8]), np.zeros(1, dtype=np.int64),
                                1, threshold=0.8, gap_s=1.0)) == 1


def test_a_type_tie_goes_to_the_peak_reading() -> None:
    score = np.array([0.81, 0.97, 0.85, 0.83])
    e = ad.find_episodes(np.zeros(4, dtype=np.int64), np.arange(4.0), score, codes("drift", "step", "step", "drift"),
                         len(ANOMALY_TYPES), threshold=0.8, gap_s=10.0)
    assert ANOMALY_TYPES[int(e.type_code[0])] == "step"


def scored(metric: str, spans: list[tuple[float, float, float, str]], device: str = "TR-07",
           substation: str = "NAIROBI-S1", unit: str = "°C", level: float = 60.0, start: float = NOW_S - 2 * HOUR,
           step: float = 10.0) -> ad.SensorSeries:
    """A series every ``step`` s over two hours with score 0.1, and ``(from, to, score, type)`` spans
    (seconds after ``start``, to inclusive) scored high."""
    t = start + np.arange(int(2 * HOUR / step)) * step
    scores = np.full(t.size, 0.1)
    types: list[str | None] = [None] * t.size
    for a, b, s, kind in spans:
        on = (t >= start + a) & (t <= start + b)
        scores[on] = s
        for i in np.flatnonzero(on):
            types[i] = kind
    return ad.SensorSeries(substation=substation, device_id=device, metric=metric, unit=unit, timestamps=t,
                           values=np.full(t.size, level), scores=scores, types=types)


def test_a_lone_episode_is_a_finding_of_its_own_type() -> None:
    data = ad.AnomalyInput(series=[scored("load_current", [(600, 660, 0.88, "step")], device="FEEDER-F12", unit="A",
                                          level=310.0)])
    (f,) = ad.analyse(data)
    assert (f.type, f.severity, f.device_id, f.metric, f.value) == ("anomaly_step", "WARNING", "FEEDER-F12",
                                                                     "load_current", 310.0)
    start = datetime.fromtimestamp(NOW_S - 2 * HOUR + 600, tz=UTC)
    assert f.start == start and f.timestamp == start + timedelta(seconds=60)
    assert f.key == "anomaly_detector:episode:NAIROBI-S1:FEEDER-F12:load_current"
    assert f.facts["score"] == 0.88 and f.facts["high_readings"] == 7 and f.facts["duration_s"] == 60.0
    assert f.facts["baseline"] is None and f.nominal is None and f.confidence == 1.0
    assert len(f.facts["readings"]) == 5 and all(r["score"] == 0.88 for r in f.facts["readings"])
    assert f.description == ("Feeder FEEDER-F12 showing unexpected load current step. Load current: 310 A. "
                             "Anomaly score: 0.88.")
    assert f.recommendation == "Check FEEDER-F12 for a fault, a large load change or a metering fault."


# -- correlation -------------------------------------------------------------------------------------


def test_two_metrics_of_one_device_overlapping_are_one_correlated_finding() -> None:
    data = ad.AnomalyInput(series=[
        scored("oil_temperature", [(1000, 1100, 0.9, "drift")]),
        scored("winding_temperature", [(1150, 1300, 0.85, "drift")]),  # 50 s after: within the 120 s slack
    ])
    (f,) = ad.analyse(data)
    assert (f.type, f.severity, f.device_id, f.metric) == ("correlated_anomaly", "WARNING", "TR-07", "oil_temperature")
    assert f.facts["scope"] == "device" and f.facts["scope_text"] == "multiple sensors of TR-07"
    assert "multiple sensors of TR-07: oil_temperature, winding_temperature" in f.description
    assert f.facts["sensors"] == ["NAIROBI-S1/TR-07 oil_temperature", "NAIROBI-S1/TR-07 winding_temperature"]
    assert f.key == "anomaly_detector:correlated:NAIROBI-S1:TR-07" and not f.facts["grid_wide"]
    assert f.start == datetime.fromtimestamp(NOW_S - 2 * HOUR + 1000, tz=UTC)
    assert f.timestamp == datetime.fromtimestamp(NOW_S - 2 * HOUR + 1300, tz=UTC)
    assert [m["metric"] for m in f.facts["members"]] == ["oil_temperature", "winding_temperature"]


def test_three_substations_frequency_episodes_are_a_grid_wide_event() -> None:
    data = ad.AnomalyInput(series=[
        scored("frequency", [(3000, 3060, 0.91, "step")], device="BUS-220", substation="NAIROBI-S1", unit="Hz",
               level=49.6),
        scored("frequency", [(3010, 3070, 0.97, "step")], device="BUS-132", substation="MOMBASA-S1", unit="Hz",
               level=49.6),
        scored("frequency", [(2950, 3040, 0.88, "step")], device="BUS-132", substation="KISUMU-S1", unit="Hz",
               level=49.6),
    ])
    (f,) = ad.analyse(data)
    assert (f.type, f.severity, f.substation, f.device_id) == ("correlated_anomaly", "EMERGENCY", "MOMBASA-S1",
                                                               "BUS-132")
    assert f.facts["grid_wide"] and f.facts["scope"] == "grid"
    assert f.facts["substations"] == ["KISUMU-S1", "MOMBASA-S1", "NAIROBI-S1"]
    assert f.key == "anomaly_detector:correlated:grid:frequency"
    assert f.description == ("Grid-wide event: frequency step seen at 3 substations (KISUMU-S1, MOMBASA-S1, "
                             "NAIROBI-S1). Busbar BUS-132 showing unexpected frequency step. Frequency: 49.6 Hz. "
                             "Anomaly score: 0.97.")
    assert f.recommendation.startswith("Inform the system operator")
    assert f.facts["members_total"] == 3 and f.facts["score"] == 0.97
    # below the critical score a grid-wide event is CRITICAL
    calmer = ad.AnomalyConfig(critical_score=0.98)
    assert ad.analyse(data, calmer)[0].severity == "CRITICAL"


def test_non_overlapping_episodes_stay_separate() -> None:
    data = ad.AnomalyInput(series=[
        scored("oil_temperature", [(1000, 1100, 0.9, "spike")]),
        scored("winding_temperature", [(1221, 1300, 0.85, "drift")]),  # 121 s after: beyond the slack
        scored("frequency", [(1000, 1100, 0.9, "step")], device="BUS-132", substation="MOMBASA-S1", unit="Hz"),
    ])
    found = ad.analyse(data)
    assert sorted((f.type, f.metric) for f in found) == [
        ("anomaly_drift", "winding_temperature"), ("anomaly_spike", "oil_temperature"), ("anomaly_step", "frequency")]
    # different quantities at different substations are not linked even when they overlap
    assert all(f.type != "correlated_anomaly" for f in found)


def test_several_devices_of_one_substation_are_a_substation_group() -> None:
    data = ad.AnomalyInput(series=[
        scored("oil_temperature", [(1000, 1100, 0.9, "spike")]),
        scored("current_l1", [(1050, 1100, 0.96, "step")], device="FEEDER-F12", unit="A", level=350.0),
    ])
    (f,) = ad.analyse(data)
    assert f.facts["scope"] == "substation" and f.severity == "CRITICAL" and f.device_id == "FEEDER-F12"
    assert f.key == "anomaly_detector:correlated:NAIROBI-S1:FEEDER-F12,TR-07"
    assert f.description == ("Correlated anomaly at NAIROBI-S1 on 2 devices (FEEDER-F12, TR-07). Feeder FEEDER-F12 "
                             "showing unexpected current step. Current: 350 A. TR-07 temperature also showing a "
                             "spike. Anomaly score: 0.96.")


def test_the_fleet_analysed_in_parts_then_correlated_gives_the_findings_of_the_whole() -> None:
    """A hub whose agents are split by substation: each part finds its own deviations and episodes,
    its episodes travel as JSON (a stored document), and one place correlates them all. Every way
    of splitting four substations gives exactly the findings of the whole: a grid-wide event across
    parts, a substation group, a device group, lone episodes and a baseline deviation."""
    ht, hv = history(95, weekly)
    t = last_hour(64.0)
    series = [
        scored("frequency", [(3000, 3060, 0.91, "step")], device="BUS-220", substation="NAIROBI-S1", unit="Hz",
               level=49.6),
        scored("frequency", [(3010, 3070, 0.97, "step")], device="BUS-132", substation="MOMBASA-S1", unit="Hz",
               level=49.6),
        scored("frequency", [(2950, 3040, 0.88, "step")], device="BUS-132", substation="KISUMU-S1", unit="Hz",
               level=49.6),
        scored("oil_temperature", [(1000, 1100, 0.9, "spike")]),
        scored("current_l1", [(1050, 1100, 0.96, "step")], device="FEEDER-F12", unit="A", level=350.0),
        scored("oil_temperature", [(500, 600, 0.9, "drift")], device="TR-01", substation="NAKURU-S1"),
        scored("winding_temperature", [(650, 700, 0.85, "drift")], device="TR-01", substation="NAKURU-S1"),
        scored("load_current", [(6000, 6060, 0.88, "step")], device="FEEDER-K3", substation="KISUMU-S1", unit="A"),
        sensor("voltage_l1", device="FEEDER-M1", substation="MOMBASA-S1", unit="kV", timestamps=t,
               values=np.full(t.size, 64.0 + 6 * SCALE), history_timestamps=ht, history_values=hv),
    ]
    whole = msgspec.to_builtins(ad.analyse(ad.AnomalyInput(series=series), now=NOW))
    assert {f["type"] for f in whole} == {"correlated_anomaly", "anomaly_step", "baseline_deviation"}
    assert {f["facts"].get("scope") for f in whole} == {"grid", "substation", "device", None}
    subs = sorted({x.substation for x in series})
    for mask in range(1, 2 ** len(subs)):  # every split of the substations into two parts (and none)
        part = {sub for k, sub in enumerate(subs) if mask >> k & 1}
        deviations, members = [], []
        for side in (part, set(subs) - part):
            devs, eps = ad.analyse_part(ad.AnomalyInput(series=[x for x in series if x.substation in side]), now=NOW)
            deviations += devs
            members += msgspec.json.decode(msgspec.json.encode(eps))  # as stored and read back
        got = ad.ordered(deviations + ad.correlate_episodes(members))
        assert msgspec.to_builtins(got) == whole, sorted(part)


# -- the seed's example ------------------------------------------------------------------------------


SEED = ("ANOMALY DETECTED: Transformer TR-07 showing unexpected temperature spike. Temperature: 65°C (+12% from "
        "baseline). Oil quality also degrading. Isolation Forest score: 0.94. Recommend thermal inspection.")


def seed_input() -> ad.AnomalyInput:
    ht, hv = history(95, lambda how: np.where(how % 24 >= 12, 58.0, 52.0))
    t = NOW_S - 2 * HOUR + np.arange(120) * 60.0  # a reading a minute over the last two hours
    temp = np.full(t.size, 58.0)
    scores = np.full(t.size, 0.12)
    types = ["none"] * t.size
    spike = [100, 101, 102]  # 14:40 .. 14:42, Monday: hour of week 14
    temp[spike] = [63.0, 65.0, 64.5]
    scores[spike] = [0.85, 0.94, 0.9]
    for i in spike:
        types[i] = "spike"
    moisture = 18.0 + np.maximum(0, np.arange(120) - 95) * 0.4  # ppm, rising from 15:35
    m_scores = np.where(np.arange(120) >= 98, 0.86, 0.2)
    m_scores[[97]] = np.nan
    return ad.AnomalyInput(model="isolation_forest", series=[
        sensor(timestamps=t, values=temp, scores=scores, types=types, history_timestamps=ht, history_values=hv),
        sensor("oil_moisture", unit="ppm", timestamps=t, values=moisture, scores=m_scores,
               types=codes(*(["drift"] * 120))),
    ])


def test_the_seed_example_tr_07() -> None:
    (f,) = ad.analyse(seed_input(), now=NOW)
    assert ad.alert_text(f) == SEED
    assert (f.type, f.severity) == ("correlated_anomaly", "WARNING")
    assert f.key == "anomaly_detector:correlated:NAIROBI-S1:TR-07"
    assert f.description == ("Transformer TR-07 showing unexpected temperature spike. Temperature: 65°C (+12% from "
                             "baseline). Oil quality also degrading. Isolation Forest score: 0.94. Seen on multiple "
                             "sensors of TR-07: oil_moisture, oil_temperature.")
    assert f.recommendation == "Recommend thermal inspection."
    assert (f.value, f.nominal, f.metric) == (65.0, 58.0, "oil_temperature")
    lead = f.facts["lead"]
    assert lead["peak_score"] == 0.94 and lead["type"] == "spike" and lead["value_at_peak"] == 65.0
    assert lead["start"] == "2026-03-02T14:40:00+00:00" and lead["end"] == "2026-03-02T14:42:00+00:00"
    assert lead["baseline"]["window_days"] == 90 and lead["baseline"]["hour_of_week"] == 14
    assert lead["baseline"]["median"] == 58.0 and lead["baseline"]["deviation_pct"] == 700 / 58
    assert lead["baseline"]["z"] == pytest.approx(7 / SCALE)
    assert [w["window_days"] for w in lead["baseline_windows"]] == [30, 60, 90]
    assert [r["value"] for r in lead["readings"]] == [63.0, 65.0, 64.5]
    moisture = f.facts["members"][1]
    assert (moisture["metric"], moisture["type"], moisture["peak_score"]) == ("oil_moisture", "drift", 0.86)
    assert moisture["start"] == "2026-03-02T14:38:00+00:00" and moisture["end"] == "2026-03-02T14:59:00+00:00"
    assert moisture["baseline"] is None  # two hours of its own: no window covered
    assert f.facts["types"] == {"drift": 1, "spike": 1}
    assert f.confidence == 1.0
    msgspec.json.encode(f)


def test_the_seed_without_a_model_or_history() -> None:
    data = seed_input()
    plain = ad.AnomalyInput(series=[msgspec.structs.replace(data.series[0], history_timestamps=None,
                                                            history_values=None), data.series[1]])
    (f,) = ad.analyse(plain, now=NOW)
    assert ad.alert_text(f) == ("ANOMALY DETECTED: Transformer TR-07 showing unexpected temperature spike. "
                                "Temperature: 65°C. Oil quality also degrading. Anomaly score: 0.94. "
                                "Recommend thermal inspection.")


def test_now_cuts_off_later_readings() -> None:
    # at 14:41 the spike has its first two readings and the moisture episode its first four
    (f,) = ad.analyse(seed_input(), now=datetime(2026, 3, 2, 14, 41, tzinfo=UTC))
    lead, moisture = f.facts["members"]
    assert f.type == "correlated_anomaly" and lead["high_readings"] == 2 and lead["peak_score"] == 0.94
    assert moisture["high_readings"] == 4 and moisture["end"] == "2026-03-02T14:41:00+00:00"
    # at 14:39 only the moisture episode has begun
    (f,) = ad.analyse(seed_input(), now=datetime(2026, 3, 2, 14, 39, tzinfo=UTC))
    assert (f.type, f.metric, f.facts["high_readings"]) == ("anomaly_drift", "oil_moisture", 2)
    assert f.description == ("Transformer TR-07 showing unexpected oil quality drift. Oil quality: 19.2 ppm. "
                             "Isolation Forest score: 0.86.")
    assert f.recommendation == "Recommend an oil sample from TR-07 for dissolved-gas, moisture and dielectric analysis."


# -- input checks ------------------------------------------------------------------------------------


def test_bad_input_and_config_are_errors() -> None:
    with pytest.raises(ValueError, match="time-zone aware"):
        ad.analyse(seed_input(), now=datetime(2026, 3, 2, 15))
    with pytest.raises(ValueError, match="NAIROBI-S1/TR-07 oil_temperature: 2 values for 3 timestamps"):
        ad.analyse(ad.AnomalyInput(series=[sensor(timestamps=[1.0, 2.0, 3.0], values=[1.0, 2.0])]))
    with pytest.raises(ValueError, match="non-decreasing"):
        ad.analyse(ad.AnomalyInput(series=[sensor(timestamps=[2.0, 1.0], values=[1.0, 2.0])]))
    with pytest.raises(ValueError, match="given twice"):
        s = sensor(timestamps=[1.0], values=[1.0])
        ad.analyse(ad.AnomalyInput(series=[s, s]))
    with pytest.raises(ValueError, match="type codes"):
        ad.analyse(ad.AnomalyInput(series=[sensor(timestamps=[1.0], values=[1.0], scores=[0.9], types=[99])]))
    with pytest.raises(msgspec.ValidationError, match="increasing order"):
        msgspec.convert({"baseline_windows_days": [60, 30]}, ad.AnomalyConfig)
    with pytest.raises(msgspec.ValidationError, match="critical_score"):
        msgspec.convert({"score_threshold": 0.9, "critical_score": 0.85}, ad.AnomalyConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"threshold": 0.9}, ad.AnomalyConfig)
    assert ad.analyse(ad.AnomalyInput(series=[])) == []


def test_datetime64_timestamps_and_string_types_give_the_same_findings() -> None:
    data = seed_input()
    s0 = data.series[0]
    t64 = (np.asarray(s0.timestamps) * 1e9).astype("datetime64[ns]")
    moved = ad.AnomalyInput(model=data.model, series=[
        msgspec.structs.replace(s0, timestamps=t64),
        msgspec.structs.replace(data.series[1], types=["drift"] * 120)])
    assert ad.analyse(moved, now=NOW) == ad.analyse(data, now=NOW)


# -- vectorised against a reference ------------------------------------------------------------------


def reference_baseline(sensor: np.ndarray, t: np.ndarray, v: np.ndarray, n: int, end: float, days: float,
                       min_count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A loop per sensor and bucket with np.median: (median, scale, trusted), coverage 0.9."""
    median = np.full((n, 168), np.nan)
    scale = np.full((n, 168), np.nan)
    trusted = np.zeros((n, 168), dtype=bool)
    for i in range(n):
        mine = (sensor == i) & np.isfinite(v) & (t < end)
        if not mine.any() or t[mine].min() > end - days * DAY * 0.9:
            continue
        for h in range(168):
            take = mine & (t >= end - days * DAY) & (ad.hour_of_week(t) == h)
            x = v[take]
            if x.size == 0:
                continue
            median[i, h] = np.median(x)
            mad = np.median(np.abs(x - median[i, h]))
            scale[i, h] = 1.4826 * mad if mad > 0 else 1.2533 * np.mean(np.abs(x - median[i, h]))
            trusted[i, h] = x.size >= min_count and scale[i, h] > 0
    return median, scale, trusted


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_baselines_match_a_loop_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3))
    size = data.draw(st.integers(0, 120))
    sensor = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=size, max_size=size)), dtype=np.int64)
    # times over ~10 days, few distinct hours so that buckets fill
    offsets = data.draw(st.lists(st.integers(0, 240), min_size=size, max_size=size))
    t = NOW_S - np.array(offsets, dtype=np.float64) * 1800
    v = np.array(data.draw(st.lists(st.one_of(st.integers(-5, 5).map(float), st.just(np.nan)), min_size=size,
                                    max_size=size)))
    days = data.draw(st.sampled_from([1, 3, 5]))
    min_count = data.draw(st.integers(1, 4))
    b = ad.compute_baseline(sensor, t, v, n, end=NOW_S, window_days=days, min_count=min_count)
    median, scale, trusted = reference_baseline(sensor, t, v, n, NOW_S, days, min_count)
    np.testing.assert_array_equal(b.median, median)
    np.testing.assert_allclose(b.scale, scale, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(b.trusted, trusted)


def reference_episodes(sensor: np.ndarray, t: np.ndarray, score: np.ndarray, types: np.ndarray, threshold: float,
                       gap: float) -> list[tuple]:
    out: list[list] = []
    last: tuple[int, float] | None = None
    for i in range(t.size):
        if not score[i] >= threshold:
            continue
        if last is not None and last[0] == sensor[i] and t[i] - last[1] < gap:
            out[-1][2] = t[i]
            out[-1][4].append(i)
        else:
            out.append([int(sensor[i]), t[i], t[i], None, [i]])
        last = (int(sensor[i]), t[i])
    result = []
    for s, start, end, _, idx in out:
        peak_i = max(idx, key=lambda j: (score[j], -j))
        counts = np.bincount(types[idx], minlength=8)
        mode = types[peak_i] if counts[types[peak_i]] == counts.max() else int(np.argmax(counts))
        result.append((s, start, end, score[peak_i], peak_i, mode, len(idx)))
    return result


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_episodes_match_a_loop_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 3))
    sizes = data.draw(st.lists(st.integers(0, 30), min_size=n, max_size=n))
    sensor = np.concatenate([np.full(k, i, dtype=np.int64) for i, k in enumerate(sizes)])
    t = np.concatenate([np.cumsum(data.draw(st.lists(st.integers(0, 40), min_size=k, max_size=k))).astype(float)
                        for k in sizes])
    score = np.array(data.draw(st.lists(st.one_of(st.sampled_from([0.1, 0.79, 0.8, 0.85, 0.9, 0.99]),
                                                  st.just(np.nan)), min_size=t.size, max_size=t.size)))
    types = np.array(data.draw(st.lists(st.integers(0, 7), min_size=t.size, max_size=t.size)), dtype=np.int64)
    gap = data.draw(st.sampled_from([1.0, 10.0, 30.0]))
    e = ad.find_episodes(sensor, t, score, types, 8, threshold=0.8, gap_s=gap)
    got = list(zip(e.sensor.tolist(), e.start.tolist(), e.end.tolist(), e.peak.tolist(), e.peak_index.tolist(),
                   e.type_code.tolist(), e.high_count.tolist()))
    assert got == reference_episodes(sensor, t, score, types, 0.8, gap)
