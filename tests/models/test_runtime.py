"""The edge's scorer: readings in, scores out; a model scored per window, hot-swapped, rolled back."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from models.runtime import Scorer, load_model
from protocols.reading import QualityFlag, Reading
from tests.models.conftest import three_phase

PHASES = ("voltage_l1", "voltage_l2", "voltage_l3")
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _model(exported_models: dict, kind: str = "isolation_forest"):
    e = exported_models[kind]
    return load_model(e.manifest, e.onnx)


def _readings(values: np.ndarray, start: int, devices: tuple[str, ...] = ("FEEDER-1",)) -> list[Reading]:
    """One poll per row: every device reports its three phases (the same values, for simplicity)."""
    out = []
    for i, row in enumerate(values):
        ts = T0 + timedelta(seconds=start + i)
        for d in devices:
            out.extend(Reading(ts=ts, substation="S1", device_id=d, metric=m, value=float(v), unit="kV")
                       for m, v in zip(PHASES, row))
    return out


def test_detectors_alone_score_readings_in_order() -> None:
    scorer = Scorer()
    values = three_phase(600)
    values[500:, 0] += 0.2  # a step on phase 1
    results = []
    for lo in range(0, 600, 25):  # 25 polls per batch
        results.extend(scorer.score_readings(_readings(values[lo:lo + 25], lo)))
    assert len(results) == 600 * 3
    phase1 = results[0::3]
    assert all(r.score < 0.5 for r in phase1[100:500])
    assert max(r.score for r in phase1[500:520]) >= 0.5
    assert {r.type for r in phase1[500:520] if r.score >= 0.5} <= {"step", "spike"}
    assert all(r.score < 0.5 for r in results[1::3][100:])  # phase 2 untouched


def test_voltage_and_frequency_series_are_steady_and_load_following_ones_are_not() -> None:
    scorer = Scorer()
    keys = [("BUS-1", "voltage_l1"), ("BUS-1", "frequency"), ("FEEDER-1", "current_l2"), ("FEEDER-1", "active_power"),
            ("TR-1", "oil_temperature"), ("FEEDER-1", "voltage")]
    rows = scorer.series_rows(keys)
    assert scorer.detectors.steady[rows].tolist() == [True, True, False, False, False, True]


def test_missing_and_flagged_readings_are_dropouts() -> None:
    scorer = Scorer()
    values = three_phase(200)
    readings = _readings(values, 0)
    for i in range(150 * 3, 160 * 3, 3):  # phase 1 lost for 10 polls
        r = readings[i]
        readings[i] = Reading(ts=r.ts, substation=r.substation, device_id=r.device_id, metric=r.metric, value=None,
                              flags=QualityFlag.COMM_LOST)
    out = scorer.score_readings(readings)
    assert out[159 * 3].type == "dropout" and out[159 * 3].score >= 0.5


def test_uneven_batches_keep_each_series_in_order() -> None:
    """A batch where one device has more polls than another scores as the same polls one by one."""
    values = three_phase(300, seed=4)
    a = _readings(values[:200], 0, ("A",)) + _readings(values[:120], 0, ("B",))
    one_by_one = Scorer()
    expected = []
    for i in range(200):
        expected.extend(one_by_one.score_readings(a[3 * i:3 * i + 3]))
    for i in range(120):
        expected.extend(one_by_one.score_readings(a[600 + 3 * i:600 + 3 * i + 3]))
    together = Scorer().score_readings(a)
    np.testing.assert_allclose([r.score for r in together], [r.score for r in expected], atol=1e-6)


def test_model_scores_windows_of_whole_devices(exported_models: dict) -> None:
    model = _model(exported_models, "mahalanobis")
    scorer = Scorer(model, model_stride=8)
    values = three_phase(800, seed=9)
    keys = [("F1", m) for m in PHASES]
    clean = scorer.score_block(keys, values[:600].T)
    ms = clean.model_score
    assert ms is not None and ms.shape == (3, 600)
    assert (ms[:, :31] == 0).all()  # no window yet
    held = ms[0, 39:599]  # due at samples 7, 15, 23, ...: the 8th, 16th, ... of the device
    assert np.all(held.reshape(-1, 8)[:, 1:] == held.reshape(-1, 8)[:, :1])  # one model score per 8 samples
    assert np.mean(ms[0, 100:] >= 0.5) < 0.02
    bad = values[600:].copy()
    bad[:, 0] += 0.06  # one phase off by 6 %: a phase imbalance
    out = scorer.score_block(keys, bad.T)
    assert out.model_score[0, 40:].min() >= 0.5
    # a series the model does not read gets no model score
    other = scorer.score_block([("F1", "frequency")], np.full((1, 10), 50.0))
    assert other.model_score is None


def test_swap_and_rollback(exported_models: dict) -> None:
    first, second = _model(exported_models), _model(exported_models, "mahalanobis")
    scorer = Scorer()
    assert scorer.model is None and scorer.swap(first) is None
    assert scorer.swap(second) is first and scorer.model is second and scorer.previous is first
    assert scorer.rollback() is first and scorer.previous is second
    scorer.swap(None)
    assert scorer.model is None and scorer.previous is first
    with pytest.raises(LookupError):
        Scorer().rollback()


def test_swapping_during_steady_scoring_loses_no_reading(exported_models: dict) -> None:
    models = [_model(exported_models), _model(exported_models, "lof"), None]
    scorer = Scorer(models[0], model_stride=4)
    values = three_phase(1200, seed=2)
    stop = threading.Event()
    swaps = 0

    def swapper() -> None:
        nonlocal swaps
        while not stop.is_set():
            scorer.swap(models[swaps % 3])
            swaps += 1

    t = threading.Thread(target=swapper, name="test.swapper")
    t.start()
    try:
        scored = 0
        for lo in range(0, 1200, 10):
            batch = _readings(values[lo:lo + 10], lo, ("A", "B"))
            out = scorer.score_readings(batch)
            assert len(out) == len(batch) and all(0.0 <= r.score <= 1.0 for r in out)
            scored += len(out)
    finally:
        stop.set()
        t.join()
    assert scored == 1200 * 6 and swaps > 3


def test_edge_modules_import_no_scikit_learn() -> None:
    code = ("import sys, models.runtime, models.features, models.detectors, models.registry, models.signing, "
            "models.tabular; bad = [m for m in sys.modules if m.split('.')[0] in ('sklearn', 'skl2onnx', 'scipy')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"imported: {done.stdout} {done.stderr}"
