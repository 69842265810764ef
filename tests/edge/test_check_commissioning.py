"""`sentinel edge check` commissioning checks against real servers on loopback: implausible values
with the likely fix, each failed point on its own, connection errors that say where."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.check import PointCheck, check_devices, format_table
from edge.plausibility import assess
from protocols.config import load_config
from protocols.modbus.codec import encode_values
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[2]


def regs(value: float, data_type: str = "float32", word_order: str = "big") -> list[int]:
    r, _ = encode_values(np.array([value]), data_type, "big", word_order)
    return [int(x) for x in r[0]]


def served_registers() -> list[int]:
    """Holding registers 100..107 as a meter wired by someone else serves them. 108 is not served."""
    return (regs(11.05)  # 100 voltage_l1, kV
            + regs(18.93, word_order="little")  # 102 active_power, MW, the meter sends the low word first
            + regs(11.02)  # 104 voltage_l2, kV
            + regs(50.01))  # 106 frequency, Hz


async def start_meter(port: int) -> ModbusTcpServer:
    holding = [SimData(100, values=served_registers(), datatype=DataType.REGISTERS)]
    bits = [SimData(0, datatype=DataType.BITS, values=False)]
    server = ModbusTcpServer([SimDevice(id=1, simdata=(bits, list(bits), holding, list(holding)))],
                             address=("127.0.0.1", port))
    await server.serve_forever(background=True)
    return server


def site_toml(tmp_path: Path, modbus_port: int, extra: str = "") -> Path:
    text = f"""
[identity]
edge_id = "edge-test"
substation = "SUB-T"

[hub]
url = "http://127.0.0.1:{free_port()}"

[[devices]]
id = "METER-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
unit_id = 1
timeout_s = 0.5
max_gap_registers = 10
points = [
  {{ metric = "voltage_l1", unit = "kV", address = 100, data_type = "float32", nominal = 11.0 }},
  {{ metric = "active_power", unit = "MW", address = 102, data_type = "float32" }},
  {{ metric = "voltage_l2", unit = "kV", address = 104, data_type = "float32", nominal = 110.0 }},
  {{ metric = "frequency", unit = "Hz", address = 106, data_type = "float32" }},
  {{ metric = "current_l1", unit = "A", address = 108, data_type = "uint16", nominal = 400.0 }},
]
{extra}
"""
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def by_metric(checks: list[PointCheck]) -> dict[str, PointCheck]:
    return {c.metric: c for c in checks}


def test_plausibility_rules_flag_unit_mixups_and_keep_healthy_values() -> None:
    assert assess("voltage_l1", "kV", 11.0, 11.05).ok
    assert assess("voltage_l1", "V", 11_000.0, 11_050.0).ok
    assert assess("active_power", "MW", None, 18.93).ok
    assert assess("frequency", "Hz", 50.0, 49.98).ok
    assert assess("voltage_l1", "kV", 11.0, 0.0).ok  # de-energised, not a mistake
    thousand = assess("voltage_l1", "V", 11.0, 11_050.0)  # nominal in kV, values in V
    assert thousand.level == "suspect" and "1000 times" in thousand.message and "nominal is 1.1e+04 V" in thousand.message
    kv_as_v = assess("voltage_l1", "kV", None, 11_050.0)  # device sends V, point says kV: beyond any grid
    assert kv_as_v.level == "impossible" and "'V'" in kv_as_v.message
    feeder = assess("active_power", "MW", None, 189_268.0)
    assert feeder.level == "suspect" and "kW" in feeder.message
    assert assess("voltage_l1", "kV", None, -3.0).level == "impossible"
    assert assess("frequency", "Hz", 60.0, 50.0).level == "suspect"


def test_check_suggests_word_order_flags_nominal_and_fails_only_the_bad_address(tmp_path: Path) -> None:
    port = free_port()
    cfg_path = site_toml(tmp_path, port)

    async def main() -> list[PointCheck]:
        server = await start_meter(port)
        try:
            return await check_devices(load_config(cfg_path), wait_s=2.0)
        finally:
            await server.shutdown()

    checks = asyncio.run(main())
    c = by_metric(checks)
    assert c["voltage_l1"].ok and c["voltage_l1"].quality == "good" and c["voltage_l1"].value == pytest.approx(11.05)
    assert c["frequency"].ok and not c["frequency"].warning
    # 18.93 MW sent low word first and read high word first: absurd, and the fix is named with the value
    power = c["active_power"]
    assert "word_order = 'little'" in (power.error + power.warning)
    assert "18.93 MW" in (power.error + power.warning)
    # 11 kV values on a point whose nominal says 110 kV
    v2 = c["voltage_l2"]
    assert v2.ok and v2.quality == "suspect" and "11 kV" in v2.warning and "110 kV" in v2.warning
    assert "order" not in v2.warning  # no byte order reads it better: none is suggested
    # register 108 does not exist: only its point fails, naming the exception and the address
    cur = c["current_l1"]
    assert not cur.ok and "exception 2 (illegal data address)" in cur.error and "108" in cur.error
    assert sum(not x.ok for x in checks) == 1 + (not power.ok)
    table = format_table(checks)
    assert "suspect" in table.splitlines()[-1]


def test_connection_errors_name_host_port_and_unit(tmp_path: Path) -> None:
    port, broker, opcua = free_port(), free_port(), free_port()  # nothing listens on any
    serial = tmp_path / "ttyNOPE"
    extra = f"""
[[devices]]
id = "RTU-LINE"
protocol = "modbus_rtu"
port = "{serial}"
unit_id = 7
points = [ {{ metric = "frequency", unit = "Hz", address = 0, data_type = "uint16", scale = 0.01 }} ]

[[devices]]
id = "IOT-1"
protocol = "mqtt"
host = "127.0.0.1"
port = {broker}
connect_timeout_s = 2.0
points = [ {{ metric = "oil_temperature", unit = "degC" }} ]

[[devices]]
id = "SCADA-1"
protocol = "opcua"
url = "opc.tcp://127.0.0.1:{opcua}"
points = [ {{ metric = "voltage_l1", node_id = "ns=2;s=V1", unit = "kV" }} ]
"""
    cfg_path = site_toml(tmp_path, port, extra)
    out = subprocess.run([sys.executable, "-m", "sentinel_cli.main", "edge", "check", "--config", str(cfg_path),
                          "--wait", "3"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    rows = [line for line in lines if line.startswith("METER-1")]
    assert len(rows) == 5
    for row in rows:
        assert f"127.0.0.1:{port}" in row and "unit 1" in row, row
    where = {"RTU-LINE": f"{serial} unit 7", "IOT-1": f"MQTT broker 127.0.0.1:{broker}",
             "SCADA-1": f"opc.tcp://127.0.0.1:{opcua}"}
    for device, expected in where.items():
        row = next(line for line in lines if line.startswith(device))
        assert expected in row and " bad " in row, row
