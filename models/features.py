"""Windowed features of telemetry series, computed causally on numpy arrays in batches.

One code path for the hub and the edge: training calls :func:`compute_features` on a whole history,
the edge feeds the same :class:`FeatureExtractor` block by block as readings arrive, and both give
the same numbers (the extractor keeps the last ``window - 1`` samples of every series). The feature
at sample ``t`` uses samples ``t - window + 1 .. t`` only.

A model takes a *group* of series (a device's metrics named in ``FeatureSpec.inputs``); per input
it gets the series features below, then the cross-sensor features. Values are float64 arrays shaped
``(groups, samples, inputs)``; NaN (or ``valid=False``) marks a missing sample, which is
forward-filled for the window statistics and counted in ``missing``.

Series features (names ``<input>.<feature>``), over the trailing window of ``window`` samples:

- ``last``, ``mean``, ``std``, ``min``, ``max``: of the window (missing samples forward-filled)
- ``slope``: least-squares slope, value units per sample; ``roc``: ``x[t] - x[t-1]``
- ``zscore``: ``(x[t] - mean) / std``
- ``band<k>``: the share of the window's variance in a sinusoid of period ``window / k`` samples
  (Hann taper; level and linear trend removed first), 0..1
- ``missing``: the fraction of the window's samples that were missing

Cross-sensor features:

- ``phase_imbalance(a,b,c)``: window mean of ``max |x_i - avg| / |avg|`` over three phases (NEMA)
- ``oil_vs_load.slope(oil,load)``: least-squares slope of oil temperature against load over the
  window; ``oil_vs_load.resid(oil,load)``: the latest oil temperature's residual from that line, in
  units of the residuals' standard deviation
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
import numpy as np

from models._windows import band_kernel, causal_fill, trailing_windows

__all__ = [
    "FEATURE_VERSION", "SERIES_FEATURES", "CrossFeature", "FeatureExtractor", "FeatureSpec",
    "compute_features", "phase_imbalance",
]

FEATURE_VERSION = 1
BASE_FEATURES = ("last", "mean", "std", "min", "max", "slope", "roc", "zscore")
SERIES_FEATURES = (*BASE_FEATURES, "band2", "band4", "band8", "missing")
_CHUNK = 8192  # samples per vectorised step: bounds the (series, chunk, window) temporaries
_TINY = 1e-12


class CrossFeature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A feature over several inputs of a group: ``kind`` and the input names it reads, in order."""

    kind: Literal["phase_imbalance", "oil_vs_load"]
    inputs: tuple[str, ...]

    def names(self) -> tuple[str, ...]:
        args = ",".join(self.inputs)
        if self.kind == "phase_imbalance":
            return (f"phase_imbalance({args})",)
        return (f"oil_vs_load.slope({args})", f"oil_vs_load.resid({args})")


class FeatureSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a model's feature vector is; stored in its manifest so the edge computes the same one.

    Build one with :meth:`build`; ``names`` must equal what the other fields imply (checked on
    construction and decoding, so a manifest cannot name features the code would not compute).
    """

    names: tuple[str, ...]
    version: int = FEATURE_VERSION
    window: Annotated[int, msgspec.Meta(ge=4, le=4096)] = 32
    sample_period_s: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    inputs: tuple[str, ...] = ("value",)
    series_features: tuple[str, ...] = SERIES_FEATURES
    cross: tuple[CrossFeature, ...] = ()

    def __post_init__(self) -> None:
        if self.version != FEATURE_VERSION:
            raise ValueError(f"feature spec version {self.version} is not supported (this code computes "
                             f"version {FEATURE_VERSION})")
        if not self.inputs or len(set(self.inputs)) != len(self.inputs):
            raise ValueError(f"feature spec inputs must be distinct and non-empty, got {list(self.inputs)}")
        for f in self.series_features:
            if f not in BASE_FEATURES and f != "missing" and not _band_bin(f, self.window):
                raise ValueError(f"unknown series feature {f!r} (known: {', '.join(SERIES_FEATURES)}, "
                                 f"band<k> with 2 <= k <= window/2)")
        for c in self.cross:
            want = 3 if c.kind == "phase_imbalance" else 2
            if len(c.inputs) != want or any(i not in self.inputs for i in c.inputs):
                raise ValueError(f"cross feature {c.kind} needs {want} of the spec's inputs "
                                 f"{list(self.inputs)}, got {list(c.inputs)}")
        expected = self.expected_names()
        if tuple(self.names) != expected:
            raise ValueError(f"feature spec names {list(self.names)} do not match its definition "
                             f"{list(expected)}")

    @classmethod
    def build(cls, *, window: int = 32, sample_period_s: float = 1.0, inputs: tuple[str, ...] = ("value",),
              series_features: tuple[str, ...] | None = None,
              cross: tuple[CrossFeature, ...] = ()) -> FeatureSpec:
        """A spec with its names filled in; ``series_features`` defaults to all of ``SERIES_FEATURES``
        that fit the window (``band<k>`` needs ``k <= window / 2``)."""
        if series_features is None:
            series_features = tuple(f for f in SERIES_FEATURES if not f.startswith("band") or _band_bin(f, window))
        names = _names(tuple(inputs), tuple(series_features), tuple(cross))
        return cls(names=names, window=window, sample_period_s=sample_period_s, inputs=tuple(inputs),
                   series_features=tuple(series_features), cross=tuple(cross))

    def expected_names(self) -> tuple[str, ...]:
        return _names(self.inputs, self.series_features, self.cross)

    @property
    def n_features(self) -> int:
        return len(self.names)


def _names(inputs: tuple[str, ...], series_features: tuple[str, ...], cross: tuple[CrossFeature, ...]) -> tuple[str, ...]:
    out = [f"{i}.{f}" for i in inputs for f in series_features]
    for c in cross:
        out.extend(c.names())
    return tuple(out)


def _band_bin(name: str, window: int) -> int:
    if name.startswith("band") and name[4:].isdigit():
        k = int(name[4:])
        if 2 <= k <= window // 2:
            return k
    return 0


def phase_imbalance(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """NEMA unbalance of three phase values: largest deviation from their mean over the mean's magnitude."""
    avg = (a + b + c) / 3.0
    dev = np.maximum(np.maximum(np.abs(a - avg), np.abs(b - avg)), np.abs(c - avg))
    return dev / np.maximum(np.abs(avg), _TINY)


class FeatureExtractor:
    """Streaming feature computation for ``groups`` groups of ``spec.inputs`` series.

    ``update(values)`` takes the next block of samples for every group, ``(groups, B, inputs)``,
    and returns their features ``(groups, B, n_features)``. Blocks of any size give the same result
    as one call on the concatenation.
    """

    def __init__(self, spec: FeatureSpec, groups: int) -> None:
        self.spec = spec
        self.groups = groups
        n = groups * len(spec.inputs)
        w = spec.window
        self._hist = np.full((n, w - 1), np.nan)  # forward-filled values, NaN before any valid sample
        self._hist_valid = np.ones((n, w - 1), dtype=bool)  # before the start counts as present
        self._last = np.full(n, np.nan)
        self._bins = tuple(_band_bin(f, w) for f in spec.series_features if _band_bin(f, w))
        self._kernel, self._norm = band_kernel(w, self._bins) if self._bins else (None, 1.0)
        j = np.arange(w, dtype=np.float64)
        self._jc = j - j.mean()
        self._jc2 = float(self._jc @ self._jc)
        self._index = {name: k for k, name in enumerate(spec.inputs)}

    def grow(self, groups: int) -> None:
        """Add groups (new devices) at the end, with empty history."""
        if groups <= self.groups:
            return
        extra = (groups - self.groups) * len(self.spec.inputs)
        w = self.spec.window
        self._hist = np.concatenate([self._hist, np.full((extra, w - 1), np.nan)])
        self._hist_valid = np.concatenate([self._hist_valid, np.ones((extra, w - 1), dtype=bool)])
        self._last = np.concatenate([self._last, np.full(extra, np.nan)])
        self.groups = groups

    def update(self, values: np.ndarray, valid: np.ndarray | None = None,
               groups: np.ndarray | None = None) -> np.ndarray:
        """Features of the next ``B`` samples of each group (or of the groups indexed by ``groups``)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 3 or values.shape[2] != len(self.spec.inputs):
            raise ValueError(f"values must be (groups, samples, {len(self.spec.inputs)}), got {values.shape}")
        g, b, n_in = values.shape
        if valid is None:
            valid = np.isfinite(values)
        else:
            valid = np.asarray(valid, dtype=bool) & np.isfinite(values)
        rows = (np.arange(self.groups) if groups is None else np.asarray(groups))
        if len(rows) != g:
            raise ValueError(f"{g} groups of values for {len(rows)} groups")
        series = (rows[:, None] * n_in + np.arange(n_in)[None, :]).reshape(-1)
        x = values.transpose(0, 2, 1).reshape(g * n_in, b)
        v = valid.transpose(0, 2, 1).reshape(g * n_in, b)

        filled, seen = causal_fill(x, v, self._last[series])
        ext = np.concatenate([self._hist[series], filled], axis=1)
        ext_valid = np.concatenate([self._hist_valid[series], v], axis=1)
        has = ~np.isnan(ext)
        first = np.where(has.any(axis=1), ext[np.arange(len(series)), has.argmax(axis=1)], np.nan)
        ext = np.where(has, ext, first[:, None])  # before the first valid sample: that sample's value

        per_series = self._series_features(ext, ext_valid, b)  # (g*n_in, b, nf)
        per_series[~seen] = 0.0
        if "missing" in self.spec.series_features:
            per_series[~seen, self.spec.series_features.index("missing")] = 1.0
        nf = per_series.shape[2]
        out = per_series.reshape(g, n_in, b, nf).transpose(0, 2, 1, 3).reshape(g, b, n_in * nf)
        if self.spec.cross:
            cross = self._cross_features(ext.reshape(g, n_in, -1), seen.reshape(g, n_in, b), b)
            out = np.concatenate([out, cross], axis=2)

        w = self.spec.window
        self._hist[series] = ext[:, -(w - 1):]
        self._hist_valid[series] = ext_valid[:, -(w - 1):]
        self._last[series] = filled[:, -1] if b else self._last[series]
        return out

    def _series_features(self, ext: np.ndarray, ext_valid: np.ndarray, b: int) -> np.ndarray:
        spec = self.spec
        w = spec.window
        names = spec.series_features
        out = np.empty((ext.shape[0], b, len(names)))
        col = {name: k for k, name in enumerate(names)}
        for lo in range(0, b, _CHUNK):
            hi = min(b, lo + _CHUNK)
            n = hi - lo
            sub = ext[:, lo:hi + w - 1]
            win = trailing_windows(sub, w, n)
            mean = win.mean(axis=2)
            centred = win - mean[..., None]
            var = np.mean(centred * centred, axis=2)
            std = np.sqrt(var)
            last = sub[:, w - 1:]
            stats = {"last": last, "mean": mean, "std": std}
            if "min" in col:
                stats["min"] = win.min(axis=2)
            if "max" in col:
                stats["max"] = win.max(axis=2)
            if "slope" in col:
                stats["slope"] = (win @ self._jc) / self._jc2
            if "roc" in col:
                stats["roc"] = sub[:, w - 1:] - sub[:, w - 2:-1]
            if "zscore" in col:
                stats["zscore"] = np.where(std > _TINY, (last - mean) / np.maximum(std, _TINY), 0.0)
            if self._bins:
                coef = win @ self._kernel  # (s, n, 2 * bins)
                power = (coef[..., 0::2] ** 2 + coef[..., 1::2] ** 2) * self._norm
                share = power / (2.0 * var[..., None] + _TINY)
                for k, kbin in enumerate(self._bins):
                    stats[f"band{kbin}"] = np.minimum(share[..., k], 1.0)
            if "missing" in col:
                vwin = trailing_windows(ext_valid[:, lo:hi + w - 1], w, n)
                stats["missing"] = 1.0 - vwin.mean(axis=2)
            for name, k in col.items():
                out[:, lo:hi, k] = stats[name]
        return out

    def _cross_features(self, ext: np.ndarray, seen: np.ndarray, b: int) -> np.ndarray:
        w = self.spec.window
        cols = []
        for c in self.spec.cross:
            idx = [self._index[i] for i in c.inputs]
            ok = seen[:, idx, :].all(axis=1)
            if c.kind == "phase_imbalance":
                pi = phase_imbalance(ext[:, idx[0]], ext[:, idx[1]], ext[:, idx[2]])  # (g, w-1+b)
                win = trailing_windows(pi, w, b)
                cols.append(np.where(ok, win.mean(axis=2), 0.0))
            else:
                oil = trailing_windows(ext[:, idx[0]], w, b)
                load = trailing_windows(ext[:, idx[1]], w, b)
                oc = oil - oil.mean(axis=2, keepdims=True)
                lc = load - load.mean(axis=2, keepdims=True)
                lvar = np.sum(lc * lc, axis=2)
                slope = np.where(lvar > _TINY, np.sum(lc * oc, axis=2) / np.maximum(lvar, _TINY), 0.0)
                resid = oc - slope[..., None] * lc
                rstd = np.sqrt(np.mean(resid * resid, axis=2))
                z = np.where(rstd > _TINY, resid[..., -1] / np.maximum(rstd, _TINY), 0.0)
                cols.append(np.where(ok, slope, 0.0))
                cols.append(np.where(ok, z, 0.0))
        return np.stack(cols, axis=2)


def compute_features(values: np.ndarray, spec: FeatureSpec, valid: np.ndarray | None = None) -> np.ndarray:
    """Features of whole histories at once: ``(samples, inputs)`` -> ``(samples, n_features)``,
    or ``(groups, samples, inputs)`` -> ``(groups, samples, n_features)``. Same numbers as streaming."""
    arr = np.asarray(values, dtype=np.float64)
    squeeze = arr.ndim == 2
    if squeeze:
        arr = arr[None]
        valid = None if valid is None else np.asarray(valid)[None]
    out = FeatureExtractor(spec, arr.shape[0]).update(arr, valid)
    return out[0] if squeeze else out
