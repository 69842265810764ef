"""Training at the hub (scikit-learn): unsupervised scorers of normal behaviour and a risk classifier.

Kinds (``MODEL_KINDS``):

- ``isolation_forest``: ``IsolationForest`` (64 trees of at most 256 samples: a small ONNX graph)
- ``lof``: ``StandardScaler`` then ``LocalOutlierFactor(novelty=True)``, fitted on at most 2,000
  windows (the ONNX graph holds them all, and each scored row is compared with each)
- ``mahalanobis``: squared Mahalanobis distance from a ``MinCovDet`` robust location and covariance
- ``risk_classifier``: ``RandomForestClassifier`` on labelled windows (``normal`` against the
  labels of experts' verdicts, e.g. ``step``, or any other name, which scores as ``multivariate``)

Rows are feature windows (``models.features``), one per sample after the first ``window - 1``.
A share of them (``holdout``) is kept out of fitting: the unsupervised kinds calibrate on it (the
empirical CDF of their raw scores with an exponential tail, stored in the manifest), the
classifier reports accuracy, precision, recall and ROC AUC on it. Those rows also serve the ONNX
parity check in ``models.export``.

Never imported by the edge: ``models.runtime``, ``features`` and ``detectors`` do not import this.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from sklearn.base import BaseEstimator
from sklearn.covariance import MinCovDet
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score
from sklearn.neighbors import LocalOutlierFactor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from models.features import CrossFeature, FeatureSpec, compute_features
from models.manifest import MODEL_KINDS, Calibration, TrainingData
from models.tabular import read_csv, regularise
from protocols.reading import QualityFlag, Reading

__all__ = [
    "Label", "RobustMahalanobis", "TrainedModel", "fit_calibration", "train_from_csv", "train_from_readings",
    "train_model", "usable_inputs", "windows_from_readings",
]

NORMAL = "normal"
LOF_MAX_ROWS = 2000
MCD_MAX_ROWS = 2000


class Label(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An expert's verdict on an interval of a device (or all devices: ``device_id=None``).

    ``label`` is ``normal`` (a false alarm) or the anomaly's type (``step``, ``drift``, ...)."""

    start: datetime
    end: datetime
    label: str
    device_id: str | None = None


class RobustMahalanobis(BaseEstimator):
    """Squared Mahalanobis distance from a robust (``MinCovDet``) location and covariance, on scaled features.

    Each feature is first scaled by a robust spread (IQR / 1.349, else the standard deviation, else
    1 for a feature constant in training) around its median, so large raw values (loads in MW,
    voltages in V) and tiny ones (vibration RMS) weigh alike and the distance stays well conditioned;
    the ONNX graph applies the same scaling (``models.export``). The covariance of the scaled features
    is shrunk toward the identity by ``shrinkage`` (a share of a robust unit variance), so a feature
    that is flat in the robust subset (a quantised channel) cannot make it singular; should the
    robust fit itself fail on such data, the plain covariance of the scaled rows is used instead
    (``fallback_`` says so). Constant features keep unit variance around their value.
    ``score_samples`` gives the distance (higher = more anomalous).
    """

    def __init__(self, support_fraction: float | None = None, shrinkage: float = 0.01,
                 random_state: int = 0) -> None:
        self.support_fraction = support_fraction
        self.shrinkage = shrinkage
        self.random_state = random_state

    def fit(self, x: np.ndarray, y: Any = None) -> RobustMahalanobis:
        x = np.asarray(x, dtype=np.float64)
        centre = np.median(x, axis=0)
        q75, q25 = np.percentile(x, [75, 25], axis=0)
        scale = (q75 - q25) / 1.349
        std = x.std(axis=0)
        # a quantised feature can have no spread between its quartiles and still vary
        scale = np.where(scale > 1e-9 * np.maximum(np.abs(centre), 1.0), scale, std)
        keep = scale > 1e-9 * np.maximum(np.abs(centre), 1.0)
        scale = np.where(keep, scale, 1.0)
        z = (x - centre) / scale
        d = x.shape[1]
        cov = np.eye(d)  # constant features: unit variance around their value
        loc = np.zeros(d)
        self.fallback_ = False
        if keep.any():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                warnings.simplefilter("ignore", UserWarning)
                try:
                    mcd = MinCovDet(support_fraction=self.support_fraction, random_state=self.random_state)
                    with threadpool_limits(limits=1, user_api="blas"):  # many small products: threads only contend
                        mcd.fit(z[:, keep])
                    sub_cov, sub_loc = mcd.covariance_, mcd.location_
                    if not np.all(np.isfinite(sub_cov)):
                        raise ValueError("non-finite robust covariance")
                except ValueError:
                    sub_cov = np.atleast_2d(np.cov(z[:, keep], rowvar=False, bias=True))
                    sub_loc = z[:, keep].mean(axis=0)
                    self.fallback_ = True
            cov[np.ix_(keep, keep)] = sub_cov
            loc[keep] = sub_loc
        cov = (1.0 - self.shrinkage) * cov + self.shrinkage * np.eye(d)
        self.scale_ = scale
        self.location_ = centre + scale * loc  # in the features' own units
        self.kept_ = keep
        precision = np.linalg.inv(cov)
        precision = (precision + precision.T) / 2
        self.chol_ = np.linalg.cholesky(precision)  # precision = L L^T, so d^2 = |((x - loc) / scale) L|^2
        return self

    def score_samples(self, x: np.ndarray) -> np.ndarray:
        z = ((np.asarray(x, dtype=np.float64) - self.location_) / self.scale_) @ self.chol_
        return np.sum(z * z, axis=1)


@dataclass
class TrainedModel:
    """A fitted estimator and everything its manifest needs."""

    name: str
    kind: str
    estimator: Any
    spec: FeatureSpec
    calibration: Calibration
    metrics: dict[str, float]
    training: TrainingData
    classes: tuple[str, ...] = ()
    holdout: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # feature rows not fitted on
    notes: list[str] = field(default_factory=list)  # what training did about the data (dropped inputs, ...)

    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """Raw anomaly scores (higher = more anomalous), as the ONNX model's output reads after orientation."""
        return raw_scores(self.kind, self.estimator, x, self.classes)


def raw_scores(kind: str, estimator: Any, x: np.ndarray, classes: Sequence[str] = ()) -> np.ndarray:
    if kind == "isolation_forest":
        return -estimator.decision_function(np.asarray(x, dtype=np.float32))
    if kind == "lof":
        return -estimator.decision_function(np.asarray(x, dtype=np.float64))
    if kind == "mahalanobis":
        return estimator.score_samples(x)
    if kind == "risk_classifier":
        proba = estimator.predict_proba(np.asarray(x, dtype=np.float32))
        return 1.0 - proba[:, list(estimator.classes_).index(NORMAL)]
    raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")


def fit_calibration(raw: np.ndarray, *, alarm_surprise: float = 3.0) -> Calibration:
    """Empirical CDF of held-out raw scores, with an exponential tail above the 99th percentile."""
    s = np.sort(np.asarray(raw, dtype=np.float64))
    n = len(s)
    if n < 20:
        raise ValueError(f"need at least 20 held-out windows to calibrate, have {n}")
    levels = np.concatenate([np.linspace(0.0, 0.99, 100), [0.995, 0.999]])
    levels = levels[n * (1.0 - levels) >= 2.0]  # at least two windows above each level
    quantiles = np.quantile(s, levels)
    # a discrete score ties quantiles: keep the highest level of each tie, so the CDF stays a function
    keep = np.append(quantiles[1:] > quantiles[:-1], True)
    levels, quantiles = levels[keep], quantiles[keep]
    if len(levels) < 2:
        levels, quantiles = np.array([0.0, levels[-1]]), np.array([s[0] - 1e-9, quantiles[-1]])
    q99 = np.quantile(s, 0.99)
    excess = s[s > q99] - q99
    spread = float(s[-1] - s[0]) or 1.0
    tail = float(excess.mean()) if len(excess) else 0.01 * spread
    return Calibration(kind="ecdf_tail", levels=tuple(float(v) for v in levels),
                       quantiles=tuple(float(v) for v in quantiles), tail_scale=max(tail, 1e-9 * spread),
                       alarm_surprise=alarm_surprise)


def _fit(kind: str, x: np.ndarray, y: np.ndarray | None, rng: np.random.Generator, random_state: int,
         params: dict[str, Any]) -> Any:
    if kind == "isolation_forest":
        kw = {"n_estimators": 64, "max_samples": min(256, len(x)), **params}
        return IsolationForest(random_state=random_state, **kw).fit(x.astype(np.float32))
    if kind == "lof":
        rows = x if len(x) <= LOF_MAX_ROWS else x[rng.choice(len(x), LOF_MAX_ROWS, replace=False)]
        kw = {"n_neighbors": 20, **params}
        return Pipeline([("scale", StandardScaler()),
                         ("lof", LocalOutlierFactor(novelty=True, **kw))]).fit(rows)
    if kind == "mahalanobis":
        rows = x if len(x) <= MCD_MAX_ROWS else x[rng.choice(len(x), MCD_MAX_ROWS, replace=False)]
        return RobustMahalanobis(random_state=random_state, **params).fit(rows)
    if kind == "risk_classifier":
        assert y is not None
        kw = {"n_estimators": 64, "max_depth": 10, "min_samples_leaf": 2, "class_weight": "balanced", **params}
        return RandomForestClassifier(random_state=random_state, n_jobs=1, **kw).fit(x.astype(np.float32), y)
    raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")


def train_model(x: np.ndarray, *, kind: str, spec: FeatureSpec, name: str, training: TrainingData,
                y: Sequence[str] | np.ndarray | None = None, holdout: float = 0.2, random_state: int = 0,
                alarm_surprise: float = 3.0, params: dict[str, Any] | None = None) -> TrainedModel:
    """Fit ``kind`` on feature rows ``x`` (``(rows, spec.n_features)``); ``y``: labels per row.

    The unsupervised kinds fit on the rows labelled ``normal`` when labels are given. ``params``
    override the estimator's defaults (``n_estimators``, ``max_samples``, ``n_neighbors``, ...).
    """
    params = dict(params or {})
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r} (known: {', '.join(MODEL_KINDS)})")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != spec.n_features:
        raise ValueError(f"feature rows must be (rows, {spec.n_features}), got {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    labels = None if y is None else np.asarray(y, dtype=object)[finite].astype(str)
    x = x[finite]
    rng = np.random.default_rng(random_state)
    metrics: dict[str, float] = {}
    if kind == "risk_classifier":
        if labels is None:
            raise ValueError("the risk classifier needs labelled windows (labels, or a label column)")
        classes = sorted(set(labels))
        if NORMAL not in classes or len(classes) < 2:
            raise ValueError(f"the risk classifier needs 'normal' windows and at least one other label, got {classes}")
        train, test = _stratified_split(labels, holdout, rng)
        est = _fit(kind, x[train], labels[train], rng, random_state, params)
        classes = tuple(str(c) for c in est.classes_)
        metrics.update(_classifier_metrics(est, x[test], labels[test]))
        metrics.update(train_rows=float(len(train)), holdout_rows=float(len(test)))
        return TrainedModel(name, kind, est, spec, Calibration(kind="probability"), metrics, training, classes,
                            holdout=x[test])
    normal = np.ones(len(x), dtype=bool) if labels is None else labels == NORMAL
    idx = rng.permutation(np.nonzero(normal)[0])
    n_hold = max(20, int(len(idx) * holdout))
    if len(idx) - n_hold < 50:
        raise ValueError(f"need at least {n_hold + 50} normal windows to train and calibrate, have {len(idx)}")
    hold, fit_rows = np.sort(idx[:n_hold]), np.sort(idx[n_hold:])
    est = _fit(kind, x[fit_rows], None, rng, random_state, params)
    cal = fit_calibration(raw_scores(kind, est, x[hold]), alarm_surprise=alarm_surprise)
    train_alarm = cal.alarm_score(cal.apply(raw_scores(kind, est, x[fit_rows])))
    metrics.update(train_rows=float(len(fit_rows)), holdout_rows=float(len(hold)),
                   train_alarm_rate=float(np.mean(train_alarm >= 0.5)))
    if labels is not None and (~normal).any():
        raw = raw_scores(kind, est, x)
        truth = ~normal
        score = cal.alarm_score(cal.apply(raw))
        metrics.update(labelled_auc=float(roc_auc_score(truth, raw)),
                       labelled_detection_rate=float(np.mean(score[truth] >= 0.5)))
    return TrainedModel(name, kind, est, spec, cal, metrics, training, (), holdout=x[hold])


def _stratified_split(labels: np.ndarray, holdout: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.nonzero(labels == c)[0])
        k = max(1, round(len(idx) * holdout)) if len(idx) > 1 else 0
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _classifier_metrics(est: Any, x: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    if len(x) == 0:
        return {}
    pred = est.predict(x.astype(np.float32))
    truth_bin = labels != NORMAL
    risk = 1.0 - est.predict_proba(x.astype(np.float32))[:, list(est.classes_).index(NORMAL)]
    p, r, f, _ = precision_recall_fscore_support(truth_bin, risk >= 0.5, average="binary", zero_division=0)
    out = {"accuracy": float(accuracy_score(labels, pred)), "precision": float(p), "recall": float(r), "f1": float(f)}
    if truth_bin.any() and not truth_bin.all():
        out["roc_auc"] = float(roc_auc_score(truth_bin, risk))
    return out


# -- from CSV files -------------------------------------------------------------------------------

def usable_inputs(names: Sequence[str], values: np.ndarray) -> tuple[list[str], dict[str, str]]:
    """The columns of ``values`` (``(rows, len(names))``) a model can learn from, and why the others cannot.

    A column with no value at all, or one value throughout, says nothing about normal behaviour and
    would make every feature of it constant: it is dropped, with the reason (``all missing``,
    ``constant at 0.054711``)."""
    values = np.asarray(values, dtype=np.float64)
    kept, dropped = [], {}
    for k, name in enumerate(names):
        v = values[:, k]
        finite = v[np.isfinite(v)]
        if not len(finite):
            dropped[name] = "all missing"
        elif finite.min() == finite.max():
            dropped[name] = f"constant at {finite[0]:.6g}"
        else:
            kept.append(name)
    return kept, dropped


def train_from_csv(path: str | Path, *, kind: str = "isolation_forest", name: str,
                   columns: Sequence[str] | None = None, label_column: str | None = None, window: int = 32,
                   rows: slice | None = None, random_state: int = 0, strict_times: bool = False) -> TrainedModel:
    """Train on a CSV (as ``sentinel models score`` reads it): one group, inputs = the value columns.

    ``label_column`` (text: ``normal`` or an anomaly type; or 0/1) labels each row's window.
    ``rows`` limits training to a slice of the rows (e.g. the first 8,640 of ETTh1), in time order.
    Rows out of time order are sorted and repeated times averaged (``models.tabular.read_csv``; its
    report is in ``notes``; ``strict_times`` refuses such a file instead). Columns that are all
    missing or constant over the rows trained on are left out of the model's inputs, each named in
    ``notes`` and in the manifest (``training.dropped_inputs``); the model's ``FeatureSpec.inputs``
    are the columns it kept, which is what the edge feeds it.
    """
    table = read_csv(path, columns=columns, strict=strict_times)
    labels_raw = None
    if label_column:
        if label_column not in table.header:
            raise ValueError(f"{path}: no label column {label_column!r} (columns: {', '.join(table.header)})")
        idx = table.header.index(label_column)
        labels_raw = np.asarray([r[idx].strip() for r in csv.reader(table.lines, delimiter=table.delimiter)],
                                dtype=object)
        labels_raw = np.where(np.isin(labels_raw, ["0", "0.0", "", "false", "False"]), NORMAL, labels_raw)
        labels_raw = np.where(np.isin(labels_raw, ["1", "1.0", "true", "True"]), "anomaly", labels_raw)
        table.columns.pop(label_column, None)
    names = [c for c in columns if c != label_column] if columns is not None else list(table.columns)
    sel = slice(None) if rows is None else rows
    time_s = table.time_s[sel]
    notes = []
    report = table.timestamps
    if report is not None and not report.clean:
        notes.append(f"{Path(path).name}: {report.summary()}")
        notes.extend(f"  {line}" for line in report.details(3))
    kept, dropped = usable_inputs(names, table.values(names)[sel])
    if not kept:
        raise ValueError(f"{path}: no column to learn from: "
                         + "; ".join(f"{n} is {why}" for n, why in dropped.items()))
    if dropped:
        notes.append("inputs left out of the model: " + "; ".join(f"{n} ({why})" for n, why in dropped.items())
                     + f"; it reads {', '.join(kept)}")
    names = kept
    values = table.values(names)[sel]
    pos, samples, period = regularise(time_s, max_gap_samples=2 * window)
    grid = np.full((samples, len(names)), np.nan)
    grid[pos] = values
    spec = FeatureSpec.build(window=window, sample_period_s=period, inputs=tuple(names))
    feats = compute_features(grid, spec)[pos]
    keep = (pos >= window - 1) & np.concatenate([[True], np.diff(pos) > 0])  # one window per sample
    y = None if labels_raw is None else labels_raw[sel][keep]
    start, end = (table.time_range() if rows is None else _iso_range(time_s))
    training = TrainingData(start=start, end=end, rows=int(keep.sum()), source=f"csv:{Path(path).name}",
                            dropped_inputs=tuple(dropped))
    trained = train_model(feats[keep], kind=kind, spec=spec, name=name, training=training, y=y,
                          random_state=random_state)
    trained.notes.extend(notes)
    return trained


def _iso_range(time_s: np.ndarray) -> tuple[str | None, str | None]:
    if not len(time_s):
        return None, None
    return (datetime.fromtimestamp(float(time_s[0]), timezone.utc).isoformat(),
            datetime.fromtimestamp(float(time_s[-1]), timezone.utc).isoformat())


# -- from stored readings (the hub) ---------------------------------------------------------------

_BAD = QualityFlag.INVALID | QualityFlag.COMM_LOST | QualityFlag.SUBSTITUTED


def windows_from_readings(readings: Sequence[Reading], spec: FeatureSpec, *,
                          labels: Sequence[Label] = ()) -> tuple[np.ndarray, np.ndarray, TrainingData]:
    """Feature rows of every device that reports all of ``spec.inputs``, their labels, and the range.

    A device's readings are binned on a grid of ``spec.sample_period_s`` (values in one bin are
    averaged); gaps become missing samples, as in ``models.tabular.regularise``.
    """
    inputs = {m: k for k, m in enumerate(spec.inputs)}
    per_device: dict[str, tuple[list[float], list[int], list[float]]] = {}
    for r in readings:
        k = inputs.get(r.metric)
        if k is None:
            continue
        t, col, val = per_device.setdefault(r.device_id, ([], [], []))
        t.append(r.ts.timestamp())
        col.append(k)
        val.append(np.nan if r.value is None or (r.flags & _BAD) else float(r.value))
    rows, ys, devices, t_min, t_max = [], [], [], np.inf, -np.inf
    period = spec.sample_period_s
    for device, (t_list, col_list, val_list) in sorted(per_device.items()):
        t = np.asarray(t_list)
        col = np.asarray(col_list)
        val = np.asarray(val_list)
        if len(set(col_list)) < len(spec.inputs):
            continue
        bucket = np.rint(t / period).astype(np.int64)
        uniq, inv = np.unique(bucket, return_inverse=True)
        sums = np.zeros((len(uniq), len(spec.inputs)))
        counts = np.zeros((len(uniq), len(spec.inputs)))
        ok = np.isfinite(val)
        np.add.at(sums, (inv[ok], col[ok]), val[ok])
        np.add.at(counts, (inv[ok], col[ok]), 1)
        with np.errstate(invalid="ignore"):
            binned = sums / counts  # NaN where a bin has no valid value
        pos, samples, _ = regularise(uniq * period, period_s=period, gap_factor=1.5, max_gap_samples=2 * spec.window)
        grid = np.full((samples, len(spec.inputs)), np.nan)
        grid[pos] = binned
        feats = compute_features(grid, spec)[pos]
        keep = pos >= spec.window - 1
        times = uniq[keep] * period
        rows.append(feats[keep])
        ys.append(_label_rows(device, times, labels))
        devices.append(device)
        if len(times):
            t_min, t_max = min(t_min, times[0]), max(t_max, times[-1])
    if not rows:
        raise ValueError(f"no device reports all of {list(spec.inputs)} in the readings given")
    x = np.concatenate(rows)
    y = np.concatenate(ys)
    start, end = _iso_range(np.array([t_min, t_max])) if np.isfinite(t_min) else (None, None)
    training = TrainingData(start=start, end=end, rows=len(x), source=f"readings:{len(devices)} devices",
                            series=tuple(devices))
    return x, y, training


def _label_rows(device: str, times: np.ndarray, labels: Sequence[Label]) -> np.ndarray:
    y = np.full(len(times), NORMAL, dtype=object)
    for lab in labels:
        if lab.device_id is not None and lab.device_id != device:
            continue
        inside = (times >= lab.start.timestamp()) & (times < lab.end.timestamp())
        y[inside] = lab.label
    return y


def train_from_readings(readings: Sequence[Reading], *, name: str, metrics: Sequence[str],
                        kind: str = "isolation_forest", labels: Sequence[Label] = (), window: int = 32,
                        sample_period_s: float = 1.0, cross: Sequence[CrossFeature] = (),
                        series_features: Sequence[str] | None = None, random_state: int = 0) -> TrainedModel:
    """Train a model of devices that report ``metrics`` from stored readings (the hub's entry point).

    Every device reporting all ``metrics`` contributes its windows; ``labels`` (experts' verdicts on
    intervals) label them for the risk classifier, and keep labelled anomalies out of the
    unsupervised kinds' training. Export, sign and publish the result with ``models.export`` and
    ``models.registry``.

    A metric whose readings hold no valid value, or one value throughout, is left out of the model's inputs
    (with the cross features that read it), named in ``notes`` and ``training.dropped_inputs``.
    """
    by_metric: dict[str, list[float]] = {m: [] for m in metrics}
    seen: set[str] = set()
    for r in readings:
        if r.metric in by_metric:
            seen.add(r.metric)
            if r.value is not None and not (r.flags & _BAD):
                by_metric[r.metric].append(float(r.value))
    width = max((len(v) for v in by_metric.values()), default=0)
    grid = np.full((max(width, 1), len(metrics)), np.nan)
    for k, m in enumerate(metrics):
        grid[:len(by_metric[m]), k] = by_metric[m]
    kept, dropped = usable_inputs(list(metrics), grid)
    kept = [m for m in metrics if m in kept or m not in seen]  # a metric nobody reports: an error below
    dropped = {m: why for m, why in dropped.items() if m in seen}
    if not kept:
        raise ValueError("no metric to learn from: " + "; ".join(f"{n} is {why}" for n, why in dropped.items()))
    notes = []
    if dropped:
        lost = [c for c in cross if any(i in dropped for i in c.inputs)]
        cross = [c for c in cross if c not in lost]
        notes.append("inputs left out of the model: " + "; ".join(f"{n} ({why})" for n, why in dropped.items())
                     + (f" (and the cross features {', '.join(c.kind for c in lost)})" if lost else "")
                     + f"; it reads {', '.join(kept)}")
    spec = FeatureSpec.build(window=window, sample_period_s=sample_period_s, inputs=tuple(kept),
                             series_features=None if series_features is None else tuple(series_features),
                             cross=tuple(cross))
    x, y, training = windows_from_readings(readings, spec, labels=labels)
    if dropped:
        training = msgspec.structs.replace(training, dropped_inputs=tuple(dropped))
    has_labels = bool(labels) and (y != NORMAL).any()
    trained = train_model(x, kind=kind, spec=spec, name=name, training=training,
                          y=y if (has_labels or kind == "risk_classifier") else None, random_state=random_state)
    trained.notes.extend(notes)
    return trained
