"""Multivariate anomalies explained at the hub: exact TreeSHAP contributions of the registry's
IsolationForest on the device's feature window rebuilt from stored readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.findings import Finding
from hub.explanations import explain_findings
from hub.storage.sqlite import SQLiteStorage
from models.registry import Registry
from protocols.reading import Reading

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    from models.export import export_model
    from models.features import FeatureSpec, compute_features
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
