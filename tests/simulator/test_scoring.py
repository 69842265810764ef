"""Scenario scoring: alarms matched to injected anomalies (pure), and a scored run through a real
simulator, edges and hub (``sentinel sim run --score``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from sentinel_cli.main import main
from sentinel_cli.sim_score import accelerate, anomaly_label, run_scored
from simulator.scenario import parse_scenario
from simulator.scoring import Alarm, TruthSpan, format_scoreboard, score_alarms
from tests.simulator.conftest import on_free_port, sample_configs


def span(anomaly: int, device: str, metric: str, start: float, end: float, type: str = "step") -> TruthSpan:
    return TruthSpan(anomaly=anomaly, type=type, device_id=device, metric=metric, start_s=start, end_s=end,
                     label=f"{type} #{anomaly}")


def alarm(t: float, device: str, metric: str, type: str = "anomaly_step") -> Alarm:
    return Alarm(t_s=t, device_id=device, metric=metric, type=type)


def test_alarms_are_matched_by_point_and_window() -> None:
    truth = [span(0, "F12", "voltage_l1", 100, 200), span(0, "F12", "voltage_l2", 100, 200),
             span(1, "TR-04", "oil_temperature", 300, 400, "drift")]
    alarms = [
        alarm(90, "F12", "voltage_l1"),  # before the start: false
        alarm(130, "F12", "voltage_l2"),  # anomaly 0, 30 s in
        alarm(112, "F12", "voltage_l1"),  # anomaly 0, 12 s in: the first
        alarm(150, "F12", "current_l1"),  # right time, wrong point: false
        alarm(255, "F12", "voltage_l1"),  # within the 60 s grace after the end
        alarm(261, "F12", "voltage_l1"),  # past the grace: false
    ]
    board = score_alarms(truth, alarms, observed_s=1800)
    a0, a1 = board.anomalies
    assert (a0.detected, a0.delay_s, a0.alarms, a0.alarm_type) == (True, 12.0, 3, "anomaly_step")
    assert (a1.detected, a1.delay_s, a1.alarms) == (False, None, 0)
    assert not a0.after_end
    assert board.detected == 1
    assert board.false_alarms == 3 and board.false_alarms_per_hour == pytest.approx(6.0)
    assert board.false_alarm_points == {"F12 voltage_l1": 2, "F12 current_l1": 1}
    text = format_scoreboard(board)
    assert "detected 1 of 2 injected anomalies" in text
    assert "false alarms: 3 in 0.50 h of scenario time (6.00 per hour)" in text
    assert "F12 voltage_l1 2" in text


def test_an_anomaly_caught_only_after_its_end_says_so() -> None:
    board = score_alarms([span(0, "F12", "voltage_l1", 100, 200, "drift")], [alarm(230, "F12", "voltage_l1")],
                         observed_s=600)
    (a,) = board.anomalies
    assert a.detected and a.after_end and a.delay_s == 130
    assert "yes, after its end" in format_scoreboard(board)


def test_no_alarms_and_bad_observation_time() -> None:
    board = score_alarms([span(0, "F12", "voltage_l1", 0, 10)], [], observed_s=3600)
    assert board.detected == 0 and board.false_alarms == 0 and board.false_alarms_per_hour == 0
    with pytest.raises(ValueError, match="observed_s"):
        score_alarms([], [], observed_s=0)


def test_accelerate_keeps_poll_intervals_in_scenario_seconds() -> None:
    nairobi = sample_configs()[0]
    fast = accelerate(nairobi, 10.0)
    for before, after in zip(nairobi.devices, fast.devices):
        assert after.poll_interval_s == pytest.approx(before.poll_interval_s / 10)
        assert after.timeout_s < after.poll_interval_s
    assert accelerate(nairobi, 1.0) is nairobi


def test_labels_say_how_big() -> None:
    scen = parse_scenario(json.dumps({"scenario_name": "s", "duration_seconds": 60, "anomalies": [
        {"type": "step", "sensor_type": "voltage", "device_id": "F12", "magnitude_pct": 0.06,
         "start_time": 0, "duration_seconds": 10},
        {"type": "drift", "sensor_type": "temperature", "device_id": "TR", "magnitude": 3,
         "start_time": 0, "duration_seconds": 10},
        {"type": "dropout", "sensor_type": "voltage", "device_id": "F12", "drop_probability": 0.3,
         "start_time": 0, "duration_seconds": 10}]}))
    assert [anomaly_label(a, "degC") for a in scen.anomalies] == [
        "step 6 % of nominal on voltage", "drift 3 degC on temperature", "dropout p=0.3 on voltage"]


def test_a_scored_run_through_edge_and_hub_catches_a_large_step(tmp_path: Path) -> None:
    """The whole path: simulator -> edge (poll, score, buffer, sync) -> hub incidents -> scoreboard.
    Scenario time runs 10x: the step at t = 300 s comes after the detectors' warm-up."""
    nairobi = on_free_port(sample_configs()[0])
    nairobi = msgspec.structs.replace(nairobi, devices=[d for d in nairobi.devices if d.id == "FEEDER-F12"])
    scen = parse_scenario(json.dumps({"scenario_name": "step", "duration_seconds": 450, "anomalies": [
        {"type": "step", "sensor_type": "voltage", "device_id": "FEEDER-F12", "magnitude_pct": 0.03,
         "start_time": 300, "duration_seconds": 150}]}))
    lines: list[str] = []
    board = asyncio.run(asyncio.wait_for(run_scored([nairobi], scen, speed=10.0, out=lines.append), 120))
    (only,) = board.anomalies
    assert only.detected, format_scoreboard(board)
    assert only.delay_s is not None and only.delay_s < 60
    assert only.alarm_type is not None and only.alarm_type.startswith("anomaly_")
    assert board.observed_s == 450 and board.false_alarms_per_hour == board.false_alarms * 8
    assert any("readings" in line for line in lines)  # progress while it runs


def test_score_report_needs_score(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "run", "scenarios/detection/step.json", "--report", "x.json"]) == 2
    assert "--report goes with --score" in capsys.readouterr().err
