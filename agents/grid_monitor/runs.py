"""Runs of a condition in a time series, vectorised: one ``np.diff`` over the padded boolean mask.

Shared by the IEEE 1159 classifier and every threshold check of the grid monitor, so an "event"
means the same thing everywhere:

- it is a run of consecutive samples where the condition holds (missing samples never hold);
- it starts at the timestamp of its first sample and ends at the timestamp of the sample that
  ended it (the first sample back inside, or the first missing sample), so a run of k samples
  taken every dt seconds lasts k * dt; a run still going at the end of the series ends at the
  last sample (its duration is then a lower bound) and is marked ``end_of_series``;
- durations are rounded to the microsecond, which removes float noise (0.19999999999999998 s)
  without hiding anything a 50 Hz half cycle (10 ms) could resolve.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np

__all__ = ["CLOSED_BY", "Runs", "find_runs", "run_extremes", "to_seconds", "utc"]

RECOVERY, MISSING, END_OF_SERIES = 0, 1, 2
CLOSED_BY = ("recovery", "missing", "end_of_series")


class Runs(NamedTuple):
    """Runs of True: ``first[k]`` is run k's first sample, ``stop[k]`` one past its last."""

    first: np.ndarray  # int64
    stop: np.ndarray  # int64, exclusive
    start_s: np.ndarray  # float64, relative seconds (as given to find_runs)
    end_s: np.ndarray
    duration_s: np.ndarray  # rounded to the microsecond
    closed_by: np.ndarray  # int8: RECOVERY / MISSING / END_OF_SERIES

    @property
    def samples(self) -> np.ndarray:
        return self.stop - self.first

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.first.size)


def find_runs(mask: np.ndarray, t: np.ndarray, valid: np.ndarray) -> Runs:
    """The runs of True in ``mask`` over sample times ``t`` (relative seconds, non-decreasing).

    ``valid`` tells a missing sample (False) from one where the condition simply does not hold;
    the caller must already have ``mask & valid``.
    """
    m = np.asarray(mask, dtype=bool)
    n = m.size
    edges = np.diff(np.concatenate(([False], m, [False])).astype(np.int8))
    first = np.flatnonzero(edges == 1)
    stop = np.flatnonzero(edges == -1)
    if n == 0 or first.size == 0:
        empty_f, empty_i = np.empty(0), np.empty(0, dtype=np.int64)
        return Runs(empty_i, empty_i, empty_f, empty_f, empty_f, np.empty(0, dtype=np.int8))
    ended = stop < n
    closer = np.minimum(stop, n - 1)
    start_s = t[first]
    end_s = t[closer]  # the sample that ended the run, or the last sample
    closed_by = np.where(ended, np.where(valid[closer], RECOVERY, MISSING), END_OF_SERIES).astype(np.int8)
    duration = np.round(end_s - start_s, 6)
    return Runs(first, stop, start_s, end_s, duration, closed_by)


def run_extremes(values: np.ndarray, runs: Runs, lowest: bool) -> np.ndarray:
    """The minimum (``lowest``) or maximum of ``values`` over each run, with one reduceat."""
    if len(runs) == 0:
        return np.empty(0)
    padded = np.append(values, 0.0)  # lets a run that reaches the last sample close at index n
    bounds = np.column_stack((runs.first, runs.stop)).ravel()
    ufunc = np.minimum if lowest else np.maximum
    return ufunc.reduceat(padded, bounds)[::2]


def to_seconds(timestamps: Any) -> tuple[np.ndarray, float]:
    """(seconds relative to the first sample, the first sample in epoch seconds).

    Accepts ``datetime64`` (read as UTC) or numbers (epoch seconds). Relative times keep full
    precision for durations; raises ValueError if the times go backwards.
    """
    ts = np.asarray(timestamps).reshape(-1)
    if ts.size == 0:
        return np.empty(0), 0.0
    if np.issubdtype(ts.dtype, np.datetime64):
        ns = ts.astype("datetime64[ns]").astype(np.int64)
        rel = (ns - ns[0]).astype(np.float64) / 1e9
        t0 = ns[0] / 1e9
    else:
        f = ts.astype(np.float64)
        rel, t0 = f - f[0], float(f[0])
    if not np.all(np.isfinite(rel)):
        raise ValueError("timestamps must all be finite")
    if np.any(np.diff(rel) < 0):
        raise ValueError("timestamps must be in non-decreasing order")
    return rel, float(t0)


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(round(float(epoch_s), 6), tz=UTC)
