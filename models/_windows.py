"""Numeric building blocks shared by features and detectors: causal fills, trailing windows, scans.

Everything works on 2-D float arrays shaped ``(series, time)`` and is vectorised along both axes;
recurrences (EWMA, CUSUM, run lengths) are computed with cumulative sums and accumulates rather
than a Python loop over samples, so a block of 100,000 samples costs a handful of numpy calls.
numpy only: the edge imports this.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["band_kernel", "causal_fill", "cusum", "ewma", "last_index", "trailing_windows"]

# a^-n must stay far below float64's range inside one block of the EWMA scan
_MAX_LOG_GROWTH = 150 * np.log(10.0)


def causal_fill(values: np.ndarray, valid: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-fill invalid samples with the last valid one (``last`` carries it in from the previous block).

    Returns ``(filled, seen)``; ``seen[i, t]`` is False while series ``i`` has had no valid sample
    yet, and there ``filled`` holds NaN. Only samples at or before ``t`` are used at ``t``.
    """
    b = values.shape[1]
    idx = np.where(valid, np.arange(1, b + 1), 0)
    np.maximum.accumulate(idx, axis=1, out=idx)
    ext = np.concatenate([last[:, None], values], axis=1)
    filled = np.take_along_axis(ext, idx, axis=1)
    seen = ~np.isnan(filled)
    return filled, seen


def trailing_windows(ext: np.ndarray, width: int, count: int, end_offset: int = 0) -> np.ndarray:
    """Views ``(series, count, width)`` of the windows ending at each of the last ``count`` positions.

    ``ext`` holds history then the new block along axis 1; with ``end_offset=1`` each window ends
    one sample earlier (the window *before* the sample, used to judge the sample against it).
    """
    n = ext.shape[1]
    stop = n - end_offset
    start = stop - count - width + 1
    if start < 0:
        raise ValueError(f"need {width + end_offset - 1} samples of history, have {n - count}")
    if ext.ndim != 2 or not ext.flags.c_contiguous:
        return sliding_window_view(ext[:, start:stop], width, axis=1)
    # the same view as sliding_window_view, built directly: a tenth of its cost on small blocks
    s0, s1 = ext.strides
    view = np.ndarray((ext.shape[0], count, width), dtype=ext.dtype, buffer=ext, offset=start * s1,
                      strides=(s0, s1, s1))
    view.flags.writeable = False
    return view


def ewma(u: np.ndarray, alpha: float, state: np.ndarray) -> np.ndarray:
    """y[t] = (1 - alpha) * y[t-1] + alpha * u[t] along axis 1, starting from ``state`` (per series).

    Computed in blocks with cumulative sums of rescaled terms (exact up to rounding), not a loop.
    """
    s, b = u.shape
    a = 1.0 - alpha
    if b == 1:  # one sample a series (an edge scoring each poll as it comes): the recurrence itself
        return (a * state + alpha * u[:, 0])[:, None].astype(np.float64, copy=False)
    if a == 0:  # no memory: the input itself
        return u.astype(np.float64, copy=True)
    out = np.empty((s, b), dtype=np.float64)
    step = max(1, min(b, int(_MAX_LOG_GROWTH / -np.log(a))))
    prev = state.astype(np.float64, copy=True)
    j = np.arange(1, step + 1, dtype=np.float64)
    grow_full = a ** -j  # a^-(j+1) for j = 0..step-1
    decay_full = a ** j
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        n = hi - lo
        acc = np.cumsum(u[:, lo:hi] * grow_full[:n], axis=1)
        out[:, lo:hi] = decay_full[:n] * (prev[:, None] + alpha * acc)
        prev = out[:, hi - 1]
    return out


def cusum(z: np.ndarray, state: np.ndarray) -> np.ndarray:
    """S[t] = max(0, S[t-1] + z[t]) along axis 1 from ``state``: the Lindley recursion in closed form."""
    c = np.cumsum(z, axis=1)
    floor = np.minimum(np.minimum.accumulate(c, axis=1), -state[:, None])
    return c - floor


def last_index(event: np.ndarray, start: np.ndarray, state: np.ndarray) -> np.ndarray:
    """For each sample, the global index of the latest sample at or before it where ``event`` held.

    ``start`` is the global index of the block's first sample per series; ``state`` the last index
    from earlier blocks (use a large negative number for "never").
    """
    b = event.shape[1]
    if b == 1:  # one sample a series: nothing to accumulate
        return np.maximum(np.where(event[:, 0], start, np.iinfo(np.int64).min), state)[:, None]
    gidx = start[:, None] + np.arange(b)[None, :]
    idx = np.where(event, gidx, np.iinfo(np.int64).min)
    np.maximum.accumulate(idx, axis=1, out=idx)
    return np.maximum(idx, state[:, None])


def band_kernel(width: int, bins: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Hann-tapered DFT kernels for ``bins`` of a window of ``width`` samples, blind to mean and slope.

    Returns ``(kernel, norm)``: ``kernel`` is ``(width, 2 * len(bins))`` (cosine then sine columns,
    each orthogonalised against a constant and a linear ramp, so level and trend leave no energy);
    ``(window @ kernel)`` squared and summed per bin, times ``norm``, is the squared amplitude of a
    sinusoid at that bin.
    """
    j = np.arange(width, dtype=np.float64)
    taper = np.hanning(width + 2)[1:-1]
    cols = []
    for k in bins:
        cols.append(taper * np.cos(2 * np.pi * k * j / width))
        cols.append(taper * np.sin(2 * np.pi * k * j / width))
    kernel = np.stack(cols, axis=1)
    basis = np.stack([np.ones(width), j - j.mean()], axis=1)
    q, _ = np.linalg.qr(basis)
    kernel = kernel - q @ (q.T @ kernel)
    norm = (2.0 / taper.sum()) ** 2
    return kernel, norm
