"""``GET /healthz``: liveness, and the storage backend in use. Public (a load balancer asks it)."""

from __future__ import annotations

from litestar import get
from litestar.datastructures import State

from hub.auth import PUBLIC
from hub.auth.guards import allow
from hub.system.schemas import Health

__all__ = ["ROUTES"]


@get("/healthz", guards=[allow(PUBLIC)], sync_to_thread=False, summary="Liveness and the storage backend in use")
def healthz(state: State) -> Health:
    return Health(status="ok", database=state.storage.backend)


ROUTES = [healthz]
