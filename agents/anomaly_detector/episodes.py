"""Episodes of high edge scores, per sensor, vectorised over all sensors at once.

A reading is high when its score is at or above the threshold (a missing score never is). The high
readings of one sensor form one episode while the gap between consecutive ones is below
``gap_s``; a missing or low reading in between does not end it, a longer gap does. An episode:

- starts at its first high reading and ends at its last (a single reading: start == end);
- its peak is the highest score (the first reading with it, if several);
- its type is the most frequent type among its high readings; a tie goes to the peak reading's
  type when it is one of the tied, else to the first tied in the type vocabulary's order;
- ``scored_share``: of all the sensor's readings from start to end, the share that carries a score
  (how much of the episode the edge actually scored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Episodes", "find_episodes"]


@dataclass(frozen=True, slots=True)
class Episodes:
    """Episodes as arrays, ordered by sensor then start. Indices point into the input arrays."""

    sensor: np.ndarray  # int64
    first: np.ndarray  # int64: index of the first high reading
    last: np.ndarray  # int64: index of the last high reading
    peak_index: np.ndarray  # int64: index of the peak reading
    start: np.ndarray  # float64 epoch s
    end: np.ndarray
    peak: np.ndarray  # float64 score
    type_code: np.ndarray  # int64 into the caller's type vocabulary
    high_count: np.ndarray  # int64: high readings in the episode
    scored_share: np.ndarray  # float64

    def __len__(self) -> int:
        return int(self.sensor.size)


def find_episodes(sensor: np.ndarray, t: np.ndarray, score: np.ndarray, type_code: np.ndarray, n_types: int, *,
                  threshold: float, gap_s: float) -> Episodes:
    """Episodes of ``score >= threshold``. The arrays are all sensors' readings concatenated, grouped
    by sensor and in time order within each sensor; ``type_code`` are ints in ``0..n_types-1``."""
    sensor = np.asarray(sensor, dtype=np.int64)
    t = np.asarray(t, dtype=np.float64)
    score = np.asarray(score, dtype=np.float64)
    codes = np.asarray(type_code, dtype=np.int64)
    with np.errstate(invalid="ignore"):
        high = score >= threshold
    idx = np.flatnonzero(high)
    if idx.size == 0:
        e, f = np.empty(0, dtype=np.int64), np.empty(0)
        return Episodes(e, e, e, e, f, f, f, e, e, f)
    s, th, sc = sensor[idx], t[idx], score[idx]
    new = np.ones(idx.size, dtype=bool)
    new[1:] = (s[1:] != s[:-1]) | (np.diff(th) >= gap_s)
    seg = np.cumsum(new) - 1
    n_eps = int(seg[-1]) + 1
    heads = np.flatnonzero(new)
    tails = np.append(heads[1:], idx.size) - 1
    peak = np.maximum.reduceat(sc, heads)
    at_peak = np.flatnonzero(sc == peak[seg])
    _, first_at_peak = np.unique(seg[at_peak], return_index=True)
    peak_pos = at_peak[first_at_peak]
    counts = np.bincount(seg * n_types + codes[idx], minlength=n_eps * n_types).reshape(n_eps, n_types)
    most = counts.max(axis=1)
    peak_type = codes[idx[peak_pos]]
    mode = np.where(counts[np.arange(n_eps), peak_type] == most, peak_type, np.argmax(counts, axis=1))
    scored = np.concatenate(([0], np.cumsum(np.isfinite(score))))
    first, last = idx[heads], idx[tails]
    span = last - first + 1
    return Episodes(
        sensor=s[heads], first=first, last=last, peak_index=idx[peak_pos], start=th[heads], end=th[tails],
        peak=peak, type_code=mode.astype(np.int64), high_count=np.bincount(seg, minlength=n_eps),
        scored_share=(scored[last + 1] - scored[first]) / span,
    )
