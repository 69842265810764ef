"""Robust trends: Theil-Sen slope with Sen's confidence interval, and ISO 10816-style vibration zones.

The slope is the median of the slopes between every pair of samples (Theil 1950, Sen 1968): a
quarter of the samples can be outliers (a stuck sensor, a spike) without moving it. Its confidence
interval is Sen's distribution-free one: with N' pairwise slopes sorted and
``C = z_(1-alpha/2) sqrt(n (n-1) (2n+5) / 18)`` (the standard deviation of Kendall's S, no ties),
the bounds are the slopes of rank ``(N' - C)/2`` and ``(N' + C)/2 + 1`` (Gilbert 1987, section 16.5).
"""

from __future__ import annotations

from statistics import NormalDist

import msgspec
import numpy as np

__all__ = ["MAX_POINTS", "TrendFit", "theil_sen", "vibration_zone", "vibration_zones"]

MAX_POINTS = 600  # longer series are thinned evenly first: the pairwise slopes grow as n^2


class TrendFit(msgspec.Struct, frozen=True, kw_only=True):
    """A robust straight line through (t, y): y = intercept + slope t, with t in days."""

    slope_per_day: float
    slope_low: float  # confidence interval of the slope
    slope_high: float
    intercept: float
    n: int
    confidence_level: float
    t_last_days: float  # time of the latest sample
    level_now: float  # the fitted value at the latest sample: the level the trend starts from

    def hours_to_exceed(self, limit: float, slope_per_day: float | None = None) -> float:
        """Hours from the latest sample until the line rises to an upper ``limit``: 0 if it is there
        already, inf if it is not rising. ``slope_per_day`` replaces the fitted slope (a CI bound)."""
        s = self.slope_per_day if slope_per_day is None else slope_per_day
        if self.level_now >= limit:
            return 0.0
        if s <= 0:
            return float("inf")
        return 24.0 * (limit - self.level_now) / s


def theil_sen(t_days: np.ndarray, y: np.ndarray, confidence_level: float = 0.95,
              variance_inflation: float = 1.0) -> TrendFit | None:
    """Theil-Sen fit of y against t (days); NaNs dropped. None with fewer than 3 points or no time span.
    ``variance_inflation`` (>= 1) widens the interval for serially correlated samples: Var(S) times
    n/n_eff (Hamed and Rao 1998), e.g. (1 + rho1) / (1 - rho1) for an AR(1) residual."""
    t = np.asarray(t_days, dtype=np.float64)
    v = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(t) & np.isfinite(v)
    t, v = t[ok], v[ok]
    if t.size > MAX_POINTS:
        keep = np.unique(np.linspace(0, t.size - 1, MAX_POINTS).round().astype(np.int64))
        t, v = t[keep], v[keep]
    n = t.size
    if n < 3 or np.ptp(t) <= 0:
        return None
    i, j = np.triu_indices(n, k=1)
    dt = t[j] - t[i]
    pair = dt != 0
    slopes = np.sort((v[j] - v[i])[pair] / dt[pair])
    m = slopes.size
    slope = float(np.median(slopes))
    intercept = float(np.median(v - slope * t))
    z = NormalDist().inv_cdf(0.5 + confidence_level / 2.0)
    c = z * np.sqrt(n * (n - 1) * (2 * n + 5) / 18.0 * max(float(variance_inflation), 1.0))
    lo_rank = int(np.clip(np.floor((m - c) / 2.0), 1, m))  # 1-based ranks
    hi_rank = int(np.clip(np.ceil((m + c) / 2.0) + 1, 1, m))
    t_last = float(t.max())
    return TrendFit(slope_per_day=slope, slope_low=float(slopes[lo_rank - 1]), slope_high=float(slopes[hi_rank - 1]),
                    intercept=intercept, n=int(n), confidence_level=confidence_level, t_last_days=t_last,
                    level_now=intercept + slope * t_last)


def vibration_zones(rms_mm_s: np.ndarray, boundaries: tuple[float, float, float]) -> np.ndarray:
    """ISO 10816-style evaluation zones A/B/C/D for vibration velocity (mm/s RMS): A below the
    A/B boundary, D at or above the C/D boundary. Vectorised."""
    codes = np.searchsorted(np.asarray(boundaries, dtype=np.float64), np.asarray(rms_mm_s, dtype=np.float64),
                            side="right")
    return np.array(["A", "B", "C", "D"])[codes]


def vibration_zone(rms_mm_s: float, boundaries: tuple[float, float, float]) -> str:
    return str(vibration_zones(np.array([rms_mm_s]), boundaries)[0])
