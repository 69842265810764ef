"""Anomaly detector agent: what only the hub sees in the edge's anomaly scores.

A pure computation over data handed to it (numpy over all sensors at once; no storage, no HTTP, no
asyncio). The orchestrator calls :func:`analyse` with an :class:`AnomalyInput` (one
:class:`SensorSeries` per device and metric: readings, the edge's scores and types, optionally 90
days of history) and gets :class:`~agents.findings.Finding` s back:

- ``baseline_deviation``: a sustained deviation from the sensor's hour-of-week baseline over
  trailing 30 / 60 / 90-day windows (:mod:`.baseline`);
- ``anomaly_<type>``: one episode of high edge scores (:mod:`.episodes`) on one sensor;
- ``correlated_anomaly``: overlapping episodes on several sensors of one device, several devices of
  one substation, or several substations (a grid-wide event) (:mod:`.correlate`).

A fleet split across processes (the hub's agents by substation) runs :func:`analyse_part` on each
part (its deviations, and its episodes as JSON-ready dicts) and :func:`correlate_episodes` once
over every part's episodes: the findings are those of :func:`analyse` over the whole fleet.

:func:`alert_text` gives a finding's one-line operator alert ("ANOMALY DETECTED: Transformer TR-07
showing unexpected temperature spike. ...").
"""

from __future__ import annotations

from agents.anomaly_detector.analyse import (
    alert_text,
    analyse,
    analyse_part,
    check_episodes,
    correlate_episodes,
    ordered,
)
from agents.anomaly_detector.baseline import (
    Baseline,
    compute_baseline,
    grouped_median,
    hour_of_week,
    week_over_week_scale,
)
from agents.anomaly_detector.correlate import SCOPES, group_episodes, scope_of
from agents.anomaly_detector.episodes import Episodes, find_episodes
from agents.anomaly_detector.schema import (
    AGENT,
    AnomalyConfig,
    AnomalyInput,
    SensorSeries,
)
from agents.findings import Finding

__all__ = [
    "AGENT",
    "SCOPES",
    "AnomalyConfig",
    "AnomalyInput",
    "Baseline",
    "Episodes",
    "Finding",
    "SensorSeries",
    "alert_text",
    "analyse",
    "analyse_part",
    "check_episodes",
    "correlate_episodes",
    "compute_baseline",
    "find_episodes",
    "group_episodes",
    "grouped_median",
    "hour_of_week",
    "ordered",
    "scope_of",
    "week_over_week_scale",
]
