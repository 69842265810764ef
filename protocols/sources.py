"""What every device driver provides, and the errors it raises.

A driver turns one configured device into a *source* of values for that device's points:

- a :class:`PolledSource` is asked (``await read()``) every ``poll_interval_s`` and answers with one
  value and one set of quality flags per point (Modbus, OPC-UA polling);
- a :class:`PushedSource` yields :class:`Update` s as the device sends them (``stream()``: OPC-UA
  subscriptions, MQTT).

Sources never reconnect on their own: when a read or the stream fails they raise
:class:`SourceConnectError` / :class:`SourceReadError`, and the edge's scheduler, the one owner of
reconnects, backs off and tries again (a new ``read()`` or ``stream()`` call reconnects).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


class SourceError(Exception):
    def __init__(self, device_id: str, endpoint: str, reason: str) -> None:
        self.device_id, self.endpoint, self.reason = device_id, endpoint, reason
        super().__init__(f"{device_id} at {endpoint}: {reason}")


class SourceConnectError(SourceError):
    """The device could not be reached."""


class SourceReadError(SourceError):
    """The device was reached but a read failed (timeout, exception response, bad frame)."""


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What the edge needs to know of a point, whatever the protocol."""

    metric: str
    unit: str = ""
    nominal: float | None = None
    limit_low: float | None = None
    limit_high: float | None = None


@dataclass(frozen=True, slots=True)
class Update:
    """Values a pushed source received: point ``index[i]`` had ``values[i]`` at ``ts[i]`` (epoch s)."""

    ts: np.ndarray  # float64 seconds since the epoch
    index: np.ndarray  # int64 point indices
    values: np.ndarray  # float64, NaN where there is no value
    flags: np.ndarray  # int64 QualityFlag bits


@runtime_checkable
class PolledSource(Protocol):
    device_id: str
    endpoint: str
    points: Sequence[PointInfo]
    poll_interval_s: float

    async def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Read every point once: (values float64, QualityFlag bits int64), in point order."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class PushedSource(Protocol):
    device_id: str
    endpoint: str
    points: Sequence[PointInfo]

    def stream(self) -> AsyncIterator[Update]:
        """Connect (again) and yield updates until the connection fails (raises SourceError)."""
        ...

    async def close(self) -> None: ...
