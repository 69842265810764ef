"""Incident reports, HTML and PDF, for the managers who file them.

A report holds one incident as the hub's API serves it (``GET /incidents/{id}``: its summary, status
history, facts, narrative and recommendation) and the readings around it: (timestamp, value) series
per (device, metric). This module takes that plain data and renders it; it reads no storage and
imports none of the hub or the agents (the hub's route and ``sentinel export report`` gather the
data, :func:`incident_report` shapes it).

- :func:`render_html`: one self-contained page (inline CSS, inline SVG charts drawn here, no script
  and no external asset; a Content-Security-Policy forbids them too), printable.
- :func:`render_pdf`: A4 through reportlab's platypus, standard or embedded fonts so its text can be
  extracted (``pdftotext``) and searched.

Both show the summary, the timeline (first seen, each status change with who and why, last seen),
the description, narrative and recommendation, every fact (nested ones flattened to
``phases.L1``-style rows), a chart per device and quantity with the incident's span shaded and its
time marked, and for cyber incidents the chain of evidence: each log entry with its link of the
sha256 hash chain, recomputed here (:func:`check_evidence`) and compared with what the agent recorded.

Everything taken from the data is escaped: a description holding ``<script>`` is shown, never run.
"""

from __future__ import annotations

import hashlib
import html
import io
import math
import re
import statistics
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec

from protocols.incident import Incident

__all__ = ["GENESIS", "ChainLink", "ComplianceRow", "EvidenceCheck", "IncidentReport", "Series",
           "check_evidence", "evidence_chain", "flatten_facts", "incident_report", "render_html", "render_pdf"]

GENESIS = "0" * 64
MAX_FACT_ROWS = 400  # a report stays a report: the rest is counted, not listed
MAX_CHART_POINTS = 800  # per series, after min/max bucketing (spikes survive)
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
EVIDENCE_KEYS = ("evidence", "evidence_chain")  # shown in the evidence section, not among the facts

# The canonical JSON of the cyber sentinel's chain (agents/cyber_sentinel/evidence.py): sorted keys, no
# spaces, msgspec's number forms (1e20, not 1e+20). tests/export/test_report.py holds the two to one result.
_CANONICAL = msgspec.json.Encoder(order="sorted").encode


# -- the data -------------------------------------------------------------------------------------

class Series(msgspec.Struct, frozen=True, kw_only=True):
    """Readings of one metric of one device, oldest first; points without a value are left out."""

    device_id: str
    metric: str
    unit: str = ""
    substation: str = ""
    points: list[tuple[datetime, float]] = msgspec.field(default_factory=list)


class ComplianceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One EN 50160 period (a week; a year for frequency) of one quantity of the incident's device, as
    ``GET /compliance/en50160`` gives it (docs/en50160.md)."""

    quantity: str  # "voltage_l1 (Un 11 kV)"
    start: datetime
    end: datetime
    coverage: float  # share of the period's intervals measured
    fraction_within: float | None  # of the measured intervals, in the band
    required_fraction: float
    outside_limits: int
    verdict: str  # compliant, non_compliant, insufficient_data


class IncidentReport(msgspec.Struct, frozen=True, kw_only=True):
    """What a report shows. ``window_start``/``window_end``: the span the readings were asked for
    (the charts' time axis); ``generated_at``: when the report was made (UTC); ``compliance``: the
    device's EN 50160 statistics over the incident's week (voltage and frequency incidents)."""

    incident: Incident
    series: list[Series] = msgspec.field(default_factory=list)
    window_start: datetime | None = None
    window_end: datetime | None = None
    generated_at: datetime
    compliance: list[ComplianceRow] = msgspec.field(default_factory=list)


def incident_report(incident: Mapping[str, Any] | msgspec.Struct, series: Iterable[Series] = (), *,
                    window: tuple[datetime, datetime] | None = None,
                    generated_at: datetime | None = None, compliance: Iterable[ComplianceRow] = ()) -> IncidentReport:
    """A report from an incident as the API serves it (its JSON as a dict, or the hub's Struct) and
    the series to chart. A malformed incident is a ``ValueError`` naming the field."""
    data = msgspec.to_builtins(incident) if isinstance(incident, msgspec.Struct) else incident
    try:
        inc = msgspec.convert(data, Incident)
    except msgspec.ValidationError as exc:
        raise ValueError(f"incident: {exc}") from None
    start, end = window if window else (None, None)
    return IncidentReport(incident=inc, series=list(series), window_start=start, window_end=end,
                          generated_at=generated_at or datetime.now(UTC), compliance=list(compliance))


# -- the chain of evidence ------------------------------------------------------------------------

def evidence_chain(entries: Sequence[Any]) -> list[str]:
    """The sha256 hash chain over ``entries``: link 0 hashes 64 zeros followed by the canonical JSON
    of entry 0; link ``i`` hashes link ``i-1`` (hex) followed by that of entry ``i``. One hex link
    per entry; the last is the evidence hash."""
    links = []
    link = GENESIS
    for e in entries:
        link = hashlib.sha256(link.encode() + _CANONICAL(e)).hexdigest()
        links.append(link)
    return links


class ChainLink(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the evidence with its link recomputed. ``recorded``: the link the agent recorded
    (``facts["evidence_chain"]``), None where it recorded none; ``matches``: whether the two agree."""

    index: int
    entry: Any
    link: str
    recorded: str | None
    matches: bool | None


class EvidenceCheck(msgspec.Struct, frozen=True, kw_only=True):
    """The evidence of a cyber incident, checked. ``verified``: the recomputed chain ends in the
    recorded ``evidence_sha256`` and agrees with every link recorded in ``evidence_chain`` (where
    the agent recorded them). ``first_mismatch``: the first entry whose link differs from the
    recorded one: where the evidence was altered."""

    links: list[ChainLink]
    recorded_hash: str
    computed_hash: str
    verified: bool
    first_mismatch: int | None
    omitted: int  # entries the agent left out between the first and last halves (not chained)


def check_evidence(facts: Mapping[str, Any]) -> EvidenceCheck | None:
    """Recompute the chain of ``facts["evidence"]`` (None when the incident carries none)."""
    entries = facts.get("evidence")
    if not isinstance(entries, list) or not entries:
        return None
    computed = evidence_chain(entries)
    recorded_chain = facts.get("evidence_chain")
    if not isinstance(recorded_chain, list):
        recorded_chain = []
    links = []
    for i, (e, link) in enumerate(zip(entries, computed, strict=True)):
        recorded = recorded_chain[i] if i < len(recorded_chain) and isinstance(recorded_chain[i], str) else None
        links.append(ChainLink(index=i, entry=e, link=link, recorded=recorded,
                               matches=None if recorded is None else recorded == link))
    recorded_hash = facts.get("evidence_sha256")
    recorded_hash = recorded_hash if isinstance(recorded_hash, str) else ""
    mismatch = next((c.index for c in links if c.matches is False), None)
    omitted = facts.get("evidence_omitted")
    return EvidenceCheck(links=links, recorded_hash=recorded_hash, computed_hash=computed[-1],
                         verified=computed[-1] == recorded_hash and mismatch is None
                         and len(recorded_chain) in (0, len(entries)),
                         first_mismatch=mismatch, omitted=omitted if isinstance(omitted, int) else 0)


# -- text -----------------------------------------------------------------------------------------

def _number(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    return f"{v:.6g}"


def _scalar(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _number(v)
    return str(v)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _inline(d: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_scalar(v)}" for k, v in d.items())


def flatten_facts(facts: Mapping[str, Any], skip: Sequence[str] = EVIDENCE_KEYS,
                  limit: int = MAX_FACT_ROWS) -> list[tuple[str, str]]:
    """Facts as (name, value) rows: nested dicts as ``phases.L1``, lists of values joined, a list of
    records one row each (``episodes[0]``: ``start=..., end=...``); a small record of values on one
    row (``phases``: ``L1=350, L2=315, L3=280``). At most ``limit`` rows; a last row counts the rest."""
    rows: list[tuple[str, str]] = []

    def walk(path: str, v: Any) -> None:
        if _is_scalar(v):
            rows.append((path, _scalar(v)))
        elif isinstance(v, Mapping):
            if not v:
                rows.append((path, "(none)"))
            elif len(v) <= 6 and all(_is_scalar(x) for x in v.values()):
                rows.append((path, _inline(v)))
            else:
                for k, x in v.items():
                    walk(f"{path}.{k}", x)
        elif isinstance(v, list | tuple):
            if not v:
                rows.append((path, "(none)"))
            elif all(_is_scalar(x) for x in v):
                rows.append((path, ", ".join(_scalar(x) for x in v)))
            else:
                for i, x in enumerate(v):
                    if isinstance(x, Mapping) and all(_is_scalar(y) for y in x.values()):
                        rows.append((f"{path}[{i}]", _inline(x)))
                    else:
                        walk(f"{path}[{i}]", x)
        else:
            rows.append((path, str(v)))

    for k, v in facts.items():
        if k not in skip:
            walk(str(k), v)
    if len(rows) > limit:
        rest = len(rows) - limit + 1
        rows = rows[:limit - 1] + [("...", f"{rest} more rows not shown")]
    return rows


def _when(dt: datetime | None) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if dt else "-"


def _value_text(report: IncidentReport) -> str:
    """The incident's figure, with the unit its metric's readings carry (a derived figure, such as
    an unbalance in percent, has none: no unit is guessed)."""
    inc = report.incident
    if inc.value is None:
        return "-"
    unit = next((s.unit for s in report.series if (s.device_id, s.metric) == (inc.device_id, inc.metric)), "")
    return f"{_number(inc.value)} {unit}" if unit else _number(inc.value)


def _summary_rows(report: IncidentReport) -> list[tuple[str, str]]:
    inc = report.incident
    return [
        ("Incident", inc.id), ("Type", inc.type), ("Severity", inc.severity), ("Status", inc.status),
        ("Substation", inc.substation or "-"), ("Device", inc.device_id), ("Metric", inc.metric or "-"),
        ("Value", _value_text(report)), ("First seen", _when(inc.first_seen or inc.timestamp)),
        ("Last seen", _when(inc.last_seen or inc.timestamp)), ("Occurrences", str(inc.occurrences)),
        ("Agent", inc.agent), ("Confidence", "-" if inc.confidence is None else f"{inc.confidence:.0%}"),
        ("Updated", _when(inc.updated_at)),
    ]


def _timeline(inc: Incident) -> list[tuple[datetime, str, str, str]]:
    """(when, what, who, note): the condition's first sighting, each status change, its last sighting."""
    first, last = inc.first_seen or inc.timestamp, inc.last_seen or inc.timestamp
    rows = [(first, 0, "condition first seen", inc.agent, "")]
    rows += [(s.timestamp, 1, f"status {s.status}", s.actor, s.note) for s in inc.history]
    if last != first:
        rows.append((last, 2, f"condition last seen ({inc.occurrences} occurrences)", inc.agent, ""))
    return [(t, what, who, note) for t, _, what, who, note in sorted(rows, key=lambda r: (r[0], r[1]))]


def _entry_text(e: Any) -> str:
    if not isinstance(e, Mapping):
        return _scalar(e) if _is_scalar(e) else _CANONICAL(e).decode()
    first = [k for k in ("ts", "kind", "action", "result") if k in e]
    rest = sorted(k for k in e if k not in first)
    return "  ".join(f"{k}={_scalar(e[k]) if _is_scalar(e[k]) else _CANONICAL(e[k]).decode()}"
                     for k in first + rest)


def _evidence_verdict(check: EvidenceCheck) -> str:
    n = len(check.links)
    if check.verified:
        what = ("the entry below, hashed from 64 zeros, ends" if n == 1
                else f"the {n} entries below, chained from 64 zeros, end")
        return f"The hash chain is verified: {what} in the recorded evidence hash {check.recorded_hash}."
    why = []
    if check.first_mismatch is not None:
        why.append(f"entry #{check.first_mismatch + 1} is the first whose link differs from the one recorded")
    if check.computed_hash != check.recorded_hash:
        why.append(f"the entries hash to {check.computed_hash}, but the recorded evidence hash is "
                   f"{check.recorded_hash or '(none)'}")
    if not why:
        why.append("the recorded chain has a different number of links than there are entries")
    return ("The hash chain does not verify: " + "; ".join(why)
            + ". The evidence, or its record, was altered after the agent wrote it.")


# -- charts: data shaping shared by SVG and PDF ---------------------------------------------------

_PHASE = re.compile(r"^(?P<base>.+)_(?:l1|l2|l3|n|avg)$")
PALETTE = ("#1f5fa8", "#d9480f", "#2b8a3e", "#7048e8", "#c2255c", "#0b7285", "#5c940d", "#862e9c")


class _Chart(msgspec.Struct, frozen=True, kw_only=True):
    """One chart: a device's series of one quantity (the phases of a voltage together)."""

    title: str
    unit: str
    lines: list[tuple[str, list[list[tuple[float, float]]]]]  # label, segments of (epoch s, value)
    x_min: float
    x_max: float
    y_ticks: list[float]
    x_ticks: list[float]
    band: tuple[float, float] | None  # first..last seen
    marker: float | None  # the incident's time
    nominal: float | None


def _family(metric: str) -> str:
    m = _PHASE.match(metric)
    return m.group("base") if m else metric


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering lo..hi (about ``n`` steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw)
    start = math.floor(lo / step) * step
    ticks = [start]
    while ticks[-1] < hi - 1e-9 * step:
        ticks.append(start + len(ticks) * step)
    return [round(t, 12) for t in ticks]


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
               172800, 604800)


def time_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Epoch-second ticks on round UTC times within lo..hi, at most about ``n``."""
    span = max(hi - lo, 1.0)
    step = next((s for s in _TIME_STEPS if span / s <= n), _TIME_STEPS[-1])
    first = math.ceil(lo / step) * step
    return [float(t) for t in range(int(first), int(hi) + 1, step)]


def _time_label(t: float, span: float) -> str:
    dt = datetime.fromtimestamp(t, UTC)
    return dt.strftime("%H:%M:%S" if span < 600 else "%H:%M" if span < 86400 else "%m-%d %H:%M")


def _thin(points: Sequence[tuple[float, float]], budget: int = MAX_CHART_POINTS) -> list[tuple[float, float]]:
    """At most about ``budget`` points: per time bucket its lowest and highest, in time order."""
    if len(points) <= budget:
        return list(points)
    buckets = max(1, budget // 2)
    t0, t1 = points[0][0], points[-1][0]
    width = (t1 - t0) / buckets or 1.0
    out: list[tuple[float, float]] = []
    group: list[tuple[float, float]] = []
    current = 0
    for p in points:
        b = min(buckets - 1, int((p[0] - t0) / width))
        if b != current and group:
            out += sorted({min(group, key=lambda q: q[1]), max(group, key=lambda q: q[1])})
            group = []
        current = b
        group.append(p)
    if group:
        out += sorted({min(group, key=lambda q: q[1]), max(group, key=lambda q: q[1])})
    return out


def _segments(points: Sequence[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """Split where the readings stop for much longer than their usual spacing: a gap is not a line."""
    if len(points) < 3:
        return [list(points)] if points else []
    gaps = [b[0] - a[0] for a, b in zip(points, points[1:], strict=False)]
    limit = 5 * max(statistics.median(gaps), 1e-9)
    segs, seg = [], [points[0]]
    for gap, p in zip(gaps, points[1:], strict=True):
        if gap > limit:
            segs.append(seg)
            seg = []
        seg.append(p)
    segs.append(seg)
    return segs


def _charts(report: IncidentReport) -> list[_Chart]:
    inc = report.incident
    groups: dict[tuple[str, str, str], list[Series]] = {}
    for s in report.series:
        if s.points:
            groups.setdefault((s.device_id, _family(s.metric), s.unit), []).append(s)
    first, last = inc.first_seen or inc.timestamp, inc.last_seen or inc.timestamp
    out = []
    for (device, family, unit), members in groups.items():
        times = [p[0].timestamp() for s in members for p in s.points]
        x_min = report.window_start.timestamp() if report.window_start else min(times)
        x_max = report.window_end.timestamp() if report.window_end else max(times)
        if x_max <= x_min:
            x_min, x_max = x_min - 60, x_max + 60
        lines = []
        values: list[float] = []
        for s in sorted(members, key=lambda s: s.metric):
            pts = [(t.timestamp(), float(v)) for t, v in s.points
                   if math.isfinite(v) and x_min <= t.timestamp() <= x_max]
            pts = _thin(pts)
            values += [v for _, v in pts]
            lines.append((s.metric, _segments(pts)))
        if not values:
            continue
        nominal = inc.facts.get("nominal")
        unit_fact = inc.facts.get("unit")
        if not (isinstance(nominal, int | float) and not isinstance(nominal, bool) and device == inc.device_id
                and (not unit_fact or unit_fact == unit) and family == _family(inc.metric)):
            nominal = None
        lo, hi = min(values), max(values)
        if nominal is not None:
            lo, hi = min(lo, nominal), max(hi, nominal)
        pad = (hi - lo) * 0.04  # the lines clear the frame
        lo, hi = lo - pad, hi + pad
        band = (max(first.timestamp(), x_min), min(last.timestamp(), x_max))
        marker = inc.timestamp.timestamp()
        out.append(_Chart(
            title=f"{device}: {family}" + (f" ({unit})" if unit else ""), unit=unit, lines=lines,
            x_min=x_min, x_max=x_max, y_ticks=nice_ticks(lo, hi), x_ticks=time_ticks(x_min, x_max),
            band=band if band[0] <= band[1] else None, marker=marker if x_min <= marker <= x_max else None,
            nominal=float(nominal) if nominal is not None else None))
    return out


def _no_chart_note(report: IncidentReport) -> str:
    inc = report.incident
    span = (f" between {_when(report.window_start)} and {_when(report.window_end)}"
            if report.window_start and report.window_end else "")
    what = f"{inc.device_id} ({inc.metric})" if inc.metric else inc.device_id
    return f"No readings of {what} or the devices named in its facts were held{span}."


# -- HTML -----------------------------------------------------------------------------------------

_CSS = """
:root { --ink:#1d2430; --muted:#5b6472; --rule:#d5dae1; --band:#f59f00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
       max-width: 980px; margin: 24px auto; padding: 0 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid var(--rule);
     padding-bottom: 4px; }
.sub { color: var(--muted); margin: 0; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: bold; font-size: 12px;
         color: #fff; background: #5b6472; vertical-align: middle; }
.sev-WARNING { background: #e67700; } .sev-CRITICAL { background: #c92a2a; } .sev-EMERGENCY { background: #7d0f0f; }
.sev-INFO { background: #1f5fa8; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 4px 8px; border-bottom: 1px solid var(--rule); }
th { background: #f1f3f5; font-weight: 600; }
table.summary th { width: 18%; background: none; color: var(--muted); font-weight: normal; }
td.k { white-space: nowrap; color: var(--muted); width: 30%; word-break: break-word; white-space: normal; }
.text { white-space: pre-wrap; }
.mono, code { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: 12px; word-break: break-all; }
.ok { color: #2b8a3e; font-weight: bold; } .bad { color: #c92a2a; font-weight: bold; }
.verdict { padding: 8px 12px; border-left: 4px solid; margin: 8px 0; }
.verdict.ok { border-color: #2b8a3e; background: #ebfbee; } .verdict.bad { border-color: #c92a2a; background: #fff5f5; }
figure { margin: 12px 0 20px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-weight: 600; margin-bottom: 4px; }
svg { width: 100%; height: auto; }
svg text { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; }
footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
@page { size: A4; margin: 14mm; }
@media print { body { margin: 0; max-width: none; padding: 0; } h2 { break-after: avoid; }
               tr { break-inside: avoid; } }
"""

_E = html.escape  # quote=True: safe in text and in attribute values


def _svg_chart(chart: _Chart) -> str:
    w, h, left, right, top, bottom = 760, 270, 64, 16, 30, 44
    pw, ph = w - left - right, h - top - bottom
    y_lo, y_hi = chart.y_ticks[0], chart.y_ticks[-1]

    def x(t: float) -> float:
        return left + (t - chart.x_min) / (chart.x_max - chart.x_min) * pw

    def y(v: float) -> float:
        return top + ph - (v - y_lo) / ((y_hi - y_lo) or 1.0) * ph

    span = chart.x_max - chart.x_min
    parts = [f'<svg viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" role="img" '
             f'aria-label="{_E(chart.title)}">',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#adb5bd"/>']
    if chart.band is not None:
        x0, x1 = x(chart.band[0]), x(chart.band[1])
        parts.append(f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 2):.1f}" height="{ph}" '
                     f'fill="#f59f00" fill-opacity="0.18"><title>condition first to last seen</title></rect>')
    for v in chart.y_ticks:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e9ecef"/>'
                     f'<text x="{left - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">'
                     f'{_E(_number(v))}</text>')
    for t in chart.x_ticks:
        parts.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top + ph}" y2="{top + ph + 5}" stroke="#495057"/>'
                     f'<text x="{x(t):.1f}" y="{top + ph + 18}" font-size="11" text-anchor="middle">'
                     f'{_E(_time_label(t, span))}</text>')
    parts.append(f'<text x="{left + pw / 2:.1f}" y="{h - 6}" font-size="11" text-anchor="middle" fill="#5b6472">'
                 f'time (UTC), {_E(datetime.fromtimestamp(chart.x_min, UTC).strftime("%Y-%m-%d"))}</text>')
    parts.append(f'<text transform="translate(14 {top + ph / 2:.1f}) rotate(-90)" font-size="11" '
                 f'text-anchor="middle" fill="#5b6472">{_E(chart.unit or "value")}</text>')
    if chart.nominal is not None:
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(chart.nominal):.1f}" y2="{y(chart.nominal):.1f}" '
                     f'stroke="#495057" stroke-dasharray="6 4"/><text x="{left + pw - 4}" '
                     f'y="{y(chart.nominal) - 4:.1f}" font-size="10" text-anchor="end" fill="#495057">nominal '
                     f'{_E(_number(chart.nominal))}</text>')
    for i, (label, segments) in enumerate(chart.lines):
        color = PALETTE[i % len(PALETTE)]
        for seg in segments:
            pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in seg)
            if len(seg) == 1:
                parts.append(f'<circle cx="{x(seg[0][0]):.1f}" cy="{y(seg[0][1]):.1f}" r="2" fill="{color}"/>')
            else:
                parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.4"/>')
        lx = left + i * 130  # the legend, above the plot
        parts.append(f'<line x1="{lx}" x2="{lx + 18}" y1="{top - 14}" y2="{top - 14}" stroke="{color}" '
                     f'stroke-width="2"/><text x="{lx + 22}" y="{top - 10}" font-size="11">{_E(label)}</text>')
    if chart.marker is not None:
        mx = x(chart.marker)
        parts.append(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{top + ph}" stroke="#c92a2a" '
                     f'stroke-width="1.5" stroke-dasharray="3 3"/><text x="{mx + 4:.1f}" y="{top + ph - 6}" '
                     f'font-size="10" fill="#c92a2a">incident</text>')
    parts.append("</svg>")
    return "".join(parts)


COMPLIANCE_HEADER = ("Quantity", "Period", "Coverage", "Within band", "Outside limits", "Verdict")
COMPLIANCE_NOTE = ("EN 50160: 95 % of each week's 10-min mean voltages within Un +-10 % and all within +10/-15 %; "
                   "frequency within +-1 % for 99.5 % of a year and +4/-6 % always. A period needs 90 % of its "
                   "intervals measured for a compliant verdict (a week cannot show a year's frequency compliance).")


def _compliance_cells(report: IncidentReport) -> list[tuple[str, ...]]:
    return [(c.quantity, f"{_when(c.start)} to {_when(c.end)}", f"{c.coverage:.1%}",
             "-" if c.fraction_within is None else f"{c.fraction_within:.2%} (needs {c.required_fraction:.1%})",
             str(c.outside_limits), c.verdict.replace("_", " ")) for c in report.compliance]


def _rows(cells: Iterable[Sequence[str]], header: Sequence[str] | None = None, cls: str = "") -> str:
    head = ("<tr>" + "".join(f"<th>{_E(c)}</th>" for c in header) + "</tr>") if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_E(c)}</td>" for c in row) + "</tr>" for row in cells)
    return f'<table class="{cls}">{head}{body}</table>'


def render_html(report: IncidentReport) -> str:
    """The report as one self-contained HTML page (nothing loaded from elsewhere, nothing run)."""
    inc = report.incident
    out = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
           "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">",
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>Incident report {_E(inc.id)}</title><style>{_CSS}</style></head><body>",
           f'<header><h1>Incident report {_E(inc.id)} <span class="badge sev-{_E(inc.severity)}">'
           f"{_E(inc.severity)}</span></h1>",
           f'<p class="sub">{_E(inc.type)} on {_E(inc.device_id)}'
           + (f" ({_E(inc.substation)})" if inc.substation else "")
           + f" &middot; {_E(inc.status)} &middot; SmartGrid Sentinel, generated {_E(_when(report.generated_at))}</p>"
           "</header>"]
    summary = _summary_rows(report)
    out.append('<h2>Summary</h2><table class="summary">')
    for i in range(0, len(summary), 2):
        out.append("<tr>" + "".join(f"<th>{_E(k)}</th><td>{_E(v)}</td>" for k, v in summary[i:i + 2]) + "</tr>")
    out.append("</table>")
    out.append(f'<h2>Description</h2><p class="text">{_E(inc.description)}</p>')
    out.append("<h2>Timeline</h2>" + _rows(((_when(t), what, who, note) for t, what, who, note in _timeline(inc)),
                                          ("When", "Event", "Who", "Note")))
    if inc.narrative:
        out.append(f'<h2>Narrative</h2><p class="text">{_E(inc.narrative)}</p>')
    out.append(f'<h2>Recommendation</h2><p class="text">{_E(inc.recommendation or "None given.")}</p>')
    out.append("<h2>Readings</h2>")
    charts = _charts(report)
    if not charts:
        out.append(f"<p>{_E(_no_chart_note(report))}</p>")
    for chart in charts:
        out.append(f"<figure><figcaption>{_E(chart.title)}</figcaption>{_svg_chart(chart)}</figure>")
    if charts:
        out.append('<p class="sub">Shaded: the condition from first to last seen; dashed red line: the incident\'s '
                   "time (its latest evidence).</p>")
    if report.compliance:
        out.append("<h2>EN 50160</h2>" + _rows(_compliance_cells(report), COMPLIANCE_HEADER)
                   + f'<p class="sub">{_E(COMPLIANCE_NOTE)}</p>')
    check = check_evidence(inc.facts)
    facts = flatten_facts(inc.facts, skip=EVIDENCE_KEYS + (("evidence_sha256",) if check else ()))
    out.append("<h2>Facts</h2>")
    out.append('<table class="facts">' + "".join(f'<tr><td class="k">{_E(k)}</td><td>{_E(v)}</td></tr>'
                                                   for k, v in facts) + "</table>"
               if facts else "<p>The agent recorded no facts.</p>")
    if check is not None:
        out.append(_html_evidence(check))
    out.append(f"<footer>SmartGrid Sentinel incident report {_E(inc.id)}, generated "
               f"{_E(_when(report.generated_at))}. Times are UTC.</footer></body></html>")
    return "".join(out)


def _html_evidence(check: EvidenceCheck) -> str:
    cls = "ok" if check.verified else "bad"
    out = ["<h2>Evidence (sha256 hash chain)</h2>", f'<p class="verdict {cls}">{_E(_evidence_verdict(check))}</p>']
    if check.omitted:
        out.append(f"<p>{check.omitted} entries between the first and last halves were left out by the agent; "
                   "the chain covers the entries shown.</p>")
    out.append("<table><tr><th>#</th><th>Entry and its link</th></tr>")
    for c in check.links:
        state = ("" if c.matches is None else
                 ' <span class="ok">matches the recorded link</span>' if c.matches else
                 f' <span class="bad">differs from the recorded link</span> <code>{_E(c.recorded or "")}</code>')
        out.append(f'<tr><td>{c.index + 1}</td><td>{_E(_entry_text(c.entry))}<br>'
                   f'<code>{_E(c.link)}</code>{state}</td></tr>')
    out.append("</table>")
    return "".join(out)


# -- PDF ------------------------------------------------------------------------------------------

class _Fonts(msgspec.Struct, frozen=True):
    regular: str
    bold: str
    mono: str
    unicode: bool  # TrueType fonts: any character; else the standard fonts' WinAnsi set


@lru_cache(maxsize=4)
def _fonts(font_dir: Path = FONT_DIR) -> _Fonts:
    """DejaVu, embedded, where the system has it; else the PDF standard fonts (not embedded; any
    character outside their set is replaced)."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    files = {"SentinelSans": "DejaVuSans.ttf", "SentinelSans-Bold": "DejaVuSans-Bold.ttf",
             "SentinelMono": "DejaVuSansMono.ttf"}
    if all((font_dir / f).is_file() for f in files.values()):
        try:
            for name, f in files.items():
                if name not in pdfmetrics.getRegisteredFontNames():
                    pdfmetrics.registerFont(TTFont(name, str(font_dir / f)))
            return _Fonts("SentinelSans", "SentinelSans-Bold", "SentinelMono", True)
        except Exception:  # noqa: BLE001  (a damaged or unreadable font file: fall back)
            pass
    return _Fonts("Helvetica", "Helvetica-Bold", "Courier", False)


# reportlab keeps per-document state on shared font objects; one PDF at a time is plenty for reports
_PDF_LOCK = threading.Lock()
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _pdf_text(text: str, fonts: _Fonts) -> str:
    """Text reportlab can draw: no control characters, and (standard fonts) only what WinAnsi holds."""
    text = _CONTROL.sub("?", str(text))
    if not fonts.unicode:
        text = text.encode("cp1252", "replace").decode("cp1252")
    return text


def render_pdf(report: IncidentReport, *, font_dir: Path = FONT_DIR) -> bytes:
    """The report as an A4 PDF. ``font_dir``: where DejaVu Sans is looked for (without it, the PDF
    standard fonts: characters outside their set become ``?``)."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_LEFT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    fonts = _fonts(font_dir)
    inc = report.incident

    def para_text(text: str) -> str:
        return _E(_pdf_text(text, fonts), quote=False).replace("\n", "<br/>")

    base = ParagraphStyle("body", fontName=fonts.regular, fontSize=9.5, leading=12.5, alignment=TA_LEFT)
    small = ParagraphStyle("small", parent=base, fontSize=8.5, leading=10.5)
    muted = ParagraphStyle("muted", parent=small, textColor=colors.HexColor("#5b6472"))
    mono = ParagraphStyle("mono", parent=small, fontName=fonts.mono, fontSize=7, leading=9)
    title = ParagraphStyle("title", parent=base, fontName=fonts.bold, fontSize=17, leading=21, spaceAfter=2)
    h2 = ParagraphStyle("h2", parent=base, fontName=fonts.bold, fontSize=12.5, leading=16, spaceBefore=12,
                        spaceAfter=5, textColor=colors.HexColor("#1d2430"), keepWithNext=1)
    bold_small = ParagraphStyle("th", parent=small, fontName=fonts.bold)

    def p(text: str, style: ParagraphStyle = base) -> Paragraph:
        return Paragraph(para_text(text), style)

    width = A4[0] - 36 * mm
    grid = TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("LINEBELOW", (0, 0), (-1, -1), 0.4,
                                                                 colors.HexColor("#d5dae1")),
                       ("LEFTPADDING", (0, 0), (-1, -1), 4), ("RIGHTPADDING", (0, 0), (-1, -1), 4),
                       ("TOPPADDING", (0, 0), (-1, -1), 3), ("BOTTOMPADDING", (0, 0), (-1, -1), 3)])
    header_row = TableStyle([("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#f1f3f5"))])

    story: list[Any] = [p(f"Incident report {inc.id}", title),
                        p(f"{inc.type} on {inc.device_id}" + (f" ({inc.substation})" if inc.substation else "")
                          + f", {inc.severity}, {inc.status}. SmartGrid Sentinel, generated "
                          + _when(report.generated_at) + ".", muted), Spacer(1, 6)]

    summary = _summary_rows(report)
    cells = []
    for i in range(0, len(summary), 2):
        row: list[Any] = []
        for k, v in summary[i:i + 2]:
            row += [p(k, muted), p(v, small)]
        cells.append(row + [""] * (4 - len(row)))
    table = Table(cells, colWidths=[0.15 * width, 0.35 * width, 0.15 * width, 0.35 * width])
    table.setStyle(grid)
    severity_color = {"INFO": "#d0ebff", "WARNING": "#ffe8cc", "CRITICAL": "#ffc9c9", "EMERGENCY": "#ff8787"}
    table.setStyle(TableStyle([("BACKGROUND", (1, 1), (1, 1),
                                colors.HexColor(severity_color.get(inc.severity, "#f1f3f5")))]))
    story += [p("Summary", h2), table]

    story += [p("Description", h2), p(inc.description)]

    rows: list[list[Any]] = [[p(h, bold_small) for h in ("When", "Event", "Who", "Note")]]
    rows += [[p(_when(t), small), p(what, small), p(who, small), p(note or "", small)]
             for t, what, who, note in _timeline(inc)]
    timeline = Table(rows, colWidths=[0.24 * width, 0.26 * width, 0.2 * width, 0.3 * width], repeatRows=1)
    timeline.setStyle(grid)
    timeline.setStyle(header_row)
    story += [p("Timeline", h2), timeline]

    if inc.narrative:
        story += [p("Narrative", h2), p(inc.narrative)]
    story += [p("Recommendation", h2), p(inc.recommendation or "None given.")]

    story.append(p("Readings", h2))
    charts = _charts(report)
    if not charts:
        story.append(p(_no_chart_note(report), small))
    for chart in charts:
        story.append(KeepTogether([p(chart.title, bold_small), _pdf_chart(chart, width, fonts)]))
    if charts:
        story.append(p("Shaded: the condition from first to last seen; dashed red line: the incident's time "
                       "(its latest evidence).", muted))
    if report.compliance:
        en = Table([[p(h, bold_small) for h in COMPLIANCE_HEADER]]
                   + [[p(c, small) for c in row] for row in _compliance_cells(report)],
                   colWidths=[w * width for w in (0.19, 0.25, 0.12, 0.2, 0.11, 0.13)], repeatRows=1)
        en.setStyle(grid)
        en.setStyle(header_row)
        story += [p("EN 50160", h2), en, p(COMPLIANCE_NOTE, muted)]

    check = check_evidence(inc.facts)
    facts = flatten_facts(inc.facts, skip=EVIDENCE_KEYS + (("evidence_sha256",) if check else ()))
    story.append(p("Facts", h2))
    if facts:
        ft = Table([[p(k, muted), p(v, small)] for k, v in facts], colWidths=[0.32 * width, 0.68 * width])
        ft.setStyle(grid)
        story.append(ft)
    else:
        story.append(p("The agent recorded no facts.", small))

    if check is not None:
        story += [p("Evidence (sha256 hash chain)", h2)]
        verdict = ParagraphStyle("verdict", parent=base, fontName=fonts.bold, borderPadding=5,
                                 backColor=colors.HexColor("#ebfbee" if check.verified else "#fff5f5"),
                                 textColor=colors.HexColor("#1b5e20" if check.verified else "#a51111"))
        story += [p(_evidence_verdict(check), verdict), Spacer(1, 8)]
        if check.omitted:
            story.append(p(f"{check.omitted} entries between the first and last halves were left out by the agent; "
                           "the chain covers the entries shown.", small))
        erows: list[list[Any]] = [[p("#", bold_small), p("Entry and its link", bold_small)]]
        for c in check.links:
            state = ("" if c.matches is None else "  matches the recorded link" if c.matches
                     else f"  DIFFERS from the recorded link {c.recorded}")
            erows.append([p(str(c.index + 1), small), [p(_entry_text(c.entry), small), p(c.link, mono)]
                          + ([p(state.strip(), small)] if state else [])])
        et = Table(erows, colWidths=[0.06 * width, 0.94 * width], repeatRows=1)
        et.setStyle(grid)
        et.setStyle(header_row)
        story.append(et)

    footer = _pdf_text(f"SmartGrid Sentinel incident report {inc.id}, generated {_when(report.generated_at)}", fonts)

    def on_page(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(fonts.regular, 7.5)
        canvas.setFillColor(colors.HexColor("#5b6472"))
        canvas.drawString(18 * mm, 10 * mm, footer)
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"page {doc.page}")
        canvas.restoreState()

    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                            bottomMargin=18 * mm, title=_pdf_text(f"Incident report {inc.id}", fonts),
                            author="SmartGrid Sentinel", subject=_pdf_text(f"{inc.type} on {inc.device_id}", fonts),
                            creator="SmartGrid Sentinel export.report")
    with _PDF_LOCK:
        doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    return buf.getvalue()


def _pdf_chart(chart: _Chart, width: float, fonts: _Fonts) -> Any:
    from reportlab.graphics.charts.lineplots import LinePlot
    from reportlab.graphics.shapes import Drawing, Group, Line, Rect, String
    from reportlab.lib import colors

    h = 175.0
    d = Drawing(width, h)
    lp = LinePlot()
    lp.x, lp.y, lp.width, lp.height = 46, 30, width - 56, h - 48
    data: list[list[tuple[float, float]]] = []
    line_colors = []
    for i, (_, segments) in enumerate(chart.lines):
        for seg in segments:
            data.append(seg if len(seg) > 1 else seg * 2)
            line_colors.append(colors.HexColor(PALETTE[i % len(PALETTE)]))
    lp.data = data
    for k, c in enumerate(line_colors):
        lp.lines[k].strokeColor = c
        lp.lines[k].strokeWidth = 1.1
    span = chart.x_max - chart.x_min
    lp.xValueAxis.valueMin, lp.xValueAxis.valueMax = chart.x_min, chart.x_max
    lp.xValueAxis.valueSteps = chart.x_ticks or [chart.x_min, chart.x_max]
    lp.xValueAxis.labelTextFormat = _fixed(lambda t: _time_label(t, span))
    lp.yValueAxis.valueMin, lp.yValueAxis.valueMax = chart.y_ticks[0], chart.y_ticks[-1]
    lp.yValueAxis.valueSteps = chart.y_ticks
    lp.yValueAxis.labelTextFormat = _fixed(_number)
    lp.yValueAxis.visibleGrid = 1
    lp.yValueAxis.gridStrokeColor = colors.HexColor("#e9ecef")
    for axis in (lp.xValueAxis, lp.yValueAxis):
        axis.labels.fontName, axis.labels.fontSize = fonts.regular, 7

    def x(t: float) -> float:
        return lp.x + (t - chart.x_min) / (chart.x_max - chart.x_min) * lp.width

    def y(v: float) -> float:
        lo, hi = chart.y_ticks[0], chart.y_ticks[-1]
        return lp.y + (v - lo) / ((hi - lo) or 1.0) * lp.height

    if chart.band is not None:
        x0, x1 = x(chart.band[0]), x(chart.band[1])
        d.add(Rect(x0, lp.y, max(x1 - x0, 1.5), lp.height, fillColor=colors.Color(0.96, 0.62, 0.0, alpha=0.2),
                   strokeColor=None))
    d.add(lp)
    if chart.nominal is not None:
        d.add(Line(lp.x, y(chart.nominal), lp.x + lp.width, y(chart.nominal), strokeColor=colors.HexColor("#495057"),
                   strokeDashArray=[4, 3], strokeWidth=0.7))
        d.add(String(lp.x + lp.width - 2, y(chart.nominal) + 2, _pdf_text(f"nominal {_number(chart.nominal)}", fonts),
                     fontName=fonts.regular, fontSize=6.5, textAnchor="end", fillColor=colors.HexColor("#495057")))
    if chart.marker is not None:
        mx = x(chart.marker)
        d.add(Line(mx, lp.y, mx, lp.y + lp.height, strokeColor=colors.HexColor("#c92a2a"), strokeDashArray=[2, 2],
                   strokeWidth=1))
        d.add(String(mx + 2, lp.y + 3, "incident", fontName=fonts.regular, fontSize=6.5,
                     fillColor=colors.HexColor("#c92a2a")))
    for i, (label, _) in enumerate(chart.lines):
        lx = lp.x + 6 + i * 95
        d.add(Line(lx, h - 9, lx + 14, h - 9, strokeColor=colors.HexColor(PALETTE[i % len(PALETTE)]), strokeWidth=2))
        d.add(String(lx + 17, h - 11.5, _pdf_text(label, fonts), fontName=fonts.regular, fontSize=7))
    d.add(String(lp.x + lp.width / 2, 4, _pdf_text(
        f"time (UTC), {datetime.fromtimestamp(chart.x_min, UTC):%Y-%m-%d}", fonts),
        fontName=fonts.regular, fontSize=7, textAnchor="middle", fillColor=colors.HexColor("#5b6472")))
    unit = Group(String(0, 0, _pdf_text(chart.unit or "value", fonts), fontName=fonts.regular, fontSize=7,
                        textAnchor="middle", fillColor=colors.HexColor("#5b6472")))
    unit.transform = (0, 1, -1, 0, 12, lp.y + lp.height / 2)  # turned 90 degrees, up the y axis
    d.add(unit)
    return d


def _fixed(fn: Callable[[float], str]) -> Callable[[float], str]:
    """reportlab calls an axis' labelTextFormat with each tick value."""
    return lambda v: fn(float(v))
