"""Grid monitor agent: grid-code, power-quality and loading checks over data the hub hands it.

Pure computation (numpy over whole series; no storage, no HTTP, no asyncio). Two ways in:

- :func:`analyse` (``GridSnapshot`` -> ``GridReport``): the orchestrator's entry point. Voltage and
  frequency against the grid-code bands (:mod:`protocols.gridcode`), IEEE 1159 sag / swell /
  interruption classification (:mod:`.ieee1159`), phase unbalance (:mod:`.unbalance`), power
  factor, voltage THD, feeder loading; one finding per device and condition, a status per
  substation and device (:mod:`.status`), load-transfer recommendations (:mod:`.recommend`).
- :func:`check_readings` / :func:`findings_from_events`: the hub's per-request grid-code check of
  single readings and the edge's events (:mod:`.readings`).
- :func:`voltage_weeks` / :func:`frequency_years` / :func:`unbalance_weeks`: EN 50160 statistics of
  stored readings per week or year, with coverage and a verdict (:mod:`.en50160`).
"""

from __future__ import annotations

from agents.findings import Finding
from agents.grid_monitor.analyse import analyse
from agents.grid_monitor.en50160 import PeriodStatistics, frequency_years, unbalance_weeks, voltage_weeks
from agents.grid_monitor.ieee1159 import VoltageEvent, classify_voltage_events, duration_category
from agents.grid_monitor.readings import ANOMALY_AGENT, check_readings, condition_key, findings_from_events
from agents.grid_monitor.recommend import Headroom, best_transfer, headrooms, neighbours, recommendation
from agents.grid_monitor.schema import (
    AGENT,
    STATUSES,
    FeederRating,
    GridMonitorConfig,
    GridReport,
    GridSnapshot,
    Series,
)
from agents.grid_monitor.status import rollup, status_of
from agents.grid_monitor.unbalance import nema_unbalance_pct, negative_sequence_unbalance_pct

__all__ = [
    "ANOMALY_AGENT",
    "condition_key",
    "AGENT",
    "STATUSES",
    "FeederRating",
    "Finding",
    "GridMonitorConfig",
    "GridReport",
    "GridSnapshot",
    "Headroom",
    "PeriodStatistics",
    "Series",
    "VoltageEvent",
    "analyse",
    "best_transfer",
    "check_readings",
    "classify_voltage_events",
    "duration_category",
    "findings_from_events",
    "frequency_years",
    "headrooms",
    "nema_unbalance_pct",
    "negative_sequence_unbalance_pct",
    "neighbours",
    "recommendation",
    "rollup",
    "status_of",
    "unbalance_weeks",
    "voltage_weeks",
]
