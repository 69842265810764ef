"""One pymodbus Modbus TCP server per (host, port), serving every device (unit id) configured there.

Addressing: pymodbus 3.16's ``SimData(address=N)`` is the 0-based protocol address N, the address a
client sends in the request (the deprecated ``ModbusSequentialDataBlock(address, ...)`` subtracts 1,
which is why it refuses address 0). So a client asking for holding register 100 (``mbpoll -r 101``,
1-based) gets what the firmware config puts at ``address = 100``.

What each unit answers:

- read holding (3) / input (4) registers: the registers its points occupy, and the registers
  between two points up to 125 apart (read as 0, like most meters); anything else is exception 2
  (illegal data address);
- any write, and coils / discrete inputs: exception 1 (illegal function); the devices are read-only;
- a unit id no device has: exception 11 (gateway target device failed to respond), like a gateway.

Registers are encoded with :func:`protocols.modbus.codec.encode_values`, the inverse of what the
edge decodes. A missing value (NaN) is NaN in float registers and the "not available" pattern of
integer ones (as SunSpec uses): int16 0x8000 (-32768), uint16 0xFFFF, int32 0x80000000,
uint32 0xFFFFFFFF.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus.codec import encode_values, raw_to_registers
from protocols.modbus.config import MAX_BLOCK_REGISTERS, REGISTER_COUNT
from protocols.modbus.config import ModbusRtuDevice
from simulator.plant import DeviceInfo, PointInfo
from simulator.serial_line import PtyPair, SerialLineError

__all__ = ["MISSING_RAW", "EndpointError", "ModbusEndpoint"]

log = logging.getLogger(__name__)

MISSING_RAW: dict[str, float] = {
    "int16": -32768, "uint16": 0xFFFF, "int32": -(2**31), "uint32": 2**32 - 1,
    "float32": float("nan"), "float64": float("nan"),
}
"""The raw value served for a missing sample, per data type."""

_READ_TYPE = {3: "holding", 4: "input"}
_GAP_FILL = MAX_BLOCK_REGISTERS  # registers between points at most this far apart read as 0


class EndpointError(OSError):
    """A server could not listen on its endpoint."""

    def __init__(self, endpoint: str, reason: str) -> None:
        self.endpoint, self.reason = endpoint, reason
        super().__init__(f"cannot serve {endpoint}: {reason}")


@dataclass(frozen=True, slots=True)
class _Region:
    """The registers of one register type of one unit: addresses [start, start + span) at image[base:]."""

    start: int
    span: int
    base: int


@dataclass(frozen=True, slots=True)
class _Group:
    """Points of one encoding, encoded together: plant indices -> (n, count) image positions."""

    data_type: str
    byte_order: str
    word_order: str
    points: np.ndarray
    scale: np.ndarray
    offset: np.ndarray
    positions: np.ndarray
    missing: np.ndarray  # the registers of one missing sample, shape (count,)


class ModbusEndpoint:
    """A Modbus server for the devices at one endpoint; ``write()`` updates what it serves.

    Modbus TCP at (host, port); or, when ``host`` is ``"rtu"``, Modbus RTU on a virtual serial line
    (:class:`simulator.serial_line.PtyPair`) whose edge end is the path ``port``.
    """

    def __init__(self, host: str, port: int | str, devices: Sequence[DeviceInfo], points: Sequence[PointInfo]) -> None:
        self.host, self.port = host, port
        self.serial = host == "rtu"
        self._line: PtyPair | None = None
        self.silent_units: set[int] = set()  # units that have stopped answering (scenario faults)
        self.devices = tuple(devices)
        self._regions: dict[tuple[int, str], _Region] = {}
        total = 0
        for d in self.devices:
            for rtype in ("holding", "input"):
                mine = [p.point for p in points if p.device is d and p.point.register_type == rtype]
                if mine:
                    start = min(p.address for p in mine)
                    span = max(p.address + p.count for p in mine) - start
                    self._regions[(d.device.unit_id, rtype)] = _Region(start, span, total)
                    total += span
        self._image = np.zeros(total, dtype=np.uint16)
        self._groups = self._plan_groups([p for p in points if p.device in self.devices])
        self._server: ModbusTcpServer | None = None

    @property
    def endpoint(self) -> str:
        return f"modbus_rtu {self.port}" if self.serial else f"modbus_tcp {self.host}:{self.port}"

    def describe(self) -> str:
        """One line: ``modbus_tcp 127.0.0.1:15020 units 1,2,3 (NAIROBI-S1: BUS-220, FEEDER-F12, TR-04)``."""
        units = ",".join(str(d.device.unit_id) for d in self.devices)
        by_substation: dict[str, list[str]] = {}
        for d in self.devices:
            by_substation.setdefault(d.substation, []).append(d.id)
        names = "; ".join(f"{s}: {', '.join(ids)}" for s, ids in by_substation.items())
        return f"{self.endpoint} units {units} ({names})"

    # -- register image -------------------------------------------------------------------------

    def _plan_groups(self, points: Sequence[PointInfo]) -> list[_Group]:
        keyed: dict[tuple[str, str, str], list[PointInfo]] = {}
        for p in points:
            keyed.setdefault((p.point.data_type, p.point.byte_order, p.point.word_order), []).append(p)
        groups = []
        for (dtype, bo, wo), members in keyed.items():
            first = np.array([self._position(p) for p in members], dtype=np.int64)
            groups.append(_Group(
                dtype, bo, wo,
                points=np.array([p.index for p in members], dtype=np.int64),
                scale=np.array([p.point.scale for p in members]),
                offset=np.array([p.point.offset for p in members]),
                positions=first[:, None] + np.arange(REGISTER_COUNT[dtype])[None, :],
                missing=raw_to_registers(np.array([MISSING_RAW[dtype]]), dtype, bo, wo)[0],
            ))
        return groups

    def _position(self, p: PointInfo) -> int:
        region = self._regions[(p.device.device.unit_id, p.point.register_type)]
        return region.base + p.point.address - region.start

    def write(self, values: np.ndarray) -> None:
        """Encode the plant's values (NaN = missing) into the registers served from now on."""
        for g in self._groups:
            v = values[g.points]
            regs, _overflow = encode_values((v - g.offset) / g.scale, g.data_type, g.byte_order, g.word_order)
            missing = ~np.isfinite(v)
            if missing.any():
                regs[missing] = g.missing
            self._image[g.positions] = regs

    def registers(self, unit_id: int, register_type: str, address: int, count: int) -> list[int]:
        """What a read of ``count`` registers from ``address`` returns (for tests and debugging)."""
        region = self._regions[(unit_id, register_type)]
        lo = region.base + address - region.start
        return self._image[lo:lo + count].tolist()

    # -- pymodbus -------------------------------------------------------------------------------

    def _sim_devices(self) -> list[SimDevice]:
        devices = [self._sim_device(d.device.unit_id) for d in self.devices]
        # A TCP gateway answers for units it does not know (exception 11); on a serial line an
        # absent unit is silent, as on a real RS-485 bus.
        if all(d.device.unit_id != 0 for d in self.devices):
            devices.append(self._unknown_units())
        return devices

    def _blocks(self, unit_id: int, rtype: str) -> list[SimData]:
        """SimData runs covering the unit's points (gaps up to _GAP_FILL filled), or a placeholder."""
        region = self._regions.get((unit_id, rtype))
        if region is None:
            return [SimData(0, datatype=DataType.REGISTERS)]  # refused in _on_request
        device = next(d.device for d in self.devices if d.device.unit_id == unit_id)
        used = sorted((p.address, p.address + p.count) for p in device.points if p.register_type == rtype)
        runs: list[list[int]] = []
        for lo, hi in used:
            if runs and lo - runs[-1][1] <= _GAP_FILL:
                runs[-1][1] = max(runs[-1][1], hi)
            else:
                runs.append([lo, hi])
        return [SimData(lo, count=hi - lo, datatype=DataType.REGISTERS) for lo, hi in runs]

    def _sim_device(self, unit_id: int) -> SimDevice:
        bits = [SimData(0, datatype=DataType.BITS, values=False)]
        return SimDevice(
            id=unit_id,
            simdata=(bits, list(bits), self._blocks(unit_id, "holding"), self._blocks(unit_id, "input")),
            action=functools.partial(self._on_request, unit_id),
        )

    def _unknown_units(self) -> SimDevice:
        """Unit 0 is pymodbus's catch-all: every request to an unknown unit ends up here."""
        everything = [SimData(0, count=65536, datatype=DataType.REGISTERS)]
        bits = [SimData(0, datatype=DataType.BITS, values=False)]
        action = _silent_unit if self.serial else _no_such_unit
        return SimDevice(id=0, simdata=(bits, list(bits), everything, list(everything)), action=action)

    async def _on_request(
        self, unit_id: int, function_code: int, start_address: int, address: int, count: int,
        registers: list[int], set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus action: copy the current image into the block it is about to answer from."""
        if unit_id in self.silent_units:
            if self.serial:
                raise NoSuchIdException(f"unit {unit_id} is stopped")  # silent, as on a real line
            return ExcCodes.GATEWAY_NO_RESPONSE  # what a gateway says for a unit that is gone
        rtype = _READ_TYPE.get(function_code)
        if set_values is not None or rtype is None:
            return ExcCodes.ILLEGAL_FUNCTION
        region = self._regions.get((unit_id, rtype))
        if region is None:
            return ExcCodes.ILLEGAL_ADDRESS
        offset = address - start_address
        lo = region.base + address - region.start
        registers[offset:offset + count] = self._image[lo:lo + count].tolist()
        return None

    async def start(self) -> None:
        """Listen. Raises :class:`EndpointError` naming the endpoint if it cannot."""
        if self.serial:
            await self._start_serial()
        else:
            server = ModbusTcpServer(self._sim_devices(), address=(self.host, self.port))
            try:
                await server.serve_forever(background=True)
            except RuntimeError as exc:
                raise EndpointError(self.endpoint, _bind_failure(self.host, int(self.port))) from exc
            self._server = server
        log.info("serving %s", self.describe())

    async def _start_serial(self) -> None:
        dev = self.devices[0].device
        assert isinstance(dev, ModbusRtuDevice)
        line = PtyPair(str(self.port))
        try:
            await line.start()
        except SerialLineError as exc:
            raise EndpointError(self.endpoint, str(exc)) from exc
        self._line = line
        server = ModbusSerialServer(
            self._sim_devices(), port=str(line.sim_path), baudrate=dev.baudrate, parity=dev.parity,
            stopbits=dev.stopbits, bytesize=dev.bytesize, ignore_missing_devices=True,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            await line.stop()
            raise EndpointError(self.endpoint, f"cannot open {line.sim_path}: {exc}") from exc
        self._server = server

    @property
    def running(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()
            await asyncio.sleep(0)  # let the closed transports finish
        if self._line is not None:
            line, self._line = self._line, None
            await line.stop()


async def _no_such_unit(*_args: object) -> ExcCodes:
    return ExcCodes.GATEWAY_NO_RESPONSE


async def _silent_unit(*_args: object) -> None:
    """pymodbus (3.16) answers with exception 4 for a unit no SimDevice has; raising
    NoSuchIdException from the catch-all makes a server with ignore_missing_devices stay silent."""
    raise NoSuchIdException("no such unit on this line")


def _bind_failure(host: str, port: int) -> str:
    """Why (host, port) cannot be bound: pymodbus only logs it, so ask the OS once more."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve host: {exc}"
    family, _type, _proto, _name, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "address already in use (is another simulator or device running there?)"
            return exc.strerror or str(exc)
    return "listen failed"
