"""The hub served by uvicorn on 127.0.0.1, for tests whose client is not in the event loop
(schemathesis, a browser): ``with LiveHub(storage, settings) as hub: ... hub.url``."""

from __future__ import annotations

import asyncio
import threading

from hub.server import HubServer
from hub.settings import Settings
from hub.storage import Storage
from tests.conftest import free_port

__all__ = ["LiveHub"]


class LiveHub:
    """:class:`hub.server.HubServer` on a free port, in a thread with its own event loop."""

    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.storage, self.settings = storage, settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), name=f"hub.{self.port}",
                                        daemon=True)

    async def _serve(self) -> None:
        server = HubServer(self.storage, self.port, settings=self.settings)
        try:
            await server.start()
        except BaseException as exc:  # noqa: BLE001  (raised in the test's thread)
            self._failed = exc
            self._started.set()
            return
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop()

    def __enter__(self) -> LiveHub:
        self._thread.start()
        if not self._started.wait(30):
            raise TimeoutError(f"the hub on {self.url} did not start within 30 s")
        if self._failed is not None:
            raise self._failed
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
