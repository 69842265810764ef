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

from collections.abc import Sequence

import numpy as np

__all__ = ["SCOPES", "group_episodes", "scope_of"]

SCOPES = ("device", "substation", "grid")


def group_episodes(start: np.ndarray, end: np.ndarray, sensor: np.ndarray, substation: np.ndarray,
                   quantity: np.ndarray, slack_s: float) -> np.ndarray:
    """A group label per episode (the smallest episode index in its group).

    ``sensor``, ``substation``, ``quantity``: integer codes per episode. The links are one
    ``(n, n)`` boolean comparison (episodes in one analysis number tens to hundreds); the union of
    linked pairs is a loop over the links, never over readings.
    """
    start = np.asarray(start, dtype=np.float64)
    end = np.asarray(end, dtype=np.float64)
    n = start.size
    parent = np.arange(n)
    if n < 2:
        return parent
    meet = (start[:, None] <= end[None, :] + slack_s) & (start[None, :] <= end[:, None] + slack_s)
    related = (substation[:, None] == substation[None, :]) | (quantity[:, None] == quantity[None, :])
    links = meet & related & (sensor[:, None] != sensor[None, :])
    rows, cols = np.nonzero(np.triu(links, k=1))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in zip(rows.tolist(), cols.tolist()):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)], dtype=np.int64)


def scope_of(substations: Sequence[str], devices: Sequence[tuple[str, str]]) -> str:
    """``grid`` for several substations, ``substation`` for several devices, else ``device``."""
    if len(set(substations)) > 1:
        return "grid"
    if len(set(devices)) > 1:
        return "substation"
    return "device"
