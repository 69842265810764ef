"""The grid monitor's entry point: :func:`analyse` a :class:`GridSnapshot` into a :class:`GridReport`.

Per device, over whole series at once (numpy; the Python loops are over devices, series and the
events found, never over samples):

- voltage (``voltage``, ``voltage_l1..l3``; unit V or kV): the grid-code band
  (:mod:`protocols.gridcode`, the same check the edge runs) gives ``voltage_sag`` /
  ``voltage_swell`` and their severity; IEEE 1159 classification (:mod:`.ieee1159`) adds the
  events with their durations and categories, and a ``voltage_interruption`` (CRITICAL) for an
  excursion below 0.1 pu, whose samples then count for the interruption only;
- frequency: the grid-code band, ``under_frequency`` / ``over_frequency``;
- three phases: ``current_unbalance`` and ``voltage_unbalance`` (NEMA MG-1; for voltage the IEC
  negative-sequence factor instead when ``voltage_angle_l1..l3`` in degrees are given);
- ``power_factor`` (``low_power_factor``), ``thd_voltage`` in % (``high_thd_voltage``), both on their
  10-min means;
- feeders with a :class:`FeederRating`: ``feeder_overload`` (highest phase current, or active
  power, over the rating).

One finding per device and condition: the worst value (and the series it came from), the first
start and the last end over all phases, every episode with its duration in ``facts``. Sample
series of the phases need not share timestamps; unbalance uses the instants all three have.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce
from typing import Any

import msgspec
import numpy as np

from agents.findings import Finding
from agents.grid_monitor import ieee1159
from agents.grid_monitor.recommend import (TRANSFER_TYPES, Headroom, best_transfer, headrooms, neighbours,
                                             recommendation)
from agents.grid_monitor.runs import CLOSED_BY, find_runs, run_extremes, to_seconds, utc
from agents.grid_monitor.schema import AGENT, FeederRating, GridMonitorConfig, GridReport, GridSnapshot, Series
from agents.grid_monitor.status import rollup
from agents.grid_monitor.unbalance import nema_unbalance_pct, negative_sequence_unbalance_pct
from protocols import gridcode
from protocols.config import Limits
from protocols.reading import sensor_type

__all__ = ["analyse"]

PHASES = ("l1", "l2", "l3")
_SEVERITY = {1: "WARNING", 2: "CRITICAL"}
_ORDER = ("voltage_interruption", "voltage_sag", "voltage_swell", "under_frequency", "over_frequency",
          "voltage_unbalance", "current_unbalance", "feeder_overload", "low_power_factor", "high_thd_voltage")


@dataclass(frozen=True, slots=True)
class _Track:
    """One series, normalised: times relative to ``t0`` (epoch s), float values, validity."""

    metric: str
    unit: str
    nominal: float | None
    t: np.ndarray
    t0: float
    v: np.ndarray
    valid: np.ndarray

    @classmethod
    def of(cls, s: Series) -> _Track:
        t, t0 = to_seconds(s.timestamps)
        v = np.asarray(s.values, dtype=np.float64).reshape(-1)
        if v.size != t.size:
            raise ValueError(f"{s.substation}/{s.device_id} {s.metric}: {v.size} values for {t.size} timestamps")
        return cls(s.metric, s.unit, s.nominal, t, t0, v, np.isfinite(v))

    def at(self, i: int) -> datetime:
        return utc(self.t0 + self.t[i])


@dataclass
class _Device:
    substation: str
    device_id: str
    tracks: dict[str, _Track] = field(default_factory=dict)

    def of_type(self, stype: str) -> list[_Track]:
        return [tr for m, tr in sorted(self.tracks.items()) if sensor_type(m) == stype]

    def phases(self, stype: str) -> list[_Track] | None:
        got = [self.tracks.get(f"{stype}_{p}") for p in PHASES]
        return None if any(tr is None for tr in got) else got  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class _Part:
    """One series' share of a condition: where it holds and how badly (0 / WARNING / CRITICAL)."""

    track: _Track
    mask: np.ndarray
    severity: np.ndarray
    scale: float = 1.0  # badness is value / scale (per unit across phases)


@dataclass(frozen=True, slots=True)
class _Summary:
    track: _Track
    index: int
    severity: int
    start: datetime
    end: datetime
    last_seen: datetime
    facts: dict[str, Any]
    valid_share: float

    @property
    def value(self) -> float:
        return float(self.track.v[self.index])


def analyse(snapshot: GridSnapshot, config: GridMonitorConfig = GridMonitorConfig()) -> GridReport:
    """Analyse one snapshot: findings (agent ``grid_monitor``, one per device and condition) and
    the OK / WARNING / CRITICAL status of every substation and device in it."""
    devices = _devices(snapshot.series)
    ratings = {f.device_id: f for f in snapshot.feeders}
    by_id = {d.device_id: d for d in devices.values()}
    measured = {fid: load for fid, f in ratings.items()
                if fid in by_id and (load := _present_load(by_id[fid], f.unit)) is not None}
    ctx = _Context(config, ratings, headrooms(snapshot.feeders, measured), neighbours(snapshot.adjacency))
    findings: list[Finding] = []
    for dev in devices.values():
        limits = config.limits_for(dev.device_id, dev.substation)
        found = [*_voltage(dev, limits, ctx), *_frequency(dev, limits, ctx), *_voltage_unbalance(dev, ctx),
                 *_current_unbalance(dev, ctx), *_overload(dev, ctx), *_power_factor(dev, ctx), *_thd(dev, ctx)]
        findings += sorted(found, key=lambda f: _ORDER.index(f.type))
    substation_status, device_status = rollup(findings, devices)
    return GridReport(findings=findings, substation_status=substation_status, device_status=device_status)


def _devices(series: Iterable[Series]) -> dict[tuple[str, str], _Device]:
    out: dict[tuple[str, str], _Device] = {}
    for s in series:
        dev = out.setdefault((s.substation, s.device_id), _Device(s.substation, s.device_id))
        if s.metric in dev.tracks:
            raise ValueError(f"{s.substation}/{s.device_id} {s.metric}: given twice in the snapshot")
        dev.tracks[s.metric] = _Track.of(s)
    return out


@dataclass(frozen=True)
class _Context:
    config: GridMonitorConfig
    ratings: dict[str, FeederRating]
    rooms: dict[str, Headroom]
    adjacent: dict[str, set[str]]

    def finding(self, dev: _Device, ftype: str, stype: str, s: _Summary, *, description: str, threshold: float,
                nominal: float | None = None, facts: dict[str, Any], template: str = "") -> Finding:
        """A finding from a summary; the recommendation is a load transfer where it fits."""
        all_facts = {**facts, **s.facts}
        transfer = None
        if ftype in TRANSFER_TYPES and dev.device_id in self.adjacent:
            rating = self.ratings.get(dev.device_id)
            transfer, candidates = best_transfer(dev.device_id, self.rooms, self.adjacent,
                                                 rating.unit if rating else None)
            all_facts["transfer_candidates"] = [msgspec.to_builtins(c) for c in candidates]
            source = self.rooms.get(dev.device_id)
            if source is not None:
                all_facts["feeder_load"] = msgspec.to_builtins(source)
        return Finding(
            agent=AGENT, type=ftype, severity=_SEVERITY[s.severity], timestamp=s.last_seen, device_id=dev.device_id,
            description=description, substation=dev.substation, metric=s.track.metric, value=s.value,
            threshold=float(threshold), nominal=nominal, confidence=round(s.valid_share, 4),
            recommendation=recommendation(template or ftype, dev.device_id, dev.substation, transfer),
            facts=all_facts, start=s.start, key=f"{AGENT}:{ftype}:{dev.substation}:{dev.device_id}:{stype}",
        )


def _summarise(parts: Sequence[_Part], lower: bool, cap: int) -> _Summary | None:
    """The worst sample over all parts, the first start, last end, and every episode (run)."""
    worst: tuple[float, _Part, int] | None = None
    episodes: list[tuple[float, dict[str, Any]]] = []
    last_seen = -np.inf
    outside = valid = total = 0
    for p in parts:
        tr = p.track
        valid += int(tr.valid.sum())
        total += tr.v.size
        if not p.mask.any():
            continue
        outside += int(p.mask.sum())
        badness = np.where(p.mask, (-tr.v if lower else tr.v) / p.scale, -np.inf)
        i = int(np.argmax(badness))
        if worst is None or badness[i] > worst[0]:
            worst = (float(badness[i]), p, i)
        last_seen = max(last_seen, tr.t0 + tr.t[np.flatnonzero(p.mask)[-1]])
        runs = find_runs(p.mask, tr.t, tr.valid)
        extreme = run_extremes(tr.v, runs, lowest=lower)
        severity = run_extremes(p.severity.astype(np.float64), runs, lowest=False)
        for k in range(len(runs)):
            start = tr.t0 + runs.start_s[k]
            episodes.append((start, {
                "metric": tr.metric, "start": utc(start).isoformat(), "end": utc(tr.t0 + runs.end_s[k]).isoformat(),
                "duration_s": float(runs.duration_s[k]), "samples": int(runs.samples[k]),
                "worst": float(extreme[k]), "severity": _SEVERITY.get(int(severity[k]), "WARNING"),
                "closed_by": CLOSED_BY[int(runs.closed_by[k])], "_end": tr.t0 + runs.end_s[k],
            }))
    if worst is None:
        return None
    _, part, i = worst
    episodes.sort(key=lambda e: (e[0], e[1]["metric"]))
    first = episodes[0][0]
    last_end = max(e[1].pop("_end") for e in episodes)
    facts = {
        "episodes": [e for _, e in episodes[:cap]], "episodes_total": len(episodes),
        "samples_outside": outside, "samples_valid": valid, "samples_total": total,
        "worst_at": part.track.at(i).isoformat(),
    }
    return _Summary(part.track, i, int(part.severity[i]), utc(first), utc(last_end), utc(last_seen), facts,
                    valid / total if total else 0.0)


# -- voltage and frequency: the grid-code bands, plus IEEE 1159 for voltage -----------------------------


def _band(tr: _Track, unit: str, nominal: float | None, limits: Limits
          ) -> tuple[gridcode.LimitTable, np.ndarray, np.ndarray]:
    table = gridcode.build_table([gridcode.PointSpec(tr.metric, unit, nominal)], limits)
    direction, severity = gridcode.evaluate(table, tr.v, np.zeros(tr.v.size, dtype=np.intp))
    return table, direction, severity


def _band_facts(table: gridcode.LimitTable, limits: Limits) -> dict[str, Any]:
    return {"band": {"warning_low": float(table.low_warn[0]), "warning_high": float(table.high_warn[0]),
                     "critical_low": float(table.low_crit[0]), "critical_high": float(table.high_crit[0])},
            "limits": msgspec.to_builtins(limits)}


def _voltage(dev: _Device, limits: Limits, ctx: _Context) -> list[Finding]:
    cap = ctx.config.max_events_in_facts
    f_hz = limits.frequency_nominal_hz
    sides: dict[int, list[_Part]] = {-1: [], 1: []}
    tables: dict[str, tuple[gridcode.LimitTable, str, float]] = {}
    events: list[ieee1159.VoltageEvent] = []
    for tr in dev.of_type("voltage"):
        nominal = tr.nominal
        if nominal is None and tr.valid.any():
            nominal = gridcode.infer_nominal_voltage(float(np.median(tr.v[tr.valid])), tr.unit)
        if not nominal:
            continue
        unit = tr.unit or ("kV" if nominal < 1000 else "V")
        if unit.strip().lower() not in {"v", "kv"}:
            continue
        found, in_interruption = ieee1159.classify_samples(tr.t, tr.t0, tr.v, nominal, unit=unit, metric=tr.metric,
                                                           frequency_hz=f_hz)
        events += found
        table, direction, severity = _band(tr, unit, nominal, limits)
        tables[tr.metric] = (table, unit, nominal)
        pu = tr.v / nominal
        for side, ieee in ((-1, tr.valid & (pu < ieee1159.SAG_PU)), (1, tr.valid & (pu > ieee1159.SWELL_PU))):
            # a looser band than IEEE 1159's still reports its sags and swells (as WARNING)
            sev = np.where(direction == side, severity, 0)
            sev = np.where(ieee, np.maximum(sev, gridcode.WARNING), sev)
            sev = np.where(in_interruption, 0, sev).astype(np.int8)
            sides[side].append(_Part(tr, sev > 0, sev, scale=nominal))
    out = []
    interruptions = [e for e in events if e.type == "interruption"]
    if interruptions:
        out.append(_interruption(dev, interruptions, tables, ctx))
    for side, ftype, etype in ((-1, "voltage_sag", "sag"), (1, "voltage_swell", "swell")):
        s = _summarise(sides[side], lower=side < 0, cap=cap)
        if s is None:
            continue
        table, unit, nominal = tables[s.track.metric]
        crossed = gridcode.threshold(table, 0, side, s.severity)
        ieee_limit = nominal * (ieee1159.SAG_PU if side < 0 else ieee1159.SWELL_PU)
        inside_band = not (table.low_warn[0] > s.value if side < 0 else s.value > table.high_warn[0])
        limit = ieee_limit if inside_band else crossed  # only IEEE 1159's threshold was crossed
        mine = [e for e in events if e.type == etype]
        description = gridcode.describe(dev.device_id, s.track.metric, ftype, s.value, unit, nominal, limit)
        template = ftype
        if mine:
            top = max(mine, key=_event_rank)
            description += f"; IEEE 1159: {top.name} of {top.duration_s:g} s at {top.extreme_pu:.3g} pu"
            if len(mine) > 1:
                description += f" ({len(mine)} events)"
            if top.category == "sustained":
                template = "sustained_undervoltage" if side < 0 else "sustained_overvoltage"
        facts = {"unit": unit, "nominal": nominal, "deviation_pct": (s.value - nominal) / nominal * 100,
                 "value_pu": s.value / nominal, "ieee1159_threshold": ieee_limit, **_band_facts(table, limits),
                 **_event_facts(mine, cap)}
        out.append(ctx.finding(dev, ftype, "voltage", s, description=description, threshold=limit, nominal=nominal,
                               facts=facts, template=template))
    return out


def _event_rank(e: ieee1159.VoltageEvent) -> tuple[int, float]:
    return ieee1159.CATEGORIES.index(e.category), abs(1.0 - e.extreme_pu)


def _event_facts(events: Sequence[ieee1159.VoltageEvent], cap: int) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for e in events:
        counts[e.name] = counts.get(e.name, 0) + 1
    return {"ieee1159_events": [e.facts() for e in events[:cap]], "ieee1159_events_total": len(events),
            "ieee1159_counts": counts}


def _interruption(dev: _Device, events: list[ieee1159.VoltageEvent],
                  tables: dict[str, tuple[gridcode.LimitTable, str, float]], ctx: _Context) -> Finding:
    worst = min(events, key=lambda e: e.extreme_pu)
    top = max(events, key=_event_rank)
    _, unit, nominal = tables[worst.metric]
    description = (f"Voltage interruption on {dev.device_id} {worst.metric} ({worst.extreme:.4g} {unit}, "
                   f"{worst.extreme_pu:.3g} pu of nominal {nominal:g} {unit}); IEEE 1159: {top.name} of "
                   f"{top.duration_s:g} s" + (f" ({len(events)} events)" if len(events) > 1 else ""))
    facts = {"unit": unit, "nominal": nominal, "value_pu": worst.extreme_pu,
             "ieee1159_threshold": nominal * ieee1159.INTERRUPTION_PU,
             "duration_s_total": round(sum(e.duration_s for e in events), 6),
             **_event_facts(events, ctx.config.max_events_in_facts)}
    return Finding(
        agent=AGENT, type="voltage_interruption", severity="CRITICAL", timestamp=max(e.end for e in events),
        device_id=dev.device_id, description=description, substation=dev.substation, metric=worst.metric,
        value=worst.extreme, threshold=nominal * ieee1159.INTERRUPTION_PU, nominal=nominal,
        recommendation=recommendation("voltage_interruption", dev.device_id, dev.substation), facts=facts,
        start=min(e.start for e in events), key=f"{AGENT}:voltage_interruption:{dev.substation}:{dev.device_id}:voltage",
    )


def _frequency(dev: _Device, limits: Limits, ctx: _Context) -> list[Finding]:
    sides: dict[int, list[_Part]] = {-1: [], 1: []}
    tables = {}
    for tr in dev.of_type("frequency"):
        unit = tr.unit or "Hz"
        if unit.strip().lower() != "hz":
            continue
        table, direction, severity = _band(tr, unit, None, limits)
        tables[tr.metric] = table
        for side in (-1, 1):
            sides[side].append(_Part(tr, direction == side, np.where(direction == side, severity, 0)))
    out = []
    for side, ftype in ((-1, "under_frequency"), (1, "over_frequency")):
        s = _summarise(sides[side], lower=side < 0, cap=ctx.config.max_events_in_facts)
        if s is None:
            continue
        table = tables[s.track.metric]
        limit = gridcode.threshold(table, 0, side, s.severity)
        description = gridcode.describe(dev.device_id, s.track.metric, ftype, s.value, "Hz", None, limit)
        facts = {"unit": "Hz", "nominal_hz": limits.frequency_nominal_hz, **_band_facts(table, limits)}
        out.append(ctx.finding(dev, ftype, "frequency", s, description=description, threshold=limit, facts=facts))
    return out


# -- thresholds on derived or plain series ------------------------------------------------------------


def _over(tr: _Track, warn: float, crit: float | None, lower: bool = False) -> _Part:
    """Samples beyond ``warn`` (WARNING) and ``crit`` (CRITICAL): above, or below if ``lower``."""
    v = np.where(tr.valid, tr.v, np.nan)
    with np.errstate(invalid="ignore"):
        beyond_w = v < warn if lower else v > warn
        beyond_c = np.zeros_like(beyond_w) if crit is None else (v < crit if lower else v > crit)
    sev = np.where(beyond_c, 2, np.where(beyond_w, 1, 0)).astype(np.int8)
    return _Part(tr, sev > 0, sev)


def _align(tracks: Sequence[_Track]) -> tuple[np.ndarray, float, np.ndarray]:
    """(relative times, t0, values shaped (k, n)) at the instants every track has."""
    if all(tr.t0 == tracks[0].t0 and np.array_equal(tr.t, tracks[0].t) for tr in tracks):
        return tracks[0].t, tracks[0].t0, np.vstack([tr.v for tr in tracks])
    absolute = [tr.t0 + tr.t for tr in tracks]
    common = reduce(np.intersect1d, absolute)
    if common.size == 0:
        return np.empty(0), 0.0, np.empty((len(tracks), 0))
    values = np.vstack([tr.v[np.searchsorted(a, common)] for tr, a in zip(tracks, absolute)])
    return common - common[0], float(common[0]), values


def _derived(metric: str, unit: str, t: np.ndarray, t0: float, v: np.ndarray) -> _Track:
    return _Track(metric, unit, None, t, t0, v, np.isfinite(v))


def _phase_values(values: np.ndarray, i: int) -> dict[str, float]:
    return {p.upper(): float(values[k, i]) for k, p in enumerate(PHASES)}


def _current_unbalance(dev: _Device, ctx: _Context) -> list[Finding]:
    phases = dev.phases("current")
    if phases is None:
        return []
    cfg = ctx.config
    t, t0, values = _align(phases)
    pct = nema_unbalance_pct(*values)
    rating = ctx.ratings.get(dev.device_id)
    min_load = (rating.rating * cfg.current_unbalance_min_load_pct / 100
                if rating is not None and rating.unit == "A" else None)
    if min_load is not None:
        with np.errstate(invalid="ignore"):
            pct = np.where(values.mean(axis=0) >= min_load, pct, np.nan)  # light load: not judged
    tr = _derived("current_unbalance", "%", t, t0, pct)
    s = _summarise([_over(tr, cfg.current_unbalance_warning_pct, cfg.current_unbalance_critical_pct)], False,
                   cfg.max_events_in_facts)
    if s is None:
        return []
    at = _phase_values(values, s.index)
    hi, lo = max(at, key=at.__getitem__), min(at, key=at.__getitem__)
    unit = phases[0].unit or "A"
    limit = cfg.current_unbalance_critical_pct if s.severity == 2 else cfg.current_unbalance_warning_pct
    mean = sum(at.values()) / 3
    description = (f"Load imbalance detected on {dev.device_id}: Phase {hi}={at[hi]:.4g}{unit} vs "
                   f"{lo}={at[lo]:.4g}{unit} (current unbalance {s.value:.1f}%, NEMA MG-1; limit {limit:g}%)")
    facts = {"method": "NEMA MG-1: max |phase - mean| / mean", "unit": unit, "phases": at, "mean": mean,
             "max_deviation": max(abs(x - mean) for x in at.values()), "unbalance_pct": s.value,
             "warning_pct": cfg.current_unbalance_warning_pct, "critical_pct": cfg.current_unbalance_critical_pct,
             "min_load_a": min_load}
    return [ctx.finding(dev, "current_unbalance", "current", s, description=description, threshold=limit,
                        facts=facts)]


def _voltage_unbalance(dev: _Device, ctx: _Context) -> list[Finding]:
    phases = dev.phases("voltage")
    if phases is None:
        return []
    cfg = ctx.config
    angles = dev.phases("voltage_angle")
    t, t0, values = _align(phases + (angles or []))
    nema = nema_unbalance_pct(*values[:3])
    vuf = negative_sequence_unbalance_pct(values[:3], values[3:]) if angles else None
    basis = "IEC 61000-4-30 negative-sequence factor |V2|/|V1|" if vuf is not None else "NEMA MG-1"
    tr = _derived("voltage_unbalance", "%", t, t0, vuf if vuf is not None else nema)
    s = _summarise([_over(tr, cfg.voltage_unbalance_warning_pct, cfg.voltage_unbalance_critical_pct)], False,
                   cfg.max_events_in_facts)
    if s is None:
        return []
    at = _phase_values(values, s.index)
    unit = phases[0].unit
    u = f" {unit}" if unit else ""
    limit = cfg.voltage_unbalance_critical_pct if s.severity == 2 else cfg.voltage_unbalance_warning_pct
    phase_text = ", ".join(f"{p}={x:.4g}{u}" for p, x in at.items())
    description = (f"Voltage unbalance on {dev.device_id}: {s.value:.2f}% ({basis}; limit {limit:g}%); "
                   f"{phase_text}")
    facts = {"method": basis, "unit": unit, "phases": at, "unbalance_pct": s.value,
             "nema_pct": float(nema[s.index]), "warning_pct": cfg.voltage_unbalance_warning_pct,
             "critical_pct": cfg.voltage_unbalance_critical_pct}
    if angles:
        facts["angles_deg"] = {p.upper(): float(values[3 + k, s.index]) for k, p in enumerate(PHASES)}
        facts["vuf_pct"] = s.value
    return [ctx.finding(dev, "voltage_unbalance", "voltage", s, description=description, threshold=limit,
                        facts=facts)]


def _load_track(dev: _Device, unit: str) -> _Track | None:
    """The feeder's loading in ``unit``: highest phase current (A), or active power (MW)."""
    if unit == "MW":
        power = dev.of_type("active_power") or dev.of_type("active_power_mw")
        return power[0] if power else None
    phases = dev.phases("current")
    if phases is not None:
        t, t0, values = _align(phases)
        finite = np.isfinite(values)
        highest = np.where(finite.any(axis=0), np.max(np.where(finite, values, -np.inf), axis=0), np.nan)
        return _derived("current_max_phase", "A", t, t0, highest)
    single = dev.of_type("load_current") or dev.of_type("current")
    return single[0] if single else None


def _present_load(dev: _Device, unit: str) -> float | None:
    tr = _load_track(dev, unit)
    if tr is None or not tr.valid.any():
        return None
    return float(tr.v[np.flatnonzero(tr.valid)[-1]])


def _overload(dev: _Device, ctx: _Context) -> list[Finding]:
    rating = ctx.ratings.get(dev.device_id)
    if rating is None:
        return []
    tr = _load_track(dev, rating.unit)
    if tr is None:
        return []
    cfg = ctx.config
    warn, crit = rating.rating * cfg.overload_warning_pct / 100, rating.rating * cfg.overload_critical_pct / 100
    s = _summarise([_over(tr, warn, crit)], False, cfg.max_events_in_facts)
    if s is None:
        return []
    limit = crit if s.severity == 2 else warn
    loading = s.value / rating.rating * 100
    description = (f"Overload on {dev.device_id} {tr.metric} ({s.value:.4g} {rating.unit}, {loading:.0f}% of its "
                   f"{rating.rating:g} {rating.unit} rating; limit {limit:.4g} {rating.unit})")
    facts = {"unit": rating.unit, "rating": rating.rating, "loading_pct": loading,
             "warning_pct": cfg.overload_warning_pct, "critical_pct": cfg.overload_critical_pct}
    return [ctx.finding(dev, "feeder_overload", "load", s, description=description, threshold=limit, facts=facts)]


def _trailing_mean(tr: _Track, window_s: float) -> _Track:
    """Each sample's mean over the ``window_s`` up to it (IEC 61000-4-30's aggregation of power factor
    and THD), valid once the series covers a whole window: a lone reading is never judged alone.
    ``window_s`` 0 leaves the series as it is."""
    if window_s <= 0 or tr.t.size == 0:
        return tr
    sums = np.concatenate(([0.0], np.cumsum(np.where(tr.valid, tr.v, 0.0))))
    counts = np.concatenate(([0], np.cumsum(tr.valid)))
    lo = np.searchsorted(tr.t, tr.t - window_s, side="right")  # the window is (t - window_s, t]
    hi = np.arange(1, tr.t.size + 1)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (sums[hi] - sums[lo]) / n
    valid = (n > 0) & (tr.t >= window_s)
    return _Track(tr.metric, tr.unit, tr.nominal, tr.t, tr.t0, np.where(valid, mean, np.nan), valid)


def _over_window(cfg: GridMonitorConfig) -> str:
    w = cfg.power_quality_window_s
    return "" if w <= 0 else (f"{w / 60:g}-min mean " if w % 60 == 0 else f"{w:g}-s mean ")


def _power_factor(dev: _Device, ctx: _Context) -> list[Finding]:
    cfg = ctx.config
    # The meters here report |PF| without a sign; every value is read as lagging.
    parts = [_over(_trailing_mean(_Track(tr.metric, tr.unit, None, tr.t, tr.t0, np.abs(tr.v), tr.valid),
                                  cfg.power_quality_window_s),
                   cfg.power_factor_warning_below, cfg.power_factor_critical_below, lower=True)
             for tr in dev.of_type("power_factor")]
    s = _summarise(parts, True, cfg.max_events_in_facts)
    if s is None:
        return []
    crit = cfg.power_factor_critical_below
    limit = crit if s.severity == 2 and crit is not None else cfg.power_factor_warning_below
    description = (f"Low power factor on {dev.device_id} {s.track.metric} ({_over_window(cfg)}{s.value:.3g} "
                   f"lagging; limit {limit:g})")
    facts = {"warning_below": cfg.power_factor_warning_below, "critical_below": crit,
             "window_s": cfg.power_quality_window_s}
    return [ctx.finding(dev, "low_power_factor", "power_factor", s, description=description, threshold=limit,
                        facts=facts)]


def _thd(dev: _Device, ctx: _Context) -> list[Finding]:
    cfg = ctx.config
    parts = [_over(_trailing_mean(tr, cfg.power_quality_window_s), cfg.thd_voltage_warning_pct,
                   cfg.thd_voltage_critical_pct) for tr in dev.of_type("thd_voltage")]
    s = _summarise(parts, False, cfg.max_events_in_facts)
    if s is None:
        return []
    limit = cfg.thd_voltage_critical_pct if s.severity == 2 else cfg.thd_voltage_warning_pct
    description = (f"High voltage THD on {dev.device_id} {s.track.metric} ({_over_window(cfg)}{s.value:.3g}%; "
                   f"limit {limit:g}%, IEEE 519 / EN 50160)")
    facts = {"unit": "%", "warning_pct": cfg.thd_voltage_warning_pct, "critical_pct": cfg.thd_voltage_critical_pct,
             "window_s": cfg.power_quality_window_s}
    return [ctx.finding(dev, "high_thd_voltage", "thd_voltage", s, description=description, threshold=limit,
                        facts=facts)]
