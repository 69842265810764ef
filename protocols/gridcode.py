"""Grid-code limit checks, vectorised: the one implementation the edge and the hub both use.

Each point gets a row in a :class:`LimitTable` (warning and critical bands, built once from the
config); :func:`evaluate` then checks a whole array of values with a few numpy comparisons.

- Voltage points (unit V or kV, with a nominal): outside +-``voltage_tolerance_pct`` of nominal is a
  WARNING, outside +-``voltage_critical_pct`` CRITICAL; below is a ``voltage_sag``, above a
  ``voltage_swell``.
- Frequency points (unit Hz): outside [min, max] WARNING, outside the critical band CRITICAL;
  ``under_frequency`` / ``over_frequency``.
- Any point with ``limit_low`` / ``limit_high``: ``limit_low`` / ``limit_high`` events, WARNING.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protocols.config import Limits
from protocols.sources import PointInfo

NONE, WARNING, CRITICAL = 0, 1, 2
SEVERITY_NAMES = {WARNING: "WARNING", CRITICAL: "CRITICAL"}

KIND_VOLTAGE, KIND_FREQUENCY, KIND_OTHER = 0, 1, 2
EVENT_TYPES = {
    KIND_VOLTAGE: ("voltage_sag", "voltage_swell"),
    KIND_FREQUENCY: ("under_frequency", "over_frequency"),
    KIND_OTHER: ("limit_low", "limit_high"),
}

_STANDARD_KV = np.array([0.23, 0.4, 0.415, 3.3, 6.6, 11, 22, 33, 66, 110, 132, 220, 275, 330, 400, 500, 765])


PointSpec = PointInfo  # what the check needs of a point: metric, unit, nominal, explicit limits


def point_kind(spec: PointSpec) -> int:
    unit = spec.unit.strip().lower()
    if unit in {"v", "kv"} and spec.nominal:
        return KIND_VOLTAGE
    if unit == "hz":
        return KIND_FREQUENCY
    return KIND_OTHER


def infer_nominal_voltage(value: float, unit: str = "") -> float | None:
    """The standard system voltage nearest to ``value`` (within 25 %), in the value's own unit."""
    if not np.isfinite(value) or value <= 0:
        return None
    u = unit.strip().lower()
    candidates = _STANDARD_KV * 1000 if u == "v" else _STANDARD_KV
    if u not in {"v", "kv"}:  # unknown unit: kV for small numbers, V for large ones
        candidates = _STANDARD_KV if value < 1000 else _STANDARD_KV * 1000
    ratio = np.abs(np.log(value / candidates))
    i = int(np.argmin(ratio))
    return float(candidates[i]) if ratio[i] < np.log(1.25) else None


@dataclass(frozen=True)
class LimitTable:
    specs: tuple[PointSpec, ...]
    kind: np.ndarray
    low_warn: np.ndarray
    high_warn: np.ndarray
    low_crit: np.ndarray
    high_crit: np.ndarray


def build_table(specs: Sequence[PointSpec], limits: Limits) -> LimitTable:
    n = len(specs)
    kind = np.full(n, KIND_OTHER, dtype=np.int8)
    low_w = np.full(n, -np.inf)
    high_w = np.full(n, np.inf)
    low_c = np.full(n, -np.inf)
    high_c = np.full(n, np.inf)
    tol, crit = limits.voltage_tolerance_pct / 100, limits.voltage_critical_pct / 100
    for i, s in enumerate(specs):
        k = point_kind(s)
        kind[i] = k
        if k == KIND_VOLTAGE:
            assert s.nominal is not None
            low_w[i], high_w[i] = s.nominal * (1 - tol), s.nominal * (1 + tol)
            low_c[i], high_c[i] = s.nominal * (1 - crit), s.nominal * (1 + crit)
        elif k == KIND_FREQUENCY:
            low_w[i], high_w[i] = limits.frequency_min_hz, limits.frequency_max_hz
            low_c[i], high_c[i] = limits.frequency_critical_min_hz, limits.frequency_critical_max_hz
        if s.limit_low is not None:
            low_w[i] = max(low_w[i], s.limit_low)
        if s.limit_high is not None:
            high_w[i] = min(high_w[i], s.limit_high)
    return LimitTable(tuple(specs), kind, low_w, high_w, low_c, high_c)


def evaluate(
    table: LimitTable, values: np.ndarray, rows: np.ndarray | None = None, margin: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Check values against their points' bands.

    ``rows`` maps each value to its row in the table (default: value i is point i). ``margin``
    narrows the warning band by that fraction of its half-width on each side (for hysteresis: a
    violation clears only once the value is back inside the narrowed band). Returns
    (direction: -1 below / 0 inside / +1 above, severity: NONE / WARNING / CRITICAL). NaN is inside.
    """
    v = np.asarray(values, dtype=np.float64)
    if rows is None:
        rows = np.arange(v.size)
    lw, hw = table.low_warn[rows], table.high_warn[rows]
    if margin:
        half = np.where(np.isfinite(hw - lw), (hw - lw) / 2, 0.0)
        lw, hw = lw + margin * half, hw - margin * half
    below, above = v < lw, v > hw
    crit = (v < table.low_crit[rows]) | (v > table.high_crit[rows])
    direction = above.astype(np.int8) - below.astype(np.int8)
    severity = np.where(crit, CRITICAL, np.where(direction != 0, WARNING, NONE)).astype(np.int8)
    return direction, severity


def threshold(table: LimitTable, row: int, direction: int, severity: int) -> float:
    """The limit that was crossed, for event descriptions."""
    if direction < 0:
        return float(table.low_crit[row] if severity == CRITICAL else table.low_warn[row])
    return float(table.high_crit[row] if severity == CRITICAL else table.high_warn[row])


def describe(device_id: str, metric: str, event_type: str, value: float, unit: str, nominal: float | None,
             limit: float) -> str:
    """One human sentence, in the shape of the seed's alerts."""
    label = event_type.replace("_", " ").capitalize()
    u = f" {unit}" if unit else ""
    if nominal:
        dev = (value - nominal) / nominal * 100
        return (f"{label} on {device_id} {metric} ({value:.4g}{u}, {dev:+.1f}% from nominal "
                f"{nominal:g}{u}; limit {limit:.4g}{u})")
    return f"{label} on {device_id} {metric} ({value:.4g}{u}; limit {limit:.4g}{u})"
