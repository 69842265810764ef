"""Incidents: the list, one incident, its lifecycle; and the hub's counts.

- ``GET /incidents?status=&severity=&limit=``: newest first.
- ``GET /incidents/{id}``: one incident with its facts, recommendation, narrative and history.
- ``POST /incidents/{id}/status``: ``{"status": "ACKNOWLEDGED", "note": "..."}`` (the caller is recorded);
  forward only (OPEN -> ACKNOWLEDGED -> IN_PROGRESS -> RESOLVED); 404 unknown, 409 not allowed.
- ``GET /stats``: readings per substation, incidents per type and severity, edges' sync state.

Incidents are raised by ingest (:mod:`hub.ingest`) and the agents (:mod:`hub.insights`), each
finding through :func:`hub.incidents.service.incident_from_finding`, one per ongoing condition.
"""

from __future__ import annotations

from typing import Annotated

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from hub.auth import OPERATOR, VIEWER
from hub.auth.audit import record
from hub.auth.guards import allow, principal
from hub.incidents import service
from hub.incidents.schemas import IncidentList, Stats, Status, StatusChangeRequest
from hub.openapi import error
from hub.storage.base import Incident, IncidentError, Storage
from protocols.severity import Severity

__all__ = ["ROUTES"]


def _storage(state: State) -> Storage:
    return state.storage


@get("/incidents", guards=[allow(VIEWER)], sync_to_thread=True, summary="List incidents, newest first")
def list_incidents(
    state: State,
    status: FromQuery[Status | None] = None,
    severity: FromQuery[Severity | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
) -> IncidentList:
    return IncidentList(incidents=_storage(state).list_incidents(status, severity, limit))


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


@get("/stats", guards=[allow(VIEWER)], sync_to_thread=True, summary="Readings per substation, incidents per type and severity, edges")
def stats(state: State) -> Stats:
    return service.stats(_storage(state))


ROUTES = [list_incidents, get_incident, set_incident_status, stats]
