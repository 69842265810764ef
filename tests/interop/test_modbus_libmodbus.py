"""The edge polls a Modbus TCP server that is not pymodbus: one built on libmodbus (Debian)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.config import parse_config
from protocols.modbus.source import ModbusConnection, ModbusSource
from tests.conftest import free_port

HERE = Path(__file__).parent
HEADER = Path("/usr/include/modbus/modbus.h")


@pytest.fixture(scope="module")
def libmodbus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    if shutil.which("gcc") is None or not HEADER.exists():
        if os.environ.get("CI"):
            pytest.fail("libmodbus-dev and gcc are needed (scripts/system-deps.sh installs them)")
        pytest.skip("libmodbus-dev or gcc is not installed (apt-get install libmodbus-dev gcc)")
    exe = tmp_path_factory.mktemp("libmodbus") / "server"
    subprocess.run(["gcc", "-O1", "-o", str(exe), str(HERE / "libmodbus_server.c"), "-lmodbus"], check=True,
                   capture_output=True)
    port = free_port()
    proc = subprocess.Popen([str(exe), str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening", proc.stderr
        yield port
    finally:
        proc.terminate()
        proc.wait(5)


def test_edge_reads_a_libmodbus_server(libmodbus_server: int) -> None:
    cfg = parse_config(f"""
[identity]
edge_id = "edge-interop"
substation = "LAB"
[hub]
url = "http://127.0.0.1:9"
[[devices]]
id = "LIBMODBUS"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {libmodbus_server}
unit_id = 1
points = [
  {{ metric = "voltage_l1", unit = "kV", address = 100, data_type = "float32", nominal = 11.0 }},
  {{ metric = "voltage_l2", unit = "kV", address = 102, data_type = "float32", word_order = "little", nominal = 11.0 }},
  {{ metric = "current_l1", unit = "A", address = 110, data_type = "uint16", scale = 0.1 }},
  {{ metric = "temperature", unit = "degC", register_type = "input", address = 200, data_type = "int16", scale = 0.1 }},
  {{ metric = "breaker_closed", register_type = "coil", address = 5, data_type = "bool" }},
]
""")
    device = cfg.devices[0]

    async def main():
        conn = ModbusConnection(device)
        try:
            source = ModbusSource(device, conn)
            return [b.register_type for b in source.blocks], await source.read()
        finally:
            conn.close()

    blocks, (values, flags) = asyncio.run(main())
    assert blocks == ["coil", "holding", "holding", "input"]  # 100-103 in one read, 110 in another
    assert values.tolist() == pytest.approx([11.05, 11.05, 231.7, -12.5, 1.0], rel=1e-6)
    assert flags.tolist() == [0, 0, 0, 0, 0]
