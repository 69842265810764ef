"""The SKAB evaluation (models.skab_eval) on files the tests write: reading, metrics, NAB, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.skab_eval import (evaluate_skab, hold_alarms, nab_raw, nab_score, outlier_metrics, read_skab,
                              rolling_zscore)


def _write(path: Path, values: np.ndarray, anomaly: np.ndarray | None = None, cps: tuple[int, ...] = ()) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = np.datetime64("2020-03-09T10:00:00")
    names = [f"ch{j}" for j in range(values.shape[1])]
    lines = [";".join(["datetime", *names, "anomaly", "changepoint"])]
    a = np.zeros(len(values)) if anomaly is None else anomaly
    for i, row in enumerate(values):
        ts = str(t0 + np.timedelta64(i, "s")).replace("T", " ")
        lines.append(";".join([ts, *(f"{v:.5f}" for v in row), f"{a[i]:.1f}", "1.0" if i in cps else "0.0"]))
    path.write_text("\n".join(lines) + "\n")


def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for k in range(3):
        x = 10.0 + rng.normal(scale=0.1, size=(1200, 2))
        x[700:900, 0] += 3.0  # a collective anomaly: a shift for 200 s
        truth = np.zeros(1200)
        truth[700:900] = 1
        _write(tmp_path / "valve1" / f"{k}.csv", x, truth, (700, 900))
    _write(tmp_path / "anomaly-free" / "anomaly-free.csv", 10.0 + rng.normal(scale=0.1, size=(3000, 2)))
    return tmp_path


def test_read_skab_and_its_errors(tmp_path: Path) -> None:
    root = _folder(tmp_path)
    f = read_skab(root / "valve1" / "0.csv")
    assert f.columns == ["ch0", "ch1"] and f.values.shape == (1200, 2)
    assert f.anomaly.sum() == 200 and f.changepoints.tolist() == [700, 900]
    assert f.time_s[:3].tolist() == [0.0, 1.0, 2.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("time;a\n2020-01-01 00:00:00;1\n")
    with pytest.raises(ValueError, match="expected 'datetime'"):
        read_skab(bad)
    bad.write_text("datetime;a;b\n2020-01-01 00:00:00;1\n")
    with pytest.raises(ValueError, match="line 2"):
        read_skab(bad)
    with pytest.raises(ValueError, match="no SKAB experiment files"):
        evaluate_skab(tmp_path / "nowhere")


def test_metrics_and_nab_on_known_cases() -> None:
    truth = np.array([0, 0, 1, 1, 1, 0, 0, 0], dtype=bool)
    pred = np.array([0, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    f1, far, mar = outlier_metrics(pred, truth)
    assert f1 == pytest.approx(2 * 2 / (2 * 2 + 1 + 1)) and far == pytest.approx(1 / 5) and mar == pytest.approx(1 / 3)
    t = np.arange(1000, dtype=float)
    cps = np.array([100, 500])
    w = (1.0, -0.11, -1.0)
    perfect = nab_raw(np.array([100, 500]), t, cps, 60.0, w)
    assert nab_score([perfect]) == pytest.approx(100.0)
    assert nab_score([nab_raw(np.array([], dtype=int), t, cps, 60.0, w)]) == pytest.approx(0.0)
    late = nab_score([nab_raw(np.array([150, 550]), t, cps, 60.0, w)])
    assert 50.0 < late < 90.0  # 50 s into each 60 s window: credit, less than at the start
    assert nab_score([nab_raw(np.array([100, 500, 800]), t, cps, 60.0, w)]) < 100.0  # a false alarm costs


def test_hold_alarms_like_the_edge_monitor() -> None:
    s = np.array([0.1, 0.9, 0.5, 0.5, 0.7, 0.5, 0.5, 0.5, 0.9])
    held = hold_alarms(s, 0.8, 0.6, 3)
    assert held.tolist() == [False, True, True, True, True, True, True, False, True]


def test_rolling_zscore_flags_outliers_only_after_a_full_window() -> None:
    x = np.random.default_rng(1).normal(size=(500, 1))
    x[50, 0] += 20.0
    x[300, 0] += 20.0
    z = rolling_zscore(x, window=100, z=3.0)[0]
    assert z[50] == 0 and z[300] == 1


def test_evaluate_skab_on_a_synthetic_benchmark(tmp_path: Path) -> None:
    results = {r.method: r for r in evaluate_skab(_folder(tmp_path))}
    cal = results["calibrated detectors (fisher)"]
    assert cal.nab["standard"] > 50.0  # the shift's onset is caught within 60 s in each file
    assert sum(cal.free_episodes) == 0 and cal.free_columns == ["ch0", "ch1"]
    assert cal.far < 0.05
    always = results["always alarm (reference)"]
    assert always.far == 1.0 and always.mar == 0.0


def test_cli_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sentinel_cli.main import main

    root = _folder(tmp_path)
    assert main(["models", "skab-eval", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "calibrated detectors (fisher)" in out and "leaderboard: Conv-AE" in out
    assert main(["models", "skab-eval", "--data", str(tmp_path / "none")]) == 2
