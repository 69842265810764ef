"""The liveness check and the stream's broadcaster, started and stopped with the app: a Litestar
lifespan, after the one that opens the storage and the credential store (``hub/app.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from litestar import Litestar

from hub.fleet import Liveness
from hub.stream.broadcaster import Broadcaster

__all__ = ["live_services"]


def live_services(settings: Any) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """A lifespan that keeps ``app.state.liveness`` and ``app.state.broadcaster`` running
    (``settings``: the hub's :class:`~hub.settings.Settings`)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = app.state
        auth = state.auth
        liveness = state.liveness = Liveness(
            state.storage, settings.liveness,
            registered_edges=lambda: [(c.principal, c.substation) for c in auth.credentials("edge")])
        broadcaster = state.broadcaster = Broadcaster(state.storage, liveness, settings.stream, metrics=state.metrics)
        liveness.on_change = broadcaster.notify_threadsafe
        tasks = [asyncio.create_task(liveness.run(), name="hub.liveness"),
                 asyncio.create_task(broadcaster.run(), name="hub.stream")]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    return lifespan
