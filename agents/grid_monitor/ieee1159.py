"""IEEE 1159 classification of RMS voltage variations: sags, swells and interruptions.

Categories after IEEE Std 1159-2019, *Recommended Practice for Monitoring Electric Power Quality*,
Table 2 ("Categories and typical characteristics of power system electromagnetic phenomena"),
rows 2.0 (short-duration rms variations) and 3.0 (long-duration rms variations):

=====  ==========================  ======================  ==================
row    category                    typical duration        typical magnitude
=====  ==========================  ======================  ==================
2.1.1  instantaneous sag           0.5-30 cycles           0.1-0.9 pu
2.1.2  instantaneous swell         0.5-30 cycles           1.1-1.8 pu
2.2.1  momentary interruption      0.5 cycles-3 s          < 0.1 pu
2.2.2  momentary sag               30 cycles-3 s           0.1-0.9 pu
2.2.3  momentary swell             30 cycles-3 s           1.1-1.4 pu
2.3.1  temporary interruption      > 3 s-1 min             < 0.1 pu
2.3.2  temporary sag               > 3 s-1 min             0.1-0.9 pu
2.3.3  temporary swell             > 3 s-1 min             1.1-1.2 pu
3.1    sustained interruption      > 1 min                 0.0 pu
3.2    (sustained) undervoltage    > 1 min                 0.8-0.9 pu
3.3    (sustained) overvoltage     > 1 min                 1.1-1.2 pu
=====  ==========================  ======================  ==================

How the table is applied here:

- Thresholds: a sample is in a sag when it is *below* 0.9 pu, in a swell when *above* 1.1 pu
  (strictly: exactly 0.9 pu or 1.1 pu is neither, as IEC 61000-4-30 5.4 starts a dip when the
  voltage falls below the threshold and a swell when it rises above it). An excursion below
  0.9 pu whose lowest value is below 0.1 pu is an interruption (exactly 0.1 pu is a sag), so
  the events of one series never overlap: one excursion, one event. No hysteresis is applied.
- Durations (see :mod:`agents.grid_monitor.runs`): from the first sample past the threshold to
  the first sample back (k samples every dt last k * dt). The table's ranges meet at their ends;
  the row for "> 3 s" and "> 1 min" puts each shared end in the shorter category, so exactly
  30 cycles is instantaneous, exactly 3 s momentary, exactly 1 min temporary. A sag/swell longer
  than 1 min is a sustained undervoltage/overvoltage whatever its depth (the table's magnitudes
  are typical values, not bounds); an interruption has no instantaneous category (2.2.1 starts
  at 0.5 cycle). Shorter than half a cycle: ``unclassified`` (below what an rms value resolves).
- Cycles are of ``frequency_hz`` (50 Hz by default: 30 cycles = 0.6 s, half a cycle = 10 ms).
- Missing samples (NaN): a NaN neither starts nor extends an event. It ends an event in progress
  (the event then ends at the missing sample and ``closed_by`` is ``missing``), so a gap in the
  data never lengthens an event or joins two into one.

Everything is vectorised: the excursions are runs of a boolean mask found with ``np.diff`` on the
padded mask, their extremes one ``reduceat``; the only Python loop is over the events found.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import numpy as np

from agents.grid_monitor.runs import CLOSED_BY, Runs, find_runs, run_extremes, to_seconds, utc

__all__ = [
    "INTERRUPTION_PU",
    "SAG_PU",
    "SWELL_PU",
    "VoltageEvent",
    "classify_samples",
    "classify_voltage_events",
    "duration_category",
]

SAG_PU = 0.9
SWELL_PU = 1.1
INTERRUPTION_PU = 0.1

CATEGORIES = ("unclassified", "instantaneous", "momentary", "temporary", "sustained")
_UNCLASSIFIED, _INSTANTANEOUS, _MOMENTARY, _TEMPORARY, _SUSTAINED = range(5)

# (type, category) -> (IEEE 1159-2019 Table 2 row, name)
_TABLE = {
    ("sag", _INSTANTANEOUS): ("2.1.1", "instantaneous sag"),
    ("sag", _MOMENTARY): ("2.2.2", "momentary sag"),
    ("sag", _TEMPORARY): ("2.3.2", "temporary sag"),
    ("sag", _SUSTAINED): ("3.2", "sustained undervoltage"),
    ("swell", _INSTANTANEOUS): ("2.1.2", "instantaneous swell"),
    ("swell", _MOMENTARY): ("2.2.3", "momentary swell"),
    ("swell", _TEMPORARY): ("2.3.3", "temporary swell"),
    ("swell", _SUSTAINED): ("3.3", "sustained overvoltage"),
    ("interruption", _MOMENTARY): ("2.2.1", "momentary interruption"),
    ("interruption", _TEMPORARY): ("2.3.1", "temporary interruption"),
    ("interruption", _SUSTAINED): ("3.1", "sustained interruption"),
}


class VoltageEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One sag, swell or interruption of one RMS voltage series.

    ``extreme`` is the retained voltage (the lowest value of a sag or interruption, the highest of
    a swell) in the series' unit, ``extreme_pu`` the same over the nominal. ``ongoing``: the series
    ended inside the event, so ``duration_s`` (and the category) is a lower bound.
    """

    type: str  # sag | swell | interruption
    category: str  # unclassified | instantaneous | momentary | temporary | sustained
    name: str  # e.g. "instantaneous sag", "sustained undervoltage"
    table_row: str  # IEEE 1159-2019 Table 2 row, e.g. "2.1.1"; "" when unclassified
    start: datetime
    end: datetime
    duration_s: float
    duration_cycles: float
    extreme: float
    extreme_pu: float
    nominal: float
    unit: str
    samples: int
    closed_by: str  # recovery | missing | end_of_series
    metric: str = ""

    @property
    def ongoing(self) -> bool:
        return self.closed_by == "end_of_series"

    def facts(self) -> dict[str, Any]:
        """Plain JSON types, for a Finding's facts."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


def duration_category(duration_s: np.ndarray | float, frequency_hz: float = 50.0,
                      interruption: np.ndarray | bool = False) -> np.ndarray:
    """IEEE 1159 duration category codes (indices into ``CATEGORIES``), vectorised.

    Ranges are closed at the top: (.., 0.5 cycle) unclassified, [0.5, 30] cycles instantaneous,
    (30 cycles, 3 s] momentary, (3 s, 60 s] temporary, beyond sustained. An interruption that would
    be instantaneous is momentary (row 2.2.1 spans 0.5 cycle-3 s).
    """
    d = np.round(np.asarray(duration_s, dtype=np.float64), 6)
    half_cycle = round(0.5 / frequency_hz, 9)
    thirty_cycles = round(30.0 / frequency_hz, 9)
    cat = np.select(
        [d < half_cycle, d <= thirty_cycles, d <= 3.0, d <= 60.0],
        [_UNCLASSIFIED, _INSTANTANEOUS, _MOMENTARY, _TEMPORARY],
        _SUSTAINED,
    )
    return np.where(np.asarray(interruption) & (cat == _INSTANTANEOUS), _MOMENTARY, cat).astype(np.int8)


def classify_voltage_events(
    timestamps: Any,
    values: Any,
    nominal: float,
    *,
    unit: str = "",
    metric: str = "",
    frequency_hz: float = 50.0,
) -> list[VoltageEvent]:
    """The sags, swells and interruptions in one RMS voltage series, in time order.

    ``timestamps``: ``datetime64`` (UTC) or epoch seconds, non-decreasing; ``values``: the RMS
    voltage in ``unit`` (NaN = missing); ``nominal``: in the same unit. Thresholds and categories
    per IEEE 1159-2019 Table 2 as the module docstring sets out (sag < 0.9 pu, swell > 1.1 pu,
    interruption < 0.1 pu; instantaneous 0.5-30 cycles, momentary to 3 s, temporary to 1 min,
    then sustained). NaN samples neither start nor extend an event.
    """
    t, t0 = to_seconds(timestamps)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size != t.size:
        raise ValueError(f"{v.size} values for {t.size} timestamps")
    return classify_samples(t, t0, v, nominal, unit=unit, metric=metric, frequency_hz=frequency_hz)[0]


def classify_samples(
    t: np.ndarray, t0: float, v: np.ndarray, nominal: float, *, unit: str = "", metric: str = "",
    frequency_hz: float = 50.0,
) -> tuple[list[VoltageEvent], np.ndarray]:
    """:func:`classify_voltage_events` on times already relative to ``t0`` (epoch seconds); also
    returns the mask of samples inside an interruption (its whole excursion below 0.9 pu)."""
    if not nominal or not np.isfinite(nominal) or nominal <= 0:
        raise ValueError(f"nominal must be a positive number, not {nominal!r}")
    pu = v / nominal
    valid = np.isfinite(pu)
    in_interruption = np.zeros(v.size, dtype=bool)
    events: list[VoltageEvent] = []
    for kind, mask, lowest in (("low", valid & (pu < SAG_PU), True), ("swell", valid & (pu > SWELL_PU), False)):
        runs = find_runs(mask, t, valid)
        if len(runs) == 0:
            continue
        extreme = run_extremes(v, runs, lowest)
        extreme_pu = extreme / nominal
        interrupted = (extreme_pu < INTERRUPTION_PU) if kind == "low" else np.zeros(len(runs), dtype=bool)
        if interrupted.any():
            marks = np.zeros(v.size + 1, dtype=np.int64)
            np.add.at(marks, runs.first[interrupted], 1)
            np.add.at(marks, runs.stop[interrupted], -1)
            in_interruption = np.cumsum(marks[:-1]) > 0
        cats = duration_category(runs.duration_s, frequency_hz, interrupted)
        events += _events(runs, t0, cats, interrupted, extreme, extreme_pu, kind, nominal, unit, metric, frequency_hz)
    events.sort(key=lambda e: e.start)
    return events, in_interruption


def _events(runs: Runs, t0: float, cats: np.ndarray, interrupted: np.ndarray, extreme: np.ndarray,
            extreme_pu: np.ndarray, kind: str, nominal: float, unit: str, metric: str,
            frequency_hz: float) -> list[VoltageEvent]:
    out = []
    for k in range(len(runs)):
        etype = "interruption" if interrupted[k] else ("sag" if kind == "low" else "swell")
        cat = int(cats[k])
        row, name = _TABLE.get((etype, cat), ("", f"unclassified {etype}"))
        duration = float(runs.duration_s[k])
        out.append(VoltageEvent(
            type=etype, category=CATEGORIES[cat], name=name, table_row=row,
            start=utc(t0 + runs.start_s[k]), end=utc(t0 + runs.end_s[k]),
            duration_s=duration, duration_cycles=round(duration * frequency_hz, 3),
            extreme=float(extreme[k]), extreme_pu=float(extreme_pu[k]), nominal=float(nominal), unit=unit,
            samples=int(runs.samples[k]), closed_by=CLOSED_BY[int(runs.closed_by[k])], metric=metric,
        ))
    return out
