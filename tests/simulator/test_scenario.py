"""Scenario files: the seed's example, the shipped ones, and errors that name file and field."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from protocols.config import load_config
from simulator.plant import Plant
from simulator.scenario import (
    SCHEMA_PATH,
    ScenarioError,
    load_scenario,
    parse_scenario,
    resolve_targets,
)
from tests.conftest import CONFIGS, SCENARIOS
from tests.simulator.conftest import sample_configs

SEED_EXAMPLE = {
    "scenario_name": "Medium Risk Voltage Fluctuation",
    "description": "Repeated voltage sag/swell on feeder with concurrent HMI failures",
    "duration_seconds": 600,
    "anomalies": [
        {"type": "oscillation", "sensor_type": "voltage", "device_id": "FEEDER-F12", "amplitude_pct": 0.11,
         "frequency_hz": 0.01, "start_time": 0, "duration_seconds": 300},
        {"type": "dropout", "sensor_type": "voltage", "device_id": "FEEDER-F12", "drop_probability": 0.1,
         "start_time": 50, "duration_seconds": 300},
    ],
}


def test_the_schema_is_valid_draft_2020_12() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_seed_example_ships_unchanged_and_validates() -> None:
    path = SCENARIOS / "medium_risk_voltage_fluctuation.json"
    assert json.loads(path.read_text()) == SEED_EXAMPLE
    scenario = load_scenario(path, sample_configs())
    oscillation, dropout = scenario.anomalies
    assert oscillation.fraction_of_nominal == 0.11 and oscillation.frequency_hz == 0.01
    assert (dropout.start_time, dropout.end_time, dropout.drop_probability) == (50, 350, 0.1)
    assert scenario.source == str(path)


def test_sensor_type_voltage_hits_all_three_phases() -> None:
    plant = Plant(sample_configs())
    targets = resolve_targets(load_scenario(SCENARIOS / "medium_risk_voltage_fluctuation.json"), plant)
    assert [p.metric for p in targets[0]] == ["voltage_l1", "voltage_l2", "voltage_l3"]
    assert {p.device.id for p in targets[0]} == {"FEEDER-F12"}


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.json")), ids=lambda p: p.stem)
def test_every_shipped_scenario_validates_against_the_sample_configs(path: Path) -> None:
    every_config = [load_config(p) for p in sorted(CONFIGS.glob("*.toml"))]
    scenario = load_scenario(path, every_config)
    assert scenario.description and scenario.anomalies


def test_the_shipped_scenarios_cover_the_seed_cases() -> None:
    names = {p.stem for p in SCENARIOS.glob("*.json")}
    assert {"medium_risk_voltage_fluctuation", "transformer_temperature_spike", "demand_spike",
            "frequency_excursion"} <= names


def _error(tmp_path: Path, change, configs: bool = False) -> ScenarioError:
    data = json.loads(json.dumps(SEED_EXAMPLE))
    change(data)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path, sample_configs() if configs else None)
    assert str(info.value).startswith(f"{path}: ")
    return info.value


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda d: d["anomalies"][1].pop("drop_probability"), "anomalies[1].drop_probability", "is required for type 'dropout'"),
        (lambda d: d["anomalies"][0].update(type="wobble"), "anomalies[0].type", "'wobble' is not one of"),
        (lambda d: d["anomalies"][0].pop("amplitude_pct"), "anomalies[0]", "needs exactly one of magnitude"),
        (lambda d: d["anomalies"][0].update(magnitude=1.0), "anomalies[0]", "needs exactly one of magnitude"),
        (lambda d: d["anomalies"][1].update(magnitude=1.0), "anomalies[1].magnitude", "not allowed for type 'dropout'"),
        (lambda d: d["anomalies"][0].update(type="step"), "anomalies[0].amplitude_pct", "not allowed for type 'step'"),
        (lambda d: d["anomalies"][0].update(amplitude=0.1), "anomalies[0].amplitude", "unknown key"),
        (lambda d: d["anomalies"][1].update(drop_probability=1.5), "anomalies[1].drop_probability", "maximum of 1"),
        (lambda d: d.update(duration_seconds="600"), "duration_seconds", "is not of type 'number'"),
        (lambda d: d.pop("scenario_name"), "scenario_name", "is required"),
        (lambda d: d["anomalies"][1].update(start_time=400), "anomalies[1].duration_seconds", "ends at 700 s, after"),
        (lambda d: d["anomalies"][0].update(metric="current_l1"), "anomalies[0].metric", "is a 'current' point"),
    ],
)
def test_a_bad_scenario_names_the_file_and_the_field(tmp_path: Path, change, path: str, message: str) -> None:
    error = _error(tmp_path, change)
    assert error.path == path
    assert message in error.message


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        (lambda d: d["anomalies"][0].update(device_id="FEEDER-X9"), "anomalies[0].device_id", "no device 'FEEDER-X9'"),
        (lambda d: d["anomalies"][0].update(substation="MOMBASA-S1"), "anomalies[0].device_id", "in substation 'MOMBASA-S1'"),
        (lambda d: d["anomalies"][1].update(sensor_type="oil_temperature"), "anomalies[1].sensor_type",
         "FEEDER-F12 has no 'oil_temperature' point (it has: active_power, current, power_factor, voltage)"),
        (lambda d: d["anomalies"][0].update(sensor_type="frequency", device_id="TR-04"), "anomalies[0].sensor_type", "TR-04 has no 'frequency'"),
        (lambda d: d["anomalies"][0].update(sensor_type="power_factor"), "anomalies[0].amplitude_pct",
         "power_factor has no nominal in its config; give an absolute magnitude"),
    ],
)
def test_a_scenario_that_does_not_fit_the_configs_is_an_error(tmp_path: Path, change, path: str, message: str) -> None:
    error = _error(tmp_path, change, configs=True)
    assert error.path == path
    assert message in error.message


def test_not_json_and_missing_file_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ScenarioError, match=r"bad\.json: not valid JSON"):
        load_scenario(bad)
    with pytest.raises(ScenarioError, match=r"nope\.json: cannot read"):
        load_scenario(tmp_path / "nope.json")


def test_frequency_pct_is_relative_to_the_configured_nominal_hz() -> None:
    scenario = parse_scenario(json.dumps({
        "scenario_name": "f", "duration_seconds": 10,
        "anomalies": [{"type": "step", "sensor_type": "frequency", "device_id": "BUS-220",
                       "magnitude_pct": -0.01, "start_time": 0, "duration_seconds": 10}],
    }))
    (point,) = resolve_targets(scenario, Plant(sample_configs()))[0]
    assert point.nominal == 50.0
