"""The servers answer real Modbus TCP clients with what the configs say is at each address."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess

import msgspec
import numpy as np
import pytest
from pymodbus.client import AsyncModbusTcpClient

from protocols.config import FirmwareConfig
from protocols.modbus.codec import registers_to_raw
from protocols.modbus.config import ModbusTcpDevice
from protocols.modbus.source import ModbusConnection, ModbusSource
from simulator import PlantError, Simulation, SimulationError
from tests.simulator.conftest import arun, device

T = 1234.5  # any scenario time


async def read_all(configs: list[FirmwareConfig]) -> dict[tuple[str, str], tuple[float, int]]:
    """Every point of every device, read through the edge's own Modbus source: (value, flags)."""
    out: dict[tuple[str, str], tuple[float, int]] = {}
    for config in configs:
        # what is read is checked here, not how fast: the sample configs' 0.5 s timeout failed once on
        # a loaded CI machine, so a patient one
        modbus = [msgspec.structs.replace(d, timeout_s=5.0, poll_interval_s=10.0)
                  for d in config.devices if isinstance(d, ModbusTcpDevice)]
        connection = ModbusConnection(modbus[0])
        try:
            for d in modbus:
                values, flags = await ModbusSource(d, connection).read()
                out.update({(d.id, p.metric): (float(v), int(f)) for p, v, f in zip(d.points, values, flags)})
        finally:
            connection.close()
    return out


def test_every_point_reads_back_through_the_edge_source(configs: list[FirmwareConfig]) -> None:
    async def scenario() -> tuple[dict, dict]:
        async with Simulation(configs, seed=5, start_hour=18.0) as sim:
            sim.set_time(T)
            return sim.values(), await read_all(configs)

    served, read = arun(scenario())
    served = {k: v for k, v in served.items() if k[0] != "FEEDER-M05"}  # the OPC-UA feeder
    assert set(read) == set(served) and len(read) == 32
    for (device_id, metric), (value, flags) in read.items():
        point = next(p for p in device(configs, device_id).points if p.metric == metric)
        tolerance = abs(point.scale) / 2 + 1e-9 if point.data_type.startswith(("int", "uint")) else 1e-6 * abs(value)
        assert flags == 0
        assert abs(value - served[(device_id, metric)]) <= tolerance, (device_id, metric)


async def _client_session(configs: list[FirmwareConfig], body):
    async with Simulation(configs, seed=5, start_hour=18.0) as sim:
        sim.set_time(T)
        port = configs[0].devices[0].port
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
        await client.connect()
        try:
            return sim.values(), await body(client)
        finally:
            client.close()


def test_protocol_address_100_is_what_the_config_puts_at_100(configs: list[FirmwareConfig]) -> None:
    async def body(client: AsyncModbusTcpClient):
        v1 = await client.read_holding_registers(100, count=2, device_id=1)
        oil = await client.read_input_registers(200, count=1, device_id=3)
        pf = await client.read_holding_registers(122, count=1, device_id=2)
        return v1.registers, oil.registers, pf.registers

    served, (v1, oil, pf) = arun(_client_session(configs, body))
    assert registers_to_raw(np.array(v1), "float32")[0] == pytest.approx(served[("BUS-220", "voltage_l1")], rel=1e-6)
    assert registers_to_raw(np.array(oil), "int16")[0] * 0.1 == pytest.approx(served[("TR-04", "oil_temperature")], abs=0.051)
    assert registers_to_raw(np.array(pf), "int16")[0] * 0.001 == pytest.approx(served[("FEEDER-F12", "power_factor")], abs=0.00051)


def test_what_is_not_a_point_is_refused_like_a_device_would(configs: list[FirmwareConfig]) -> None:
    async def body(client: AsyncModbusTcpClient):
        return {
            "below the first point": await client.read_holding_registers(99, count=2, device_id=1),
            "past the last point": await client.read_holding_registers(106, count=4, device_id=1),
            "input registers of a holding-only unit": await client.read_input_registers(100, count=2, device_id=1),
            "holding registers of an input-only unit": await client.read_holding_registers(200, count=1, device_id=3),
            "a unit nobody has": await client.read_holding_registers(100, count=2, device_id=9),
            "a write": await client.write_register(100, 1, device_id=1),
            "coils": await client.read_coils(0, count=1, device_id=1),
        }

    _served, answers = arun(_client_session(configs, body))
    codes = {what: getattr(rr, "exception_code", None) for what, rr in answers.items()}
    assert codes == {
        "below the first point": 2, "past the last point": 2,
        "input registers of a holding-only unit": 2, "holding registers of an input-only unit": 2,
        "a unit nobody has": 11, "a write": 1, "coils": 1,
    }


def test_small_gaps_between_points_read_as_zero(configs: list[FirmwareConfig]) -> None:
    async def body(client: AsyncModbusTcpClient):
        return (await client.read_holding_registers(100, count=23, device_id=2)).registers

    served, regs = arun(_client_session(configs, body))
    assert regs[6:10] == [0, 0, 0, 0]  # 106..109, between voltage_l3 and current_l1
    assert regs[10] * 0.1 == pytest.approx(served[("FEEDER-F12", "current_l1")], abs=0.051)


def test_endpoints_name_port_units_and_devices(configs: list[FirmwareConfig]) -> None:
    sim = Simulation(configs)
    ports = [c.devices[0].port for c in configs]
    assert sim.endpoints == [
        f"modbus_tcp 127.0.0.1:{ports[0]} units 1,2,3 (NAIROBI-S1: BUS-220, FEEDER-F12, TR-04)",
        f"modbus_tcp 127.0.0.1:{ports[1]} units 1,2,3 (MOMBASA-S1: BUS-MOM-220, FEEDER-M03, TR-07)",
        f"opcua {configs[1].devices[3].url} (None) devices FEEDER-M05",
    ]


def test_a_busy_port_is_an_error_naming_the_endpoint_and_nothing_stays_bound(configs: list[FirmwareConfig]) -> None:
    busy = configs[1].devices[0].port
    first = configs[0].devices[0].port
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", busy))
        blocker.listen()

        async def enter() -> None:
            async with Simulation(configs):
                pass

        with pytest.raises(SimulationError, match=rf"cannot serve modbus_tcp 127\.0\.0\.1:{busy}: address already in use"):
            arun(enter())
    with socket.socket() as again:  # the endpoint that had started was closed again
        again.bind(("127.0.0.1", first))


def test_two_devices_on_one_unit_of_one_endpoint_is_an_error(configs: list[FirmwareConfig]) -> None:
    port = configs[0].devices[0].port
    moved = msgspec.structs.replace(
        configs[1], devices=[msgspec.structs.replace(d, port=port) if hasattr(d, "unit_id") else d
                             for d in configs[1].devices]
    )
    with pytest.raises(PlantError, match=rf"127\.0\.0\.1:{port} unit 1 is claimed by both NAIROBI-S1 BUS-220 and MOMBASA-S1 BUS-MOM-220"):
        Simulation([configs[0], moved])


def test_the_port_is_free_again_after_exit(configs: list[FirmwareConfig]) -> None:
    async def use() -> None:
        async with Simulation(configs) as sim:
            await read_all(configs[:1])
            sim.set_time(1.0)

    arun(use())
    for c in configs:
        with socket.socket() as s:
            s.bind(("127.0.0.1", c.devices[0].port))


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is not installed (Debian: apt-get install mbpoll)")
def test_mbpoll_reads_the_feeder_voltages(configs: list[FirmwareConfig]) -> None:
    port = configs[0].devices[0].port
    # -r is mbpoll's 1-based reference: 101 is protocol address 100. -B: big-endian word order,
    # as the config's float32 points (mbpoll's default for floats is little-endian words).
    command = ["mbpoll", "-a", "2", "-r", "101", "-c", "3", "-t", "4:float", "-B", "-1", "-p", str(port), "127.0.0.1"]

    async def poll() -> tuple[dict, str]:
        async with Simulation(configs, seed=5, start_hour=18.0) as sim:
            sim.set_time(T)
            done = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, timeout=10)
            assert done.returncode == 0, done.stderr
            return sim.values(), done.stdout

    served, stdout = arun(poll())
    read = {int(ref): float(v) for ref, v in (line.strip("[ ").split("]:") for line in stdout.splitlines() if line.startswith("["))}
    assert set(read) == {101, 103, 105}
    for ref, phase in ((101, 1), (103, 2), (105, 3)):
        assert read[ref] == pytest.approx(served[("FEEDER-F12", f"voltage_l{phase}")], abs=1e-3)
