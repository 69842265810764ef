"""Hour-of-week baselines per sensor, in one vectorised pass, and robust z-scores against them.

Every sensor's history is concatenated (``sensor`` index, time, value); a sample's bucket is
``sensor * 168 + hour_of_week``. One sort by (bucket, value) puts each bucket's values in order,
and its median is read at the middle positions found from ``np.bincount`` of the buckets: no loop
over sensors, buckets or samples. The MAD is the same grouped median of ``|x - median|``.

- location: the bucket's median;
- scale: 1.4826 x MAD (a Gaussian's sigma); where the MAD is 0 (quantised or mostly constant
  values) 1.2533 x the mean absolute deviation from the median; 0 when every value is the same,
  and such a bucket is not trusted;
- z = (x - median) / scale: a value at the median is 0, one 3 x 1.4826 x MAD above it is 3.

Hour of week: 0 is Monday 00:00-01:00, 167 Sunday 23:00-24:00, in UTC shifted by the configured
offset (1970-01-01, epoch 0, was a Thursday: hour 72).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HOURS_PER_WEEK", "MAD_TO_SIGMA", "MEAN_ABS_TO_SIGMA", "Baseline", "compute_baseline", "grouped_median",
           "hour_of_week"]

HOURS_PER_WEEK = 168
MAD_TO_SIGMA = 1.4826
MEAN_ABS_TO_SIGMA = 1.2533  # sqrt(pi / 2): mean absolute deviation of a Gaussian -> its sigma
DAY_S = 86_400.0
_EPOCH_HOUR_OF_WEEK = 72  # 1970-01-01 00:00 was Thursday


def hour_of_week(t: np.ndarray, utc_offset_hours: float = 0.0) -> np.ndarray:
    """Hour of week (0 = Monday 00:00) of epoch seconds ``t``, in local time ``UTC + offset``."""
    hours = np.floor_divide(np.asarray(t, dtype=np.float64) + utc_offset_hours * 3600.0, 3600.0)
    return (hours.astype(np.int64) + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK


def grouped_median(keys: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(median, count) of ``values`` per group ``keys`` (ints in 0..n_groups-1); NaN where empty.

    The median of an even count is the mean of the two middle values, as ``np.median`` has it.
    """
    keys = np.asarray(keys, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    count = np.bincount(keys, minlength=n_groups)
    median = np.full(n_groups, np.nan)
    if keys.size == 0:
        return median, count
    # sort by (key, value): the values' ranks, then one argsort of key * n + rank (3x faster than lexsort)
    by_value = np.argsort(values)
    rank = np.empty(values.size, dtype=np.int64)
    rank[by_value] = np.arange(values.size)
    x = values[np.argsort(keys * values.size + rank)]
    start = np.cumsum(count) - count
    has = count > 0
    lo = start[has] + (count[has] - 1) // 2
    hi = start[has] + count[has] // 2
    median[has] = (x[lo] + x[hi]) / 2.0
    return median, count


@dataclass(frozen=True, slots=True)
class Baseline:
    """One trailing window's baselines: arrays ``(sensors, 168)`` indexed by hour of week."""

    window_days: int
    end: float  # epoch s: the window is [end - window_days, end)
    used: np.ndarray  # (sensors,) bool: the history reaches back far enough for this window
    count: np.ndarray  # int64: samples in the bucket
    median: np.ndarray  # float64, NaN where empty
    mad: np.ndarray  # float64, the raw median absolute deviation
    scale: np.ndarray  # float64, sigma-equivalent (see the module's docstring)
    trusted: np.ndarray  # bool: used, at least min_count samples, scale > 0

    def z(self, sensor: np.ndarray, t: np.ndarray, values: np.ndarray, utc_offset_hours: float = 0.0) -> np.ndarray:
        """Robust z-score of each reading against its bucket; NaN where the bucket is not trusted."""
        how = hour_of_week(t, utc_offset_hours)
        s = np.asarray(sensor, dtype=np.int64)
        ok = self.trusted[s, how]
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.asarray(values, dtype=np.float64) - self.median[s, how]) / self.scale[s, how]
        return np.where(ok, z, np.nan)


def compute_baseline(sensor: np.ndarray, t: np.ndarray, values: np.ndarray, n_sensors: int, *, end: float,
                     window_days: int, min_count: int = 4, min_coverage: float = 0.9,
                     utc_offset_hours: float = 0.0) -> Baseline:
    """Median, MAD and scale per sensor and hour of week over ``[end - window_days, end)``.

    ``sensor``, ``t``, ``values``: the histories of all sensors concatenated (any order). Samples
    that are missing (NaN) or at or after ``end`` are left out. A sensor's window is ``used`` only
    when its earliest valid sample is at least ``min_coverage x window_days`` before ``end``;
    otherwise its buckets stay empty (the window is skipped).
    """
    sensor = np.asarray(sensor, dtype=np.int64)
    t = np.asarray(t, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values) & (t < end)
    first = np.full(n_sensors, np.inf)
    np.minimum.at(first, sensor[valid], t[valid])
    used = first <= end - window_days * DAY_S * min_coverage
    take = valid & (t >= end - window_days * DAY_S) & used[sensor]
    s, x = sensor[take], values[take]
    n_groups = n_sensors * HOURS_PER_WEEK
    keys = s * HOURS_PER_WEEK + hour_of_week(t[take], utc_offset_hours)
    median, count = grouped_median(keys, x, n_groups)
    deviation = np.abs(x - median[keys])
    mad, _ = grouped_median(keys, deviation, n_groups)
    mean_abs = np.bincount(keys, weights=deviation, minlength=n_groups) / np.maximum(count, 1)
    scale = np.where(mad > 0, MAD_TO_SIGMA * mad, MEAN_ABS_TO_SIGMA * mean_abs)
    scale = np.where(count > 0, scale, np.nan)
    shape = (n_sensors, HOURS_PER_WEEK)
    trusted = (count >= min_count) & (np.nan_to_num(scale) > 0)
    return Baseline(window_days=window_days, end=float(end), used=used, count=count.reshape(shape),
                    median=median.reshape(shape), mad=mad.reshape(shape), scale=scale.reshape(shape),
                    trusted=trusted.reshape(shape) & used[:, None])
