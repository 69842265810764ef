"""Grid-code checks of individual readings (``POST /sensors/process``, MQTT ingest) and of the
edge's events (``/edge/sync``): the hub's per-request path. Pure computation.

The seed's bands (voltage within +-5 % of nominal, frequency 49.5-50.5 Hz, configurable) with the
same vectorised check the edge runs (:mod:`protocols.gridcode`), one finding per device and
quantity with its worst reading. Series analysis is :func:`agents.grid_monitor.analyse`.

Nothing impossible becomes a finding: a reading flagged ``INVALID`` (or ``COMM_LOST``: a placeholder)
or with a value no instrument can give (:func:`protocols.validation.physical_range`: -5 kV, -1e308)
is not checked, and an event whose value or timestamp is impossible
(:func:`protocols.validation.possible_events`) is not a finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np

from agents.findings import Finding
from agents.grid_monitor.schema import AGENT
from protocols import gridcode
from protocols.config import Limits
from protocols.reading import QualityFlag, Reading, sensor_type
from protocols.validation import (
    DEFAULT_MAX_FUTURE_SKEW_S,
    DEFAULT_TIMESTAMP_FLOOR,
    impossible_values,
    possible_events,
)
from protocols.wire import Event

__all__ = ["check_readings", "findings_from_events"]


def check_readings(
    readings: Sequence[Reading], nominals: Sequence[float | None], limits: Limits = Limits()
) -> list[Finding]:
    """Check readings against the grid code. ``nominals[i]`` is reading i's nominal, if known.

    Voltage readings without a nominal get the nearest standard system voltage (within 25 %).
    """
    if not readings:
        return []
    specs: list[gridcode.PointSpec] = []
    rows = np.empty(len(readings), dtype=np.int64)
    index: dict[tuple[str, str, float | None], int] = {}
    for i, (r, nom) in enumerate(zip(readings, nominals)):
        unit = r.unit
        if sensor_type(r.metric) == "voltage":
            if nom is None and r.value is not None:
                nom = gridcode.infer_nominal_voltage(r.value, unit)
            if not unit and nom is not None:
                unit = "kV" if nom < 1000 else "V"
        elif sensor_type(r.metric) == "frequency" and not unit:
            unit = "Hz"
        key = (r.metric, unit, nom)
        j = index.get(key)
        if j is None:
            j = index[key] = len(specs)
            specs.append(gridcode.PointSpec(r.metric, unit, nom))
        rows[i] = j
    table = gridcode.build_table(specs, limits)
    values = np.array([np.nan if r.value is None else r.value for r in readings], dtype=np.float64)
    unusable = QualityFlag.INVALID | QualityFlag.COMM_LOST
    flagged = np.fromiter((r.flags & unusable != 0 for r in readings), dtype=bool, count=len(readings))
    values[flagged | impossible_values(readings)] = np.nan  # not a measurement of the grid: never a finding
    direction, severity = gridcode.evaluate(table, values, rows)
    hit = np.flatnonzero(severity > 0)
    worst: dict[tuple[str, str, str], int] = {}
    for i in hit.tolist():
        r = readings[i]
        j = int(rows[i])
        etype = gridcode.EVENT_TYPES[int(table.kind[j])][0 if direction[i] < 0 else 1]
        key = (r.device_id, sensor_type(r.metric), etype)
        k = worst.get(key)
        if k is None or _deviation(table, rows, values, i) > _deviation(table, rows, values, k):
            worst[key] = i
    findings = []
    for (device_id, _, etype), i in worst.items():
        r, j = readings[i], int(rows[i])
        spec = specs[j]
        sev = int(severity[i])
        limit = gridcode.threshold(table, j, int(direction[i]), sev)
        findings.append(Finding(
            agent=AGENT, timestamp=r.ts, type=etype, device_id=device_id, severity=gridcode.SEVERITY_NAMES[sev],
            description=gridcode.describe(device_id, r.metric, etype, float(values[i]), spec.unit, spec.nominal, limit),
            substation=r.substation, metric=r.metric, value=float(values[i]), threshold=limit, nominal=spec.nominal,
            facts={"value": float(values[i]), "unit": spec.unit, "nominal": spec.nominal, "limit": limit,
                   "deviation_pct": None if not spec.nominal else round((float(values[i]) / spec.nominal - 1) * 100, 3)},
            key=condition_key(AGENT, etype, r.substation, device_id, r.metric),
        ))
    return findings


def _deviation(table: gridcode.LimitTable, rows: np.ndarray, values: np.ndarray, i: int) -> float:
    j = int(rows[i])
    lo, hi = table.low_warn[j], table.high_warn[j]
    return float(max(lo - values[i], values[i] - hi))


ANOMALY_AGENT = "anomaly_detector"
_PHASED = {t for pair in (gridcode.EVENT_TYPES[gridcode.KIND_VOLTAGE], gridcode.EVENT_TYPES[gridcode.KIND_FREQUENCY])
           for t in pair}


def condition_key(agent: str, etype: str, substation: str, device_id: str, metric: str) -> str:
    """The ongoing condition a grid-code or edge anomaly finding belongs to. Voltage and frequency
    conditions are per device and quantity (a sag on L1 then L2 is one sag of the feeder), as
    :func:`analyse` keys them; others per device and metric; the edge's anomaly episodes per device
    and metric whatever their type, as the anomaly detector keys them."""
    if agent == ANOMALY_AGENT:  # an episode's type changes as it grows (a step's first alarm is a spike)
        return f"{agent}:episode:{substation}:{device_id}:{metric}"
    what = sensor_type(metric) if etype in _PHASED else metric
    return f"{agent}:{etype}:{substation}:{device_id}:{what}"


def findings_from_events(events: Sequence[Event], *, now: datetime | None = None,
                         max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
                         floor: datetime = DEFAULT_TIMESTAMP_FLOOR) -> list[Finding]:
    """The edge already ran the check: every raised event is a finding as it stands, unless its
    value or timestamp is impossible (a broken sensor or clock: the event is kept, not raised). The
    edge's ``anomaly_*`` events are the anomaly detector's findings."""
    out = []
    possible = possible_events(events, now=now, max_future_skew_s=max_future_skew_s, floor=floor)
    for e, ok in zip(events, possible):
        if e.state != "raised" or not ok:
            continue
        agent = ANOMALY_AGENT if e.type.startswith("anomaly_") else AGENT
        facts = {k: v for k, v in (("value", e.value), ("threshold", e.threshold), ("nominal", e.nominal),
                                   ("unit", e.unit)) if v not in (None, "")}
        out.append(Finding(agent=agent, timestamp=e.ts, type=e.type, device_id=e.device_id, severity=e.severity,
                           description=e.description, substation=e.substation, metric=e.metric, value=e.value,
                           threshold=e.threshold, nominal=e.nominal, facts=facts,
                           key=condition_key(agent, e.type, e.substation, e.device_id, e.metric)))
    return out
