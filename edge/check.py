"""``sentinel edge check``: read every configured point once and say what works and what does not."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from protocols.config import FirmwareConfig
from protocols.drivers import SourceFactory
from protocols.reading import QualityFlag, quality_class
from protocols.sources import PolledSource, SourceError


@dataclass(frozen=True, slots=True)
class PointCheck:
    device_id: str
    endpoint: str
    metric: str
    value: float | None
    unit: str
    quality: str  # good | uncertain | bad
    latency_ms: float | None
    error: str  # empty when the point was read

    @property
    def ok(self) -> bool:
        return not self.error


async def _check_source(source, wait_s: float) -> list[PointCheck]:  # noqa: ANN001 - Polled or Pushed
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
    except SourceError as exc:
        error = exc.reason
    except TimeoutError:
        error = f"no message within {wait_s:g} s"
    latency = (time.perf_counter() - started) * 1000
    out = []
    for i, p in enumerate(source.points):
        v = float(values[i]) if seen[i] and np.isfinite(values[i]) else None
        f = int(flags[i])
        why = error or ("" if seen[i] else f"no value within {wait_s:g} s")
        if not why and f & (QualityFlag.INVALID | QualityFlag.COMM_LOST):
            why = "bad quality: " + ", ".join(QualityFlag.names(f))
        q = "bad" if why else quality_class(1.0 if f == 0 else 0.5, f).value
        out.append(PointCheck(source.device_id, source.endpoint, p.metric, v, p.unit, q,
                              None if error else round(latency, 1), why))
    return out


async def check_devices(config: FirmwareConfig, wait_s: float = 5.0) -> list[PointCheck]:
    """Connect to every device, read every point once (devices on one bus one after another)."""
    factory = SourceFactory(config.identity.edge_id)
    sources = [s for dev in config.devices for s in factory.create(dev)]
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
        rows.append((c.device_id, c.metric, value, c.quality, latency, c.error))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else "") for r in rows]
    failed = sum(not c.ok for c in checks)
    lines.append(f"{len(checks) - failed}/{len(checks)} points read" + (f"; {failed} failed" if failed else ""))
    return "\n".join(line.rstrip() for line in lines)
