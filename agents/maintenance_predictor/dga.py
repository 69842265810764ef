"""Dissolved gas analysis: IEC 60599:2022 basic gas ratios and Duval triangle 1. Vectorised.

**Basic gas ratios** (IEC 60599, clause 6.1 and its Table 1, "DGA interpretation table"), with
R1 = C2H2/C2H4, R2 = CH4/H2, R3 = C2H4/C2H6 (NS: not significant, whatever the value):

    PD  partial discharges                R1 NS          R2 < 0.1        R3 < 0.2
    D1  discharges of low energy          R1 > 1         R2 0.1 - 0.5    R3 > 1
    D2  discharges of high energy         R1 0.6 - 2.5   R2 0.1 - 1      R3 > 2
    T1  thermal fault t < 300 degC        R1 NS          R2 > 1 (NS)     R3 < 1
    T2  thermal fault 300 - 700 degC      R1 < 0.1       R2 > 1          R3 1 - 4
    T3  thermal fault t > 700 degC        R1 < 0.2       R2 > 1          R3 > 4

The D1 and D2 ranges overlap (R1 1 - 2.5, R2 0.1 - 0.5, R3 > 2); there the more severe D2 is
reported. A ratio combination in no row is "ND" (not determinable). Ratios are only significant when
at least one gas exceeds its typical concentration (clause 6.1 / Annex A); below that the result is
"N" (no fault). A ratio with a zero denominator is infinite, 0/0 is taken as 0.

**Duval triangle 1** (IEC 60599 Annex B, Figure B.1 / Table B.1; M. Duval, IEEE Electrical
Insulation Magazine 18(3), 2002), on the relative percentages of CH4, C2H4 and C2H2 (summing to 100):

    PD  CH4 >= 98
    T1  C2H2 < 4,  C2H4 < 20
    T2  C2H2 < 4,  20 <= C2H4 < 50
    T3  C2H2 < 15, C2H4 >= 50
    D1  C2H2 >= 13, C2H4 < 23
    D2  C2H2 >= 13, 23 <= C2H4 < 40;  or C2H2 >= 29, C2H4 >= 40
    DT  everything else (mixture of thermal and electrical faults)

The boundary lines (4, 13, 15, 29 % C2H2; 20, 23, 40, 50 % C2H4; 98 % CH4) are the published ones;
a point exactly on a line goes to the zone on its higher-percentage side, as written above.

**Typical values** (IEC 60599 Annex A, Table A.1: 90 % typical concentration ranges observed in
power transformers without a communicating OLTC, uL/L = ppm): H2 50-150, CH4 30-130, C2H6 20-90,
C2H4 60-280, C2H2 2-20, CO 400-600, CO2 3800-14000. The defaults below are the upper ends; each
operator should use their own network's values.
"""

from __future__ import annotations

import msgspec
import numpy as np

__all__ = [
    "DUVAL_ZONES",
    "FAULT_DESCRIPTIONS",
    "GASES",
    "IEC_CASES",
    "TYPICAL_PPM",
    "DgaAssessment",
    "assess_dga",
    "duval_percentages",
    "duval_triangle_1",
    "gas_ratios",
    "iec60599_ratio_case",
]

GASES = ("H2", "CH4", "C2H6", "C2H4", "C2H2", "CO", "CO2")
TYPICAL_PPM: dict[str, float] = {"H2": 150.0, "CH4": 130.0, "C2H6": 90.0, "C2H4": 280.0, "C2H2": 20.0,
                                 "CO": 600.0, "CO2": 14000.0}
IEC_CASES = ("PD", "D1", "D2", "T1", "T2", "T3")
DUVAL_ZONES = ("PD", "T1", "T2", "T3", "D1", "D2", "DT")
FAULT_DESCRIPTIONS = {
    "N": "no fault (gases within typical values)",
    "ND": "not determinable",
    "PD": "partial discharges",
    "D1": "discharges of low energy",
    "D2": "discharges of high energy",
    "T1": "thermal fault below 300 degC",
    "T2": "thermal fault 300-700 degC",
    "T3": "thermal fault above 700 degC",
    "DT": "mixture of thermal and electrical faults",
}


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where((num == 0) & (den == 0), 0.0, r)


def gas_ratios(h2, ch4, c2h6, c2h4, c2h2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: ANN001
    """(C2H2/C2H4, CH4/H2, C2H4/C2H6), element-wise."""
    return _ratio(c2h2, c2h4), _ratio(ch4, h2), _ratio(c2h4, c2h6)


def iec60599_ratio_case(h2, ch4, c2h6, c2h4, c2h2, typical: dict[str, float] | None = None) -> np.ndarray:  # noqa: ANN001
    """The IEC 60599 Table 1 fault case for each sample: PD/D1/D2/T1/T2/T3, "ND" or "N".

    ``typical`` (ppm per gas, default :data:`TYPICAL_PPM`): when no one of the five gases exceeds its
    typical value the sample is "N". Pass ``{}`` to interpret the ratios whatever the levels."""
    typ = TYPICAL_PPM if typical is None else typical
    gas = {g: np.atleast_1d(np.asarray(v, dtype=np.float64)) for g, v in
           zip(("H2", "CH4", "C2H6", "C2H4", "C2H2"), (h2, ch4, c2h6, c2h4, c2h2))}
    r1, r2, r3 = gas_ratios(gas["H2"], gas["CH4"], gas["C2H6"], gas["C2H4"], gas["C2H2"])
    cases = [
        ("PD", (r2 < 0.1) & (r3 < 0.2)),
        ("D2", (r1 >= 0.6) & (r1 <= 2.5) & (r2 >= 0.1) & (r2 <= 1.0) & (r3 > 2.0)),
        ("D1", (r1 > 1.0) & (r2 >= 0.1) & (r2 <= 0.5) & (r3 > 1.0)),
        ("T1", (r2 > 1.0) & (r3 < 1.0)),
        ("T2", (r1 < 0.1) & (r2 > 1.0) & (r3 >= 1.0) & (r3 <= 4.0)),
        ("T3", (r1 < 0.2) & (r2 > 1.0) & (r3 > 4.0)),
    ]
    out = np.select([c for _, c in cases], [n for n, _ in cases], default="ND").astype("<U2")
    if typ:
        above = np.zeros(out.shape, dtype=bool)
        for g, v in gas.items():
            if g in typ:
                above |= v > typ[g]
        out = np.where(above, out, "N")
    return out


def duval_percentages(ch4, c2h4, c2h2) -> np.ndarray:  # noqa: ANN001
    """Relative % of CH4, C2H4, C2H2 (columns), NaN where all three are zero."""
    g = np.stack(np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (ch4, c2h4, c2h2))),
                 axis=-1)
    total = g.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 100.0 * g / total, np.nan)


def duval_triangle_1(ch4, c2h4, c2h2) -> np.ndarray:  # noqa: ANN001
    """The Duval triangle 1 zone of each sample (ppm or % in, any scale): PD/T1/T2/T3/D1/D2/DT, or
    "ND" where CH4, C2H4 and C2H2 are all zero."""
    pct = duval_percentages(ch4, c2h4, c2h2)
    m, e, a = pct[..., 0], pct[..., 1], pct[..., 2]  # methane, ethylene, acetylene
    zones = [
        ("PD", m >= 98.0),
        ("T1", (a < 4.0) & (e < 20.0)),
        ("T2", (a < 4.0) & (e >= 20.0) & (e < 50.0)),
        ("T3", (a < 15.0) & (e >= 50.0)),
        ("D1", (a >= 13.0) & (e < 23.0)),
        ("D2", ((a >= 13.0) & (e >= 23.0) & (e < 40.0)) | ((a >= 29.0) & (e >= 40.0))),
    ]
    out = np.select([c for _, c in zones], [n for n, _ in zones], default="DT").astype("<U2")
    return np.where(np.isnan(m), "ND", out)


class DgaAssessment(msgspec.Struct, frozen=True, kw_only=True):
    """One sample's interpretation."""

    iec_case: str
    duval_zone: str
    fault: str  # the zone used for the health score: Duval's where gases are significant, else "N"
    ratios: dict[str, float]
    duval_percent: dict[str, float]
    gas_ppm: dict[str, float]
    ratio_to_typical: dict[str, float]  # each gas over its typical value
    worst_gas: str
    worst_ratio_to_typical: float


def assess_dga(gas_ppm: dict[str, float], typical: dict[str, float] | None = None) -> DgaAssessment:
    """Interpret one sample (any subset of :data:`GASES`; the five hydrocarbons and H2 are needed for
    the ratios, CH4/C2H4/C2H2 for the triangle). The fault zone counts only when a gas is above its
    typical value (IEC 60599: interpret only significant gas levels)."""
    typ = TYPICAL_PPM if typical is None else typical
    g = {k: float(v) for k, v in gas_ppm.items() if v is not None and np.isfinite(v)}
    rtt = {k: g[k] / typ[k] for k in g if typ.get(k)}
    worst = max(rtt, key=rtt.__getitem__) if rtt else ""
    significant = any(v > 1.0 for k, v in rtt.items() if k in ("H2", "CH4", "C2H6", "C2H4", "C2H2"))
    have_ratio = all(k in g for k in ("H2", "CH4", "C2H6", "C2H4", "C2H2"))
    have_duval = all(k in g for k in ("CH4", "C2H4", "C2H2"))
    iec = "ND"
    ratios: dict[str, float] = {}
    if have_ratio:
        r1, r2, r3 = gas_ratios(g["H2"], g["CH4"], g["C2H6"], g["C2H4"], g["C2H2"])
        ratios = {"C2H2/C2H4": float(r1), "CH4/H2": float(r2), "C2H4/C2H6": float(r3)}
        iec = str(iec60599_ratio_case(g["H2"], g["CH4"], g["C2H6"], g["C2H4"], g["C2H2"], typ)[0])
    zone, pct = "ND", {}
    if have_duval:
        zone = str(duval_triangle_1(g["CH4"], g["C2H4"], g["C2H2"])[0])
        p = duval_percentages(g["CH4"], g["C2H4"], g["C2H2"])[0]
        pct = {"CH4": float(p[0]), "C2H4": float(p[1]), "C2H2": float(p[2])}
    fault = "N" if not significant else (zone if zone != "ND" else iec)
    return DgaAssessment(iec_case=iec, duval_zone=zone, fault=fault, ratios=ratios, duval_percent=pct, gas_ppm=g,
                         ratio_to_typical=rtt, worst_gas=worst, worst_ratio_to_typical=rtt.get(worst, 0.0))
