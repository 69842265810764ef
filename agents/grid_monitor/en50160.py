"""EN 50160 supply-voltage statistics from stored readings: pure, vectorised computation.

EN 50160 (voltage characteristics of electricity supplied by public networks), for LV and MV supply
under normal operating conditions:

- supply voltage variations: during each period of one week, 95 % of the 10-min mean r.m.s. values
  of the supply voltage within Un +-10 %, and all of them within Un +10 % / -15 %;
- power frequency (systems with a synchronous connection to an interconnected system): the mean
  over 10 s within 50 Hz +-1 % (49.5-50.5 Hz) during 99.5 % of a year, and within +4 % / -6 %
  (47-52 Hz) 100 % of the time;
- supply voltage unbalance: during each period of one week, 95 % of the 10-min mean r.m.s. values
  of the negative-sequence component within 0-2 % of the positive-sequence component.

What this module computes from readings that are not a class A power-quality instrument's:

- :func:`interval_means` aggregates readings (any order, repeated or irregular timestamps, gaps) to
  epoch-aligned intervals (10 min; 10 s for frequency): the mean (for voltage the r.m.s. of the
  readings, ``sqrt(mean(v^2))``) and the count. Timestamps are instants: numpy ``datetime64`` (UTC),
  time-zone-aware ``datetime`` objects, or epoch seconds; a naive ``datetime`` is refused (a local
  clock time is ambiguous across a daylight-saving change). Intervals are UTC, so a DST change moves
  nothing: the autumn night's two 01:30s are two different intervals.
- :func:`assess` holds per-interval means to a band over consecutive periods (weeks, years) from a
  start, and gives per period: the intervals the period holds, those with data, coverage, how many
  and what fraction of the measured intervals are in the band, how many are outside the outer limits,
  the lowest and highest means and the worst deviation from nominal, and a verdict:

  * ``non_compliant`` when the measured intervals already decide it whatever the missing ones held:
    any mean outside the outer limits (the 100 % criterion), or more intervals outside the band than
    the period allows in all (a week: 1008 intervals, 5 % of them, 50); or, with enough coverage,
    under the share (95 %) of the measured intervals in the band;
  * ``compliant`` with at least ``min_coverage`` of the period's intervals measured (default 0.9),
    the share of them in the band and none outside the outer limits;
  * ``insufficient_data`` otherwise (gaps, or a period only partly inside the range asked).

- :func:`voltage_weeks`, :func:`frequency_years` and :func:`unbalance_weeks` apply the standard's
  bands. Frequency: EN 50160 asks for 10-s means; readings sparser than that (a device polled every
  minute) are assessed at their own resolution (:func:`frequency_resolution_s`: the median spacing
  rounded up to 10, 15, 20, 30 s, 1, 2, 5 or 10 min), each interval's mean standing for it; the
  resolution used is in the answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np

__all__ = [
    "FREQUENCY_RESOLUTIONS_S",
    "IntervalMeans",
    "PeriodStatistics",
    "VERDICTS",
    "WEEK_S",
    "YEAR_S",
    "assess",
    "epoch_seconds",
    "frequency_resolution_s",
    "frequency_years",
    "interval_means",
    "summarise",
    "unbalance_weeks",
    "voltage_weeks",
]

TEN_MIN_S = 600
WEEK_S = 7 * 86_400
YEAR_S = 365 * 86_400
VERDICTS = ("compliant", "non_compliant", "insufficient_data")
FREQUENCY_RESOLUTIONS_S = (10, 15, 20, 30, 60, 120, 300, 600)
_MONDAY_EPOCH_S = 4 * 86_400  # 1970-01-05, a Monday


class IntervalMeans(msgspec.Struct, frozen=True):
    """Per epoch-aligned interval holding at least one reading: its start (epoch s), mean, count."""

    start_s: np.ndarray  # int64
    mean: np.ndarray  # float64
    count: np.ndarray  # int64


class PeriodStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """One period's (week's, year's) statistics; see the module's docstring for the verdict."""

    start: datetime
    end: datetime
    interval_s: int  # the interval each mean covers (600: 10-min means)
    intervals: int  # in the whole period
    intervals_in_range: int  # of them, inside the range asked (fewer for a period cut by it)
    intervals_with_data: int
    coverage: float  # intervals_with_data / intervals
    within_band: int  # measured intervals whose mean is in the band (Un +-10 %, 50 Hz +-1 %, <= 2 %)
    fraction_within: float | None  # within_band / intervals_with_data (None: no data)
    required_fraction: float  # 0.95 (voltage, unbalance), 0.995 (frequency)
    outside_limits: int  # measured intervals outside the outer limits (+10/-15 %, +4/-6 %)
    min: float | None
    max: float | None
    worst_deviation_pct: float | None  # the mean farthest from nominal, in % of it (None: no nominal)
    verdict: str  # one of VERDICTS
    reason: str


def epoch_seconds(ts: Any) -> np.ndarray:
    """Timestamps as float epoch seconds: ``datetime64`` (UTC), aware ``datetime`` objects, or
    numbers (epoch seconds). A naive ``datetime`` is a ValueError naming its position."""
    arr = np.asarray(ts)
    if arr.ndim != 1:
        raise ValueError(f"timestamps must be one-dimensional, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.datetime64):
        us = arr.astype("datetime64[us]")
        out = us.astype(np.int64).astype(np.float64) / 1e6
        out[np.isnat(us)] = np.nan
        return out
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    out = np.empty(arr.size, dtype=np.float64)
    for i, t in enumerate(arr.tolist()):
        if not isinstance(t, datetime):
            raise ValueError(f"timestamp {i} is {type(t).__name__} {t!r:.40}, not a datetime")
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError(f"timestamp {i} ({t.isoformat()}) has no time zone: a local clock time is ambiguous "
                             "across a daylight-saving change; give UTC or an offset")
        out[i] = t.timestamp()
    return out


def interval_means(ts: Any, values: Any, interval_s: int = TEN_MIN_S, *, rms: bool = False) -> IntervalMeans:
    """Readings to per-interval means over epoch-aligned UTC intervals of ``interval_s`` seconds, in
    any order; readings without a finite value or time are left out; intervals with none are absent.
    ``rms``: the r.m.s. of the readings (``sqrt(mean(v^2))``, IEC 61000-4-30's aggregation of r.m.s.
    values), else their arithmetic mean."""
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    t = epoch_seconds(ts)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != t.shape:
        raise ValueError(f"{t.size} timestamps for {v.size} values")
    ok = np.isfinite(t) & np.isfinite(v)
    k = np.floor(t[ok] / interval_s).astype(np.int64)
    keys, inverse, counts = np.unique(k, return_inverse=True, return_counts=True)
    x = v[ok] * v[ok] if rms else v[ok]
    mean = np.bincount(inverse, weights=x, minlength=keys.size) / np.maximum(counts, 1)
    return IntervalMeans(start_s=keys * interval_s, mean=np.sqrt(mean) if rms else mean, count=counts.astype(np.int64))


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def assess(
    means: IntervalMeans,
    *,
    interval_s: int,
    period_s: int,
    start_s: float,
    end_s: float,
    band: tuple[float, float],
    limits: tuple[float, float],
    required_fraction: float,
    nominal: float | None = None,
    min_coverage: float = 0.9,
) -> list[PeriodStatistics]:
    """Per period of ``period_s`` from ``start_s`` (the last may run past ``end_s``): the statistics
    of the interval means in [start_s, end_s) against ``band`` (low, high; inclusive) and the outer
    ``limits`` (low, high; inclusive; +-inf for none). Vectorised over intervals and periods."""
    if not end_s > start_s:
        raise ValueError(f"end ({_utc(end_s).isoformat()}) must be after start ({_utc(start_s).isoformat()})")
    if period_s % interval_s:
        raise ValueError(f"a period of {period_s} s is not a whole number of {interval_s}-s intervals")
    if not 0.0 <= min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be within 0..1, got {min_coverage}")
    n_periods = math.ceil((end_s - start_s) / period_s)
    per_period = period_s // interval_s
    s = means.start_s.astype(np.float64)
    inside = (s >= start_s) & (s < end_s)
    s, m = s[inside], means.mean[inside]
    p = np.floor((s - start_s) / period_s).astype(np.int64)
    tol = 1e-9 * max((abs(x) for x in (*band, *limits) if math.isfinite(x)), default=1.0)  # 0.9 * 230 != 207
    ok_band = (m >= band[0] - tol) & (m <= band[1] + tol)
    bad_limits = (m < limits[0] - tol) | (m > limits[1] + tol)
    with_data = np.bincount(p, minlength=n_periods)
    within = np.bincount(p, weights=ok_band, minlength=n_periods).astype(np.int64)
    outside = np.bincount(p, weights=bad_limits, minlength=n_periods).astype(np.int64)
    lo = np.full(n_periods, np.inf)
    hi = np.full(n_periods, -np.inf)
    np.minimum.at(lo, p, m)
    np.maximum.at(hi, p, m)
    allowed_out = math.floor((1.0 - required_fraction) * per_period + 1e-9)
    out = []
    for i in range(n_periods):
        p0 = start_s + i * period_s
        in_range = min(per_period, math.ceil((end_s - p0) / interval_s))
        n, w, o = int(with_data[i]), int(within[i]), int(outside[i])
        coverage = n / per_period
        frac = w / n if n else None
        if o:
            verdict, reason = "non_compliant", f"{o} interval mean(s) outside the limits {_pair(limits)}"
        elif n - w > allowed_out:
            verdict, reason = "non_compliant", (f"{n - w} interval means outside the band {_pair(band)}: more than "
                                                f"the {allowed_out} of {per_period} the period allows")
        elif coverage < min_coverage:
            verdict = "insufficient_data"
            reason = (f"{n} of {per_period} intervals measured (coverage {coverage:.1%} < {min_coverage:.0%})"
                      + ("; the period runs past the range asked" if in_range < per_period else ""))
        elif frac is not None and frac >= required_fraction:
            verdict, reason = "compliant", (f"{frac:.2%} of {n} measured intervals in the band {_pair(band)} "
                                            f"(>= {required_fraction:.1%}), none outside {_pair(limits)}")
        else:
            verdict, reason = "non_compliant", (f"{(frac or 0):.2%} of {n} measured intervals in the band "
                                                f"{_pair(band)} (< {required_fraction:.1%})")
        worst = None
        if n and nominal:
            d_hi, d_lo = hi[i] - nominal, lo[i] - nominal
            worst = float((d_hi if abs(d_hi) >= abs(d_lo) else d_lo) / nominal * 100.0)
        out.append(PeriodStatistics(
            start=_utc(p0), end=_utc(p0 + period_s), interval_s=int(interval_s), intervals=int(per_period),
            intervals_in_range=int(in_range), intervals_with_data=n, coverage=round(coverage, 6), within_band=w,
            fraction_within=None if frac is None else round(frac, 6), required_fraction=required_fraction,
            outside_limits=o, min=float(lo[i]) if n else None, max=float(hi[i]) if n else None,
            worst_deviation_pct=None if worst is None else round(worst, 4), verdict=verdict, reason=reason))
    return out


def _pair(b: tuple[float, float]) -> str:
    lo = "-inf" if math.isinf(b[0]) else f"{b[0]:.6g}"
    hi = "+inf" if math.isinf(b[1]) else f"{b[1]:.6g}"
    return f"[{lo}, {hi}]"


def _range(start_s: float | None, end_s: float | None, first_s: float | None, last_s: float | None,
           interval_s: int, align_monday: bool) -> tuple[float, float]:
    if start_s is None:
        if first_s is None:
            raise ValueError("no readings with a value and no start given: nothing to assess")
        start_s = (_MONDAY_EPOCH_S + math.floor((first_s - _MONDAY_EPOCH_S) / WEEK_S) * WEEK_S if align_monday
                   else first_s)
    if end_s is None:
        if last_s is None:
            raise ValueError("no readings with a value and no end given: nothing to assess")
        end_s = last_s + interval_s
    return float(start_s), float(end_s)


def _bounds(means: IntervalMeans) -> tuple[float | None, float | None]:
    if means.start_s.size == 0:
        return None, None
    return float(means.start_s.min()), float(means.start_s.max())


def _means(ts: Any, values: Any, interval_s: int, aggregated: bool, rms: bool) -> IntervalMeans:
    if not aggregated:
        return interval_means(ts, values, interval_s, rms=rms)
    t = epoch_seconds(ts)
    v = np.asarray(values, dtype=np.float64)
    if v.shape != t.shape:
        raise ValueError(f"{t.size} timestamps for {v.size} values")
    ok = np.isfinite(t) & np.isfinite(v)
    k = np.floor(t[ok] / interval_s).astype(np.int64)
    if np.unique(k).size != k.size:
        raise ValueError(f"aggregated means must be one per {interval_s}-s interval; some share one")
    return IntervalMeans(start_s=k * interval_s, mean=v[ok], count=np.ones(k.size, dtype=np.int64))


def _opt_s(t: Any) -> float | None:
    return None if t is None else float(epoch_seconds([t])[0])


def voltage_weeks(ts: Any, values: Any, nominal: float, *, start: Any = None, end: Any = None,
                  aggregated: bool = False, min_coverage: float = 0.9) -> list[PeriodStatistics]:
    """Weekly supply-voltage statistics of one voltage (a phase, or a line-to-line voltage): the 10-min
    means within ``nominal`` +-10 % for 95 % of each week and all within +10 % / -15 %. ``values`` in
    the unit of ``nominal``; raw readings (aggregated here, r.m.s.), or 10-min means already
    (``aggregated``: one per 10-min interval, timestamped inside it). Weeks run from ``start`` (default:
    the Monday 00:00 UTC on or before the first reading) to ``end`` (default: past the last)."""
    if not nominal > 0:
        raise ValueError(f"nominal voltage must be positive, got {nominal!r}")
    means = _means(ts, values, TEN_MIN_S, aggregated, rms=True)
    s0, s1 = _range(_opt_s(start), _opt_s(end), *_bounds(means), TEN_MIN_S, align_monday=True)
    return assess(means, interval_s=TEN_MIN_S, period_s=WEEK_S, start_s=s0, end_s=s1,
                  band=(0.9 * nominal, 1.1 * nominal), limits=(0.85 * nominal, 1.1 * nominal),
                  required_fraction=0.95, nominal=nominal, min_coverage=min_coverage)


def frequency_resolution_s(ts: Any) -> int:
    """The interval frequency is assessed at: 10 s (EN 50160's), or for sparser readings their median
    spacing rounded up to one of :data:`FREQUENCY_RESOLUTIONS_S` (at most 10 min)."""
    t = np.unique(_finite(epoch_seconds(ts)))
    if t.size < 2:
        return FREQUENCY_RESOLUTIONS_S[0]
    spacing = float(np.median(np.diff(t)))
    for r in FREQUENCY_RESOLUTIONS_S:
        if spacing <= r * 1.001:
            return r
    return FREQUENCY_RESOLUTIONS_S[-1]


def _finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


def frequency_years(ts: Any, values: Any, nominal_hz: float = 50.0, *, start: Any = None, end: Any = None,
                    resolution_s: int | None = None, aggregated: bool = False,
                    min_coverage: float = 0.9) -> list[PeriodStatistics]:
    """Yearly (365-day) power-frequency statistics: the means over ``resolution_s`` (default 10 s, or
    the readings' own spacing when sparser: :func:`frequency_resolution_s`) within ``nominal_hz``
    +-1 % for 99.5 % of the year and all within +4 % / -6 %. Years run from ``start`` (default: the
    first reading's interval) to ``end`` (default: past the last); a range shorter than a year gives
    one partial year, ``insufficient_data`` unless the data already decide against it."""
    if not nominal_hz > 0:
        raise ValueError(f"nominal frequency must be positive, got {nominal_hz!r}")
    res = resolution_s if resolution_s is not None else frequency_resolution_s(ts)
    if res <= 0 or YEAR_S % res:
        raise ValueError(f"resolution_s must divide a year of seconds, got {res}")
    means = _means(ts, values, res, aggregated, rms=False)
    s0, s1 = _range(_opt_s(start), _opt_s(end), *_bounds(means), res, align_monday=False)
    return assess(means, interval_s=res, period_s=YEAR_S, start_s=s0, end_s=s1,
                  band=(0.99 * nominal_hz, 1.01 * nominal_hz), limits=(0.94 * nominal_hz, 1.04 * nominal_hz),
                  required_fraction=0.995, nominal=nominal_hz, min_coverage=min_coverage)


def unbalance_weeks(ts: Any, values_pct: Any, *, start: Any = None, end: Any = None, aggregated: bool = False,
                    min_coverage: float = 0.9) -> list[PeriodStatistics]:
    """Weekly negative-sequence voltage unbalance (u2 = |V2|/|V1| in %): the 10-min means within 0-2 %
    for 95 % of each week (EN 50160 gives no 100 % limit). Weeks as :func:`voltage_weeks`."""
    means = _means(ts, values_pct, TEN_MIN_S, aggregated, rms=True)
    s0, s1 = _range(_opt_s(start), _opt_s(end), *_bounds(means), TEN_MIN_S, align_monday=True)
    return assess(means, interval_s=TEN_MIN_S, period_s=WEEK_S, start_s=s0, end_s=s1, band=(0.0, 2.0),
                  limits=(-math.inf, math.inf), required_fraction=0.95, nominal=None, min_coverage=min_coverage)


def summarise(periods: Sequence[PeriodStatistics]) -> str:
    """``3 compliant, 1 non_compliant, 0 insufficient_data`` over the periods."""
    counts = {v: 0 for v in VERDICTS}
    for p in periods:
        counts[p.verdict] += 1
    return ", ".join(f"{n} {v}" for v, n in counts.items())
