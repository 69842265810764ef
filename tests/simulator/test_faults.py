"""Scenario faults: a device that stops answering, a server that restarts - seen through the edge."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from edge.daemon import EdgeDaemon
from protocols.config import load_config
from simulator.runner import Simulation
from simulator.scenario import ScenarioError, load_scenario, parse_scenario
from tests.conftest import CONFIGS, free_port

pytestmark = pytest.mark.timeout(120)


def _config():
    base = load_config(CONFIGS / "nairobi-s1.toml")
    port = free_port()
    devices = [msgspec.structs.replace(d, port=port) for d in base.devices]
    hub = msgspec.structs.replace(base.hub, url=f"http://127.0.0.1:{free_port()}", backoff_initial_s=0.2,
                                  backoff_max_s=0.5)
    return msgspec.structs.replace(base, devices=devices, hub=hub)


def _scenario(tmp_path: Path, cfg, faults: list[dict]):
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"scenario_name": "faults", "duration_seconds": 60, "anomalies": [],
                                "faults": faults}))
    return load_scenario(path, [cfg])


def _watch(cfg, scenario, tmp_path: Path, seconds: float, sample_every: float = 0.25):
    """Run simulator + edge; sample each device's online state over time."""

    async def main():
        states: list[tuple[float, dict[str, bool | None]]] = []
        async with Simulation([cfg], scenario) as sim:
            tasks = [asyncio.create_task(sim.run())]
            daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db")
            tasks.append(asyncio.create_task(daemon.run()))
            for _ in range(int(seconds / sample_every)):
                await asyncio.sleep(sample_every)
                states.append((sim.now_s, {k: h.online for k, h in daemon.stats.devices.items()}))
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return states, daemon

    return asyncio.run(main())


def test_device_stop_silences_one_unit_and_it_comes_back(tmp_path: Path) -> None:
    cfg = _config()
    scen = _scenario(tmp_path, cfg, [{"type": "device_stop", "device_id": "FEEDER-F12", "start_time": 2,
                                      "duration_seconds": 3}])
    states, daemon = _watch(cfg, scen, tmp_path, 9)
    during = [s for t, s in states if 3.5 <= t < 5]
    assert during and all(s["FEEDER-F12"] is False for s in during)
    assert all(s["BUS-220"] for t, s in states if t > 1.5)  # the other units on the gateway carry on
    assert states[-1][1]["FEEDER-F12"] is True
    assert "Modbus exception 11" in daemon.stats.devices["FEEDER-F12"].last_error


def test_server_restart_drops_everyone_and_the_edge_reconnects(tmp_path: Path) -> None:
    cfg = _config()
    scen = _scenario(tmp_path, cfg, [{"type": "server_restart", "device_id": "BUS-220", "start_time": 2,
                                      "duration_seconds": 2}])
    states, _ = _watch(cfg, scen, tmp_path, 10)
    during = [s for t, s in states if 3.0 <= t < 4]
    # the 1 s devices notice within the 2 s outage (TR-04 polls every 5 s and may not)
    assert during and all(s["BUS-220"] is False and s["FEEDER-F12"] is False for s in during)
    assert all(states[-1][1].values())


def test_fault_validation(tmp_path: Path) -> None:
    cfg = _config()
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.device_id: no device 'NOPE'"):
        _scenario(tmp_path, cfg, [{"type": "device_stop", "device_id": "NOPE", "start_time": 1, "duration_seconds": 1}])
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.type"):
        parse_scenario(json.dumps({"scenario_name": "x", "duration_seconds": 9, "anomalies": [],
                                   "faults": [{"type": "meltdown", "device_id": "A", "start_time": 0,
                                               "duration_seconds": 1}]}), "f.json")
    with pytest.raises(ScenarioError, match=r"faults\[0\]\.duration_seconds: the fault ends at 12 s"):
        parse_scenario(json.dumps({"scenario_name": "x", "duration_seconds": 9, "anomalies": [],
                                   "faults": [{"type": "device_stop", "device_id": "A", "start_time": 2,
                                               "duration_seconds": 10}]}), "f.json")
