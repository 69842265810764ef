"""The agents' side of the API: their status and runs, an incident's lifecycle, forecasts,
maintenance predictions, grid status, and OT logs in.

- ``GET /agents``, ``POST /agents/run``: each agent's state, last run, last error; run a cycle now.
- ``GET /incidents/{id}``: one incident with its facts, recommendation, narrative and history.
- ``POST /incidents/{id}/status``: ``{"status": "ACKNOWLEDGED", "note": "..."}`` (the caller is recorded);
  forward only (OPEN -> ACKNOWLEDGED -> IN_PROGRESS -> RESOLVED); 404 unknown, 409 not allowed.
- ``GET /forecast/next-24h``: the latest demand forecast per feeder: the next 24 hours, peak,
  margin to capacity, risk of exceeding it.
- ``GET /maintenance``: the latest maintenance prediction per transformer.
- ``GET /grid-status``: OK / WARNING / CRITICAL per substation and device, UNKNOWN when the hub
  does not hear from it (:mod:`hub.fleet.status`).
- ``POST /ot-logs``: OT log entries (protocols/schemas/ot_log.schema.json: one, a list, or
  ``{"events": [...]}``); good entries are stored even when others are bad, and the answer names
  each bad one; 400 only when none is good.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi.spec import OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from hub.auth import ADMIN, OPERATOR, VIEWER
from hub.auth.audit import record
from hub.auth.guards import allow, principal
from hub.agent_inputs import RUNNERS
from hub.fleet import SubstationStatus
from hub.fleet import grid_status as fleet_grid_status
from hub.openapi import error, query_time
from hub.orchestrator import AgentStatus, Orchestrator
from hub.storage.base import Incident, IncidentError, Storage
from protocols import otlog

__all__ = ["ROUTES"]


AgentName = Literal[tuple(RUNNERS)]  # type: ignore[valid-type]  # the five agents
NOT_RUNNING = error("the agents are not running (the hub was started without them)")


class AgentList(msgspec.Struct, frozen=True):
    agents: list[AgentStatus]


class StatusChangeRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    status: Literal["ACKNOWLEDGED", "IN_PROGRESS", "RESOLVED"]
    note: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    # accepted from older clients and ignored: the history records the authenticated caller
    actor: Annotated[str, msgspec.Meta(max_length=128)] = ""


class ForecastList(msgspec.Struct, frozen=True):
    forecasts: list[dict[str, Any]]


class MaintenanceList(msgspec.Struct, frozen=True):
    predictions: list[dict[str, Any]]


class GridStatus(msgspec.Struct, frozen=True):
    substations: dict[str, SubstationStatus]


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


@get("/incidents/{incident_id:str}", guards=[allow(VIEWER)], sync_to_thread=True, summary="One incident: facts, narrative, history",
     responses={404: error("no such incident")})
def get_incident(incident_id: FromPath[str], state: State) -> Incident:
    try:
        return _storage(state).get_incident(incident_id)
    except IncidentError as exc:
        raise NotFoundException(str(exc)) from exc


@post("/incidents/{incident_id:str}/status", guards=[allow(OPERATOR)], sync_to_thread=True, status_code=200,
      summary="Move an incident forward: ACKNOWLEDGED, IN_PROGRESS, RESOLVED (who and when are recorded)",
      responses={404: error("no such incident"), 409: error("the incident cannot move to that status (forward only)")})
def set_incident_status(incident_id: FromPath[str], data: JSONBody[StatusChangeRequest], request: Request,
                        state: State) -> Incident:
    """The history records the authenticated caller (``user:alice``, ``key:scada-gw``); an ``actor``
    in the body is ignored."""
    storage = _storage(state)
    try:
        before = storage.get_incident(incident_id)
    except IncidentError as exc:
        raise NotFoundException(str(exc)) from exc
    try:
        after = storage.set_incident_status(incident_id, data.status, principal(request).label, data.note)
    except IncidentError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    record(request, "incident.status", incident_id, status=data.status, previous=before.status, note=data.note)
    return after


def forecast_window(body: dict[str, Any], hours: int, now: datetime) -> dict[str, Any]:
    """A stored forecast with its points from the past hour on, at most ``hours`` of them."""
    out = {k: v for k, v in body.items() if k != "points"}
    points = body.get("points") or []
    out["points"] = [p for p in points if datetime.fromisoformat(p[0]) >= now - timedelta(hours=1)][:hours] or points[:hours]
    out["points_columns"] = ["timestamp", "value", "lower", "upper"]
    return out


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


def _ot_log_body() -> RequestBody:
    """The body ``POST /ot-logs`` takes, from the published schema of an entry (``otlog.schema()``):
    one entry, a list of them, or ``{"events": [...]}``. The handler reads the raw body (a bad entry
    must not lose the good ones), so Litestar cannot derive this from a type."""
    published = otlog.schema()
    # the decoder refuses any other field, even a null one (the file allows those: a discrepancy)
    entry = {k: v for k, v in published.items() if not k.startswith("$")} | {"additionalProperties": False}
    # each element is judged on its own: good ones stored, bad ones named in `rejected`; 400 if none is good
    entries = {"type": "array", "contains": entry, "minItems": 1, "maxItems": 100_000}
    batch = {**published["$defs"]["batch"], "additionalProperties": False,
             "properties": {"events": entries}}
    return RequestBody(required=True, description=published["description"], content={
        "application/json": OpenAPIMediaType(schema=Schema(one_of=[entry, entries, batch]))})


@dataclass
class _OtLogsOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = _ot_log_body()


@post("/ot-logs", guards=[allow(OPERATOR.with_rate_limit())], status_code=200, summary="OT log entries in (authentication, commands, configuration changes)",
      operation_class=_OtLogsOperation, responses={400: error("no usable entry: each bad one is named in `errors`")})
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
