"""Scoring on the edge: streaming detectors, plus an ONNX model when one is loaded. numpy + onnxruntime.

A :class:`Scorer` keeps the state of every series it has seen (``(device_id, metric)``) and scores
readings as they arrive, a batch at a time. The detectors (``models.detectors``) score every
reading; a learned model (a :class:`Model`, loaded from a verified registry entry) scores a
device's feature window once every ``model_stride`` samples, in one ``InferenceSession.run`` for
all devices due in the batch, and its score holds until the device's next window. That keeps the
model's cost per reading small: one ONNX call costs about a millisecond however few rows it has,
so rows are batched, and a window of 32 samples moved by 8 has changed little.

``Scorer.swap(model)`` replaces the model atomically (the batch being scored finishes with the
model it started with; no reading is dropped) and keeps the previous one for ``rollback()``.
Scoring calls must come from one thread; ``swap`` and ``rollback`` may come from any.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from models._windows import causal_fill
from models.detectors import (ANOMALY_TYPES, DETECTORS, MULTIVARIATE_CODE, U_ALARM, DetectorBank, DetectorConfig,
                              combine, hill, type_names)
from models.features import FeatureExtractor, FeatureSpec
from models.manifest import Manifest
from protocols.reading import QualityFlag, Reading, sensor_type

__all__ = ["BlockScores", "Model", "ModelLoadError", "ReadingScore", "Scorer", "load_model"]

_BAD_FLAGS = QualityFlag.INVALID | QualityFlag.COMM_LOST | QualityFlag.SUBSTITUTED


class ModelLoadError(Exception):
    """onnxruntime could not load a model, or its graph does not match its manifest."""


class Model:
    """One loaded model version: an ``InferenceSession`` (one intra-op thread) and its manifest.

    Build with :func:`load_model` after verification (``models.registry`` does both).
    """

    def __init__(self, manifest: Manifest, onnx: bytes) -> None:
        self.manifest = manifest
        import onnxruntime as ort  # here, not at import: a box scoring with its detectors alone never loads it (~30 MB)

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        # no memory arena or per-shape memory plan: the edge's batches are small, and an arena grown by
        # one large batch would be held for the life of the session (docs/edge-footprint.md)
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        try:
            self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{manifest.label}: onnxruntime cannot load model.onnx: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if manifest.input_name not in inputs or manifest.output_name not in outputs:
            raise ModelLoadError(f"{manifest.label}: graph has inputs {sorted(inputs)} and outputs "
                                 f"{sorted(outputs)}; manifest names {manifest.input_name!r} -> "
                                 f"{manifest.output_name!r}")
        width = inputs[manifest.input_name].shape[-1]
        if isinstance(width, int) and width != manifest.feature_spec.n_features:
            raise ModelLoadError(f"{manifest.label}: graph takes {width} features, spec names "
                                 f"{manifest.feature_spec.n_features}")
        self._dtype = np.float32 if manifest.input_dtype == "float32" else np.float64
        self._outputs = [manifest.output_name]
        classes = manifest.classes
        codes = [ANOMALY_TYPES.index(c) if c in ANOMALY_TYPES[1:] else MULTIVARIATE_CODE for c in classes]
        self._class_codes = np.asarray(codes, dtype=np.int8)

    @property
    def label(self) -> str:
        return self.manifest.label

    @property
    def spec(self) -> FeatureSpec:
        return self.manifest.feature_spec

    def raw_scores(self, features: np.ndarray) -> np.ndarray:
        """The model's raw anomaly score per row (higher = more anomalous), float64 ``(n,)``."""
        x = np.ascontiguousarray(features, dtype=self._dtype)
        if x.ndim != 2 or x.shape[1] != self.spec.n_features:
            raise ValueError(f"{self.label}: features must be (rows, {self.spec.n_features}), got {x.shape}")
        out = self.session.run(self._outputs, {self.manifest.input_name: x})[0]
        out = np.asarray(out, dtype=np.float64).reshape(len(x), -1)
        if self.manifest.kind == "risk_classifier":
            return 1.0 - out[:, self.manifest.output_column]
        return self.manifest.orientation * out[:, self.manifest.output_column]

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(alarm_score, type_code, calibrated)`` per row: alarm scores on the detectors' scale
        (0.5 = alarm), the anomaly type (``multivariate``, or a classifier's class), and the
        calibrated 0..1 score the manifest's calibration gives."""
        x = np.ascontiguousarray(features, dtype=self._dtype)
        if self.manifest.kind == "risk_classifier":
            probs = np.asarray(self.session.run(self._outputs, {self.manifest.input_name: x})[0], dtype=np.float64)
            raw = 1.0 - probs[:, self.manifest.output_column]
            others = probs.copy()
            others[:, self.manifest.output_column] = -1.0
            codes = self._class_codes[others.argmax(axis=1)]
        else:
            raw = self.raw_scores(x)
            codes = np.full(len(x), MULTIVARIATE_CODE, dtype=np.int8)
        calibrated = self.manifest.calibration.apply(raw)
        return self.manifest.calibration.alarm_score(calibrated), codes, calibrated


def load_model(manifest: Manifest, onnx: bytes) -> Model:
    """An ONNX model and its (already verified) manifest, ready to score."""
    return Model(manifest, onnx)


@dataclass(frozen=True, slots=True)
class BlockScores:
    """Scores of a block ``(series, B)``: combined score, type code, confidence, and the parts."""

    score: np.ndarray  # float32 0..1
    type: np.ndarray  # int8 codes into ANOMALY_TYPES
    confidence: np.ndarray  # float32 0..1
    detector_scores: np.ndarray  # float32 (series, B, 6), columns in DETECTORS order
    model_score: np.ndarray | None  # float32 (series, B); NaN where the series has no model input

    def type_names(self) -> np.ndarray:
        return type_names(self.type)


@dataclass(frozen=True, slots=True)
class ReadingScore:
    score: float  # 0..1
    type: str  # an ANOMALY_TYPES name
    confidence: float  # 0..1


class _ModelState:
    """Feature history and held model scores of the groups (devices) one feature spec reads."""

    def __init__(self, spec: FeatureSpec) -> None:
        self.spec = spec
        self.extractor = FeatureExtractor(spec, 0)
        self.index: dict[Hashable, int] = {}
        self.seen = np.zeros(0, dtype=np.int64)
        self.held = np.zeros(0)
        self.held_type = np.zeros(0, dtype=np.int8)

    def rows(self, groups: Sequence[Hashable]) -> np.ndarray:
        out = np.empty(len(groups), dtype=np.intp)
        for i, g in enumerate(groups):
            row = self.index.get(g)
            if row is None:
                row = self.index[g] = len(self.index)
            out[i] = row
        n = len(self.index)
        if n > len(self.seen):
            grow = max(n, 2 * len(self.seen)) - len(self.seen)
            self.extractor.grow(len(self.seen) + grow)
            self.seen = np.concatenate([self.seen, np.zeros(grow, dtype=np.int64)])
            self.held = np.concatenate([self.held, np.zeros(grow)])
            self.held_type = np.concatenate([self.held_type, np.full(grow, MULTIVARIATE_CODE, dtype=np.int8)])
        return out


STEADY_QUANTITIES = frozenset({"voltage", "frequency"})
"""Quantities the grid holds at a level (unlike current, power or temperature, which follow the
load): their drift is measured against scales from before it began (DetectorBank.set_steady)."""


class Scorer:
    """Scores series causally as they arrive: detectors always, a learned model when one is loaded."""

    def __init__(self, model: Model | None = None, *, config: DetectorConfig | None = None,
                 model_stride: int = 8) -> None:
        if model_stride < 1:
            raise ValueError(f"model_stride must be >= 1, got {model_stride}")
        self.detectors = DetectorBank(0, config)
        self.model_stride = model_stride
        self._series: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self._model = model
        self._previous: Model | None = None
        self._model_states: dict[FeatureSpec, _ModelState] = {}

    # -- models -----------------------------------------------------------------------------------

    @property
    def model(self) -> Model | None:
        return self._model

    @property
    def previous(self) -> Model | None:
        """The model replaced by the last swap, kept for :meth:`rollback`."""
        return self._previous

    def swap(self, model: Model | None) -> Model | None:
        """Use ``model`` from the next batch on (``None``: detectors only); returns the one replaced."""
        with self._lock:
            old, self._model = self._model, model
            if old is not None:
                self._previous = old
            return old

    def rollback(self) -> Model | None:
        """Go back to the previous model; returns the one now in use. Raises if there is none."""
        with self._lock:
            if self._previous is None:
                raise LookupError("no previous model to roll back to")
            self._model, self._previous = self._previous, self._model
            return self._model

    # -- scoring ----------------------------------------------------------------------------------

    def series_rows(self, keys: Sequence[Hashable]) -> np.ndarray:
        """Detector rows of series ``keys`` (new keys get new rows). A key ``(group, metric)`` whose
        metric is a quantity the grid holds steady (voltage, frequency) gets a steady row."""
        out = np.empty(len(keys), dtype=np.intp)
        index = self._series
        steady: list[int] = []
        for i, key in enumerate(keys):
            row = index.get(key)
            if row is None:
                row = index[key] = len(index)
                if isinstance(key, tuple) and key and isinstance(key[-1], str) and \
                        sensor_type(key[-1]) in STEADY_QUANTITIES:
                    steady.append(row)
            out[i] = row
        if len(index) > self.detectors.n_series:
            self.detectors.grow(max(len(index), 2 * self.detectors.n_series))
        if steady:
            self.detectors.set_steady(np.asarray(steady, dtype=np.intp))
        return out

    def score_block(self, keys: Sequence[tuple[Hashable, str]], values: np.ndarray,
                    valid: np.ndarray | None = None) -> BlockScores:
        """Advance series ``keys`` (``(group, input)`` pairs, e.g. ``(device_id, metric)``) by a block
        of samples ``values`` ``(len(keys), B)`` (NaN or ``valid=False``: missing) and score it."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        if valid is not None:
            x = np.where(np.asarray(valid, dtype=bool).reshape(x.shape), x, np.nan)
        rows = self.series_rows(keys)
        det = self.detectors.update(x, rows=rows)
        score, codes = det.score.copy(), det.type.copy()
        model = self._model  # one model for the whole block, whatever a concurrent swap does
        model_score = None
        if model is not None:
            model_score = self._score_model(model, keys, x)
            if model_score is not None:
                ms, mtype = model_score
                # the model's alarm score on the detectors' surprise scale (0.5 <-> U_ALARM), as one
                # more line of evidence in the detectors' combination (Fisher: agreement counts)
                a = np.clip(np.nan_to_num(ms, nan=0.0), 0.0, 1.0 - 1e-12)
                um = U_ALARM * np.power(a / (1.0 - a), 1.0 / self.detectors.config.hill)
                surprise = det.surprise if det.surprise is not None else np.zeros((*x.shape, len(DETECTORS)))
                ext = np.concatenate([surprise.astype(np.float64), um[..., None]], axis=2)
                total, top = combine(ext, self.detectors.config.combine, self.detectors.config.agreement_cost)
                score = hill(total / U_ALARM, self.detectors.config.hill).astype(np.float32)
                wins = top == len(DETECTORS)
                codes = np.where(wins, mtype, codes).astype(np.int8)
                model_score = ms.astype(np.float32)
        return BlockScores(score, codes, det.confidence, det.scores, model_score)

    def _score_model(self, model: Model, keys: Sequence[tuple[Hashable, str]],
                     x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        spec = model.spec
        position = {name: k for k, name in enumerate(spec.inputs)}
        members: dict[Hashable, list[int]] = {}
        for i, key in enumerate(keys):
            k = position.get(key[1])
            if k is not None:
                members.setdefault(key[0], [-1] * len(spec.inputs))[k] = i
        groups = [g for g, idx in members.items() if min(idx) >= 0]
        if not groups:
            return None
        state = self._model_states.get(spec)
        if state is None:
            state = self._model_states[spec] = _ModelState(spec)
        grows = state.rows(groups)
        take = np.asarray([members[g] for g in groups], dtype=np.intp)  # (G, inputs) rows of x
        block = x[take]  # (G, inputs, B)
        b = x.shape[1]
        feats = state.extractor.update(block.transpose(0, 2, 1), groups=grows)  # (G, B, F)
        seen = state.seen[grows][:, None] + np.arange(1, b + 1)[None, :]
        due = (seen % self.model_stride == 0) & (seen >= spec.window)
        fresh = np.full(due.shape, np.nan)
        fresh_type = np.full(due.shape, MULTIVARIATE_CODE, dtype=np.int8)
        if due.any():
            alarm, codes, _ = model.score(feats[due])
            fresh[due] = alarm
            fresh_type[due] = codes
        held, _ = causal_fill(fresh, due, state.held[grows])
        held = np.where(seen >= spec.window, held, 0.0)
        # type codes follow the same fill: index of the last due sample
        idx = np.where(due, np.arange(b)[None, :], -1)
        np.maximum.accumulate(idx, axis=1, out=idx)
        held_type = np.where(idx >= 0, np.take_along_axis(fresh_type, np.maximum(idx, 0), axis=1),
                             state.held_type[grows][:, None])
        state.seen[grows] = seen[:, -1]
        state.held[grows] = held[:, -1]
        state.held_type[grows] = held_type[:, -1]

        ms = np.full(x.shape, np.nan)
        mt = np.full(x.shape, MULTIVARIATE_CODE, dtype=np.int8)
        ms[take.reshape(-1)] = np.repeat(held, len(spec.inputs), axis=0)
        mt[take.reshape(-1)] = np.repeat(held_type, len(spec.inputs), axis=0)
        return ms, mt

    def score_readings(self, readings: Sequence[Reading]) -> list[ReadingScore]:
        """Score a batch of readings (in time order per series); one result per reading, same order.

        Readings without a value, or flagged invalid / comm-lost / substituted, are missing samples.
        """
        if not readings:
            return []
        per_key: dict[tuple[str, str], list[int]] = {}
        values = np.empty(len(readings))
        for i, r in enumerate(readings):
            per_key.setdefault((r.device_id, r.metric), []).append(i)
            values[i] = np.nan if r.value is None or (r.flags & _BAD_FLAGS) else r.value
        score = np.zeros(len(readings), dtype=np.float32)
        codes = np.zeros(len(readings), dtype=np.int8)
        conf = np.zeros(len(readings), dtype=np.float32)
        # blocks: all series with at least n readings advance together by their next run of samples
        counts = sorted({len(v) for v in per_key.values()})
        done = 0
        for count in counts:
            keys = [k for k, idx in per_key.items() if len(idx) >= count]
            take = np.asarray([per_key[k][done:count] for k in keys], dtype=np.intp)
            out = self.score_block(keys, values[take])
            score[take], codes[take], conf[take] = out.score, out.type, out.confidence
            done = count
        names = type_names(codes)
        return [ReadingScore(float(s), str(t), float(c)) for s, t, c in zip(score, names, conf)]
