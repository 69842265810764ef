"""ONNX export: every kind scores as scikit-learn does on held-out rows, and its manifest says what it is."""

from __future__ import annotations

import numpy as np
import pytest

from models.export import PARITY_ATOL, ParityError, export_model, onnx_raw_scores, to_onnx
from models.manifest import MODEL_KINDS, decode_manifest, encode_manifest
from models.runtime import load_model

KINDS = list(MODEL_KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_onnx_matches_scikit_learn_on_held_out_rows(kind: str, trained_models: dict) -> None:
    trained = trained_models[kind]
    rows = trained.holdout
    assert len(rows) >= 100
    graph = to_onnx(trained)
    assert len(graph.onnx) < 1_500_000
    ours = onnx_raw_scores(graph, kind, rows)
    theirs = trained.raw_scores(rows)  # IF and LOF: -decision_function; Mahalanobis: d^2; classifier: 1 - P(normal)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=PARITY_ATOL)
    # and through the runtime the edge uses, with its own session options
    model = load_model(export_model(trained).manifest, graph.onnx)
    np.testing.assert_allclose(model.raw_scores(rows), theirs, rtol=0, atol=PARITY_ATOL)


def test_isolation_forest_graphs_output_decision_function(trained_models: dict) -> None:
    """The compact graph and skl2onnx's (a small forest: its converter is slow) both give
    ``decision_function`` as their ``scores`` output."""
    import onnxruntime as ort

    from models.train import train_model

    trained = trained_models["isolation_forest"]
    small = train_model(np.concatenate([trained.holdout] * 5), kind="isolation_forest", spec=trained.spec,
                        name="small", training=trained.training, params={"n_estimators": 8})
    rows = trained.holdout.astype(np.float32)
    for model, exporter in ((trained, "compact"), (small, "compact"), (small, "skl2onnx")):
        graph = to_onnx(model, exporter=exporter)
        session = ort.InferenceSession(graph.onnx, providers=["CPUExecutionProvider"])
        scores = session.run(["scores"], {"features": rows})[0][:, 0]
        np.testing.assert_allclose(scores, model.estimator.decision_function(rows), rtol=0, atol=PARITY_ATOL)


@pytest.mark.parametrize("kind", KINDS)
def test_manifest_describes_the_model(kind: str, exported_models: dict, trained_models: dict) -> None:
    exported = exported_models[kind]
    m = exported.manifest
    assert m.kind == kind and m.feature_spec == trained_models[kind].spec
    assert m.onnx_bytes == len(exported.onnx) and len(m.sha256) == 64
    assert m.training.rows > 0 and m.training.start and m.training.end
    assert m.metrics["parity_max_abs"] <= PARITY_ATOL
    assert decode_manifest(encode_manifest(m)) == m
    if kind == "risk_classifier":
        assert m.calibration.kind == "probability" and "normal" in m.classes
        assert m.metrics["recall"] > 0.8
    else:
        assert m.calibration.kind == "ecdf_tail"
        assert m.metrics["train_alarm_rate"] < 0.01


def test_calibration_puts_normal_windows_low_and_outliers_high(exported_models: dict, trained_models: dict) -> None:
    trained = trained_models["isolation_forest"]
    model = load_model(exported_models["isolation_forest"].manifest, exported_models["isolation_forest"].onnx)
    alarm, _, calibrated = model.score(trained.holdout)
    assert 0.4 < np.median(calibrated) < 0.6  # the held-out rows are what calibration was fitted on
    assert np.mean(alarm >= 0.5) < 0.01
    far = trained.holdout[:5] + 50 * trained.holdout.std(axis=0)
    alarm_far, _, calibrated_far = model.score(far)
    assert (calibrated_far > 0.999).all() and (alarm_far >= 0.5).all()


def test_export_refuses_a_graph_that_disagrees(trained_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import models.export

    real = models.export.onnx_raw_scores
    monkeypatch.setattr(models.export, "onnx_raw_scores", lambda *a: real(*a) + 1e-3)
    with pytest.raises(ParityError, match="differ by up to 0.001"):
        export_model(trained_models["mahalanobis"])
