"""``sentinel edge check``: read every configured point once and say what works and what does not.

A commissioning check runs beside a live daemon and must do it no harm:

- **MQTT**: its own client id (``<edge_id>-check-<random>``) and a clean session, never the
  daemon's: the broker would drop the running daemon for a second connection with its client id,
  and a check resuming the daemon's persistent session would consume the QoS 1 messages queued for
  it. It subscribes and listens; it never publishes.
- **Modbus, OPC-UA**: reads only (OPC-UA in a session of its own).

Per point it reports what it got within ``--wait`` (a timeout fails only the points that got
nothing), each failed point on its own (a Modbus block read answered with an exception is read
again point by point, so a bad address fails its point, not its neighbours), connection errors
with host, port and unit, and values that are possible but implausible for the point's unit and
nominal (:mod:`edge.plausibility`) as ``suspect``, with the likely fix (for a 32/64-bit Modbus
value: the word/byte order that reads a plausible value).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from dataclasses import dataclass

import msgspec
import numpy as np

from edge.plausibility import Verdict, assess
from protocols.config import Device, FirmwareConfig
from protocols.drivers import SourceFactory
from protocols.modbus.codec import Block, DeviceCodec, registers_to_raw
from protocols.modbus.config import ModbusPoint, ModbusTcpDevice
from protocols.modbus.source import ModbusSource
from protocols.mqtt.config import MqttDevice
from protocols.reading import QualityFlag, quality_class
from protocols.sources import PolledSource, PushedSource, SourceConnectError, SourceError, SourceReadError

__all__ = ["PointCheck", "check_devices", "check_client_id", "format_table"]

_ORDERS = (("big", "big"), ("big", "little"), ("little", "big"), ("little", "little"))


@dataclass(frozen=True, slots=True)
class PointCheck:
    """What the check got for one point: a value (``error`` empty) or why not; ``warning`` when
    the value was read but does not fit the point (quality ``suspect``)."""

    device_id: str
    endpoint: str
    metric: str
    value: float | None
    unit: str
    quality: str  # good | uncertain | suspect | bad
    latency_ms: float | None
    error: str  # empty when the point was read
    warning: str = ""  # the value was read but is implausible: why, and the likely fix

    @property
    def ok(self) -> bool:
        return not self.error


def check_client_id(edge_id: str) -> str:
    """An MQTT client id for a check: never the daemon's (``<edge_id>-<device>`` or configured)."""
    return f"{edge_id}-check-{secrets.token_hex(4)}"


def _for_check(device: Device, edge_id: str) -> Device:
    """The device as the check connects to it: MQTT with its own client id and a clean session."""
    if isinstance(device, MqttDevice):
        return msgspec.structs.replace(device, client_id=check_client_id(edge_id), clean_session=True)
    return device


Source = PolledSource | PushedSource


class _ExceptionAnswer(SourceReadError):
    """The device answered a read with a Modbus exception (it is there; the request is wrong)."""


def _where(source: Source) -> str:
    """Host, port and unit (or serial port, endpoint, broker) of a source, for connection errors."""
    dev = getattr(source, "device", None)
    if isinstance(dev, ModbusTcpDevice):
        return f"Modbus TCP {dev.host}:{dev.port} unit {dev.unit_id}"
    if dev is not None and hasattr(dev, "baudrate"):
        return f"Modbus RTU {dev.port} unit {dev.unit_id}"
    if isinstance(dev, MqttDevice):
        return f"MQTT broker {dev.host}:{dev.port}"
    return source.endpoint


def _connect_error(source: Source, exc: SourceError) -> str:
    where = _where(source)
    reason = exc.reason
    return reason if where in reason or source.endpoint in reason else f"{where}: {reason}"


# -- Modbus: block reads, point by point when a block is refused, raw registers kept ------------

async def _request(src: ModbusSource, block: Block) -> list[int]:
    """The registers of ``block``; :class:`_ExceptionAnswer` for an exception answer, SourceReadError
    for anything else that is not the answer."""
    from pymodbus.exceptions import ModbusException

    dev, conn = src.device, src.connection
    client = conn.client
    call = {"holding": client.read_holding_registers, "input": client.read_input_registers,
            "coil": client.read_coils, "discrete": client.read_discrete_inputs}[block.register_type]
    await conn.ensure_connected(dev.id, dev.timeout_s)
    try:
        rr = await conn.request(call(block.start, count=block.count, device_id=dev.unit_id), dev.timeout_s)
    except TimeoutError as exc:
        reason = conn.timeout_reason(dev.timeout_s)
        conn.after_timeout()
        raise SourceReadError(dev.id, src.endpoint, reason) from exc
    except (ModbusException, OSError) as exc:
        conn.close()
        raise SourceReadError(dev.id, src.endpoint, str(exc) or type(exc).__name__) from exc
    try:
        return src._check(block, rr)
    except SourceReadError as exc:
        if rr.isError():
            raise _ExceptionAnswer(exc.device_id, exc.endpoint, exc.reason) from exc
        raise


async def _read_modbus(src: ModbusSource) -> tuple[list[list[int] | None], list[str]]:
    """Per point: its registers (None if not read) and why not. Raises SourceConnectError."""
    n = len(src.points)
    regs: list[list[int] | None] = [None] * n
    errors = [""] * n
    pts = src.model_points
    async with src.connection.lock:
        for block in src.blocks:
            try:
                got = await _request(src, block)
            except SourceReadError as exc:
                if not isinstance(exc, _ExceptionAnswer) or len(block.points) == 1:
                    for i in block.points:
                        errors[i] = exc.reason
                    continue
                for i in block.points:  # which address is it? each point on its own
                    p = pts[i]
                    try:
                        regs[i] = await _request(src, Block(block.register_type, p.address, p.count, (i,)))
                    except SourceReadError as one:
                        errors[i] = one.reason
                continue
            for i in block.points:
                off = pts[i].address - block.start
                regs[i] = got[off:off + pts[i].count]
    return regs, errors


def _decode_one(point: ModbusPoint, registers: list[int]) -> tuple[float, int]:
    """One point's value and flags from its own registers, as the driver's codec decodes them."""
    codec = DeviceCodec([point], [Block(point.register_type, point.address, point.count, (0,))])
    values, flags = codec.decode([registers])
    return float(values[0]), int(flags[0])


def _convincing(p: ModbusPoint, value: float) -> bool:
    """A value another byte/word order gives is worth suggesting: plausible, and not merely "near
    zero" (a swapped float is often a tiny number, which would pass as a de-energised point)."""
    if not math.isfinite(value) or not assess(p.metric, p.unit, p.nominal, value).ok:
        return False
    if p.nominal:
        return 0.02 <= abs(value) / p.nominal <= 50
    return value == 0 or abs(value) >= 1e-6


def _order_hint(p: ModbusPoint, registers: list[int]) -> str:
    """The byte/word order under which ``registers`` read a convincing value, as a suggestion
    (the one closest to the nominal when several do); '' when none does."""
    if p.data_type == "bool":
        return ""
    orders = _ORDERS if p.count > 1 else (("big", "big"), ("little", "big"))
    best: tuple[float, str] | None = None
    for bo, wo in orders:
        if bo == p.byte_order and (wo == p.word_order or p.count == 1):
            continue
        raw = float(registers_to_raw(np.asarray([registers]), p.data_type, bo, wo)[0])
        value = raw * p.scale + p.offset
        if not _convincing(p, value):
            continue
        changes = [f"{k} = '{v}'" for k, v, cur in (("word_order", wo, p.word_order), ("byte_order", bo, p.byte_order))
                   if v != cur and not (k == "word_order" and p.count == 1)]
        text = f"looks like {' and '.join(changes)}: that reads {value:.4g} {p.unit}".rstrip()
        closeness = abs(math.log10(abs(value) / p.nominal)) if p.nominal and value else 0.0
        if best is None or closeness < best[0]:
            best = (closeness, text)
    return "" if best is None else best[1]


async def _check_modbus(src: ModbusSource) -> list[PointCheck]:
    started = time.perf_counter()
    try:
        regs, errors = await _read_modbus(src)
    except SourceConnectError as exc:
        why = _connect_error(src, exc)
        return [PointCheck(src.device_id, src.endpoint, p.metric, None, p.unit, "bad", None, why) for p in src.points]
    latency = round((time.perf_counter() - started) * 1000, 1)
    out = []
    for i, (p, mp) in enumerate(zip(src.points, src.model_points)):
        if regs[i] is None:
            where = f"{mp.register_type} register {mp.address}" if mp.register_type in ("holding", "input") else \
                f"{mp.register_type} {mp.address}"
            why = errors[i] if str(mp.address) in errors[i] else f"{errors[i]} ({where})"
            out.append(PointCheck(src.device_id, src.endpoint, p.metric, None, p.unit, "bad", latency, why))
            continue
        value, flag = _decode_one(mp, regs[i])
        verdict = assess(p.metric, p.unit, p.nominal, value) if not flag else Verdict("ok")
        hint = _order_hint(mp, regs[i]) if flag or not verdict.ok else ""
        if not verdict.ok and hint:
            verdict = Verdict(verdict.level, f"{verdict.message}; {hint}")
        elif flag and hint:
            verdict = Verdict("impossible", f"not a number as configured; {hint}")
        out.append(_point(src, i, value, flag, latency, "", verdict))
    return out


def _point(source: Source, i: int, value: float, flag: int, latency: float | None, error: str,
           verdict: Verdict) -> PointCheck:
    p = source.points[i]
    v = value if math.isfinite(value) else None
    why = error
    if not why and verdict.level == "impossible":
        why = verdict.message
    if not why and flag & (QualityFlag.INVALID | QualityFlag.COMM_LOST):
        why = "bad quality: " + ", ".join(QualityFlag.names(flag))
    warning = verdict.message if verdict.level == "suspect" and not why else ""
    if why:
        q = "bad"
    elif warning:
        q = "suspect"
    else:
        q = quality_class(1.0 if flag == 0 else 0.5, flag).value
    return PointCheck(source.device_id, source.endpoint, p.metric, v, p.unit, q, latency, why, warning)


# -- any other source ---------------------------------------------------------------------------

async def _check_source(source: Source, wait_s: float) -> list[PointCheck]:
    if isinstance(source, ModbusSource):
        return await _check_modbus(source)
    started = time.perf_counter()
    n = len(source.points)
    values = np.full(n, np.nan)
    flags = np.zeros(n, dtype=np.int64)
    seen = np.zeros(n, dtype=bool)
    error = ""
    try:
        if isinstance(source, PolledSource):
            values, flags = await source.read()
            seen[:] = True
        else:
            async with asyncio.timeout(wait_s):
                async for u in source.stream():
                    values[u.index], flags[u.index], seen[u.index] = u.values, u.flags, True
                    if seen.all():
                        break
    except SourceConnectError as exc:
        error = _connect_error(source, exc)
    except SourceError as exc:
        error = exc.reason
    except TimeoutError:
        pass  # the points that got nothing say so below; those that got a value keep it
    latency = round((time.perf_counter() - started) * 1000, 1)
    out = []
    for i, p in enumerate(source.points):
        if not seen[i]:
            why = error or f"no value within {wait_s:g} s"
            out.append(PointCheck(source.device_id, source.endpoint, p.metric, None, p.unit, "bad", None, why))
            continue
        value, flag = float(values[i]), int(flags[i])
        verdict = assess(p.metric, p.unit, p.nominal, value) if math.isfinite(value) else Verdict("ok")
        out.append(_point(source, i, value, flag, latency, "", verdict))
    return out


async def check_devices(config: FirmwareConfig, wait_s: float = 5.0) -> list[PointCheck]:
    """Connect to every device, read every point once (devices on one bus one after another)."""
    edge_id = config.identity.edge_id
    factory = SourceFactory(edge_id)
    sources = [s for dev in config.devices for s in factory.create(_for_check(dev, edge_id))]
    try:
        results = await asyncio.gather(*(_check_source(s, wait_s) for s in sources))
    finally:
        for s in sources:
            await s.close()
        await factory.aclose()
    return [r for rs in results for r in rs]


def format_table(checks: list[PointCheck]) -> str:
    rows = [("DEVICE", "POINT", "VALUE", "QUALITY", "LATENCY", "PROBLEM")]
    for c in checks:
        value = "-" if c.value is None else f"{c.value:.6g} {c.unit}".strip()
        latency = "-" if c.latency_ms is None else f"{c.latency_ms:.0f} ms"
        rows.append((c.device_id, c.metric, value, c.quality, latency, c.error or c.warning))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else "") for r in rows]
    failed = sum(not c.ok for c in checks)
    suspect = sum(bool(c.warning) for c in checks)
    lines.append(f"{len(checks) - failed}/{len(checks)} points read" + (f"; {failed} failed" if failed else "")
                 + (f"; {suspect} suspect (see PROBLEM)" if suspect else ""))
    return "\n".join(line.rstrip() for line in lines)
