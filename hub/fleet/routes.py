"""``GET /fleet``: every edge, substation and device, when the hub last heard from each, and which
are offline or stale (:mod:`hub.fleet.liveness`); and each edge's latest health report (software,
model, backlog and its age, drops, devices), sent with its syncs; and whether each edge is catching up
after an outage (:mod:`hub.fleet.catchup`)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import get
from litestar.datastructures import State

from hub.auth import VIEWER
from hub.auth.guards import allow
from hub.fleet.catchup import EdgeCatchUp, catch_up
from hub.fleet.configs import ROUTES as CONFIG_ROUTES
from hub.fleet.liveness import DeviceLiveness, EdgeLiveness, Liveness, SubstationLiveness
from protocols.wire import DeviceState

__all__ = ["ROUTES", "Fleet"]


class EdgeReport(msgspec.Struct, frozen=True, kw_only=True):
    """An edge's latest health report, as it sent it with a sync."""

    received_at: datetime
    software: str
    model: str  # the scoring model it runs ("": detectors only)
    readings_pending: int  # its backlog
    events_pending: int
    oldest_pending: datetime | None  # the oldest reading it has not sent yet
    sync_lag_s: float | None  # how far behind the hub is on this edge's readings (0: nothing waiting)
    dropped: int  # readings its buffer dropped at its limits, ever
    devices: list[DeviceState]
    config_version: int  # the hub-given config it runs (0: its own file; GET /edges/{edge_id}/config)


class Fleet(msgspec.Struct, frozen=True, kw_only=True):
    checked_at: datetime | None  # the last liveness check (device times are as of then)
    offline_floor_s: float  # the shortest silence after which an edge is offline
    telemetry_stale_s: float  # a substation without an edge is stale after this long without a reading
    edges: list[EdgeLiveness]
    substations: dict[str, SubstationLiveness]
    devices: list[DeviceLiveness]
    reports: dict[str, EdgeReport] = {}  # per edge id: the health it reported with its latest sync
    # per edge id that ever synced: in step, or catching up after an outage (its live range, the backlog to come)
    catch_up: dict[str, EdgeCatchUp] = {}


@get("/fleet", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="Edges, substations and devices: when the hub last heard from each, which are offline or stale")
def fleet(state: State) -> Fleet:
    """An edge is offline after ``offline_after_s`` of silence (a multiple of the sync interval the
    hub learnt from its syncs, at least ``offline_floor_s``); a substation is stale when none of its
    edges is online or, without an edge, when its newest reading is older than ``telemetry_stale_s``.
    ``catch_up``: per edge, ``in_step``, or ``catching_up`` after an outage: the live range the hub
    holds past its mark, the backlog still to come below it, the oldest reading still missing as far
    as the edge's latest report tells."""
    liveness: Liveness = state.liveness
    now = datetime.now(UTC)
    states = state.storage.edge_states()
    edges = liveness.edges(now, states)
    health = state.storage.edge_health()
    reports = {}
    for edge_id, (at, h) in health.items():
        lag = 0.0 if not h.readings_pending else (
            max(0.0, (at - h.oldest_pending).total_seconds()) if h.oldest_pending is not None else None)
        reports[edge_id] = EdgeReport(received_at=at, software=h.software, model=h.model,
                                      readings_pending=h.readings_pending, events_pending=h.events_pending,
                                      oldest_pending=h.oldest_pending, sync_lag_s=lag, dropped=h.dropped,
                                      devices=h.devices, config_version=h.config_version)
    return Fleet(checked_at=liveness.last_check, offline_floor_s=liveness.settings.offline_floor_s,
                 telemetry_stale_s=liveness.settings.telemetry_after_s, edges=edges,
                 substations=liveness.substations(now, edges), devices=liveness.devices(now), reports=reports,
                 catch_up={s.edge_id: catch_up(s, health.get(s.edge_id)) for s in states})


ROUTES = [fleet, *CONFIG_ROUTES]  # and remote config (hub.fleet.configs)
