"""Training direct multi-horizon linear forecasters (hub side), and the long-horizon evaluation.

The model is NLinear (Zeng et al., AAAI 2023) fitted in closed form: every horizon step is a ridge
regression on the last ``input_length`` values minus the last one (last-value normalisation), plus
optional exogenous features (:func:`models.forecast_runtime.exog_features`: hour of day and day of
week, holiday flags per step, temperature per step). ``decomposition=k`` adds DLinear's split of
the input into a moving-average trend (kernel ``k``, edges repeated) and the remainder, each with
its own weights; both are linear in the input, so the exported graph is the same ``MatMul + Add``.

Fitting: the series is scaled by the training rows' standard deviation, the exogenous columns are
standardised, the intercept is not penalised. One SVD of the training windows gives the ridge
solution for every penalty in ``ALPHAS``; each horizon step keeps the penalty with the lowest
mean squared error on the validation windows. Prediction intervals are the validation residuals'
quantiles per step (10 % and 90 % by default). ``refit=True`` then refits on training and
validation windows together with the chosen penalties (for production; the published protocol
fits on the training rows only, so :func:`evaluate_long_horizon` does not).

numpy and ``onnx`` (for the graph) only; the edge and the agents score with
:mod:`models.forecast_runtime`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

from models.forecast_runtime import (
    METADATA_KEY,
    ForecastModel,
    ForecastSpec,
    IntervalForecast,
    exog_features,
)

__all__ = [
    "ALPHAS", "ETT_BORDERS", "PARITY_ATOL", "LinearForecaster", "evaluate_long_horizon", "fit_linear",
    "moving_average_matrix",
]

ALPHAS = tuple(float(a) for a in np.logspace(-3, 6, 28))
ETT_BORDERS = (8640, 11520, 14400)  # train / validation / test ends, in rows (12, 4 and 4 months of hours)
PARITY_ATOL = 1e-5
TARGET_OPSET = 17


@dataclass
class LinearForecaster:
    """A fitted forecaster in the series' unit: ``point = last + (history - last) @ A + exog @ B + c``."""

    spec: ForecastSpec
    lag_weights: np.ndarray  # A: (input_length, horizon)
    exog_weights: np.ndarray  # B: (n_exog, horizon)
    bias: np.ndarray  # c: (horizon,)
    q_lower: np.ndarray  # (horizon,) added to the point forecast
    q_upper: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, history: np.ndarray, exog: np.ndarray | None = None) -> IntervalForecast:
        """numpy prediction from rows of history and ready-made exogenous features."""
        h = np.atleast_2d(np.asarray(history, dtype=np.float64))
        last = h[:, -1:]
        point = last + (h - last) @ self.lag_weights + self.bias
        if self.spec.n_exog:
            point = point + np.atleast_2d(np.asarray(exog, dtype=np.float64)) @ self.exog_weights
        return IntervalForecast(point, point + self.q_lower, point + self.q_upper)

    def to_onnx(self) -> bytes:
        """The forecaster as an ONNX graph (Gather, Sub, MatMul, Add), its spec in the metadata."""
        return _graph(self)

    def runtime(self) -> ForecastModel:
        """The exported graph loaded as the runtime scores it."""
        return ForecastModel(self.to_onnx())


def _graph(f: LinearForecaster) -> bytes:
    spec = f.spec
    n_in, horizon, n_exog = spec.input_length, spec.horizon, spec.n_exog
    nodes = [
        helper.make_node("Gather", ["history", "last_index"], ["last"], axis=1),
        helper.make_node("Sub", ["history", "last"], ["centred"]),
        helper.make_node("MatMul", ["centred", "lag_weights"], ["lag_part"]),
    ]
    inputs = [helper.make_tensor_value_info("history", TensorProto.DOUBLE, [None, n_in])]
    inits = [numpy_helper.from_array(np.array([n_in - 1], dtype=np.int64), "last_index"),
             numpy_helper.from_array(f.lag_weights.astype(np.float64), "lag_weights"),
             numpy_helper.from_array(f.bias.astype(np.float64), "bias"),
             numpy_helper.from_array(f.q_lower.astype(np.float64), "q_lower"),
             numpy_helper.from_array(f.q_upper.astype(np.float64), "q_upper")]
    linear = "lag_part"
    if n_exog:
        inputs.append(helper.make_tensor_value_info("exog", TensorProto.DOUBLE, [None, n_exog]))
        inits.append(numpy_helper.from_array(f.exog_weights.astype(np.float64), "exog_weights"))
        nodes += [helper.make_node("MatMul", ["exog", "exog_weights"], ["exog_part"]),
                  helper.make_node("Add", ["lag_part", "exog_part"], ["linear"])]
        linear = "linear"
    nodes += [helper.make_node("Add", [linear, "bias"], ["delta"]),
              helper.make_node("Add", ["delta", "last"], ["forecast"]),
              helper.make_node("Add", ["forecast", "q_lower"], ["lower"]),
              helper.make_node("Add", ["forecast", "q_upper"], ["upper"])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None, horizon])
               for name in ("forecast", "lower", "upper")]
    graph = helper.make_graph(nodes, "linear_forecaster", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET)],
                              producer_name="smartgrid-sentinel")
    model.ir_version = 8
    helper.set_model_props(model, {METADATA_KEY: msgspec.json.encode(spec).decode()})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def moving_average_matrix(length: int, kernel: int) -> np.ndarray:
    """``M`` with ``x @ M`` = DLinear's trend: a centred moving average, the edges repeated."""
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"moving-average kernel must be odd and positive, got {kernel}")
    half = (kernel - 1) // 2
    m = np.zeros((length, length))
    for i in range(length):
        for j in range(i - half, i + half + 1):
            m[min(max(j, 0), length - 1), i] += 1.0 / kernel
    return m


def _starts(lo: int, hi: int, input_length: int, horizon: int) -> np.ndarray:
    """Window starts whose inputs and targets all lie in rows [lo, hi)."""
    return np.arange(max(lo, 0), hi - input_length - horizon + 1, dtype=np.int64)


def _windows(series: np.ndarray, starts: np.ndarray, input_length: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    view = sliding_window_view(series, input_length + horizon)[starts]
    return view[:, :input_length], view[:, input_length:]


def fit_linear(
    series: np.ndarray, *, input_length: int, horizon: int, train: tuple[int, int], val: tuple[int, int],
    times_s: np.ndarray | None = None, calendar: bool = False, holidays: np.ndarray | None = None,
    temperature_c: np.ndarray | None = None, decomposition: int = 0, utc_offset_h: float = 0.0,
    usable: np.ndarray | None = None, alphas: Sequence[float] = ALPHAS, alpha_per_step: bool = True,
    quantiles: tuple[float, float] = (0.1, 0.9), refit: bool = False, step_s: float = 3600.0,
    target: str = "", unit: str = "",
) -> LinearForecaster:
    """Fit on windows inside rows ``train`` = (start, stop), pick penalties and intervals on ``val``.

    ``series``: evenly spaced values (no NaN); ``times_s``: their epoch seconds (needed for
    calendar, holiday and temperature features); ``holidays``: days since the epoch
    (:func:`models.forecast_runtime.holiday_days`), which turns on the per-step holiday flags;
    ``temperature_c``: temperatures aligned with ``series`` (the targets' own are the features);
    ``usable``: per row, False where the value was missing and filled in (windows whose targets
    include such a row are left out).
    """
    x = np.asarray(series, dtype=np.float64)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise ValueError("series must be one-dimensional and finite (fill gaps first)")
    spec = ForecastSpec(input_length=input_length, horizon=horizon, step_s=step_s, calendar=calendar,
                        holidays=holidays is not None, temperature=temperature_c is not None,
                        utc_offset_h=utc_offset_h, quantiles=quantiles, decomposition=decomposition,
                        target=target, unit=unit)
    if spec.n_exog and times_s is None:
        raise ValueError("calendar, holiday and temperature features need the series' times (times_s)")
    train_starts = _starts(*train, input_length, horizon)
    val_starts = _starts(*val, input_length, horizon)
    if usable is not None:
        ok = sliding_window_view(np.asarray(usable, dtype=bool), horizon)
        train_starts = train_starts[ok[train_starts + input_length].all(axis=1)]
        val_starts = val_starts[ok[val_starts + input_length].all(axis=1)]
    if len(train_starts) < 2 or len(val_starts) < 1:
        raise ValueError(f"too few windows of {input_length} + {horizon} rows: {len(train_starts)} to train on, "
                         f"{len(val_starts)} to validate on")
    lo, hi = train
    scale = float(np.std(x[max(lo, 0):hi])) or 1.0
    trend = moving_average_matrix(input_length, decomposition) if decomposition else None

    def design(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        hist, fut = _windows(x, starts, input_length, horizon)
        last = hist[:, -1:]
        lags = (hist - last) / scale
        feats = [lags] if trend is None else [lags @ trend, lags - lags @ trend]
        exog = np.zeros((len(starts), 0))
        if spec.n_exog:
            temp = None if temperature_c is None else sliding_window_view(
                np.asarray(temperature_c, dtype=np.float64), horizon)[starts + input_length]
            exog = exog_features(spec, np.asarray(times_s, dtype=np.float64)[starts + input_length],
                                 holidays=holidays, temperature_c=temp)
        return np.concatenate(feats, axis=1), exog, (fut - last) / scale, hist

    lag_tr, ex_tr, y_tr, _ = design(train_starts)
    lag_va, ex_va, y_va, hist_va = design(val_starts)
    ex_mean = ex_tr.mean(axis=0)
    ex_std = ex_tr.std(axis=0)
    ex_std[ex_std < 1e-12] = 1.0

    def stack(lag: np.ndarray, ex: np.ndarray) -> np.ndarray:
        return np.concatenate([lag, (ex - ex_mean) / ex_std], axis=1)

    z_tr, z_va = stack(lag_tr, ex_tr), stack(lag_va, ex_va)
    alphas = np.asarray(alphas, dtype=np.float64)
    weights, intercepts, val_err = _ridge_path(z_tr, y_tr, alphas, z_va, y_va)
    mse = val_err.mean(axis=1)  # (alphas, horizon)
    if alpha_per_step:
        pick = np.argmin(mse, axis=0)
    else:
        pick = np.full(horizon, int(np.argmin(mse.mean(axis=1))))
    steps = np.arange(horizon)
    w = weights[pick, :, steps].T  # (features, horizon)
    b = intercepts[pick, steps]
    pred_va = z_va @ w + b
    resid = (y_va - pred_va) * scale  # in the series' unit
    q_lower, q_upper = np.quantile(resid, quantiles, axis=0)
    metrics = {"val_mse": float(np.mean((y_va - pred_va) ** 2)), "val_mae": float(np.mean(np.abs(y_va - pred_va))),
               "val_windows": float(len(val_starts)), "train_windows": float(len(train_starts)),
               "scale": scale}
    trained_rows = len(train_starts)
    if refit:
        z_all = np.concatenate([z_tr, z_va])
        y_all = np.concatenate([y_tr, y_va])
        uniq = np.unique(pick)
        ws, bs, _ = _ridge_path(z_all, y_all, alphas[uniq], None, None)
        slot = np.searchsorted(uniq, pick)
        w, b = ws[slot, :, steps].T, bs[slot, steps]
        trained_rows += len(val_starts)
    # fold scaling, standardisation and the decomposition back into the series' unit
    n_lag = lag_tr.shape[1]
    w_lag, w_ex = w[:n_lag], w[n_lag:]
    if trend is not None:
        w_lag = trend @ w_lag[:input_length] + (np.eye(input_length) - trend) @ w_lag[input_length:]
    exog_weights = scale * w_ex / ex_std[:, None]
    bias = scale * (b - (ex_mean / ex_std) @ w_ex)
    spec = msgspec.structs.replace(spec, alpha=tuple(float(a) for a in alphas[pick]), trained_rows=trained_rows,
                                   metrics=metrics)
    forecaster = LinearForecaster(spec, w_lag, exog_weights, bias, q_lower, q_upper)
    forecaster.info = {"val_starts": val_starts, "train_starts": train_starts}
    if not refit:  # the folded model must predict the validation windows as fitted
        check = forecaster.predict(hist_va, ex_va).point
        expected = hist_va[:, -1:] + pred_va * scale
        worst = float(np.max(np.abs(check - expected)))
        assert worst <= 1e-6 * max(1.0, float(np.max(np.abs(expected)))), f"folding error {worst:.3g}"
    return forecaster


def _ridge_path(z: np.ndarray, y: np.ndarray, alphas: np.ndarray, z_val: np.ndarray | None,
                y_val: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge weights ``(alphas, features, outputs)``, intercepts ``(alphas, outputs)`` and, with
    validation rows, their squared errors ``(alphas, val rows, outputs)`` (unpenalised intercept)."""
    mz, my = z.mean(axis=0), y.mean(axis=0)
    u, s, vt = np.linalg.svd(z - mz, full_matrices=False)
    uty = u.T @ (y - my)
    weights = np.empty((len(alphas), z.shape[1], y.shape[1]))
    intercepts = np.empty((len(alphas), y.shape[1]))
    errors = np.empty((len(alphas), 0 if y_val is None else len(y_val), y.shape[1]))
    proj = None if z_val is None else (z_val - mz) @ vt.T
    for k, alpha in enumerate(alphas):
        coef = (s / (s * s + alpha))[:, None] * uty
        weights[k] = vt.T @ coef
        intercepts[k] = my - mz @ weights[k]
        if proj is not None:
            errors[k] = (y_val - (proj @ coef + my)) ** 2
    return weights, intercepts, errors


# -- the published long-horizon protocol ----------------------------------------------------------

def evaluate_long_horizon(csv_path: str | Path, target: str, input_length: int, horizon: int, *,
                          borders: tuple[int, int, int] = ETT_BORDERS, calendar: bool = False,
                          decomposition: int = 0, alpha_per_step: bool = True) -> dict[str, Any]:
    """MSE and MAE of the linear forecaster on the test windows, as the ETT papers measure them.

    Rows split train ``[0, b0)``, validation ``[b0 - L, b1)``, test ``[b1 - L, b2)`` (ETTh1:
    8,640 / 11,520 / 14,400); the target is z-scored with the training rows' mean and standard
    deviation (ddof 0); test windows slide by one row; errors are on the z-scored scale. The
    figures of a "repeat the last value" forecast on the same windows come back beside them.
    """
    from models.tabular import read_csv

    began = time.perf_counter()
    table = read_csv(csv_path, columns=[target])
    b0, b1, b2 = borders
    if table.rows < b2:
        raise ValueError(f"{csv_path}: {table.rows} rows; the protocol's test split ends at row {b2}")
    raw = table.columns[target][:b2]
    if not np.isfinite(raw).all():
        raise ValueError(f"{csv_path}: column {target!r} has missing values in rows 0..{b2}")
    mean, std = float(raw[:b0].mean()), float(raw[:b0].std())
    z = (raw - mean) / std
    read_s = time.perf_counter() - began
    began = time.perf_counter()
    model = fit_linear(z, input_length=input_length, horizon=horizon, train=(0, b0), val=(b0 - input_length, b1),
                       times_s=table.time_s[:b2], calendar=calendar, decomposition=decomposition,
                       alpha_per_step=alpha_per_step, target=target)
    fit_s = time.perf_counter() - began
    test_starts = _starts(b1 - input_length, b2, input_length, horizon)
    hist, fut = _windows(z, test_starts, input_length, horizon)
    exog = (exog_features(model.spec, table.time_s[test_starts + input_length]) if model.spec.n_exog else None)
    pred = model.predict(hist, exog)
    err = fut - pred.point
    repeat = fut - hist[:, -1:]
    covered = float(np.mean((fut >= pred.lower) & (fut <= pred.upper)))
    alpha = np.asarray(model.spec.alpha)
    return {
        "target": target, "input_length": input_length, "horizon": horizon,
        "mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))),
        "repeat_last_mse": float(np.mean(repeat ** 2)), "repeat_last_mae": float(np.mean(np.abs(repeat))),
        "val_mse": model.spec.metrics["val_mse"], "val_mae": model.spec.metrics["val_mae"],
        "interval_coverage": covered,
        "rows": {"train": [0, b0], "val": [b0 - input_length, b1], "test": [b1 - input_length, b2]},
        "windows": {"train": len(model.info["train_starts"]), "val": len(model.info["val_starts"]),
                    "test": len(test_starts)},
        "train_mean": mean, "train_std": std,
        "alpha_min": float(alpha.min()), "alpha_median": float(np.median(alpha)), "alpha_max": float(alpha.max()),
        "calendar": calendar, "decomposition": decomposition,
        "read_seconds": read_s, "fit_seconds": fit_s,
    }
