"""Model-driven anomalies explained at the hub: exact TreeSHAP contributions of the registry's
IsolationForest, or of its risk classifier against the device's own earlier windows, on the
device's feature window rebuilt from stored readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.findings import Finding
from hub.insights.explanations import explain_findings
from hub.storage.sqlite import SQLiteStorage
from models.features import CrossFeature, FeatureSpec, compute_features
from models.registry import Registry
from protocols.reading import Reading

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    from models.export import export_model
    from models.manifest import TrainingData
    from models.train import train_model

    rng = np.random.default_rng(0)
    x3 = 11.0 + rng.normal(scale=0.01, size=(1200, 3))
    spec = FeatureSpec.build(window=16, inputs=("voltage_l1", "voltage_l2", "voltage_l3"),
                             series_features=("mean", "std", "slope"))
    x = compute_features(x3, spec)[spec.window - 1:]
    trained = train_model(x, kind="isolation_forest", spec=spec, name="feeder-voltage",
                          training=TrainingData(start=None, end=None, rows=len(x), source="arrays"),
                          params={"n_estimators": 32})
    root = tmp_path_factory.mktemp("models")
    Registry(root).publish(export_model(trained), Ed25519PrivateKey.generate())
    return str(root)


def _store(storage: SQLiteStorage, jump_l2: float) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(64):
        for phase in (1, 2, 3):
            value = 11.0 + rng.normal(scale=0.01) + (jump_l2 if phase == 2 and i >= 56 else 0.0)
            rows.append(Reading(ts=T0 + timedelta(seconds=i), substation="NAIROBI-S1", device_id="FEEDER-F12",
                                metric=f"voltage_l{phase}", value=value, unit="kV"))
    storage.insert_readings(rows, "test")


def _finding(type_: str = "anomaly_multivariate") -> Finding:
    return Finding(agent="anomaly_detector", type=type_, severity="WARNING", timestamp=T0 + timedelta(seconds=63),
                   device_id="FEEDER-F12", substation="NAIROBI-S1", metric="voltage_l2", description="d")


def test_the_phase_that_moved_gets_the_largest_contribution(tmp_path: Path, registry: str) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        _store(storage, jump_l2=0.3)
        (f,) = explain_findings(storage, registry, [_finding()])
    finally:
        storage.close()
    contributions = f.facts["contributions"]
    top, value = next(iter(contributions.items()))
    assert top.startswith("voltage_l2.") and value < 0  # shorter paths: more anomalous
    assert abs(value) > 2 * max(abs(v) for k, v in contributions.items() if not k.startswith("voltage_l2."))
    assert f.facts["contributions_model"] == "feeder-voltage v1"
    assert len(contributions) <= 8
    assert f.facts["contributions_output"] < f.facts["contributions_expected_value"]


def test_other_findings_and_missing_data_are_left_as_they_are(tmp_path: Path, registry: str) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        step = _finding("anomaly_step")
        assert explain_findings(storage, registry, [step]) == [step]  # not model-driven
        lone = _finding()
        assert explain_findings(storage, registry, [lone])[0].facts == {}  # no readings stored: nothing to explain
        assert explain_findings(storage, None, [lone]) == [lone]
        assert explain_findings(storage, str(tmp_path / "nowhere"), [lone]) == [lone]
    finally:
        storage.close()


# -- the risk classifier ----------------------------------------------------------------------------

RISK_SPEC_INPUTS = ("voltage_l1", "voltage_l2", "voltage_l3")


def _imbalanced_training(label: str) -> tuple[np.ndarray, np.ndarray]:
    """Feature windows of three phases (as tests/models/conftest.py's ``three_phase``) where, every
    200 samples, one phase moves by 0.15 to 0.5 kV for 80 samples; a window at least half inside
    such a stretch is labelled ``label``, the others ``normal``."""
    spec = _risk_spec()
    rng = np.random.default_rng(2)
    n = 4000
    base = 11.0 + 0.05 * np.sin(2 * np.pi * np.arange(n) / 900)
    v = np.stack([base + rng.normal(scale=0.01, size=n) for _ in range(3)], axis=1)
    inside = np.zeros(n, dtype=bool)
    for s0 in range(100, n - 100, 200):
        v[s0:s0 + 80, rng.integers(3)] += rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.5)
        inside[s0:s0 + 80] = True
    share = np.convolve(inside.astype(float), np.ones(spec.window))[:n] / spec.window
    labels = np.where(share >= 0.5, label, "normal").astype(object)
    return compute_features(v, spec)[spec.window - 1:], labels[spec.window - 1:]


def _risk_spec() -> FeatureSpec:
    return FeatureSpec.build(inputs=RISK_SPEC_INPUTS,
                             series_features=("mean", "std", "slope", "roc", "band4", "missing"),
                             cross=(CrossFeature("phase_imbalance", RISK_SPEC_INPUTS),))


@pytest.fixture(scope="module")
def risk_registries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A registry per label of the imbalance: ``phase_imbalance`` (no detector type: the edge calls
    the alarms ``multivariate``) and ``step`` (the edge calls them ``step``)."""
    from models.export import export_model
    from models.manifest import TrainingData
    from models.train import train_model

    out = {}
    for label in ("phase_imbalance", "step"):
        x, y = _imbalanced_training(label)
        trained = train_model(x, kind="risk_classifier", spec=_risk_spec(), name="feeder-risk", y=y,
                              training=TrainingData(start=None, end=None, rows=len(x), source="arrays"))
        root = tmp_path_factory.mktemp(f"risk-{label}")
        Registry(root).publish(export_model(trained), Ed25519PrivateKey.generate())
        out[label] = str(root)
    return out


def _store_imbalance(storage: SQLiteStorage, samples: int = 160, from_sample: int = 128) -> None:
    """Three phases at 11 kV; voltage_l2 0.3 kV higher from ``from_sample`` on (one sample a second)."""
    rng = np.random.default_rng(1)
    rows = []
    for i in range(samples):
        for phase in (1, 2, 3):
            value = 11.0 + rng.normal(scale=0.01) + (0.3 if phase == 2 and i >= from_sample else 0.0)
            rows.append(Reading(ts=T0 + timedelta(seconds=i), substation="NAIROBI-S1", device_id="FEEDER-F12",
                                metric=f"voltage_l{phase}", value=value, unit="kV"))
    storage.insert_readings(rows, "test")


def _episode(type_: str, end_s: int = 159, start_s: int | None = 128, metric: str = "voltage_l2") -> Finding:
    return Finding(agent="anomaly_detector", type=type_, severity="WARNING", timestamp=T0 + timedelta(seconds=end_s),
                   start=None if start_s is None else T0 + timedelta(seconds=start_s), device_id="FEEDER-F12",
                   substation="NAIROBI-S1", metric=metric, description="d")


@pytest.mark.parametrize(("label", "type_"), [("phase_imbalance", "anomaly_multivariate"), ("step", "anomaly_step")])
def test_the_risk_classifier_blames_the_phase_imbalance(tmp_path: Path, risk_registries: dict[str, str], label: str,
                                                        type_: str) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        _store_imbalance(storage)
        (f,) = explain_findings(storage, risk_registries[label], [_episode(type_)])
    finally:
        storage.close()
    facts = f.facts
    contributions = facts["contributions"]
    assert len(contributions) <= 8
    top, value = next(iter(contributions.items()))
    assert top.startswith(("phase_imbalance(", "voltage_l2.")) and value > 0  # it raised the risk
    imbalance = sum(v for k, v in contributions.items() if k.startswith(("phase_imbalance(", "voltage_l2.")))
    assert imbalance > 0.5 and imbalance > 5 * sum(abs(v) for k, v in contributions.items()
                                                   if not k.startswith(("phase_imbalance(", "voltage_l2.")))
    assert facts["contributions_model"] == "feeder-risk v1" and facts["contributions_class"] == label
    assert facts["contributions_output"] >= 0.5  # the alarm the edge raised
    assert facts["contributions_expected_value"] < 0.2  # the windows before it were normal
    assert "1 - P(normal)" in facts["contributions_explain"] and "interventional" in facts["contributions_explain"]
    # the background: the 64 windows before the episode began, the last ending one sample before it
    background = facts["contributions_background"]
    assert background["windows"] == 64 and background["before"] == (T0 + timedelta(seconds=128)).isoformat()
    assert background["last_end"] == (T0 + timedelta(seconds=127)).isoformat()
    assert background["first_end"] == (T0 + timedelta(seconds=64)).isoformat()


def test_the_risk_classifier_matches_its_graph_and_the_scikit_learn_forest(tmp_path: Path,
                                                                          risk_registries: dict[str, str]) -> None:
    """The facts are the exact interventional TreeSHAP of 1 - P(normal): recomputed here from the
    registry's graph and from stored readings, and the risk is the graph's (onnxruntime) own."""
    import onnxruntime as ort

    from models.explain import from_onnx, interventional_tree_shap

    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        _store_imbalance(storage, samples=150, from_sample=128)
        (f,) = explain_findings(storage, risk_registries["phase_imbalance"],
                                [_episode("anomaly_multivariate", end_s=149, start_s=None)])
    finally:
        storage.close()
    files = Registry(risk_registries["phase_imbalance"]).read_files("feeder-risk")
    rng = np.random.default_rng(1)
    x = np.array([[11.0 + rng.normal(scale=0.01) + (0.3 if p == 2 and i >= 128 else 0.0) for p in (1, 2, 3)]
                  for i in range(150)])
    spec = _risk_spec()
    feats = compute_features(x, spec)
    # no start: the background is the 64 windows ending before the explained window's last sample
    expl = interventional_tree_shap(from_onnx(files.onnx, class_label="normal", complement=True), feats[-1:],
                                    feats[-65:-1])
    assert f.facts["contributions_background"]["windows"] == 64
    assert f.facts["contributions_background"]["last_end"] == (T0 + timedelta(seconds=148)).isoformat()
    for name, value in f.facts["contributions"].items():
        assert value == pytest.approx(expl.values[0, list(spec.names).index(name)], abs=1e-6)
    assert f.facts["contributions_expected_value"] == pytest.approx(expl.expected_value, abs=1e-6)
    session = ort.InferenceSession(files.onnx, providers=["CPUExecutionProvider"])
    p_normal = session.run(["probabilities"], {"features": feats[-1:].astype(np.float32)})[0][0, 0]
    assert f.facts["contributions_output"] == pytest.approx(1.0 - p_normal, abs=1e-6)
    assert expl.additivity_error <= 1e-12


def test_findings_the_risk_classifier_does_not_raise_are_left_alone(tmp_path: Path,
                                                                     risk_registries: dict[str, str]) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        _store_imbalance(storage)
        root = risk_registries["phase_imbalance"]
        left_alone = [
            _episode("anomaly_step"),  # the classifier's alarms are multivariate, never step
            _episode("anomaly_spike"),
            _episode("anomaly_multivariate", end_s=110, start_s=100),  # before the imbalance: no alarm
            _episode("anomaly_multivariate", metric="current_a"),  # not a metric the classifier reads
            _episode("anomaly_multivariate", start_s=40),  # 9 windows before the episode: too few to compare with
            Finding(agent="grid_monitor", type="voltage_unbalance", severity="WARNING", timestamp=T0 + timedelta(
                seconds=159), device_id="FEEDER-F12", substation="NAIROBI-S1", metric="voltage_l2", description="d"),
        ]
        assert explain_findings(storage, root, left_alone) == left_alone
        # the same episode on the class the step-trained classifier names: explained there, not here
        step = risk_registries["step"]
        assert "contributions" in explain_findings(storage, step, [_episode("anomaly_step")])[0].facts
        assert explain_findings(storage, step, [_episode("anomaly_multivariate")])[0].facts == {}
    finally:
        storage.close()
    empty = SQLiteStorage(tmp_path / "empty.db")
    try:  # no readings stored: nothing to explain with
        assert explain_findings(empty, root, [_episode("anomaly_multivariate")])[0].facts == {}
    finally:
        empty.close()
