"""The agents and their products: their status and runs, forecasts, maintenance predictions, grid status.

- ``GET /agents``, ``POST /agents/run``: each agent's state, last run, last error; run a cycle now.
- ``GET /forecast/next-24h``: the latest demand forecast per feeder: the next 24 hours, peak,
  margin to capacity, risk of exceeding it.
- ``GET /maintenance``: the latest maintenance prediction per transformer.
- ``GET /grid-status``: OK / WARNING / CRITICAL per substation and device, UNKNOWN when the hub
  does not hear from it (:mod:`hub.fleet.status`).

The agents run in :mod:`hub.insights.orchestrator`, over the inputs :mod:`hub.insights.agent_inputs`
reads for them.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromQuery, QueryParameter

from hub.auth import ADMIN, VIEWER
from hub.auth.audit import record
from hub.auth.guards import allow
from hub.fleet import grid_status as fleet_grid_status
from hub.insights.agent_inputs import RUNNERS
from hub.insights.orchestrator import Orchestrator
from hub.insights.products import forecast_window
from hub.insights.schemas import AgentList, ForecastList, GridStatus, MaintenanceList
from hub.openapi import error, query_time
from hub.storage.base import Storage

__all__ = ["ROUTES"]


AgentName = Literal[tuple(RUNNERS)]  # type: ignore[valid-type]  # the five agents
NOT_RUNNING = error("the agents are not running (the hub was started without them)")


def _orchestrator(state: State) -> Orchestrator:
    orch = getattr(state, "orchestrator", None)
    if orch is None:
        raise HTTPException(status_code=503, detail="the agents are not running yet")
    return orch


def _storage(state: State) -> Storage:
    return state.storage


@get("/agents", guards=[allow(VIEWER)], sync_to_thread=False, summary="The agents: state, last run, last error",
     responses={503: NOT_RUNNING})
def list_agents(state: State) -> AgentList:
    return AgentList(agents=_orchestrator(state).status())


@post("/agents/run", guards=[allow(ADMIN)], status_code=200, summary="Run every agent now (one cycle) and answer with their states",
      responses={400: error("a parameter is malformed, or `at` is outside the readings and OT logs held"),
                 503: NOT_RUNNING})
async def run_agents(request: Request, state: State,
                     at: Annotated[str | None, QueryParameter(format="date-time")] = None,
                     agent: FromQuery[list[AgentName] | None] = None) -> AgentList:
    """``at``: analyse as of this time instead of now (re-running history), within the readings the
    hub holds; ``agent``: only these (repeatable: ``?agent=grid_monitor&agent=cyber_sentinel``)."""
    orch = _orchestrator(state)
    as_of = query_time("at", at)
    if as_of is not None:
        await asyncio.to_thread(_check_as_of, _storage(state), as_of)
    if agent:
        unknown = sorted(set(agent) - set(orch.runners))
        if unknown:
            raise ValidationException(detail=f"agent: unknown {', '.join(unknown)}; "
                                             f"the agents are {', '.join(orch.runners)}")
    await asyncio.to_thread(record, request, "agents.run", ",".join(sorted(agent or [])) or "all",
                            at=as_of.isoformat() if as_of else None)
    return AgentList(agents=await orch.run_once(as_of, set(agent) if agent else None))


def _check_as_of(storage: Storage, at: datetime) -> None:
    """A past run is bounded by the data: from the oldest reading or OT log entry held to now (no
    1970, no 9999)."""
    span = storage.data_time_range()
    now = datetime.now(UTC)
    if span is None:
        raise ValidationException(detail="at: the hub holds no readings or OT logs to analyse as of a past time")
    lo = span[0]
    if not lo <= at <= now + timedelta(minutes=5):
        raise ValidationException(detail=f"at: {at.isoformat()} is outside the readings held "
                                         f"({lo.isoformat()} to {now.isoformat()})")


@get("/forecast/next-24h", guards=[allow(VIEWER)], sync_to_thread=True, summary="The latest demand forecast per feeder: next 24 h, peak, margin")
def forecast_next_24h(state: State) -> ForecastList:
    now = datetime.now(UTC)
    return ForecastList(forecasts=[forecast_window(d.body, 24, now) for d in _storage(state).latest_documents("forecast")])


@get("/maintenance", guards=[allow(VIEWER)], sync_to_thread=True, summary="The latest maintenance prediction per transformer")
def maintenance(state: State) -> MaintenanceList:
    return MaintenanceList(predictions=[d.body for d in _storage(state).latest_documents("maintenance")])


@get("/grid-status", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="OK / WARNING / CRITICAL per substation and device; UNKNOWN when the hub does not hear from it")
def grid_status(state: State) -> GridStatus:
    """The grid monitor's verdict while the hub hears from a substation; ``UNKNOWN`` (with
    ``stale``, ``last_seen`` and a ``reason``) when its edges are offline, its telemetry is silent, or
    it was never heard from or judged (hub.fleet.status)."""
    return GridStatus(substations=fleet_grid_status(_storage(state), state.liveness))


ROUTES = [list_agents, run_agents, forecast_next_24h, maintenance, grid_status]
