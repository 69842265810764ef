"""The anomaly detector's entry point: :func:`analyse` an :class:`AnomalyInput` into findings.

What only the hub can see, over every sensor at once (numpy; the Python loops are over sensors,
windows, episodes and groups, never over readings):

1. ``baseline_deviation``: the last ``deviation_window_s`` of a sensor against its hour-of-week
   baselines (:mod:`.baseline`) over trailing 30 / 60 / 90-day windows; flagged when the
   absolute median z (the period's level, in the hour's week-to-week scale) reaches the threshold
   against the longest window the history covers. Confidence is the
   share of windows used times the share of the period's readings in trusted buckets.
2. Episodes of the edge's scores (:mod:`.episodes`), each with type, peak, start and end, and the
   peak reading's deviation from its baseline.
3. Correlation (:mod:`.correlate`): overlapping episodes become one ``correlated_anomaly``
   (scope ``device``, ``substation`` or ``grid``); a lone episode is ``anomaly_<type>``.

Severity: a lone episode is WARNING, CRITICAL from ``critical_score``. A correlated group:

=============  =====================  ============================
scope          peak < critical_score  peak >= critical_score
=============  =====================  ============================
device         WARNING                CRITICAL
substation     CRITICAL               CRITICAL
grid           CRITICAL               EMERGENCY
=============  =====================  ============================

Keys (one per ongoing condition): ``anomaly_detector:episode:<substation>:<device>:<metric>``
(an episode's type may change as it grows: a step starts as a spike),
``anomaly_detector:baseline_deviation:<substation>:<device>:<metric>``,
``anomaly_detector:correlated:<substation>:<device>`` (one device),
``anomaly_detector:correlated:<substation>:<devices, sorted, comma-separated>`` and
``anomaly_detector:correlated:grid:<sensor types, sorted>`` (grid-wide, so more substations joining
the same frequency event update one incident).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import numpy as np

from agents.anomaly_detector import text
from agents.anomaly_detector.baseline import (
    MAD_TO_SIGMA,
    MEAN_ABS_TO_SIGMA,
    Baseline,
    compute_baseline,
    grouped_median,
    hour_of_week,
)
from agents.anomaly_detector.correlate import group_episodes, scope_of
from agents.anomaly_detector.episodes import Episodes, find_episodes
from agents.anomaly_detector.schema import (
    AGENT,
    AnomalyConfig,
    AnomalyInput,
    SensorSeries,
)
from agents.findings import Finding, severity_rank
from models.detectors import ANOMALY_TYPES
from protocols.reading import sensor_type

__all__ = ["alert_text", "analyse", "analyse_part", "check_episodes", "correlate_episodes", "ordered"]

_TYPE_WORDS = {"multivariate": "anomaly", "frozen": "frozen value", "unclassified": "anomaly"}
_GROUP_SEVERITY = {("device", False): "WARNING", ("device", True): "CRITICAL",
                   ("substation", False): "CRITICAL", ("substation", True): "CRITICAL",
                   ("grid", False): "CRITICAL", ("grid", True): "EMERGENCY"}
_MAX_PHRASES = 3


def analyse(data: AnomalyInput, config: AnomalyConfig = AnomalyConfig(), now: datetime | None = None
            ) -> list[Finding]:
    """Findings (agent ``anomaly_detector``) from baselines, score episodes and their correlation.

    ``now`` (time-zone aware; default: the latest reading) ends the analysis: later readings are
    left out, the deviation period is the ``deviation_window_s`` before it, and the baselines' windows
    end where that period begins. Ordered by severity (worst first), then start, then key.
    """
    deviations, members = analyse_part(data, config, now)
    return ordered(deviations + correlate_episodes(members, config, data.model))


def analyse_part(data: AnomalyInput, config: AnomalyConfig = AnomalyConfig(), now: datetime | None = None
                 ) -> tuple[list[Finding], list[dict[str, Any]]]:
    """What one part of the fleet shows on its own: its ``baseline_deviation`` findings, and its
    score episodes as JSON-ready dicts for :func:`correlate_episodes` (which may be given the
    episodes of several parts: a hub whose agents are split by substation correlates them across
    the grid in one place). ``analyse`` is this and that over one part."""
    if now is not None and now.utcoffset() is None:
        raise ValueError("now: a time-zone aware datetime is needed (e.g. datetime.now(UTC))")
    d = _Data.of(data, None if now is None else now.timestamp())
    if d is None:
        return [], []
    end = d.now - config.deviation_window_s
    baselines = [compute_baseline(d.hsid, d.ht, d.hv, len(d.meta), end=end, window_days=w,
                                  min_count=config.min_bucket_count, min_coverage=config.min_window_coverage,
                                  utc_offset_hours=config.utc_offset_hours)
                 for w in config.baseline_windows_days]
    ctx = _Context(d, config, baselines)
    episodes = find_episodes(d.sid, d.t, d.score, d.code, len(d.types), threshold=config.score_threshold,
                             gap_s=config.episode_gap_s)
    return ctx.deviations(), ctx.members(episodes) if len(episodes) else []


def correlate_episodes(members: list[dict[str, Any]], config: AnomalyConfig = AnomalyConfig(), model: str = ""
                       ) -> list[Finding]:
    """The episode findings of ``members`` (from :func:`analyse_part`, of one part or several):
    overlapping episodes of several sensors are one ``correlated_anomaly``, a lone one an
    ``anomaly_<type>``. ``model`` names the score in the text, as :class:`AnomalyInput`'s."""
    if not members:
        return []
    members = sorted(members, key=lambda m: (m["_start"], m["_end"], *m["_series"]))
    series = {key: k for k, key in enumerate(sorted({tuple(m["_series"]) for m in members}))}
    subs = {name: k for k, name in enumerate(sorted({m["substation"] for m in members}))}
    qty = {name: k for k, name in enumerate(sorted({sensor_type(m["metric"]) for m in members}))}
    labels = group_episodes(np.array([m["_start"] for m in members]), np.array([m["_end"] for m in members]),
                            np.array([series[tuple(m["_series"])] for m in members]),
                            np.array([subs[m["substation"]] for m in members]),
                            np.array([qty[sensor_type(m["metric"])] for m in members]), config.correlation_slack_s)
    words = _EpisodeText(config, model)
    out = []
    order = np.argsort(labels, kind="stable")  # by group, in episode order within each: not a pass per group
    for idx in np.split(order, np.flatnonzero(np.diff(labels[order])) + 1):
        group = [members[k] for k in idx.tolist()]
        if len({tuple(m["_series"]) for m in group}) > 1:
            out.append(words.group_finding(group))
        else:
            out += [words.lone_finding(m) for m in group]
    return out


class _EpisodeEntry(msgspec.Struct):
    """What :func:`correlate_episodes` reads of an episode's entry (the rest is carried as facts)."""

    substation: str
    device_id: str
    metric: str
    unit: str
    type: str
    peak_score: float
    value_at_peak: float | None
    baseline: dict[str, Any] | None
    scored_share: float
    _series: Annotated[list[str], msgspec.Meta(min_length=3, max_length=3)]
    _kind: str
    _start: float
    _end: float


def check_episodes(entries: Any, where: str) -> list[dict[str, Any]]:
    """``entries`` if it is a list of episode entries as :func:`analyse_part` makes them (read back
    from storage, written by another process); ValueError naming ``where``, the entry and the field
    otherwise."""
    try:
        msgspec.convert(entries, list[_EpisodeEntry])
    except msgspec.ValidationError as exc:
        raise ValueError(f"{where}: not anomaly episodes: {exc}") from None
    return entries


def ordered(findings: list[Finding]) -> list[Finding]:
    """Worst first, then by start, then by condition key: the order :func:`analyse` returns."""
    return sorted(findings, key=lambda f: (-severity_rank(f.severity), f.start or f.timestamp, f.condition_key()))


def _merge_phases(findings: list[Finding]) -> list[Finding]:
    """Deviations of several phases of one quantity on one device (voltage_l1, _l2, _l3 of a feeder)
    are one condition and one incident: the phase furthest from its baseline leads, the others are
    named in the description and listed in ``facts["phases"]``."""
    groups: dict[str, list[Finding]] = {}
    for f in findings:
        groups.setdefault(f.key, []).append(f)
    out = []
    for group in groups.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        group.sort(key=lambda f: (-abs(f.facts["level_z"]), f.metric))
        lead = group[0]
        phases = [{"metric": f.metric, "level_z": f.facts["level_z"], "value_median": f.facts["value_median"],
                   "baseline_median": f.facts["baseline_median"], "deviation_pct": f.facts["deviation_pct"],
                   "severity": f.severity} for f in group]
        others = ", ".join(f"{f.metric} (z {f.facts['level_z']:+.1f})" for f in group[1:])
        out.append(msgspec.structs.replace(
            lead, severity=max((f.severity for f in group), key=severity_rank),
            timestamp=max(f.timestamp for f in group),
            start=min((f.start for f in group if f.start is not None), default=lead.start),
            description=f"{lead.description} Also {others}.",
            facts={**lead.facts, "phases": phases}))
    return out


def alert_text(finding: Finding) -> str:
    """The one-line operator alert of an episode or correlated finding ("ANOMALY DETECTED: ...")."""
    return str(finding.facts.get("alert") or f"ANOMALY DETECTED: {finding.description} {finding.recommendation}")


# -- input ------------------------------------------------------------------------------------------


def _epoch(ts: Any, where: str) -> np.ndarray:
    arr = np.asarray(ts).reshape(-1)
    if np.issubdtype(arr.dtype, np.datetime64):
        out = arr.astype("datetime64[ns]").astype(np.int64) / 1e9
    else:
        out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{where}: timestamps must all be finite")
    if np.any(np.diff(out) < 0):
        raise ValueError(f"{where}: timestamps must be in non-decreasing order")
    return out


def _floats(x: Any, n: int, where: str, what: str) -> np.ndarray:
    arr = np.array(x, dtype=np.float64).reshape(-1)
    if arr.size != n:
        raise ValueError(f"{where}: {arr.size} {what} for {n} timestamps")
    return arr


def _type_codes(types: Any, n: int, vocabulary: dict[str, int], where: str) -> np.ndarray:
    """Type names or ANOMALY_TYPES codes -> codes into ``vocabulary`` (extended with new names)."""
    if types is None:
        return np.zeros(n, dtype=np.int64)
    arr = np.asarray(types).reshape(-1)
    if arr.size != n:
        raise ValueError(f"{where}: {arr.size} types for {n} timestamps")
    if arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= len(ANOMALY_TYPES)):
            raise ValueError(f"{where}: type codes must be 0..{len(ANOMALY_TYPES) - 1} "
                             "(models.detectors.ANOMALY_TYPES)")
        return arr.astype(np.int64)
    arr = arr.astype(object)
    names = np.where(np.equal(arr, None) | np.equal(arr, ""), "none", arr).astype(str)
    unique, inverse = np.unique(names, return_inverse=True)
    codes = np.array([vocabulary.setdefault(u, len(vocabulary)) for u in unique.tolist()], dtype=np.int64)
    return codes[inverse.reshape(-1)]


@dataclass(frozen=True, slots=True)
class _Data:
    """Every sensor's readings concatenated (grouped by sensor, in time order), and the histories."""

    meta: list[SensorSeries]
    types: tuple[str, ...]
    now: float
    sid: np.ndarray
    t: np.ndarray
    v: np.ndarray
    score: np.ndarray
    code: np.ndarray
    hsid: np.ndarray
    ht: np.ndarray
    hv: np.ndarray

    @classmethod
    def of(cls, data: AnomalyInput, now: float | None) -> _Data | None:
        vocabulary = {name: i for i, name in enumerate(ANOMALY_TYPES)}
        seen: set[tuple[str, str, str]] = set()
        parts: list[tuple[np.ndarray, ...]] = []
        hist: list[tuple[np.ndarray, np.ndarray]] = []
        for s in data.series:
            where = f"{s.substation}/{s.device_id} {s.metric}"
            if (s.substation, s.device_id, s.metric) in seen:
                raise ValueError(f"{where}: given twice")
            seen.add((s.substation, s.device_id, s.metric))
            t = _epoch(s.timestamps, where)
            v = _floats(s.values, t.size, where, "values")
            score = np.full(t.size, np.nan) if s.scores is None else _floats(s.scores, t.size, where, "scores")
            parts.append((t, v, score, _type_codes(s.types, t.size, vocabulary, where)))
            if s.history_timestamps is None:
                hist.append((t, v))
            else:
                ht = _epoch(s.history_timestamps, f"{where} history")
                hist.append((ht, _floats(s.history_values, ht.size, f"{where} history", "values")))
        latest = [p[0][-1] for p in parts if p[0].size] + [h[0][-1] for h in hist if h[0].size]
        if now is None:
            if not latest:
                return None
            now = float(max(latest))
        sid = np.concatenate([np.full(p[0].size, i, dtype=np.int64) for i, p in enumerate(parts)] or [np.empty(0, int)])
        t, v, score, code = (np.concatenate([p[k] for p in parts]) if parts else np.empty(0) for k in range(4))
        keep = t <= now
        hsid = np.concatenate([np.full(h[0].size, i, dtype=np.int64) for i, h in enumerate(hist)] or [np.empty(0, int)])
        ht = np.concatenate([h[0] for h in hist]) if hist else np.empty(0)
        hv = np.concatenate([h[1] for h in hist]) if hist else np.empty(0)
        types = tuple(sorted(vocabulary, key=vocabulary.__getitem__))
        return cls(list(data.series), types, now, sid[keep], t[keep], v[keep], score[keep],
                   code[keep].astype(np.int64), hsid, ht, hv)


# -- findings ---------------------------------------------------------------------------------------


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(round(float(epoch_s), 6), tz=UTC)


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _type_name(name: str) -> str:
    """An episode of high scores without a type (an older edge) is ``unclassified``."""
    return "unclassified" if name == "none" else name


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _resolution(sensor: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per sensor, the smallest step between its distinct recent values: its resolution, where it
    is quantised, i.e. where values repeat (at most half as many distinct values as readings); 0
    elsewhere (continuous values: a few of them are spaced by their scatter, not by a step)."""
    out = np.zeros(n)
    if sensor.size < 2:
        return out
    order = np.lexsort((values, sensor))
    s, x = sensor[order], values[order]
    step = np.diff(x)
    same_sensor = s[1:] == s[:-1]
    moved = same_sensor & (step > 1e-9 * np.maximum(np.abs(x[1:]), 1.0))
    best = np.full(n, np.inf)
    np.minimum.at(best, s[1:][moved], step[moved])
    distinct = np.bincount(s, minlength=n) - np.bincount(s[1:][same_sensor & ~moved], minlength=n)
    quantised = np.isfinite(best) & (2 * distinct <= np.bincount(s, minlength=n))
    return np.where(quantised, best, 0.0)


@dataclass(frozen=True)
class _Context:
    d: _Data
    config: AnomalyConfig
    baselines: list[Baseline]

    # -- 1. sustained deviation from the hour-of-week baseline --

    def deviations(self) -> list[Finding]:
        d, cfg = self.d, self.config
        n = len(d.meta)
        recent = np.isfinite(d.v) & (d.t > d.now - cfg.deviation_window_s)
        s, t, v = d.sid[recent], d.t[recent], d.v[recent]
        how = hour_of_week(t, cfg.utc_offset_hours)
        n_recent = np.bincount(s, minlength=n)
        resolution = _resolution(s, v, n)
        rows = []
        for b in self.baselines:
            location, scale, trusted = b.at(s, t, cfg.utc_offset_hours)
            # a quantised sensor (0.1 degC steps) is no better known than its step, however steady
            scale = np.maximum(scale, resolution[s])
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(trusted, (v - location) / scale, np.nan)
            ok = np.isfinite(z)
            k = s[ok]
            med_abs, count = grouped_median(k, np.abs(z[ok]), n)
            med_z = grouped_median(k, z[ok], n)[0]
            # how well the period's few readings pin its level down: the standard error of their
            # median (1.2533 x sigma / sqrt n, sigma from the readings' own scatter about the baseline)
            spread = MAD_TO_SIGMA * grouped_median(k, np.abs(z[ok] - med_z[k]), n)[0]
            se = MEAN_ABS_TO_SIGMA * np.nan_to_num(spread) / np.sqrt(np.maximum(count, 1))
            rows.append({"median_abs_z": med_abs, "median_z": med_z, "level_z": med_z / np.sqrt(1.0 + se**2),
                         "readings": count,
                         "value": grouped_median(k, v[ok], n)[0],
                         "baseline": grouped_median(k, location[ok], n)[0],
                         "scale": grouped_median(k, scale[ok], n)[0],
                         "sensor": k, "how": how[ok]})
        out = []
        for i, meta in enumerate(d.meta):
            used = [j for j, b in enumerate(self.baselines) if b.used[i]]
            decisive = [j for j in used if rows[j]["readings"][i] >= cfg.min_recent_readings]
            if not decisive:
                continue
            j = decisive[-1]
            r = rows[j]
            # the period's level against the hour's: the median z (a noisy sensor's readings scatter
            # around their level; their median |z| would measure the scatter, not a shift), less
            # what the uncertainty of that median allows (a few readings of a noisy sensor)
            level_z = abs(float(r["level_z"][i]))
            if level_z < cfg.deviation_z_warning:
                continue
            out.append(self._deviation_finding(i, meta, j, rows, used, int(n_recent[i]), level_z))
        return _merge_phases(out)

    def _deviation_finding(self, i: int, meta: SensorSeries, j: int, rows: list[dict[str, Any]], used: list[int],
                           n_recent: int, level_z: float) -> Finding:
        d, cfg = self.d, self.config
        r = rows[j]
        value, base, scale, med_z = (float(r[k][i]) for k in ("value", "baseline", "scale", "median_z"))
        signed_level_z = float(r["level_z"][i])
        pct = (value - base) / abs(base) * 100.0 if base != 0 else None
        window = cfg.baseline_windows_days[j]
        readings = int(r["readings"][i])
        in_period = (d.sid == i) & np.isfinite(d.v) & (d.t > d.now - cfg.deviation_window_s)
        times = d.t[in_period]
        kind = text.device_kind(meta.device_id, meta.device_kind)
        q = text.quantity(meta.metric)
        period = "the last hour" if cfg.deviation_window_s == 3600 else (
            f"the last {cfg.deviation_window_s / 3600:g} h" if cfg.deviation_window_s % 3600 == 0
            else f"the last {cfg.deviation_window_s / 60:g} min")
        shift = f", {text.format_pct(pct)} from" if pct is not None else " against"
        description = (f"{kind} {meta.device_id} {q} ({meta.metric}) at {text.format_value(value, meta.unit)} over "
                       f"{period}{shift} its hour-of-week baseline {text.format_value(base, meta.unit)} "
                       f"(z {signed_level_z:+.1f} over {readings} readings, {window}-day baseline).")
        windows = [{"window_days": w, "used": bool(self.baselines[k].used[i]),
                    "median_abs_z": _num(rows[k]["median_abs_z"][i]), "median_z": _num(rows[k]["median_z"][i]),
                    "readings": int(rows[k]["readings"][i]), "baseline_median": _num(rows[k]["baseline"][i]),
                    "baseline_scale": _num(rows[k]["scale"][i])}
                   for k, w in enumerate(cfg.baseline_windows_days)]
        facts = {
            "window_days": window, "median_abs_z": float(r["median_abs_z"][i]), "median_z": med_z,
            "level_z": signed_level_z, "readings": readings,
            "period_readings": n_recent, "period_s": cfg.deviation_window_s, "value_median": value,
            "baseline_median": base, "baseline_scale": scale, "deviation_pct": pct,
            "hours_of_week": np.unique(r["how"][r["sensor"] == i]).tolist(), "utc_offset_hours": cfg.utc_offset_hours,
            "z_threshold": cfg.deviation_z_warning, "windows": windows,
            "windows_used": [cfg.baseline_windows_days[k] for k in used],
        }
        confidence = len(used) / len(self.baselines) * readings / max(n_recent, 1)
        severity = "CRITICAL" if level_z >= cfg.deviation_z_critical else "WARNING"
        sign = 1.0 if med_z >= 0 else -1.0
        return Finding(
            agent=AGENT, type="baseline_deviation", severity=severity, timestamp=_utc(times[-1]),
            device_id=meta.device_id, description=description, substation=meta.substation, metric=meta.metric,
            value=value, threshold=base + sign * cfg.deviation_z_warning * scale, nominal=base,
            confidence=round(confidence, 4),
            recommendation=text.recommendation(meta.metric, "baseline_deviation", kind, meta.device_id,
                                               meta.substation),
            facts=facts, start=_utc(times[0]),
            # the phases of one quantity (voltage_l1..l3) are one condition of the device: see _merge_phases
            key=f"{AGENT}:baseline_deviation:{meta.substation}:{meta.device_id}:{sensor_type(meta.metric)}",
        )

    # -- 2 and 3. episodes and their correlation --

    def members(self, eps: Episodes) -> list[dict[str, Any]]:
        """One facts entry per episode, with the peak reading's place against every baseline; the
        keys that start with ``_`` are for :func:`correlate_episodes` (the series, its equipment
        kind, the episode's span in epoch seconds), not facts."""
        d, cfg = self.d, self.config
        p = eps.peak_index
        how = hour_of_week(d.t[p], cfg.utc_offset_hours)
        per_window = [(b, b.z(d.sid[p], d.t[p], d.v[p], cfg.utc_offset_hours), *b.at(d.sid[p], d.t[p], cfg.utc_offset_hours)[:2])
                      for b in self.baselines]
        out = []
        for k in range(len(eps)):
            i, pk = int(eps.sensor[k]), int(p[k])
            meta = d.meta[i]
            value = float(d.v[pk])
            windows, chosen = [], None
            for b, z, location, scale in per_window:
                h = int(how[k])
                trusted = bool(b.trusted[i, h])
                med = float(location[k])
                w = {"window_days": b.window_days, "used": bool(b.used[i]), "trusted": trusted, "hour_of_week": h,
                     "count": int(b.count[i, h]), "median": _num(med), "scale": _num(scale[k]),
                     "z": _num(z[k]) if trusted else None,
                     "deviation_pct": (value - med) / abs(med) * 100.0 if trusted and med != 0 and np.isfinite(value)
                     else None}
                windows.append(w)
                if trusted:
                    chosen = w
            first, last = int(eps.first[k]), int(eps.last[k])
            span = np.arange(first, last + 1)
            high = span[d.score[span] >= cfg.score_threshold]
            top = np.sort(high[np.argsort(-d.score[high], kind="stable")[:cfg.max_readings_in_facts]])
            out.append({
                "substation": meta.substation, "device_id": meta.device_id, "metric": meta.metric, "unit": meta.unit,
                "type": _type_name(d.types[int(eps.type_code[k])]), "peak_score": float(eps.peak[k]),
                "start": _utc(eps.start[k]).isoformat(), "end": _utc(eps.end[k]).isoformat(),
                "duration_s": round(float(eps.end[k] - eps.start[k]), 6), "high_readings": int(eps.high_count[k]),
                "peak_at": _utc(d.t[pk]).isoformat(), "value_at_peak": _num(value), "baseline": chosen,
                "baseline_windows": windows, "scored_share": float(eps.scored_share[k]),
                "readings": [{"ts": _utc(d.t[j]).isoformat(), "value": _num(d.v[j]), "score": float(d.score[j]),
                              "type": d.types[int(d.code[j])]} for j in top.tolist()],
                "_series": [meta.substation, meta.device_id, meta.metric], "_kind": meta.device_kind,
                "_start": float(eps.start[k]), "_end": float(eps.end[k]),
            })
        return out


@dataclass(frozen=True)
class _EpisodeText:
    """The findings of episodes, from their facts entries (:meth:`_Context.members`) alone."""

    config: AnomalyConfig
    model: str

    def _headline(self, lead: dict[str, Any]) -> list[str]:
        """"Transformer TR-07 showing unexpected temperature spike. Temperature: 65°C (+12% from baseline)."."""
        kind = text.device_kind(lead["device_id"], lead["_kind"])
        q = text.quantity(lead["metric"])
        what = _TYPE_WORDS.get(lead["type"], lead["type"])
        out = [f"{kind} {lead['device_id']} showing unexpected {q} {what}."]
        if lead["value_at_peak"] is not None:
            shift = ""
            base = lead["baseline"]
            if base is not None and base["deviation_pct"] is not None:
                shift = f" ({text.format_pct(base['deviation_pct'])} from baseline)"
            out.append(f"{q[:1].upper()}{q[1:]}: {text.format_value(lead['value_at_peak'], lead['unit'])}{shift}.")
        return out

    def _score_sentence(self, peak: float) -> str:
        return f"{text.MODEL_NAMES.get(self.model, 'Anomaly')} score: {peak:.2f}."

    def _recommendation(self, m: dict[str, Any]) -> str:
        return text.recommendation(m["metric"], m["type"], text.device_kind(m["device_id"], m["_kind"]),
                                   m["device_id"], m["substation"])

    def lone_finding(self, m: dict[str, Any]) -> Finding:
        cfg = self.config
        sentences = [*self._headline(m), self._score_sentence(m["peak_score"])]
        rec = self._recommendation(m)
        description = " ".join(sentences)
        facts = {k: v for k, v in m.items() if not k.startswith("_")}
        facts |= {"score": m["peak_score"], "score_threshold": cfg.score_threshold,
                  "alert": f"ANOMALY DETECTED: {description} {rec}"}
        base = m["baseline"]
        return Finding(
            agent=AGENT, type=f"anomaly_{m['type']}",
            severity="CRITICAL" if m["peak_score"] >= cfg.critical_score else "WARNING",
            timestamp=_utc(m["_end"]), device_id=m["device_id"], description=description, substation=m["substation"],
            metric=m["metric"], value=m["value_at_peak"], nominal=base["median"] if base else None,
            confidence=round(m["scored_share"], 4), recommendation=rec, facts=facts, start=_utc(m["_start"]),
            key=f"{AGENT}:episode:{m['substation']}:{m['device_id']}:{m['metric']}",
        )

    def group_finding(self, group: list[dict[str, Any]]) -> Finding:
        cfg = self.config
        group = sorted(group, key=lambda m: (-m["peak_score"], m["_start"], m["substation"], m["device_id"],
                                             m["metric"]))
        lead = group[0]
        substations = sorted({m["substation"] for m in group})
        devices = sorted({(m["substation"], m["device_id"]) for m in group})
        scope = scope_of(substations, devices)
        peak = lead["peak_score"]
        lead_q = text.quantity(lead["metric"])
        what = _TYPE_WORDS.get(lead["type"], lead["type"])
        prefix: list[str] = []
        if scope == "grid":
            prefix = [f"Grid-wide event: {lead_q} {what} seen at {len(substations)} substations "
                      f"({', '.join(substations)})."]
            scope_text = f"grid-wide: {len(substations)} substations"
        elif scope == "substation":
            names = sorted({dev for _, dev in devices})
            prefix = [f"Correlated anomaly at {lead['substation']} on {len(names)} devices ({', '.join(names)})."]
            scope_text = f"{len(names)} devices of {lead['substation']}"
        else:
            scope_text = f"multiple sensors of {lead['device_id']}"
        sentences = [*prefix, *self._headline(lead)]
        if scope != "grid":
            sentences += self._also(lead, group)
        sentences.append(self._score_sentence(peak))
        rec = self._recommendation(lead)
        if scope == "grid" and not rec.startswith("Inform the system operator"):
            rec = f"Grid-wide event: inform the system operator. {rec}"
        alert = f"ANOMALY DETECTED: {' '.join(sentences)} {rec}"
        sensors = sorted({(m["substation"], m["device_id"], m["metric"]) for m in group})
        description = " ".join(sentences)
        if scope == "device":
            description += f" Seen on {scope_text}: {', '.join(s[2] for s in sensors)}."
        member_facts = [{k: v for k, v in m.items() if not k.startswith("_")} for m in group]
        facts = {
            "scope": scope, "scope_text": scope_text, "grid_wide": scope == "grid", "score": peak,
            "score_threshold": cfg.score_threshold, "substations": substations,
            "devices": [dev for _, dev in devices], "sensors": [f"{s}/{dev} {metric}" for s, dev, metric in sensors],
            "types": dict(sorted(Counter(m["type"] for m in group).items())), "lead": member_facts[0],
            "members": member_facts[:cfg.max_members_in_facts], "members_total": len(group),
            "correlation_slack_s": cfg.correlation_slack_s, "alert": alert,
        }
        if scope == "grid":
            key = f"{AGENT}:correlated:grid:{','.join(sorted({sensor_type(m['metric']) for m in group}))}"
        else:
            key = f"{AGENT}:correlated:{lead['substation']}:{','.join(dev for _, dev in devices)}"
        base = lead["baseline"]
        return Finding(
            agent=AGENT, type="correlated_anomaly", severity=_GROUP_SEVERITY[(scope, peak >= cfg.critical_score)],
            timestamp=_utc(max(m["_end"] for m in group)), device_id=lead["device_id"], description=description,
            substation=lead["substation"], metric=lead["metric"], value=lead["value_at_peak"],
            nominal=base["median"] if base else None,
            confidence=round(float(np.mean([m["scored_share"] for m in group])), 4), recommendation=rec, facts=facts,
            start=_utc(min(m["_start"] for m in group)), key=key,
        )

    def _also(self, lead: dict[str, Any], group: list[dict[str, Any]]) -> list[str]:
        """"Oil quality also degrading.", "FEEDER-F12 current also showing a step.": one per other quantity."""
        phrases: list[str] = []
        for m in group:
            if m["_series"] == lead["_series"]:
                continue
            q = text.quantity(m["metric"])
            what = _TYPE_WORDS.get(m["type"], m["type"])
            if m["device_id"] == lead["device_id"]:
                subject = f"{q[:1].upper()}{q[1:]}"
            else:
                subject = f"{m['device_id']} {q}"
            phrase = (f"{subject} also degrading." if q in text.QUALITY_QUANTITIES
                      else f"{subject} also showing {_article(what)} {what}.")
            if phrase not in phrases and not (m["device_id"] == lead["device_id"]
                                               and q == text.quantity(lead["metric"])):
                phrases.append(phrase)
        if len(phrases) > _MAX_PHRASES:
            phrases = [*phrases[:_MAX_PHRASES], f"And {len(phrases) - _MAX_PHRASES} more."]
        return phrases
