"""Exact feature contributions (SHAP values) of the tree models. Hub side; numpy only at import.

A tree ensemble here is plain arrays (:class:`Tree`, :class:`TreeEnsemble`), built from a fitted
scikit-learn forest (:func:`from_sklearn`), from an ONNX ``TreeEnsembleRegressor`` (our isolation
forest) or ``TreeEnsembleClassifier`` (our risk classifier, as skl2onnx writes it) graph
(:func:`from_onnx`) or by hand. Two exact methods explain one output of it:

- :func:`tree_shap`: **path-dependent TreeSHAP** (Lundberg et al. 2018, "Consistent individualized
  feature attribution for tree ensembles", Algorithm 2): the Shapley values of the game
  ``v(S) = E[f(x) | x_S]``, where the expectation follows the tree's own cover: at a node that
  splits on a feature outside ``S`` both children count, weighted by their share of the node's
  training cover. Needs each node's cover.
- :func:`interventional_tree_shap`: the Shapley values of ``v(S) = mean_b f(x_S, b_rest)`` over a
  background dataset ``b`` (Lundberg et al. 2020, "From local explanations to global understanding",
  interventional TreeSHAP). Needs no cover; costs ``rows x background x leaves``.

Both are exact, not sampled: each row's contributions plus the expected value (``v`` of the empty
set: the cover-weighted mean of the leaves, or the mean output over the background) sum to the
model's output for that row, to rounding (the tests hold them to 1e-9 against brute-force Shapley
values over every feature subset).

How it is computed. Algorithm 2 walks each tree per row, growing and "unwinding" a polynomial of
the path's features. Here the same quantity is taken leaf by leaf, as GPUTreeShap does (Mitchell et
al. 2022): a leaf's value ``v`` reaches the output through the unique features ``j`` of its path,
each with ``z_j`` (the product of the cover fractions of that feature's splits on the path) and
``o_j`` (1 if the row satisfies every one of that feature's splits on the path, else 0); its
contribution to feature ``i`` is ``v (o_i - z_i) sum_k k!(u-1-k)!/u! [t^k] prod_{j != i} (z_j + o_j t)``.
The polynomials are built and divided (the unwind) with numpy over all rows and all leaves with the
same number of unique features ``u`` at once, so the Python-level work is ``O(u^2)`` array
operations per group, not per row or per node. Comparisons are made as the model makes them:
scikit-learn sends ``x <= threshold`` left, after rounding the row to float32 (``input_dtype``).

Isolation forests. The quantity explained is the **average path length** the export uses: per tree,
the leaf's depth plus ``c(samples in the leaf)`` (scikit-learn's ``_average_path_length``),
averaged over the trees. The anomaly score is ``2 ** (-average path length / c(max_samples))``, a
decreasing function of it, so a **negative** contribution pushes a row towards anomalous.

Risk classifiers. The quantity explained is the raw score ``1 - P(normal)``, in probability units: a
**positive** contribution pushed the window towards an anomaly class. From the ONNX graph
(``from_onnx(graph, class_label="normal", complement=True)``) the leaves' values are the graph's
float32 class weights, so contributions match :func:`from_sklearn`'s to about 1e-9 (the float32
rounding of each leaf's ``P / trees``), and they add up (to 1e-15) to a probability that is the
graph's own to the float32 sum onnxruntime makes (about 1e-7).

Cover in ONNX. ``TreeEnsembleRegressor`` and ``TreeEnsembleClassifier`` hold no cover, and the
manifest has no field for one. :func:`from_onnx` takes ``covers`` when the caller has them; for an
isolation forest written by ``models.export`` it needs none: each leaf's weight is
``depth + c(n) - 1`` (with scikit-learn's depth, counted from 1) and ``c`` is strictly increasing,
so the leaf's sample count ``n`` is read back exactly from the weight and the graph's depth, and an
inner node's cover is the sum of its leaves' (that is scikit-learn's ``n_node_samples``). Otherwise
(the risk classifier's graph among them) the ensemble has no cover:
:func:`interventional_tree_shap` explains it against a background, or
:meth:`TreeEnsemble.with_background_cover` counts a background's rows through the nodes as cover.

Rows with NaN or infinite values are refused (scikit-learn refuses infinities; a NaN's branch is
a model-specific rule this module does not reproduce).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

__all__ = [
    "EXPECTED_VALUE", "RISK_CLASS", "ExplainError", "Explanation", "Tree", "TreeEnsemble", "average_path_length",
    "explain", "from_onnx", "from_sklearn", "interventional_tree_shap", "to_ensemble", "tree_shap",
]

EXPECTED_VALUE = "expected_value"  # the key of the expected value in explain()'s dicts
RISK_CLASS = "normal"  # the risk classifier's raw score is 1 - P(RISK_CLASS) (models.train.NORMAL)
MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ")
_CHUNK_ELEMENTS = 1 << 20  # floats per working array (8 MB): rows are processed in chunks


class ExplainError(ValueError):
    """A model this module cannot explain exactly, or input it cannot explain (what and why)."""


def average_path_length(n: np.ndarray | Sequence[float]) -> np.ndarray:
    """``c(n)``: the average path length of an unsuccessful search in a binary search tree of ``n``
    items, as scikit-learn's IsolationForest computes it (0 for n <= 1, 1 for n = 2)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros(n.shape)
    big = n > 2
    out[n == 2] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


@dataclass(frozen=True, eq=False)
class Tree:
    """One tree as arrays over its nodes; node 0 is the root.

    ``children_left[k]`` is where a row goes when node ``k``'s comparison holds (scikit-learn:
    ``x[feature] <= threshold``), ``children_right[k]`` where it goes otherwise; both are -1 at a
    leaf. ``value`` is read at leaves only. ``cover`` is each node's training weight (scikit-learn's
    ``weighted_n_node_samples``), ``None`` if unknown. ``mode`` holds indices into ``MODES`` per
    node (``None``: every split is ``BRANCH_LEQ``).
    """

    children_left: np.ndarray
    children_right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    cover: np.ndarray | None = None
    mode: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name, dtype in (("children_left", np.intp), ("children_right", np.intp), ("feature", np.intp),
                            ("threshold", np.float64), ("value", np.float64), ("cover", np.float64),
                            ("mode", np.int8)):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=dtype))
        n = len(self.children_left)
        arrays = {"children_right": self.children_right, "feature": self.feature, "threshold": self.threshold,
                  "value": self.value, "cover": self.cover, "mode": self.mode}
        for name, a in arrays.items():
            if a is not None and np.shape(a) != (n,):
                raise ExplainError(f"tree: {name} has shape {np.shape(a)}, children_left ({n},)")
        if n == 0:
            raise ExplainError("tree: no nodes")
        left, right = np.asarray(self.children_left), np.asarray(self.children_right)
        if ((left == -1) != (right == -1)).any():
            raise ExplainError("tree: a node has one child (both children are -1 at a leaf, neither elsewhere)")
        children = np.concatenate([left[left >= 0], right[right >= 0]])
        if children.size and (children.min() < 1 or children.max() >= n or len(np.unique(children)) != len(children)):
            raise ExplainError("tree: children must be distinct node indices 1..n-1 (node 0 is the root)")
        if len(children) != n - 1:
            raise ExplainError(f"tree: {n} nodes but {len(children)} are children of another; not one tree")

    @property
    def n_nodes(self) -> int:
        return len(self.children_left)


@dataclass(frozen=True, eq=False)
class TreeEnsemble:
    """``f(x) = base_value + sum_t tree_weights[t] * tree_t(x)`` over ``n_features`` features.

    ``input_dtype="float32"``: rows are rounded to float32 before comparisons, as scikit-learn's
    trees and our float32 ONNX graphs do. ``output`` says in words what ``f`` is.
    """

    trees: tuple[Tree, ...]
    n_features: int
    tree_weights: np.ndarray
    base_value: float = 0.0
    input_dtype: str = "float64"
    output: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tree_weights", np.asarray(self.tree_weights, dtype=np.float64))
        if not self.trees:
            raise ExplainError("an ensemble needs at least one tree")
        if np.shape(self.tree_weights) != (len(self.trees),):
            raise ExplainError(f"tree_weights has shape {np.shape(self.tree_weights)}, expected ({len(self.trees)},)")
        if self.input_dtype not in ("float32", "float64"):
            raise ExplainError(f"input_dtype must be float32 or float64, got {self.input_dtype!r}")
        for t, tree in enumerate(self.trees):
            inner = tree.children_left >= 0
            f = np.asarray(tree.feature)[inner]
            if f.size and (f.min() < 0 or f.max() >= self.n_features):
                raise ExplainError(f"tree {t}: split features must be 0..{self.n_features - 1}")

    @property
    def has_covers(self) -> bool:
        return all(t.cover is not None for t in self.trees)

    # -- evaluation ----------------------------------------------------------------------------

    def rows(self, x: np.ndarray) -> np.ndarray:
        """``x`` as the model compares it: float64 ``(n, n_features)``, rounded to float32 first
        when the model takes float32. Refuses NaN and infinities."""
        a = np.asarray(x)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2 or a.shape[1] != self.n_features:
            raise ExplainError(f"rows must be (n, {self.n_features}), got {np.shape(x)}")
        a = a.astype(np.float32 if self.input_dtype == "float32" else np.float64).astype(np.float64)
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            raise ExplainError(f"rows {np.nonzero(bad)[0][:5].tolist()} hold NaN or infinite values")
        return a

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The ensemble's output per row, float64 ``(n,)``."""
        a = self.rows(x)
        lay = self._layout
        node = np.broadcast_to(lay.roots, (len(a), len(self.trees))).copy()
        rows = np.arange(len(a))[:, None]
        for _ in range(lay.max_depth):
            inner = lay.left[node] >= 0
            if not inner.any():
                break
            holds = _compare(a[rows, lay.feature[node]], lay.threshold[node], lay.mode[node])
            node = np.where(inner, np.where(holds, lay.left[node], lay.right[node]), node)
        return self.base_value + (lay.value[node] * self.tree_weights[None, :]).sum(axis=1)

    @cached_property
    def expected_value(self) -> float:
        """The cover-weighted mean output (path-dependent TreeSHAP's ``v`` of the empty set)."""
        total = self.base_value
        for w, tree in zip(self.tree_weights, self.trees):
            cover = _require_cover(tree)
            leaf = tree.children_left < 0
            total += w * float(np.dot(tree.value[leaf], cover[leaf])) / float(cover[0])
        return float(total)

    def with_background_cover(self, background: np.ndarray) -> TreeEnsemble:
        """The same ensemble with each node's cover = the number of ``background`` rows reaching it.

        Path-dependent TreeSHAP on the result is exact for the tree's conditional expectations
        under the background's distribution over the nodes (not the training data's)."""
        a = self.rows(background)
        if not len(a):
            raise ExplainError("background has no rows")
        lay = self._layout
        holds = _compare(a[:, lay.feature], lay.threshold, lay.mode)  # (rows, all nodes)
        trees = []
        for t, tree in enumerate(self.trees):
            o = lay.offsets[t]
            reach = np.zeros((len(a), tree.n_nodes), dtype=bool)
            reach[:, 0] = True
            for k in _preorder(tree):
                if tree.children_left[k] >= 0:
                    h = holds[:, o + k]
                    reach[:, tree.children_left[k]] = reach[:, k] & h
                    reach[:, tree.children_right[k]] = reach[:, k] & ~h
            trees.append(replace(tree, cover=reach.sum(axis=0).astype(np.float64)))
        return replace(self, trees=tuple(trees))

    # -- layout ---------------------------------------------------------------------------------

    @cached_property
    def _layout(self) -> _Layout:
        sizes = [t.n_nodes for t in self.trees]
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)

        def cat(get: Any, dtype: Any) -> np.ndarray:
            return np.concatenate([np.asarray(get(t), dtype=dtype) for t in self.trees])

        left = np.concatenate([np.where(t.children_left >= 0, t.children_left + o, -1)
                               for t, o in zip(self.trees, offsets)]).astype(np.intp)
        right = np.concatenate([np.where(t.children_right >= 0, t.children_right + o, -1)
                                for t, o in zip(self.trees, offsets)]).astype(np.intp)
        feature = np.where(left >= 0, cat(lambda t: t.feature, np.intp), 0)
        mode = cat(lambda t: np.zeros(t.n_nodes) if t.mode is None else t.mode, np.int8)
        depth = max(_max_depth(t) for t in self.trees)
        return _Layout(offsets, left, right, feature, cat(lambda t: t.threshold, np.float64),
                       cat(lambda t: t.value, np.float64), mode, depth)

    @cached_property
    def _paths(self) -> list[_PathGroup]:
        """Every leaf's path, its unique features merged, grouped by how many there are."""
        by_u: dict[int, list[tuple[float, list[int], list[float], list[tuple[int, bool, int]]]]] = {}
        lay = self._layout
        for t, tree in enumerate(self.trees):
            cover = _require_cover(tree) if self.has_covers else None  # interventional needs none
            o = int(lay.offsets[t])
            for leaf, path in _leaf_paths(tree):
                feats: list[int] = []
                zs: list[float] = []
                elems: list[tuple[int, bool, int]] = []  # (global node, went left, slot)
                for node, went_left in path:
                    f = int(tree.feature[node])
                    if f not in feats:
                        feats.append(f)
                        zs.append(1.0)
                    slot = feats.index(f)
                    if cover is not None:
                        child = tree.children_left[node] if went_left else tree.children_right[node]
                        zs[slot] *= float(cover[child]) / float(cover[node]) if cover[node] > 0 else 0.0
                    elems.append((o + node, went_left, slot))
                value = float(self.tree_weights[t]) * float(tree.value[leaf])
                by_u.setdefault(len(feats), []).append((value, feats, zs, elems))
        groups = []
        pad_node = len(lay.left)  # an extra column of the comparisons that always holds
        for u, leaves in sorted(by_u.items()):
            d = max(len(e[3]) for e in leaves)
            n = len(leaves)
            node = np.full((n, d), pad_node, dtype=np.intp)
            left = np.ones((n, d), dtype=bool)
            slot = np.full((n, d), u, dtype=np.intp)
            for i, (_, _, _, elems) in enumerate(leaves):
                for e, (g, went_left, s) in enumerate(elems):
                    node[i, e], left[i, e], slot[i, e] = g, went_left, s
            groups.append(_PathGroup(u, np.array([v[0] for v in leaves]),
                                     np.array([v[1] for v in leaves], dtype=np.intp).reshape(n, u).T.copy(),
                                     np.array([v[2] for v in leaves], dtype=np.float64).reshape(n, u).T.copy(),
                                     node, left, slot))
        return groups

    def _holds(self, a: np.ndarray) -> np.ndarray:
        """Whether each node's comparison holds for each row, ``(rows, nodes + 1)``; the last column
        (path padding) always holds."""
        lay = self._layout
        out = np.ones((len(a), len(lay.left) + 1), dtype=bool)
        out[:, :-1] = _compare(a[:, lay.feature], lay.threshold, lay.mode)
        return out


@dataclass(frozen=True)
class _Layout:
    offsets: np.ndarray
    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    mode: np.ndarray
    max_depth: int

    @property
    def roots(self) -> np.ndarray:
        return self.offsets


@dataclass(frozen=True)
class _PathGroup:
    """Leaves whose paths split on ``u`` distinct features."""

    u: int
    value: np.ndarray  # (L,) leaf value times its tree's weight
    feature: np.ndarray  # (u, L) the distinct features, in order of first split
    z: np.ndarray  # (u, L) product of the cover fractions of each feature's splits
    node: np.ndarray  # (L, d) global node of each path element (padding: the always-true column)
    left: np.ndarray  # (L, d) whether the path goes left (the comparison holds) there
    slot: np.ndarray  # (L, d) which distinct feature the element splits on (padding: u)

    def satisfied(self, holds: np.ndarray) -> np.ndarray:
        """``o``: whether each row satisfies each feature's splits on each path, ``(u, rows, L)``."""
        rows, n = len(holds), len(self.value)
        o = np.ones((self.u + 1, rows, n), dtype=bool)
        leaves = np.arange(n)
        for e in range(self.node.shape[1]):
            o[self.slot[:, e], :, leaves] &= (holds[:, self.node[:, e]] == self.left[None, :, e]).T
        return o[:self.u]

    @cached_property
    def scatter(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Column order of the ``u * L`` slots sorted by feature, segment starts, their features."""
        flat = self.feature.reshape(-1)
        order = np.argsort(flat, kind="stable")
        feats, starts = np.unique(flat[order], return_index=True)
        return order, starts, feats

    def add_to(self, phi: np.ndarray, contrib: np.ndarray) -> None:
        """Add per-slot contributions ``(u, rows, L)`` to ``phi`` ``(rows, features)``."""
        order, starts, feats = self.scatter
        flat = contrib.transpose(1, 0, 2).reshape(contrib.shape[1], -1)[:, order]
        phi[:, feats] += np.add.reduceat(flat, starts, axis=1)


@dataclass(frozen=True, eq=False)
class Explanation:
    """Contributions ``values`` ``(rows, features)``: ``values.sum(1) + expected_value == output``."""

    values: np.ndarray
    expected_value: float
    output: np.ndarray  # the model's output per row (``TreeEnsemble.predict``)

    @property
    def additivity_error(self) -> float:
        """Largest ``|sum of contributions + expected value - output|`` over the rows."""
        if not len(self.output):
            return 0.0
        return float(np.max(np.abs(self.values.sum(axis=1) + self.expected_value - self.output)))


# -- the two methods ------------------------------------------------------------------------------

def tree_shap(ensemble: TreeEnsemble, x: np.ndarray) -> Explanation:
    """Path-dependent TreeSHAP values of rows ``x`` (exact; needs covers)."""
    if not ensemble.has_covers:
        raise ExplainError("path-dependent TreeSHAP needs each node's cover: pass covers, call "
                           "with_background_cover(background), or use interventional_tree_shap(…, background)")
    a = ensemble.rows(x)
    phi = np.zeros((len(a), ensemble.n_features))
    groups = [g for g in ensemble._paths if g.u > 0]
    width = len(ensemble._layout.left) + sum(len(g.value) * (g.u + 2) for g in groups)
    step = max(1, _CHUNK_ELEMENTS // max(width, 1))
    for lo in range(0, len(a), step):
        holds = ensemble._holds(a[lo:lo + step])
        for g in groups:
            o = g.satisfied(holds).astype(np.float64)
            g.add_to(phi[lo:lo + step], _path_dependent(o, g.z) * g.value)
    return Explanation(phi, ensemble.expected_value, ensemble.predict(a))


def interventional_tree_shap(ensemble: TreeEnsemble, x: np.ndarray, background: np.ndarray) -> Explanation:
    """Shapley values of ``v(S) = mean over background rows b of f(x_S, b_rest)`` (exact; no cover).

    Cost grows with rows x background rows x leaves: a background of 50 to 200 rows is usual."""
    a = ensemble.rows(x)
    b = ensemble.rows(background)
    if not len(b):
        raise ExplainError("background has no rows")
    phi = np.zeros((len(a), ensemble.n_features))
    groups = [g for g in ensemble._paths if g.u > 0]
    hb = ensemble._holds(b)
    ob = [g.satisfied(hb) for g in groups]
    u_max = max((g.u for g in groups), default=0)
    wa, wb = _interventional_weights(u_max)
    for g, og in zip(groups, ob):
        per_pair = len(g.value) * g.u * 4
        step_b = max(1, min(len(b), _CHUNK_ELEMENTS // per_pair))
        step_x = max(1, _CHUNK_ELEMENTS // (per_pair * step_b))
        for lo in range(0, len(a), step_x):
            ox = g.satisfied(ensemble._holds(a[lo:lo + step_x]))
            acc = np.zeros(ox.shape)
            for blo in range(0, len(b), step_b):
                obc = og[:, None, blo:blo + step_b]  # (u, 1, B, L)
                oxc = ox[:, :, None]  # (u, r, 1, L)
                only_x = oxc & ~obc
                only_b = obc & ~oxc
                reachable = (oxc | obc).all(axis=0)  # some subset's hybrid row reaches the leaf
                na, nb = only_x.sum(axis=0), only_b.sum(axis=0)
                w_a = np.where(reachable, wa[na, nb], 0.0)
                w_b = np.where(reachable, wb[na, nb], 0.0)
                acc += (only_x * w_a - only_b * w_b).sum(axis=2)
            g.add_to(phi[lo:lo + step_x], acc * (g.value / len(b)))
    expected = float(np.mean(ensemble.predict(b)))
    return Explanation(phi, expected, ensemble.predict(a))


def _path_dependent(o: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Per-slot Shapley values of the product game ``prod_j (o_j if j in S else z_j)``.

    ``o`` ``(u, rows, L)`` of 0/1, ``z`` ``(u, L)`` in [0, 1]; returns ``(u, rows, L)``. Builds
    ``P(t) = prod_j (z_j + o_j t)`` (Algorithm 2's EXTEND) and divides out each factor (its
    UNWIND: top down when ``o_i = 1``, stable as ``z_i <= 1``; a division by ``z_i`` when
    ``o_i = 0``), then weighs the coefficients by ``k! (u-1-k)! / u!``."""
    u, rows, n = o.shape
    p = np.zeros((u + 1, rows, n))
    p[0] = 1.0
    for j in range(u):
        p[1:j + 2] = p[1:j + 2] * z[j] + p[:j + 1] * o[j]
        p[0] *= z[j]
    w = np.array([math.factorial(k) * math.factorial(u - 1 - k) / math.factorial(u) for k in range(u)])
    zz = z[:, None, :]
    q = np.broadcast_to(p[u], (u, rows, n)).copy()  # for every i at once: P / (z_i + t), top down
    s = w[u - 1] * q
    tmp = np.empty_like(q)
    for k in range(u - 1, 0, -1):
        np.multiply(q, zz, out=q)
        np.subtract(p[k], q, out=q)
        np.multiply(q, w[k - 1], out=tmp)
        s += tmp
    cold = np.tensordot(w, p[:u], axes=1)  # (rows, L): divided by z_i below
    with np.errstate(divide="ignore", invalid="ignore"):
        cold = np.where(zz > 0, cold[None] / zz, 0.0)
    return (o - zz) * np.where(o > 0, s, cold)


def _interventional_weights(u: int) -> tuple[np.ndarray, np.ndarray]:
    """``wa[a, b] = (a-1)! b! / (a+b)!`` (a feature only ``x`` satisfies gains it) and
    ``wb[a, b] = a! (b-1)! / (a+b)!`` (a feature only the background row satisfies loses it)."""
    f = math.factorial
    wa, wb = np.zeros((u + 1, u + 1)), np.zeros((u + 1, u + 1))
    for a in range(u + 1):
        for b in range(u + 1 - a):
            if a:
                wa[a, b] = f(a - 1) * f(b) / f(a + b)
            if b:
                wb[a, b] = f(a) * f(b - 1) / f(a + b)
    return wa, wb


def _compare(x: np.ndarray, threshold: np.ndarray, mode: np.ndarray) -> np.ndarray:
    out = x <= threshold
    if mode.any():
        for code, op in ((1, np.less), (2, np.greater_equal), (3, np.greater), (4, np.equal), (5, np.not_equal)):
            sel = mode == code
            if sel.any():
                out = np.where(sel, op(x, threshold), out)
    return out


def _require_cover(tree: Tree) -> np.ndarray:
    if tree.cover is None:
        raise ExplainError("this ensemble has no node covers (see TreeEnsemble.with_background_cover)")
    cover = np.asarray(tree.cover, dtype=np.float64)
    if not cover[0] > 0 or (cover < 0).any():
        raise ExplainError("node covers must be >= 0 with a positive root")
    return cover


def _preorder(tree: Tree) -> list[int]:
    out, stack = [], [0]
    while stack:
        k = stack.pop()
        out.append(k)
        if tree.children_left[k] >= 0:
            stack += [int(tree.children_right[k]), int(tree.children_left[k])]
    return out


def _leaf_paths(tree: Tree) -> list[tuple[int, list[tuple[int, bool]]]]:
    out: list[tuple[int, list[tuple[int, bool]]]] = []
    stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
    while stack:
        k, path = stack.pop()
        if tree.children_left[k] < 0:
            out.append((k, path))
        else:
            stack.append((int(tree.children_right[k]), path + [(k, False)]))
            stack.append((int(tree.children_left[k]), path + [(k, True)]))
    return out


def _depths(tree: Tree) -> np.ndarray:
    depth = np.zeros(tree.n_nodes, dtype=np.int64)
    for k in _preorder(tree):
        if tree.children_left[k] >= 0:
            depth[tree.children_left[k]] = depth[tree.children_right[k]] = depth[k] + 1
    return depth


def _max_depth(tree: Tree) -> int:
    return int(_depths(tree).max())


# -- adapters -------------------------------------------------------------------------------------

def from_sklearn(estimator: Any, *, class_label: Any = None, complement: bool = False) -> TreeEnsemble:
    """A fitted scikit-learn forest or tree as a :class:`TreeEnsemble`.

    - ``IsolationForest``: the average path length (leaf depth + ``c(leaf samples)``, averaged over
      the trees, as ``models.export`` writes it); cover = ``n_node_samples``. Lower = more anomalous.
    - ``RandomForestClassifier``, ``ExtraTreesClassifier``, ``DecisionTreeClassifier``: the
      probability of ``class_label`` (default: the second of two classes), averaged over trees as
      ``predict_proba`` does; ``complement=True`` explains ``1 - P(class_label)`` instead (our risk
      classifier's raw score is ``1 - P(normal)``). Cover = ``weighted_n_node_samples`` (bootstrap
      counts times class weights: the weights the leaf values are averages under).
    - ``RandomForestRegressor``, ``ExtraTreesRegressor``, ``DecisionTreeRegressor`` (one output).

    Inputs are rounded to float32, as scikit-learn's trees do.
    """
    name = type(estimator).__name__
    if name == "IsolationForest":
        return _from_isolation_forest(estimator)
    estimators = list(getattr(estimator, "estimators_", [estimator]))
    if not estimators or not hasattr(estimators[0], "tree_"):
        raise ExplainError(f"cannot explain a {name}: not a fitted scikit-learn tree or forest of trees")
    n_features = int(estimator.n_features_in_)
    if hasattr(estimator, "classes_"):
        classes = list(estimator.classes_)
        if class_label is None:
            if len(classes) != 2:
                raise ExplainError(f"{name} has {len(classes)} classes {classes}: name the class_label to explain")
            class_label = classes[1]
        if class_label not in classes:
            raise ExplainError(f"{name} has no class {class_label!r} (classes: {classes})")
        k = classes.index(class_label)
        what = f"{'1 - ' if complement else ''}P({class_label}), averaged over {len(estimators)} trees"
    elif complement or class_label is not None:
        raise ExplainError(f"{name} is a regressor: class_label and complement do not apply")
    else:
        k = -1
        what = f"regression output, averaged over {len(estimators)} trees"
    trees = []
    for est in estimators:
        tr = est.tree_
        if tr.n_outputs != 1:
            raise ExplainError(f"{name}: only single-output trees are supported, got {tr.n_outputs} outputs")
        if k >= 0:
            v = tr.value[:, 0, :]
            value = v[:, k] / v.sum(axis=1)  # predict_proba normalises each tree's leaf
            if complement:
                value = 1.0 - value
        else:
            value = tr.value[:, 0, 0]
        trees.append(Tree(tr.children_left.astype(np.intp), tr.children_right.astype(np.intp),
                          np.where(tr.children_left >= 0, tr.feature, 0).astype(np.intp),
                          tr.threshold.astype(np.float64), np.asarray(value, dtype=np.float64),
                          tr.weighted_n_node_samples.astype(np.float64)))
    return TreeEnsemble(tuple(trees), n_features, np.full(len(trees), 1.0 / len(trees)),
                        input_dtype="float32", output=what)


def _from_isolation_forest(est: Any) -> TreeEnsemble:
    n_features = int(est.n_features_in_)
    subsampled = est._max_features != n_features
    trees = []
    for tree, feats in zip(est.estimators_, est.estimators_features_):
        tr = tree.tree_
        fmap = np.asarray(feats) if subsampled else np.arange(n_features)
        inner = tr.children_left >= 0
        t = Tree(tr.children_left.astype(np.intp), tr.children_right.astype(np.intp),
                 np.where(inner, fmap[np.maximum(tr.feature, 0)], 0).astype(np.intp),
                 tr.threshold.astype(np.float64), np.zeros(tr.node_count), tr.n_node_samples.astype(np.float64))
        # the export's leaf weight: scikit-learn's depth (root 1) + c(n) - 1, computed the same way
        depth_sk = _depths(t) + 1.0
        value = np.where(inner, 0.0, depth_sk + average_path_length(tr.n_node_samples) - 1.0)
        trees.append(replace(t, value=value))
    return TreeEnsemble(tuple(trees), n_features, np.full(len(trees), 1.0 / len(trees)), input_dtype="float32",
                        output=f"average path length over {len(trees)} isolation trees (lower = more anomalous)")


def from_onnx(model: Any, *, covers: Sequence[np.ndarray] | None = None, class_label: Any = None,
              complement: bool = False) -> TreeEnsemble:
    """The tree ensemble of an ONNX graph (bytes or ``onnx.ModelProto``) as a :class:`TreeEnsemble`.

    **TreeEnsembleRegressor**: the output is the regressor's (``aggregate_function`` SUM or
    AVERAGE, plus ``base_values``; one target; ``post_transform`` NONE). An isolation forest written
    by ``models.export`` (graph ``isolation_forest``) gives the average path length, as
    :func:`from_sklearn` does, with covers read back from its leaf weights (see the module's
    docstring); ``covers`` is not needed.

    **TreeEnsembleClassifier** (``post_transform`` NONE, as skl2onnx writes a random forest): the
    output is the probability of ``class_label`` as the graph's ``probabilities`` output gives it,
    or ``1 - P(class_label)`` with ``complement=True``. ``class_label`` is required (the graph has one
    probability per class; labels are ``classlabels_strings`` or ``classlabels_int64s``). Our risk
    classifier's raw score is ``from_onnx(graph, class_label="normal", complement=True)``
    (``RISK_CLASS``; the manifest's ``classes[output_column]``): ``1 - P(normal)``. How the graph
    forms ``P(c)``: each leaf carries ``class_weights`` (skl2onnx: the tree's leaf probability
    times ``1/trees``, rounded to float32) and ``P(c)`` is the sum over the trees of the reached
    leaves' weights for ``c`` (plus ``base_values[c]`` with three or more classes). With two classes
    skl2onnx writes one weight per leaf, under class id 0, which is ``P`` of the **second** label;
    the first label's probability is ``1 - `` that sum (onnxruntime's binary case). Tree values here
    are those float32 weights (negated for ``1 - P``, with ``base_value`` 1), tree weights 1, so
    :meth:`TreeEnsemble.predict` is the graph's probability up to the float32 summation the runtime
    does. Thresholds are the graph's (skl2onnx adjusts them so float32 comparisons route rows
    as scikit-learn does).

    Neither graph holds cover: ``covers`` gives each tree's node covers (tree by tree in
    ``nodes_treeids`` order, nodes in ``nodes_nodeids`` order within a tree); without it the
    ensemble has none and :func:`interventional_tree_shap` (against background rows) is the exact
    method. The graph's input type decides ``input_dtype`` (float32 input: rows rounded to float32).
    """
    import onnx
    from onnx import helper, numpy_helper

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load_from_string(bytes(model))
    graph = proto.graph
    found = [n for n in graph.node if n.op_type in ("TreeEnsembleRegressor", "TreeEnsembleClassifier")]
    if len(found) != 1:
        raise ExplainError(f"expected one TreeEnsembleRegressor or TreeEnsembleClassifier in the graph, found "
                           f"{len(found)} (operators: {sorted({n.op_type for n in graph.node})})")
    node = found[0]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}

    def array(name: str, dtype: Any) -> np.ndarray:
        if name + "_as_tensor" in attrs:
            return numpy_helper.to_array(attrs[name + "_as_tensor"]).astype(dtype)
        return np.asarray(attrs.get(name, []), dtype=dtype)

    def text(name: str, default: str) -> str:
        v = attrs.get(name, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    post = text("post_transform", "NONE")
    classifier = node.op_type == "TreeEnsembleClassifier"
    if classifier:
        if post != "NONE":
            raise ExplainError(f"only a TreeEnsembleClassifier without post_transform gives probabilities that "
                               f"add up over trees; the graph has post_transform={post}")
        t_tree, t_node, t_weight, base, output = _classifier_leaves(attrs, array, class_label, complement)
        agg = "SUM"
    else:
        if class_label is not None or complement:
            raise ExplainError("the graph is a TreeEnsembleRegressor: class_label and complement do not apply")
        agg = text("aggregate_function", "SUM")
        if agg not in ("SUM", "AVERAGE") or post != "NONE":
            raise ExplainError(f"only SUM or AVERAGE aggregation without post_transform is additive over trees; "
                               f"the graph has aggregate_function={agg}, post_transform={post}")
        if int(attrs.get("n_targets", 1)) != 1:
            raise ExplainError(f"only single-target ensembles are supported, got n_targets={attrs.get('n_targets')}")
        t_tree = np.asarray(attrs["target_treeids"], dtype=np.int64)
        t_node = np.asarray(attrs["target_nodeids"], dtype=np.int64)
        t_weight = array("target_weights", np.float64)
        bases = array("base_values", np.float64)
        base = float(bases[0]) if bases.size else 0.0
        output = ""
    tree_ids = np.asarray(attrs["nodes_treeids"], dtype=np.int64)
    node_ids = np.asarray(attrs["nodes_nodeids"], dtype=np.int64)
    feature = np.asarray(attrs["nodes_featureids"], dtype=np.int64)
    threshold = array("nodes_values", np.float64)
    modes = [m.decode() if isinstance(m, bytes) else str(m) for m in attrs["nodes_modes"]]
    true_ids = np.asarray(attrs["nodes_truenodeids"], dtype=np.int64)
    false_ids = np.asarray(attrs["nodes_falsenodeids"], dtype=np.int64)
    unknown = sorted({m for m in modes if m != "LEAF" and m not in MODES})
    if unknown:
        raise ExplainError(f"unknown node modes {unknown}")

    ensemble_input = graph.input[0]
    elem = ensemble_input.type.tensor_type.elem_type
    input_dtype = "float32" if elem == onnx.TensorProto.FLOAT else "float64"
    dims = ensemble_input.type.tensor_type.shape.dim
    n_features = int(dims[-1].dim_value) if dims and dims[-1].dim_value else int(feature.max()) + 1

    trees, orders = [], []
    for t in np.unique(tree_ids):
        sel = np.nonzero(tree_ids == t)[0]
        ids = node_ids[sel]
        index = {int(nid): i for i, nid in enumerate(ids)}
        is_leaf = np.array([modes[s] == "LEAF" for s in sel])
        # the root is the node no other node points at; renumber so it is 0
        pointed = set(true_ids[sel][~is_leaf].tolist()) | set(false_ids[sel][~is_leaf].tolist())
        roots = [i for i, nid in enumerate(ids) if int(nid) not in pointed]
        if len(roots) != 1:
            raise ExplainError(f"tree {t}: found {len(roots)} roots")
        order = _onnx_preorder(roots[0], sel, is_leaf, true_ids, false_ids, index)
        new = {old: k for k, old in enumerate(order)}
        n = len(order)
        left = np.full(n, -1, dtype=np.intp)
        right = np.full(n, -1, dtype=np.intp)
        for k, old in enumerate(order):
            if not is_leaf[old]:
                left[k] = new[index[int(true_ids[sel[old]])]]
                right[k] = new[index[int(false_ids[sel[old]])]]
        value = np.zeros(n)
        here = t_tree == t
        for nid, w in zip(t_node[here], t_weight[here]):
            if int(nid) not in index:
                raise ExplainError(f"tree {t}: a leaf weight names node id {int(nid)}, which the tree lacks")
            value[new[index[int(nid)]]] += w
        osel = sel[order]
        mode = np.array([0 if modes[s] == "LEAF" else MODES.index(modes[s]) for s in osel], dtype=np.int8)
        trees.append(Tree(left, right, np.where(left >= 0, feature[osel], 0).astype(np.intp),
                          np.where(left >= 0, threshold[osel], 0.0), value, None, mode))
        orders.append(np.asarray(order, dtype=np.intp))  # graph position of each renumbered node
    weight = 1.0 / len(trees) if agg == "AVERAGE" else 1.0
    if not classifier:
        output = f"the TreeEnsembleRegressor's output ({agg.lower()} over {len(trees)} trees)"
    else:
        output = f"{output}, summed over {len(trees)} trees of the TreeEnsembleClassifier"
    if not classifier and graph.name == "isolation_forest" and agg == "SUM" and base == 0.0:
        trees = [replace(tr, cover=_isolation_forest_cover(tr, t)) for t, tr in enumerate(trees)]
        weight = 1.0 / len(trees)
        output = f"average path length over {len(trees)} isolation trees (lower = more anomalous)"
    elif covers is not None:
        if len(covers) != len(trees):
            raise ExplainError(f"covers has {len(covers)} trees, the graph {len(trees)}")
        given = []
        for t, (tr, order, c) in enumerate(zip(trees, orders, covers)):
            c = np.asarray(c, dtype=np.float64)
            if c.shape != (tr.n_nodes,):
                raise ExplainError(f"covers[{t}] has shape {c.shape}, tree {t} has {tr.n_nodes} nodes")
            given.append(replace(tr, cover=c[order]))
        trees = given
    return TreeEnsemble(tuple(trees), n_features, np.full(len(trees), weight), base, input_dtype, output)


def _classifier_leaves(attrs: dict[str, Any], array: Any, class_label: Any,
                       complement: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, str]:
    """The leaf weights of one class's probability (or its complement) in a TreeEnsembleClassifier:
    ``(tree ids, node ids, weights, base value, what)``, following onnxruntime's reading of the
    attributes (see :func:`from_onnx`)."""
    if "classlabels_strings" in attrs:
        labels: list[Any] = [v.decode() if isinstance(v, bytes) else str(v) for v in attrs["classlabels_strings"]]
    else:
        labels = [int(v) for v in attrs.get("classlabels_int64s", [])]
    if len(labels) < 2:
        raise ExplainError(f"the TreeEnsembleClassifier has {len(labels)} class labels; expected two or more")
    if class_label is None:
        raise ExplainError(f"the graph is a TreeEnsembleClassifier with classes {labels}: name the class_label "
                           f"whose probability to explain (our risk score: class_label={RISK_CLASS!r}, "
                           f"complement=True)")
    matches = [k for k, c in enumerate(labels) if c == class_label or str(c) == str(class_label)]
    if len(matches) != 1:
        raise ExplainError(f"the TreeEnsembleClassifier has no class {class_label!r} (classes: {labels})")
    k = matches[0]
    ids = np.asarray(attrs["class_ids"], dtype=np.int64)
    tree = np.asarray(attrs["class_treeids"], dtype=np.int64)
    node = np.asarray(attrs["class_nodeids"], dtype=np.int64)
    weight = array("class_weights", np.float64)
    if not (len(ids) == len(tree) == len(node) == len(weight)):
        raise ExplainError("class_ids, class_treeids, class_nodeids and class_weights differ in length")
    if ids.size and (ids.min() < 0 or ids.max() >= len(labels)):
        raise ExplainError(f"class_ids must be 0..{len(labels) - 1}")
    bases = array("base_values", np.float64)
    # P(label k) = sign * (sum of the selected weights) + offset
    if len(labels) == 2 and set(ids.tolist()) <= {0}:
        # onnxruntime's binary case: the one score is P(labels[1]), P(labels[0]) = 1 - score
        if (weight < 0).any() or (bases != 0).any():
            raise ExplainError("a two-class TreeEnsembleClassifier with one weight per leaf is read as "
                               "probabilities only with non-negative weights and no base_values")
        take = np.ones(len(ids), dtype=bool)
        sign, offset = (1.0, 0.0) if k == 1 else (-1.0, 1.0)
    else:
        if len(labels) == 2 and (bases != 0).any():
            raise ExplainError("two classes with base_values: onnxruntime's reading of them is not additive")
        if bases.size not in (0, len(labels)):
            raise ExplainError(f"base_values has {bases.size} values for {len(labels)} classes")
        take = ids == k
        sign, offset = 1.0, float(bases[k]) if bases.size else 0.0
    if complement:
        sign, offset = -sign, 1.0 - offset
    what = f"{'1 - ' if complement else ''}P({labels[k]})"
    return tree[take], node[take], sign * weight[take], offset, what


def _onnx_preorder(root: int, sel: np.ndarray, is_leaf: np.ndarray, true_ids: np.ndarray, false_ids: np.ndarray,
                   index: dict[int, int]) -> list[int]:
    out, stack, seen = [], [root], set()
    while stack:
        k = stack.pop()
        if k in seen:
            raise ExplainError("a tree in the graph is not a tree (a node is reached twice)")
        seen.add(k)
        out.append(k)
        if not is_leaf[k]:
            try:
                stack += [index[int(false_ids[sel[k]])], index[int(true_ids[sel[k]])]]
            except KeyError as exc:
                raise ExplainError(f"a node points at node id {exc.args[0]}, which its tree lacks") from None
    if len(out) != len(sel):
        raise ExplainError(f"a tree has {len(sel) - len(out)} nodes its root does not reach")
    return out


def _isolation_forest_cover(tree: Tree, t: int) -> np.ndarray:
    """``n_node_samples`` of an exported isolation tree, read back from its leaf weights.

    A leaf's weight is ``depth + c(n)`` (depth from 0); ``c`` is strictly increasing in ``n``, so
    ``n`` is the one whose ``c(n)`` matches, and an inner node's cover is its leaves' sum."""
    depth = _depths(tree)
    leaf = tree.children_left < 0
    c = tree.value[leaf] - depth[leaf]
    top = float(c.max()) if c.size else 0.0
    if top > 40.0:  # c(n) = 40 needs n of about 1.6e9
        raise ExplainError(f"isolation tree {t}: leaf weights imply more samples than can be read back")
    n_max = int(math.exp((top + 2.0) / 2.0)) + 16
    table = average_path_length(np.arange(1, n_max + 1))
    n = np.clip(np.searchsorted(table, c), 1, n_max - 1)
    n = np.where(np.abs(table[n - 1] - c) <= np.abs(table[n] - c), n, n + 1)  # 1-based sample counts
    worst = float(np.max(np.abs(table[n - 1] - c))) if c.size else 0.0
    if worst > 1e-9:
        raise ExplainError(f"isolation tree {t}: a leaf weight is not depth + c(n) for any n "
                           f"(off by {worst:.3g}): not a graph written by models.export; pass covers")
    cover = np.zeros(tree.n_nodes)
    cover[leaf] = n
    for k in reversed(_preorder(tree)):
        if tree.children_left[k] >= 0:
            cover[k] = cover[tree.children_left[k]] + cover[tree.children_right[k]]
    return cover


def to_ensemble(model: Any, *, covers: Sequence[np.ndarray] | None = None, class_label: Any = None,
                complement: bool = False) -> TreeEnsemble:
    """A :class:`TreeEnsemble` of ``model``: a ``TreeEnsemble``; ONNX bytes or ``onnx.ModelProto``
    (:func:`from_onnx`; a classifier graph needs ``class_label``); a ``models.train.TrainedModel`` of
    kind ``isolation_forest`` (average path length) or ``risk_classifier`` (``1 - P(normal)``, its raw
    score); or a fitted scikit-learn forest (:func:`from_sklearn`). ``class_label`` and
    ``complement`` apply to ONNX graphs and scikit-learn classifiers only."""
    if isinstance(model, TreeEnsemble):
        if class_label is not None or complement:
            raise ExplainError("class_label and complement do not apply to a TreeEnsemble")
        return model
    if isinstance(model, (bytes, bytearray, memoryview)) or type(model).__name__ == "ModelProto":
        return from_onnx(model, covers=covers, class_label=class_label, complement=complement)
    kind = getattr(model, "kind", None)
    if kind is not None and hasattr(model, "estimator"):
        if class_label is not None or complement:
            raise ExplainError(f"a {kind} model's kind decides what is explained: class_label and complement "
                               f"do not apply")
        if kind == "isolation_forest":
            return from_sklearn(model.estimator)
        if kind == "risk_classifier":
            return from_sklearn(model.estimator, class_label=RISK_CLASS, complement=True)
        raise ExplainError(f"a {kind} model is not a tree ensemble: tree contributions do not apply")
    return from_sklearn(model, class_label=class_label, complement=complement)


def explain(model: Any, x: np.ndarray, feature_names: Sequence[str] | None = None, *,
            background: np.ndarray | None = None, covers: Sequence[np.ndarray] | None = None,
            class_label: Any = None, complement: bool = False) -> list[dict[str, float]]:
    """Per row, each feature's contribution, largest magnitude first, then ``EXPECTED_VALUE``.

    The contributions and the expected value sum to the model's output for the row (see
    :func:`to_ensemble` for what that output is; for an isolation forest the average path length,
    where a negative contribution means "more anomalous"). Path-dependent TreeSHAP when the model
    has covers and no ``background`` is given, else interventional TreeSHAP against ``background``.
    ``feature_names`` default to a ``TrainedModel``'s feature spec names, else ``x0``, ``x1``, ...
    ``class_label`` and ``complement`` choose a classifier's output (see :func:`to_ensemble`).
    """
    ensemble = to_ensemble(model, covers=covers, class_label=class_label, complement=complement)
    if feature_names is None:
        spec = getattr(model, "spec", None)
        feature_names = list(spec.names) if spec is not None else [f"x{i}" for i in range(ensemble.n_features)]
    names = list(feature_names)
    if len(names) != ensemble.n_features:
        raise ExplainError(f"{len(names)} feature names for a model of {ensemble.n_features} features")
    if EXPECTED_VALUE in names or len(set(names)) != len(names):
        raise ExplainError(f"feature names must be distinct and not {EXPECTED_VALUE!r}")
    if background is not None:
        result = interventional_tree_shap(ensemble, x, background)
    elif ensemble.has_covers:
        result = tree_shap(ensemble, x)
    else:
        raise ExplainError("the model has no node covers: pass background rows (interventional TreeSHAP) or covers")
    out = []
    for row in result.values:
        order = np.argsort(-np.abs(row), kind="stable")
        d = {names[k]: float(row[k]) for k in order}
        d[EXPECTED_VALUE] = result.expected_value
        out.append(d)
    return out
