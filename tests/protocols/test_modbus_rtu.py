"""Modbus RTU for real: the simulator serves RTU on one end of a socat pty pair, the edge polls the other."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge.daemon import EdgeDaemon
from protocols.config import parse_config
from protocols.modbus.source import ModbusConnection, ModbusSource
from protocols.sources import SourceReadError
from simulator.runner import Simulation
from tests.conftest import free_port

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed (apt-get install socat)"),
]


def rtu_config(line: Path, hub_port: int, extra_unit: str = "") -> str:
    return f"""
[identity]
edge_id = "edge-rtu"
substation = "RTU-TEST"
[hub]
url = "http://127.0.0.1:{hub_port}"
backoff_initial_s = 0.2
backoff_max_s = 0.5

[[devices]]
id = "METER-1"
protocol = "modbus_rtu"
port = "{line}"
baudrate = 115200
parity = "N"   # a pty cannot take parity settings (termios EINVAL); real RS-485 lines usually use E
unit_id = 1
poll_interval_s = 0.5
timeout_s = 0.3
points = [
  {{ metric = "voltage_l1", unit = "kV", address = 100, data_type = "float32", nominal = 11.0 }},
  {{ metric = "current_l1", unit = "A", address = 110, data_type = "uint16", scale = 0.1, nominal = 400.0 }},
]

[[devices]]
id = "METER-2"
protocol = "modbus_rtu"
port = "{line}"
baudrate = 115200
parity = "N"   # a pty cannot take parity settings (termios EINVAL); real RS-485 lines usually use E
unit_id = 2
poll_interval_s = 0.5
timeout_s = 0.3
points = [{{ metric = "frequency", unit = "Hz", address = 106, data_type = "float32" }}]
{extra_unit}
"""


SILENT_UNIT = """
[[devices]]
id = "METER-9"
protocol = "modbus_rtu"
port = "{line}"
baudrate = 115200
parity = "N"   # a pty cannot take parity settings (termios EINVAL); real RS-485 lines usually use E
unit_id = 9
poll_interval_s = 0.5
timeout_s = 0.3
points = [{{ metric = "frequency", unit = "Hz", address = 106, data_type = "float32" }}]
"""


def test_rtu_reads_over_a_pty_pair(tmp_path: Path) -> None:
    cfg = parse_config(rtu_config(tmp_path / "rs485", free_port()))

    async def main() -> tuple:
        async with Simulation([cfg]) as sim:
            assert any("modbus_rtu" in e for e in sim.endpoints)
            conn = ModbusConnection(cfg.devices[0])
            try:
                v1, f1 = await ModbusSource(cfg.devices[0], conn).read()
                v2, f2 = await ModbusSource(cfg.devices[1], conn).read()
            finally:
                conn.close()
            return v1, f1, v2, f2, sim.values()

    v1, f1, v2, f2, truth = asyncio.run(main())
    assert f1.tolist() == [0, 0] and f2.tolist() == [0]
    assert 10.5 < v1[0] < 11.5 and 100 < v1[1] < 450
    assert v1[0] == pytest.approx(truth[("METER-1", "voltage_l1")], rel=1e-6)
    assert 49.5 < v2[0] < 50.5


def test_a_silent_unit_costs_the_others_no_more_than_its_timeout(tmp_path: Path) -> None:
    line = tmp_path / "rs485"
    served = parse_config(rtu_config(line, free_port()))  # the simulator serves units 1 and 2 only
    edge_cfg = parse_config(rtu_config(line, free_port(), SILENT_UNIT.format(line=line)))
    buffer = tmp_path / "edge.db"

    async def main() -> EdgeDaemon:
        async with Simulation([served]) as sim:
            sim_task = asyncio.create_task(sim.run())
            daemon = EdgeDaemon(edge_cfg, buffer_path=buffer)
            task = asyncio.create_task(daemon.run())
            await asyncio.sleep(6)
            task.cancel()
            sim_task.cancel()
            await asyncio.gather(task, sim_task, return_exceptions=True)
            return daemon

    daemon = asyncio.run(main())
    health = daemon.stats.devices
    assert health["METER-9"].online is False and "timeout" in health["METER-9"].last_error
    assert health["METER-1"].online and health["METER-2"].online
    db = sqlite3.connect(buffer)
    for device in ("METER-1", "METER-2"):
        ts = np.array([r[0] for r in db.execute(
            "SELECT ts FROM readings WHERE device_id = ? AND metric != 'current_l1' ORDER BY ts", (device,))])
        gaps = np.diff(ts)
        # polled every 0.5 s; the silent unit may hold the line for one 0.3 s timeout at a time
        assert len(ts) >= 8, (device, len(ts))
        assert gaps.max() <= 0.5 + 0.3 + 0.25, (device, gaps.max())
    events = [r[0] for r in db.execute("SELECT body FROM events")]
    assert len(events) == 1  # METER-9 went down once: one event, not one per failed poll


def test_exception_codes_are_named(tmp_path: Path) -> None:
    cfg = parse_config(rtu_config(tmp_path / "rs485", free_port()).replace("address = 106", "address = 300"))
    served = parse_config(rtu_config(tmp_path / "rs485", free_port()))

    async def main() -> str:
        async with Simulation([served]):
            conn = ModbusConnection(cfg.devices[1])
            try:
                with pytest.raises(SourceReadError) as info:
                    await ModbusSource(cfg.devices[1], conn).read()
            finally:
                conn.close()
            return str(info.value)

    msg = asyncio.run(main())
    assert "METER-2 at modbus_rtu://" in msg and "Modbus exception 2 (illegal data address)" in msg
