"""The grid monitor: IEEE 1159 classification, unbalance, grid-code bands, recommendations, status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import grid_monitor as gm
from agents.findings import Finding
from protocols.config import Limits
from protocols.reading import Reading
from protocols.wire import Event

T0 = datetime(2026, 3, 1, 10, 15, 0, tzinfo=UTC)
EPOCH0 = T0.timestamp()
STEP = 0.01  # 10 ms: half a cycle at 50 Hz


def series_with(n: int, base_pu: float = 1.0, dips: tuple[tuple[int, int, float], ...] = (), nominal: float = 230.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Epoch-second timestamps every 10 ms and values: ``base_pu`` with [first, stop) set to ``pu``."""
    t = EPOCH0 + np.arange(n) * STEP
    v = np.full(n, base_pu * nominal)
    for first, stop, pu in dips:
        v[first:stop] = pu * nominal
    return t, v


# -- IEEE 1159 ---------------------------------------------------------------------------------------


def test_a_dip_to_half_for_200_ms_is_an_instantaneous_sag_of_0_2_s() -> None:
    t, v = series_with(1000, dips=((100, 120, 0.5),))
    (e,) = gm.classify_voltage_events(t, v, 230.0, unit="V", metric="voltage_l1")
    assert (e.type, e.category, e.name, e.table_row) == ("sag", "instantaneous", "instantaneous sag", "2.1.1")
    assert e.duration_s == 0.2 and e.duration_cycles == 10.0 and e.samples == 20
    assert e.extreme_pu == 0.5 and e.extreme == 115.0 and e.unit == "V" and e.nominal == 230.0
    assert e.start == T0 + timedelta(seconds=1) and e.end == T0 + timedelta(seconds=1.2)
    assert e.closed_by == "recovery" and not e.ongoing and e.metric == "voltage_l1"


def test_a_drop_to_0_05_pu_for_5_s_is_a_temporary_interruption() -> None:
    t, v = series_with(1000, dips=((200, 700, 0.05),))
    (e,) = gm.classify_voltage_events(t, v, 230.0, unit="V")
    assert (e.type, e.category, e.name, e.table_row) == ("interruption", "temporary", "temporary interruption", "2.3.1")
    assert e.duration_s == 5.0 and e.extreme == pytest.approx(11.5) and e.extreme_pu == pytest.approx(0.05)


def test_0_85_pu_for_90_s_is_a_sustained_undervoltage() -> None:
    t, v = series_with(12_000, dips=((1000, 10_000, 0.85),))
    (e,) = gm.classify_voltage_events(t, v, 230.0)
    assert (e.type, e.category, e.name, e.table_row) == ("sag", "sustained", "sustained undervoltage", "3.2")
    assert e.duration_s == 90.0 and e.extreme == pytest.approx(195.5)


def test_1_15_pu_for_2_s_is_a_momentary_swell() -> None:
    t, v = series_with(500, dips=((100, 300, 1.15),))
    (e,) = gm.classify_voltage_events(t, v, 230.0)
    assert (e.type, e.category, e.name, e.table_row) == ("swell", "momentary", "momentary swell", "2.2.3")
    assert e.duration_s == 2.0 and e.extreme == pytest.approx(264.5)


def test_a_short_interruption_is_momentary_never_instantaneous() -> None:
    t, v = series_with(100, dips=((10, 30, 0.0),))
    (e,) = gm.classify_voltage_events(t, v, 230.0)
    assert (e.type, e.category, e.table_row, e.duration_s) == ("interruption", "momentary", "2.2.1", 0.2)


def test_exactly_0_9_and_1_1_pu_are_neither_sag_nor_swell_and_exactly_0_1_is_a_sag() -> None:
    # IEC 61000-4-30: a dip starts *below* the threshold, a swell *above* it
    t, v = series_with(100, dips=((10, 20, 0.9), (30, 40, 1.1), (50, 60, 0.1)))
    assert 207.0 / 230.0 == 0.9 and 253.0 / 230.0 == 1.1  # the samples are exactly on the thresholds
    (e,) = gm.classify_voltage_events(t, v, 230.0)
    assert (e.type, e.extreme_pu, e.samples) == ("sag", 0.1, 10)
    t, v = series_with(100, dips=((10, 20, 0.8999), (30, 40, 1.1001), (50, 60, 0.0999)))
    assert [(e.type, e.samples) for e in gm.classify_voltage_events(t, v, 230.0)] == [
        ("sag", 10), ("swell", 10), ("interruption", 10)]


def test_duration_categories_at_the_table_boundaries() -> None:
    d = np.array([0.009, 0.01, 0.6, 0.61, 3.0, 3.01, 60.0, 60.01])
    names = [gm.ieee1159.CATEGORIES[c] for c in gm.duration_category(d, 50.0)]
    assert names == ["unclassified", "instantaneous", "instantaneous", "momentary", "momentary", "temporary",
                     "temporary", "sustained"]
    assert gm.ieee1159.CATEGORIES[gm.duration_category(0.5, 60.0)] == "instantaneous"  # 30 cycles at 60 Hz
    assert gm.ieee1159.CATEGORIES[gm.duration_category(0.55, 60.0)] == "momentary"


def test_missing_samples_neither_start_nor_extend_an_event() -> None:
    t, v = series_with(100, dips=((10, 30, 0.5), (60, 70, 0.5)))
    v[20] = np.nan  # inside the first sag: it ends there, and a second one starts after it
    v[40:45] = np.nan  # alone: no event
    v[70] = np.nan  # right after the second sag: that sag ends at the gap
    events = gm.classify_voltage_events(t, v, 230.0)
    assert [(e.samples, e.duration_s, e.closed_by) for e in events] == [
        (10, 0.1, "missing"), (9, 0.09, "recovery"), (10, 0.1, "missing")]


def test_an_event_running_off_the_end_is_ongoing_and_ends_at_the_last_sample() -> None:
    t, v = series_with(100, dips=((90, 100, 0.5),))
    (e,) = gm.classify_voltage_events(t, v, 230.0)
    assert e.ongoing and e.closed_by == "end_of_series" and e.samples == 10 and e.duration_s == 0.09


def test_datetime64_timestamps_give_the_same_events() -> None:
    t, v = series_with(1000, dips=((100, 120, 0.5),))
    t64 = np.datetime64("2026-03-01T10:15:00", "ns") + (np.arange(1000) * 10_000_000).astype("timedelta64[ns]")
    assert gm.classify_voltage_events(t64, v, 230.0) == gm.classify_voltage_events(t, v, 230.0)


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        gm.classify_voltage_events([2.0, 1.0], [230.0, 230.0], 230.0)
    with pytest.raises(ValueError, match="3 values for 2 timestamps"):
        gm.classify_voltage_events([1.0, 2.0], [230.0, 230.0, 1.0], 230.0)
    with pytest.raises(ValueError, match="nominal"):
        gm.classify_voltage_events([1.0], [230.0], 0.0)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.one_of(st.floats(0.0, 1.5), st.just(float("nan"))), min_size=1, max_size=300),
    st.lists(st.floats(0.001, 5.0), min_size=300, max_size=300),
)
def test_events_are_ordered_disjoint_and_fit_in_the_series(pu: list[float], steps: list[float]) -> None:
    t = EPOCH0 + np.concatenate(([0.0], np.cumsum(steps[: len(pu) - 1])))
    v = np.array(pu) * 11.0
    events = gm.classify_voltage_events(t, v, 11.0, unit="kV")
    span = t[-1] - t[0]
    for a, b in zip(events, events[1:]):
        assert a.end <= b.start
    assert sum(e.duration_s for e in events) <= round(span, 6) + 1e-6 * max(1, len(events))
    for e in events:
        assert e.duration_s >= 0 and e.samples >= 1
        assert {"sag": 0.1 <= e.extreme_pu < 0.9, "interruption": e.extreme_pu < 0.1,
                "swell": e.extreme_pu > 1.1}[e.type]
    low = np.isfinite(v) & (v / 11.0 < 0.9)
    high = np.isfinite(v) & (v / 11.0 > 1.1)
    assert sum(e.samples for e in events) == int(low.sum() + high.sum())


# -- unbalance ---------------------------------------------------------------------------------------


def test_nema_unbalance_by_hand() -> None:
    # mean 315, largest deviation 35: 35 / 315 = 11.11 %
    pct = gm.nema_unbalance_pct(np.array([350.0, 300.0, np.nan]), np.array([315.0, 300.0, 1.0]),
                                np.array([280.0, 300.0, 1.0]))
    assert pct[0] == pytest.approx(100 * 35 / 315, abs=1e-12) and round(float(pct[0]), 2) == 11.11
    assert pct[1] == 0.0 and np.isnan(pct[2])


def test_negative_sequence_unbalance_by_hand() -> None:
    # Va = 1/0, Vb = 1/-120 (= a^2), Vc = 0.7/+120 (= 0.7 a): V1 = 2.7/3 = 0.9, V2 = |-0.3 a^2|/3 = 0.1
    mags = np.array([[1.0, 1.0], [1.0, 1.0], [0.7, 1.0]])
    angles = np.array([[0.0, 0.0], [-120.0, -120.0], [120.0, 120.0]])
    vuf = gm.negative_sequence_unbalance_pct(mags, angles)
    assert vuf[0] == pytest.approx(100 / 9, abs=1e-9) and vuf[1] == pytest.approx(0.0, abs=1e-12)


# -- analyse: the seed's example ---------------------------------------------------------------------


def constant(device: str, metric: str, value: float, unit: str, nominal: float | None = None, n: int = 10,
             substation: str = "NAIROBI-S1") -> gm.Series:
    t = np.datetime64("2026-03-01T10:15:23", "s") + np.arange(n).astype("timedelta64[s]")
    return gm.Series(device_id=device, substation=substation, metric=metric, unit=unit, nominal=nominal,
                     timestamps=t, values=np.full(n, value))


def seed_snapshot() -> gm.GridSnapshot:
    f12 = [constant("FEEDER-F12", f"voltage_{p}", 210.0, "kV", 220.0) for p in ("l1", "l2", "l3")]
    f12 += [constant("FEEDER-F12", f"current_{p}", a, "A") for p, a in (("l1", 350.0), ("l2", 315.0), ("l3", 280.0))]
    f14 = [constant("FEEDER-F14", f"current_{p}", 250.0, "A") for p in ("l1", "l2", "l3")]
    return gm.GridSnapshot(
        series=f12 + f14,
        feeders=[gm.FeederRating(device_id="FEEDER-F12", rating=400.0),
                 gm.FeederRating(device_id="FEEDER-F14", rating=400.0),  # load measured: 250 A
                 gm.FeederRating(device_id="FEEDER-F10", rating=400.0, load=300.0),
                 gm.FeederRating(device_id="FEEDER-F99", rating=900.0, load=0.0)],  # not adjacent
        adjacency={"FEEDER-F12": ["FEEDER-F10"], "FEEDER-F14": ["FEEDER-F12"]},  # read both ways
    )


def test_the_seed_example_with_a_4_pct_band() -> None:
    config = gm.GridMonitorConfig(limits=Limits(voltage_tolerance_pct=4.0))
    report = gm.analyse(seed_snapshot(), config)
    sag, unbalance = report.findings
    transfer = "Recommend load transfer to adjacent feeder FEEDER-F14 (headroom 150 A: load 250 A of 400 A rating)."
    assert sag.type == "voltage_sag" and sag.severity == "WARNING" and sag.agent == "grid_monitor"
    assert sag.description == "Voltage sag on FEEDER-F12 voltage_l1 (210 kV, -4.5% from nominal 220 kV; limit 211.2 kV)"
    assert (sag.value, sag.threshold, sag.nominal, sag.metric) == (210.0, pytest.approx(211.2), 220.0, "voltage_l1")
    assert sag.facts["deviation_pct"] == pytest.approx(-100 / 22) and sag.facts["ieee1159_events"] == []
    assert sag.facts["band"]["warning_low"] == pytest.approx(211.2)
    assert sag.facts["episodes_total"] == 3 and sag.facts["samples_outside"] == 30
    assert sag.recommendation == transfer
    assert unbalance.type == "current_unbalance" and unbalance.severity == "WARNING"
    assert unbalance.description == ("Load imbalance detected on FEEDER-F12: Phase L1=350A vs L3=280A "
                                     "(current unbalance 11.1%, NEMA MG-1; limit 10%)")
    assert unbalance.value == pytest.approx(100 * 35 / 315) and unbalance.threshold == 10.0
    assert unbalance.facts["phases"] == {"L1": 350.0, "L2": 315.0, "L3": 280.0}
    assert unbalance.facts["mean"] == 315.0 and unbalance.facts["max_deviation"] == 35.0
    assert unbalance.recommendation == transfer
    assert [c["device_id"] for c in unbalance.facts["transfer_candidates"]] == ["FEEDER-F14", "FEEDER-F10"]
    assert unbalance.facts["feeder_load"] == {"device_id": "FEEDER-F12", "unit": "A", "rating": 400.0,
                                              "load": 350.0, "headroom": 50.0}
    assert unbalance.start == T0 + timedelta(seconds=23) and unbalance.timestamp == T0 + timedelta(seconds=32)
    assert report.device_status == {"NAIROBI-S1": {"FEEDER-F12": "WARNING", "FEEDER-F14": "OK"}}
    assert report.substation_status == {"NAIROBI-S1": "WARNING"}
    msgspec.json.encode(report)  # facts are plain JSON


def test_the_seed_example_with_the_default_band_is_only_an_unbalance() -> None:
    (unbalance,) = gm.analyse(seed_snapshot()).findings
    assert unbalance.type == "current_unbalance"


def test_a_per_bus_override_tightens_one_device_only() -> None:
    snap = seed_snapshot()
    other = [constant("FEEDER-F20", f"voltage_{p}", 210.0, "kV", 220.0) for p in ("l1", "l2", "l3")]
    snap = gm.GridSnapshot(series=snap.series + other, feeders=snap.feeders, adjacency=snap.adjacency)
    config = gm.GridMonitorConfig(bus_limits={"FEEDER-F12": Limits(voltage_tolerance_pct=4.0)})
    sags = [f.device_id for f in gm.analyse(snap, config).findings if f.type == "voltage_sag"]
    assert sags == ["FEEDER-F12"]


# -- analyse: one finding per device and condition ---------------------------------------------------


def test_sags_on_three_phases_are_one_finding_with_the_worst_value_first_start_last_end() -> None:
    series = []
    for k, (first, stop, pu) in enumerate(((100, 120, 0.5), (300, 400, 0.7), (600, 610, 0.8))):
        t, v = series_with(1000, dips=((first, stop, pu),), nominal=11.0)
        series.append(gm.Series(device_id="FEEDER-F12", substation="NAIROBI-S1", metric=f"voltage_l{k + 1}",
                                unit="kV", nominal=11.0, timestamps=t, values=v))
    sag, unbalance = gm.analyse(gm.GridSnapshot(series=series)).findings
    assert unbalance.type == "voltage_unbalance"  # while one phase is down, the phases differ
    assert sag.type == "voltage_sag" and sag.severity == "CRITICAL" and sag.metric == "voltage_l1"
    assert sag.value == 5.5 and sag.threshold == pytest.approx(9.9)
    assert sag.description == ("Voltage sag on FEEDER-F12 voltage_l1 (5.5 kV, -50.0% from nominal 11 kV; limit 9.9 kV); "
                               "IEEE 1159: momentary sag of 1 s at 0.7 pu (3 events)")
    assert sag.start == T0 + timedelta(seconds=1) and sag.timestamp == T0 + timedelta(seconds=6.09)
    assert [e["duration_s"] for e in sag.facts["episodes"]] == [0.2, 1.0, 0.1]
    assert sag.facts["ieee1159_counts"] == {"instantaneous sag": 2, "momentary sag": 1}
    assert [e["name"] for e in sag.facts["ieee1159_events"]] == ["instantaneous sag", "momentary sag",
                                                                 "instantaneous sag"]
    assert "fault" in sag.recommendation  # a bus with no adjacency: template text
    assert sag.key == "grid_monitor:voltage_sag:NAIROBI-S1:FEEDER-F12:voltage"


def test_an_interruption_is_its_own_critical_finding() -> None:
    t, v = series_with(1000, dips=((200, 700, 0.05),), nominal=11.0)
    s = gm.Series(device_id="FEEDER-F12", substation="NAIROBI-S1", metric="voltage_l1", unit="kV", nominal=11.0,
                  timestamps=t, values=v)
    (f,) = gm.analyse(gm.GridSnapshot(series=[s])).findings
    assert f.type == "voltage_interruption" and f.severity == "CRITICAL" and f.value == pytest.approx(0.55)
    assert f.threshold == pytest.approx(1.1)
    assert f.description == ("Voltage interruption on FEEDER-F12 voltage_l1 (0.55 kV, 0.05 pu of nominal 11 kV); "
                             "IEEE 1159: temporary interruption of 5 s")
    assert f.facts["ieee1159_events"][0]["duration_s"] == 5.0 and f.start == T0 + timedelta(seconds=2)
    assert f.timestamp == T0 + timedelta(seconds=7) and "breaker" in f.recommendation


def test_a_sustained_undervoltage_recommends_the_tap_changer() -> None:
    t, v = series_with(12_000, dips=((1000, 10_000, 0.85),), nominal=11.0)
    s = gm.Series(device_id="BUS-11", substation="NAIROBI-S1", metric="voltage_l1", unit="kV", nominal=11.0,
                  timestamps=t, values=v)
    (f,) = gm.analyse(gm.GridSnapshot(series=[s])).findings
    assert f.severity == "CRITICAL" and f.description.endswith("IEEE 1159: sustained undervoltage of 90 s at 0.85 pu")
    assert f.recommendation.startswith("Sustained undervoltage: check the on-load tap changer at NAIROBI-S1")


def test_frequency_bands_come_from_the_grid_code() -> None:
    t = EPOCH0 + np.arange(4.0)
    s = gm.Series(device_id="BUS-220", substation="NAIROBI-S1", metric="frequency", unit="Hz",
                  timestamps=t, values=[50.0, 49.3, 48.9, 50.6])
    under, over = gm.analyse(gm.GridSnapshot(series=[s])).findings
    assert (under.type, under.severity, under.value, under.threshold) == ("under_frequency", "CRITICAL", 48.9, 49.0)
    assert (over.type, over.severity, over.value, over.threshold) == ("over_frequency", "WARNING", 50.6, 50.5)
    assert under.facts["episodes"][0]["duration_s"] == 2.0 and under.facts["episodes"][0]["severity"] == "CRITICAL"


def test_power_factor_thd_voltage_unbalance_and_overload() -> None:
    def s(metric: str, values: list[float], unit: str = "") -> gm.Series:
        return gm.Series(device_id="FEEDER-M03", substation="MOMBASA-S1", metric=metric, unit=unit,
                         timestamps=EPOCH0 + np.arange(3.0), values=values)

    snap = gm.GridSnapshot(series=[
        s("power_factor", [0.95, 0.85, 0.92]),
        s("thd_voltage", [4.0, 6.0, 9.0], "%"),
        s("voltage_l1", [11.0, 11.0, 11.0], "kV"), s("voltage_l2", [11.0, 11.0, 11.0], "kV"),
        s("voltage_l3", [11.0, 11.0, 7.7], "kV"),
        s("voltage_angle_l1", [0.0, 0.0, 0.0]), s("voltage_angle_l2", [-120.0] * 3), s("voltage_angle_l3", [120.0] * 3),
        s("current_l1", [380.0, 410.0, 500.0], "A"), s("current_l2", [380.0, 400.0, 490.0], "A"),
        s("current_l3", [380.0, 400.0, 490.0], "A"),
    ], feeders=[gm.FeederRating(device_id="FEEDER-M03", rating=400.0)])
    single = gm.GridMonitorConfig(power_quality_window_s=0)  # three readings a second apart: judged one by one
    found = {f.type: f for f in gm.analyse(snap, single).findings}
    assert set(found) == {"voltage_sag", "voltage_unbalance", "feeder_overload", "low_power_factor", "high_thd_voltage"}
    assert {f.type for f in gm.analyse(snap).findings} == {"voltage_sag", "voltage_unbalance", "feeder_overload"}
    pf = found["low_power_factor"]
    assert (pf.severity, pf.value, pf.threshold) == ("WARNING", 0.85, 0.9)
    thd = found["high_thd_voltage"]
    assert (thd.severity, thd.value, thd.threshold) == ("CRITICAL", 9.0, 8.0)
    assert [e["worst"] for e in thd.facts["episodes"]] == [9.0] and thd.facts["episodes"][0]["samples"] == 2
    vu = found["voltage_unbalance"]  # 1 / 1 / 0.7 pu at 0 / -120 / +120 degrees: VUF 11.11 %, NEMA 12.5 %
    assert vu.severity == "CRITICAL" and vu.value == pytest.approx(100 / 9, abs=1e-9) and vu.threshold == 3.0
    assert vu.facts["nema_pct"] == pytest.approx(100 * 2.2 / 9.9) and vu.facts["angles_deg"] == {"L1": 0.0, "L2": -120.0, "L3": 120.0}
    ov = found["feeder_overload"]
    assert (ov.severity, ov.value, ov.threshold) == ("CRITICAL", 500.0, 480.0)
    assert ov.description == ("Overload on FEEDER-M03 current_max_phase (500 A, 125% of its 400 A rating; "
                              "limit 480 A)")
    assert ov.start == datetime.fromtimestamp(EPOCH0 + 1, UTC)
    assert "adjacent feeder" in ov.recommendation  # no adjacency given: template
    assert gm.analyse(snap, gm.GridMonitorConfig(power_factor_critical_below=0.86, power_quality_window_s=0)
                      ).findings[3].severity == "CRITICAL"


def test_power_factor_and_thd_are_judged_on_their_10_minute_means() -> None:
    """One bad reading a minute is no low power factor; twelve minutes of them are. The first ten
    minutes of a series make no mean and are not judged."""
    minutes = np.arange(40.0)

    def s(metric: str, values: np.ndarray, unit: str = "") -> gm.Series:
        return gm.Series(device_id="FEEDER-M03", substation="MOMBASA-S1", metric=metric, unit=unit,
                         timestamps=EPOCH0 + 60.0 * minutes, values=values)

    pf = np.full(40, 0.95)
    pf[3] = 0.50  # inside the first ten minutes: no mean yet
    pf[15] = 0.60  # one reading: the mean over (6, 16] min is 0.915
    pf[25:37] = 0.86  # twelve minutes
    thd = np.full(40, 3.0)
    thd[20] = 30.0  # a single spike: mean 5.7 % > 5 % over ten samples
    (thd_f, pf_f) = sorted(gm.analyse(gm.GridSnapshot(series=[s("power_factor", pf), s("thd_voltage", thd, "%")])
                                      ).findings, key=lambda f: f.type)
    assert pf_f.type == "low_power_factor" and pf_f.severity == "WARNING"
    assert pf_f.value == pytest.approx((10 * 0.86) / 10)  # the worst mean: ten minutes at 0.86
    # the first mean below 0.9: minute 30, whose window (20, 30] holds six readings at 0.86 (0.896)
    assert pf_f.start == datetime.fromtimestamp(EPOCH0 + 60 * 30, UTC)
    assert pf_f.description == "Low power factor on FEEDER-M03 power_factor (10-min mean 0.86 lagging; limit 0.9)"
    assert pf_f.facts["window_s"] == 600.0 and len(pf_f.facts["episodes"]) == 1
    assert thd_f.type == "high_thd_voltage" and thd_f.value == pytest.approx(5.7)
    assert thd_f.facts["episodes"][0]["samples"] == 10  # every window holding the spike


def test_current_unbalance_is_not_judged_at_light_load() -> None:
    """20 / 10 / 10 A is 50 % unbalance on paper; on a 400 A feeder (cut-off 10 %: 40 A mean) it is
    nothing. The same feeder at 350 / 250 / 300 A is. Without a rating every instant is judged."""
    def snap(l1: list[float], l2: list[float], l3: list[float], rated: bool = True) -> gm.GridSnapshot:
        t = EPOCH0 + np.arange(float(len(l1)))
        series = [gm.Series(device_id="FEEDER-F12", substation="NAIROBI-S1", metric=f"current_{p}", unit="A",
                            timestamps=t, values=v) for p, v in (("l1", l1), ("l2", l2), ("l3", l3))]
        return gm.GridSnapshot(series=series, feeders=[gm.FeederRating(device_id="FEEDER-F12", rating=400.0)] * rated)

    assert gm.analyse(snap([20.0, 20.0], [10.0, 10.0], [10.0, 10.0])).findings == []
    (f,) = gm.analyse(snap([20.0, 350.0], [10.0, 250.0], [10.0, 300.0])).findings
    assert f.type == "current_unbalance" and f.value == pytest.approx(100 * 50 / 300)
    assert f.start == datetime.fromtimestamp(EPOCH0 + 1, UTC) and f.facts["min_load_a"] == 40.0
    (f,) = gm.analyse(snap([20.0], [10.0], [10.0], rated=False)).findings
    assert f.value == pytest.approx(50.0) and f.facts["min_load_a"] is None


def test_unbalance_uses_the_instants_all_phases_share_and_skips_missing() -> None:
    def s(metric: str, t: list[float], values: list[float]) -> gm.Series:
        return gm.Series(device_id="F1", substation="S", metric=metric, unit="A",
                         timestamps=EPOCH0 + np.array(t), values=values)

    snap = gm.GridSnapshot(series=[s("current_l1", [0, 1, 2, 3], [100, 150, np.nan, 100]),
                                   s("current_l2", [1, 2, 3], [100, 100, 100]),
                                   s("current_l3", [0, 1, 2, 3], [100, 100, 100, 100])])
    (f,) = gm.analyse(snap).findings
    assert f.value == pytest.approx(100 * (150 - 350 / 3) / (350 / 3)) and f.severity == "CRITICAL"
    assert f.facts["samples_valid"] == 2 and f.facts["samples_total"] == 3 and f.confidence == pytest.approx(2 / 3, abs=1e-4)


# -- recommendations and status ----------------------------------------------------------------------


def test_the_transfer_goes_to_the_adjacent_feeder_with_most_headroom() -> None:
    rooms = gm.headrooms(
        [gm.FeederRating(device_id="A", rating=400.0, load=390.0), gm.FeederRating(device_id="B", rating=400.0),
         gm.FeederRating(device_id="C", rating=300.0, load=100.0), gm.FeederRating(device_id="D", rating=50.0, unit="MW"),
         gm.FeederRating(device_id="E", rating=9000.0, load=0.0)],
        {"B": 250.0, "D": 10.0})
    adjacent = gm.neighbours({"A": ["B", "C", "D"]})
    best, candidates = gm.best_transfer("A", rooms, adjacent, unit="A")
    assert best is not None and (best.device_id, best.headroom) == ("C", 200.0)
    assert [c.device_id for c in candidates] == ["C", "B", "D"]  # E is not adjacent; MW after A
    assert gm.best_transfer("B", rooms, adjacent)[0].device_id == "A"  # type: ignore[union-attr]
    full = gm.headrooms([gm.FeederRating(device_id="B", rating=100.0, load=120.0)], {})
    assert gm.best_transfer("A", full, adjacent)[0] is None
    assert gm.recommendation("current_unbalance", "A", "S", best) == (
        "Recommend load transfer to adjacent feeder C (headroom 200 A: load 100 A of 300 A rating).")
    assert gm.recommendation("current_unbalance", "A", "S").startswith("Rebalance single-phase loads across the phases of A")


def _finding(device: str, severity: str, substation: str = "S1") -> Finding:
    return Finding(agent="grid_monitor", type="x", severity=severity, timestamp=T0, device_id=device,
                   substation=substation, description="")


def test_status_rolls_up_to_the_worst_per_device_and_substation() -> None:
    findings = [_finding("A", "WARNING"), _finding("A", "CRITICAL"), _finding("B", "INFO"),
                _finding("C", "WARNING", "S2"), _finding("D", "EMERGENCY", "S3")]
    subs, devices = gm.rollup(findings, [("S1", "A"), ("S1", "B"), ("S1", "E"), ("S4", "F")])
    assert devices == {"S1": {"A": "CRITICAL", "B": "OK", "E": "OK"}, "S2": {"C": "WARNING"},
                       "S3": {"D": "CRITICAL"}, "S4": {"F": "OK"}}
    assert subs == {"S1": "CRITICAL", "S2": "WARNING", "S3": "CRITICAL", "S4": "OK"}
    assert gm.status_of([]) == "OK"


def test_config_is_checked_and_decodes() -> None:
    with pytest.raises(ValueError, match="current_unbalance_critical_pct"):
        gm.GridMonitorConfig(current_unbalance_warning_pct=30.0)
    with pytest.raises(ValueError, match="power_factor_critical_below"):
        gm.GridMonitorConfig(power_factor_critical_below=0.95)
    cfg = msgspec.convert({"bus_limits": {"BUS-220": {"voltage_tolerance_pct": 4.0}}, "thd_voltage_warning_pct": 4},
                          gm.GridMonitorConfig)
    assert cfg.limits_for("BUS-220").voltage_tolerance_pct == 4.0 and cfg.limits_for("X").voltage_tolerance_pct == 5.0
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"thd_limit": 4}, gm.GridMonitorConfig)


def test_a_device_given_the_same_metric_twice_is_an_error() -> None:
    s = constant("F1", "frequency", 50.0, "Hz")
    with pytest.raises(ValueError, match="NAIROBI-S1/F1 frequency: given twice"):
        gm.analyse(gm.GridSnapshot(series=[s, s]))


# -- the hub's per-request path still behaves ----------------------------------------------------------


def test_check_readings_still_behaves() -> None:
    def r(value: float | None, second: int, metric: str = "voltage") -> Reading:
        return Reading(ts=T0 + timedelta(seconds=second), substation="NAIROBI-S1", device_id="FEEDER-F12",
                       metric=metric, value=value)

    readings = [r(218.5, 0), r(205.0, 1), r(207.0, 2), r(None, 3), r(49.2, 4, "frequency")]
    findings = gm.check_readings(readings, [None, None, 220.0, None, None])
    assert [(f.type, f.severity, f.value) for f in findings] == [("voltage_sag", "WARNING", 205.0),
                                                                 ("under_frequency", "WARNING", 49.2)]
    assert findings[0].description == "Voltage sag on FEEDER-F12 voltage (205 kV, -6.8% from nominal 220 kV; limit 209 kV)"
    assert gm.check_readings([r(190.0, 0)], [220.0], Limits())[0].severity == "CRITICAL"
    assert gm.check_readings([], []) == []


def test_findings_from_events_keeps_raised_ones() -> None:
    def e(state: str) -> Event:
        return Event(ts=T0, substation="NAIROBI-S1", device_id="FEEDER-F12", metric="voltage_l1", type="voltage_sag",
                     state=state, severity="CRITICAL", value=9.8, threshold=9.9, nominal=11.0, unit="kV")

    (f,) = gm.findings_from_events([e("raised"), e("cleared")])
    assert (f.agent, f.type, f.severity, f.value, f.threshold) == ("grid_monitor", "voltage_sag", "CRITICAL", 9.8, 9.9)


def test_check_readings_never_turns_an_invalid_or_impossible_reading_into_a_finding() -> None:
    from protocols.reading import QualityFlag

    def r(value: float, second: int, flags: int = 0) -> Reading:
        return Reading(ts=T0 + timedelta(seconds=second), substation="NAIROBI-S1", device_id="FEEDER-F12",
                       metric="voltage_l1", value=value, unit="kV", flags=flags)

    nominal = [11.0]
    assert gm.check_readings([r(9.0, 0)], nominal)  # a real sag is still one
    for bad in (r(9.0, 0, int(QualityFlag.INVALID)), r(9.0, 0, int(QualityFlag.COMM_LOST)), r(-5.0, 0), r(-1e308, 0)):
        assert gm.check_readings([bad], nominal) == [], bad
    # beside a real sag, the impossible reading is neither the worst value nor a finding of its own
    (f,) = gm.check_readings([r(-1e308, 0), r(9.5, 1), r(9.0, 2, int(QualityFlag.INVALID))], nominal * 3)
    assert f.value == 9.5 and "-inf" not in f.description


def test_events_with_an_impossible_value_or_timestamp_are_not_findings() -> None:
    def e(**kw: object) -> Event:
        base = {"ts": T0, "substation": "NAIROBI-S1", "device_id": "FEEDER-F12", "metric": "voltage_l1",
                "type": "voltage_sag", "state": "raised", "severity": "CRITICAL", "value": 9.8, "threshold": 9.9,
                "nominal": 11.0, "unit": "kV"}
        return Event(**{**base, **kw})  # type: ignore[arg-type]

    now = T0 + timedelta(minutes=1)
    events = [e(value=-5.0), e(value=-1e308), e(ts=datetime(9999, 12, 31, tzinfo=UTC)),
              e(ts=datetime(1970, 1, 1, tzinfo=UTC)), e(device_id="FEEDER-F13")]
    (f,) = gm.findings_from_events(events, now=now)
    assert f.device_id == "FEEDER-F13"
    # the window is the caller's: a floor after T0 refuses the good one too
    assert gm.findings_from_events(events, now=now, floor=T0 + timedelta(seconds=1)) == []
