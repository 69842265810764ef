"""A polled Modbus TCP source: one connection owner per endpoint, block reads, one lock per bus."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException

from protocols.modbus.codec import DeviceCodec, plan_blocks
from protocols.modbus.config import ModbusTcpDevice
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


class ModbusTcpConnection:
    """One TCP connection to one endpoint (gateway or device), shared by the units behind it.

    pymodbus's own reconnect is off: the edge's scheduler owns reconnects.
    """

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.host, self.port = host, port
        self.lock = asyncio.Lock()
        self.client = AsyncModbusTcpClient(
            host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0, reconnect_delay_max=0
        )

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    async def ensure_connected(self, device_id: str) -> None:
        if self.client.connected:
            return
        try:
            ok = await self.client.connect()
        except (OSError, ModbusException) as exc:
            raise SourceConnectError(device_id, self.endpoint, str(exc) or type(exc).__name__) from exc
        if not ok:
            raise SourceConnectError(device_id, self.endpoint, "connection refused or timed out")

    def close(self) -> None:
        self.client.close()


class ModbusTcpSource:
    """Reads every point of one device in as few requests as the register map allows."""

    def __init__(self, device: ModbusTcpDevice, connection: ModbusTcpConnection) -> None:
        self.device = device
        self.connection = connection
        self.device_id = device.id
        self.endpoint = f"modbus_tcp://{connection.endpoint}/{device.unit_id}"
        self.poll_interval_s = device.poll_interval_s
        self.points = [PointInfo(p.metric, p.unit, p.nominal, p.limit_low, p.limit_high) for p in device.points]
        self.blocks = plan_blocks(device.points, device.max_block_registers, device.max_gap_registers)
        self.codec = DeviceCodec(device.points, self.blocks)

    async def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Poll once: (values, flags) in point order. Raises SourceConnectError / SourceReadError."""
        dev = self.device
        conn = self.connection
        async with conn.lock:
            await conn.ensure_connected(dev.id)
            regs: list[list[int]] = []
            for block in self.blocks:
                call = (
                    conn.client.read_holding_registers
                    if block.register_type == "holding"
                    else conn.client.read_input_registers
                )
                try:
                    async with asyncio.timeout(dev.timeout_s):
                        rr = await call(block.start, count=block.count, device_id=dev.unit_id)
                except TimeoutError as exc:
                    conn.close()  # a late answer must not be taken for the next request's
                    raise SourceReadError(dev.id, conn.endpoint, f"timeout after {dev.timeout_s}s") from exc
                except (ModbusException, OSError) as exc:
                    conn.close()
                    raise SourceReadError(dev.id, conn.endpoint, str(exc) or type(exc).__name__) from exc
                if rr.isError():
                    code = getattr(rr, "exception_code", 0)
                    meaning = EXCEPTION_CODES.get(code, "unknown exception")
                    raise SourceReadError(
                        dev.id, conn.endpoint,
                        f"Modbus exception {code} ({meaning}) reading {block.count} {block.register_type} "
                        f"registers from {block.start} on unit {dev.unit_id}",
                    )
                regs.append(rr.registers)
        return self.codec.decode(regs)

    async def close(self) -> None:
        """The connection is shared with the bus's other units: the factory closes it."""
