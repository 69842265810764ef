"""The linear forecaster: closed-form fit, ONNX parity, the long-horizon protocol's arithmetic, the
``models forecast-eval`` command, and (when ../shared/data is present) ETTh1 at horizon 96."""

from __future__ import annotations

import argparse
import ast
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from models.forecast import PARITY_ATOL, evaluate_long_horizon, fit_linear
from models.forecast_runtime import ForecastModel, exog_features, holiday_days
from sentinel_cli.models_cmd import add_parser

ETTH1 = Path(__file__).resolve().parents[3] / "shared" / "data" / "ett" / "ETTh1.csv"
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()  # a Monday


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="sentinel")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


def _write_csv(path: Path, values: np.ndarray, column: str = "load") -> None:
    start = datetime(2026, 1, 5)
    lines = ["date," + column] + [f"{start + timedelta(hours=i):%Y-%m-%d %H:%M:%S},{v!r}" for i, v in
                                   enumerate(values.tolist())]
    path.write_text("\n".join(lines) + "\n")


def test_closed_form_fit_recovers_a_trend_plus_daily_and_weekly_cycles() -> None:
    t = np.arange(1500, dtype=np.float64)
    x = 50.0 + 0.01 * t + 8.0 * np.sin(2 * np.pi * t / 24) + 3.0 * np.cos(2 * np.pi * t / 168 + 0.3)
    for decomposition in (0, 25):
        model = fit_linear(x, input_length=168, horizon=24, train=(0, 1000), val=(1000 - 168, 1300),
                           alphas=(1e-8, 1e-6, 1e-4), decomposition=decomposition)
        starts = np.arange(1300 - 168, 1500 - 168 - 24 + 1)
        hist = np.stack([x[s:s + 168] for s in starts])
        fut = np.stack([x[s + 168:s + 192] for s in starts])
        pred = model.predict(hist)
        assert np.max(np.abs(pred.point - fut)) < 1e-3, decomposition  # amplitude 8: a linear recurrence, learnt
        assert model.spec.metrics["val_mse"] < 1e-8
        assert np.all(pred.lower <= pred.point + 1e-9) and np.all(pred.upper >= pred.point - 1e-9)


def test_a_daily_profile_is_forecast_from_lags_and_intervals_cover_the_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(3000)
    x = 100 + 20 * np.exp(-0.5 * ((t % 24 - 18) / 2.0) ** 2) + rng.normal(0, 1.0, len(t))
    model = fit_linear(x, input_length=96, horizon=24, train=(0, 2000), val=(2000 - 96, 2500))
    starts = np.arange(2500 - 96, 3000 - 120 + 1)
    hist = np.stack([x[s:s + 96] for s in starts])
    fut = np.stack([x[s + 96:s + 120] for s in starts])
    pred = model.predict(hist)
    assert np.sqrt(np.mean((pred.point - fut) ** 2)) < 1.3  # noise 1.0; repeat-last is ~10
    cover = np.mean((fut >= pred.lower) & (fut <= pred.upper))
    assert 0.7 < cover < 0.9  # the 10-90 % interval


def test_onnx_graph_matches_numpy_with_calendar_holidays_and_temperature() -> None:
    rng = np.random.default_rng(1)
    n = 1200
    times = T0 + 3600.0 * np.arange(n)
    temp = 20 + 5 * np.sin(2 * np.pi * np.arange(n) / 24) + rng.normal(0, 1, n)
    x = 300 + 2.0 * temp + 30 * ((np.arange(n) // 24) % 7 < 5) + rng.normal(0, 3, n)
    holidays = holiday_days([date(2026, 1, 19), date(2026, 2, 2)])
    model = fit_linear(x, input_length=72, horizon=36, train=(0, 800), val=(800 - 72, 1000), times_s=times,
                       calendar=True, holidays=holidays, temperature_c=temp, utc_offset_h=3.0, refit=True)
    assert model.spec.n_exog == 31 + 36 + 36
    starts = np.arange(1000 - 72, n - 72 - 36 + 1)
    hist = np.stack([x[s:s + 72] for s in starts])
    temps = np.stack([temp[s + 72:s + 108] for s in starts])
    first = times[starts + 72]
    ours = model.predict(hist, exog_features(model.spec, first, holidays=holidays, temperature_c=temps))
    runtime = ForecastModel(model.to_onnx())
    assert runtime.spec == model.spec  # the spec travels in the graph's metadata
    theirs = runtime.predict(hist, first, holidays=holidays, temperature_c=temps)
    for a, b in ((ours.point, theirs.point), (ours.lower, theirs.lower), (ours.upper, theirs.upper)):
        assert np.max(np.abs(a - b)) <= PARITY_ATOL
    single = runtime.predict(hist[0], first[0], holidays=holidays, temperature_c=temps[0])
    assert single.point.shape == (36,)
    with pytest.raises(ValueError, match="temperatures"):
        runtime.predict(hist, first, holidays=holidays)


def test_calendar_features_are_local_hour_and_weekday_one_hots() -> None:
    from models.forecast_runtime import ForecastSpec

    spec = ForecastSpec(input_length=4, horizon=30, calendar=True, holidays=True, utc_offset_h=3.0)
    t = datetime(2026, 1, 4, 22, tzinfo=timezone.utc).timestamp()  # Sunday 22:00 UTC = Monday 01:00 local
    f = exog_features(spec, np.array([t]), holidays=holiday_days([date(2026, 1, 5)]))
    assert np.flatnonzero(f[0, :24]).tolist() == [1] and np.flatnonzero(f[0, 24:31]).tolist() == [0]
    flags = f[0, 31:]
    assert flags[:23].all() and not flags[23:].any()  # local Monday ends 23 steps later


def test_runtime_imports_neither_scikit_learn_nor_onnx() -> None:
    path = Path(__file__).resolve().parents[2] / "models" / "forecast_runtime.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    assert names <= {"__future__", "collections", "dataclasses", "datetime", "msgspec", "numpy", "onnxruntime"}


def test_protocol_split_arithmetic_on_a_ramp(tmp_path: Path) -> None:
    csv_path = tmp_path / "ramp.csv"
    _write_csv(csv_path, np.arange(200, dtype=np.float64))
    r = evaluate_long_horizon(csv_path, "load", 10, 5, borders=(100, 140, 180))
    assert r["rows"] == {"train": [0, 100], "val": [90, 140], "test": [130, 180]}
    assert r["windows"] == {"train": 86, "val": 36, "test": 36}
    std = np.std(np.arange(100.0))  # ddof 0, train rows only
    assert r["train_mean"] == pytest.approx(49.5) and r["train_std"] == pytest.approx(std)
    # repeating the last value misses step h by h / std
    assert r["repeat_last_mse"] == pytest.approx(np.mean(np.arange(1, 6) ** 2) / std ** 2)
    assert r["repeat_last_mae"] == pytest.approx(3.0 / std)
    assert r["mse"] < 1e-12  # the slope is learnt exactly


def test_cli_forecast_eval_prints_mse_mae_and_the_baseline(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rng = np.random.default_rng(2)
    t = np.arange(400)
    csv_path = tmp_path / "load.csv"
    _write_csv(csv_path, 50 + 10 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 1, len(t)))
    assert _run("models", "forecast-eval", "--csv", str(csv_path), "--target", "load", "--input-length", "48",
                "--horizon", "24,36", "--borders", "240,320,400") == 0
    out = capsys.readouterr().out
    assert "MSE" in out and "MAE" in out and "repeat-last" in out
    assert "rows train [0, 240), validation [192, 320), test [272, 400)" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert lines["24"][1] == "169/57/57" and lines["36"][1] == "157/45/45"
    mse, mae, rep_mse, rep_mae = (float(v) for v in lines["24"][2:6])
    assert mse < rep_mse and mae < rep_mae


def test_cli_forecast_eval_reports_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv_path = tmp_path / "short.csv"
    _write_csv(csv_path, np.arange(50, dtype=np.float64))
    assert _run("models", "forecast-eval", "--csv", str(csv_path), "--target", "load", "--horizon", "96") == 2
    assert "test split ends at row 14400" in capsys.readouterr().err
    assert _run("models", "forecast-eval", "--csv", str(csv_path), "--target", "load", "--horizon", "x") == 2


@pytest.mark.skipif(not ETTH1.is_file(), reason=f"{ETTH1} not present")
def test_etth1_horizon_96_beats_repeat_last() -> None:
    r = evaluate_long_horizon(ETTH1, "OT", 336, 96)
    assert r["windows"] == {"train": 8209, "val": 2785, "test": 2785}
    # the baseline matches the published Repeat figures (0.069/0.203): the protocol is the papers'
    assert r["repeat_last_mse"] == pytest.approx(0.069, abs=0.001)
    assert r["repeat_last_mae"] == pytest.approx(0.203, abs=0.001)
    assert r["mse"] < 0.9 * r["repeat_last_mse"] and r["mae"] < r["repeat_last_mae"]
    assert r["mse"] < 0.056  # DLinear's published figure
