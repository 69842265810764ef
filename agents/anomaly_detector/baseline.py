"""Hour-of-week baselines per sensor, in one vectorised pass, and robust z-scores against them.

Every sensor's history is concatenated (``sensor`` index, time, value); a sample's bucket is
``sensor * 168 + hour_of_week``. One sort by (bucket, value) puts each bucket's values in order,
and its median is read at the middle positions found from ``np.bincount`` of the buckets: no loop
over sensors, buckets or samples. The MAD is the same grouped median of ``|x - median|``.

- location: the bucket's median;
- scale: 1.4826 x MAD (a Gaussian's sigma); where the MAD is 0 (quantised or mostly constant
  values) 1.2533 x the mean absolute deviation from the median; 0 when every value is the same,
  and such a bucket is not trusted;
- floor: per sensor, the scale of its week-over-week differences (samples exactly one week apart,
  1.4826 x MAD of the differences / sqrt 2), from at least ``MIN_PAIRS`` pairs; 0 without them.
  A bucket holds few samples (30 days of hourly means: 4 or 5), and the MAD of so few, taken
  around their own median, is far too small half the time; the floor, pooled over every hour of
  the sensor's week, is the spread an hour's level really has from one week to the next;
- z = (x - location) / max(scale, floor), where the location is the bucket medians interpolated
  between the middles of the hours (:meth:`Baseline.at`): a value at the median is 0, one 3
  scales above it is 3.

Hour of week: 0 is Monday 00:00-01:00, 167 Sunday 23:00-24:00, in UTC shifted by the configured
offset (1970-01-01, epoch 0, was a Thursday: hour 72).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HOURS_PER_WEEK", "MAD_TO_SIGMA", "MEAN_ABS_TO_SIGMA", "MIN_PAIRS", "Baseline", "compute_baseline",
           "grouped_median", "hour_of_week", "week_over_week_scale"]

HOURS_PER_WEEK = 168
WEEK_S = 7 * 86_400
MIN_PAIRS = 8  # week-over-week pairs a sensor needs for its scale floor
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
    floor: np.ndarray  # (sensors,) float64: the week-over-week scale, 0 where unknown

    @property
    def effective_scale(self) -> np.ndarray:
        """``max(scale, floor)`` per bucket: what z-scores divide by (NaN where the bucket is empty)."""
        return np.maximum(self.scale, self.floor[:, None])

    def at(self, sensor: np.ndarray, t: np.ndarray, utc_offset_hours: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(location, scale, trusted)`` of each sample's baseline. A bucket's median stands for
        the middle of its hour; between the middles of two trusted buckets the location and the
        scale are interpolated linearly, so a series that climbs through the hour (temperatures in
        the morning) is not off its baseline at every hour's start and end. Next to a bucket that
        is not trusted, the sample's own bucket stands alone. ``trusted``: the own bucket is."""
        s = np.asarray(sensor, dtype=np.int64)
        pos = (np.asarray(t, dtype=np.float64) + utc_offset_hours * 3600.0) / 3600.0 - 0.5
        base = np.floor(pos)
        w = pos - base
        h0 = (base.astype(np.int64) + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK
        h1 = (h0 + 1) % HOURS_PER_WEEK
        own = np.where(w >= 0.5, h1, h0)
        eff = self.effective_scale
        ok0, ok1 = self.trusted[s, h0], self.trusted[s, h1]
        both = ok0 & ok1
        location = np.where(both, (1.0 - w) * self.median[s, h0] + w * self.median[s, h1], self.median[s, own])
        scale = np.where(both, (1.0 - w) * eff[s, h0] + w * eff[s, h1], eff[s, own])
        return location, scale, self.trusted[s, own]

    def z(self, sensor: np.ndarray, t: np.ndarray, values: np.ndarray, utc_offset_hours: float = 0.0) -> np.ndarray:
        """Robust z-score of each reading against its baseline (:meth:`at`); NaN where its bucket is
        not trusted."""
        location, scale, ok = self.at(sensor, t, utc_offset_hours)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.asarray(values, dtype=np.float64) - location) / scale
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
                    trusted=trusted.reshape(shape) & used[:, None],
                    floor=week_over_week_scale(s, t[take], x, n_sensors))


def week_over_week_scale(sensor: np.ndarray, t: np.ndarray, values: np.ndarray, n_sensors: int) -> np.ndarray:
    """Per sensor, 1.4826 x MAD / sqrt 2 of the differences between samples exactly one week apart
    (to the second); 0 for a sensor with fewer than ``MIN_PAIRS`` such pairs."""
    out = np.zeros(n_sensors)
    if sensor.size == 0:
        return out
    key = np.asarray(sensor, dtype=np.int64) * (1 << 40) + np.round(t).astype(np.int64)
    order = np.argsort(key, kind="stable")
    keys, x = key[order], values[order]
    j = np.searchsorted(keys, keys - WEEK_S)
    found = (j < keys.size) & (keys[np.minimum(j, keys.size - 1)] == keys - WEEK_S)
    d = x[found] - x[j[found]]
    s = keys[found] >> 40
    med, count = grouped_median(s, np.abs(d - grouped_median(s, d, n_sensors)[0][s]), n_sensors)
    ok = count >= MIN_PAIRS
    out[ok] = MAD_TO_SIGMA * med[ok] / np.sqrt(2.0)
    return out
