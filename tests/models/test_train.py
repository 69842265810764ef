"""Training from the hub's stored readings and from CSV files."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from models.export import export_model
from models.train import Label, train_from_csv, train_from_readings, windows_from_readings
from protocols.reading import QualityFlag, Reading
from tests.models.conftest import three_phase

PHASES = ("voltage_l1", "voltage_l2", "voltage_l3")
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _stored(devices: dict[str, np.ndarray], period_s: float = 5.0, jitter_s: float = 0.3) -> list[Reading]:
    """Readings as the hub stores them: one poll per period with a little timing jitter, a gap, a bad value."""
    rng = np.random.default_rng(0)
    out = []
    for device, values in devices.items():
        for i, row in enumerate(values):
            if 300 <= i < 320:  # the device was offline
                continue
            ts = T0 + timedelta(seconds=i * period_s + rng.uniform(-jitter_s, jitter_s))
            for m, v in zip(PHASES, row):
                bad = i == 100 and m == "voltage_l2"
                out.append(Reading(ts=ts, substation="S1", device_id=device, metric=m, value=None if bad else float(v),
                                   unit="kV", flags=QualityFlag.INVALID if bad else 0))
    return out


def test_windows_from_readings_bin_gaps_and_ranges() -> None:
    from models.features import FeatureSpec

    readings = _stored({"F1": three_phase(600), "F2": three_phase(600, seed=1)})
    spec = FeatureSpec.build(inputs=PHASES, sample_period_s=5.0)
    x, y, training = windows_from_readings(readings, spec)
    assert x.shape == (2 * (580 - 31), spec.n_features)  # 580 polls each, the first window - 1 dropped
    assert training.series == ("F1", "F2") and training.rows == len(x)
    assert training.start is not None and training.start.startswith("2026-03-01T00:02")
    missing = x[:, spec.names.index("voltage_l2.missing")]
    assert missing.max() > 0  # the invalid reading and the gap count as missing samples
    assert set(y) == {"normal"}


def test_train_from_readings_with_experts_labels(keys, tmp_path: Path) -> None:
    from models.registry import Registry

    values = three_phase(900, seed=3)
    values[600:700, 0] += 0.1  # an incident on phase 1
    readings = _stored({"F1": values, "F2": three_phase(900, seed=4)})
    incident = Label(device_id="F1", start=T0 + timedelta(seconds=600 * 5), end=T0 + timedelta(seconds=700 * 5),
                     label="step")
    false_alarm = Label(device_id="F2", start=T0, end=T0 + timedelta(seconds=50), label="normal")
    trained = train_from_readings(readings, name="feeder-risk", metrics=PHASES, kind="risk_classifier",
                                  labels=[incident, false_alarm], sample_period_s=5.0,
                                  series_features=("mean", "std", "slope", "missing"))
    assert trained.classes == ("normal", "step")
    assert trained.metrics["recall"] > 0.8 and trained.metrics["precision"] > 0.8
    manifest = Registry(tmp_path, keys.public).publish(export_model(trained), keys.private)
    assert manifest.training.source == "readings:2 devices" and manifest.metrics["roc_auc"] > 0.9

    unsupervised = train_from_readings(readings, name="feeder-if", metrics=PHASES, labels=[incident],
                                       sample_period_s=5.0, series_features=("mean", "std", "slope", "missing"))
    assert unsupervised.metrics["labelled_auc"] > 0.8  # the labelled windows were kept out and score high


def test_train_from_readings_needs_devices_with_every_metric() -> None:
    readings = _stored({"F1": three_phase(100)})
    with pytest.raises(ValueError, match="no device reports all of"):
        train_from_readings(readings, name="x", metrics=(*PHASES, "frequency"))


def test_train_from_csv_rows_and_label_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 1500
    path = tmp_path / "history.csv"
    oil = 40 + rng.normal(scale=0.2, size=n)
    label = np.where((np.arange(n) > 1200) & (np.arange(n) < 1300), "drift", "normal")
    oil[1200:1300] += np.linspace(0, 5, 100)
    lines = ["timestamp,oil_temperature,label"]
    lines += [f"2026-01-01T{(i // 3600):02d}:{(i // 60) % 60:02d}:{i % 60:02d},{v:.3f},{lab}"
              for i, (v, lab) in enumerate(zip(oil, label))]
    path.write_text("\n".join(lines) + "\n")
    trained = train_from_csv(path, kind="isolation_forest", name="oil", label_column="label", window=16,
                             rows=slice(0, 1400))
    assert trained.spec.inputs == ("oil_temperature",) and trained.spec.window == 16
    assert trained.training.rows == 1400 - 15 and trained.training.source == "csv:history.csv"
    assert trained.metrics["labelled_auc"] > 0.8
