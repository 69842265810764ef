"""Windowed features: causal, the same in blocks as at once, and right on series with known answers."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from models.features import CrossFeature, FeatureExtractor, FeatureSpec, compute_features, phase_imbalance

SPEC = FeatureSpec.build(
    inputs=("voltage_l1", "voltage_l2", "voltage_l3", "oil_temperature", "load"),
    cross=(CrossFeature("phase_imbalance", ("voltage_l1", "voltage_l2", "voltage_l3")),
           CrossFeature("oil_vs_load", ("oil_temperature", "load"))))


def _series(samples: int = 1500, groups: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(groups, samples, len(SPEC.inputs))) + 10.0
    x[1, 200:260, 2] = np.nan  # a gap in one input
    x[2, :40] = np.nan  # a group that starts with nothing
    return x


def _col(name: str) -> int:
    return SPEC.names.index(name)


def test_blocks_of_any_size_match_one_call() -> None:
    x = _series()
    whole = compute_features(x, SPEC)
    extractor = FeatureExtractor(SPEC, x.shape[0])
    sizes = [1, 30, 1, 200, 7, 761, 500]
    starts = np.cumsum([0, *sizes[:-1]])
    parts = [extractor.update(x[:, lo:lo + size]) for lo, size in zip(starts, sizes)]
    got = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(got, whole[:, :got.shape[1]], atol=1e-9)


def test_features_are_causal() -> None:
    x = _series()
    full = compute_features(x, SPEC)
    changed = x.copy()
    changed[:, 900:] += 100.0
    np.testing.assert_array_equal(compute_features(changed, SPEC)[:, :900], full[:, :900])


def test_window_statistics_are_right() -> None:
    spec = FeatureSpec.build(window=8)
    x = np.arange(20, dtype=float)[:, None] * 2.0  # a ramp: slope 2 per sample
    f = compute_features(x, spec)
    row = f[19]
    names = spec.names
    assert row[names.index("value.last")] == 38.0
    assert row[names.index("value.mean")] == pytest.approx(np.mean(x[12:20]))
    assert row[names.index("value.min")] == 24.0 and row[names.index("value.max")] == 38.0
    assert row[names.index("value.slope")] == pytest.approx(2.0)
    assert row[names.index("value.roc")] == pytest.approx(2.0)
    assert row[names.index("value.missing")] == 0.0


def test_band_energy_finds_a_sinusoid_in_its_bin() -> None:
    spec = FeatureSpec.build(window=32)
    t = np.arange(400)
    x = (5.0 + 0.3 * t / 400 + np.sin(2 * np.pi * t / 8))[:, None]  # period 8 = bin 4, on a trend
    f = compute_features(x, spec)[100:]
    assert f[:, spec.names.index("value.band4")].min() > 0.9
    assert f[:, spec.names.index("value.band2")].max() < 0.05


def test_missing_fraction_counts_the_gap() -> None:
    x = _series()
    f = compute_features(x, SPEC)
    missing = f[1, :, _col("voltage_l3.missing")]
    assert missing[199] == 0.0
    assert missing[240] == pytest.approx(32 / 32)
    assert missing[270] == pytest.approx(21 / 32)  # samples 239..259 of the window 239..270
    assert (f[2, :40, _col("load.missing")] == 1.0).all()  # before any sample


def test_phase_imbalance_and_oil_against_load() -> None:
    assert phase_imbalance(np.array([10.0]), np.array([10.0]), np.array([10.0]))[0] == 0.0
    assert phase_imbalance(np.array([11.0]), np.array([10.0]), np.array([9.0]))[0] == pytest.approx(0.1)
    rng = np.random.default_rng(3)
    load = 50 + 10 * np.sin(np.arange(600) / 40)
    oil = 30 + 0.5 * load + rng.normal(scale=0.1, size=600)
    volts = np.full((600, 3), 11.0)
    volts[:, 0] *= 1.02
    x = np.column_stack([volts, oil, load])
    x[500, 3] += 5.0  # oil jumps, load does not
    f = compute_features(x, SPEC)
    assert f[400, _col("oil_vs_load.slope(oil_temperature,load)")] == pytest.approx(0.5, abs=0.05)
    assert f[500, _col("oil_vs_load.resid(oil_temperature,load)")] > 4.0
    assert f[400, _col("phase_imbalance(voltage_l1,voltage_l2,voltage_l3)")] == pytest.approx(0.02 * 2 / 3 / (1 + 0.02 / 3))


def test_spec_round_trips_and_refuses_names_it_would_not_compute() -> None:
    data = msgspec.json.encode(SPEC)
    assert msgspec.json.decode(data, type=FeatureSpec) == SPEC
    tampered = data.replace(b'"voltage_l1.mean"', b'"voltage_l1.median"')
    with pytest.raises(msgspec.ValidationError, match="do not match"):
        msgspec.json.decode(tampered, type=FeatureSpec)
    with pytest.raises(ValueError, match="unknown series feature"):
        FeatureSpec.build(series_features=("mean", "kurtosis"))
    with pytest.raises(ValueError, match="needs 3"):
        FeatureSpec.build(inputs=("a", "b"), cross=(CrossFeature("phase_imbalance", ("a", "b")),))
