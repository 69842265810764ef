"""The compliance API's route, for viewers: ``GET /compliance/en50160`` (one device's EN 50160
statistics over a range). The work is :mod:`hub.compliance.service`'s; this maps its errors to 400
and 404."""

from __future__ import annotations

from typing import Annotated

from litestar import get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import QueryParameter

from hub.auth import VIEWER
from hub.auth.guards import allow
from hub.compliance import service
from hub.compliance.schemas import En50160Report
from hub.openapi import error, query_time
from hub.readings.service import QueryError, UnknownPoint

__all__ = ["ROUTES"]

MAX_NAME = 256


def _bad(exc: QueryError) -> ValidationException:
    return ValidationException(detail=str(exc), extra=[{"key": exc.key, "source": "query", "message": exc.message}])


@get("/compliance/en50160", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="EN 50160 statistics of a feeder: weekly voltage, yearly frequency, weekly unbalance",
     responses={400: error("start is not before end (or is in the future with no end), a time has no zone, the "
                           f"range is over {service.MAX_SPAN.days} days, a nominal that is not positive or cannot "
                           "be inferred, min_coverage outside 0..1, or readings from several substations and "
                           "none named"),
                404: error("no voltage, frequency or unbalance reading of the device is held")})
def en50160_compliance(
    state: State,
    device_id: Annotated[str, QueryParameter(description="the device (a feeder: FEEDER-F12)", min_length=1,
                                             max_length=MAX_NAME)],
    substation: Annotated[str | None, QueryParameter(
        description="the substation; needed only when several hold the device's readings", min_length=1,
        max_length=MAX_NAME)] = None,
    start: Annotated[str | None, QueryParameter(
        format="date-time", description="from this time (inclusive; RFC 3339 with a zone); weeks and the year "
                                        "run from here; default: 28 days before end")] = None,
    end: Annotated[str | None, QueryParameter(
        format="date-time", description="to this time (exclusive); default: now")] = None,
    nominal: Annotated[float, QueryParameter(
        ge=0, description="the nominal (declared) supply voltage Un, in the readings' unit; 0 (the default): "
                          "the standard system voltage nearest each voltage's median")] = 0.0,
    nominal_frequency_hz: Annotated[float, QueryParameter(gt=0, le=1000, description="the nominal frequency")] = 50.0,
    min_coverage: Annotated[float, QueryParameter(
        ge=0, le=1, description="the share of a period's intervals that must be measured for a `compliant` "
                                "verdict")] = 0.9,
) -> En50160Report:
    """Per voltage metric (``voltage``, ``voltage_l1..l3``) and week from ``start``: the 10-min means'
    count, coverage, share within Un +-10 % (95 % needed), those outside +10 % / -15 % (none allowed),
    the extremes and a verdict (``compliant``, ``non_compliant``, ``insufficient_data``). Frequency per
    365-day year from ``start``: within +-1 % for 99.5 %, all within +4 % / -6 %, over 10-s means (or
    the readings' own spacing when sparser; ``resolution_s`` says). Unbalance if the device reports
    ``voltage_unbalance``. Guide: ``docs/en50160.md``."""
    try:
        return service.en50160_report(state.storage, device_id=device_id, substation=substation,
                                      start=query_time("start", start), end=query_time("end", end),
                                      nominal=nominal or None,
                                      nominal_frequency_hz=nominal_frequency_hz, min_coverage=min_coverage)
    except QueryError as exc:
        raise _bad(exc) from None
    except UnknownPoint as exc:
        raise NotFoundException(detail=str(exc)) from None


ROUTES = [en50160_compliance]
