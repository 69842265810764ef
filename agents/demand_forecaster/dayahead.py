"""Day-ahead and two-day-ahead hourly load forecasts: one ridge regression per horizon step, fitted
on the history handed in each time it is called (numpy only, tens of milliseconds).

A forecast is issued at some hour (the agent: the hour after the last one with data; the
evaluation: local midnight) for the next ``horizon`` (24..48) hours. The training rows are the
earlier issues at the same hour of day (one per day of history), so every step ``s`` has its own
model of "the load ``s`` hours after an issue at this hour". Everything is in logs relative to the
level (the mean log load of the last 24 h before the issue), so weekly and seasonal effects are
multiplicative. Features of a row, for a target hour ``t``:

- the last 24 observed hours (one of them is the same hour of day as ``t``), the daily means of the
  seven days before them, the last day's maximum;
- the same hour a week before ``t``;
- the target's day of week (a holiday counts as a Sunday) one-hot, a holiday flag, and the most
  recent same hour of day multiplied by each day-of-week flag (so Monday learns how much of
  Sunday to carry over);
- the target's day of year (two Fourier harmonics), and the first harmonic times the most recent
  same hour and times the day before's mean (the season changes how much of a day carries over);
- with ``LEVEL_FROM_DAYS`` (300) training days or more, the level itself (from the history's mean log
  load), alone and times the four harmonics: how far the load stands from its seasonal norm says how
  much of it the next day keeps (it needs about a year to learn the norm: worse with 180 days).

From the same ``LEVEL_FROM_DAYS`` the training days are also weighted by their distance in the year
from the forecast (a Gaussian of sd ``SEASON_SD_DAYS`` (45) days plus a floor of 0.1: the same season
of other years counts most). With the full set a second per-step ridge corrects the forecast from
the errors of the issue a day earlier at its first 24 hours (its error at the same hour of day, its
mean error, that of its last four hours), all observed by now: load forecast errors persist while
the weather that caused them does. Its training errors are the first fit's leave-one-out errors, so
the forecaster stays stateless.

With fewer than ``SMALL_BELOW_DAYS`` (70) training days (under about 80 days of history) a small
set instead: the most recent same hour, the same hour last week, the last hour, the holiday flag
and the day of week (the full set overfits there).

The full set is fitted twice: the second time with Huber weights from the first fit's leave-one-out
errors (beyond ``HUBER_K`` (1.5) robust standard deviations a row weighs ``k / |r|``), so an outlier
day (a storm, an unflagged holiday) pulls less. Each step picks its ridge penalty by leave-one-out
error (closed form from one eigendecomposition of the step's Gram matrix). The interval is
split-conformal on the final leave-one-out residuals: the residuals of the most recent
``calib_days`` (112) issues, pooled over the step and two neighbours on each side, at the ranks
``ceil((n + 1) q)`` of ``n`` days (the days, not the hours, are the exchangeable units: the hours of
a day err together), taken in log space. The first 24 hours take levels ``DAY1_LEVEL_IN`` (0.01)
further in (rank 101 of 112 instead of 102 for 10-90 %): their leave-one-out errors overstate the
day-ahead error (on 2016 the first day's interval covered 80.8-82.2 % at the conformal rank, the
second day's 78.6-80.6 %). Tuned on 2016 and measured on 2017 of four PJM zones
(docs/forecasting.md).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DayAheadResult", "MIN_DAYS", "fill_gaps", "forecast_day_ahead"]

HOUR_S = 3600.0
DAY_H = 24
WEEK_H = 168
MIN_DAYS = 14  # a week of lags plus a week of training rows
SMALL_BELOW_DAYS = 70  # fewer training days than this: the small feature set (measured better at 28-56 days)
SEASON_SD_DAYS = 45.0  # training days weighted by their distance in the year from the forecast: sd of the kernel
SEASON_FLOOR = 0.1  # and the weight kept by the days furthest away
HUBER_K = 1.5  # the full set's refit: residuals beyond 1.5 robust standard deviations weigh k / |r|
LEVEL_FROM_DAYS = 300  # level features and season weights from about a year of training days (worse at 120-180)
DAY1_LEVEL_IN = 0.01  # the first 24 h's interval levels this much further in (0.89/0.11 for 10-90 %): see the doc
_ALPHA_SCALE = np.array([1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0, 3.0])


@dataclass
class DayAheadResult:
    """Hourly point forecast and its interval (``horizon`` values each), and what the fit used."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Missing hours from a week earlier, else a day earlier, else linear interpolation (vectorised
    per lag: a run of gaps longer than the lag is filled by repeating the pass)."""
    out = np.asarray(values, dtype=np.float64).copy()
    for lag in (WEEK_H, DAY_H):
        for _ in range(8):
            gap = np.flatnonzero(np.isnan(out[lag:])) + lag
            if not len(gap):
                break
            src = out[gap - lag]
            ok = np.isfinite(src)
            if not ok.any():
                break
            out[gap[ok]] = src[ok]
    gap = np.isnan(out)
    if gap.any():
        ok = np.flatnonzero(~gap)
        if not len(ok):
            raise ValueError("no load values to forecast from")
        out[gap] = np.interp(np.flatnonzero(gap), ok, out[ok])
    return out


def _features(lx: np.ndarray, issues: np.ndarray, horizon: int, day_of: np.ndarray, holiday: np.ndarray,
              small: bool = False, base: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, horizon, features)`` and the level ``(rows,)`` for issues at ``issues`` (indices of
    the first forecast hour); ``day_of``/``holiday``: local day number and holiday flag per index;
    ``base``: the history's mean log load (the level is measured from it; None: no level features)."""
    rows = len(issues)
    csum = np.concatenate([[0.0], np.cumsum(lx)])
    last24 = lx[issues[:, None] - DAY_H + np.arange(DAY_H)[None, :]]
    level = last24.mean(axis=1)
    ends = issues[:, None] - DAY_H * np.arange(1, 8)[None, :]
    daily = (csum[ends] - csum[ends - DAY_H]) / DAY_H - level[:, None]
    common = np.concatenate([last24 - level[:, None], daily, last24.max(axis=1, keepdims=True) - level[:, None]],
                            axis=1)
    steps = np.arange(horizon)
    t = issues[:, None] + steps[None, :]
    week = lx[t - WEEK_H] - level[:, None]
    same = lx[t - DAY_H * (steps // DAY_H + 1)[None, :]] - level[:, None]
    day = day_of[t]
    hol = holiday[t]
    dow = np.where(hol, 6, (day + 3) % 7)  # 1970-01-01 was a Thursday; Monday 0
    onehot = (dow[..., None] == np.arange(7)).astype(np.float64)
    if small:  # a few weeks of rows: the most recent same hour, last week's, the last hour, the weekday
        last = np.broadcast_to(last24[:, -1:] - level[:, None], same.shape)
        feats = np.stack([same, week, last, hol.astype(np.float64)], axis=-1)
        return np.concatenate([feats, onehot], axis=-1), level
    phase = 2 * np.pi * day / 365.2425
    fourier = np.stack([np.sin(phase), np.cos(phase), np.sin(2 * phase), np.cos(2 * phase)], axis=-1)
    parts = [week[..., None], onehot, hol[..., None].astype(np.float64), fourier, onehot * same[..., None]]
    # the season changes how much of the last day carries over (heating and cooling)
    parts += [fourier[..., :2] * same[..., None], fourier[..., :2] * daily[:, None, :1]]
    # the level itself, alone and by season: how far the load stands from its seasonal norm says how
    # much of it the next day keeps (a heat wave's or a cold spell's load reverts; a mild day's does not)
    if base is not None:
        lev = np.broadcast_to((level - base)[:, None, None], (rows, horizon, 1))
        parts += [lev, lev * fourier]
    per_step = np.concatenate(parts, axis=-1)
    feats = np.concatenate([np.broadcast_to(common[:, None, :], (rows, horizon, common.shape[1])), per_step],
                           axis=-1)
    return feats, level


@dataclass
class _Ridge:
    """Per-step ridge fits on standardised features: ``predict(feats)`` gives ``(rows, horizon)``."""

    mu: np.ndarray  # (horizon, 1, F)
    sd: np.ndarray
    ym: np.ndarray  # (horizon, 1)
    coef: np.ndarray  # (horizon, F)
    loo: np.ndarray  # (horizon, rows) leave-one-out residuals
    err: np.ndarray  # (horizon,) their weighted mean square
    alpha: np.ndarray  # (horizon,)

    def predict(self, feats: np.ndarray) -> np.ndarray:
        # a feature far outside what the fit saw (a holiday never seen, a flat feature) must not
        # extrapolate the log-linear model into the absurd: standardised values kept within +-6
        z = np.clip((np.transpose(feats, (1, 0, 2)) - self.mu) / self.sd, -6.0, 6.0)
        return (np.matmul(z, self.coef[..., None])[..., 0] + self.ym).T


def _fit(feats: np.ndarray, y: np.ndarray, w: np.ndarray) -> _Ridge:
    """Per step: standardise, centre, ridge for every penalty, leave-one-out errors from the hat
    matrix; keep each step's penalty with the lowest leave-one-out error. ``w``: row weights (0: left out)."""
    horizon, rows = y.shape[1], y.shape[0]
    z = np.transpose(feats, (1, 0, 2))  # (horizon, rows, F)
    yt, wt = y.T, w.T  # (horizon, rows)
    wsum = np.maximum(wt.sum(axis=1, keepdims=True), 1.0)
    mu = (wt[..., None] * z).sum(axis=1, keepdims=True) / wsum[..., None]
    sd = np.sqrt((wt[..., None] * (z - mu) ** 2).sum(axis=1, keepdims=True) / wsum[..., None])
    sd[sd < 1e-6] = 1.0
    zs = (z - mu) / sd
    ym = (wt * yt).sum(axis=1, keepdims=True) / wsum
    yc = yt - ym
    zw = zs * wt[..., None]
    gram = np.matmul(np.transpose(zw, (0, 2, 1)), zs)  # (horizon, F, F)
    rhs = np.matmul(np.transpose(zw, (0, 2, 1)), yc[..., None])[..., 0]  # (horizon, F)
    # one eigendecomposition per step serves every penalty: (G + aI)^-1 = V diag(1 / (e + a)) V'
    eig, vec = np.linalg.eigh(gram)
    eig = np.maximum(eig, 0.0)
    proj = np.matmul(zs, vec)  # (horizon, rows, F)
    proj_sq = proj * proj
    vrhs = np.matmul(np.transpose(vec, (0, 2, 1)), rhs[..., None])[..., 0]  # (horizon, F)
    lev0 = wt / wsum
    n_feat = zs.shape[2]
    best_err = np.full(horizon, np.inf)
    best_coef = np.zeros((horizon, n_feat))
    best_loo = np.zeros((horizon, rows))
    best_alpha = np.zeros(horizon)
    for a in _ALPHA_SCALE * rows:
        inv_e = 1.0 / (eig + a)  # (horizon, F)
        c_rot = vrhs * inv_e
        resid = yc - np.matmul(proj, c_rot[..., None])[..., 0]
        hat = lev0 + wt * np.matmul(proj_sq, inv_e[..., None])[..., 0]
        loo = resid / np.maximum(1.0 - hat, 1e-3)
        err = (wt * loo ** 2).sum(axis=1) / wsum[:, 0]
        better = err < best_err
        if better.any():
            coef = np.matmul(vec, c_rot[..., None])[..., 0]
            best_err[better], best_coef[better], best_loo[better], best_alpha[better] = (
                err[better], coef[better], loo[better], a)
    return _Ridge(mu, sd, ym, best_coef, best_loo, best_err, best_alpha)


def _correction_features(prev: np.ndarray, horizon: int) -> np.ndarray:
    """``(rows, horizon, 3)`` from the day-before issue's first-day errors ``prev`` ``(rows, <= 24)`` (NaN
    where unknown): its error at the same hour of day, its mean error, and that of its last four hours."""
    known = np.isfinite(prev)
    e = np.where(known, prev, 0.0)
    mean = e.sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    late = e[:, -4:].sum(axis=1) / np.maximum(known[:, -4:].sum(axis=1), 1)
    same = e[:, np.arange(horizon) % DAY_H]
    return np.stack([same, np.broadcast_to(mean[:, None], same.shape), np.broadcast_to(late[:, None], same.shape)],
                    axis=-1)


def _correction(resid: np.ndarray, w: np.ndarray, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """A second per-step ridge on the first one's leave-one-out errors ``resid`` ``(horizon, rows)``,
    most recent row first: a day's errors from the errors of the issue a day earlier at its first 24
    hours, which are all observed by the time of the next issue (load forecast errors persist while
    the weather that caused them does). Gives the correction for the issue now (whose day-before issue
    is row 0) and the errors after it, NaN where not learnt from."""
    r = resid.T  # (rows, horizon)
    day1 = min(horizon, DAY_H)
    prev = np.vstack([r[1:, :day1], np.full((1, day1), np.nan)])  # row k's day-before issue is row k + 1
    has = np.isfinite(prev).any(axis=1, keepdims=True)
    w2 = np.where(np.isfinite(r) & has, w, 0.0)
    fit = _fit(_correction_features(prev, horizon), np.nan_to_num(r), w2)
    corr = fit.predict(_correction_features(r[:1, :DAY_H], horizon))[0]
    return corr, np.where(w2.T > 0, fit.loo, resid)


def _conformal_levels(quantiles: tuple[float, float], n: int) -> tuple[float, float]:
    """The residual quantiles to take so that, with ``n`` exchangeable calibration days, each side
    holds its nominal level: rank ``ceil((n + 1) q)`` of ``n`` (Vovk et al.; Lei et al. 2018)."""
    lo, hi = quantiles
    upper = min(1.0, np.ceil((n + 1) * hi) / n)
    lower = max(0.0, 1.0 - np.ceil((n + 1) * (1.0 - lo)) / n)
    return float(lower), float(upper)


def _one_thread() -> Any:
    """BLAS limited to one thread while fitting: the matrices are small, and a thread pool contending
    for a busy hub's cores makes a fit several times slower (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn on the hub
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def forecast_day_ahead(values: np.ndarray, first_hour_s: float, horizon: int = 48, **kwargs: Any) -> DayAheadResult:
    """Forecast the ``horizon`` hours after ``values`` (see :func:`_forecast`), BLAS on one thread."""
    with _one_thread():
        return _forecast(values, first_hour_s, horizon, **kwargs)


def _forecast(values: np.ndarray, first_hour_s: float, horizon: int = 48, *,
                       holidays: np.ndarray | None = None, utc_offset_h: float = 0.0,
                       quantiles: tuple[float, float] = (0.1, 0.9), max_days: int | None = None,
                       calib_days: int = 112, pool: int = 2, day1_level_in: float = DAY1_LEVEL_IN) -> DayAheadResult:
    """Forecast the ``horizon`` hours after ``values`` (hourly, NaN where missing, oldest first;
    ``first_hour_s`` is the epoch second of the first value's hour).

    ``holidays``: local days since 1970-01-01 that behave like a Sunday; ``max_days``: train on
    at most this many days of the history (the most recent); ``day1_level_in``: how much further in the
    first 24 hours' interval levels are than ``quantiles`` (module doc).
    """
    if not 1 <= horizon <= 7 * DAY_H - DAY_H:
        raise ValueError(f"horizon: expected 1..144 hours, got {horizon}")
    x = np.asarray(values, dtype=np.float64)
    if max_days is not None and len(x) > max_days * DAY_H:
        first_hour_s += HOUR_S * (len(x) - max_days * DAY_H)
        x = x[-max_days * DAY_H:]
    n = len(x)
    usable = np.isfinite(x) & (x > 0)
    if n < MIN_DAYS * DAY_H or usable.sum() < 0.75 * n:
        raise ValueError(f"{n} hours ({int(usable.sum())} with positive load values); the day-ahead model needs "
                         f"at least {MIN_DAYS} days, three quarters of them observed")
    floor = float(np.nanmin(np.where(usable, x, np.nan)))
    lx = np.log(np.maximum(fill_gaps(np.where(usable, x, np.nan)), floor * 0.5))
    lx_ext = np.concatenate([lx, np.zeros(horizon)])
    idx = np.arange(n + horizon)
    day_of = np.floor((first_hour_s + HOUR_S * idx + utc_offset_h * HOUR_S) / 86400.0).astype(np.int64)
    known = np.zeros(0, dtype=np.int64) if holidays is None else np.asarray(holidays, dtype=np.int64)
    holiday = np.isin(day_of, known)

    m = np.arange(-(-horizon // DAY_H), n // DAY_H + 1)
    train_issues = n - DAY_H * m
    train_issues = train_issues[train_issues >= WEEK_H + DAY_H]
    rows = len(train_issues)  # most recent first
    if rows < 5:
        raise ValueError(f"{n} hours give {rows} training days; need at least 5")
    small = rows < SMALL_BELOW_DAYS
    if not small and horizon > DAY_H:  # yesterday's issue too: its first day is known (the correction needs it)
        train_issues = np.concatenate([[n - DAY_H], train_issues])
        rows += 1
    base = float(np.mean(lx)) if rows >= LEVEL_FROM_DAYS else None
    feats, level = _features(lx_ext, train_issues, horizon, day_of, holiday, small, base)
    t = train_issues[:, None] + np.arange(horizon)[None, :]
    y = lx_ext[t] - level[:, None]  # (rows, horizon)
    w = np.concatenate([usable, np.zeros(horizon, dtype=bool)])[t].astype(np.float64)  # filled or future: not learnt
    if base is not None:  # a year or more: the days at the same time of year count most (a floor keeps the rest)
        ago = (n - train_issues) / DAY_H
        apart = np.abs((ago + 182.62) % 365.2425 - 182.62)
        w *= (SEASON_FLOOR + np.exp(-0.5 * (apart / SEASON_SD_DAYS) ** 2))[:, None]
    model = _fit(feats, y, w)
    if not small:  # once more with Huber weights: an outlier day (a storm, an unflagged holiday) pulls less
        err = np.abs(model.loo.T)  # (rows, horizon)
        k = HUBER_K * 1.4826 * float(np.median(err[w > 0]))
        model = _fit(feats, y, w * np.minimum(1.0, k / np.maximum(err, 1e-12)))
    now_feats, now_level = _features(lx_ext, np.array([n]), horizon, day_of, holiday, small, base)
    # and the forecast within the range of changes the history showed, with a margin of half of it
    span = np.where(w > 0, y, np.nan)
    lo_y, hi_y = np.nanmin(span, axis=0), np.nanmax(span, axis=0)
    pad = 0.5 * (hi_y - lo_y)
    raw = model.predict(now_feats)[0]
    resid = np.where(w.T > 0, model.loo, np.nan)  # (horizon, rows): the out-of-fit errors
    if not small:
        corr, resid = _correction(resid, w, horizon)
        raw = raw + corr
    pred_log = np.clip(raw, lo_y - pad, hi_y + pad) + now_level[0]

    recent = min(rows, calib_days)
    res = resid[:, :recent]  # (horizon, recent)
    # split-conformal ranks with the days as the exchangeable units (hours of a day err together); the
    # first day's levels DAY1_LEVEL_IN further in: its leave-one-out errors overstate the day-ahead error
    levels = _conformal_levels(quantiles, recent)
    day1 = _conformal_levels((quantiles[0] + day1_level_in, quantiles[1] - day1_level_in), recent)
    lo_q, hi_q = np.empty(horizon), np.empty(horizon)
    for s in range(horizon):
        pooled = res[max(0, s - pool):s + pool + 1].ravel()
        pooled = pooled[np.isfinite(pooled)]
        lo_q[s], hi_q[s] = np.quantile(pooled, day1 if s < DAY_H else levels) if len(pooled) else (0.0, 0.0)
    point = np.exp(pred_log)
    lower = point * np.exp(np.minimum(lo_q, 0.0))
    upper = point * np.exp(np.maximum(hi_q, 0.0))
    info = {"train_days": rows, "features": feats.shape[2], "alpha_median": float(np.median(model.alpha)),
            "loo_rmse_log": float(np.sqrt(np.mean(model.err))), "calib_days": recent,
            "levels": levels, "levels_day1": day1}
    return DayAheadResult(point, lower, upper, info)
