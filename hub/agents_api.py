"""The agents' side of the API: their status and runs, an incident's lifecycle, forecasts,
maintenance predictions, grid status, and OT logs in.

- ``GET /agents``, ``POST /agents/run``: each agent's state, last run, last error; run a cycle now.
- ``GET /incidents/{id}``: one incident with its facts, recommendation, narrative and history.
- ``POST /incidents/{id}/status``: ``{"status": "ACKNOWLEDGED", "actor": "alice", "note": "..."}``;
  forward only (OPEN -> ACKNOWLEDGED -> IN_PROGRESS -> RESOLVED); 404 unknown, 409 not allowed.
- ``GET /forecast/next-24h``: the latest demand forecast per feeder: the next 24 hours, peak,
  margin to capacity, risk of exceeding it.
- ``GET /maintenance``: the latest maintenance prediction per transformer.
- ``GET /grid-status``: OK / WARNING / CRITICAL per substation and device.
- ``POST /ot-logs``: OT log entries (protocols/schemas/ot_log.schema.json: one, a list, or
  ``{"events": [...]}``); good entries are stored even when others are bad, and the answer names
  each bad one; 400 only when none is good.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody

from hub.orchestrator import AgentStatus, Orchestrator
from hub.storage.base import Incident, IncidentError, Storage
from protocols import otlog

__all__ = ["ROUTES"]


class AgentList(msgspec.Struct, frozen=True):
    agents: list[AgentStatus]


class StatusChangeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Literal["ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED"]
    actor: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    note: Annotated[str, msgspec.Meta(max_length=4096)] = ""


class ForecastList(msgspec.Struct, frozen=True):
    forecasts: list[dict[str, Any]]


class MaintenanceList(msgspec.Struct, frozen=True):
    predictions: list[dict[str, Any]]


class GridStatus(msgspec.Struct, frozen=True):
    substations: dict[str, dict[str, Any]]


class OtLogResult(msgspec.Struct, frozen=True):
    accepted: int
    rejected: list[dict[str, Any]]


def _orchestrator(state: State) -> Orchestrator:
    orch = getattr(state, "orchestrator", None)
    if orch is None:
        raise HTTPException(status_code=503, detail="the agents are not running yet")
    return orch


def _storage(state: State) -> Storage:
    return state.storage


@get("/agents", sync_to_thread=False, summary="The agents: state, last run, last error")
def list_agents(state: State) -> AgentList:
    return AgentList(agents=_orchestrator(state).status())


@post("/agents/run", status_code=200, summary="Run every agent now (one cycle) and answer with their states")
async def run_agents(state: State, at: FromQuery[datetime | None] = None,
                     agent: FromQuery[list[str] | None] = None) -> AgentList:
    """``at``: analyse as of this time instead of now (re-running history); ``agent``: only these
    (repeatable: ``?agent=grid_monitor&agent=cyber_sentinel``)."""
    orch = _orchestrator(state)
    if at is not None and at.tzinfo is None:
        raise ValidationException(detail=f"at: {at.isoformat()} has no time zone; add Z or an offset")
    if agent:
        unknown = sorted(set(agent) - set(orch.runners))
        if unknown:
            raise ValidationException(detail=f"agent: unknown {', '.join(unknown)}; "
                                             f"the agents are {', '.join(orch.runners)}")
    return AgentList(agents=await orch.run_once(at.astimezone(UTC) if at else None, set(agent) if agent else None))


@get("/incidents/{incident_id:str}", sync_to_thread=True, summary="One incident: facts, narrative, history")
def get_incident(incident_id: FromPath[str], state: State) -> Incident:
    try:
        return _storage(state).get_incident(incident_id)
    except IncidentError as exc:
        raise NotFoundException(str(exc)) from exc


@post("/incidents/{incident_id:str}/status", sync_to_thread=True, status_code=200,
      summary="Move an incident forward: ACKNOWLEDGED, IN_PROGRESS, RESOLVED (who and when are recorded)")
def set_incident_status(incident_id: FromPath[str], data: JSONBody[StatusChangeRequest], state: State) -> Incident:
    storage = _storage(state)
    try:
        storage.get_incident(incident_id)
    except IncidentError as exc:
        raise NotFoundException(str(exc)) from exc
    try:
        return storage.set_incident_status(incident_id, data.status, data.actor, data.note)
    except IncidentError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc


def _next_hours(body: dict[str, Any], hours: int, now: datetime) -> dict[str, Any]:
    out = {k: v for k, v in body.items() if k != "points"}
    points = body.get("points") or []
    out["points"] = [p for p in points if datetime.fromisoformat(p[0]) >= now - timedelta(hours=1)][:hours] or points[:hours]
    out["points_columns"] = ["timestamp", "value", "lower", "upper"]
    return out


@get("/forecast/next-24h", sync_to_thread=True, summary="The latest demand forecast per feeder: next 24 h, peak, margin")
def forecast_next_24h(state: State) -> ForecastList:
    now = datetime.now(UTC)
    return ForecastList(forecasts=[_next_hours(d.body, 24, now) for d in _storage(state).latest_documents("forecast")])


@get("/maintenance", sync_to_thread=True, summary="The latest maintenance prediction per transformer")
def maintenance(state: State) -> MaintenanceList:
    return MaintenanceList(predictions=[d.body for d in _storage(state).latest_documents("maintenance")])


@get("/grid-status", sync_to_thread=True, summary="OK / WARNING / CRITICAL per substation and device")
def grid_status(state: State) -> GridStatus:
    return GridStatus(substations={d.key: {**d.body, "as_of": d.timestamp.isoformat()}
                                   for d in _storage(state).latest_documents("grid_status")})


@post("/ot-logs", status_code=200, summary="OT log entries in (authentication, commands, configuration changes)")
async def post_ot_logs(request: Request, state: State) -> OtLogResult:
    body = await request.body()
    decoded = otlog.decode(body)
    rejected = [{"index": e.index, "field": e.field, "message": e.message, "detail": str(e)} for e in decoded.errors]
    if not decoded.events:
        first = str(decoded.errors[0]) if decoded.errors else "no entries"
        raise ValidationException(detail=f"no usable OT log entry: {first}", extra=rejected)
    stored = await asyncio.to_thread(_storage(state).add_ot_logs, decoded.events, "http")
    orch = getattr(state, "orchestrator", None)
    if orch is not None:
        orch.notify()
    return OtLogResult(accepted=stored, rejected=rejected)


ROUTES = [list_agents, run_agents, get_incident, set_incident_status, forecast_next_24h, maintenance, grid_status,
          post_ot_logs]
