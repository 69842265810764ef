"""Scenario scoring: how well alarms caught the anomalies a scenario injected. Pure computation.

The simulator knows the truth (:meth:`simulator.runner.Simulation.truth`: which anomaly was active
on which point, from when to when, in scenario seconds); whoever ran the system under test hands in
its alarms (raised events or incidents: time, device, metric, type), also in scenario seconds.

- An injected anomaly is **detected** when an alarm on one of its points (same device and metric)
  falls in [start, end + grace]. Its **delay** is the first such alarm's time minus the start; an
  anomaly first caught after its end (a drift noticed only as it snaps back) says so.
- An alarm that falls in no anomaly's [start, end + grace] on its point is a **false alarm**; false
  alarms per hour are counted over the scenario time observed.

Alarms are episodes (the edge raises one event per device and metric per episode), so counting
them counts episodes, not readings.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

__all__ = ["Alarm", "AnomalyScore", "Scoreboard", "TruthSpan", "format_scoreboard", "score_alarms"]

DEFAULT_GRACE_S = 60.0


class TruthSpan(msgspec.Struct, frozen=True, kw_only=True):
    """One anomaly active on one point over [start_s, end_s] (scenario seconds)."""

    anomaly: int
    type: str
    device_id: str
    metric: str
    start_s: float
    end_s: float
    label: str = ""  # e.g. "step 5 % of nominal": what the scoreboard prints


class Alarm(msgspec.Struct, frozen=True, kw_only=True):
    t_s: float  # scenario seconds
    device_id: str
    metric: str
    type: str  # e.g. anomaly_step, voltage_sag
    severity: str = ""


class AnomalyScore(msgspec.Struct, frozen=True, kw_only=True):
    anomaly: int
    type: str
    device_id: str
    label: str
    start_s: float
    end_s: float
    detected: bool
    delay_s: float | None  # first alarm's time minus the start; None if missed
    alarm_type: str | None  # what caught it first
    alarms: int  # alarms that fell on it
    after_end: bool = False  # caught only in the grace period after it ended (e.g. as it snapped back)


class Scoreboard(msgspec.Struct, frozen=True, kw_only=True):
    anomalies: list[AnomalyScore]
    false_alarms: int
    observed_s: float
    false_alarms_per_hour: float
    false_alarm_types: dict[str, int]
    false_alarm_list: list[Alarm] = []

    @property
    def false_alarm_points(self) -> dict[str, int]:
        """False alarms per ``device metric``, most first."""
        counts: dict[str, int] = {}
        for a in self.false_alarm_list:
            key = f"{a.device_id} {a.metric}".rstrip()
            counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def detected(self) -> int:
        return sum(a.detected for a in self.anomalies)


def score_alarms(
    truth: Sequence[TruthSpan], alarms: Sequence[Alarm], observed_s: float, grace_s: float = DEFAULT_GRACE_S
) -> Scoreboard:
    """Match alarms to injected anomalies; see the module docstring for the rules."""
    if observed_s <= 0:
        raise ValueError(f"observed_s must be positive, not {observed_s}")
    t = np.array([a.t_s for a in alarms], dtype=np.float64)
    point = [(a.device_id, a.metric) for a in alarms]
    matched = np.zeros(len(alarms), dtype=bool)
    by_point: dict[tuple[str, str], np.ndarray] = {}
    for key in set(point):
        by_point[key] = np.flatnonzero([p == key for p in point])

    first: dict[int, tuple[float, str]] = {}
    hits: dict[int, int] = {}
    spans: dict[int, list[TruthSpan]] = {}
    for span in truth:
        spans.setdefault(span.anomaly, []).append(span)
        idx = by_point.get((span.device_id, span.metric))
        if idx is None or not len(idx):
            continue
        inside = idx[(t[idx] >= span.start_s) & (t[idx] <= span.end_s + grace_s)]
        if not len(inside):
            continue
        matched[inside] = True
        hits[span.anomaly] = hits.get(span.anomaly, 0) + len(inside)
        k = inside[np.argmin(t[inside])]
        if span.anomaly not in first or t[k] < first[span.anomaly][0]:
            first[span.anomaly] = (float(t[k]), alarms[k].type)

    scores = []
    for anomaly, group in sorted(spans.items()):
        s0 = min(s.start_s for s in group)
        got = first.get(anomaly)
        scores.append(AnomalyScore(
            anomaly=anomaly, type=group[0].type, device_id=group[0].device_id, label=group[0].label,
            start_s=s0, end_s=max(s.end_s for s in group), detected=got is not None,
            delay_s=None if got is None else max(0.0, got[0] - s0), alarm_type=None if got is None else got[1],
            alarms=hits.get(anomaly, 0), after_end=got is not None and got[0] > max(s.end_s for s in group),
        ))
    false_types: dict[str, int] = {}
    false_list = [alarms[i] for i in np.flatnonzero(~matched).tolist()]
    for a in false_list:
        false_types[a.type] = false_types.get(a.type, 0) + 1
    return Scoreboard(anomalies=scores, false_alarms=len(false_list), observed_s=float(observed_s),
                      false_alarms_per_hour=len(false_list) * 3600.0 / observed_s, false_alarm_types=false_types,
                      false_alarm_list=sorted(false_list, key=lambda a: a.t_s))


def format_scoreboard(board: Scoreboard) -> str:
    """The scoreboard as a text table: one row per injected anomaly, then the false alarms."""
    rows = [("#", "anomaly", "device", "window (s)", "detected", "delay (s)", "caught by")]
    for a in board.anomalies:
        rows.append((str(a.anomaly), a.label or a.type, a.device_id, f"{a.start_s:g}-{a.end_s:g}",
                     ("yes, after its end" if a.after_end else "yes") if a.detected else "NO",
                     "-" if a.delay_s is None else f"{a.delay_s:.1f}",
                     a.alarm_type or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n = len(board.anomalies)
    lines.append(f"detected {board.detected} of {n} injected anomalies")
    what = ", ".join(f"{k} {v}" for k, v in sorted(board.false_alarm_types.items()))
    lines.append(f"false alarms: {board.false_alarms} in {board.observed_s / 3600:.2f} h of scenario time "
                 f"({board.false_alarms_per_hour:.2f} per hour)" + (f": {what}" if what else ""))
    points = list(board.false_alarm_points.items())
    if points:
        shown = ", ".join(f"{k} {v}" for k, v in points[:8])
        lines.append(f"false alarms by point: {shown}" + (f" and {len(points) - 8} more" if len(points) > 8 else ""))
    return "\n".join(lines)
