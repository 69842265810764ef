"""Episode grouping (agents.anomaly_detector.correlate): the per-class sweep gives exactly the groups
of the pairwise definition, and stays linear where every pair would not fit in memory."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.anomaly_detector.correlate import group_episodes


def _pairwise(start, end, sensor, substation, quantity, slack_s) -> np.ndarray:
    """The definition, pair by pair: spans widened by the slack meet, same substation or same
    quantity, different sensors; groups are connected components labelled by their smallest index."""
    n = len(start)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for a in range(n):
        for b in range(a + 1, n):
            meet = start[a] <= end[b] + slack_s and start[b] <= end[a] + slack_s
            related = substation[a] == substation[b] or quantity[a] == quantity[b]
            if meet and related and sensor[a] != sensor[b]:
                ra, rb = root(a), root(b)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])


episode = st.tuples(st.integers(0, 60), st.integers(0, 15), st.integers(0, 5), st.integers(0, 2), st.integers(0, 2))


@settings(max_examples=400, deadline=None)
@given(st.lists(episode, min_size=0, max_size=40), st.sampled_from([0.0, 2.0, 7.5]))
def test_the_sweep_gives_the_groups_of_the_pairwise_definition(eps, slack_s) -> None:
    start = np.array([e[0] for e in eps], dtype=float)
    end = start + np.array([e[1] for e in eps], dtype=float)
    sensor, substation = np.array([e[2] for e in eps]), np.array([e[3] for e in eps])
    quantity = np.array([e[4] for e in eps])
    got = group_episodes(start, end, sensor, substation, quantity, slack_s)
    assert got.tolist() == _pairwise(start, end, sensor, substation, quantity, slack_s).tolist()


def test_a_grid_wide_event_at_many_sensors_is_one_group_without_every_pair() -> None:
    # 40,000 episodes of one quantity overlapping in time: 800 M pairs, 0.8 GB as a boolean matrix
    n = 40_000
    rng = np.random.default_rng(3)
    start = rng.uniform(0, 60, n)
    got = group_episodes(start, start + 30.0, np.arange(n), rng.integers(0, 500, n), np.zeros(n, dtype=int), 5.0)
    assert (got == 0).all()


def test_same_sensor_episodes_are_not_linked_directly() -> None:
    # one sensor's two episodes meet; a third sensor's episode meets only the second
    got = group_episodes(np.array([0.0, 10.0, 21.0]), np.array([9.0, 20.0, 30.0]), np.array([1, 1, 2]),
                         np.array([0, 0, 0]), np.array([0, 0, 0]), 2.0)
    assert got.tolist() == [0, 1, 1]
