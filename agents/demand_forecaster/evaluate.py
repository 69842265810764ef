"""Scoring the day-ahead forecaster on a real hourly load file, beside same-run baselines.

Protocol (``evaluate_load``): every local midnight of the scored years is an issue; the forecaster
sees only the ``history_days`` days before it and forecasts 48 hours; the first 24 are the
day-ahead (24 h) horizon, the next 24 the two-day-ahead (48 h) one. MAPE over every scored hour
whose actual value was observed, and the share of them inside the 10-90 % interval. Baselines on
the same issues and hours: the same hour on the last observed day (yesterday for 24 h, the day
before for 48 h), the same hour a week earlier, and a per-hour linear model (least squares per
horizon step on the most recent same hour, the same hour last week, the last observed hour and
day-of-week flags) fitted on the same history.

``read_load_csv`` takes the PJM files as they are: rows in any order, ``DD-MM-YYYY HH:MM`` or
``YYYY-MM-DD HH:MM[:SS]``, hour-ending local time, repeated hours (DST) averaged, missing hours
NaN; what it found is reported.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from agents.demand_forecaster.dayahead import DAY_H, WEEK_H, fill_gaps, forecast_day_ahead

__all__ = ["LoadSeries", "evaluate_load", "read_load_csv", "us_load_holidays"]

_EPOCH = date(1970, 1, 1).toordinal()


@dataclass
class LoadSeries:
    """An hourly series on local clock time: hour ``i`` starts at ``start_s + 3600 i`` (naive local
    time read as epoch seconds), NaN where no row gave it."""

    name: str
    start_s: float
    values: np.ndarray
    rows: int
    duplicates: int  # hours given more than once (averaged)
    missing: int  # hours inside the span that no row gave
    notes: list[str] = field(default_factory=list)

    def day_index(self, d: date) -> int:
        """Index of local midnight starting ``d``."""
        return int(round(((d.toordinal() - _EPOCH) * 86400.0 - self.start_s) / 3600.0))

    @property
    def first_day(self) -> date:
        return date.fromordinal(_EPOCH + int(np.ceil(self.start_s / 86400.0)))


def _parse_stamp(text: str) -> np.datetime64:
    s = text.strip()
    if len(s) >= 16 and s[2] == "-" and s[5] == "-":  # DD-MM-YYYY HH:MM
        iso = f"{s[6:10]}-{s[3:5]}-{s[0:2]}T{s[11:16]}"
    elif len(s) >= 16 and s[4] == "-" and s[7] == "-":  # YYYY-MM-DD HH:MM[:SS]
        iso = f"{s[0:10]}T{s[11:16]}"
    else:
        raise ValueError(f"unrecognised timestamp {text!r}: expected DD-MM-YYYY HH:MM or YYYY-MM-DD HH:MM[:SS]")
    return np.datetime64(iso, "m")


def read_load_csv(path: str | Path, column: str | None = None) -> LoadSeries:
    """An hourly load file (``Datetime,<ZONE>_MW``) as an ordered hourly series (see the module doc)."""
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path}: empty file") from None
        if len(header) < 2:
            raise ValueError(f"{path}: expected a header with a timestamp and a load column, got {header}")
        col = 1 if column is None else header.index(column) if column in header else -1
        if col < 0:
            raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(header)})")
        stamps, loads = [], []
        for line, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            try:
                stamps.append(_parse_stamp(row[0]))
                loads.append(float(row[col]))
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}, line {line}: {exc}") from None
    if len(stamps) < 2 * WEEK_H:
        raise ValueError(f"{path}: {len(stamps)} rows; need at least two weeks of hours")
    minutes = np.asarray(stamps, dtype="datetime64[m]").astype(np.int64)
    if np.any(minutes % 60):
        raise ValueError(f"{path}: timestamps not on the hour (first at row {int(np.argmax(minutes % 60)) + 2})")
    hour = minutes // 60 - 1  # hour-ending: the row's hour started an hour earlier
    v = np.asarray(loads, dtype=np.float64)
    first = int(hour.min())
    idx = hour - first
    n = int(idx.max()) + 1
    counts = np.bincount(idx, minlength=n)
    with np.errstate(invalid="ignore"):
        values = np.bincount(idx, weights=v, minlength=n) / counts
    notes = []
    if np.any(np.diff(hour) < 0):
        notes.append("rows not in time order: sorted")
    dup = int(np.sum(counts > 1))
    if dup:
        notes.append(f"{dup} hours given twice (clock changes): averaged")
    missing = int(np.sum(counts == 0))
    if missing:
        notes.append(f"{missing} hours missing: filled for the inputs, not scored")
    return LoadSeries(header[col], first * 3600.0, values, len(v), dup, missing, notes)


def _nth_weekday(year: int, month: int, weekday: int, nth: int) -> date:
    """The ``nth`` (1-based; -1 = last) ``weekday`` (Monday 0) of the month."""
    if nth > 0:
        d = date(year, month, 1)
        return d + timedelta(days=(weekday - d.weekday()) % 7 + 7 * (nth - 1))
    d = date(year + (month == 12), month % 12 + 1, 1) - timedelta(days=1)
    return d - timedelta(days=(d.weekday() - weekday) % 7)


def us_load_holidays(years: Sequence[int]) -> list[date]:
    """The US holidays that move electricity load (NERC's six, observed on the Friday/Monday when they
    fall at a weekend) plus the Friday after Thanksgiving: computed, not downloaded."""
    out = []
    for y in years:
        fixed = [date(y, 1, 1), date(y, 7, 4), date(y, 12, 25)]
        for d in fixed:
            out.append(d)
            if d.weekday() == 5:
                out.append(d - timedelta(days=1))
            elif d.weekday() == 6:
                out.append(d + timedelta(days=1))
        thanks = _nth_weekday(y, 11, 3, 4)
        out += [_nth_weekday(y, 5, 0, -1), _nth_weekday(y, 9, 0, 1), thanks, thanks + timedelta(days=1)]
    return sorted(set(out))


def _linear_baseline(hist: np.ndarray, horizon: int, dow_at: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Per-step least squares on the most recent same hour, the same hour last week, the last observed
    hour and day-of-week flags, trained on the issues at the same hour in ``hist`` (filled)."""
    n = len(hist)
    issues = n - DAY_H * np.arange(-(-horizon // DAY_H), n // DAY_H + 1)
    issues = issues[issues >= WEEK_H]
    steps = np.arange(horizon)

    def design(i0: np.ndarray, src: np.ndarray) -> np.ndarray:
        t = i0[:, None] + steps[None, :]
        same = src[t - DAY_H * (steps // DAY_H + 1)[None, :]]
        week = src[t - WEEK_H]
        last = np.broadcast_to(src[i0 - 1][:, None], t.shape)
        dow = (dow_at(t)[..., None] == np.arange(7)).astype(np.float64)
        return np.concatenate([same[..., None], week[..., None], last[..., None], dow], axis=-1)

    ext = np.concatenate([hist, np.zeros(horizon)])
    x = np.transpose(design(issues, ext), (1, 0, 2))  # (steps, rows, F)
    y = ext[issues[:, None] + steps[None, :]].T
    xn = np.transpose(design(np.array([n]), ext), (1, 0, 2))
    gram = np.einsum("hrf,hrg->hfg", x, x) + 1e-6 * np.eye(x.shape[2]) * len(issues)
    coef = np.linalg.solve(gram, np.einsum("hrf,hr->hf", x, y)[..., None])[..., 0]
    return np.einsum("hrf,hf->h", xn, coef)


def evaluate_load(series: LoadSeries, *, history_days: int = 365, years: Sequence[int] | None = None,
                  horizon: int = 48, quantiles: tuple[float, float] = (0.1, 0.9), holidays: bool = True,
                  every: int = 1, progress: Callable[..., object] | None = None) -> dict[str, Any]:
    """MAPE and interval coverage per horizon day of the forecaster and the baselines (module doc).

    ``every``: score every ``every``-th day only (a quicker sample; 5 cycles through the weekdays).
    """
    if every < 1:
        raise ValueError(f"every {every}: expected 1 or more")
    if history_days < 14:
        raise ValueError(f"history_days {history_days}: the forecaster needs at least 14")
    x = series.values
    n = len(x)
    first_issue = int(np.ceil(series.start_s / 86400.0)) * 86400.0
    all_days = np.arange(first_issue, series.start_s + 3600.0 * n, 86400.0)
    day_dates = [date.fromordinal(_EPOCH + int(s // 86400)) for s in all_days]
    span_years = sorted({d.year for d in day_dates})
    if years is None:
        full = [y for y in span_years if date(y, 1, 1) >= day_dates[0] + timedelta(days=history_days + 8)
                and date(y, 12, 31) <= day_dates[-1] - timedelta(days=2)]
        years = full[-2:]
        if not years:
            raise ValueError(f"{series.name}: no full calendar year after {history_days} days of history")
    years = sorted(set(int(y) for y in years))
    hol_days = np.asarray([d.toordinal() - _EPOCH for d in us_load_holidays(span_years)] if holidays else [],
                          dtype=np.int64)
    issues = []
    for d in day_dates:
        if d.year in years:
            i0 = series.day_index(d)
            if i0 - history_days * DAY_H >= 0 and i0 + horizon <= n:
                issues.append(i0)
    issues = issues[::every]
    if not issues:
        raise ValueError(f"{series.name}: no issue in years {years} has {history_days} days of history before it "
                         f"and {horizon} h after it (data {day_dates[0]}..{day_dates[-1]})")
    filled = fill_gaps(x)
    steps = np.arange(horizon)

    def dow_at(t: np.ndarray) -> np.ndarray:
        day = np.floor((series.start_s + 3600.0 * t) / 86400.0).astype(np.int64)
        return np.where(np.isin(day, hol_days), 6, (day + 3) % 7)

    k = len(issues)
    actual = np.full((k, horizon), np.nan)
    preds = {name: np.full((k, horizon), np.nan) for name in ("forecaster", "same_hour_yesterday",
                                                              "same_hour_last_week", "linear_per_hour")}
    lower, upper = np.full((k, horizon), np.nan), np.full((k, horizon), np.nan)
    fit_s = 0.0
    lin_s = 0.0
    for j, i0 in enumerate(issues):
        if progress is not None and j % 16 == 0:
            progress(j, k)
        lo = i0 - history_days * DAY_H
        t = i0 + steps
        actual[j] = x[t]
        began = time.perf_counter()
        r = forecast_day_ahead(x[lo:i0], series.start_s + 3600.0 * lo, horizon, holidays=hol_days,
                               quantiles=quantiles)
        fit_s += time.perf_counter() - began
        preds["forecaster"][j], lower[j], upper[j] = r.point, r.lower, r.upper
        preds["same_hour_yesterday"][j] = filled[t - DAY_H * (steps // DAY_H + 1)]
        preds["same_hour_last_week"][j] = filled[t - WEEK_H]
        began = time.perf_counter()
        hist = fill_gaps(x[lo:i0])
        preds["linear_per_hour"][j] = _linear_baseline(hist, horizon, lambda tt, lo=lo: dow_at(tt + lo))
        lin_s += time.perf_counter() - began
    if progress is not None:
        progress(k, k)
    scored = np.isfinite(actual) & (actual > 0)
    result: dict[str, Any] = {"name": series.name, "history_days": history_days, "years": years, "issues": k,
                              "ms_per_forecast": 1000.0 * fit_s / k, "ms_per_linear_baseline": 1000.0 * lin_s / k,
                              "horizons": {}}
    for hd in range(horizon // DAY_H):
        cols = slice(hd * DAY_H, (hd + 1) * DAY_H)
        ok = scored[:, cols]
        a = actual[:, cols][ok]
        row: dict[str, Any] = {"hours": int(ok.sum())}
        for name, p in preds.items():
            row[f"{name}_mape"] = float(100.0 * np.mean(np.abs(p[:, cols][ok] - a) / a))
        row["coverage"] = float(np.mean((a >= lower[:, cols][ok]) & (a <= upper[:, cols][ok])))
        row["interval_width_pct"] = float(100.0 * np.mean((upper[:, cols][ok] - lower[:, cols][ok]) / a))
        result["horizons"][(hd + 1) * DAY_H] = row
    return result
