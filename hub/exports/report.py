"""``GET /incidents/{id}/report?format=pdf|html&margin_s=1800``: an incident's report, for viewers.

:func:`load_report` gathers what ``export.report`` renders: the incident with its status history
and facts (as ``GET /incidents/{id}`` serves it) and the readings around it, from ``margin_s``
before the condition was first seen to ``margin_s`` after it was last seen: the incident's own
metric of its device, that metric's other phases (``voltage_l1`` brings ``voltage_l2`` and
``voltage_l3``; ``current_unbalance`` the three currents), the metrics its facts name for the
device, and the same metric of up to :data:`MAX_RELATED_DEVICES` devices its facts name (a feeder
to transfer load to, the devices a cyber incident touched). At most :data:`MAX_SERIES` series of
:data:`MAX_READINGS` readings each, from :data:`MAX_LOOKUPS` look-ups. ``sentinel export report
--database`` calls it too.

The PDF is an attachment named after the incident; the HTML is served with a Content-Security-Policy
that lets nothing run or load (the report escapes what it shows; this is a second lock).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from litestar import Response, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import FromPath, QueryParameter

from export.report import ComplianceRow, IncidentReport, Series, incident_report, render_html, render_pdf
from hub.auth import VIEWER
from hub.auth.guards import allow
from hub.compliance.service import en50160_report
from hub.openapi import error
from hub.readings.service import QueryError, UnknownPoint
from hub.storage.base import Incident, IncidentError, Storage
from protocols.reading import sensor_type

__all__ = ["MAX_MARGIN_S", "MAX_READINGS", "MAX_RELATED_DEVICES", "MAX_SERIES", "ROUTES", "load_report",
           "render", "report_file_name"]

MAX_MARGIN_S = 7 * 86400
MAX_RELATED_DEVICES = 4
MAX_SERIES = 8
MAX_LOOKUPS = 16  # (device, metric) pairs asked of storage, found or not
MAX_READINGS = 20_000  # per series, oldest first
MEDIA_TYPES = {"pdf": "application/pdf", "html": "text/html"}  # Litestar adds "; charset=utf-8" to text
HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
_PHASED = re.compile(r"^(?P<base>.+)_(?:l1|l2|l3|unbalance)$")  # current_unbalance: from current_l1..l3


def _series_wanted(incident: Incident) -> Iterator[tuple[str, str]]:
    """(device, metric) pairs to chart, most telling first; not bounded here."""
    device, metric = incident.device_id, incident.metric
    if metric:
        yield device, metric
        m = _PHASED.match(metric)
        if m:
            for phase in ("l1", "l2", "l3"):
                yield device, f"{m.group('base')}_{phase}"
    for m2 in _named(incident.facts, "metric"):
        yield device, m2
    if metric:
        others = [d for d in dict.fromkeys([*_named(incident.facts, "device_id"), *_named(incident.facts, "devices")])
                  if d != device]
        for other in others[:MAX_RELATED_DEVICES]:
            yield other, metric


def _named(facts: Any, key: str) -> list[str]:
    """Every string (or list of strings) under ``key`` anywhere in the facts, in order."""
    out: list[str] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k == key and isinstance(x, str) and x:
                    out.append(x)
                elif k == key and isinstance(x, list):
                    out.extend(s for s in x if isinstance(s, str) and s)
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk({k: v for k, v in facts.items() if k not in ("evidence", "evidence_chain")})
    return out


def load_report(storage: Storage, incident_id: str, margin_s: float = 1800) -> IncidentReport:
    """The report of ``incident_id``: :class:`IncidentError` if there is no such incident."""
    if not 0 <= margin_s <= MAX_MARGIN_S:
        raise ValueError(f"margin: {margin_s:g} s is outside 0 to {MAX_MARGIN_S} s")
    incident = storage.get_incident(incident_id)
    margin = timedelta(seconds=margin_s)
    start = (incident.first_seen or incident.timestamp) - margin
    end = (incident.last_seen or incident.timestamp) + margin
    series: list[Series] = []
    for device, metric in list(dict.fromkeys(_series_wanted(incident)))[:MAX_LOOKUPS]:
        if len(series) >= MAX_SERIES:
            break
        readings = storage.query_readings(device, metric, start, end, limit=MAX_READINGS)
        points = [(r.ts, r.value) for r in readings if r.value is not None
                  and (not incident.substation or r.substation == incident.substation)]
        if points:
            unit = next((r.unit for r in readings if r.unit), "")
            series.append(Series(device_id=device, metric=metric, unit=unit, substation=incident.substation,
                                 points=points))
    return incident_report(incident, series, window=(start, end), compliance=_en50160(storage, incident))


def _en50160(storage: Storage, incident: Incident) -> list[ComplianceRow]:
    """A voltage or frequency incident's device, held to EN 50160 over the week (Monday 00:00 UTC)
    holding the incident (:mod:`hub.compliance`), against the nominal its facts give (else inferred);
    none when it has no such readings."""
    if sensor_type(incident.metric) not in ("voltage", "frequency"):
        return []
    at = incident.timestamp.astimezone(UTC)
    monday = datetime.combine((at - timedelta(days=at.weekday())).date(), datetime.min.time(), UTC)
    nominal = incident.facts.get("nominal") if sensor_type(incident.metric) == "voltage" else None
    try:
        answer = en50160_report(storage, device_id=incident.device_id, substation=incident.substation or None,
                                start=monday, end=monday + timedelta(days=7),
                                nominal=float(nominal) if isinstance(nominal, int | float) and nominal > 0 else None,
                                nominal_frequency_hz=50.0, min_coverage=0.9)
    except (QueryError, UnknownPoint):
        return []
    quantities = [(f"{v.metric} (Un {v.nominal:g} {v.unit})", v.weeks) for v in answer.voltage]
    if answer.frequency is not None:
        quantities.append((f"frequency ({answer.frequency.resolution_s}-s means)", answer.frequency.years))
    return [ComplianceRow(quantity=q, start=w.start, end=w.end, coverage=w.coverage, fraction_within=w.fraction_within,
                          required_fraction=w.required_fraction, outside_limits=w.outside_limits, verdict=w.verdict)
            for q, periods in quantities for w in periods]


def report_file_name(incident_id: str, fmt: str) -> str:
    """``INC-2026-000042.pdf``: the id with anything but letters, digits and ``-_.`` replaced."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', incident_id)}.{fmt}"


def render(report: IncidentReport, fmt: Literal["html", "pdf"]) -> bytes:
    return render_pdf(report) if fmt == "pdf" else render_html(report).encode()


@dataclass
class _ReportOperation(Operation):
    """The answer is a document, not JSON."""

    def __post_init__(self) -> None:
        self.responses = {**(self.responses or {}), "200": OpenAPIResponse(
            description="the report: a PDF (an attachment named after the incident) or a self-contained HTML page",
            content={"application/pdf": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING, format="binary")),
                     "text/html": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))})}


@get("/incidents/{incident_id:str}/report", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="An incident's report, PDF or HTML: timeline, charts of its readings, facts, evidence",
     operation_class=_ReportOperation,
     responses={400: error("`format` is not pdf or html, or `margin_s` is not a whole number of seconds "
                           f"from 0 to {MAX_MARGIN_S}"),
                404: error("no such incident")})
def incident_report_route(
    incident_id: FromPath[str], state: State,
    fmt: Annotated[Literal["pdf", "html"], QueryParameter(name="format", description="pdf (default) or html")] = "pdf",
    margin_s: Annotated[int, QueryParameter(ge=0, le=MAX_MARGIN_S, description=(
        "seconds of readings charted before the condition was first seen and after it was last seen"))] = 1800,
) -> Response[bytes]:
    """The report managers file: the summary, the timeline with its status history (who, when,
    why), charts of the readings involved with the incident's span marked, each fact, the narrative
    and the recommendation, and for a cyber incident its evidence with the hash chain recomputed."""
    storage: Storage = state.storage
    try:
        report = load_report(storage, incident_id, margin_s)
    except IncidentError as exc:
        raise NotFoundException(str(exc)) from exc
    body = render(report, fmt)
    name = report_file_name(report.incident.id, fmt)
    headers = {"Content-Disposition": f'{"attachment" if fmt == "pdf" else "inline"}; filename="{name}"',
               "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}
    if fmt == "html":
        headers["Content-Security-Policy"] = HTML_CSP
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


ROUTES = [incident_report_route]

