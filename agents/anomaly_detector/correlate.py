"""Which episodes belong together: overlap in time across sensors, devices and substations.

Two episodes of different sensors are linked when their spans, each widened by ``slack_s``, meet
(``a.start <= b.end + slack`` and ``b.start <= a.end + slack``) and either

- they are at the same substation (several metrics of one device, or several devices), or
- they measure the same quantity (the metric's sensor type: ``frequency``, ``voltage`` for
  ``voltage_l1``...) at different substations: one event seen across the grid.

A transformer's temperature at one substation and a feeder's current at another are not linked
directly, only through a chain of links. Groups are the connected components of the links; a group
of one sensor's episodes only is not a correlation. The scope of a group is ``device`` (several
sensors of one device), ``substation`` (several devices of one substation) or ``grid`` (several
substations).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["SCOPES", "group_episodes", "scope_of"]

SCOPES = ("device", "substation", "grid")


def group_episodes(start: np.ndarray, end: np.ndarray, sensor: np.ndarray, substation: np.ndarray,
                   quantity: np.ndarray, slack_s: float) -> np.ndarray:
    """A group label per episode (the smallest episode index in its group).

    ``sensor``, ``substation``, ``quantity``: integer codes per episode. The links are found per
    class (one substation, one quantity) by a sweep over the class's episodes in order of start
    (:func:`_link_class`), so time and memory grow with the episodes, not with their pairs: a
    grid-wide event at thousands of sensors is thousands of episodes, all linked.
    """
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    n = start.size
    parent = list(range(n))
    if n < 2:
        return np.arange(n, dtype=np.int64)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:  # the smaller index is the root: it labels the group
            parent[max(ra, rb)] = min(ra, rb)

    sensors = np.asarray(sensor).tolist()
    for codes in (np.asarray(substation), np.asarray(quantity)):
        order = np.lexsort((start, codes))  # by class, then by start
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        for members in np.split(order, bounds):
            if members.size > 1:
                _link_class(members.tolist(), start, end, sensors, slack_s, union)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def _link_class(members: list[int], start: np.ndarray, end: np.ndarray, sensors: list[int], slack_s: float,
                union: Callable[[int, int], None]) -> None:
    """Union every pair of ``members`` (one class, in order of start) whose spans meet and whose
    sensors differ, without visiting the pairs.

    In order of start, episode ``i`` meets an earlier ``j`` exactly when ``end[j] + slack >=
    start[i]``. The earlier episodes still in reach are kept as groups already joined, each with the
    latest end of its two sensors that end latest (distinct sensors). ``i`` links to a group when
    one of its members in reach has another sensor: the latest-ending sensor if it is not ``i``'s,
    else the second. Every group ``i`` links to joins ``i``'s, so a grid-wide event stays one group,
    however many sensors see it."""
    groups: list[list] = []  # [member, (end, sensor), (end, sensor) | None]: latest end by distinct sensor
    for i in members:
        reach = float(start[i]) - slack_s
        s_i, e_i = sensors[i], float(end[i])
        groups = [g for g in groups if g[1][0] >= reach]
        linked, kept = [], []
        for g in groups:
            (e1, s1), second = g[1], g[2]
            other = e1 if s1 != s_i else (second[0] if second is not None else -np.inf)
            (linked if other >= reach else kept).append(g)
        if not linked:
            kept.append([i, (e_i, s_i), None])
            groups = kept
            continue
        best: dict[int, float] = {s_i: e_i}
        for g in linked:
            union(i, g[0])
            for e, s in (g[1], g[2]) if g[2] is not None else (g[1],):
                if e > best.get(s, -np.inf):
                    best[s] = e
        top = sorted(((e, s) for s, e in best.items()), reverse=True)[:2]
        kept.append([i, top[0], top[1] if len(top) > 1 else None])
        groups = kept


def scope_of(substations: Sequence[str], devices: Sequence[tuple[str, str]]) -> str:
    """``grid`` for several substations, ``substation`` for several devices, else ``device``."""
    if len(set(substations)) > 1:
        return "grid"
    if len(set(devices)) > 1:
        return "substation"
    return "device"
