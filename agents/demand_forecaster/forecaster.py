"""The demand forecaster: hourly aggregation, model or profile forecast, peak, margin and risk.

Methods (``LoadForecast.method``):

- ``linear_model``: with no model handed in and at least ``config.min_model_hours`` (three weeks)
  of history, the day-ahead forecaster of :mod:`agents.demand_forecaster.dayahead` fitted now on the
  last ``config.max_history_days`` days (one ridge regression per horizon hour on log loads: the last
  24 h, daily means, the same hour last week, day of week, holidays, season; its interval from the
  leave-one-out errors of the last 56 days). Measured on four real PJM zones (docs/forecasting.md):
  MAPE about 3 % at 24 h with a year of history. An ONNX forecaster handed in (``model=``,
  :func:`train_model`'s bytes) is scored with :mod:`models.forecast_runtime` instead (inputs: the
  last ``input_hours`` hourly values, hour of day and day of week, holiday flags, temperatures;
  intervals: validation residual quantiles per horizon hour).
- ``weekly_profile``: with at least a week of history, each hour is the mean of the same hour of
  the week in up to four earlier weeks (a holiday takes the Sunday's hours).
- ``daily_profile``: with one to seven days, the mean of the same hour in up to seven earlier days.
  The profiles' intervals are the quantiles of their own errors over the history (or +-10 % when
  there are fewer than 24 of them).

The probability of exceeding capacity reads each hour's forecast as normal with the upper
interval's spread (``(upper - point) / z``), and takes the largest hour's probability: errors of
neighbouring hours move together, so that is close to the chance of any exceedance in the horizon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from statistics import NormalDist
from typing import Any, Literal

import msgspec
import numpy as np

from agents.demand_forecaster.dayahead import DayAheadResult, forecast_day_ahead
from agents.findings import Finding
from models.forecast_runtime import ForecastModel, holiday_days, load_forecast_model

__all__ = [
    "AGENT", "ForecastConfig", "ForecastPoint", "InsufficientHistory", "LoadForecast", "LoadHistory", "forecast",
    "train_model",
]

AGENT = "demand_forecaster"
HOUR_S = 3600.0
_NORMAL = NormalDist()


class InsufficientHistory(ValueError):
    """Too little load history to forecast from (names the device and what it had)."""


class LoadHistory(msgspec.Struct, frozen=True, kw_only=True):
    """A feeder's or substation's load as measured: any sampling, aggregated here to hourly means.

    ``values`` and ``capacity`` share ``unit`` (MW or A). ``temperature_c`` (optional) is aligned
    with ``timestamps``; ``temperature_forecast_c`` gives hourly temperatures from the first
    forecast hour on (without it, a model that reads temperature repeats the last day's).
    Naive timestamps are UTC.
    """

    device_id: str
    timestamps: list[datetime]
    values: list[float | None]
    capacity: float
    unit: str = "MW"
    substation: str = ""
    temperature_c: list[float | None] | None = None
    temperature_forecast_c: list[float] | None = None

    def __post_init__(self) -> None:
        if len(self.timestamps) != len(self.values):
            raise ValueError(f"{self.device_id}: {len(self.timestamps)} timestamps but {len(self.values)} values")
        if self.temperature_c is not None and len(self.temperature_c) != len(self.timestamps):
            raise ValueError(f"{self.device_id}: temperature_c has {len(self.temperature_c)} values, "
                             f"timestamps {len(self.timestamps)}")
        if not self.capacity > 0:
            raise ValueError(f"{self.device_id}: capacity must be positive, got {self.capacity}")


class ForecastConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How far to forecast, from what, and when the margin to capacity is a risk."""

    horizon_hours: int = 48
    input_hours: int = 168  # the model's input: one week of hours
    min_model_hours: int = 504  # three weeks of history before a model is trained
    max_history_days: int = 1095  # the day-ahead model trains on at most the last three years
    holidays: tuple[date, ...] = ()  # local dates that behave like a Sunday
    utc_offset_h: float = 0.0  # local time for calendar features and holidays
    interval: tuple[float, float] = (0.1, 0.9)
    risk_warning: float = 0.2  # probability of exceeding capacity within the horizon
    risk_critical: float = 0.5
    margin_warning_pct: float = 2.0  # peak margin below this share of capacity is a warning
    margin_critical_pct: float = 0.0  # at or below: the forecast peak reaches capacity

    def __post_init__(self) -> None:
        if not 24 <= self.horizon_hours <= 48:
            raise ValueError(f"horizon_hours: expected 24..48, got {self.horizon_hours}")
        if self.input_hours < 24 or self.min_model_hours < self.input_hours + self.horizon_hours + 95:
            raise ValueError(f"min_model_hours ({self.min_model_hours}) must leave at least 96 windows of "
                             f"input_hours ({self.input_hours}) + horizon_hours ({self.horizon_hours})")
        if self.max_history_days < 14:
            raise ValueError(f"max_history_days: expected at least 14, got {self.max_history_days}")
        lo, hi = self.interval
        if not 0 < lo < 0.5 < hi < 1:
            raise ValueError(f"interval: expected quantiles (lower < 0.5 < upper), got {self.interval}")
        if not 0 < self.risk_warning <= self.risk_critical <= 1:
            raise ValueError("risk_warning and risk_critical: expected 0 < warning <= critical <= 1")
        if self.margin_critical_pct > self.margin_warning_pct:
            raise ValueError("margin_critical_pct must not exceed margin_warning_pct")


class ForecastPoint(msgspec.Struct, frozen=True, array_like=True):
    """One hour (starting at ``timestamp``): the forecast mean load and its interval."""

    timestamp: datetime
    value: float
    lower: float
    upper: float


class LoadForecast(msgspec.Struct, frozen=True, kw_only=True):
    device_id: str
    substation: str
    generated_at: datetime
    unit: str
    method: Literal["linear_model", "weekly_profile", "daily_profile"]
    method_note: str  # why this method, and the model's figures when one was used
    history_hours: int
    points: list[ForecastPoint]
    peak_time: datetime
    peak_value: float
    peak_lower: float
    peak_upper: float
    capacity: float
    margin: float  # capacity - peak_value
    margin_pct: float  # of capacity
    exceed_probability: float  # of exceeding capacity within the horizon
    status: Literal["normal", "warning", "critical"]
    severity: str  # INFO when normal
    description: str
    finding: Finding | None = None  # capacity_risk, when a threshold is crossed


# -- hourly series --------------------------------------------------------------------------------

@dataclass
class _Hourly:
    start_s: float  # epoch seconds of the first hour
    values: np.ndarray  # hourly means, NaN where no sample
    temperature: np.ndarray | None

    @property
    def hours(self) -> int:
        return len(self.values)

    def times(self) -> np.ndarray:
        return self.start_s + HOUR_S * np.arange(self.hours)


def _epoch(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def _hourly(history: LoadHistory, now: datetime | None) -> tuple[_Hourly, datetime]:
    t = np.asarray([_epoch(x) for x in history.timestamps], dtype=np.float64)
    v = np.asarray([np.nan if x is None else x for x in history.values], dtype=np.float64)
    temp = None if history.temperature_c is None else np.asarray(
        [np.nan if x is None else x for x in history.temperature_c], dtype=np.float64)
    now_s = float(t.max()) if now is None and len(t) else (_epoch(now) if now is not None else 0.0)
    keep = (t <= now_s) & np.isfinite(v)
    if not keep.any():
        raise InsufficientHistory(f"{history.device_id}: no load values at or before {now}")
    hour = np.floor(t[keep] / HOUR_S).astype(np.int64)
    first = int(hour.min())
    idx = hour - first
    n = int(idx.max()) + 1
    counts = np.bincount(idx, minlength=n)
    with np.errstate(invalid="ignore"):
        values = np.bincount(idx, weights=v[keep], minlength=n) / counts
        hourly_temp = None
        if temp is not None:
            tk = temp[keep]
            ok = np.isfinite(tk)
            tc = np.bincount(idx[ok], minlength=n)
            hourly_temp = np.bincount(idx[ok], weights=tk[ok], minlength=n) / tc
    generated = datetime.fromtimestamp(now_s, timezone.utc) if now is None else now
    return _Hourly(first * HOUR_S, values, hourly_temp), generated


def _fill(values: np.ndarray) -> np.ndarray:
    """Missing hours from a week earlier, else a day earlier, else linear interpolation."""
    out = values.copy()
    for lag in (168, 24):
        gap = np.isnan(out)
        gap[:lag] = False
        for i in np.flatnonzero(gap):
            out[i] = out[i - lag]
    gap = np.isnan(out)
    if gap.any():
        ok = np.flatnonzero(~gap)
        out[gap] = np.interp(np.flatnonzero(gap), ok, out[ok])
    return out


# -- methods --------------------------------------------------------------------------------------

def _local_days(times_s: np.ndarray, offset_h: float) -> np.ndarray:
    return np.floor((times_s + offset_h * 3600.0) / 86400.0).astype(np.int64)


def _temperature_ok(series: _Hourly) -> bool:
    return series.temperature is not None and float(np.mean(np.isfinite(series.temperature))) >= 0.9


def train_model(history: LoadHistory, config: ForecastConfig = ForecastConfig(), now: datetime | None = None) -> bytes:
    """Train the linear forecaster on ``history`` and export it: the ONNX bytes ``forecast`` reads.

    Hub side (imports :mod:`models.forecast`). The last fifth of the windows (at least 48) picks
    the ridge penalties and the intervals; the model is then refitted on all of them.
    """
    from models.forecast import fit_linear

    series, _ = _hourly(history, now)
    return _train(series, history, config, fit_linear).to_onnx()


def _train(series: _Hourly, history: LoadHistory, config: ForecastConfig, fit_linear: Any) -> Any:
    """``models.forecast.fit_linear`` (passed in: imported only where training happens) on the history."""
    n = series.hours
    n_in, horizon = config.input_hours, config.horizon_hours
    windows = n - n_in - horizon + 1
    if n < config.min_model_hours or windows < 96:
        raise InsufficientHistory(f"{history.device_id}: {n} hours of history; a model needs at least "
                                  f"{config.min_model_hours}")
    val_windows = max(48, windows // 5)
    cut = n - val_windows  # the training windows lie in rows [0, cut); the validation ones end at n
    temperature = _fill(series.temperature) if _temperature_ok(series) else None
    return fit_linear(
        _fill(series.values), input_length=n_in, horizon=horizon, train=(0, cut),
        val=(cut - n_in - horizon + 1, n),
        times_s=series.times(), calendar=True,
        holidays=holiday_days(config.holidays) if config.holidays else None, temperature_c=temperature,
        utc_offset_h=config.utc_offset_h, usable=np.isfinite(series.values), quantiles=config.interval,
        refit=True, target=history.device_id, unit=history.unit)


def _model_forecast(model: ForecastModel, series: _Hourly, history: LoadHistory,
                    config: ForecastConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    spec = model.spec
    filled = _fill(series.values)
    window = filled[-spec.input_length:]
    first_step = series.start_s + HOUR_S * series.hours
    temp = None
    note = ""
    if spec.temperature:
        if history.temperature_forecast_c is not None and len(history.temperature_forecast_c) >= spec.horizon:
            temp = np.asarray(history.temperature_forecast_c[:spec.horizon], dtype=np.float64)[None]
        else:
            last_day = _fill(series.temperature)[-24:] if series.temperature is not None else None
            if last_day is None or not np.isfinite(last_day).all():
                raise InsufficientHistory(f"{history.device_id}: the model reads temperature; none given")
            temp = np.resize(last_day, spec.horizon)[None]
            note = "; no temperature forecast given, the last day's temperatures repeated"
    out = model.predict(window, first_step, holidays=holiday_days(config.holidays), temperature_c=temp)
    h = config.horizon_hours
    return out.point[:h], out.lower[:h], out.upper[:h], note


def _profile_forecast(series: _Hourly, config: ForecastConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    x = series.values
    n, h = series.hours, config.horizon_hours
    weekly = int(np.isfinite(x[:max(n - 168, 0)]).sum()) >= 24  # some hour is a week old
    season, depth = (168, 4) if weekly else (24, 7)
    holidays = set(holiday_days(config.holidays).tolist())
    all_times = series.start_s + HOUR_S * np.arange(n + h)
    days = _local_days(all_times, config.utc_offset_h)

    def source(i: int) -> int:
        """The hour whose earlier weeks give hour i's profile: itself, or for a holiday the same hour
        of the Sunday after the latest Sunday at or before it (so its earlier weeks start at that Sunday)."""
        if weekly and int(days[i]) in holidays:
            since_sunday = ((int(days[i]) + 3) % 7 - 6) % 7  # (Monday 0 .. Sunday 6) - 6
            return i - 24 * since_sunday + (168 if since_sunday else 0)
        return i

    ext = np.concatenate([x, np.full(h, np.nan)])

    def predict(i: int) -> float:
        j = source(i)
        past = [ext[j - season * k] for k in range(1, depth + 1) if 0 <= j - season * k < min(i, n)]
        past = [p for p in past if np.isfinite(p)]
        return float(np.mean(past)) if past else np.nan

    point = np.array([predict(n + s) for s in range(h)])
    if np.isnan(point).any():  # hours never seen: the last day's mean
        point[np.isnan(point)] = float(np.nanmean(x[-24:]))
    back = np.array([x[i] - predict(i) for i in range(season, n)]) if n > season else np.zeros(0)
    back = back[np.isfinite(back)]
    lo_q, hi_q = config.interval
    if len(back) >= 24:
        lower, upper = point + np.quantile(back, lo_q), point + np.quantile(back, hi_q)
        spread = f"errors over {len(back)} past hours"
    else:
        lower, upper = point * 0.9, point * 1.1
        spread = "+-10 % (fewer than 24 past errors)"
    name = "weekly" if weekly else "daily"
    return point, lower, upper, (f"{name} profile: mean of the same hour in up to {depth} earlier "
                                 f"{'weeks' if weekly else 'days'}; interval from {spread}")


# -- the forecast ---------------------------------------------------------------------------------

def _fmt(v: float) -> str:
    a = abs(v)
    return f"{v:,.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}"


def _day_word(t: datetime, ref: datetime, utc_offset_h: float = 0.0) -> str:
    """today / tomorrow / on <date> of ``t`` seen from ``ref``, in local time (UTC + offset)."""
    tz = timezone(timedelta(hours=utc_offset_h))
    local = t.astimezone(tz)
    delta = (local.date() - ref.astimezone(tz).date()).days
    return "today" if delta == 0 else "tomorrow" if delta == 1 else f"on {local:%a %Y-%m-%d}"


def _zone(utc_offset_h: float) -> tuple[timezone, str]:
    """The operators' clock: UTC, or local time (named with its offset) when the site sets one."""
    if utc_offset_h == 0:
        return timezone.utc, "UTC"
    return timezone(timedelta(hours=utc_offset_h)), f"local (UTC{utc_offset_h:+g})"


def _clock(t: datetime, utc_offset_h: float) -> str:
    tz, name = _zone(utc_offset_h)
    return f"{t.astimezone(tz):%H:%M} {name}"


def _span(a: datetime, b: datetime, utc_offset_h: float) -> str:
    tz, name = _zone(utc_offset_h)
    return f"{a.astimezone(tz):%a %H:%M}-{b.astimezone(tz):%H:%M} {name}"


def forecast(history: LoadHistory, config: ForecastConfig = ForecastConfig(), now: datetime | None = None, *,
             model: ForecastModel | bytes | None = None) -> LoadForecast:
    """Forecast the next ``config.horizon_hours`` hours after the last hour with data (at or before ``now``).

    ``model``: a trained forecaster (:func:`train_model`'s bytes, or loaded); without one, a model
    is trained here when the history is long enough, else a profile is used.
    """
    series, generated = _hourly(history, now)
    observed = int(np.isfinite(series.values).sum())
    if observed < 24:
        raise InsufficientHistory(f"{history.device_id}: {observed} hours with load values; need at least 24")
    if isinstance(model, (bytes, bytearray)):
        model = load_forecast_model(bytes(model))
    method: str
    note = ""
    day_ahead: DayAheadResult | None = None
    recent_gaps = float(np.mean(np.isnan(series.values[-config.input_hours:])))
    if recent_gaps > 0.25:
        model, note = None, f"{recent_gaps:.0%} of the last {config.input_hours} hours missing: "
    elif model is not None and (model.spec.input_length > series.hours or model.spec.horizon < config.horizon_hours):
        note = (f"model given reads {model.spec.input_length} h and forecasts {model.spec.horizon} h; have "
                f"{series.hours} h, need {config.horizon_hours} h: ")
        model = None
    elif model is None and series.hours >= config.min_model_hours:
        try:
            day_ahead = forecast_day_ahead(series.values, series.start_s, config.horizon_hours,
                                           holidays=holiday_days(config.holidays), utc_offset_h=config.utc_offset_h,
                                           quantiles=config.interval, max_days=config.max_history_days)
        except ValueError as exc:  # too little observed, or loads not positive
            note = f"no day-ahead model ({exc}): "
    if day_ahead is not None:
        point, lower, upper = day_ahead.point, day_ahead.lower, day_ahead.upper
        info = day_ahead.info
        method = "linear_model"
        note += (f"trained now on this history; day-ahead ridge per horizon hour on "
                 f"{info['train_days']} days (log load: last 24 h, daily means, same hour last week, day of "
                 f"week, holidays, season); interval from leave-one-out errors of the last "
                 f"{info['calib_days']} days")
        if _temperature_ok(series):
            note += "; temperature not used"
    elif model is not None:
        point, lower, upper, extra = _model_forecast(model, series, history, config)
        m = model.spec.metrics
        method = "linear_model"
        note += (f"linear model ({model.spec.input_length} h in, {model.spec.horizon} h out, trained on "
                 f"{model.spec.trained_rows} windows; validation MAE {m.get('val_mae', float('nan')):.3g} in units of "
                 f"the series' std){extra}")
    else:
        point, lower, upper, why = _profile_forecast(series, config)
        method = "weekly_profile" if why.startswith("weekly") else "daily_profile"
        short = "" if note else f"{series.hours} h of history (a model needs {config.min_model_hours} h): "
        note = note + short + why
    lower, upper = np.minimum(lower, point), np.maximum(upper, point)
    first = series.start_s + HOUR_S * series.hours
    times = [datetime.fromtimestamp(first + HOUR_S * s, timezone.utc) for s in range(len(point))]
    points = [ForecastPoint(t, float(p), float(lo), float(hi)) for t, p, lo, hi in zip(times, point, lower, upper)]
    return _assess(history, config, generated, method, note, series.hours, points)


def _assess(history: LoadHistory, config: ForecastConfig, generated: datetime, method: str, note: str,
            hours: int, points: list[ForecastPoint]) -> LoadForecast:
    point = np.array([p.value for p in points])
    upper = np.array([p.upper for p in points])
    k = int(np.argmax(point))
    peak = points[k]
    cap = history.capacity
    margin = cap - peak.value
    margin_pct = 100.0 * margin / cap
    z = _NORMAL.inv_cdf(config.interval[1])
    sigma = np.maximum((upper - point) / z, 1e-9 * max(abs(cap), 1.0))
    p_hour = np.array([1.0 - _NORMAL.cdf(float(v)) for v in (cap - point) / sigma])
    risk = float(p_hour.max())
    if risk >= config.risk_critical or margin_pct <= config.margin_critical_pct:
        status, severity = "critical", "CRITICAL"
    elif risk >= config.risk_warning or margin_pct < config.margin_warning_pct:
        status, severity = "warning", "WARNING"
    else:
        status, severity = "normal", "INFO"
    half_pct = 100.0 * (peak.upper - peak.lower) / 2.0 / abs(peak.value) if peak.value else 0.0
    u = history.unit
    off = config.utc_offset_h
    text = (f"DEMAND FORECAST: Peak demand expected {_day_word(peak.timestamp, generated, off)} at "
            f"{_clock(peak.timestamp, off)}: {_fmt(peak.value)} {u} (±{half_pct:.0f}%). "
            f"Current capacity: {_fmt(cap)} {u}. "
            f"Margin: {_fmt(margin)} {u} ({margin_pct:.1f}%).")
    finding = None
    if status == "normal":
        text += " Normal. No action needed."
    else:
        text += (f" Probability of exceeding capacity within the next {len(points)} h: {risk:.0%}. "
                 f"Capacity risk: {severity}.")
        risky = [p.timestamp for p, pr in zip(points, p_hour) if pr >= config.risk_warning] or [peak.timestamp]
        window = _span(risky[0], risky[-1] + timedelta(hours=1), off)
        recommendation = (f"Plan for {window}: transfer load to neighbouring feeders or call demand response, "
                          f"and check transformer cooling and protection settings before the peak.")
        facts = {
            "method": method, "method_note": note, "horizon_hours": len(points), "unit": u,
            "peak_time": peak.timestamp.isoformat(), "peak": peak.value, "peak_lower": peak.lower,
            "peak_upper": peak.upper, "capacity": cap, "margin": margin, "margin_pct": margin_pct,
            "exceed_probability": risk, "risk_thresholds": [config.risk_warning, config.risk_critical],
            "margin_thresholds_pct": [config.margin_warning_pct, config.margin_critical_pct],
            "history_hours": hours,
        }
        finding = Finding(agent=AGENT, type="capacity_risk", severity=severity, timestamp=generated,
                          device_id=history.device_id, substation=history.substation, description=text,
                          metric="load", value=peak.value, threshold=cap, nominal=cap,
                          confidence=min(1.0, hours / config.min_model_hours), recommendation=recommendation,
                          facts=facts, start=risky[0])
    return LoadForecast(device_id=history.device_id, substation=history.substation, generated_at=generated,
                        unit=u, method=method, method_note=note,  # type: ignore[arg-type]
                        history_hours=hours, points=points,
                        peak_time=peak.timestamp, peak_value=peak.value, peak_lower=peak.lower,
                        peak_upper=peak.upper, capacity=cap, margin=margin, margin_pct=margin_pct,
                        exceed_probability=risk, status=status,  # type: ignore[arg-type]
                        severity=severity, description=text,
                        finding=finding)
