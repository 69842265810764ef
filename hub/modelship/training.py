"""Training at the hub from stored readings: `sentinel models train --from-database` and ``POST /retrain``.

Both read readings through ``Storage.query_readings``, build feature windows with
``models.train`` (the same code path the edge scores with), train, export to ONNX (parity-checked),
sign with the hub's key and publish the next version into the registry. Blocking: the web layer
runs it in a worker thread.

``retrain`` takes experts' verdicts on incidents (``normal``: a false alarm; or the anomaly's type),
holds out a stratified share of the labelled windows, and reports the held-out accuracy of the new
version beside the previous version's on the same windows (anomalous or not: a score at or above
the alarm level against a verdict other than ``normal``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from hub.modelship.schemas import RetrainIncident, RetrainRequest, RetrainResult
from hub.storage import Storage
from models.manifest import Manifest
from models.registry import Registry, RegistryError
from models.runtime import Model, load_model
from protocols.reading import QualityFlag, Reading
from protocols.validation import check_name

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = [
    "RetrainError", "RetrainIncident", "RetrainRequest", "RetrainResult", "TrainOutcome", "read_readings",
    "retrain", "train_from_database",
]

NORMAL = "normal"
MAX_READINGS_PER_SERIES = 1_000_000
INCIDENT_MARGIN_S = 120.0  # an incident named by id labels its device from this long before to after
HOLDOUT = 0.25
DEFAULT_MODELS = {"feedback": "grid-risk", "from_database": "grid-anomaly"}


class RetrainError(ValueError):
    """Bad retraining input; ``field`` names where (``incidents[2].incident_id``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class TrainOutcome:
    manifest: Manifest
    readings: int


def read_readings(storage: Storage, devices: Sequence[str], metrics: Sequence[str], start: datetime | None = None,
                  end: datetime | None = None) -> list[Reading]:
    """The stored readings of ``devices`` x ``metrics``, without those flagged invalid (impossible values
    or timestamps, kept by edge sync as evidence): a model must not learn them as normal."""
    out: list[Reading] = []
    for device in devices:
        for metric in metrics:
            out.extend(r for r in storage.query_readings(device, metric, start, end, limit=MAX_READINGS_PER_SERIES)
                       if not r.flags & QualityFlag.INVALID)
    return out


def train_from_database(storage: Storage, registry: Registry, private_key: Ed25519PrivateKey, *, name: str,
                        metrics: Sequence[str], devices: Sequence[str], kind: str = "isolation_forest",
                        start: datetime | None = None, end: datetime | None = None, window: int = 32,
                        sample_period_s: float = 1.0) -> TrainOutcome:
    """Train ``kind`` on the stored readings of ``devices`` x ``metrics``, export, sign, publish."""
    from models.export import export_model
    from models.train import train_from_readings

    check_name(name, "model name")  # before reading and training, not at publishing
    readings = read_readings(storage, devices, metrics, start, end)
    if not readings:
        raise ValueError(f"no stored readings of {list(metrics)} for devices {list(devices)}"
                         + (f" between {start} and {end}" if start or end else ""))
    trained = train_from_readings(readings, name=name, metrics=metrics, kind=kind, window=window,
                                  sample_period_s=sample_period_s)
    return TrainOutcome(registry.publish(export_model(trained), private_key), len(readings))


# -- POST /retrain ------------------------------------------------------------------------------------


def _labels(storage: Storage, incidents: Sequence[RetrainIncident]):
    """``models.train.Label`` per verdict, and the (device, metric) pairs they name."""
    from models.train import Label

    known = None
    labels, series = [], []
    for i, inc in enumerate(incidents):
        where = f"incidents[{i}]"
        if not inc.label.strip():
            raise RetrainError(f"{where}.label", "must name a verdict: normal, or the anomaly's type")
        if inc.incident_id is not None:
            if known is None:
                known = {x.id: x for x in storage.list_incidents(limit=100_000)}
            found = known.get(inc.incident_id)
            if found is None:
                raise RetrainError(f"{where}.incident_id", f"no incident {inc.incident_id!r}")
            margin = timedelta(seconds=INCIDENT_MARGIN_S)
            device, metric = found.device_id, inc.metric or found.metric
            start, end = inc.start or found.timestamp - margin, inc.end or found.timestamp + margin
        else:
            for field in ("device_id", "metric", "start", "end"):
                if getattr(inc, field) is None:
                    raise RetrainError(f"{where}.{field}", "required without incident_id")
            device, metric, start, end = inc.device_id, inc.metric, inc.start, inc.end
        if end <= start:  # type: ignore[operator]
            raise RetrainError(f"{where}.end", "must be after start")
        labels.append(Label(start=start, end=end, label=inc.label.strip(), device_id=device))
        if metric:
            series.append((device, metric))
    return labels, series


def _previous(registry: Registry, name: str) -> Model | None:
    try:
        registry.latest(name)
    except RegistryError:
        return None
    return registry.load(name)


def _binary_accuracy(model: Model, x: np.ndarray, y: np.ndarray) -> float:
    alarm, _, _ = model.score(x)
    return float(np.mean((alarm >= 0.5) == (y != NORMAL)))


def retrain(storage: Storage, registry: Registry, private_key: Ed25519PrivateKey, request: RetrainRequest
            ) -> RetrainResult:
    """Retrain with experts' verdicts; publish the next version; compare it with the previous one."""
    from models.export import export_model
    from models.features import FeatureSpec
    from models.train import train_model, windows_from_readings

    started = time.perf_counter()
    if not request.incidents:
        raise RetrainError("incidents", "give at least one incident with a verdict")
    name = request.model or DEFAULT_MODELS[request.method]
    try:  # the request's decoder checked it already; a caller in Python may not have
        check_name(name, "model")
    except ValueError as exc:
        raise RetrainError("model", str(exc)) from None
    registry = Registry(registry.root, private_key.public_key())
    labels, series = _labels(storage, request.incidents)
    previous = _previous(registry, name)
    if request.metrics:
        metrics = tuple(request.metrics)
    elif previous is not None:
        metrics = previous.spec.inputs
    else:
        metrics = tuple(sorted({m for _, m in series}))
    if not metrics:
        raise RetrainError("metrics", "no metrics to train on: name them, or label incidents that have a metric")
    kind = "risk_classifier" if request.method == "feedback" else (
        previous.manifest.kind if previous is not None and previous.manifest.kind != "risk_classifier"
        else "isolation_forest")
    devices = sorted({lab.device_id for lab in labels if lab.device_id})
    readings = read_readings(storage, devices, metrics)
    spec = FeatureSpec.build(window=request.window, sample_period_s=request.sample_period_s, inputs=metrics)
    try:
        x, y, training = windows_from_readings(readings, spec, labels=labels)
    except ValueError as exc:
        raise RetrainError("incidents", str(exc)) from exc
    finite = np.isfinite(x).all(axis=1)
    x, y = x[finite], y[finite].astype(str)
    if not (y != NORMAL).any():
        raise RetrainError("incidents", "no stored window falls inside an anomalous verdict: nothing to learn")
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), dtype=bool)
    for cls in np.unique(y):  # stratified: every verdict with 2+ windows has some held out
        idx = rng.permutation(np.flatnonzero(y == cls))
        if len(idx) > 1:
            test[idx[: max(1, round(len(idx) * HOLDOUT))]] = True
    try:
        trained = train_model(x[~test], kind=kind, spec=spec, name=name, training=training, y=y[~test])
        exported = export_model(trained)
    except ValueError as exc:
        raise RetrainError("incidents", str(exc)) from exc
    new = load_model(exported.manifest, exported.onnx)
    accuracy = _binary_accuracy(new, x[test], y[test])
    previous_accuracy = None
    if previous is not None:
        if previous.spec == spec:
            previous_accuracy = _binary_accuracy(previous, x[test], y[test])
        else:  # another feature spec: its own windows of the same readings and verdicts
            px, py, _ = windows_from_readings(readings, previous.spec, labels=labels)
            ok = np.isfinite(px).all(axis=1)
            previous_accuracy = _binary_accuracy(previous, px[ok], py[ok].astype(str))
    manifest = registry.publish(exported, private_key)
    return RetrainResult(
        success=True, model_version=manifest.version,
        accuracy_improvement=None if previous_accuracy is None else round(accuracy - previous_accuracy, 6),
        retraining_time_ms=round((time.perf_counter() - started) * 1000, 1), model=name, kind=kind,
        accuracy=round(accuracy, 6), previous_accuracy=None if previous_accuracy is None else round(previous_accuracy, 6),
        holdout_windows=int(test.sum()),
    )
