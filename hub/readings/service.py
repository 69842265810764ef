"""The readings API's work, over :class:`~hub.storage.base.Storage`: which bucket a range gets, what
a question may ask, and the answers built from storage's queries (every aggregate is the database's).

A history is one point's: a device's metric, in one substation. Bucketed answers come from
:meth:`~hub.storage.base.Storage.iter_buckets` (buckets aligned on the epoch, so 1d is a UTC day), raw
ones from :meth:`~hub.storage.base.Storage.iter_readings`; both over the range cut to the readings the
point has (:meth:`~hub.storage.base.Storage.series_extent`), so a range of centuries costs what the
point's own readings do.

Errors are :class:`QueryError` (the question cannot be answered as asked: a 400 naming the
parameter) and :class:`UnknownPoint` (no reading of the point is held: a 404); the routes map them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from hub.readings.schemas import EdgeContact, History, HistoryQuery, LatestReading, Point, SubstationOverview
from hub.storage.base import Storage, epoch_us
from protocols.reading import QualityFlag, Reading
from protocols.wire import SEVERITIES

__all__ = ["AUTO_POINTS", "BUCKETS", "BUCKET_NAMES", "DEFAULT_SPAN", "LADDER_S", "MAX_POINTS", "MAX_RAW_LIMIT",
           "MAX_RAW_SPAN", "RAW_LIMIT", "QueryError", "UnknownPoint", "auto_bucket", "bucket_count", "bucket_name",
           "history", "latest", "substations"]

BUCKET_NAMES = ("raw", "1m", "1h", "1d", "auto")
BUCKETS: dict[str, int] = {"1m": 60, "1h": 3600, "1d": 86_400}
AUTO_POINTS = 2000  # auto: the smallest bucket giving at most this many
# auto's bucket lengths (seconds), each dividing a day; past a day, whole days
LADDER_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400)
MAX_POINTS = 10_000  # buckets per answer when one is named (1m: about a week; 1h: about 14 months)
MAX_RAW_SPAN = timedelta(days=7)  # raw readings per question; beyond, a bucket
RAW_LIMIT = 10_000  # raw readings per answer unless `limit` says otherwise
MAX_RAW_LIMIT = 100_000
DEFAULT_SPAN = timedelta(hours=24)
CHUNK_ROWS = 10_000  # rows per storage query
_US = timedelta(microseconds=1)
_PAST_LAST = timedelta(seconds=1)
_DAY_S = 86_400


class QueryError(ValueError):
    """A question that cannot be answered as asked; ``key`` is the parameter to change."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key, self.message = key, message


class UnknownPoint(LookupError):
    """No reading of the point is held."""


def bucket_count(start: datetime, end: datetime, bucket_s: int) -> int:
    """How many epoch-aligned buckets of ``bucket_s`` seconds [start, end) touches (end > start)."""
    b = bucket_s * 10**6
    return (epoch_us(end) - 1) // b - epoch_us(start) // b + 1


def auto_bucket(start: datetime, end: datetime) -> int:
    """The shortest bucket (seconds) of :data:`LADDER_S`, or of whole days, giving [start, end) at
    most :data:`AUTO_POINTS` buckets."""
    for seconds in LADDER_S:
        if bucket_count(start, end, seconds) <= AUTO_POINTS:
            return seconds
    days = max(1, (end - start) // timedelta(days=AUTO_POINTS - 1))  # close below; then step up to it
    while bucket_count(start, end, days * _DAY_S) > AUTO_POINTS:
        days += 1
    return days * _DAY_S


def bucket_name(seconds: int) -> str:
    """``60`` -> ``1m``, ``21600`` -> ``6h``, ``172800`` -> ``2d``."""
    for unit, size in (("d", _DAY_S), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _days(span: timedelta) -> str:
    return f"{span / timedelta(days=1):.4g} days"


def history(storage: Storage, *, device_id: str, metric: str, substation: str | None, start: datetime | None,
            end: datetime | None, bucket: str, limit: int) -> History:
    """``GET /readings``. ``start`` and ``end`` in UTC (None: the last 24 h before ``end``, which is
    now when None)."""
    if bucket not in BUCKET_NAMES:
        raise QueryError("bucket", f"{bucket[:64]!r} is not a bucket: ask {', '.join(BUCKET_NAMES[:-1])} or auto")
    if end is None and start is not None and start >= datetime.now(UTC):
        raise QueryError("start", f"{start.isoformat()} is in the future, and end (not given) is now")
    end = datetime.now(UTC) if end is None else end
    start = end - DEFAULT_SPAN if start is None else start
    if start >= end:
        raise QueryError("start", f"{start.isoformat()} is not before end ({end.isoformat()})")
    query = HistoryQuery(device_id=device_id, metric=metric, substation=substation, start=start, end=end,
                         bucket=bucket, limit=limit if bucket == "raw" else None)
    if bucket == "raw":
        if end - start > MAX_RAW_SPAN:
            raise QueryError("bucket", f"raw readings are served over at most {MAX_RAW_SPAN.days} days per question, "
                                       f"and this range is {_days(end - start)}: ask a bucket (auto, 1m, 1h, 1d) or "
                                       "a shorter range")
        bucket_s = None
    elif bucket == "auto":
        bucket_s = auto_bucket(start, end)
    else:
        bucket_s = BUCKETS[bucket]
        if (n := bucket_count(start, end, bucket_s)) > MAX_POINTS:
            raise QueryError("bucket", f"{bucket} buckets over {_days(end - start)} are {n} points, and an answer "
                                       f"holds at most {MAX_POINTS}: ask a longer bucket, auto, or a shorter range")
    extent = storage.series_extent(device_id, metric, substation)
    if extent is None:
        where = f" in substation {substation!r}" if substation is not None else ""
        raise UnknownPoint(f"no reading of device {device_id!r}, metric {metric!r} is held{where}")
    # cut to the point's own readings: the same answer, without reading years that hold none of them (a
    # second past the last: SQLite's seconds-as-floats tell no microseconds apart in year 9999)
    lo, hi = max(start, extent.first), end if end - extent.last <= _PAST_LAST else extent.last + _PAST_LAST
    used = "raw" if bucket_s is None else bucket_name(bucket_s)
    answer = History(query=query, substation=substation, unit=extent.unit, bucket=used, bucket_seconds=bucket_s,
                     points=[])
    if lo >= hi:
        return answer
    filters = {"substations": [substation] if substation is not None else None, "devices": [device_id],
               "metrics": [metric]}
    if bucket_s is None:
        rows, more = _first(storage.iter_readings(lo, hi, **filters, chunk_rows=min(limit + 1, CHUNK_ROWS)), limit + 1)
        found = _one_substation({r.substation for r in rows}, device_id, metric, substation)
        page, next_start = _page(rows, limit)
        names = _FlagNames()
        points = [Point(ts=r.ts, value=r.value, quality=r.quality, flags=names[r.flags]) for r in page]
        return History(query=query, substation=found, unit=extent.unit, bucket=used, bucket_seconds=None,
                       points=points, truncated=next_start is not None, next_start=next_start)
    # whole 1-minute, 1-hour and 1-day buckets from the rollups, ragged ends and other widths from the readings
    buckets = storage.series_buckets(lo, hi, bucket_s, device_id, metric, substation)
    found = _one_substation({b.substation for b in buckets}, device_id, metric, substation)
    points = [Point(ts=b.bucket_start, min=b.min, max=b.max, avg=b.avg, last=b.last, count=b.count) for b in buckets]
    return History(query=query, substation=found, unit=extent.unit, bucket=used, bucket_seconds=bucket_s,
                   points=points)


def _first(chunks: Iterator[list[Reading]], n: int) -> tuple[list[Reading], bool]:
    """The first ``n`` readings of ``chunks`` (closed after: its connection goes back)."""
    rows: list[Reading] = []
    try:
        for chunk in chunks:
            rows += chunk
            if len(rows) >= n:
                return rows[:n], True
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return rows, False


def _page(rows: list[Reading], limit: int) -> tuple[list[Reading], datetime | None]:
    """At most ``limit`` readings, and where the next page starts (None: no more). A page never ends
    inside one instant's readings (two edges sending the same point): the next page starts at an
    instant none of whose readings were given, so asking again from ``next_start`` repeats none."""
    if len(rows) <= limit:
        return rows, None
    boundary = rows[limit].ts
    page = [r for r in rows[:limit] if r.ts < boundary]
    if not page:  # more than `limit` readings at one instant: `limit` of them, then on after that instant
        return rows[:limit], boundary + _US
    return page, boundary


def _one_substation(found: set[str], device_id: str, metric: str, substation: str | None) -> str | None:
    if len(found) > 1:
        raise QueryError("substation", f"device {device_id!r}, metric {metric!r} has readings in this range from "
                                       f"{len(found)} substations ({', '.join(sorted(found))}): name one")
    return next(iter(found), substation)


class _FlagNames(dict[int, list[str]]):
    """QualityFlag names per flags value, remembered (a few combinations, many readings)."""

    def __missing__(self, flags: int) -> list[str]:
        self[flags] = names = QualityFlag.names(flags)
        return names


def latest(storage: Storage, substations: list[str] | None) -> list[LatestReading]:
    names = _FlagNames()
    return [LatestReading(substation=r.substation, device_id=r.device_id, metric=r.metric, ts=r.ts, value=r.value,
                          unit=r.unit, quality=r.quality, flags=names[r.flags])
            for r in storage.latest_readings(substations)]


def substations(storage: Storage) -> list[SubstationOverview]:
    """Every substation with readings, an edge or an incident not resolved, by name."""
    held = {s.substation: s for s in storage.substation_summaries()}
    edges: dict[str, list[EdgeContact]] = {}
    for e in storage.edge_states():
        edges.setdefault(e.substation, []).append(EdgeContact(edge_id=e.edge_id, last_sync=e.last_sync))
    incidents: dict[str, dict[str, int]] = {}
    for (sub, severity), n in storage.open_incident_counts().items():
        counts = incidents.setdefault(sub, dict.fromkeys(SEVERITIES, 0))
        counts[severity] = counts.get(severity, 0) + n
    out = []
    for name in sorted(held.keys() | edges.keys() | incidents.keys()):
        s = held.get(name)
        contacts = [e.last_sync for e in edges.get(name, []) if e.last_sync is not None]
        out.append(SubstationOverview(
            substation=name, devices=s.devices if s else 0, points=s.points if s else 0,
            readings=s.readings if s else 0, first_reading=s.first_reading if s else None,
            last_reading=s.last_reading if s else None, last_edge_contact=max(contacts, default=None),
            edges=edges.get(name, []), open_incidents=incidents.get(name, dict.fromkeys(SEVERITIES, 0))))
    return out
