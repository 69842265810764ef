"""The best maintenance window: the lowest-load contiguous period of a load forecast.

A sliding sum over the forecast (cumulative sums, one pass) gives every window's total load; windows
that contain a missing value or a gap in the timestamps are excluded; the first window with the
lowest total wins (the earliest, when several tie).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

import msgspec
import numpy as np

__all__ = ["MaintenanceWindow", "best_window", "to_datetime64"]


class MaintenanceWindow(msgspec.Struct, frozen=True, kw_only=True):
    start: datetime  # UTC
    end: datetime  # start + the required duration
    mean_load: float  # mean forecast load over the window, in the forecast's unit


def to_datetime64(timestamps: Sequence[datetime] | np.ndarray) -> np.ndarray:
    """Timestamps as datetime64[us] UTC. Aware datetimes are converted to UTC; naive ones are taken
    as UTC; a datetime64 array is taken as it is."""
    arr = np.asarray(timestamps)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[us]")
    out = [(t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t) for t in timestamps]
    return np.array(out, dtype="datetime64[us]")


def _to_datetime(t: np.datetime64) -> datetime:
    us = int(t.astype("datetime64[us]").astype(np.int64))
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)


def best_window(
    timestamps: Sequence[datetime] | np.ndarray,
    load: Sequence[float] | np.ndarray,
    duration_hours: float,
    earliest: datetime | None = None,
    latest_start: datetime | None = None,
) -> MaintenanceWindow | None:
    """The lowest-load period of ``duration_hours`` in a regularly sampled forecast (each value is the
    load of the interval starting at its timestamp). ``earliest`` / ``latest_start`` bound the window's
    start. None when no window fits."""
    ts = to_datetime64(timestamps)
    y = np.asarray(load, dtype=np.float64)
    if ts.size != y.size:
        raise ValueError(f"{ts.size} timestamps for {y.size} load values")
    if ts.size < 2 or duration_hours <= 0:
        return None
    order = np.argsort(ts, kind="stable")
    ts, y = ts[order], y[order]
    step_us = np.diff(ts).astype(np.int64)
    step = int(np.median(step_us))
    if step <= 0:
        return None
    n = int(np.ceil(round(duration_hours * 3.6e9 / step, 9)))
    if n > y.size:
        return None
    bad = ~np.isfinite(y)
    csum = np.concatenate(([0.0], np.cumsum(np.where(bad, 0.0, y))))
    cbad = np.concatenate(([0], np.cumsum(bad)))
    totals = csum[n:] - csum[:-n]
    ok = (cbad[n:] - cbad[:-n]) == 0
    # the window's samples must be evenly spaced: last minus first is (n - 1) steps
    ok &= (ts[n - 1:] - ts[: ts.size - n + 1]).astype(np.int64) == (n - 1) * step
    starts = ts[: ts.size - n + 1]
    if earliest is not None:
        ok &= starts >= to_datetime64([earliest])[0]
    if latest_start is not None:
        ok &= starts <= to_datetime64([latest_start])[0]
    if not ok.any():
        return None
    i = int(np.argmin(np.where(ok, totals, np.inf)))
    start = _to_datetime(starts[i])
    return MaintenanceWindow(start=start, end=start + timedelta(hours=duration_hours), mean_load=float(totals[i] / n))
