"""Polled Modbus sources: one connection owner per bus, block reads, one lock per bus.

A *bus* is a TCP endpoint (a device or a gateway with units behind it) or a serial line. Every
unit on a bus shares its :class:`ModbusConnection` and its lock, so requests never interleave; a
dead unit costs the others at most its own ``timeout_s`` per attempt, and the edge's scheduler
backs off from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from protocols.modbus.codec import DeviceCodec, plan_blocks
from protocols.modbus.config import ModbusDevice, ModbusRtuDevice, ModbusTcpDevice
from protocols.sources import PointInfo, SourceConnectError, SourceReadError

log = logging.getLogger(__name__)

EXCEPTION_CODES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


class ModbusConnection:
    """One client for one bus. pymodbus's own reconnect and retries are off: the edge owns them."""

    def __init__(self, device: ModbusDevice) -> None:
        self.lock = asyncio.Lock()
        if isinstance(device, ModbusTcpDevice):
            self.endpoint = f"modbus_tcp://{device.host}:{device.port}"
            self.serial = False
            self.client: AsyncModbusTcpClient | AsyncModbusSerialClient = AsyncModbusTcpClient(
                device.host, port=device.port, timeout=device.timeout_s, retries=0,
                reconnect_delay=0, reconnect_delay_max=0,
            )
        else:
            self.endpoint = f"modbus_rtu://{device.port}"
            self.serial = True
            self.client = AsyncModbusSerialClient(
                device.port, baudrate=device.baudrate, parity=device.parity, stopbits=device.stopbits,
                bytesize=device.bytesize, timeout=device.timeout_s, retries=0,
                reconnect_delay=0, reconnect_delay_max=0,
            )

    @staticmethod
    def key(device: ModbusDevice) -> tuple[str, ...]:
        if isinstance(device, ModbusRtuDevice):
            return ("rtu", device.port)
        return ("tcp", device.host, str(device.port))

    async def ensure_connected(self, device_id: str, timeout_s: float) -> None:
        if self.client.connected:
            return
        try:
            async with asyncio.timeout(max(timeout_s, 1.0)):
                ok = await self.client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            raise SourceConnectError(device_id, self.endpoint, str(exc) or "connect timed out") from exc
        if not ok:
            what = "serial port could not be opened" if self.serial else "connection refused or timed out"
            raise SourceConnectError(device_id, self.endpoint, what)

    def after_timeout(self) -> None:
        """A late answer must not be taken for the next request's. On TCP, drop the connection;
        on a serial line (shared by other units) keep the port open: the next request's frame
        starts after the silent interval anyway."""
        if not self.serial:
            self.client.close()

    def close(self) -> None:
        self.client.close()


class ModbusSource:
    """Reads a set of points of one unit in as few requests as its register map allows."""

    def __init__(self, device: ModbusDevice, connection: ModbusConnection, point_indices: Sequence[int] | None = None,
                 poll_interval_s: float | None = None) -> None:
        self.device = device
        self.connection = connection
        self.device_id = device.id
        self.endpoint = f"{connection.endpoint}/{device.unit_id}"
        self.poll_interval_s = poll_interval_s or device.poll_interval_s
        idx = list(range(len(device.points))) if point_indices is None else list(point_indices)
        pts = [device.points[i] for i in idx]
        self.model_points = pts
        self.points = [PointInfo(p.metric, p.unit, p.nominal, p.limit_low, p.limit_high) for p in pts]
        self.blocks = plan_blocks(pts, device.max_block_registers, device.max_gap_registers)
        self.codec = DeviceCodec(pts, self.blocks)

    async def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Poll once: (values, flags) in point order. Raises SourceConnectError / SourceReadError."""
        dev = self.device
        conn = self.connection
        client = conn.client
        calls = {
            "holding": client.read_holding_registers, "input": client.read_input_registers,
            "coil": client.read_coils, "discrete": client.read_discrete_inputs,
        }
        async with conn.lock:
            await conn.ensure_connected(dev.id, dev.timeout_s)
            regs: list[list[int]] = []
            for block in self.blocks:
                try:
                    async with asyncio.timeout(dev.timeout_s):
                        rr = await calls[block.register_type](block.start, count=block.count, device_id=dev.unit_id)
                except TimeoutError as exc:
                    conn.after_timeout()
                    raise SourceReadError(dev.id, self.endpoint, f"timeout after {dev.timeout_s}s") from exc
                except (ModbusException, OSError) as exc:
                    text = str(exc) or type(exc).__name__
                    if "No response" in text or "timeout" in text.lower():
                        conn.after_timeout()
                        raise SourceReadError(dev.id, self.endpoint, f"timeout after {dev.timeout_s}s") from exc
                    conn.close()
                    raise SourceReadError(dev.id, self.endpoint, text) from exc
                if rr.isError():
                    code = getattr(rr, "exception_code", 0)
                    meaning = EXCEPTION_CODES.get(code, "unknown exception")
                    raise SourceReadError(
                        dev.id, self.endpoint,
                        f"Modbus exception {code} ({meaning}) reading {block.count} {block.register_type} "
                        f"registers from {block.start} on unit {dev.unit_id}",
                    )
                regs.append(rr.bits[:block.count] if block.register_type in ("coil", "discrete") else rr.registers)
        return self.codec.decode(regs)

    async def close(self) -> None:
        """The connection is shared with the bus's other units: the factory closes it."""


def sources_for(device: ModbusDevice, connection: ModbusConnection) -> list[ModbusSource]:
    """One source per poll interval used by the device's points (most devices: one)."""
    groups = device.point_groups()
    if len(groups) == 1:
        return [ModbusSource(device, connection)]
    return [ModbusSource(device, connection, idx, interval) for interval, idx in groups]
