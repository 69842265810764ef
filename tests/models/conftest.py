"""Fixtures for the models tests: synthetic series, a signing key pair, trained models of every kind."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


@dataclass(frozen=True)
class Keys:
    private: Ed25519PrivateKey
    public: Ed25519PublicKey


@pytest.fixture(scope="session")
def keys() -> Keys:
    private = Ed25519PrivateKey.generate()
    return Keys(private, private.public_key())


def three_phase(samples: int, seed: int = 0) -> np.ndarray:
    """(samples, 3): three phase voltages around 11 kV with a slow daily-like swing and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples)
    base = 11.0 + 0.05 * np.sin(2 * np.pi * t / 900)
    return np.stack([base + rng.normal(scale=0.01, size=samples) for _ in range(3)], axis=1)


@pytest.fixture(scope="session")
def trained_models() -> dict:
    """One small model of every kind, on three-phase features (a session's worth of training: ~5 s)."""
    from models.features import CrossFeature, FeatureSpec, compute_features
    from models.manifest import TrainingData
    from models.train import train_model

    spec = FeatureSpec.build(inputs=("voltage_l1", "voltage_l2", "voltage_l3"),
                             series_features=("mean", "std", "slope", "roc", "band4", "missing"),
                             cross=(CrossFeature("phase_imbalance", ("voltage_l1", "voltage_l2", "voltage_l3")),))
    x = compute_features(three_phase(2400), spec)[spec.window - 1:]
    rng = np.random.default_rng(1)
    labels = np.full(len(x), "normal", dtype=object)
    anomalous = rng.random(len(x)) < 0.15
    x_lab = x.copy()
    x_lab[anomalous, -1] += 0.02  # a phase imbalance the classifier can learn
    labels[anomalous] = "step"
    training = TrainingData(start="2026-01-01T00:00:00+00:00", end="2026-01-01T00:40:00+00:00", rows=len(x),
                            source="arrays")
    out = {}
    for kind in ("isolation_forest", "lof", "mahalanobis", "risk_classifier"):
        supervised = kind == "risk_classifier"
        out[kind] = train_model(x_lab if supervised else x, kind=kind, spec=spec, name=f"test-{kind.replace('_', '-')}",
                                training=training, y=labels if supervised else None)
    return out


@pytest.fixture(scope="session")
def exported_models(trained_models: dict) -> dict:
    from models.export import export_model

    return {kind: export_model(t) for kind, t in trained_models.items()}
