"""What the agents' routes answer (:mod:`hub.insights.routes`)."""

from __future__ import annotations

from typing import Any

import msgspec

from hub.fleet import SubstationStatus
from hub.insights.orchestrator import AgentStatus

__all__ = ["AgentList", "ForecastList", "GridStatus", "MaintenanceList"]


class AgentList(msgspec.Struct, frozen=True):
    agents: list[AgentStatus]


class ForecastList(msgspec.Struct, frozen=True):
    forecasts: list[dict[str, Any]]


class MaintenanceList(msgspec.Struct, frozen=True):
    predictions: list[dict[str, Any]]


class GridStatus(msgspec.Struct, frozen=True):
    substations: dict[str, SubstationStatus]
