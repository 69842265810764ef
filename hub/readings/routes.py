"""The readings API's routes, for viewers: ``GET /readings`` (one point's history, raw or bucketed),
``GET /readings/latest`` (the newest reading of every point) and ``GET /substations`` (an overview
per substation). The work is :mod:`hub.readings.service`'s; this maps its errors to 400 and 404."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import QueryParameter

from hub.auth import VIEWER
from hub.auth.guards import allow
from hub.openapi import error, query_time
from hub.readings import service
from hub.readings.schemas import History, LatestReadings, Substations
from hub.readings.service import (AUTO_POINTS, BUCKET_NAMES, MAX_POINTS, MAX_RAW_LIMIT, MAX_RAW_SPAN, RAW_LIMIT,
                                  QueryError, UnknownPoint)
from hub.storage.base import Storage

__all__ = ["ROUTES"]

MAX_NAME = 256  # characters of a device, metric or substation name asked for
MAX_SUBSTATIONS = 1000  # ?substation= values of /readings/latest


def _bad(exc: QueryError) -> ValidationException:
    return ValidationException(detail=str(exc), extra=[{"key": exc.key, "source": "query", "message": exc.message}])


def _name(what: str) -> QueryParameter:
    return QueryParameter(description=what, min_length=1, max_length=MAX_NAME)


@get("/readings", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="One point's readings over a time range: raw, or min/max/avg/last/count per bucket",
     responses={400: error("an unknown bucket, start is not before end (or is in the future with no end), a time "
                           f"has no zone, raw over more than {MAX_RAW_SPAN.days} days, a named bucket giving more "
                           f"than {MAX_POINTS} points, or the point has readings from several substations in the "
                           "range and none is named"),
                404: error("no reading of the device's metric is held (in the substation named)")})
def readings(
    state: State,
    device_id: Annotated[str, _name("the device (FEEDER-F12, TR-01)")],
    metric: Annotated[str, _name("the metric (voltage_l1, oil_temperature): one point, one line on a chart")],
    substation: Annotated[str | None, _name("the substation; needed only when several hold the device's metric")]
        = None,
    start: Annotated[str | None, QueryParameter(
        format="date-time", description="from this time (inclusive; RFC 3339 with a zone); default: 24 h before "
                                        "end")] = None,
    end: Annotated[str | None, QueryParameter(
        format="date-time", description="to this time (exclusive); default: now")] = None,
    bucket: Annotated[str, QueryParameter(
        enum=list(BUCKET_NAMES),
        description=f"raw readings (at most {MAX_RAW_SPAN.days} days), min/max/avg/last/count per UTC minute, "
                    f"hour or day (at most {MAX_POINTS} buckets), or auto: the shortest bucket giving at most "
                    f"{AUTO_POINTS}")] = "auto",
    limit: Annotated[int, QueryParameter(
        ge=1, le=MAX_RAW_LIMIT, description="raw: at most this many readings (then `truncated`, and "
                                            "`next_start` to ask from); ignored when bucketed")] = RAW_LIMIT,
) -> History:
    """Oldest first. Bucketed: per bucket (aligned on the epoch: UTC minutes, hours, days) the min, max,
    avg, last and count of the readings that have a value and are not flagged invalid; a bucket with
    none is absent. Raw: every reading as stored, with its quality and flags."""
    storage: Storage = state.storage
    try:
        return service.history(storage, device_id=device_id, metric=metric, substation=substation,
                               start=query_time("start", start), end=query_time("end", end), bucket=bucket,
                               limit=limit)
    except QueryError as exc:
        raise _bad(exc) from None
    except UnknownPoint as exc:
        raise NotFoundException(detail=str(exc)) from None


@get("/readings/latest", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="The newest reading of every point (substation, device, metric)")
def latest_readings(
    state: State,
    substation: Annotated[list[str] | None, QueryParameter(
        description="only these substations (repeatable; none: all)", max_items=MAX_SUBSTATIONS)] = None,
) -> LatestReadings:
    """By substation, device and metric, each with its time, value, unit, quality and flags, as stored:
    a point whose device stopped answering shows its newest reading, whose value may be null (its
    flags say why). Reads every reading held: for a dashboard's refresh, not many times a second."""
    return LatestReadings(readings=service.latest(state.storage, substation))


@get("/substations", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="Per substation: devices, points, readings, first and last reading, last edge contact, open incidents")
def substations(state: State) -> Substations:
    """Every substation with readings, an edge, or an incident not yet resolved, by name. Open incidents
    are those OPEN, ACKNOWLEDGED or IN_PROGRESS, counted per severity. Reads every reading held."""
    return Substations(substations=service.substations(state.storage))


ROUTES = [readings, latest_readings, substations]
