"""ONNX export of trained models, checked for parity, with their manifests. Hub side only.

Every export is checked against scikit-learn on the held-out rows before it is returned: the ONNX
graph's raw score (IsolationForest and LOF: ``decision_function``; Mahalanobis: the squared
distance; the classifier: the probability of ``normal``) must agree within ``PARITY_ATOL``.
Graphs are kept small for the edge. skl2onnx converts the LOF and the classifier. The
IsolationForest is written here as one ``TreeEnsembleRegressor`` plus four arithmetic operators:
skl2onnx's converter emits about 40 operators per tree (2,500 for 64 trees), which is what made a
single-row call cost a millisecond; the compact graph costs about 20 us per call and 2.5 us per row
in large batches, with the same scores (parity-checked like the others). The LOF keeps at most
2,000 reference rows. LOF and Mahalanobis run in float64 (distances in float32 lose the
parity); the tree models take float32 features, as scikit-learn's trees do.

The robust-covariance scorer has no skl2onnx converter; its graph is five ONNX operators
(``Sub``, ``Div``, ``MatMul``, ``Mul``, ``ReduceSum``) built here: ``d^2 = |((x - location) / scale) L|^2``
with ``scale`` the features' robust spreads and ``L`` the Cholesky factor of the scaled features'
precision matrix: the scaling the estimator was fitted with is in the graph, so the edge feeds raw
features exactly as training did.

Parity is ``|onnx - sklearn| <= PARITY_ATOL + PARITY_RTOL * |sklearn|``: a distance of 1e6 (a far
outlier among the held-out rows) computed with another summation order differs in its last digits,
and the calibrated score of such a distance is the same either way.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx as skl_to_onnx
from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType
from sklearn.ensemble import IsolationForest
from sklearn.ensemble._iforest import _average_path_length

from models.manifest import Manifest
from models.train import NORMAL, TrainedModel

__all__ = ["PARITY_ATOL", "PARITY_RTOL", "ExportedModel", "ParityError", "export_model", "onnx_raw_scores", "to_onnx"]

PARITY_ATOL = 1e-5
PARITY_RTOL = 1e-9
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
INPUT_NAME = "features"


class ParityError(AssertionError):
    """The ONNX graph does not score as scikit-learn does."""


@dataclass(frozen=True)
class ExportedModel:
    """An ONNX graph and its unsigned manifest (the registry sets the version and signs it)."""

    onnx: bytes
    manifest: Manifest
    parity_max_abs: float  # largest |ONNX - scikit-learn| on the held-out rows


@dataclass(frozen=True)
class _Graph:
    onnx: bytes
    input_dtype: str
    output_name: str
    output_column: int
    orientation: int


def _mahalanobis_graph(location: np.ndarray, scale: np.ndarray, chol: np.ndarray) -> bytes:
    f = len(location)
    nodes = [
        helper.make_node("Sub", [INPUT_NAME, "location"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["scaled"]),
        helper.make_node("MatMul", ["scaled", "chol"], ["whitened"]),
        helper.make_node("Mul", ["whitened", "whitened"], ["squared"]),
        helper.make_node("ReduceSum", ["squared", "axes"], ["distance"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes, "robust_mahalanobis",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.DOUBLE, [None, f])],
        [helper.make_tensor_value_info("distance", TensorProto.DOUBLE, [None, 1])],
        initializer=[numpy_helper.from_array(location.astype(np.float64), "location"),
                     numpy_helper.from_array(scale.astype(np.float64), "scale"),
                     numpy_helper.from_array(chol.astype(np.float64), "chol"),
                     numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET[""])],
                              producer_name="smartgrid-sentinel")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _isolation_forest_graph(est: IsolationForest, f: int) -> bytes:
    """``decision_function`` of a fitted IsolationForest as one ``TreeEnsembleRegressor`` and four
    arithmetic operators.

    Each leaf's weight is the path length scikit-learn adds for it (depth + c(leaf samples) - 1),
    the ensemble sums them, and ``-(2 ** (-sum / (trees * c(max_samples)))) - offset_`` follows.
    Thresholds stay float64 and the float32 input is cast to float64 first, which is exactly how
    scikit-learn compares (float32 features against float64 thresholds).
    """
    tree_ids, node_ids, features, thresholds, modes, true_ids, false_ids = [], [], [], [], [], [], []
    leaf_tree, leaf_node, leaf_weight = [], [], []
    subsampled = est._max_features != f
    for t, (tree, feats, depth, avg) in enumerate(zip(est.estimators_, est.estimators_features_,
                                                      est._decision_path_lengths, est._average_path_length_per_tree)):
        tr = tree.tree_
        fmap = np.asarray(feats) if subsampled else np.arange(f)
        leaf = tr.children_left == -1
        n = tr.node_count
        tree_ids.extend([t] * n)
        node_ids.extend(range(n))
        features.extend(np.where(leaf, 0, fmap[np.maximum(tr.feature, 0)]).tolist())
        thresholds.append(np.where(leaf, 0.0, tr.threshold))
        modes.extend(["LEAF" if is_leaf else "BRANCH_LEQ" for is_leaf in leaf])
        true_ids.extend(np.where(leaf, 0, tr.children_left).tolist())
        false_ids.extend(np.where(leaf, 0, tr.children_right).tolist())
        leaves = np.nonzero(leaf)[0]
        leaf_tree.extend([t] * len(leaves))
        leaf_node.extend(leaves.tolist())
        leaf_weight.append(depth[leaves] + avg[leaves] - 1.0)
    denominator = len(est.estimators_) * float(_average_path_length([est._max_samples])[0])
    ensemble = helper.make_node(
        "TreeEnsembleRegressor", ["x64"], ["path_sum"], domain="ai.onnx.ml",
        nodes_treeids=tree_ids, nodes_nodeids=node_ids, nodes_featureids=features, nodes_modes=modes,
        nodes_truenodeids=true_ids, nodes_falsenodeids=false_ids,
        nodes_values_as_tensor=numpy_helper.from_array(np.concatenate(thresholds).astype(np.float64)),
        target_ids=[0] * len(leaf_tree), target_nodeids=leaf_node, target_treeids=leaf_tree,
        target_weights_as_tensor=numpy_helper.from_array(np.concatenate(leaf_weight).astype(np.float64)),
        n_targets=1, aggregate_function="SUM", post_transform="NONE")
    nodes = [
        helper.make_node("Cast", [INPUT_NAME], ["x64"], to=TensorProto.DOUBLE),
        ensemble,
        helper.make_node("Cast", ["path_sum"], ["path_sum64"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["path_sum64", "minus_ln2_over_denominator"], ["exponent"]),
        helper.make_node("Exp", ["exponent"], ["anomaly"]),  # 2 ** (-sum / denominator)
        helper.make_node("Sub", ["minus_offset", "anomaly"], ["scores"]),  # -anomaly - offset_
    ]
    graph = helper.make_graph(
        nodes, "isolation_forest",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [None, f])],
        [helper.make_tensor_value_info("scores", TensorProto.DOUBLE, [None, 1])],
        initializer=[numpy_helper.from_array(np.array([-np.log(2.0) / denominator]), "minus_ln2_over_denominator"),
                     numpy_helper.from_array(np.array([-float(est.offset_)]), "minus_offset")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", TARGET_OPSET[""]),
                                                    helper.make_opsetid("ai.onnx.ml", TARGET_OPSET["ai.onnx.ml"])],
                              producer_name="smartgrid-sentinel")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def to_onnx(trained: TrainedModel, *, exporter: str = "compact") -> _Graph:
    """The trained estimator as an ONNX graph, and how to read its output.

    ``exporter="skl2onnx"`` exports an IsolationForest with skl2onnx's converter instead of the
    compact graph (same scores; about 40 times slower per call, see benchmarks/bench_scoring.py).
    """
    f = trained.spec.n_features
    est = trained.estimator
    if trained.kind == "isolation_forest":
        if exporter == "skl2onnx":
            proto = skl_to_onnx(est, initial_types=[(INPUT_NAME, FloatTensorType([None, f]))],
                                target_opset=TARGET_OPSET)
            return _Graph(proto.SerializeToString(), "float32", "scores", 0, -1)
        return _Graph(_isolation_forest_graph(est, f), "float32", "scores", 0, -1)
    if trained.kind == "lof":
        proto = skl_to_onnx(est, initial_types=[(INPUT_NAME, DoubleTensorType([None, f]))], target_opset=TARGET_OPSET)
        return _Graph(proto.SerializeToString(), "float64", "scores", 0, -1)
    if trained.kind == "mahalanobis":
        scale = getattr(est, "scale_", np.ones_like(est.location_))
        return _Graph(_mahalanobis_graph(est.location_, scale, est.chol_), "float64", "distance", 0, 1)
    if trained.kind == "risk_classifier":
        proto = skl_to_onnx(est, initial_types=[(INPUT_NAME, FloatTensorType([None, f]))], target_opset=TARGET_OPSET,
                            options={id(est): {"zipmap": False}})
        return _Graph(proto.SerializeToString(), "float32", "probabilities", list(est.classes_).index(NORMAL), -1)
    raise ValueError(f"unknown model kind {trained.kind!r}")


def onnx_raw_scores(graph: _Graph, kind: str, x: np.ndarray) -> np.ndarray:
    """Raw scores of rows ``x`` from the ONNX graph, oriented as ``TrainedModel.raw_scores``."""
    session = ort.InferenceSession(graph.onnx, providers=["CPUExecutionProvider"])
    dtype = np.float32 if graph.input_dtype == "float32" else np.float64
    out = session.run([graph.output_name], {INPUT_NAME: np.ascontiguousarray(x, dtype=dtype)})[0]
    out = np.asarray(out, dtype=np.float64).reshape(len(x), -1)
    if kind == "risk_classifier":
        return 1.0 - out[:, graph.output_column]
    return graph.orientation * out[:, graph.output_column]


def export_model(trained: TrainedModel, *, holdout: np.ndarray | None = None,
                 atol: float = PARITY_ATOL, rtol: float = PARITY_RTOL) -> ExportedModel:
    """Export, check parity on held-out rows (``trained.holdout`` unless given), build the manifest."""
    graph = to_onnx(trained)
    rows = trained.holdout if holdout is None else np.asarray(holdout, dtype=np.float64)
    if len(rows) == 0:
        raise ParityError(f"{trained.name}: no held-out rows to check ONNX parity on")
    ours = onnx_raw_scores(graph, trained.kind, rows)
    theirs = trained.raw_scores(rows)
    diff = np.abs(ours - theirs)
    worst = float(np.max(diff))
    excess = diff - rtol * np.abs(theirs)
    if not np.all(excess <= atol):  # NaN fails too
        i = int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)))
        raise ParityError(f"{trained.name} ({trained.kind}): ONNX and scikit-learn differ by up to {worst:.3g} "
                          f"on {len(rows)} held-out rows (allowed {atol:g} + {rtol:g} x |score|; worst row {i}: "
                          f"{ours[i]:.6g} against {theirs[i]:.6g})")
    manifest = Manifest(
        name=trained.name, version=1, kind=trained.kind,  # type: ignore[arg-type]
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        feature_spec=trained.spec, input_name=INPUT_NAME, input_dtype=graph.input_dtype,  # type: ignore[arg-type]
        output_name=graph.output_name, output_column=graph.output_column,
        orientation=graph.orientation,  # type: ignore[arg-type]
        calibration=trained.calibration, classes=tuple(trained.classes), training=trained.training,
        metrics={**trained.metrics, "parity_max_abs": worst},
        sha256=hashlib.sha256(graph.onnx).hexdigest(), onnx_bytes=len(graph.onnx),
    )
    return ExportedModel(graph.onnx, manifest, worst)
