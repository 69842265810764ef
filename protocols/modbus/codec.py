"""Pure register <-> value conversion for Modbus points, vectorised with numpy.

Wire convention: a register is 16 bits, sent high byte first. ``byte_order = "little"`` means a
device that swaps the two bytes inside each register; ``word_order = "little"`` means the register
holding the least significant word of a 32/64-bit value comes first ("word swap").

``value = raw * scale + offset``; encoding is the inverse (rounded and clipped for integer types,
with the overflow flag set where clipping happened; a finite value beyond a float type's range is
sent as infinity, also flagged). An integer point whose raw value is SunSpec's "not available"
marker (:data:`NOT_AVAILABLE`) decodes as NaN with the INVALID flag, and so does any value that is
not finite (NaN or infinity sent by the device, or beyond float64 once scaled).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protocols.modbus.config import BIT_TYPES, MAX_BLOCK_BITS, REGISTER_COUNT, ModbusPoint
from protocols.reading import QualityFlag

NOT_AVAILABLE = {"int16": -0x8000, "uint16": 0xFFFF, "int32": -0x80000000, "uint32": 0xFFFFFFFF}
"""SunSpec's raw "not implemented / not available" markers per integer type."""

_DTYPE = {
    "int16": np.dtype(">i2"),
    "uint16": np.dtype(">u2"),
    "int32": np.dtype(">i4"),
    "uint32": np.dtype(">u4"),
    "float32": np.dtype(">f4"),
    "float64": np.dtype(">f8"),
}


def _swap_bytes(regs: np.ndarray) -> np.ndarray:
    return ((regs >> 8) | (regs << 8)).astype(np.uint16)


def registers_to_raw(regs: np.ndarray, data_type: str, byte_order: str = "big", word_order: str = "big") -> np.ndarray:
    """Registers of shape (n, count) as received -> n raw values (float64, unscaled).

    For ``bool`` (coils, discrete inputs) each "register" is one bit, 0 or 1.
    """
    if data_type == "bool":
        return (np.asarray(regs).reshape(-1) != 0).astype(np.float64)
    regs = np.asarray(regs, dtype=np.uint16).reshape(-1, REGISTER_COUNT[data_type])
    if word_order == "little":
        regs = regs[:, ::-1]
    if byte_order == "little":
        regs = _swap_bytes(regs)
    raw = np.ascontiguousarray(regs).astype(">u2").tobytes()
    return np.frombuffer(raw, dtype=_DTYPE[data_type]).astype(np.float64)


def raw_to_registers(raw: np.ndarray, data_type: str, byte_order: str = "big", word_order: str = "big") -> np.ndarray:
    """n raw values (already in range for the type) -> registers of shape (n, count) to send."""
    dt = _DTYPE[data_type]
    count = REGISTER_COUNT[data_type]
    typed = np.asarray(raw).astype(dt)
    regs = np.frombuffer(typed.tobytes(), dtype=">u2").astype(np.uint16).reshape(-1, count)
    if byte_order == "little":
        regs = _swap_bytes(regs)
    if word_order == "little":
        regs = regs[:, ::-1]
    return np.ascontiguousarray(regs)


def encode_values(
    values: np.ndarray, data_type: str, byte_order: str = "big", word_order: str = "big",
    scale: float = 1.0, offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Engineering values -> (registers (n, count), overflow mask). ``bool``: bits (n, 1), nonzero is 1."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # flagged below, not warned about
        raw = (values - offset) / scale
        if data_type == "bool":
            return (np.nan_to_num(raw) != 0).astype(np.uint16).reshape(-1, 1), ~np.isfinite(raw)
        if data_type.startswith(("int", "uint")):
            info = np.iinfo(_DTYPE[data_type])
            finite = np.isfinite(raw)
            rounded = np.where(finite, np.rint(raw), 0.0)
            overflow = ~finite | (rounded < info.min) | (rounded > info.max)
            raw = np.clip(rounded, info.min, info.max)
        else:  # NaN and infinity are sent as such; a finite value that does not fit becomes infinity
            raw = raw.astype(_DTYPE[data_type])
            overflow = np.isfinite(values) & ~np.isfinite(raw)
        return raw_to_registers(raw, data_type, byte_order, word_order), overflow


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers of ``register_type`` from ``start``."""

    register_type: str
    start: int
    count: int
    points: tuple[int, ...]  # indices into the device's point list


def plan_blocks(points: Sequence[ModbusPoint], max_block: int = 125, max_gap: int = 0) -> list[Block]:
    """Coalesce points into as few block reads as possible.

    Points of one register type whose registers are at most ``max_gap`` apart share a read, as long
    as the read stays within ``max_block`` registers (coils and discrete inputs: 2,000 bits).
    """
    blocks: list[Block] = []
    by_type: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        by_type.setdefault(p.register_type, []).append(i)
    for rtype in sorted(by_type):
        idx = sorted(by_type[rtype], key=lambda i: points[i].address)
        limit = MAX_BLOCK_BITS if rtype in BIT_TYPES else max_block
        start = end = -1
        members: list[int] = []
        for i in idx:
            p = points[i]
            p_end = p.address + p.count  # exclusive
            if members and p.address - end <= max_gap and p_end - start <= limit:
                end = max(end, p_end)
                members.append(i)
                continue
            if members:
                blocks.append(Block(rtype, start, end - start, tuple(members)))
            start, end, members = p.address, p_end, [i]
        if members:
            blocks.append(Block(rtype, start, end - start, tuple(members)))
    return blocks


class DeviceCodec:
    """Decodes the registers of a device's blocks into its points' values, all points at once."""

    def __init__(self, points: Sequence[ModbusPoint], blocks: Sequence[Block]) -> None:
        self.points = list(points)
        self.blocks = list(blocks)
        base: list[int] = []  # offset of each block in the concatenated register array
        total = 0
        for b in self.blocks:
            base.append(total)
            total += b.count
        self.total_registers = total
        position = np.zeros(len(self.points), dtype=np.int64)
        for b, off in zip(self.blocks, base):
            for i in b.points:
                position[i] = off + self.points[i].address - b.start
        groups: dict[tuple[str, str, str], list[int]] = {}
        for i, p in enumerate(self.points):
            groups.setdefault((p.data_type, p.byte_order, p.word_order), []).append(i)
        self._groups = []
        for (dtype, bo, wo), members in groups.items():
            m = np.asarray(members, dtype=np.int64)
            gather = position[m][:, None] + np.arange(REGISTER_COUNT[dtype])[None, :]
            self._groups.append((dtype, bo, wo, m, gather))
        self.scale = np.array([p.scale for p in self.points], dtype=np.float64)
        self.offset = np.array([p.offset for p in self.points], dtype=np.float64)
        self.na_raw = np.array(
            [NOT_AVAILABLE.get(p.data_type, np.nan) if p.not_available_marker else np.nan for p in self.points]
        )

    def decode(self, block_registers: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Registers of each block, in block order -> (values float64, QualityFlag bits int64)."""
        regs = np.concatenate([np.asarray(r, dtype=np.uint16) for r in block_registers])
        if regs.size != self.total_registers:
            raise ValueError(f"expected {self.total_registers} registers, got {regs.size}")
        raw = np.empty(len(self.points), dtype=np.float64)
        for dtype, bo, wo, members, gather in self._groups:
            raw[members] = registers_to_raw(regs[gather], dtype, bo, wo)
        # a scaled value beyond float64 is infinite, a signalling NaN quiet: flagged invalid below
        with np.errstate(over="ignore", invalid="ignore"):
            values = raw * self.scale + self.offset
        values[raw == self.na_raw] = np.nan
        flags = np.where(np.isfinite(values), 0, int(QualityFlag.INVALID)).astype(np.int64)
        return values, flags
