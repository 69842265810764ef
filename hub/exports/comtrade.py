"""``GET /export/comtrade``: a COMTRADE record (IEEE C37.111-2013) of the readings around an
incident or in a window, as a zip of ``NAME.cfg``, ``NAME.dat`` and ``NAME.hdr`` (viewers).

- ``?incident=INC-2026-000042[&margin_s=300]``: the incident's device (and substation), from
  ``margin_s`` before its first finding to ``margin_s`` after its last; the trigger is its first
  finding. ``device_id`` (repeatable) adds devices of the same substation.
- ``?substation=S&device_id=D[&device_id=...]&start=ISO&end=ISO``: the window; the trigger is its start.
- ``&format=ascii|binary|binary32`` (default binary, 16-bit), ``&align_ms=``: see :mod:`export.comtrade`.

Bounded, so a request is a short piece of work in a worker thread: a window of at most
:data:`MAX_WINDOW` (an incident's longer than that is cut at its end, and the ``.hdr`` says so),
:data:`MAX_DEVICES` devices, :data:`MAX_CHANNELS` channels and :data:`MAX_READINGS` readings. The
readings are scanned in time slices of at most :data:`SCAN_LIMIT` (of every device), so memory
holds only what the record keeps. :func:`build_export` is the same request without HTTP (the
CLI's ``--database``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Literal

from litestar import Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import QueryParameter

from export.comtrade import ComtradeError, ComtradeRecord, to_comtrade
from hub.auth import VIEWER
from hub.auth.guards import allow
from hub.openapi import error, query_time
from hub.storage.base import IncidentError, Storage
from protocols.reading import Reading

__all__ = ["MAX_CHANNELS", "MAX_DEVICES", "MAX_READINGS", "MAX_WINDOW", "ROUTES", "ComtradeQuery", "ExportError",
           "build_export", "export_comtrade"]

MAX_WINDOW = timedelta(hours=24)
MAX_MARGIN_S = 3600.0
MAX_DEVICES = 32
MAX_CHANNELS = 128
MAX_READINGS = 200_000
MAX_ALIGN_MS = 60_000.0
SCAN_LIMIT = 50_000  # readings per storage read (all devices)
_FIRST_SLICE = timedelta(minutes=10)
_MIN_SLICE = timedelta(seconds=1)
Format = Literal["ascii", "binary", "binary32"]


class ExportError(ValueError):
    """A request that cannot be answered: ``status`` 400 (the ``field`` named is wrong) or 404 (no
    such incident, no readings)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status = field, message, status


@dataclass(frozen=True, slots=True)
class ComtradeQuery:
    """What to export: an incident, or a substation's devices over a window (times in UTC)."""

    incident: str | None = None
    margin_s: float = 300.0  # with incident: seconds either side of it
    substation: str | None = None
    device_ids: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    fmt: str = "binary"
    align_s: float = 0.0
    notes: tuple[str, ...] = ()  # lines for the record's .hdr


def build_export(storage: Storage, query: ComtradeQuery) -> ComtradeRecord:
    """The record ``query`` asks for, read from ``storage`` (blocking). :class:`ExportError` names
    the field at fault (400), or says what is not there (404)."""
    if query.incident is not None:
        return _incident_export(storage, query)
    missing = [name for name, value in (("substation", query.substation), ("device_id", query.device_ids),
                                        ("start", query.start), ("end", query.end)) if not value]
    if missing:
        raise ExportError(missing[0], "required: ask for an incident, or for substation, device_id, start and end "
                                      f"(missing: {', '.join(missing)})")
    assert query.start is not None and query.end is not None and query.substation
    if query.end <= query.start:
        raise ExportError("end", f"{query.end.isoformat()} is not after start ({query.start.isoformat()})")
    if query.end - query.start > MAX_WINDOW:
        raise ExportError("end", f"the window is {_hours(query.end - query.start)}; at most {_hours(MAX_WINDOW)}")
    devices = _devices(query.device_ids)
    notes = (*query.notes, f"Window: {query.start.isoformat()} to {query.end.isoformat()}")
    return _record(storage, query, query.substation, devices, query.start, query.end, query.start, notes, None)


def _incident_export(storage: Storage, query: ComtradeQuery) -> ComtradeRecord:
    assert query.incident is not None
    for name, value in (("start", query.start), ("end", query.end)):
        if value is not None:
            raise ExportError(name, "the incident sets the window: use margin_s")
    margin_s = query.margin_s
    if not 0 <= margin_s <= MAX_MARGIN_S:
        raise ExportError("margin_s", f"{margin_s:g} is not within 0 to {MAX_MARGIN_S:g} s")
    try:
        inc = storage.get_incident(query.incident)
    except IncidentError as exc:
        raise ExportError("incident", str(exc), status=404) from exc
    substation = inc.substation
    if query.substation and query.substation != inc.substation:
        if inc.substation:
            raise ExportError("substation", f"{query.incident} is of {inc.substation}, not {query.substation}")
        substation = query.substation
    devices = _devices(((inc.device_id,) if inc.device_id else ()) + tuple(query.device_ids), inc.id)
    first = inc.first_seen or inc.timestamp
    last = max(first, inc.last_seen or first)
    start, through = first - timedelta(seconds=margin_s), last + timedelta(seconds=margin_s)
    end = through + timedelta(microseconds=1)  # readings_between excludes its end
    notes = [f"Incident {inc.id}: {inc.type}, {inc.severity}, {inc.status}; {inc.device_id} {inc.metric}".rstrip(),
             f"  {inc.description}",
             f"Window: {start.isoformat()} through {through.isoformat()} ({margin_s:g} s either side of the incident)"]
    if end - start > MAX_WINDOW:
        end = start + MAX_WINDOW
        notes.append(f"  cut at {end.isoformat()}: a record spans at most {_hours(MAX_WINDOW)}; the incident "
                     f"lasted until {last.isoformat()}")
    return _record(storage, query, substation, devices, start, end, first, (*query.notes, *notes),
                   f"{inc.id}_{substation or devices[0]}")


def _devices(ids: tuple[str, ...], incident: str | None = None) -> list[str]:
    devices = list(dict.fromkeys(d for d in ids if d))
    if not devices:
        raise ExportError("device_id", f"{incident} names no device: add device_id" if incident else "required")
    if len(devices) > MAX_DEVICES:
        raise ExportError("device_id", f"{len(devices)} devices; at most {MAX_DEVICES}")
    return devices


def _record(storage: Storage, query: ComtradeQuery, substation: str, devices: list[str], start: datetime,
            end: datetime, trigger: datetime, notes: tuple[str, ...] | list[str], name: str | None) -> ComtradeRecord:
    readings = _collect(storage, substation, devices, start, end)
    where = f"{', '.join(devices)}" + (f" at {substation}" if substation else "")
    if not readings:
        raise ExportError("device_id", f"no readings of {where} from {start.isoformat()} to {end.isoformat()}",
                          status=404)
    channels = {(r.device_id, r.metric) for r in readings}
    if len(channels) > MAX_CHANNELS:
        raise ExportError("device_id", f"{where} have {len(channels)} channels in the window; at most {MAX_CHANNELS}: "
                                       "name fewer devices")
    try:
        return to_comtrade(readings, trigger=trigger, fmt=query.fmt, name=name, align_s=query.align_s,
                           notes=list(notes))
    except ComtradeError as exc:
        field_ = {"fmt": "format", "align_s": "align_ms", "substation": "substation"}.get(exc.field, "device_id")
        raise ExportError(field_, str(exc)) from exc


def _collect(storage: Storage, substation: str, devices: list[str], start: datetime, end: datetime) -> list[Reading]:
    """The readings of ``devices`` (of ``substation``, "" = any) with start <= ts < end, read in time
    slices of at most SCAN_LIMIT readings (halved where the hub holds more)."""
    wanted = set(devices)
    out: list[Reading] = []
    t, step = start, _FIRST_SLICE
    while t < end:
        u = min(end, t + step)
        batch = storage.readings_between(t, u, limit=SCAN_LIMIT + 1)
        if len(batch) > SCAN_LIMIT:
            if u - t <= _MIN_SLICE:
                raise ExportError("start", f"the hub holds more than {SCAN_LIMIT} readings within "
                                           f"{_MIN_SLICE.total_seconds():g} s after {t.isoformat()}")
            step = (u - t) / 2
            continue
        out.extend(r for r in batch if r.device_id in wanted and (not substation or r.substation == substation))
        if len(out) > MAX_READINGS:
            raise ExportError("end", f"more than {MAX_READINGS} readings of these devices in the window: "
                                     "narrow it, or name fewer devices")
        t = u
        if len(batch) < SCAN_LIMIT // 4:
            step = min(step * 2, MAX_WINDOW)
    return out


def _hours(d: timedelta) -> str:
    return f"{d.total_seconds() / 3600:g} h"


# -- the route ------------------------------------------------------------------------------------

@dataclass
class _ZipOperation(Operation):
    """The answer is a zip archive, not JSON."""

    def __post_init__(self) -> None:
        self.responses = {**(self.responses or {}), "200": OpenAPIResponse(
            description="a zip archive (attachment) of NAME.cfg, NAME.dat and NAME.hdr: one COMTRADE record "
                        "(IEEE C37.111-2013)",
            content={"application/zip": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format="binary"))})}


@get("/export/comtrade", guards=[allow(VIEWER)], sync_to_thread=True, operation_class=_ZipOperation,
     summary="The readings around an incident, or of devices in a window, as a COMTRADE record (zip: .cfg, .dat, .hdr)",
     responses={400: error("a parameter is malformed, or the request is not one of: an incident (with margin_s, and "
                           "device_id to add devices); substation, device_id, start and end, the window ending after "
                           f"it starts and spanning at most {_hours(MAX_WINDOW)}. At most {MAX_DEVICES} devices, "
                           f"{MAX_CHANNELS} channels and {MAX_READINGS} readings"),
                404: error("no such incident, or no readings of the devices in the window")})
def export_comtrade(
    state: State,
    incident: Annotated[str | None, QueryParameter(
        pattern=r"^INC-[0-9]{1,9}-[0-9]{1,18}$", description="an incident id: its device, around its findings")] = None,
    margin_s: Annotated[float, QueryParameter(ge=0, le=MAX_MARGIN_S, description=(
        "with incident: seconds before its first finding and after its last"))] = 300.0,
    substation: Annotated[str | None, QueryParameter(min_length=1, max_length=128)] = None,
    device_id: Annotated[list[str] | None, QueryParameter(max_items=MAX_DEVICES, description=(
        "a device (repeatable); with incident, devices added to the incident's"))] = None,
    start: Annotated[str | None, QueryParameter(format="date-time",
                                                description="the window's start, with a zone")] = None,
    end: Annotated[str | None, QueryParameter(format="date-time", description="the window's end (excluded)")] = None,
    format: Annotated[Format, QueryParameter(description=(  # noqa: A002  (the parameter's name in the URL)
        "the .dat: ascii, binary (16-bit) or binary32"))] = "binary",
    align_ms: Annotated[float, QueryParameter(ge=0, le=MAX_ALIGN_MS, description=(
        "readings of different channels within this many ms of a sample's first share that sample (default 0: "
        "each reading at its own instant)"))] = 0.0,
) -> Response[bytes]:
    """The record's ``.hdr`` names the incident, the window and, per channel, its readings and
    missing values; :mod:`export.comtrade` has the time base, scaling and missing-value choices."""
    query = ComtradeQuery(incident=incident, margin_s=margin_s, substation=substation,
                          device_ids=tuple(device_id or ()), start=query_time("start", start),
                          end=query_time("end", end), fmt=format, align_s=align_ms / 1000)
    try:
        record = build_export(state.storage, query)
    except ExportError as exc:
        if exc.status == 404:
            raise NotFoundException(str(exc)) from exc
        raise ValidationException(detail="Validation failed for GET /export/comtrade",
                                  extra=[{"key": exc.field, "source": "query", "message": exc.message}]) from exc
    return Response(record.zip(), media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{record.name}.zip"'})


ROUTES = [export_comtrade]
