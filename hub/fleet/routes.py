"""``GET /fleet``: every edge, substation and device, when the hub last heard from each, and which
are offline or stale (:mod:`hub.fleet.liveness`)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from litestar import get
from litestar.datastructures import State

from hub.auth import VIEWER
from hub.auth.guards import allow
from hub.fleet.liveness import DeviceLiveness, EdgeLiveness, Liveness, SubstationLiveness

__all__ = ["ROUTES", "Fleet"]


class Fleet(msgspec.Struct, frozen=True, kw_only=True):
    checked_at: datetime | None  # the last liveness check (device times are as of then)
    offline_floor_s: float  # the shortest silence after which an edge is offline
    telemetry_stale_s: float  # a substation without an edge is stale after this long without a reading
    edges: list[EdgeLiveness]
    substations: dict[str, SubstationLiveness]
    devices: list[DeviceLiveness]


@get("/fleet", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="Edges, substations and devices: when the hub last heard from each, which are offline or stale")
def fleet(state: State) -> Fleet:
    """An edge is offline after ``offline_after_s`` of silence (a multiple of the sync interval the
    hub learnt from its syncs, at least ``offline_floor_s``); a substation is stale when none of its
    edges is online or, without an edge, when its newest reading is older than ``telemetry_stale_s``."""
    liveness: Liveness = state.liveness
    now = datetime.now(UTC)
    edges = liveness.edges(now)
    return Fleet(checked_at=liveness.last_check, offline_floor_s=liveness.settings.offline_floor_s,
                 telemetry_stale_s=liveness.settings.telemetry_after_s, edges=edges,
                 substations=liveness.substations(now, edges), devices=liveness.devices(now))


ROUTES = [fleet]
