"""Feature contributions behind a model-driven anomaly: which features made a window anomalous.

When the anomaly detector reports an episode of type ``multivariate`` (the edge's learned model
outscored its detectors), the hub recomputes that device's feature window from stored readings,
with the same code the edge scores with (:func:`models.features.compute_features`), and explains
it with exact TreeSHAP (:mod:`models.explain`) on the model in its registry: the finding's facts get
``contributions`` (feature -> value, the largest first) and what they add up to.

For an IsolationForest the explained quantity is the average path length: a NEGATIVE contribution
made the window shorter to isolate, i.e. more anomalous. Models other than IsolationForest (LOF,
Mahalanobis, the risk classifier, whose scikit-learn estimator the registry does not keep) are
left unexplained, and the finding says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from agents.findings import Finding
from hub.storage.base import Storage
from models.manifest import Manifest
from models.registry import Registry

__all__ = ["explain_findings"]

log = logging.getLogger(__name__)
TOP = 8


@lru_cache(maxsize=16)
def _ensemble(onnx_bytes: bytes) -> Any:
    import onnx

    from models.explain import from_onnx

    return from_onnx(onnx.load_from_string(onnx_bytes))


def _models(root: str) -> list[tuple[Manifest, bytes]]:
    reg = Registry(root)
    out = []
    for name in reg.names():
        try:
            files = reg.read_files(name)
        except Exception:  # a half-written or broken version: not ours to explain with
            continue
        try:
            out.append((msgspec.json.decode(files.manifest, type=Manifest), files.onnx))
        except msgspec.ValidationError:
            continue
    return out


def _window(storage: Storage, f: Finding, inputs: Sequence[str], samples: int, period_s: float) -> np.ndarray | None:
    """The device's last ``samples`` samples of ``inputs`` up to the finding, aligned by timestamp."""
    end = f.timestamp + timedelta(microseconds=1)
    start = f.timestamp - timedelta(seconds=max(60.0, 4 * samples * period_s))
    columns: dict[str, dict[float, float]] = {}
    for metric in inputs:
        rows = storage.query_readings(f.device_id, metric, start, end, limit=100_000)
        columns[metric] = {round(r.ts.timestamp(), 3): (np.nan if r.value is None else r.value)
                           for r in rows if r.substation == f.substation or not f.substation}
    common = sorted(set.intersection(*(set(c) for c in columns.values()))) if columns else []
    if len(common) < samples:
        return None
    common = common[-samples:]
    return np.array([[columns[m][t] for m in inputs] for t in common])


def explain_findings(storage: Storage, registry_root: str | None, findings: list[Finding]) -> list[Finding]:
    """The findings, with contributions added to those of type ``anomaly_multivariate`` that a
    registry model reading the device's metrics can explain. Never raises for one finding."""
    wanted = [i for i, f in enumerate(findings) if f.type == "anomaly_multivariate"]
    if not wanted or not registry_root or not Path(registry_root).is_dir():
        return findings
    from models.explain import tree_shap
    from models.features import compute_features

    models = _models(registry_root)
    out = list(findings)
    for i in wanted:
        f = findings[i]
        facts = dict(f.facts)
        for manifest, onnx_bytes in models:
            spec = manifest.feature_spec
            x = _window(storage, f, spec.inputs, 2 * spec.window, spec.sample_period_s)
            if x is None:
                continue
            if manifest.kind != "isolation_forest":
                facts["contributions_note"] = f"{manifest.label} is a {manifest.kind}: no exact contributions"
                continue
            try:
                features = compute_features(x, spec)[-1]
                expl = tree_shap(_ensemble(onnx_bytes), features[None, :])
            except Exception as exc:  # noqa: BLE001 - an explanation is extra; the finding stands
                log.warning("could not explain %s on %s with %s: %s", f.type, f.device_id, manifest.label, exc)
                continue
            values = expl.values[0]
            order = np.argsort(np.abs(values))[::-1][:TOP]
            facts["contributions"] = {spec.names[k]: round(float(values[k]), 6) for k in order}
            facts["contributions_model"] = manifest.label
            facts["contributions_explain"] = ("average path length of the IsolationForest (exact TreeSHAP): "
                                              "negative contributions made the window more anomalous")
            facts["contributions_expected_value"] = round(float(expl.expected_value), 6)
            facts["contributions_output"] = round(float(expl.output[0]), 6)
            facts.pop("contributions_note", None)
            break
        out[i] = msgspec.structs.replace(f, facts=facts)
    return out
