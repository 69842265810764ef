"""Modbus device and point configuration (part of the firmware config)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocols.points import Name, Seconds, check_finite

DataType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool"]
Order = Literal["big", "little"]
RegisterType = Literal["holding", "input", "coil", "discrete"]
BIT_TYPES = frozenset({"coil", "discrete"})

REGISTER_COUNT: dict[str, int] = {
    "bool": 1,  # one coil or discrete input
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
}
MAX_ADDRESS = 65535
MAX_BLOCK_REGISTERS = 125  # the most one Read Holding/Input Registers request may ask for
MAX_BLOCK_BITS = 2000  # the most one Read Coils/Discrete Inputs request may ask for



class ModbusPoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One value a device exposes in its register map."""

    metric: Name
    address: Annotated[int, msgspec.Meta(ge=0, le=MAX_ADDRESS)]  # 0-based protocol address
    unit: Annotated[str, msgspec.Meta(max_length=16)] = ""
    register_type: RegisterType = "holding"
    data_type: DataType = "float32"
    byte_order: Order = "big"  # order of the two bytes inside each register
    word_order: Order = "big"  # order of the registers of a 32/64-bit value
    scale: float = 1.0  # value = raw * scale + offset
    offset: float = 0.0
    nominal: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    limit_low: float | None = None  # absolute limits in the point's unit, beside the grid-code bands
    limit_high: float | None = None
    poll_interval_s: Seconds | None = None  # poll this point at its own rate (default: the device's)
    # Integer raw values equal to SunSpec's "not implemented" marker (int16 0x8000, uint16 0xFFFF,
    # int32 0x80000000, uint32 0xFFFFFFFF) mean "no value" and are flagged invalid. Set false for a
    # point where that raw value is a real reading.
    not_available_marker: bool = True

    def __post_init__(self) -> None:
        end = self.address + REGISTER_COUNT[self.data_type] - 1
        if end > MAX_ADDRESS:
            raise ValueError(
                f"address {self.address} with data_type {self.data_type} ends at register {end}, "
                f"beyond the last Modbus address {MAX_ADDRESS}"
            )
        check_finite(self, "scale", "offset", "nominal", "limit_low", "limit_high")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if (self.register_type in BIT_TYPES) != (self.data_type == "bool"):
            raise ValueError(
                f"register_type {self.register_type} goes with data_type "
                f"{'bool' if self.register_type in BIT_TYPES else 'int16/uint16/int32/uint32/float32/float64'}"
                f", not {self.data_type}"
            )
        if self.limit_low is not None and self.limit_high is not None and self.limit_low >= self.limit_high:
            raise ValueError(f"limit_low {self.limit_low} must be below limit_high {self.limit_high}")

    @property
    def count(self) -> int:
        return REGISTER_COUNT[self.data_type]


class _ModbusDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What every Modbus device has, whatever the transport."""

    id: Name
    unit_id: Annotated[int, msgspec.Meta(ge=0, le=255)] = 1
    poll_interval_s: Seconds = 1.0
    timeout_s: Seconds = 0.5
    max_block_registers: Annotated[int, msgspec.Meta(ge=1, le=MAX_BLOCK_REGISTERS)] = MAX_BLOCK_REGISTERS
    max_gap_registers: Annotated[int, msgspec.Meta(ge=0, le=MAX_BLOCK_REGISTERS)] = 0
    description: str = ""
    points: Annotated[list[ModbusPoint], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        fastest = min([self.poll_interval_s, *(p.poll_interval_s for p in self.points if p.poll_interval_s)])
        if self.timeout_s >= fastest:
            which = "poll_interval_s" if fastest == self.poll_interval_s else "the fastest point's poll_interval_s"
            raise ValueError(f"timeout_s ({self.timeout_s}) must be shorter than {which} ({fastest})")
        seen_metrics: set[str] = set()
        used: dict[tuple[str, int], str] = {}
        for i, point in enumerate(self.points):
            if point.metric in seen_metrics:
                raise ValueError(f"points[{i}].metric {point.metric!r} appears twice")
            seen_metrics.add(point.metric)
            for reg in range(point.address, point.address + point.count):
                other = used.get((point.register_type, reg))
                if other is not None:
                    raise ValueError(
                        f"points[{i}] ({point.metric}) overlaps {other} at {point.register_type} register {reg}"
                    )
                used[(point.register_type, reg)] = point.metric

    def point_groups(self) -> list[tuple[float, list[int]]]:
        """Point indices by poll interval, fastest first."""
        groups: dict[float, list[int]] = {}
        for i, p in enumerate(self.points):
            groups.setdefault(p.poll_interval_s or self.poll_interval_s, []).append(i)
        return sorted(groups.items())


class ModbusTcpDevice(_ModbusDevice, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="protocol", tag="modbus_tcp"):
    """A device (or a unit behind a gateway) reached over Modbus TCP."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 502


class ModbusRtuDevice(_ModbusDevice, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="protocol", tag="modbus_rtu"):
    """A unit on an RS-485 serial line (Modbus RTU). Units on one ``port`` share the line and its lock."""

    port: Annotated[str, msgspec.Meta(min_length=1)]  # e.g. /dev/ttyUSB0
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "E"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8


ModbusDevice = ModbusTcpDevice | ModbusRtuDevice
