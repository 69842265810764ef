"""What the readings API answers: a point's history, the latest reading of every point, and an
overview per substation. Built from storage's types at the edge of the API, never storage rows."""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec import UNSET, UnsetType

__all__ = ["EdgeContact", "History", "HistoryQuery", "LatestReading", "LatestReadings", "Point", "SubstationOverview",
           "Substations"]


class HistoryQuery(msgspec.Struct, frozen=True, kw_only=True):
    """The question as the hub took it: defaults filled in, times in UTC."""

    device_id: str
    metric: str
    substation: str | None  # None: not named (the one substation holding the point is taken)
    start: datetime  # inclusive
    end: datetime  # exclusive
    bucket: str  # as asked: raw, 1m, 1h, 1d or auto
    limit: int | None  # raw only: at most this many readings (None for a bucketed answer)


class Point(msgspec.Struct, frozen=True, kw_only=True):
    """A bucket (``ts``, ``min``, ``max``, ``avg``, ``last``, ``count``) or a raw reading (``ts``,
    ``value``, ``quality``, ``flags``): the fields of the other kind are left out, never null.

    A bucket holds the readings that have a value and are not flagged invalid; its ``ts`` is its
    start, a whole number of buckets after the epoch (1d: a UTC day). The first and last buckets may
    be partial: only readings within [start, end) count. ``last`` is the newest reading's value (of
    two at one instant, the larger). A raw reading is as stored: ``value`` null when it has none
    (the device did not answer, or it could not be decoded), ``quality`` 0..1, ``flags`` the names
    of its quality flags (invalid, stale, overflow, substituted, comm_lost, clock_unsync)."""

    ts: datetime
    min: float | UnsetType = UNSET
    max: float | UnsetType = UNSET
    avg: float | UnsetType = UNSET
    last: float | UnsetType = UNSET
    count: int | UnsetType = UNSET
    value: float | None | UnsetType = UNSET
    quality: float | UnsetType = UNSET
    flags: list[str] | UnsetType = UNSET


class History(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /readings``: one point's readings over a time range, oldest first."""

    query: HistoryQuery
    substation: str | None  # the substation whose readings these are (None: no reading in the range)
    unit: str  # of the point's newest reading
    bucket: str  # what was used: "raw", or the bucket's length ("1m", "15m", "6h", "2d")
    bucket_seconds: int | None  # None for raw
    points: list[Point]  # buckets, or raw readings
    truncated: bool = False  # raw: the range holds more than `limit` readings; ask again from next_start
    next_start: datetime | None = None


class LatestReading(msgspec.Struct, frozen=True, kw_only=True):
    substation: str
    device_id: str
    metric: str
    ts: datetime
    value: float | None  # None: the newest reading has no value; `flags` say why
    unit: str
    quality: float
    flags: list[str]


class LatestReadings(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /readings/latest``: the newest reading of every point, by substation, device and metric."""

    readings: list[LatestReading]


class EdgeContact(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: str
    last_sync: datetime | None  # the edge's last sync the hub stored (None: never)


class SubstationOverview(msgspec.Struct, frozen=True, kw_only=True):
    substation: str
    devices: int
    points: int  # (device, metric) pairs with readings
    readings: int
    first_reading: datetime | None  # None: no reading held
    last_reading: datetime | None
    last_edge_contact: datetime | None  # the newest of its edges' last syncs (None: no edge has synced)
    edges: list[EdgeContact]
    open_incidents: dict[str, int]  # incidents not RESOLVED, by severity (every severity, 0 when none)


class Substations(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /substations``: every substation with readings, an edge or an open incident, by name."""

    substations: list[SubstationOverview]
