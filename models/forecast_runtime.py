"""Scoring a linear load forecaster: numpy + onnxruntime only (no scikit-learn, no ``onnx``).

A forecaster trained by :mod:`models.forecast` is one ONNX graph whose metadata carries its
:class:`ForecastSpec` (JSON under ``sentinel.forecast_spec``), so the graph's bytes are the whole
model. The graph reads ``history`` (rows of the last ``input_length`` values, oldest first, in the
series' own unit) and, when the spec has any, ``exog`` (the exogenous features built by
:func:`exog_features`), and writes ``forecast``, ``lower`` and ``upper`` (rows of ``horizon`` values):

    last     = history[:, L-1]
    forecast = last + (history - last) @ A + exog @ B + c
    lower    = forecast + q_lower;  upper = forecast + q_upper

``A``, ``B`` and ``c`` are a closed-form ridge fit folded back to the series' unit; ``q_lower``
and ``q_upper`` are validation-residual quantiles per horizon step (the spec's ``quantiles``).

Exogenous features, in this order (all for the forecast steps, on local time ``utc + utc_offset_h``):

- ``calendar``: one-hot hour of day (24) and day of week (7, Monday first) of the first step
- ``holidays``: per step, 1.0 if its local date is in the holiday list
- ``temperature``: per step, the temperature (deg C) expected then
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import msgspec
import numpy as np
import onnxruntime as ort

__all__ = [
    "METADATA_KEY", "ForecastLoadError", "ForecastModel", "ForecastSpec", "IntervalForecast", "exog_features",
    "holiday_days", "load_forecast_model",
]

METADATA_KEY = "sentinel.forecast_spec"
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


class ForecastLoadError(Exception):
    """onnxruntime could not load a forecaster, or its graph does not match the spec it carries."""


class ForecastSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a forecaster reads and writes. Values are in ``unit``; steps ``step_s`` apart."""

    input_length: int
    horizon: int
    step_s: float = 3600.0
    calendar: bool = False
    holidays: bool = False
    temperature: bool = False
    utc_offset_h: float = 0.0
    quantiles: tuple[float, float] = (0.1, 0.9)
    decomposition: int = 0  # moving-average kernel of a DLinear-style trend/seasonal split (0: none)
    target: str = ""
    unit: str = ""
    alpha: tuple[float, ...] = ()  # ridge penalty per horizon step, picked on the validation windows
    trained_rows: int = 0
    metrics: dict[str, float] = msgspec.field(default_factory=dict)  # validation figures (z-scored scale)

    @property
    def n_exog(self) -> int:
        return (31 if self.calendar else 0) + self.horizon * (int(self.holidays) + int(self.temperature))


def holiday_days(dates: Iterable[date]) -> np.ndarray:
    """Holiday dates as sorted int64 days since 1970-01-01 (the form :func:`exog_features` reads)."""
    return np.unique(np.asarray([d.toordinal() - _EPOCH_ORDINAL for d in dates], dtype=np.int64))


def exog_features(spec: ForecastSpec, first_step_s: np.ndarray, *, holidays: np.ndarray | None = None,
                  temperature_c: np.ndarray | None = None) -> np.ndarray:
    """``(rows, spec.n_exog)`` features for forecasts whose first step is at ``first_step_s`` (epoch s, UTC).

    ``holidays``: days since the epoch (:func:`holiday_days`); ``temperature_c``: ``(rows, horizon)``.
    """
    t = np.atleast_1d(np.asarray(first_step_s, dtype=np.float64))
    n = len(t)
    parts = []
    local = t + spec.utc_offset_h * 3600.0
    if spec.calendar:
        hour = (np.floor(local / 3600.0).astype(np.int64)) % 24
        dow = (np.floor(local / 86400.0).astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
        cal = np.zeros((n, 31))
        cal[np.arange(n), hour] = 1.0
        cal[np.arange(n), 24 + dow] = 1.0
        parts.append(cal)
    if spec.holidays:
        steps = local[:, None] + spec.step_s * np.arange(spec.horizon)[None, :]
        day = np.floor(steps / 86400.0).astype(np.int64)
        known = np.zeros(0, dtype=np.int64) if holidays is None else np.asarray(holidays, dtype=np.int64)
        parts.append(np.isin(day, known).astype(np.float64))
    if spec.temperature:
        if temperature_c is None:
            raise ValueError(f"forecaster {spec.target or ''} needs temperatures for the {spec.horizon} forecast steps")
        temp = np.asarray(temperature_c, dtype=np.float64).reshape(n, -1)
        if temp.shape[1] != spec.horizon or not np.isfinite(temp).all():
            raise ValueError(f"temperatures must be ({n}, {spec.horizon}) finite values, got {temp.shape}")
        parts.append(temp)
    return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))


@dataclass(frozen=True)
class IntervalForecast:
    """Rows of ``horizon`` values: the point forecast and its interval (the spec's quantiles)."""

    point: np.ndarray
    lower: np.ndarray
    upper: np.ndarray


class ForecastModel:
    """A loaded forecaster: its ONNX bytes, spec and an ``InferenceSession`` (one thread)."""

    def __init__(self, onnx: bytes) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ForecastLoadError(f"onnxruntime cannot load the forecaster: {exc}") from exc
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ForecastLoadError(f"not a forecaster: the graph's metadata has no {METADATA_KEY!r}")
        try:
            self.spec = msgspec.json.decode(meta[METADATA_KEY], type=ForecastSpec)
        except msgspec.ValidationError as exc:
            raise ForecastLoadError(f"the forecaster's spec does not validate: {exc}") from exc
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        expected = {"history": self.spec.input_length, **({"exog": self.spec.n_exog} if self.spec.n_exog else {})}
        if set(inputs) != set(expected) or any(inputs[k][-1] != v for k, v in expected.items()):
            raise ForecastLoadError(f"graph inputs {inputs} do not match the spec (widths {expected})")
        self.onnx = onnx

    def predict(self, history: np.ndarray, first_step_s: np.ndarray | float | None = None, *,
                holidays: np.ndarray | None = None, temperature_c: np.ndarray | None = None) -> IntervalForecast:
        """Forecast from ``history`` (``(rows, L)`` or ``(L,)``); exogenous features built from the times."""
        h = np.asarray(history, dtype=np.float64)
        single = h.ndim == 1
        h = np.atleast_2d(h)
        if h.shape[1] != self.spec.input_length or not np.isfinite(h).all():
            raise ValueError(f"history must be rows of {self.spec.input_length} finite values, got {h.shape}")
        feeds = {"history": np.ascontiguousarray(h)}
        if self.spec.n_exog:
            if first_step_s is None:
                raise ValueError("this forecaster reads calendar/holiday/temperature features: give first_step_s")
            t = np.broadcast_to(np.asarray(first_step_s, dtype=np.float64), (len(h),))
            feeds["exog"] = np.ascontiguousarray(exog_features(self.spec, t, holidays=holidays,
                                                               temperature_c=temperature_c))
        point, lower, upper = self.session.run(["forecast", "lower", "upper"], feeds)
        if single:
            point, lower, upper = point[0], lower[0], upper[0]
        return IntervalForecast(point, lower, upper)

    def predict_exog(self, history: np.ndarray, exog: np.ndarray | None) -> IntervalForecast:
        """Forecast from ready-made feature rows (``exog``: ``(rows, spec.n_exog)``)."""
        feeds = {"history": np.ascontiguousarray(np.atleast_2d(history), dtype=np.float64)}
        if self.spec.n_exog:
            feeds["exog"] = np.ascontiguousarray(exog, dtype=np.float64)
        point, lower, upper = self.session.run(["forecast", "lower", "upper"], feeds)
        return IntervalForecast(point, lower, upper)


def load_forecast_model(onnx: bytes) -> ForecastModel:
    """A forecaster from its ONNX bytes (as :func:`models.forecast.export_forecaster` writes them)."""
    return ForecastModel(onnx)
