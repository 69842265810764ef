"""Maintenance predictor agent: equipment health, failure probability and the best maintenance window.

A pure computation over data handed to it (no storage, no HTTP, no asyncio). The hub's orchestrator
calls :func:`assess` with one :class:`AssetData` per device and gets one
:class:`MaintenancePrediction` each, with a :class:`~agents.findings.Finding` when the health or the
failure probability crosses a threshold. The parts:

- :mod:`.thermal`: IEC 60076-7:2018 thermal model (difference equations), ageing rate, loss of life;
- :mod:`.trend`: Theil-Sen trends with confidence intervals (oil temperature, vibration);
- :mod:`.dga`: IEC 60599:2022 gas ratios and Duval triangle 1;
- :mod:`.health`: the health score, its additive decomposition, the hazard model, the action bands;
- :mod:`.window`: the lowest-load maintenance window of a load forecast;
- :mod:`.precursor`: precursors of slowly developing faults (a residual against load and ambient
  rising toward a limit) with an estimated time to the limit, raised as an early WARNING.
"""

from agents.maintenance_predictor.config import FACTORS, MaintenanceConfig
from agents.maintenance_predictor.dga import GASES
from agents.maintenance_predictor.precursor import Precursor, PrecursorConfig, assess_precursor
from agents.maintenance_predictor.predictor import AGENT, AssetData, DgaSeries, MaintenancePrediction, Series, assess
from agents.maintenance_predictor.window import MaintenanceWindow, best_window

__all__ = [
    "GASES",
    "AGENT",
    "FACTORS",
    "AssetData",
    "DgaSeries",
    "MaintenanceConfig",
    "MaintenancePrediction",
    "MaintenanceWindow",
    "Precursor",
    "PrecursorConfig",
    "Series",
    "assess",
    "assess_precursor",
    "best_window",
]
