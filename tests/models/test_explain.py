"""Exact tree contributions: TreeSHAP against brute-force Shapley values over every feature subset,
additivity on fitted forests, the ONNX adapter against the scikit-learn one, and a feature that is
plainly to blame."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.explain import (
    EXPECTED_VALUE,
    MODES,
    RISK_CLASS,
    ExplainError,
    Tree,
    TreeEnsemble,
    average_path_length,
    explain,
    from_onnx,
    from_sklearn,
    interventional_tree_shap,
    to_ensemble,
    tree_shap,
)

GRID = (-1.0, -0.5, 0.0, 0.5, 1.0)  # thresholds and row values share a grid, so ties are common

# -- brute force, written independently of models.explain -------------------------------------------


def _holds(x: float, threshold: float, mode: int) -> bool:
    name = MODES[mode]
    return {"BRANCH_LEQ": x <= threshold, "BRANCH_LT": x < threshold, "BRANCH_GTE": x >= threshold,
            "BRANCH_GT": x > threshold, "BRANCH_EQ": x == threshold, "BRANCH_NEQ": x != threshold}[name]


def _mode(tree: Tree, k: int) -> int:
    return 0 if tree.mode is None else int(tree.mode[k])


def _conditional(tree: Tree, x: np.ndarray, known: frozenset[int], k: int = 0) -> float:
    """The path-dependent ``E[tree(x) | x_known]``: follow ``x`` on known features, otherwise both
    children weighted by cover."""
    if tree.children_left[k] < 0:
        return float(tree.value[k])
    left, right = int(tree.children_left[k]), int(tree.children_right[k])
    f = int(tree.feature[k])
    if f in known:
        nxt = left if _holds(x[f], tree.threshold[k], _mode(tree, k)) else right
        return _conditional(tree, x, known, nxt)
    c = float(tree.cover[k])
    return (tree.cover[left] / c * _conditional(tree, x, known, left)
            + tree.cover[right] / c * _conditional(tree, x, known, right))


def _evaluate(tree: Tree, x: np.ndarray) -> float:
    k = 0
    while tree.children_left[k] >= 0:
        k = tree.children_left[k] if _holds(x[tree.feature[k]], tree.threshold[k], _mode(tree, k)) \
            else tree.children_right[k]
    return float(tree.value[k])


def _shapley(n_features: int, game) -> np.ndarray:
    values = {s: game(frozenset(s))
              for r in range(n_features + 1) for s in itertools.combinations(range(n_features), r)}
    phi = np.zeros(n_features)
    for i in range(n_features):
        for s, v in values.items():
            if i in s:
                continue
            with_i = tuple(sorted(s + (i,)))
            weight = math.factorial(len(s)) * math.factorial(n_features - len(s) - 1) / math.factorial(n_features)
            phi[i] += weight * (values[with_i] - v)
    return phi


def brute_path_dependent(ens: TreeEnsemble, x: np.ndarray) -> np.ndarray:
    return _shapley(ens.n_features, lambda s: ens.base_value + sum(
        w * _conditional(t, x, s) for w, t in zip(ens.tree_weights, ens.trees)))


def brute_interventional(ens: TreeEnsemble, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    def game(s: frozenset[int]) -> float:
        total = 0.0
        for b in background:
            z = np.where([i in s for i in range(ens.n_features)], x, b)
            total += ens.base_value + sum(w * _evaluate(t, z) for w, t in zip(ens.tree_weights, ens.trees))
        return total / len(background)
    return _shapley(ens.n_features, game)


# -- random trees ---------------------------------------------------------------------------------

@st.composite
def trees(draw: st.DrawFn, n_features: int, modes: bool) -> Tree:
    left, right, feature, threshold, value, cover, mode = [], [], [], [], [], [], []

    def grow(depth: int) -> int:
        k = len(left)
        for a in (left, right, feature, threshold, value, cover, mode):
            a.append(0)
        if depth < 4 and draw(st.booleans() if depth else st.just(True)):
            left[k], right[k] = -2, -2  # placeholders until the children exist
            feature[k] = draw(st.integers(0, n_features - 1))
            threshold[k] = draw(st.sampled_from(GRID))
            mode[k] = draw(st.integers(0, len(MODES) - 1)) if modes else 0
            left[k] = grow(depth + 1)
            right[k] = grow(depth + 1)
            cover[k] = cover[left[k]] + cover[right[k]]
        else:
            left[k] = right[k] = -1
            value[k] = draw(st.floats(-5, 5, allow_nan=False))
            cover[k] = draw(st.integers(1, 50))
        return k

    grow(0)
    return Tree(np.array(left), np.array(right), np.array(feature), np.array(threshold, dtype=float),
                np.array(value, dtype=float), np.array(cover, dtype=float), np.array(mode, dtype=np.int8))


@st.composite
def ensembles(draw: st.DrawFn, modes: bool = True) -> TreeEnsemble:
    f = draw(st.integers(1, 5))
    ts = draw(st.lists(trees(f, modes), min_size=1, max_size=3))
    weights = np.array(draw(st.lists(st.floats(0.1, 2.0), min_size=len(ts), max_size=len(ts))))
    return TreeEnsemble(tuple(ts), f, weights, base_value=draw(st.floats(-1, 1)))


def rows_for(draw: st.DrawFn, n_features: int, n: int) -> np.ndarray:
    values = st.one_of(st.sampled_from(GRID), st.floats(-1.5, 1.5))
    return np.array(draw(st.lists(st.lists(values, min_size=n_features, max_size=n_features), min_size=n,
                                  max_size=n)), dtype=float)


FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.data())
def test_tree_shap_equals_brute_force_shapley_values(data: st.DataObject) -> None:
    ens = data.draw(ensembles())
    x = rows_for(data.draw, ens.n_features, 3)
    result = tree_shap(ens, x)
    for row, phi in zip(x, result.values):
        np.testing.assert_allclose(phi, brute_path_dependent(ens, row), rtol=0, atol=1e-9)
    assert result.expected_value == pytest.approx(brute_conditional_empty(ens), abs=1e-9)
    np.testing.assert_allclose(result.output, [ens.base_value + sum(w * _evaluate(t, r) for w, t in
                                                                  zip(ens.tree_weights, ens.trees)) for r in x],
                               rtol=0, atol=1e-9)
    assert result.additivity_error <= 1e-9


def brute_conditional_empty(ens: TreeEnsemble) -> float:
    x = np.zeros(ens.n_features)
    return ens.base_value + sum(w * _conditional(t, x, frozenset()) for w, t in zip(ens.tree_weights, ens.trees))


@FAST
@given(st.data())
def test_interventional_tree_shap_equals_brute_force_shapley_values(data: st.DataObject) -> None:
    ens = data.draw(ensembles())
    x = rows_for(data.draw, ens.n_features, 2)
    background = rows_for(data.draw, ens.n_features, data.draw(st.integers(1, 4)))
    result = interventional_tree_shap(ens, x, background)
    for row, phi in zip(x, result.values):
        np.testing.assert_allclose(phi, brute_interventional(ens, row, background), rtol=0, atol=1e-9)
    assert result.additivity_error <= 1e-9


def test_background_cover_counts_rows_and_stays_exact() -> None:
    rng = np.random.default_rng(3)
    tree = Tree(np.array([1, 3, -1, -1, -1]), np.array([2, 4, -1, -1, -1]), np.array([0, 1, 0, 0, 0]),
                np.array([0.0, 0.5, 0, 0, 0]), np.array([0, 0, 3.0, -1.0, 2.0]))
    ens = TreeEnsemble((tree,), 2, np.array([1.0]))
    with pytest.raises(ExplainError, match="cover"):
        tree_shap(ens, np.zeros((1, 2)))
    background = rng.normal(size=(200, 2))
    covered = ens.with_background_cover(background)
    left = background[:, 0] <= 0
    np.testing.assert_array_equal(covered.trees[0].cover,
                                  [200, left.sum(), (~left).sum(), (left & (background[:, 1] <= 0.5)).sum(),
                                   (left & (background[:, 1] > 0.5)).sum()])
    x = rng.normal(size=(5, 2))
    result = tree_shap(covered, x)
    for row, phi in zip(x, result.values):
        np.testing.assert_allclose(phi, brute_path_dependent(covered, row), rtol=0, atol=1e-9)
    assert result.expected_value == pytest.approx(ens.predict(background).mean(), abs=1e-12)


def test_rows_with_nan_or_the_wrong_width_are_refused() -> None:
    tree = Tree(np.array([1, -1, -1]), np.array([2, -1, -1]), np.array([0, 0, 0]), np.zeros(3),
                np.array([0, 1.0, 2.0]), np.array([2.0, 1, 1]))
    ens = TreeEnsemble((tree,), 2, np.array([1.0]))
    with pytest.raises(ExplainError, match="NaN"):
        tree_shap(ens, np.array([[np.nan, 0.0]]))
    with pytest.raises(ExplainError, match=r"\(n, 2\)"):
        tree_shap(ens, np.zeros((1, 3)))


# -- fitted forests -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted() -> dict:
    """An IsolationForest and a risk classifier as models.train fits them (default parameters:
    64 trees), on three-phase features, and the IsolationForest's export."""
    from models.export import export_model
    from models.features import CrossFeature, FeatureSpec, compute_features
    from models.manifest import TrainingData
    from models.train import train_model
    from tests.models.conftest import three_phase

    spec = FeatureSpec.build(inputs=("voltage_l1", "voltage_l2", "voltage_l3"),
                             series_features=("mean", "std", "slope", "roc", "band4", "missing"),
                             cross=(CrossFeature("phase_imbalance", ("voltage_l1", "voltage_l2", "voltage_l3")),))
    x = compute_features(three_phase(2400), spec)[spec.window - 1:]
    rng = np.random.default_rng(1)
    labels = np.where(rng.random(len(x)) < 0.15, "step", "normal").astype(object)
    x_lab = x.copy()
    x_lab[labels == "step", -1] += 0.02
    training = TrainingData(start="2026-01-01T00:00:00+00:00", end="2026-01-01T00:40:00+00:00", rows=len(x),
                            source="arrays")
    iforest = train_model(x, kind="isolation_forest", spec=spec, name="t-if", training=training)
    risk = train_model(x_lab, kind="risk_classifier", spec=spec, name="t-risk", training=training, y=labels)
    return {"isolation_forest": iforest, "risk_classifier": risk, "export": export_model(iforest),
            "risk_export": export_model(risk)}


def test_random_forest_contributions_add_up_to_the_probability(fitted: dict) -> None:
    trained = fitted["risk_classifier"]
    rows = trained.holdout
    est = trained.estimator
    ens = to_ensemble(trained)  # 1 - P(normal), the raw score
    result = tree_shap(ens, rows)
    np.testing.assert_allclose(result.output, trained.raw_scores(rows), rtol=0, atol=1e-12)
    assert result.additivity_error <= 1e-9
    # one class's probability, and its complement, are the same explanation mirrored
    step = tree_shap(from_sklearn(est, class_label="step"), rows)
    np.testing.assert_allclose(step.output, est.predict_proba(rows.astype(np.float32))[:, 1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(step.values, result.values, rtol=0, atol=1e-9)
    # the classifier learnt the phase imbalance: it carries most of the contributions
    assert np.abs(result.values).sum(axis=0).argmax() == trained.spec.n_features - 1


def test_isolation_forest_contributions_add_up_to_the_average_path_length(fitted: dict) -> None:
    trained = fitted["isolation_forest"]
    est = trained.estimator
    rows = trained.holdout[:200]
    ens = from_sklearn(est)
    result = tree_shap(ens, rows)
    c = float(average_path_length([est._max_samples])[0])
    # scikit-learn's score is -2 ** (-average path length / c(max_samples))
    path_length = -np.log2(-est.score_samples(rows.astype(np.float32))) * c
    np.testing.assert_allclose(result.output, path_length, rtol=0, atol=1e-9)
    assert result.additivity_error <= 1e-9
    from sklearn.ensemble._iforest import _average_path_length
    n = np.arange(1, 600)
    np.testing.assert_array_equal(average_path_length(n), _average_path_length(n))


def test_onnx_graph_gives_the_scikit_learn_contributions(fitted: dict) -> None:
    import onnxruntime as ort

    trained, exported = fitted["isolation_forest"], fitted["export"]
    ours, theirs = from_onnx(exported.onnx), from_sklearn(trained.estimator)
    for a, b in zip(ours.trees, theirs.trees):  # covers read back from the leaf weights
        np.testing.assert_array_equal(a.cover, b.cover)
    rows = trained.holdout[:200]
    a, b = tree_shap(ours, rows), tree_shap(theirs, rows)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-12)
    assert a.expected_value == pytest.approx(b.expected_value, abs=1e-12)
    assert a.additivity_error <= 1e-9
    # and the contributions give the graph's own output (its ensemble sums in float32)
    session = ort.InferenceSession(exported.onnx, providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], {"features": rows.astype(np.float32)})[0][:, 0]
    c = float(average_path_length([trained.estimator._max_samples])[0])
    implied = -(2.0 ** (-(a.values.sum(axis=1) + a.expected_value) / c)) - trained.estimator.offset_
    np.testing.assert_allclose(implied, scores, rtol=0, atol=1e-6)


def test_risk_classifier_graph_gives_the_scikit_learn_contributions(fitted: dict) -> None:
    """The exported risk classifier (skl2onnx's TreeEnsembleClassifier): 1 - P(normal) explained
    against a background equals the scikit-learn forest's explanation, to the float32 class weights."""
    import onnxruntime as ort

    trained, exported = fitted["risk_classifier"], fitted["risk_export"]
    manifest = exported.manifest
    normal = manifest.classes[manifest.output_column]
    assert normal == RISK_CLASS
    ours = from_onnx(exported.onnx, class_label=normal, complement=True)
    theirs = from_sklearn(trained.estimator, class_label=normal, complement=True)
    assert not ours.has_covers and ours.input_dtype == "float32" and ours.output.startswith("1 - P(normal)")
    background, rows = trained.holdout[:64], trained.holdout[64:164]
    assert (trained.estimator.predict(rows.astype(np.float32)) != "normal").any()  # anomalous rows among them
    a = interventional_tree_shap(ours, rows, background)
    b = interventional_tree_shap(theirs, rows, background)
    np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-8)  # measured: 5e-10
    assert a.expected_value == pytest.approx(b.expected_value, abs=1e-8)
    assert a.additivity_error <= 1e-12
    np.testing.assert_allclose(a.output, trained.raw_scores(rows), rtol=0, atol=1e-8)
    # the graph's own score, which the edge reads (onnxruntime sums the float32 weights in float32)
    session = ort.InferenceSession(exported.onnx, providers=["CPUExecutionProvider"])
    probabilities = session.run([manifest.output_name], {manifest.input_name: rows.astype(np.float32)})[0]
    np.testing.assert_allclose(a.values.sum(axis=1) + a.expected_value, 1.0 - probabilities[:, manifest.output_column],
                               rtol=0, atol=1e-6)
    # the classifier learnt the phase imbalance (the last feature): it carries most of the contributions
    assert np.abs(a.values).sum(axis=0).argmax() == trained.spec.n_features - 1
    # explain() on the graph: the same numbers, named
    named = explain(exported.onnx, rows[:1], list(trained.spec.names), background=background, class_label=normal,
                    complement=True)[0]
    assert named[trained.spec.names[-1]] == pytest.approx(a.values[0, -1], abs=1e-12)


@pytest.mark.parametrize("labels", [("normal", "step"), ("drift", "normal"), ("drift", "normal", "step")])
def test_classifier_graph_gives_each_class_probability(labels: tuple[str, ...]) -> None:
    """Two classes (one weight per leaf: P of the second label) and three (one weight per class);
    "normal" first or not: every class's probability and its complement, as onnxruntime gives them."""
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(11)
    x = rng.normal(size=(600, 4))
    y = np.full(len(x), "normal", dtype=object)
    others = [c for c in labels if c != "normal"]
    y[x[:, 0] > 0.6] = others[0]
    y[x[:, 1] > 1.0] = others[-1]
    est = RandomForestClassifier(n_estimators=12, max_depth=6, min_samples_leaf=3, random_state=0)
    est.fit(x.astype(np.float32), y)
    assert tuple(est.classes_) == labels
    graph = to_onnx(est, initial_types=[("features", FloatTensorType([None, 4]))],
                    target_opset={"": 17, "ai.onnx.ml": 3}, options={id(est): {"zipmap": False}}).SerializeToString()
    rows, background = rng.normal(size=(60, 4)), rng.normal(size=(40, 4))
    probabilities = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(
        ["probabilities"], {"features": rows.astype(np.float32)})[0]
    for k, label in enumerate(labels):
        for complement in (False, True):
            ens = from_onnx(graph, class_label=label, complement=complement)
            expected = 1.0 - probabilities[:, k] if complement else probabilities[:, k]
            np.testing.assert_allclose(ens.predict(rows), expected, rtol=0, atol=1e-6)
            a = interventional_tree_shap(ens, rows, background)
            b = interventional_tree_shap(from_sklearn(est, class_label=label, complement=complement), rows, background)
            np.testing.assert_allclose(a.values, b.values, rtol=0, atol=1e-7)  # float32 weights: 6e-8 relative
            assert a.additivity_error <= 1e-12
    with pytest.raises(ExplainError, match="name the class_label"):
        from_onnx(graph)
    with pytest.raises(ExplainError, match="no class 'spike'"):
        from_onnx(graph, class_label="spike")
    # and the graph's own ensemble against brute-force Shapley values (4 features: every subset)
    risk = from_onnx(graph, class_label="normal", complement=True)
    exact = interventional_tree_shap(risk, rows[:2], background[:3])
    for row, phi in zip(rows[:2], exact.values):
        np.testing.assert_allclose(phi, brute_interventional(risk, row, background[:3]), rtol=0, atol=1e-9)


def test_onnx_graph_without_cover_needs_covers_or_a_background() -> None:
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestRegressor

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 4))
    est = RandomForestRegressor(n_estimators=6, max_depth=4, random_state=0).fit(x, x[:, 0] - 2 * x[:, 3] ** 2)
    graph = to_onnx(est, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()
    bare = from_onnx(graph)
    with pytest.raises(ExplainError, match="cover"):
        tree_shap(bare, x[:3])
    covered = from_onnx(graph, covers=[t.tree_.weighted_n_node_samples for t in est.estimators_])
    rows = rng.normal(size=(40, 4))
    onnx_result, sk_result = tree_shap(covered, rows), tree_shap(from_sklearn(est), rows)
    assert onnx_result.additivity_error <= 1e-9
    # the graph holds thresholds and leaf values in float32: the same explanation, to float32
    np.testing.assert_allclose(onnx_result.values, sk_result.values, rtol=0, atol=1e-5)
    background = x[:30]
    inter = interventional_tree_shap(bare, rows[:5], background)
    assert inter.additivity_error <= 1e-9
    assert inter.expected_value == pytest.approx(bare.predict(background).mean(), abs=1e-12)


def test_an_outlier_in_one_feature_is_blamed_on_that_feature() -> None:
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, 5))
    est = IsolationForest(n_estimators=64, max_samples=256, random_state=0).fit(x.astype(np.float32))
    names = ["a", "b", "c", "d", "e"]
    row = np.zeros((1, 5))
    row[0, 2] = 6.0
    for out in (explain(est, row, names), explain(est, row, names, background=x[:50])):
        contributions = out[0]
        assert list(contributions)[0] == "c" and list(contributions)[-1] == EXPECTED_VALUE
        assert contributions["c"] < 0  # a shorter path: more anomalous
        assert abs(contributions["c"]) > 3 * max(abs(contributions[k]) for k in "abde")
        magnitudes = [abs(v) for k, v in contributions.items() if k != EXPECTED_VALUE]
        assert magnitudes == sorted(magnitudes, reverse=True)
        total = sum(v for k, v in contributions.items() if k != EXPECTED_VALUE) + contributions[EXPECTED_VALUE]
        assert total == pytest.approx(float(from_sklearn(est).predict(row)[0]), abs=1e-9)


def test_explain_names_a_trained_models_features(fitted: dict) -> None:
    trained = fitted["isolation_forest"]
    out = explain(trained, trained.holdout[:2])
    assert set(out[0]) == set(trained.spec.names) | {EXPECTED_VALUE}
    with pytest.raises(ExplainError, match="feature names"):
        explain(trained, trained.holdout[:2], ["x"] * trained.spec.n_features)
