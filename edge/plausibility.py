"""Is a commissioning reading plausible for its point? (``sentinel edge check``)

A value can be *possible* (:func:`protocols.validation.physical_range`: a voltage is never negative)
and still not what a correctly configured point reads: a voltage 1,000 times its nominal (the device
reports V, the point says kV), an active power no feeder carries, a nominal ten times the values
(110 kV on an 11 kV feeder), a float whose word order turns 18.93 MW into 5.8e35 MW. :func:`assess`
says which, and what to change. The rules are one table, :data:`RULES`, by quantity family:

- ``units``: the units the family knows, as factors to its base unit (kV -> 1000 V);
- ``typical``: the range in base units a real substation measurement falls in (beyond it: suspect);
- ``band``: the range of ``|value| / nominal`` a healthy point reads in (beyond it: suspect), with
  values below ``dead`` of nominal taken as de-energised (a plausible zero, not a mistake).

A non-zero reading below 1e-6 in the point's own unit (1 W in MW, 1 mV in kV) is suspect too: it
is what a float read with the wrong word order often gives, and no substation measures it.

Levels: ``ok``; ``suspect`` (a warning with the likely fix: the check still counts the point as
read); ``impossible`` (physically impossible: the check fails the point).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

from protocols.validation import physical_range

__all__ = ["RULES", "Rule", "Verdict", "assess", "rule_for"]

Level = Literal["ok", "suspect", "impossible"]


@dataclass(frozen=True, slots=True)
class Rule:
    family: str  # what messages call it
    tokens: frozenset[str]  # a metric name with one of these tokens belongs to the family
    units: dict[str, float]  # unit (lower case, no spaces) -> factor to the base unit
    typical: tuple[float, float]  # |value| in base units a real measurement falls in
    band: tuple[float, float]  # |value| / nominal of a healthy point
    dead: float = 0.0  # |value| / nominal below which the point is taken as de-energised
    exclude: frozenset[str] = frozenset()  # tokens that put a metric in another family


RULES: tuple[Rule, ...] = (
    Rule("power factor", frozenset({"pf", "cosphi", "powerfactor"}), {"": 1.0, "%": 0.01}, (0.0, 1.0), (0.0, 1.5)),
    Rule("frequency", frozenset({"frequency", "freq"}), {"hz": 1.0, "khz": 1e3}, (40.0, 70.0), (0.9, 1.1),
         dead=0.05, exclude=frozenset({"deviation", "rocof", "error", "delta"})),
    Rule("voltage", frozenset({"voltage"}), {"v": 1.0, "kv": 1e3, "mv": 1e6}, (0.0, 1.2e6), (0.5, 1.5),
         dead=0.05, exclude=frozenset({"thd", "unbalance", "deviation", "angle", "harmonic"})),
    Rule("current", frozenset({"current", "amps"}), {"a": 1.0, "ka": 1e3}, (0.0, 1e5), (0.0, 3.0),
         exclude=frozenset({"thd", "unbalance", "harmonic", "angle"})),
    Rule("apparent power", frozenset({"apparent"}), {"va": 1.0, "kva": 1e3, "mva": 1e6, "gva": 1e9},
         (0.0, 2e9), (0.0, 3.0)),
    Rule("reactive power", frozenset({"reactive"}), {"var": 1.0, "kvar": 1e3, "mvar": 1e6, "gvar": 1e9},
         (0.0, 2e9), (0.0, 3.0)),
    Rule("active power", frozenset({"power", "active"}), {"w": 1.0, "kw": 1e3, "mw": 1e6, "gw": 1e9},
         (0.0, 2e9), (0.0, 3.0), exclude=frozenset({"factor", "apparent", "reactive"})),
    Rule("temperature", frozenset({"temperature", "temp"}), {"degc": 1.0, "°c": 1.0, "c": 1.0, "celsius": 1.0},
         (-60.0, 250.0), (0.0, math.inf), exclude=frozenset({"delta", "rate", "rise"})),
)
"""One row per quantity family; the first row a metric matches is its rule."""

_TINY = 1e-6  # a non-zero reading this close to zero (1 W in MW, 1 mV in kV) is a word/byte order mistake


class Verdict(NamedTuple):
    level: Level
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.level == "ok"


OK = Verdict("ok")


def rule_for(metric: str, unit: str) -> tuple[Rule, float] | None:
    """The rule of ``metric`` and the factor of ``unit`` to the rule's base unit; None when no rule
    knows the metric in that unit (nothing is then said about it beyond physical possibility)."""
    name = metric.strip().lower()
    tokens = set(name.replace("-", "_").split("_")) | {name.replace("_", "")}
    u = unit.strip().lower().replace(" ", "")
    for rule in RULES:
        if tokens & rule.tokens and not tokens & rule.exclude:
            factor = rule.units.get(u)
            return None if factor is None else (rule, factor)
    return None


def _show(value: float, unit: str) -> str:
    return f"{value:.4g} {unit}".strip()


def _decade(ratio: float) -> int:
    """k if ``ratio`` is 10**k to within a factor of about 1.6 (k != 0), else 0."""
    if ratio <= 0 or not math.isfinite(ratio):
        return 0
    lg = math.log10(ratio)
    k = round(lg)
    return int(k) if abs(lg - k) < 0.2 else 0


def _unit_for(rule: Rule, factor: float, k: int) -> str:
    """The unit of ``rule`` whose factor is ``factor / 10**k`` (kV and k=3 -> V), or ''."""
    want = factor / 10.0 ** k
    for name, f in rule.units.items():
        if name and math.isclose(f, want, rel_tol=1e-9):
            return {"kv": "kV", "mv": "MV", "ka": "kA", "kw": "kW", "mw": "MW", "gw": "GW", "va": "VA",
                    "kva": "kVA", "mva": "MVA", "gva": "GVA", "var": "var", "kvar": "kvar", "mvar": "Mvar",
                    "gvar": "Gvar", "hz": "Hz", "khz": "kHz", "w": "W", "v": "V", "a": "A"}.get(name, name)
    return ""


def assess(metric: str, unit: str, nominal: float | None, value: float) -> Verdict:
    """Whether ``value`` (in ``unit``) is plausible for ``metric`` with this ``nominal``, and if
    not, why and what to change."""
    rng = physical_range(metric, unit)
    if not math.isfinite(value):
        return Verdict("impossible", rng.why(value, unit))
    hint = _hint(metric, unit, nominal, value)
    if value < rng.low or value > rng.high or (rng.low_open and value == rng.low) or (
            rng.high_open and value == rng.high):
        return Verdict("impossible", rng.why(value, unit) + (f"; {hint.message}" if hint.message else ""))
    return hint


def _hint(metric: str, unit: str, nominal: float | None, value: float) -> Verdict:
    if value != 0 and abs(value) < _TINY:
        return Verdict("suspect", f"reads {_show(value, unit)}: a non-zero reading this close to zero is "
                                  "usually a word or byte order mistake")
    found = rule_for(metric, unit)
    if found is None:
        return OK
    rule, factor = found
    shown = _show(value, unit)
    size = abs(value)
    if nominal is not None and size >= rule.dead * nominal:
        ratio = size / nominal
        lo, hi = rule.band
        if not lo <= ratio <= hi:
            k = _decade(ratio)
            if abs(k) in (3, 6, 9):
                other = _unit_for(rule, factor, k)
                fix = (f"either the nominal is {_show(nominal * 10.0 ** k, unit)}, or set scale to "
                       f"{10.0 ** -k:g} times the present one")
                if other:
                    fix += f", or unit = '{other}' and nominal = {nominal * 10.0 ** k:g}"
                times = f"{10 ** k}" if k > 0 else f"1/{10 ** -k}"
                return Verdict("suspect", f"reads {shown}, {times} times the nominal {_show(nominal, unit)}: the "
                                          f"device and the config use different units; {fix}")
            if k != 0:
                return Verdict("suspect", f"reads {shown} against a nominal of {_show(nominal, unit)}: is the "
                                          f"nominal {_show(nominal * 10.0 ** k, unit)}? (if not, the scale is off "
                                          f"by a factor of {10 ** abs(k)})")
            return Verdict("suspect", f"reads {shown}, {ratio:.2g} times the nominal {_show(nominal, unit)} "
                                      f"(a healthy {rule.family} reads {lo:g}-{hi:g} times nominal)")
    base = size * factor
    lo, hi = rule.typical
    if size != 0 and not lo <= base <= hi:
        for k in (3, 6, 9, -3, -6):
            if lo <= base / 10.0 ** k <= hi and (k > 0 or base / 10.0 ** k > 0):
                other = _unit_for(rule, factor, k)
                if other:
                    return Verdict("suspect", f"reads {shown}: no {rule.family} that large (or small) is "
                                              f"measured in a substation; the device probably reports "
                                              f"{other}: unit = '{other}', or scale {10.0 ** -k:g} times the "
                                              "present one")
        limit = _show(hi / factor, unit) if base > hi else _show(lo / factor, unit)
        return Verdict("suspect", f"reads {shown}: no substation {rule.family} is "
                                  f"{'above' if base > hi else 'below'} {limit}")
    return OK
