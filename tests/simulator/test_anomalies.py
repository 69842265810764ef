"""Each anomaly type changes what the server serves exactly as documented, and nothing else."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from protocols.config import FirmwareConfig
from protocols.modbus.source import ModbusConnection, ModbusSource
from protocols.reading import QualityFlag
from simulator import Simulation, parse_scenario
from simulator.injection import Injector
from simulator.physics import GridPhysics
from simulator.plant import Plant
from tests.conftest import SCENARIOS
from tests.simulator.conftest import arun, device, sample_configs

START_HOUR = 10.0
SEED = 11


def scenario(*anomalies: dict, duration: float = 1000.0):
    return parse_scenario(json.dumps({"scenario_name": "t", "duration_seconds": duration, "anomalies": list(anomalies)}))


async def read(configs: list[FirmwareConfig], device_id: str) -> tuple[dict[str, float], dict[str, int]]:
    d = device(configs, device_id)
    connection = ModbusConnection(d)
    try:
        values, flags = await ModbusSource(d, connection).read()
    finally:
        connection.close()
    return ({p.metric: float(v) for p, v in zip(d.points, values)}, {p.metric: int(f) for p, f in zip(d.points, flags)})


def served_minus_baseline(configs, sc, device_id: str, times: list[float]) -> list[dict[str, float]]:
    """At each time: value read over Modbus minus the anomaly-free value of the same physics."""
    baseline = GridPhysics(Plant(configs), seed=SEED, start_hour=START_HOUR)
    points = {p.metric: p.index for p in Plant(configs).points if p.device.id == device_id}

    async def run() -> list[dict[str, float]]:
        out = []
        async with Simulation(configs, sc, seed=SEED, start_hour=START_HOUR) as sim:
            for t in times:
                sim.set_time(t)
                base = baseline.values(t)
                values, _flags = await read(configs, device_id)
                out.append({m: values[m] - base[i] for m, i in points.items()})
        return out

    return arun(run())


def test_step_adds_a_constant_offset_only_while_active(configs: list[FirmwareConfig]) -> None:
    sc = scenario({"type": "step", "sensor_type": "frequency", "device_id": "BUS-220", "magnitude": -0.7,
                   "start_time": 10, "duration_seconds": 20})
    before, during, late, after = served_minus_baseline(configs, sc, "BUS-220", [5.0, 10.0, 29.9, 30.0])
    assert before["frequency"] == pytest.approx(0, abs=1e-5)
    assert during["frequency"] == pytest.approx(-0.7, abs=1e-5)
    assert late["frequency"] == pytest.approx(-0.7, abs=1e-5)
    assert after["frequency"] == pytest.approx(0, abs=1e-5)
    assert during["voltage_l1"] == pytest.approx(0, abs=1e-4)  # other points untouched


def test_drift_ramps_linearly_to_the_magnitude(configs: list[FirmwareConfig]) -> None:
    sc = scenario({"type": "drift", "sensor_type": "voltage", "device_id": "FEEDER-F12", "magnitude_pct": 0.1,
                   "start_time": 0, "duration_seconds": 100})
    quarter, three_quarters = served_minus_baseline(configs, sc, "FEEDER-F12", [25.0, 75.0])
    for phase in ("voltage_l1", "voltage_l2", "voltage_l3"):  # 10 % of 11 kV, a quarter / three quarters in
        assert quarter[phase] == pytest.approx(0.275, abs=1e-5)
        assert three_quarters[phase] == pytest.approx(0.825, abs=1e-5)
    assert quarter["current_l1"] == pytest.approx(0, abs=0.051)


def test_oscillation_is_amplitude_pct_of_nominal_times_a_sine(configs: list[FirmwareConfig]) -> None:
    sc = parse_scenario((SCENARIOS / "medium_risk_voltage_fluctuation.json").read_text())
    peak, zero, trough = served_minus_baseline(configs, sc, "FEEDER-F12", [25.0, 50.0 - 1e-6, 75.0])
    assert peak["voltage_l2"] == pytest.approx(0.11 * 11.0, abs=1e-5)  # sin(2 pi 0.01 25) = 1
    assert abs(zero["voltage_l2"]) < 1e-3
    # t = 75 lies in the dropout window: the value is either dropped (NaN) or at the trough
    assert math.isnan(trough["voltage_l2"]) or trough["voltage_l2"] == pytest.approx(-1.21, abs=1e-5)


def test_spike_jumps_to_the_magnitude_and_decays_with_a_fifth_of_the_period(configs: list[FirmwareConfig]) -> None:
    sc = scenario({"type": "spike", "sensor_type": "current", "device_id": "FEEDER-F12", "magnitude": 100.0,
                   "frequency_hz": 0.02, "start_time": 10, "duration_seconds": 100})
    onset, one_tau, next_pulse, ended = served_minus_baseline(configs, sc, "FEEDER-F12", [10.0, 20.0, 60.0, 110.0])
    tolerance = 0.1  # uint16 with scale 0.1: both sides are rounded
    assert onset["current_l3"] == pytest.approx(100.0, abs=tolerance)
    assert one_tau["current_l3"] == pytest.approx(100.0 / math.e, abs=tolerance)  # period 50 s, tau 10 s
    assert next_pulse["current_l3"] == pytest.approx(100.0, abs=tolerance)
    assert ended["current_l3"] == pytest.approx(0.0, abs=tolerance)


def test_dropout_serves_nan_in_float_registers(configs: list[FirmwareConfig]) -> None:
    sc = scenario({"type": "dropout", "sensor_type": "voltage", "device_id": "FEEDER-F12", "drop_probability": 1.0,
                   "start_time": 0, "duration_seconds": 100})

    async def run():
        async with Simulation(configs, sc, seed=SEED, start_hour=START_HOUR) as sim:
            sim.set_time(5.0)
            return await read(configs, "FEEDER-F12")

    values, flags = arun(run())
    for phase in ("voltage_l1", "voltage_l2", "voltage_l3"):
        assert math.isnan(values[phase]) and flags[phase] == QualityFlag.INVALID
    assert flags["current_l1"] == 0 and 100 < values["current_l1"] < 400


def test_dropout_serves_the_not_available_pattern_in_integer_registers(configs: list[FirmwareConfig]) -> None:
    sc = scenario(
        {"type": "dropout", "sensor_type": "oil_temperature", "device_id": "TR-04", "drop_probability": 1.0,
         "start_time": 0, "duration_seconds": 100},
        {"type": "dropout", "sensor_type": "current", "device_id": "FEEDER-F12", "metric": "current_l2",
         "drop_probability": 1.0, "start_time": 0, "duration_seconds": 100},
    )

    async def run():
        async with Simulation(configs, sc, seed=SEED, start_hour=START_HOUR) as sim:
            sim.set_time(5.0)
            tr = sim.servers[0].registers(3, "input", 200, 2)
            return tr, await read(configs, "TR-04"), await read(configs, "FEEDER-F12")

    tr_registers, (tr, tr_flags), (feeder, feeder_flags) = arun(run())
    assert tr_registers[0] == 0x8000  # SunSpec "not available" for int16
    # the edge's codec knows the markers: no value, flagged invalid, neighbours untouched
    assert math.isnan(tr["oil_temperature"]) and tr_flags["oil_temperature"] == QualityFlag.INVALID
    assert 20 < tr["winding_temperature"] < 100 and tr_flags["winding_temperature"] == 0
    assert math.isnan(feeder["current_l2"]) and feeder_flags["current_l2"] == QualityFlag.INVALID  # uint16 0xFFFF
    assert 100 < feeder["current_l1"] < 400


def test_dropout_drops_the_given_fraction_of_samples_deterministically() -> None:
    plant = Plant(sample_configs())
    sc = scenario({"type": "dropout", "sensor_type": "voltage", "device_id": "FEEDER-F12", "drop_probability": 0.1,
                   "start_time": 1000, "duration_seconds": 4000}, duration=6000)
    values = np.ones(len(plant))

    def dropped(seed: int) -> np.ndarray:
        injector = Injector(plant, sc, seed=seed)
        return np.stack([np.isnan(injector.apply(values, float(t), t)) for t in range(6000)])

    mask = dropped(SEED)
    targets = [p.index for p in plant.points if p.device.id == "FEEDER-F12" and p.sensor_type == "voltage"]
    others = [p.index for p in plant.points if p.index not in targets]
    assert not mask[:1000].any() and not mask[5000:].any() and not mask[:, others].any()
    fraction = mask[1000:5000][:, targets].mean()
    assert 0.085 < fraction < 0.115
    assert np.array_equal(mask, dropped(SEED)) and not np.array_equal(mask, dropped(SEED + 1))


def test_truth_lists_each_anomaly_per_point_in_scenario_and_wall_time(configs: list[FirmwareConfig]) -> None:
    sc = parse_scenario((SCENARIOS / "medium_risk_voltage_fluctuation.json").read_text())
    speed = 400.0

    async def run():
        async with Simulation(configs, sc, seed=SEED, speed=speed, start_hour=START_HOUR) as sim:
            assert sim.truth()[0].start_wall is None  # not run yet: only scenario time is known
            await sim.run(duration_s=100.0)
            return sim.truth()

    truth = arun(run())
    assert [(t.anomaly, t.type, t.metric) for t in truth] == [
        (0, "oscillation", "voltage_l1"), (0, "oscillation", "voltage_l2"), (0, "oscillation", "voltage_l3"),
        (1, "dropout", "voltage_l1"), (1, "dropout", "voltage_l2"), (1, "dropout", "voltage_l3"),
    ]
    oscillation, dropout = truth[0], truth[3]
    assert (oscillation.start_s, oscillation.end_s, oscillation.active) == (0.0, 100.0, True)
    assert (dropout.start_s, dropout.end_s) == (50.0, 100.0)
    assert {t.device_id for t in truth} == {"FEEDER-F12"} and {t.substation for t in truth} == {"NAIROBI-S1"}
    assert dropout.start_wall is not None and dropout.end_wall is not None
    assert (dropout.end_wall - dropout.start_wall).total_seconds() == pytest.approx(50.0 / speed)
    assert (dropout.start_wall - oscillation.start_wall).total_seconds() == pytest.approx(50.0 / speed)
