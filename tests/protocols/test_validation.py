"""What no instrument can give: physical ranges per metric, the timestamp window, names that become paths."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from protocols.config import load_config
from protocols.reading import QualityFlag, Reading
from protocols.validation import (
    ABSOLUTE_BOUND,
    impossible_readings,
    impossible_values,
    physical_range,
    possible_events,
    sanitise_readings,
)
from protocols.wire import Event

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CONFIGS = Path(__file__).resolve().parents[2] / "firmware_configs"


def reading(metric: str = "voltage_l1", value: float | None = 11.0, unit: str = "kV", ts: datetime = NOW,
            flags: int = 0) -> Reading:
    return Reading(ts=ts, substation="S1", device_id="F12", metric=metric, value=value, unit=unit, flags=flags)


@pytest.mark.parametrize(("metric", "unit", "value", "message"), [
    ("voltage_l1", "kV", -5.0, "-5.0 kV is not a possible voltage (must be >= 0)"),
    ("voltage_l1", "kV", -1e308, "-1e+308 kV is not a possible voltage (must be >= 0)"),
    ("voltage_l1", "kV", math.inf, "inf kV is not a possible voltage (must be a finite number)"),
    ("voltage_l1", "kV", math.nan, "nan kV is not a possible voltage (must be a finite number)"),
    ("voltage_l2", "V", 3e6, "3000000.0 V is not a possible voltage (must be <= 2e+06 V)"),
    ("current_l1", "A", -0.1, "-0.1 A is not a possible current (must be >= 0)"),
    ("load_current", "A", -3.0, "-3.0 A is not a possible current (must be >= 0)"),
    ("frequency", "Hz", 0.0, "0.0 Hz is not a possible frequency (must be > 0)"),
    ("frequency", "Hz", 1000.0, "1000.0 Hz is not a possible frequency (must be < 1000 Hz)"),
    ("power_factor", "", 1.2, "1.2 is not a possible power factor (must be <= 1)"),
    ("power_factor", "", -1.01, "-1.01 is not a possible power factor (must be >= -1)"),
    ("thd_voltage", "%", 101.0, "101.0 % is not a possible total harmonic distortion (must be <= 100 %)"),
    ("oil_temperature", "degC", -273.0, "-273.0 degC is not a possible temperature (must be >= -100 degC)"),
    ("winding_temperature", "degC", 1500.0, "1500.0 degC is not a possible temperature (must be <= 1000 degC)"),
    ("ambient_temperature", "K", 100.0, "100.0 K is not a possible temperature (must be >= 173.15 K)"),
    ("relative_humidity", "%", 101.0, "101.0 % is not a possible humidity (must be <= 100 %)"),
    ("vibration", "mm/s", -1.0, "-1.0 mm/s is not a possible vibration (must be >= 0)"),
    ("dga_h2", "ppm", -5.0, "-5.0 ppm is not a possible gas concentration (must be >= 0)"),
    ("energy_import", "kWh", -1.0, "-1.0 kWh is not a possible energy count (must be >= 0)"),
    ("apparent_power", "MVA", -1.0, "-1.0 MVA is not a possible apparent power (must be >= 0)"),
    ("sf6_pressure", "bar", -2.0, "-2.0 bar is not a possible pressure (must be >= -1.01325 bar)"),
    ("active_power", "MW", -1e16, "-1e+16 MW is not a possible power (must be >= -1e+15)"),
    ("tap_position", "", 2e15, "2000000000000000.0 is not a possible value of tap_position (must be <= 1e+15)"),
])
def test_impossible_values_are_named_with_the_rule(metric: str, unit: str, value: float, message: str) -> None:
    (bad,) = impossible_readings([reading(metric, value, unit)], now=NOW)
    assert (bad.index, bad.field, bad.message) == (0, "value", message)


@pytest.mark.parametrize(("metric", "unit", "value"), [
    ("voltage_l1", "kV", 0.0),  # an outage reads zero
    ("voltage_l1", "kV", 765.0), ("voltage", "V", 230.0), ("current_n", "A", 0.0), ("frequency", "Hz", 49.95),
    ("power_factor", "", -0.98), ("power_factor", "%", 95.0), ("thd_voltage", "%", 0.0),
    ("thd_current", "%", 130.0),  # a rectifier's current THD can pass 100 %
    ("active_power", "MW", -12.5),  # power flows both ways
    ("reactive_power", "Mvar", -3.0), ("ambient_temperature", "degC", -40.0), ("oil_temperature", "degF", 200.0),
    ("voltage_angle", "deg", -120.0), ("frequency_deviation", "Hz", -0.2), ("battery_current", "A", -20.0),
    ("trip", "", 1.0), ("breaker_closed", "", 0.0), ("voltage_l1", "kV", None),  # no value: the device did not answer
])
def test_possible_values_pass(metric: str, unit: str, value: float | None) -> None:
    assert impossible_readings([reading(metric, value, unit)], now=NOW) == []


def test_every_configured_point_of_a_simulated_day_is_possible_and_its_negation_of_a_magnitude_is_not() -> None:
    from simulator.physics import GridPhysics
    from simulator.plant import Plant

    from tests.simulator.conftest import sample_configs

    plant = Plant(sample_configs())
    configs = [load_config(p) for p in sorted(CONFIGS.glob("*.toml"))]
    day = GridPhysics(plant, seed=1).series(np.arange(0.0, 86_400.0, 300.0))
    rows = [reading(p.metric, float(v), p.point.unit) for p in plant.points for v in day[:, p.index]]
    assert impossible_readings(rows, now=NOW) == []
    magnitudes = {"voltage", "current", "frequency", "vibration", "gas concentration", "apparent power"}
    negated = [msgspec_replace(r, value=-abs(r.value) - 1.0) for r in rows
               if physical_range(r.metric, r.unit).quantity in magnitudes]
    assert negated and impossible_values(negated).all()
    # every metric the firmware configs name has a family, not just the generic bound
    for c in configs:
        for d in c.devices:
            for p in d.points:
                if p.metric not in ("trip", "breaker_closed", "active_power"):
                    assert not physical_range(p.metric, p.unit).quantity.startswith("value of"), p.metric


def msgspec_replace(r: Reading, **changes: object) -> Reading:
    import msgspec

    return msgspec.structs.replace(r, **changes)


@pytest.mark.parametrize(("ts", "says"), [
    (datetime(9999, 12, 31, tzinfo=UTC), "is in the future: more than 300 s after the receiver's clock"),
    (NOW + timedelta(seconds=301), "is in the future"),
    (datetime(1, 1, 1, tzinfo=UTC), "is before 2000-01-01T00:00:00+00:00, the earliest timestamp accepted"),
    (datetime(1970, 1, 1, tzinfo=UTC), "is before 2000-01-01T00:00:00+00:00"),
])
def test_impossible_timestamps_are_named(ts: datetime, says: str) -> None:
    (bad,) = impossible_readings([reading(ts=ts)], now=NOW)
    assert bad.field == "timestamp" and says in bad.message and ts.isoformat() in bad.message


def test_the_timestamp_window_is_configurable() -> None:
    edge = [reading(ts=NOW + timedelta(seconds=300)), reading(ts=datetime(2000, 1, 1, tzinfo=UTC))]
    assert impossible_readings(edge, now=NOW) == []  # both bounds are inclusive
    assert [p.index for p in impossible_readings(edge, now=NOW, max_future_skew_s=10)] == [0]
    floor = datetime(2020, 1, 1, tzinfo=UTC)
    (bad,) = impossible_readings(edge, now=NOW, floor=floor)
    assert bad.index == 1 and "2020-01-01" in bad.message
    with pytest.raises(ValueError, match="no time zone"):
        impossible_readings(edge, now=NOW, floor=datetime(2000, 1, 1))


def test_value_and_timestamp_both_named_in_order() -> None:
    rows = [reading(), reading(value=-5.0, ts=datetime(1970, 1, 1, tzinfo=UTC)), reading(), reading(value=-1.0)]
    assert [(p.index, p.field) for p in impossible_readings(rows, now=NOW)] == [
        (1, "value"), (1, "timestamp"), (3, "value")]


def test_sanitise_keeps_every_reading_and_flags_the_impossible_ones() -> None:
    ok = reading()
    rows = [ok, reading(value=-5.0), reading(ts=datetime(9999, 1, 1, tzinfo=UTC), flags=int(QualityFlag.STALE)),
            reading(value=None)]
    out, marked = sanitise_readings(rows, now=NOW)
    assert marked == 2 and len(out) == 4
    assert out[0] is ok and out[3] is rows[3]
    assert (out[1].value, out[1].quality, out[1].flags) == (-5.0, 0.0, int(QualityFlag.INVALID))
    assert out[2].quality == 0.0
    assert out[2].flags == int(QualityFlag.INVALID | QualityFlag.CLOCK_UNSYNC | QualityFlag.STALE)
    assert sanitise_readings([ok], now=NOW) == ([ok], 0)
    assert sanitise_readings([], now=NOW) == ([], 0)


def test_possible_events() -> None:
    def event(**kw: object) -> Event:
        base = {"ts": NOW, "substation": "S1", "device_id": "F12", "metric": "voltage_l1", "type": "voltage_sag",
                "state": "raised", "severity": "CRITICAL", "value": 9.0, "unit": "kV"}
        return Event(**{**base, **kw})  # type: ignore[arg-type]

    events = [event(), event(value=-5.0), event(ts=datetime(9999, 1, 1, tzinfo=UTC)), event(value=None, metric="",
                                                                                          type="device_offline")]
    assert possible_events(events, now=NOW) == [True, False, False, True]


def test_a_large_batch_is_checked_in_one_pass() -> None:
    n = 100_000
    rows = [reading("voltage_l1" if i % 2 else "frequency", 11.0 if i % 2 else 50.0, "kV" if i % 2 else "Hz",
                    ts=NOW - timedelta(seconds=i)) for i in range(n)]
    rows[77_777] = reading(value=-5.0)
    started = time.perf_counter()
    bad = impossible_readings(rows, now=NOW)
    elapsed = time.perf_counter() - started
    assert [p.index for p in bad] == [77_777]
    assert elapsed < 2.0, f"{elapsed:.2f} s for {n} readings"


def test_absolute_bound_is_generous() -> None:
    assert ABSOLUTE_BOUND >= 1e13  # an energy counter in Wh after decades
    assert impossible_readings([reading("energy_import", 8.76e12, "Wh")], now=NOW) == []
