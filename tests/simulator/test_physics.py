"""The baseline signals are plausible, consistent with each other, and deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from protocols.config import parse_config
from simulator.physics import GridPhysics, daily_load
from simulator.plant import Plant, PlantError
from tests.simulator.conftest import sample_configs

DAY = np.arange(0.0, 86_400.0, 60.0)  # one simulated day, one sample a minute


@pytest.fixture(scope="module")
def plant() -> Plant:
    return Plant(sample_configs())


@pytest.fixture(scope="module")
def day(plant: Plant) -> np.ndarray:
    """(minutes, points) over a day starting at midnight."""
    return GridPhysics(plant, seed=3, start_hour=0.0).series(DAY)


def column(plant: Plant, day: np.ndarray, device_id: str, metric: str) -> np.ndarray:
    point = next(p for p in plant.points if p.device.id == device_id and p.metric == metric)
    return day[:, point.index]


def test_voltages_stay_within_two_percent_of_nominal_over_a_day(plant: Plant, day: np.ndarray) -> None:
    voltages = [p for p in plant.points if p.sensor_type == "voltage"]
    assert len(voltages) == 15  # 2 buses, 2 Modbus feeders and the OPC-UA feeder M05, 3 phases each
    for p in voltages:
        deviation = day[:, p.index] / p.point.nominal - 1.0
        assert np.abs(deviation).max() <= 0.02, (p.device.id, p.metric)
        assert deviation.std() > 0.001  # they do move


def test_phase_voltages_are_slightly_unbalanced(plant: Plant, day: np.ndarray) -> None:
    means = [column(plant, day, "FEEDER-F12", f"voltage_l{i}").mean() for i in (1, 2, 3)]
    assert max(means) - min(means) > 0.0
    assert (max(means) - min(means)) / 11.0 < 0.006


def test_current_has_a_morning_and_a_higher_evening_peak(plant: Plant, day: np.ndarray) -> None:
    current = column(plant, day, "FEEDER-F12", "current_l1") / 400.0
    hourly = current.reshape(24, 60).mean(axis=1)
    morning, evening = 5 + int(np.argmax(hourly[5:12])), 16 + int(np.argmax(hourly[16:23]))
    assert 7 <= morning <= 10 and 18 <= evening <= 21
    dip = hourly[morning:evening].min()
    assert hourly[morning] - dip > 0.08 and hourly[evening] - dip > 0.2
    assert hourly[evening] > hourly[morning]
    assert 0.35 <= current.min() and current.max() <= 0.95
    assert hourly.min() < 0.5 and hourly.max() > 0.8


def test_daily_load_curve_spans_40_to_90_percent() -> None:
    load = daily_load(np.linspace(0, 24, 24 * 60, endpoint=False))
    assert 0.40 <= load.min() < 0.45 and 0.85 < load.max() <= 0.90


def test_frequency_wanders_slowly_around_50_hz(plant: Plant, day: np.ndarray) -> None:
    f = column(plant, day, "BUS-220", "frequency")
    assert abs(f.mean() - 50.0) < 0.02
    assert 0.008 < f.std() < 0.035
    assert np.abs(f - 50.0).max() < 0.15
    # mean-reverting but slow: neighbouring minutes are strongly correlated, hours apart are not
    assert np.corrcoef(f[:-1], f[1:])[0, 1] > 0.6
    assert abs(np.corrcoef(f[:-120], f[120:])[0, 1]) < 0.3


def test_substations_share_one_grid_frequency(plant: Plant, day: np.ndarray) -> None:
    nairobi, mombasa = column(plant, day, "BUS-220", "frequency"), column(plant, day, "BUS-MOM-220", "frequency")
    assert np.abs(nairobi - mombasa).max() < 0.01


def test_active_power_and_power_factor_agree_with_voltage_and_current(plant: Plant, day: np.ndarray) -> None:
    v = np.stack([column(plant, day, "FEEDER-F12", f"voltage_l{i}") for i in (1, 2, 3)], axis=1)
    i = np.stack([column(plant, day, "FEEDER-F12", f"current_l{i}") for i in (1, 2, 3)], axis=1)
    pf = column(plant, day, "FEEDER-F12", "power_factor")
    p = column(plant, day, "FEEDER-F12", "active_power")
    expected_mw = np.sum(v * i, axis=1) / math.sqrt(3) * pf / 1000.0
    np.testing.assert_allclose(p, expected_mw, rtol=1e-9)
    assert 0.85 < pf.min() and pf.max() < 0.99
    load = i.mean(axis=1) / 400.0
    assert np.corrcoef(load, pf)[0, 1] > 0.5  # power factor improves a little with load


def _peak_time_s(x: np.ndarray, around_s: float, window_s: float = 6 * 3600) -> float:
    mask = np.abs(DAY - around_s) <= window_s
    smooth = np.convolve(x, np.ones(15) / 15, mode="same")  # 15-minute mean
    return float(DAY[mask][np.argmax(smooth[mask])])


def test_oil_temperature_follows_load_with_a_lag(plant: Plant, day: np.ndarray) -> None:
    load = column(plant, day, "TR-04", "load_current") / 600.0
    ambient = column(plant, day, "TR-04", "ambient_temperature")
    oil = column(plant, day, "TR-04", "oil_temperature")
    winding = column(plant, day, "TR-04", "winding_temperature")
    load_peak = _peak_time_s(load, 19.5 * 3600)
    oil_lag = _peak_time_s(oil - ambient, load_peak) - load_peak
    winding_lag = _peak_time_s(winding - oil, load_peak) - load_peak
    assert 30 * 60 <= oil_lag <= 4 * 3600  # tau 90 min
    assert 0 <= winding_lag <= 30 * 60  # tau 7 min
    assert (winding > oil).all() and (oil > ambient).all()
    assert 30 < oil.max() < 80 and winding.max() < 100
    assert 15 < ambient.min() and ambient.max() < 32


def test_values_depend_only_on_seed_and_time(plant: Plant) -> None:
    often = GridPhysics(plant, seed=7, start_hour=6.0)
    for t in np.arange(0.0, 120.0, 0.25):
        often.values(float(t))
    once = GridPhysics(plant, seed=7, start_hour=6.0)
    np.testing.assert_allclose(often.values(120.0), once.values(120.0), rtol=1e-12)
    other = GridPhysics(plant, seed=8, start_hour=6.0)
    assert not np.allclose(other.values(120.0), once.values(120.0))


def test_time_only_moves_forward(plant: Plant) -> None:
    physics = GridPhysics(plant, seed=0)
    physics.values(10.0)
    with pytest.raises(ValueError, match="only moves forward"):
        physics.values(5.0)


EXTRA = """
[identity]
edge_id = "edge-test"
substation = "TEST-S1"
[hub]
url = "http://127.0.0.1:8000"
[[devices]]
id = "PUMP-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 15099
timeout_s = 0.5
points = [
  {{ metric = "vibration", unit = "mm/s", address = 0, nominal = 2.5 }},
  {{ metric = "active_power", unit = "{power_unit}", address = 2 }},
]
"""


def test_a_metric_the_model_does_not_know_serves_its_nominal() -> None:
    plant = Plant([parse_config(EXTRA.format(power_unit="kW"))])
    values = GridPhysics(plant, seed=1).series(np.arange(0.0, 600.0, 10.0))
    np.testing.assert_allclose(values[:, 0], 2.5, rtol=0.01)
    assert 1_000 < values[:, 1].mean() < 10_000  # kW: the 11 kV / 400 A default rating at ~60 % load


def test_an_unusable_unit_is_an_error_naming_the_point() -> None:
    with pytest.raises(PlantError, match=r"PUMP-1 active_power: cannot simulate unit 'hp'"):
        GridPhysics(Plant([parse_config(EXTRA.format(power_unit="hp"))]), seed=1)
