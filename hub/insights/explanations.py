"""Feature contributions behind a model-driven anomaly: which features made a window anomalous.

The hub recomputes the device's feature window from stored readings, with the same code the edge
scores with (:func:`models.features.compute_features`), and explains it with exact TreeSHAP
(:mod:`models.explain`) on a model in its registry: the finding's facts get ``contributions``
(feature -> value, the largest ``TOP`` first), ``contributions_explain`` (what they add up to),
``contributions_expected_value`` and ``contributions_output`` (contributions + expected value =
output, over all features; only the largest are kept).

IsolationForest (findings of type ``anomaly_multivariate``): the explained quantity is the average
path length, by path-dependent TreeSHAP with the covers read back from the graph. A NEGATIVE
contribution made the window shorter to isolate, i.e. more anomalous. LOF and Mahalanobis models
are left unexplained, and the finding says so (``contributions_note``).

Risk classifier. The edge types a classifier's alarm by the class it names (``step``, ``drift``, ...;
a class that is no detector type, e.g. ``phase_imbalance``, is ``multivariate``), so the type alone
does not tell a classifier's finding from a detector's, and the hub stores no record of which won.
The rule: a finding ``anomaly_<t>`` is explained with a registry model of kind ``risk_classifier``
when

1. ``t`` is a type the classifier can name (``multivariate``, or one of its non-normal classes that
   is a detector type);
2. the finding's metric is one of the classifier's inputs (the edge puts a model's score on its
   inputs only) and the device has stored readings of all of them;
3. re-scored at the hub (:class:`models.runtime.Model`, the edge's own code) on the window ending at
   the finding's timestamp, the classifier raises an alarm (score >= ``ALARM``, the edge's alarm
   threshold) and names type ``t``. A detector's step that the classifier sees as normal, or as
   another class, is not the classifier's to explain, and is left as it is.

The explained quantity is the risk score ``1 - P(normal)`` (the graph has no covers), by exact
interventional TreeSHAP against a background of the device's own windows: the last ``BACKGROUND``
(at least ``MIN_BACKGROUND``) complete feature windows, rebuilt from stored readings, that end
before the episode began (``Finding.start``; without it, before the finding's window's last
sample). A POSITIVE contribution raised the window's risk above the background's mean risk (the
expected value). ``contributions_background`` says which windows those were (how many, when the
first and the last ended, and the time they end before); ``contributions_class`` is the class the
classifier names (its most probable class other than ``normal``, as the edge picks it).

Models are tried in the registry's name order; the first that explains a finding wins.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from agents.findings import Finding
from hub.storage.base import Storage
from models.manifest import Manifest
from models.registry import Registry, RegistryError
from models.signing import ModelVerificationError

__all__ = ["ALARM", "BACKGROUND", "MIN_BACKGROUND", "explain_findings"]

log = logging.getLogger(__name__)
TOP = 8
BACKGROUND = 64  # the risk classifier's background: the device's windows before the episode
MIN_BACKGROUND = 16
ALARM = 0.5  # the edge's alarm threshold on its combined score (models.detectors: 0.5 at threshold)


@lru_cache(maxsize=16)
def _ensemble(onnx_bytes: bytes) -> Any:
    import onnx

    from models.explain import from_onnx

    return from_onnx(onnx.load_from_string(onnx_bytes))


@lru_cache(maxsize=16)
def _risk_ensemble(onnx_bytes: bytes, normal: str) -> Any:
    from models.explain import from_onnx

    return from_onnx(onnx_bytes, class_label=normal, complement=True)


@lru_cache(maxsize=16)
def _edge_model(manifest_bytes: bytes, onnx_bytes: bytes) -> Any:
    from models.runtime import load_model

    return load_model(msgspec.json.decode(manifest_bytes, type=Manifest), onnx_bytes)


def _models(root: str) -> list[tuple[Manifest, bytes, bytes]]:
    """``(manifest, manifest bytes, onnx bytes)`` of each model's latest version."""
    reg = Registry(root)
    out = []
    for name in reg.names():
        try:
            files = reg.read_files(name)
        except (RegistryError, ModelVerificationError, OSError, ValueError, msgspec.MsgspecError) as exc:
            log.debug("model %s not used for explanations: %s", name, exc)
            continue
        try:
            out.append((msgspec.json.decode(files.manifest, type=Manifest), files.manifest, files.onnx))
        except msgspec.ValidationError:
            continue
    return out


def _aligned(storage: Storage, f: Finding, inputs: Sequence[str], end: datetime, samples: int,
             period_s: float) -> tuple[list[float], np.ndarray]:
    """Up to the device's last ``samples`` samples of ``inputs`` before ``end`` (exclusive), aligned
    by timestamp: ``(timestamps, (n, inputs))``, oldest first."""
    start = end - timedelta(seconds=max(60.0, 4 * samples * period_s))
    columns: dict[str, dict[float, float]] = {}
    for metric in inputs:
        rows = storage.query_readings(f.device_id, metric, start, end, limit=100_000)
        columns[metric] = {round(r.ts.timestamp(), 3): (np.nan if r.value is None else r.value)
                           for r in rows if (r.substation == f.substation or not f.substation) and r.ts < end}
    common = sorted(set.intersection(*(set(c) for c in columns.values()))) if columns else []
    common = common[-samples:]
    return common, np.array([[columns[m][t] for m in inputs] for t in common]).reshape(len(common), len(inputs))


def _window(storage: Storage, f: Finding, inputs: Sequence[str], samples: int, period_s: float) -> np.ndarray | None:
    """The device's last ``samples`` samples of ``inputs`` up to the finding, aligned by timestamp."""
    _, x = _aligned(storage, f, inputs, f.timestamp + timedelta(microseconds=1), samples, period_s)
    return x if len(x) == samples else None


def _classifier_types(manifest: Manifest) -> set[str]:
    """The finding types a classifier's alarms get on the edge (``models.runtime.Model.score``)."""
    from models.detectors import ANOMALY_TYPES

    normal = manifest.classes[manifest.output_column]
    return {f"anomaly_{c if c in ANOMALY_TYPES[1:] else 'multivariate'}" for c in manifest.classes if c != normal}


def _explain_risk(storage: Storage, f: Finding, manifest: Manifest, manifest_bytes: bytes,
                  onnx_bytes: bytes) -> dict[str, Any] | None:
    """Facts to add when the risk classifier explains ``f`` (the rule in the module's docstring)."""
    from models.detectors import type_names
    from models.explain import interventional_tree_shap
    from models.features import compute_features

    spec = manifest.feature_spec
    if not 0 <= manifest.output_column < len(manifest.classes) or f.type not in _classifier_types(manifest):
        return None
    if f.metric and f.metric not in spec.inputs:
        return None
    x = _window(storage, f, spec.inputs, 2 * spec.window, spec.sample_period_s)
    if x is None:
        return None
    row = compute_features(x, spec)[-1:]
    if not np.isfinite(row).all():
        return None
    model = _edge_model(manifest_bytes, onnx_bytes)
    alarm, codes, _ = model.score(row)
    if not alarm[0] >= ALARM or f"anomaly_{type_names(codes)[0]}" != f.type:
        return None  # the classifier does not raise this alarm on this window: not its finding
    probabilities = np.asarray(model.session.run([manifest.output_name], {manifest.input_name: row.astype(
        np.float32 if manifest.input_dtype == "float32" else np.float64)})[0], dtype=np.float64)[0]
    probabilities[manifest.output_column] = -1.0
    named = manifest.classes[int(np.argmax(probabilities))]  # the class behind the type, as the edge picks it
    from_start = f.start is not None and f.start <= f.timestamp
    cut = f.start if from_start and f.start is not None else f.timestamp
    times, xb = _aligned(storage, f, spec.inputs, cut, BACKGROUND + spec.window - 1, spec.sample_period_s)
    if len(xb) < spec.window:
        return None
    feats = compute_features(xb, spec)[spec.window - 1:]  # complete windows only
    ends = times[spec.window - 1:]
    keep = np.isfinite(feats).all(axis=1)
    background, ends = feats[keep][-BACKGROUND:], [t for t, k in zip(ends, keep) if k][-BACKGROUND:]
    if len(background) < MIN_BACKGROUND:
        return None
    normal = manifest.classes[manifest.output_column]
    expl = interventional_tree_shap(_risk_ensemble(onnx_bytes, normal), row, background)
    values = expl.values[0]
    order = np.argsort(np.abs(values))[::-1][:TOP]
    iso = [datetime.fromtimestamp(t, UTC).isoformat() for t in (ends[0], ends[-1])]
    since = "the episode began" if from_start else "the explained window's last sample"
    return {
        "contributions": {spec.names[k]: round(float(values[k]), 6) for k in order},
        "contributions_model": manifest.label,
        "contributions_class": named,
        "contributions_explain": (
            f"risk score 1 - P({normal}) of the risk classifier (exact interventional TreeSHAP) for the window "
            f"ending {f.timestamp.isoformat()}, against a background of {len(background)} feature windows of "
            f"{f.device_id} rebuilt from stored readings, ending {iso[0]} to {iso[1]} (before {since}): "
            f"positive contributions raised the risk above the background's mean"),
        "contributions_background": {"windows": len(background), "first_end": iso[0], "last_end": iso[1],
                                     "before": cut.isoformat()},
        "contributions_expected_value": round(float(expl.expected_value), 6),
        "contributions_output": round(float(expl.output[0]), 6),
    }


def explain_findings(storage: Storage, registry_root: str | None, findings: list[Finding]) -> list[Finding]:
    """The findings, with contributions added to the ``anomaly_*`` ones a registry model can explain
    (see the module's docstring for which). Never raises for one finding."""
    wanted = [i for i, f in enumerate(findings) if f.type.startswith("anomaly_")]
    if not wanted or not registry_root or not Path(registry_root).is_dir():
        return findings
    from models.explain import tree_shap
    from models.features import compute_features

    models = _models(registry_root)
    out = list(findings)
    for i in wanted:
        f = findings[i]
        facts = dict(f.facts)
        for manifest, manifest_bytes, onnx_bytes in models:
            spec = manifest.feature_spec
            if manifest.kind == "risk_classifier":
                try:
                    found = _explain_risk(storage, f, manifest, manifest_bytes, onnx_bytes)
                except Exception as exc:  # noqa: BLE001 - an explanation is extra; the finding stands
                    log.warning("could not explain %s on %s with %s: %s", f.type, f.device_id, manifest.label, exc)
                    continue
                if found is None:
                    continue
                facts.update(found)
                facts.pop("contributions_note", None)
                break
            if f.type != "anomaly_multivariate":
                continue
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
        if facts != f.facts:
            out[i] = msgspec.structs.replace(f, facts=facts)
    return out
