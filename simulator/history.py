"""Simulated history: what the plant's points read over the days before now, from the same physics.

A hub that has just been installed has nothing to forecast from and no baselines; a demo should
not have to wait weeks for them. :func:`history_readings` plays :class:`GridPhysics` over the
``days`` before ``end`` at one sample per ``step_s`` (anomaly-free: no scenario) and returns the
readings the configs' points would have produced, stamped in UTC. The daily load curve follows
East Africa Time, as the live simulation does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import numpy as np

from protocols.config import FirmwareConfig
from protocols.reading import Reading
from simulator.physics import GridPhysics
from simulator.plant import Plant

__all__ = ["history_readings"]

EAST_AFRICA = timedelta(hours=3)
PROGRESS_STEPS = 50  # progress reported this many times over the physics, then once when done


def history_readings(configs: Sequence[FirmwareConfig], *, days: float, end: datetime, step_s: float = 600.0,
                     seed: int = 0, progress: Callable[[int, int], object] | None = None) -> list[Reading]:
    """Readings of every configured point at ``end - days``, ``+ step_s``, ... up to (not including)
    ``end``; ``end`` must be timezone-aware. ``seed`` must be the live simulation's (0 by default):
    it fixes each device's own character (phase unbalance, power factor, load scale, the
    substation's ambient), which a history of another seed would contradict.

    ``progress(done, total)``, if given, is called as the samples are computed (``total`` is the
    number of time steps; ``done == total`` once, when the readings are made)."""
    if end.tzinfo is None:
        raise ValueError("end must be timezone-aware")
    if not days > 0 or not step_s > 0:
        raise ValueError(f"days and step_s must be positive, got {days} and {step_s}")
    plant = Plant(configs)
    n = int(days * 86400 // step_s)
    start = end - timedelta(seconds=n * step_s)
    local = start + EAST_AFRICA
    start_hour = local.hour + local.minute / 60 + local.second / 3600
    physics = GridPhysics(plant, seed=seed, start_hour=start_hour, step_s=step_s)
    offsets = np.arange(n) * step_s
    # in chunks, in order (the physics carries state from one step to the next), to report progress
    chunk = max(1, -(-n // PROGRESS_STEPS))
    parts = []
    for lo in range(0, n, chunk):
        parts.append(physics.series(offsets[lo:lo + chunk]))
        if progress is not None and lo + chunk < n:
            progress(lo + chunk, n)
    values = np.concatenate(parts) if parts else np.empty((0, len(plant.points)))  # (n, points)
    stamps = [start + timedelta(seconds=float(s)) for s in offsets]
    out: list[Reading] = []
    for p in plant.points:
        column = values[:, p.index]
        if _is_integer(p.point):  # what the edge reads back from an integer register: whole steps
            column = np.round((column - p.point.offset) / p.point.scale) * p.point.scale + p.point.offset
        unit, sub, dev, metric = p.point.unit, p.device.substation, p.device.id, p.metric
        out.extend(Reading(ts=ts, substation=sub, device_id=dev, metric=metric, value=float(v), unit=unit)
                   for ts, v in zip(stamps, column, strict=True))
    if progress is not None:
        progress(n, n)
    return out


def _is_integer(point: object) -> bool:
    return str(getattr(point, "data_type", "float32")).startswith(("int", "uint"))
