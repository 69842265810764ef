"""The scans of models._windows give the same answer fed a sample at a time (as an edge scores each
poll) as fed a whole block: the one-sample path is the recurrence itself."""

from __future__ import annotations

import numpy as np

from models._windows import ewma, last_index


def test_ewma_one_sample_at_a_time_equals_the_block_scan() -> None:
    rng = np.random.default_rng(5)
    u = rng.normal(size=(6, 300)) * np.array([1e-3, 1.0, 1e3, 1e6, 0.0, 50.0])[:, None]
    for alpha in (1.0, 0.5, 2 / 33, 2 / 1025):
        state = rng.normal(size=6)
        whole = ewma(u, alpha, state)
        prev, steps = state, []
        for t in range(u.shape[1]):
            one = ewma(u[:, t:t + 1], alpha, prev)
            assert one.shape == (6, 1) and one.dtype == np.float64
            steps.append(one)
            prev = one[:, 0]
        np.testing.assert_allclose(np.concatenate(steps, axis=1), whole, rtol=1e-9, atol=1e-9 * np.abs(u).max())
        expected = (1 - alpha) * state + alpha * u[:, 0]  # the recurrence's first step, by hand
        np.testing.assert_allclose(whole[:, 0], expected, rtol=1e-12)


def test_last_index_one_sample_at_a_time_equals_the_block_scan() -> None:
    rng = np.random.default_rng(6)
    event = rng.random((5, 200)) < np.array([0.0, 0.01, 0.2, 0.9, 1.0])[:, None]
    start = np.array([0, 10, 1000, 7, 3], dtype=np.int64)
    never = np.full(5, np.iinfo(np.int64).min // 4, dtype=np.int64)
    whole = last_index(event, start, never)
    state, steps = never, []
    for t in range(event.shape[1]):
        one = last_index(event[:, t:t + 1], start + t, state)
        steps.append(one)
        state = one[:, 0]
    np.testing.assert_array_equal(np.concatenate(steps, axis=1), whole)
    assert (whole[0] == never[0]).all() and (whole[4] == start[4] + np.arange(200)).all()
