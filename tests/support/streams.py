"""Consuming a pushed source the way the edge daemon does, for tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np

from protocols.mqtt.codec import DeadLetter
from protocols.mqtt.source import MqttSource
from protocols.sources import SourceError, Update

__all__ = ["Listener"]


class Listener:
    """The edge daemon's ``_listen`` in miniature: stream(); on SourceError, back off and stream() again.

    Anything else the stream raises ends the listener, as it would end the daemon: :meth:`until`
    raises it at once, and so does leaving the context.
    """

    def __init__(self, source: MqttSource, backoff_s: float = 0.05) -> None:
        self.source = source
        self.backoff_s = backoff_s
        self.updates: list[Update] = []
        self.errors: list[SourceError] = []
        self.dead: list[DeadLetter] = []
        source.on_reject = self.dead.extend
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            try:
                async for update in self.source.stream():
                    self.updates.append(update)
            except SourceError as exc:
                self.errors.append(exc)
            await asyncio.sleep(self.backoff_s)

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run(), name=f"test.{self.source.device_id}.listen")
        await self.until(lambda: self.source.stats.connected or bool(self.errors))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        try:
            self._check_alive()
        finally:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            await self.source.close()

    def _check_alive(self) -> None:
        """Raise what ended the listener's task, if something did (it only ends by cancellation)."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            exc = task.exception()
            raise AssertionError(f"the stream of {self.source.device_id} crashed: {exc!r}") from exc

    @property
    def readings(self) -> int:
        return sum(len(u.ts) for u in self.updates)

    def values(self) -> np.ndarray:
        return np.concatenate([u.values for u in self.updates]) if self.updates else np.empty(0)

    async def until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            self._check_alive()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; stats {self.source.stats}; errors {self.errors[-3:]}")
            await asyncio.sleep(0.01)
