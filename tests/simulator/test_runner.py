"""Running: simulated time runs at `speed`, runs end and cancel cleanly, serve() prints and runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocols.config import FirmwareConfig
from simulator import Simulation, SimulationError, parse_scenario, serve
from tests.conftest import CONFIGS, REPO, SCENARIOS, free_port
from tests.simulator.conftest import arun
from tests.simulator.test_modbus_server import read_all


def test_run_ticks_at_speed_and_returns_after_its_duration(configs: list[FirmwareConfig]) -> None:
    async def run():
        async with Simulation(configs, seed=1, speed=200.0, tick_s=0.02) as sim:
            started = time.monotonic()
            task = asyncio.create_task(sim.run(duration_s=100.0))
            await asyncio.sleep(0.1)
            first = await read_all(configs[:1])
            await asyncio.sleep(0.2)
            second = await read_all(configs[:1])
            await task
            return time.monotonic() - started, sim.now_s, first, second

    elapsed, now, first, second = arun(run())
    assert 0.45 <= elapsed < 1.5  # 100 simulated seconds at x200 is half a second
    assert now == 100.0
    assert first[("BUS-220", "frequency")] != second[("BUS-220", "frequency")]  # the values move


def test_run_until_cancelled_keeps_serving_the_baseline_after_the_scenario(configs: list[FirmwareConfig]) -> None:
    sc = parse_scenario(json.dumps({
        "scenario_name": "short", "duration_seconds": 10,
        "anomalies": [{"type": "step", "sensor_type": "frequency", "device_id": "BUS-220", "magnitude": -5.0,
                       "start_time": 0, "duration_seconds": 10}],
    }))

    async def run():
        async with Simulation(configs, sc, speed=100.0, tick_s=0.02) as sim:
            task = asyncio.create_task(sim.run())
            await asyncio.sleep(0.05)
            during = (await read_all(configs[:1]))[("BUS-220", "frequency")][0]
            await asyncio.sleep(0.3)  # t ~ 35 s: past the scenario's 10 s
            after = (await read_all(configs[:1]))[("BUS-220", "frequency")][0]
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return during, after, sim.now_s, sim.truth()

    during, after, now, truth = arun(run())
    assert during == pytest.approx(45.0, abs=0.2)
    assert after == pytest.approx(50.0, abs=0.2)
    assert now > 20
    assert [(t.end_s, t.active) for t in truth] == [(10.0, False)]


def test_run_needs_the_context_manager(configs: list[FirmwareConfig]) -> None:
    with pytest.raises(SimulationError, match="async with"):
        arun(Simulation(configs).run(1.0))


def test_bad_speed_is_refused(configs: list[FirmwareConfig]) -> None:
    with pytest.raises(ValueError, match="speed"):
        Simulation(configs, speed=0)


def _config_on_free_port(tmp_path: Path, name: str) -> tuple[Path, int]:
    port = free_port()
    text = (CONFIGS / name).read_text()
    text = text.replace("port = 15020", f"port = {port}").replace("port = 15021", f"port = {port}")
    path = tmp_path / name
    path.write_text(text)
    return path, port


def test_serve_prints_the_endpoints_and_runs_the_scenario(tmp_path: Path) -> None:
    nairobi, port = _config_on_free_port(tmp_path, "nairobi-s1.toml")
    lines: list[str] = []
    truth = arun(serve([nairobi], SCENARIOS / "medium_risk_voltage_fluctuation.json",
                       duration_s=60.0, speed=300.0, print=lines.append))
    assert lines[0] == "scenario: Medium Risk Voltage Fluctuation; speed x300; seed 0"
    assert lines[1] == f"serving modbus_tcp 127.0.0.1:{port} units 1,2,3 (NAIROBI-S1: BUS-220, FEEDER-F12, TR-04)"
    assert lines[-1].startswith("done at t = 60.0 s")
    assert {(t.type, t.end_s) for t in truth} == {("oscillation", 60.0), ("dropout", 60.0)}


def test_serve_refuses_a_scenario_for_devices_it_does_not_serve(tmp_path: Path) -> None:
    mombasa, _port = _config_on_free_port(tmp_path, "mombasa-s1.toml")
    with pytest.raises(ValueError, match=r"medium_risk_voltage_fluctuation\.json: anomalies\[0\]\.device_id: no device 'FEEDER-F12'"):
        arun(serve([mombasa], SCENARIOS / "medium_risk_voltage_fluctuation.json", duration_s=1.0, print=lambda _: None))


def test_the_simulator_imports_only_protocols() -> None:
    code = (
        "import sys, simulator, simulator.runner, simulator.modbus_server; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'edge', 'hub', 'agents', 'models', 'export', 'sentinel_cli'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
