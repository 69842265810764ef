"""The template narrator: clear text from the findings' own description, facts and recommendation.

No LLM and no I/O: it is the default narrator and every LLM narrator's fallback. The text opens
with one summary line (how many findings, the worst one), then one block per agent, the agent
with the worst finding first; inside a block the worst findings come first. Each finding is one
alert in the seed's voice (``⚡ MAINTENANCE ALERT (WARNING): Transformer TR-04 at 82% health. ...
RECOMMEND: ...``) and one line of the facts behind it (when, confidence, evidence).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agents.findings import Finding, severity_rank
from agents.narration.base import Narrative
from agents.narration.profiles import AGENT_ORDER, profile_of

__all__ = ["TemplateNarrator", "alert_line", "group_by_agent", "template_text"]


class TemplateNarrator:
    """Narrates findings from templates; never calls an LLM. ``context`` is not used."""

    def narrate(self, findings: Sequence[Finding], context: dict[str, Any] | None = None) -> Narrative:
        t0 = time.perf_counter()
        text = template_text(findings)
        return Narrative(text=text, source="template", elapsed_ms=_ms(t0))


def template_text(findings: Sequence[Finding]) -> str:
    """The template narrative of ``findings`` (see the module)."""
    if not findings:
        return "No findings: every check passed, nothing to report."
    groups = group_by_agent(findings)
    blocks = [_summary(findings, groups)]
    for agent, group in groups:
        p = profile_of(agent)
        worst = group[0].severity
        count = f"{len(group)} finding{'s' if len(group) != 1 else ''}"
        lines = [f"{p.name} ({p.role}): {count}, worst {worst}"]
        for f in group:
            lines.append(alert_line(f))
            if facts := _facts_line(f):
                lines.append(f"   {facts}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def group_by_agent(findings: Sequence[Finding]) -> list[tuple[str, list[Finding]]]:
    """Findings grouped by agent: the group with the worst finding first (ties in the seed's agent
    order), and inside a group the worst first (ties: latest first)."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.agent, []).append(f)
    for group in groups.values():
        group.sort(key=lambda f: (-severity_rank(f.severity), -_epoch(f.timestamp)))

    def order(item: tuple[str, list[Finding]]) -> tuple[int, int, str]:
        agent, group = item
        seed = AGENT_ORDER.index(agent) if agent in AGENT_ORDER else len(AGENT_ORDER)
        return -severity_rank(group[0].severity), seed, agent

    return sorted(groups.items(), key=order)


def alert_line(f: Finding) -> str:
    """One alert in the seed's voice: icon, headline and severity, description, recommendation."""
    p = profile_of(f.agent)
    head = f"{p.icon} {p.headline} ({f.severity}): " if p.headline else f"{p.icon} {f.severity}: "
    text = _sentence(f.description)
    rec = f.recommendation.strip()
    if rec and rec.rstrip(".") not in text:  # the maintenance predictor's description carries it already
        text += f" RECOMMEND: {_sentence(rec)}"
    return head + text


def _summary(findings: Sequence[Finding], groups: list[tuple[str, list[Finding]]]) -> str:
    worst = groups[0][1][0]
    n, k = len(findings), len(groups)
    subs = sorted({f.substation for f in findings if f.substation})
    where = f" at {', '.join(subs)}" if subs else ""
    where_worst = f" ({worst.substation})" if worst.substation and len(subs) > 1 else ""
    line = (f"{n} finding{'s' if n != 1 else ''} from {k} agent{'s' if k != 1 else ''}{where}; worst: "
            f"{worst.severity} {worst.type.replace('_', ' ')} on {worst.device_id}{where_worst}.")
    # several agents at one substation: say so, without claiming a cause the facts do not give
    shared = []
    for sub in subs:
        agents = [a for a, g in groups if any(f.substation == sub for f in g)]
        if len(agents) > 1:
            names = [f"the {profile_of(a).name.removesuffix(' Agent').lower()}" for a in agents]
            shared.append(f"{sub}: findings from {_and(names)}; read them together.")
    return "\n".join([line, *shared])


def _facts_line(f: Finding) -> str:
    parts = []
    if when := _when(f):
        parts.append(when)
    if f.confidence < 1.0:
        parts.append(f"confidence {f.confidence:.0%}")
    facts = f.facts
    if isinstance(facts.get("evidence_count"), int):
        ev = f"evidence: {facts['evidence_count']} log entr{'ies' if facts['evidence_count'] != 1 else 'y'}"
        if isinstance(facts.get("evidence_sha256"), str):
            ev += f", chain sha256 {facts['evidence_sha256'][:12]}…"
        parts.append(ev)
    if isinstance(facts.get("ieee1159_events_total"), int) and facts["ieee1159_events_total"]:
        parts.append(f"IEEE 1159 events: {facts['ieee1159_events_total']}")
    if isinstance(facts.get("method"), str) and f.agent == "demand_forecaster":
        parts.append(f"forecast method: {facts['method']}")
    if isinstance(facts.get("health"), int | float) and "health" not in f.description.lower():
        parts.append(f"health {facts['health']:.0f}%")
    return " · ".join(parts)


def _when(f: Finding) -> str:
    end = _utc(f.timestamp)
    if f.start is None or _utc(f.start) >= end:
        return f"observed {end:%Y-%m-%d %H:%M} UTC"
    start = _utc(f.start)
    if start.date() == end.date():
        return f"observed {start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC"
    return f"observed {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _epoch(t: datetime) -> float:
    return _utc(t).timestamp()


def _sentence(text: str) -> str:
    text = " ".join(text.split())
    return text if not text or text[-1] in ".!?" else text + "."


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)
