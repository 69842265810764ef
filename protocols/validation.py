"""What no instrument and no file system can be handed: the checks every boundary applies.

- **Names that become paths** (model names in the registry): :data:`NAME_PATTERN`, one strict
  pattern (lower-case letters, digits, ``_ . -``, at most 64 characters, starting with a letter or
  digit, no ``..``); :func:`check_name` raises :class:`ValueError` naming what is wrong.
- **Physically possible values**: :func:`physical_range` gives, per metric and unit, the range a
  real measurement can fall in (magnitudes such as voltage and current are never negative,
  frequency lies in (0, 1000) Hz, a power factor within [-1, 1], THD within 0..100 %, temperatures
  within -100..1000 degC, everything finite and within :data:`ABSOLUTE_BOUND`).
- **Possible timestamps**: not more than ``max_future_skew_s`` after the receiver's clock, not
  before ``floor`` (defaults :data:`DEFAULT_MAX_FUTURE_SKEW_S`, :data:`DEFAULT_TIMESTAMP_FLOOR`).

Three ways to apply them, each over a whole batch (numpy masks; the per-reading work is building
the arrays):

- :func:`impossible_readings`: what is wrong, by index and field, for boundaries that refuse
  (``POST /sensors/process`` answers 400, MQTT ingest writes a dead letter);
- :func:`sanitise_readings`: the same readings with the impossible ones kept but marked (quality 0,
  :attr:`QualityFlag.INVALID`, plus :attr:`QualityFlag.CLOCK_UNSYNC` for a timestamp), for edge
  sync, where a refused batch would be resent for ever;
- :func:`possible_events`: which edge events carry a possible value and timestamp (the others are
  stored, never turned into incidents).

A reading without a value (``None``: the device did not answer) is possible; NaN and infinities
are not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal, NamedTuple

import msgspec
import numpy as np

from protocols.reading import QualityFlag, Reading
from protocols.wire import Event

__all__ = [
    "ABSOLUTE_BOUND",
    "DEFAULT_MAX_FUTURE_SKEW_S",
    "DEFAULT_TIMESTAMP_FLOOR",
    "NAME_PATTERN",
    "Impossible",
    "PhysicalRange",
    "check_name",
    "impossible_readings",
    "impossible_values",
    "physical_range",
    "possible_events",
    "sanitise_readings",
]

# -- names that become paths --------------------------------------------------------------------

NAME_PATTERN = r"^(?!.*\.\.)[a-z0-9][a-z0-9_.-]{0,63}\Z"
"""A model (or other registry) name: 1-64 of ``a-z 0-9 _ . -``, first a letter or digit, no ``..``.
``\\Z``, not ``$``: a trailing newline is not allowed either. Usable as ``msgspec.Meta(pattern=...)``."""

_NAME = re.compile(NAME_PATTERN)


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it fits :data:`NAME_PATTERN`; otherwise :class:`ValueError` saying why."""
    if not isinstance(name, str):
        raise ValueError(f"{what} must be a string, not {type(name).__name__}")
    if _NAME.match(name) is None:
        raise ValueError(f"{what} {name[:80]!r} is not allowed: use 1-64 of a-z 0-9 _ . - starting with a letter "
                         "or digit, without '..'")
    return name


# -- physically possible values -----------------------------------------------------------------

ABSOLUTE_BOUND = 1e15
"""No reading of any metric, in any unit, is larger than this in magnitude (an energy counter in Wh
of a large substation stays below 1e13 after decades)."""

DEFAULT_MAX_FUTURE_SKEW_S = 300.0
DEFAULT_TIMESTAMP_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)


def parse_zoned_time(text: str, where: str) -> datetime:
    """An ISO 8601 time that names its zone (config, CLI flags, environment): ValueError naming
    ``where`` otherwise. A time without a zone is refused, never taken as UTC or local."""
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not an ISO 8601 time (2026-03-01T10:00:00Z)") from None
    if t.tzinfo is None:
        raise ValueError(f"{where}: {text!r} has no time zone; add Z or an offset")
    return t


class PhysicalRange(NamedTuple):
    """Where a metric's values can lie, in the reading's own unit; ``*_open``: the bound itself is
    impossible (a frequency of 0 Hz)."""

    quantity: str  # what the message calls it: "voltage", "power factor"
    low: float = -ABSOLUTE_BOUND
    high: float = ABSOLUTE_BOUND
    low_open: bool = False
    high_open: bool = False

    def why(self, value: float, unit: str) -> str:
        """Why ``value`` is not possible: ``-5.0 kV is not a possible voltage (must be >= 0)``."""
        shown = f"{value!r} {unit}".rstrip() if unit else repr(value)
        if not math.isfinite(value):
            rule = "must be a finite number"
        elif value < self.low or (self.low_open and value == self.low):
            rule = f"must be {'>' if self.low_open else '>='} {_bound(self.low, unit)}"
        else:
            rule = f"must be {'<' if self.high_open else '<='} {_bound(self.high, unit)}"
        return f"{shown} is not a possible {self.quantity} ({rule})"


def _bound(x: float, unit: str) -> str:
    return f"{x:g}" if x == 0 or not unit or abs(x) == ABSOLUTE_BOUND else f"{x:g} {unit}"


# unit (lower case) -> factor from the base unit of the family; unknown units get the generic bound
_VOLTAGE_PER_V = {"v": 1.0, "kv": 1e-3, "mv": 1e-6, "": 1.0}  # "mv" read as MV: no substation meter reports mV
_CURRENT_PER_A = {"a": 1.0, "ka": 1e-3, "ma": 1e3, "": 1.0}
_MAX_VOLTAGE_V = 2e6  # the highest transmission voltages are 1.2 MV
_MAX_CURRENT_A = 1e6  # fault currents reach ~100 kA, lightning ~200 kA
_TEMPERATURE = {"degc": (1.0, 0.0), "°c": (1.0, 0.0), "c": (1.0, 0.0), "celsius": (1.0, 0.0), "": (1.0, 0.0),
                "k": (1.0, 273.15), "degf": (1.8, 32.0), "°f": (1.8, 32.0), "f": (1.8, 32.0)}
_ONE_ATMOSPHERE = {"bar": 1.01325, "mbar": 1013.25, "kpa": 101.325, "pa": 101325.0, "mpa": 0.101325,
                   "psi": 14.696, "atm": 1.0}  # gauge pressure is never below -1 atm
_GASES = {"h2", "ch4", "c2h2", "c2h4", "c2h6", "co", "co2", "o2", "n2", "tdcg", "gas", "ppm"}
_SIGNED = {"deviation", "error", "delta", "rocof", "change", "rate", "dc", "battery", "net", "angle", "offset"}


@lru_cache(maxsize=4096)
def physical_range(metric: str, unit: str = "") -> PhysicalRange:
    """The physically possible range of ``metric`` measured in ``unit``.

    Families by the metric's name (``voltage_l1``, ``load_current``, ``thd_voltage``,
    ``oil_temperature``, ``dga_h2`` ...; the names of :mod:`protocols.reading` and
    ``firmware_configs/*.toml``). A metric of no known family, or in a unit the family does not
    know, is only held to being finite and within :data:`ABSOLUTE_BOUND`.
    """
    name = metric.strip().lower()
    tokens = set(name.replace("-", "_").split("_"))
    u = unit.strip().lower().replace(" ", "")
    signed = bool(tokens & _SIGNED)
    if tokens & {"thd", "harmonic", "harmonics", "distortion"}:
        if u not in ("%", ""):
            return PhysicalRange("total harmonic distortion", low=0.0)
        # a voltage's THD stays far below 100 %; a rectifier's current can exceed it
        high = 1000.0 if tokens & {"current", "i"} else 100.0
        return PhysicalRange("total harmonic distortion", low=0.0, high=high)
    if tokens & {"unbalance", "imbalance", "asymmetry"}:
        return PhysicalRange("unbalance", low=0.0)
    if name in ("pf", "cos_phi", "cosphi") or ("power" in tokens and "factor" in tokens):
        one = {"": 1.0, "%": 100.0}.get(u)
        return PhysicalRange("power factor", low=-one, high=one) if one else PhysicalRange("power factor")
    if (("frequency" in tokens or name in ("freq", "f")) and not signed):
        per_hz = {"hz": 1.0, "": 1.0, "khz": 1e-3}.get(u)
        if per_hz is None:
            return PhysicalRange("frequency", low=0.0, low_open=True)
        return PhysicalRange("frequency", low=0.0, high=1000.0 * per_hz, low_open=True, high_open=True)
    if tokens & {"temperature", "temp"} and not signed:
        conv = _TEMPERATURE.get(u)
        if conv is None:
            return PhysicalRange("temperature")
        scale, offset = conv
        return PhysicalRange("temperature", low=round(-100.0 * scale + offset, 6),
                             high=round(1000.0 * scale + offset, 6))
    if "humidity" in tokens:
        return PhysicalRange("humidity", low=0.0, high=100.0 if u in ("%", "%rh", "") else ABSOLUTE_BOUND)
    if "voltage" in tokens and not signed:
        factor = _VOLTAGE_PER_V.get(u)
        return PhysicalRange("voltage", low=0.0, high=_MAX_VOLTAGE_V * factor if factor else ABSOLUTE_BOUND)
    if tokens & {"current", "amps"} and not signed:
        factor = _CURRENT_PER_A.get(u)
        return PhysicalRange("current", low=0.0, high=_MAX_CURRENT_A * factor if factor else ABSOLUTE_BOUND)
    if "power" in tokens and "apparent" in tokens:
        return PhysicalRange("apparent power", low=0.0)
    if "energy" in tokens and tokens & {"import", "export", "imported", "exported", "delivered", "received"}:
        return PhysicalRange("energy count", low=0.0)
    if "vibration" in tokens and not signed:
        return PhysicalRange("vibration", low=0.0)
    if "pressure" in tokens:
        atm = _ONE_ATMOSPHERE.get(u)
        return PhysicalRange("pressure", low=-atm) if atm else PhysicalRange("pressure")
    if name.startswith("dga_") or tokens & _GASES or u == "ppm":
        return PhysicalRange("gas concentration", low=0.0)
    if "moisture" in tokens:
        return PhysicalRange("moisture", low=0.0)
    if "power" in tokens:  # active and reactive power flow both ways
        return PhysicalRange("power")
    return PhysicalRange(f"value of {metric}")


# -- checks over a batch --------------------------------------------------------------------------

Field = Literal["value", "timestamp"]


class Impossible(NamedTuple):
    """Reading (or event) ``index`` has an impossible ``field``; ``message`` says why."""

    index: int
    field: Field
    message: str


def _value_mask(metrics: Sequence[str], units: Sequence[str], values: Sequence[float | None]
                ) -> tuple[np.ndarray, list[PhysicalRange]]:
    """Which values are impossible, and each item's range. One range lookup per distinct
    (metric, unit); the comparisons are numpy's."""
    n = len(values)
    ranges: dict[tuple[str, str], int] = {}
    table: list[PhysicalRange] = []
    which = np.empty(n, dtype=np.int64)
    for i, key in enumerate(zip(metrics, units)):
        j = ranges.get(key)
        if j is None:
            j = ranges[key] = len(table)
            table.append(physical_range(*key))
        which[i] = j
    present = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    v = np.fromiter((0.0 if x is None else x for x in values), dtype=np.float64, count=n)
    lo = np.array([r.low for r in table])[which]
    hi = np.array([r.high for r in table])[which]
    lo_open = np.array([r.low_open for r in table], dtype=bool)[which]
    hi_open = np.array([r.high_open for r in table], dtype=bool)[which]
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | (v < lo) | (v > hi) | (lo_open & (v == lo)) | (hi_open & (v == hi))
    return present & bad, [table[j] for j in which.tolist()]


def _time_mask(stamps: Sequence[datetime], now: datetime | None, max_future_skew_s: float, floor: datetime
               ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(too late, too early, latest allowed, earliest allowed) as epoch seconds."""
    if floor.tzinfo is None:
        raise ValueError(f"timestamp floor {floor.isoformat()} has no time zone")
    if not max_future_skew_s >= 0:
        raise ValueError(f"max_future_skew_s must be >= 0, not {max_future_skew_s}")
    t = np.fromiter((ts.timestamp() for ts in stamps), dtype=np.float64, count=len(stamps))
    latest = (now or datetime.now(UTC)).timestamp() + max_future_skew_s
    earliest = floor.timestamp()
    return t > latest, t < earliest, latest, earliest


def _time_message(ts: datetime, late: bool, latest: float, earliest: float, skew: float) -> str:
    if late:
        clock = datetime.fromtimestamp(latest - skew, UTC).isoformat(timespec="seconds")
        return (f"{ts.isoformat()} is in the future: more than {skew:g} s after the receiver's clock ({clock}); "
                "a device whose clock is not synchronised must flag its readings clock_unsync and be fixed")
    floor = datetime.fromtimestamp(earliest, UTC).isoformat()
    return f"{ts.isoformat()} is before {floor}, the earliest timestamp accepted (a clock that was never set?)"


def impossible_values(readings: Sequence[Reading]) -> np.ndarray:
    """Per reading, whether its value is impossible (a missing value, ``None``, is not)."""
    if not readings:
        return np.zeros(0, dtype=bool)
    return _value_mask([r.metric for r in readings], [r.unit for r in readings], [r.value for r in readings])[0]


def impossible_readings(readings: Sequence[Reading], *, now: datetime | None = None,
                        max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
                        floor: datetime = DEFAULT_TIMESTAMP_FLOOR) -> list[Impossible]:
    """What is impossible in ``readings``, in index order (a reading's value before its timestamp).

    ``now`` defaults to the current time. Empty when every reading is possible.
    """
    if not readings:
        return []
    bad_value, ranges = _value_mask([r.metric for r in readings], [r.unit for r in readings],
                                    [r.value for r in readings])
    late, early, latest, earliest = _time_mask([r.ts for r in readings], now, max_future_skew_s, floor)
    out: list[Impossible] = []
    for i in np.flatnonzero(bad_value | late | early).tolist():
        r = readings[i]
        if bad_value[i]:
            out.append(Impossible(i, "value", ranges[i].why(float(r.value), r.unit)))  # type: ignore[arg-type]
        if late[i] or early[i]:
            out.append(Impossible(i, "timestamp", _time_message(r.ts, bool(late[i]), latest, earliest,
                                                                max_future_skew_s)))
    return out


def sanitise_readings(readings: Sequence[Reading], *, now: datetime | None = None,
                      max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
                      floor: datetime = DEFAULT_TIMESTAMP_FLOOR) -> tuple[list[Reading], int]:
    """The readings, with each impossible one kept as it came but marked: quality 0 and
    :attr:`QualityFlag.INVALID` (plus :attr:`QualityFlag.CLOCK_UNSYNC` when its timestamp is the
    impossible part). Returns (readings, how many were marked); the list is a new one, the
    possible readings the same objects."""
    if not readings:
        return [], 0
    bad_value, _ = _value_mask([r.metric for r in readings], [r.unit for r in readings], [r.value for r in readings])
    late, early, _, _ = _time_mask([r.ts for r in readings], now, max_future_skew_s, floor)
    bad_time = late | early
    hit = np.flatnonzero(bad_value | bad_time)
    if not hit.size:
        return list(readings), 0
    out = list(readings)
    invalid, unsync = int(QualityFlag.INVALID), int(QualityFlag.INVALID | QualityFlag.CLOCK_UNSYNC)
    for i in hit.tolist():
        r = out[i]
        out[i] = msgspec.structs.replace(r, quality=0.0, flags=r.flags | (unsync if bad_time[i] else invalid))
    return out, int(hit.size)


def possible_events(events: Sequence[Event], *, now: datetime | None = None,
                    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S,
                    floor: datetime = DEFAULT_TIMESTAMP_FLOOR) -> list[bool]:
    """Per event: whether its value (if any) and timestamp are possible. An event with an impossible
    one comes from a broken sensor or clock, not from the grid: keep it, raise no incident on it."""
    if not events:
        return []
    bad_value, _ = _value_mask([e.metric for e in events], [e.unit for e in events], [e.value for e in events])
    late, early, _, _ = _time_mask([e.ts for e in events], now, max_future_skew_s, floor)
    return (~(bad_value | late | early)).tolist()
