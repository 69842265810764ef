"""Polled Modbus sources: one connection owner per bus, block reads, one lock per bus.

A *bus* is a TCP endpoint (a device or a gateway with units behind it) or a serial line. Every
unit on a bus shares its :class:`ModbusConnection` and its lock, so requests never interleave; a
dead unit costs the others at most its own ``timeout_s`` per attempt, and the edge's scheduler
backs off from it.

Whatever a device answers, ``read()`` returns values with their quality flags or raises
:class:`~protocols.sources.SourceReadError` / :class:`~protocols.sources.SourceConnectError`
naming the device, the endpoint and what was wrong: an exception response, an answer with another
function code or another number of registers than asked for, a connection dropped mid-answer
(at once, not after the timeout), or no valid answer in time (with the bytes that did arrive:
a wrong unit id or transaction id is skipped by pymodbus and shows there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence

import numpy as np
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from protocols.modbus.codec import Block, DeviceCodec, plan_blocks
from protocols.modbus.config import BIT_TYPES, ModbusDevice, ModbusRtuDevice, ModbusTcpDevice
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

_SETTLE_ITERATIONS = 5
"""Loop iterations a deadline waits for an answer already read to come out of pymodbus (one or two)."""

FUNCTION_CODES = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
"""The read request of each register type; its answer carries the same code (+0x80 for an exception)."""

_WHAT = {"coil": "coils", "discrete": "discrete inputs", "holding": "holding registers", "input": "input registers"}


def _retrieve(task: asyncio.Future[ModbusPDU]) -> None:
    if not task.cancelled():
        task.exception()


def _hex(data: bytes, limit: int = 32) -> str:
    text = data[:limit].hex(" ")
    return f"{text} ..." if len(data) > limit else text


class ModbusConnection:
    """One client for one bus. pymodbus's own reconnect and retries are off: the edge owns them."""

    def __init__(self, device: ModbusDevice) -> None:
        self.lock = asyncio.Lock()
        self._received = b""  # what has arrived towards the answer in flight (pymodbus's receive buffer)
        self._lost: asyncio.Future[None] | None = None  # resolved when the connection drops mid-request
        hooks = {"trace_packet": self._trace_packet, "trace_connect": self._trace_connect}
        if isinstance(device, ModbusTcpDevice):
            self.endpoint = f"modbus_tcp://{device.host}:{device.port}"
            self.serial = False
            self.client: AsyncModbusTcpClient | AsyncModbusSerialClient = AsyncModbusTcpClient(
                device.host, port=device.port, timeout=device.timeout_s, retries=0,
                reconnect_delay=0, reconnect_delay_max=0, **hooks,
            )
        else:
            self.endpoint = f"modbus_rtu://{device.port}"
            self.serial = True
            self.client = AsyncModbusSerialClient(
                device.port, baudrate=device.baudrate, parity=device.parity, stopbits=device.stopbits,
                bytesize=device.bytesize, timeout=device.timeout_s, retries=0,
                reconnect_delay=0, reconnect_delay_max=0, **hooks,
            )

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        self._received = b"" if sending else data
        return data

    def _trace_connect(self, connected: bool) -> None:
        lost = self._lost
        if not connected and lost is not None and not lost.done():
            lost.set_result(None)

    async def request(self, call: Awaitable[ModbusPDU], timeout_s: float) -> ModbusPDU:
        """The answer to ``call`` (a pymodbus read) within ``timeout_s``, else TimeoutError. Raises
        ConnectionError as soon as the connection drops before the answer is complete: the device
        hung up, or pymodbus closed the connection on a frame it could not decode (it does not fail
        the request then: it would wait out the timeout).

        The wait is bounded here rather than by cancelling from outside, and the deadline lets the
        loop turn a few times before it is called: on a busy machine (or a device answering at the
        last moment) the answer's bytes and the deadline fall due in the same loop iteration, and
        pymodbus hands a decoded answer on through two futures. That answer is the answer, not a
        timeout with its bytes already in hand."""
        lost = self._lost = asyncio.get_running_loop().create_future()
        answer = asyncio.ensure_future(call)
        answer.add_done_callback(_retrieve)  # an answer that fails after we stopped waiting is not news
        try:
            await asyncio.wait((answer, lost), timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
            for _ in range(_SETTLE_ITERATIONS):
                if answer.done() or lost.done():
                    break
                await asyncio.sleep(0)  # bytes read in this iteration still travel through pymodbus's futures
        finally:
            self._lost = None
            if not answer.done():
                answer.cancel()
        if answer.done() and not answer.cancelled():
            return answer.result()
        if not lost.done():
            raise TimeoutError(self.timeout_reason(timeout_s))
        got = self._received
        raise ConnectionError(
            f"connection lost after {len(got)} bytes of an incomplete or undecodable answer: {_hex(got)}" if got
            else "connection closed by the device before it answered"
        )

    def timeout_reason(self, timeout_s: float) -> str:
        got = self._received
        reason = f"timeout after {timeout_s}s"
        return f"{reason}; {len(got)} bytes arrived but no valid answer: {_hex(got)}" if got else reason

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
                    rr = await conn.request(
                        calls[block.register_type](block.start, count=block.count, device_id=dev.unit_id),
                        dev.timeout_s)
                except TimeoutError as exc:
                    reason = conn.timeout_reason(dev.timeout_s)
                    conn.after_timeout()
                    raise SourceReadError(dev.id, self.endpoint, reason) from exc
                except (ModbusException, OSError) as exc:
                    text = str(exc) or type(exc).__name__
                    if "No response" in text or "timeout" in text.lower():
                        reason = conn.timeout_reason(dev.timeout_s)
                        conn.after_timeout()
                        raise SourceReadError(dev.id, self.endpoint, reason) from exc
                    conn.close()
                    raise SourceReadError(dev.id, self.endpoint, text) from exc
                regs.append(self._check(block, rr))
        return self.codec.decode(regs)

    def _check(self, block: Block, rr: ModbusPDU) -> list[int]:
        """The registers (or bits) of ``block`` in the answer ``rr``; SourceReadError unless it is
        an answer to that read: same function code, no exception, as many registers as asked for."""
        dev = self.device
        what = f"{block.count} {_WHAT[block.register_type]} from {block.start} on unit {dev.unit_id}"
        fc = FUNCTION_CODES[block.register_type]
        if rr.function_code & 0x7F != fc:
            raise SourceReadError(dev.id, self.endpoint,
                                  f"answer with function code {rr.function_code} to a read of {what} "
                                  f"(function code {fc})")
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            meaning = EXCEPTION_CODES.get(code, "unknown exception")
            raise SourceReadError(dev.id, self.endpoint, f"Modbus exception {code} ({meaning}) reading {what}")
        if block.register_type in BIT_TYPES:  # pymodbus unpacks every data byte: 8 bits each
            got, want = len(rr.bits) // 8, (block.count + 7) // 8
            if got != want:
                raise SourceReadError(dev.id, self.endpoint,
                                      f"answer with {got} data bytes to a read of {what} ({want} expected)")
            return list(rr.bits[:block.count])
        if len(rr.registers) != block.count:
            raise SourceReadError(dev.id, self.endpoint,
                                  f"answer with {len(rr.registers)} registers to a read of {what}")
        return list(rr.registers)

    async def close(self) -> None:
        """The connection is shared with the bus's other units: the factory closes it."""


def sources_for(device: ModbusDevice, connection: ModbusConnection) -> list[ModbusSource]:
    """One source per poll interval used by the device's points (most devices: one)."""
    groups = device.point_groups()
    if len(groups) == 1:
        return [ModbusSource(device, connection)]
    return [ModbusSource(device, connection, idx, interval) for interval, idx in groups]
