"""Precursors of slowly developing faults: a rising residual against the drivers, and when it reaches a limit.

A cooling fault (a blocked radiator, a failed fan, sludge) shows first as oil running hotter than its
load explains, by a little more each day; a bearing shows as creeping vibration. The method, for one
monitored quantity ``y`` with optional drivers ``X`` (load, ambient):

1. **Clean**: non-finite rows dropped, samples sorted by time (a clock that stepped back), repeated
   timestamps averaged, all counted in the result.
2. **Baseline** over a reference window that ends where the recent window starts: a robust (Huber,
   IRLS) linear regression of y on the drivers; constant drivers are dropped, drivers are clipped
   to their reference range so the recent window is not extrapolated. When the drivers explain
   little (R^2 below ``min_r2``), the baseline is the reference median. ``residual = y - baseline``.
3. **Trend** of the residual over the recent window: averaged into ``bins`` equal time bins (gaps,
   duplicates and quantisation lose their grip; empty bins drop out), then Theil-Sen
   (:func:`~agents.maintenance_predictor.trend.theil_sen`) with Sen's interval widened for the bins'
   lag-1 autocorrelation (variance inflation (1 + rho)/(1 - rho), Hamed and Rao 1998).
4. **Significance**: a warning needs the lower bound of the slope's interval above 0, the slope at
   least ``min_slope_per_day`` (a practical floor: weather moves the residual of a transformer's oil
   by a few tenths of a kelvin per day for weeks), the rise over the window at least two steps of
   the sensor's resolution, and enough coverage of the window.
5. **Time to the limit**: the residual's fitted level now, extended at the slope, against
   ``residual_limit`` (the excess that counts as a fault), and/or the quantity's upper ``limit``
   reached by the baseline's daily peak (90th percentile over the last day) plus the residual. The range comes from the slope's
   interval. A warning is raised when the crossing is due within ``horizon_hours`` (or the fitted
   level is at the limit already, whatever the slope).

:func:`assess_precursor` evaluates one instant; :func:`scan` evaluates many (the evaluation and the
tests). Pure numpy; times are hours on any origin.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import msgspec
import numpy as np

from agents.maintenance_predictor.trend import TrendFit, theil_sen

__all__ = ["Precursor", "PrecursorConfig", "Scan", "assess_precursor", "clean_samples", "robust_baseline", "scan"]


class PrecursorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Windows in hours, slopes in units of the quantity per day."""

    reference_hours: float = 14 * 24.0  # the baseline is learned here, just before the recent window
    window_hours: float = 14 * 24.0  # the recent window the residual trend is fitted over
    bins: int = 56  # the residual is averaged into this many bins over the window (6 h at 14 days)
    horizon_hours: float = 10 * 24.0  # warn when the limit is due within this
    min_slope_per_day: float = 0.3
    confidence: float = 0.95
    min_coverage: float = 0.6  # share of the window (and of the reference) that must hold samples
    min_distinct: int = 4  # fewer distinct values in the data: a constant (stuck) sensor
    min_r2: float = 0.1  # drivers explaining less than this are not used
    huber_k: float = 1.345
    max_inflation: float = 25.0

    def __post_init__(self) -> None:
        for key in ("reference_hours", "window_hours", "horizon_hours"):
            if not getattr(self, key) > 0:
                raise ValueError(f"PrecursorConfig.{key}: must be > 0, got {getattr(self, key)}")
        if self.bins < 6:
            raise ValueError(f"PrecursorConfig.bins: must be >= 6, got {self.bins}")
        if not 0 < self.confidence < 1 or not 0 < self.min_coverage <= 1:
            raise ValueError("PrecursorConfig.confidence and min_coverage: expected in (0, 1)")
        if self.min_slope_per_day < 0 or self.huber_k <= 0 or self.max_inflation < 1:
            raise ValueError("PrecursorConfig: min_slope_per_day >= 0, huber_k > 0, max_inflation >= 1 expected")


class Precursor(msgspec.Struct, frozen=True, kw_only=True):
    """One evaluation: whether to warn, why, and the evidence. Plain numbers (NaN/inf where unknown)."""

    warning: bool
    reason: str
    now_h: float
    window_h: tuple[float, float] = (math.nan, math.nan)  # the recent window (start, end)
    reference_h: tuple[float, float] = (math.nan, math.nan)
    samples: int = 0
    coverage: float = 0.0
    drivers_used: tuple[int, ...] = ()
    r2: float = math.nan  # of the baseline over the reference window
    residual_scale: float = math.nan  # robust (MAD) spread of the reference residual
    resolution: float = math.nan  # the sensor's smallest step
    slope_per_day: float = math.nan
    slope_low: float = math.nan
    slope_high: float = math.nan
    inflation: float = 1.0
    excess_now: float = math.nan  # the residual's fitted level now (units above the baseline)
    excess_se: float = math.nan  # its standard error
    residual_limit: float | None = None
    level_now: float = math.nan  # the quantity's daily peak baseline + the excess
    limit: float | None = None
    limiting: str = ""  # "residual" or "quantity": which limit comes first
    hours_to_limit: float = math.inf
    hours_to_limit_range: tuple[float, float] = (math.inf, math.inf)
    cleaning: dict[str, int] = {}

    def facts(self) -> dict[str, Any]:
        """JSON-safe evidence for a finding."""
        def f(x: float | None, nd: int = 4) -> float | None:
            return round(float(x), nd) if x is not None and math.isfinite(x) else None
        return {
            "warning": self.warning, "reason": self.reason, "window_hours": [f(self.window_h[0], 2), f(self.window_h[1], 2)],
            "reference_hours": [f(self.reference_h[0], 2), f(self.reference_h[1], 2)], "samples": self.samples,
            "coverage": f(self.coverage, 3), "drivers_used": list(self.drivers_used), "fit_r2": f(self.r2, 3),
            "residual_scale": f(self.residual_scale), "resolution": f(self.resolution, 6),
            "slope_per_day": f(self.slope_per_day), "slope_ci_per_day": [f(self.slope_low), f(self.slope_high)],
            "autocorrelation_inflation": f(self.inflation, 3), "excess_now": f(self.excess_now),
            "excess_se": f(self.excess_se),
            "residual_limit": self.residual_limit, "level_now": f(self.level_now), "limit": self.limit,
            "limiting": self.limiting, "hours_to_limit": f(self.hours_to_limit, 1),
            "hours_to_limit_range": [f(self.hours_to_limit_range[0], 1), f(self.hours_to_limit_range[1], 1)],
            "cleaning": dict(self.cleaning)}


def clean_samples(t_h: np.ndarray, y: np.ndarray, drivers: np.ndarray | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Finite rows, sorted by time, repeated timestamps averaged. Returns (t, y, X, counts)."""
    t = np.asarray(t_h, dtype=np.float64).ravel()
    v = np.asarray(y, dtype=np.float64).ravel()
    if t.shape != v.shape:
        raise ValueError(f"precursor: timestamps ({t.size}) and values ({v.size}) differ in length")
    x = np.zeros((t.size, 0)) if drivers is None else np.asarray(drivers, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] != t.size:
        raise ValueError(f"precursor: drivers have {x.shape[0]} rows, values {t.size}")
    ok = np.isfinite(t) & np.isfinite(v) & np.isfinite(x).all(axis=1)
    out_of_order = int(np.count_nonzero(np.diff(t[ok]) < 0))
    t, v, x = t[ok], v[ok], x[ok]
    uniq, inverse, counts = np.unique(t, return_inverse=True, return_counts=True)
    if uniq.size < t.size:  # average the repeats (np.unique also sorts)
        v = np.bincount(inverse, weights=v, minlength=uniq.size) / counts
        x = np.stack([np.bincount(inverse, weights=x[:, j], minlength=uniq.size) / counts for j in range(x.shape[1])],
                     axis=1) if x.shape[1] else np.zeros((uniq.size, 0))
    else:
        order = np.argsort(t, kind="stable")
        v, x = v[order], x[order]
    return uniq, v, x, {"dropped_non_finite": int(np.count_nonzero(~ok)), "out_of_order": out_of_order,
                        "repeated_timestamps": int(t.size - uniq.size)}


def _mad(r: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(r - np.median(r)))) if r.size else math.nan


def robust_baseline(x_ref: np.ndarray, y_ref: np.ndarray, huber_k: float = 1.345, iterations: int = 8
                    ) -> tuple[np.ndarray, float]:
    """Huber regression of y on [1, x] by iteratively reweighted least squares, the scale fixed at the
    MAD of the least-squares residual (x standardised by the caller). Returns (coef, robust scale of
    the final residual)."""
    a = np.column_stack([np.ones(y_ref.size), x_ref])
    ridge = 1e-9 * np.eye(a.shape[1])
    coef = np.linalg.solve(a.T @ a + ridge, a.T @ y_ref)
    scale = _mad(y_ref - a @ coef)
    if not scale > 0:
        return coef, 0.0
    for _ in range(iterations):
        u = np.abs(y_ref - a @ coef) / (huber_k * scale)
        w = 1.0 / np.maximum(u, 1.0)
        new = np.linalg.solve((a * w[:, None]).T @ a + ridge, (a * w[:, None]).T @ y_ref)
        done = np.max(np.abs(new - coef)) <= 1e-6 * (1.0 + np.max(np.abs(coef)))
        coef = new
        if done:
            break
    return coef, _mad(y_ref - a @ coef)


def _resolution(v: np.ndarray) -> float:
    d = np.diff(np.unique(v))
    return float(d.min()) if d.size else 0.0


def assess_precursor(t_h: np.ndarray, y: np.ndarray, drivers: np.ndarray | None = None, *, now_h: float | None = None,
                     residual_limit: float | None = None, limit: float | None = None,
                     config: PrecursorConfig = PrecursorConfig(), _clean: bool = True) -> Precursor:
    """The precursor at ``now_h`` (default: the latest sample) of the quantity ``y`` sampled at ``t_h``
    (hours), explained by ``drivers`` (n x k, or None: the trend of the quantity itself). At least one of
    ``residual_limit`` (excess over the baseline that counts as a fault) and ``limit`` (the quantity's
    upper limit) is needed."""
    if residual_limit is None and limit is None:
        raise ValueError("precursor: give residual_limit and/or limit")
    cfg = config
    if _clean:
        t, v, x, cleaning = clean_samples(t_h, y, drivers)
    else:
        t, v, x, cleaning = t_h, y, (np.zeros((len(t_h), 0)) if drivers is None else drivers), {}
    now = float(t[-1]) if now_h is None and t.size else float(now_h if now_h is not None else math.nan)
    w0, r0 = now - cfg.window_hours, now - cfg.window_hours - cfg.reference_hours
    base = {"now_h": now, "window_h": (w0, now), "reference_h": (r0, w0), "residual_limit": residual_limit,
            "limit": limit, "cleaning": cleaning}
    lo, mid, hi = np.searchsorted(t, [r0, w0, now], side="right")
    n_ref, n_rec = mid - lo, hi - mid
    if n_rec < 3 or n_ref < 3:
        return Precursor(warning=False, reason="insufficient data in the window or the reference", samples=int(n_rec),
                         **base)
    span = t[lo:hi]
    dt = float(np.median(np.diff(span))) if span.size > 1 else math.inf
    coverage = min(1.0, n_rec * dt / cfg.window_hours)
    cov_ref = min(1.0, n_ref * dt / cfg.reference_hours)
    base.update(samples=int(n_rec), coverage=coverage)
    if coverage < cfg.min_coverage or cov_ref < cfg.min_coverage:
        return Precursor(warning=False, reason=f"gaps: window coverage {coverage:.2f}, reference {cov_ref:.2f}", **base)
    yr, yw = v[lo:mid], v[mid:hi]
    resolution = _resolution(v[lo:hi])
    base.update(resolution=resolution)
    if np.unique(v[lo:hi]).size < cfg.min_distinct:
        return Precursor(warning=False, reason="constant or stuck sensor", **base)

    # baseline: robust regression on the drivers over the reference window
    xr, xw = x[lo:mid], x[mid:hi]
    keep = np.ptp(xr, axis=0) > 1e-9 * np.maximum(1.0, np.abs(xr).max(axis=0)) if xr.shape[1] else np.zeros(0, bool)
    used = tuple(int(j) for j in np.flatnonzero(keep))
    pred_w = np.full(yw.size, float(np.median(yr)))
    scale = _mad(yr - np.median(yr))
    r2 = 0.0
    if used and n_ref > 3 * (len(used) + 1):
        xr_u, xw_u = xr[:, keep], np.clip(xw[:, keep], xr[:, keep].min(axis=0), xr[:, keep].max(axis=0))
        mu, sd = xr_u.mean(axis=0), xr_u.std(axis=0)
        coef, sc = robust_baseline((xr_u - mu) / sd, yr, cfg.huber_k)
        fitted = coef[0] + ((xr_u - mu) / sd) @ coef[1:]
        total = float(np.var(yr))
        r2 = 1.0 - float(np.var(yr - fitted)) / total if total > 0 else 0.0
        if r2 >= cfg.min_r2:
            pred_w = coef[0] + ((xw_u - mu) / sd) @ coef[1:]
            scale = sc
        else:
            used = ()
    else:
        used = ()
    base.update(drivers_used=used, r2=r2, residual_scale=scale)

    # trend of the binned residual over the recent window
    res = yw - pred_w
    width = cfg.window_hours / cfg.bins
    idx = np.clip(((t[mid:hi] - w0) / width).astype(np.int64), 0, cfg.bins - 1)
    cnt = np.bincount(idx, minlength=cfg.bins)
    full = cnt > 0
    if full.sum() < max(6, int(cfg.min_coverage * cfg.bins)):
        return Precursor(warning=False, reason=f"gaps: {int(full.sum())} of {cfg.bins} bins hold samples", **base)
    means = np.bincount(idx, weights=res, minlength=cfg.bins)[full] / cnt[full]
    centres = (w0 + (np.flatnonzero(full) + 0.5) * width - now) / 24.0  # days, 0 = now
    fit0 = theil_sen(centres, means, cfg.confidence)
    if fit0 is None:
        return Precursor(warning=False, reason="no trend could be fitted", **base)
    detr = means - (fit0.intercept + fit0.slope_per_day * centres)
    rho = 0.0
    if detr.size > 3 and np.var(detr) > 0:
        rho = float(np.corrcoef(detr[:-1], detr[1:])[0, 1])
    inflation = float(np.clip((1 + rho) / (1 - rho), 1.0, cfg.max_inflation)) if rho > 0 and rho < 1 else (
        cfg.max_inflation if rho >= 1 else 1.0)
    fit = theil_sen(centres, means, cfg.confidence, variance_inflation=inflation) or fit0
    # the level "now" is the line at now (day 0), not at the last bin's centre
    excess = fit.intercept
    fit = msgspec.structs.replace(fit, t_last_days=0.0, level_now=excess)
    # the line's end point is uncertain too: about 2 sigma / sqrt(n_eff) for a line's end (OLS: 4/n)
    z = NormalDist().inv_cdf(0.5 + cfg.confidence / 2.0)
    level_se = _mad(means - (fit.intercept + fit.slope_per_day * centres)) * math.sqrt(4.0 * inflation / means.size)
    base.update(slope_per_day=fit.slope_per_day, slope_low=fit.slope_low, slope_high=fit.slope_high,
                inflation=inflation, excess_now=excess, excess_se=level_se)

    hours, rng, limiting, level = _time_to_limit(fit, residual_limit, limit, pred_w, t[mid:hi], now, z * level_se)
    base.update(hours_to_limit=hours, hours_to_limit_range=rng, limiting=limiting, level_now=level)
    rise = fit.slope_per_day * cfg.window_hours / 24.0
    if hours == 0.0:
        return Precursor(warning=True, reason=f"at the {limiting} limit already", **base)
    if fit.slope_low <= 0:
        return Precursor(warning=False, reason="no significant rise (slope interval reaches 0)", **base)
    if fit.slope_per_day < cfg.min_slope_per_day:
        return Precursor(warning=False, reason=f"rise below {cfg.min_slope_per_day:g}/day", **base)
    if rise < 2.0 * resolution:
        return Precursor(warning=False, reason="rise within two steps of the sensor's resolution", **base)
    if hours > cfg.horizon_hours:
        return Precursor(warning=False, reason=f"rising, limit not due within {cfg.horizon_hours:g} h", **base)
    return Precursor(warning=True, reason=f"rising {fit.slope_per_day:.3g}/day toward the {limiting} limit", **base)


def _time_to_limit(fit: TrendFit, residual_limit: float | None, limit: float | None, pred_w: np.ndarray,
                   t_w: np.ndarray, now: float, level_margin: float) -> tuple[float, tuple[float, float], str, float]:
    """Hours to the first limit at the fitted slope; the range from the slope's interval and the level's
    (+- ``level_margin``); which limit; and the quantity's level now: the baseline's daily peak (its 90th
    percentile over the last day, or over the window's later half when shorter) plus the excess."""
    recent = t_w > now - min(24.0, 0.5 * (now - float(t_w[0])) if t_w.size else 24.0)
    peak = float(np.quantile(pred_w[recent], 0.9)) if np.any(recent) else float(pred_w[-1])
    level = peak + fit.level_now
    best = (math.inf, (math.inf, math.inf), "", level)
    for name, margin_limit in (("residual", residual_limit), ("quantity", limit)):
        if margin_limit is None:
            continue
        target = margin_limit if name == "residual" else margin_limit - peak
        h = fit.hours_to_exceed(target)
        early = msgspec.structs.replace(fit, level_now=fit.level_now + level_margin)
        late = msgspec.structs.replace(fit, level_now=fit.level_now - level_margin)
        rng = (early.hours_to_exceed(target, fit.slope_high), late.hours_to_exceed(target, fit.slope_low))
        if h < best[0] or not best[2]:
            best = (h, rng, name, level)
    return best


class Scan(msgspec.Struct, frozen=True, kw_only=True):
    """Precursors evaluated at many instants: the times, whether each warned, hours to the limit."""

    now_h: np.ndarray
    warning: np.ndarray
    hours_to_limit: np.ndarray
    excess_now: np.ndarray  # the residual's fitted level (NaN where it could not be fitted)


def scan(t_h: np.ndarray, y: np.ndarray, drivers: np.ndarray | None = None, *, every_hours: float = 6.0,
         start_h: float | None = None, end_h: float | None = None, residual_limit: float | None = None,
         limit: float | None = None, config: PrecursorConfig = PrecursorConfig()) -> Scan:
    """:func:`assess_precursor` every ``every_hours`` from ``start_h`` (default: once a full reference
    and window are available) to ``end_h`` (default: the last sample), on data cleaned once."""
    t, v, x, _ = clean_samples(t_h, y, drivers)
    if t.size == 0:
        raise ValueError("precursor scan: no finite samples")
    first = t[0] + config.reference_hours + config.window_hours
    times = np.arange(first if start_h is None else max(start_h, first), (t[-1] if end_h is None else end_h) + 1e-9,
                      every_hours)
    out = [assess_precursor(t, v, x, now_h=float(n), residual_limit=residual_limit, limit=limit, config=config,
                            _clean=False) for n in times]
    return Scan(now_h=times, warning=np.array([p.warning for p in out], dtype=bool),
                hours_to_limit=np.array([p.hours_to_limit for p in out], dtype=np.float64),
                excess_now=np.array([p.excess_now for p in out], dtype=np.float64))
