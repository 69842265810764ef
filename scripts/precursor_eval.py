"""Lead times of the fault precursor on real equipment data, beside same-run baselines.

    .venv/bin/python scripts/precursor_eval.py [--data ../shared/data] [--ramps 100] [--seed 0]

ETTh1 (hourly transformer oil temperature OT and six loads, 2016-07 to 2018-06, no labelled failures):
- false warnings: the precursor scanned every 6 h over the clean record (warning episodes, share of
  time in warning);
- injected faults: a residual ramp of +0.5 K/day added to the real OT from a random hour; the "failure"
  is the ramp reaching +10 K (20 days later). Lead = failure time - first warning at or after the ramp's
  start (missed if none before the failure).
Baselines, same run, same scan instants: (a) a plain threshold on OT at the record's 99th percentile;
(b) the maintenance predictor's oil-trend logic: a 7-day Theil-Sen of OT, warn when it reaches that
threshold within 48 h; (c) a plain residual threshold: the same robust baseline, warn when the
residual's level is above half the fault limit (+5 K).

SKAB (1 s water-pump testbed, labelled anomalies): the precursor on vibration (Accelerometer1RMS) and on
the Thermocouple temperature, each explained by Current, Voltage and Volume Flow, windows scaled to the
files (240 s reference, 60 s window, 120 s horizon, 5 s step); each file's limit fixed at its first
300 s level + 4 standard deviations of the quantity over anomaly-free.csv; warning episodes on anomaly-free.csv and before each
labelled onset (normal operation), and the delay after each onset, beside plain thresholds at the limit
and at half the margin.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.maintenance_predictor.precursor import PrecursorConfig, assess_precursor, scan  # noqa: E402
from agents.maintenance_predictor.trend import theil_sen  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RAMP_K_PER_DAY = 0.5
FAULT_LIMIT_K = 10.0
STEP_H = 6.0


def load_etth1(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hours since the first row, OT, the six loads)."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    stamps = np.array([r[0] for r in rows], dtype="datetime64[s]")
    values = np.array([[float(x) for x in r[1:]] for r in rows])
    return (stamps - stamps[0]).astype(np.float64) / 3600.0, values[:, 6], values[:, :6]


def episodes(flags: np.ndarray) -> int:
    """Runs of consecutive True."""
    f = np.asarray(flags, dtype=bool)
    return int(np.count_nonzero(f & ~np.r_[False, f[:-1]]))


def oil_trend_baseline(t: np.ndarray, ot: np.ndarray, times: np.ndarray, threshold: float) -> np.ndarray:
    """The predictor's oil-trend logic: 7-day Theil-Sen of OT, warn when the threshold is due within 48 h."""
    out = np.zeros(times.size, dtype=bool)
    lo = np.searchsorted(t, times - 7 * 24.0, side="right")
    hi = np.searchsorted(t, times, side="right")
    for k in range(times.size):
        fit = theil_sen(t[lo[k]:hi[k]] / 24.0, ot[lo[k]:hi[k]])
        out[k] = fit is not None and fit.hours_to_exceed(threshold) <= 48.0
    return out


def _lead(times: np.ndarray, flags: np.ndarray, failure_h: float) -> float:
    hit = np.flatnonzero(flags & (times <= failure_h))
    return float(failure_h - times[hit[0]]) if hit.size else math.nan


def evaluate_etth1(path: Path, ramps: int = 100, seed: int = 0, config: PrecursorConfig = PrecursorConfig(),
                   include_baselines: bool = True, step_h: float = STEP_H) -> dict[str, dict[str, float]]:
    t, ot, loads = load_etth1(path)
    threshold = float(np.percentile(ot, 99))
    years = (t[-1] - t[0]) / (365.25 * 24)
    clean = scan(t, ot, loads, every_hours=step_h, residual_limit=FAULT_LIMIT_K, config=config)
    idx = np.searchsorted(t, clean.now_h, side="right") - 1
    methods: dict[str, dict[str, np.ndarray]] = {"precursor": {"clean": clean.warning}}
    if include_baselines:
        methods["ot_threshold_p99"] = {"clean": ot[idx] >= threshold}
        methods["oil_trend_48h"] = {"clean": oil_trend_baseline(t, ot, clean.now_h, threshold)}
        methods["residual_above_half_limit"] = {"clean": clean.excess_now >= FAULT_LIMIT_K / 2}
    rng = np.random.default_rng(seed)
    first = t[0] + config.reference_hours + config.window_hours
    ramp_days = FAULT_LIMIT_K / RAMP_K_PER_DAY
    starts = rng.uniform(first, t[-1] - ramp_days * 24.0, size=ramps)
    leads: dict[str, list[float]] = {m: [] for m in methods}
    for start in starts:
        failure = start + ramp_days * 24.0
        faulty = ot + np.clip((t - start) / 24.0 * RAMP_K_PER_DAY, 0.0, None)
        sc = scan(t, faulty, loads, every_hours=step_h, start_h=start, end_h=failure, residual_limit=FAULT_LIMIT_K,
                  config=config)
        leads["precursor"].append(_lead(sc.now_h, sc.warning, failure))
        if include_baselines:
            j = np.searchsorted(t, sc.now_h, side="right") - 1
            leads["ot_threshold_p99"].append(_lead(sc.now_h, faulty[j] >= threshold, failure))
            leads["oil_trend_48h"].append(_lead(sc.now_h, oil_trend_baseline(t, faulty, sc.now_h, threshold), failure))
            leads["residual_above_half_limit"].append(_lead(sc.now_h, sc.excess_now >= FAULT_LIMIT_K / 2, failure))
    out: dict[str, dict[str, float]] = {}
    for m, d in methods.items():
        lead = np.array(leads[m])
        found = lead[np.isfinite(lead)]
        out[m] = {"false_episodes_per_year": episodes(d["clean"]) / years, "share_of_time_warning": float(d["clean"].mean()),
                  "ramps": float(lead.size), "detected": float(found.size / lead.size),
                  "lead_ge_24h": float(np.mean(lead >= 24.0)), "lead_ge_48h": float(np.mean(lead >= 48.0)),
                  "median_lead_h": float(np.median(found)) if found.size else math.nan,
                  "median_lead_h_all": float(np.median(np.where(np.isfinite(lead), lead, 0.0)))}
    out["_setup"] = {"threshold_ot_c": threshold, "years": years, "ramp_k_per_day": RAMP_K_PER_DAY,
                     "fault_limit_k": FAULT_LIMIT_K, "step_h": step_h}
    return out


# ------------------------------------------------------------------------------------------------ SKAB

SKAB_DRIVERS = ("Current", "Voltage", "Volume Flow RateRMS")
SKAB_QUANTITIES = ("Accelerometer1RMS", "Thermocouple")
SKAB_CONFIG = PrecursorConfig(reference_hours=240 / 3600, window_hours=60 / 3600, horizon_hours=120 / 3600, bins=20,
                              min_slope_per_day=0.0)
SKAB_LIMIT_SIGMAS = 4.0  # the limit: the file's first level + this many normal-operation standard deviations


def load_skab(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(hours, {quantity: values}, drivers, anomaly 0/1)."""
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    head, body = rows[0], rows[1:]
    stamps = np.array([r[0].replace(" ", "T") for r in body], dtype="datetime64[s]")
    col = {name: i for i, name in enumerate(head)}

    def num(name: str) -> np.ndarray:
        return np.array([float(r[col[name]]) for r in body])

    anomaly = num("anomaly") if "anomaly" in col else np.zeros(len(body))
    return ((stamps - stamps[0]).astype(np.float64) / 3600.0, {q: num(q) for q in SKAB_QUANTITIES},
            np.column_stack([num(c) for c in SKAB_DRIVERS]), anomaly)


def evaluate_skab(root: Path, step_s: float = 5.0, config: PrecursorConfig = SKAB_CONFIG,
                  limit_sigmas: float = SKAB_LIMIT_SIGMAS) -> dict[str, dict[str, float]]:
    """Per quantity and method: warning episodes on anomaly-free.csv and before each labelled onset
    (normal operation), anomalies warned of between the onset and the anomaly's end, and the median
    delay after the onset. Each file gets a fixed limit, as a site would set one: its level over the
    first 300 s plus ``limit_sigmas`` times the quantity's standard deviation over anomaly-free.csv
    (its normal operating spread). Baselines: a plain threshold at that limit, and one at half the margin."""
    free = root / "anomaly-free" / "anomaly-free.csv"
    files = [free, *sorted((root / "valve1").glob("*.csv")), *sorted((root / "valve2").glob("*.csv")),
             *sorted((root / "other").glob("*.csv"))]
    t_free, q_free, _, _ = load_skab(free)
    sigma = {q: float(np.std(y)) for q, y in q_free.items()}
    acc: dict[str, dict[str, list[float]]] = {}
    normal_hours = 0.0
    for f in files:
        t, quantities, x, an = load_skab(f)
        onset_i = np.flatnonzero(an > 0)
        onset = float(t[onset_i[0]]) if onset_i.size else math.inf
        end = float(t[onset_i[-1]]) if onset_i.size else math.inf
        first = t[0] + config.reference_hours + config.window_hours
        normal_hours += max(0.0, min(onset, t[-1]) - first)
        times = np.arange(first, t[-1] + 1e-12, step_s / 3600)
        hi = np.searchsorted(t, times, side="right")
        for q, y in quantities.items():
            level0 = float(np.mean(y[t <= first]))
            limit = level0 + limit_sigmas * sigma[q]
            flags = {"threshold_at_limit": y[hi - 1] >= limit,
                     "threshold_half_margin": y[hi - 1] >= level0 + 0.5 * limit_sigmas * sigma[q],
                     "precursor": np.array([assess_precursor(t, y, x, now_h=float(now), limit=limit,
                                                             config=config).warning for now in times], dtype=bool)}
            for m, fl in flags.items():
                d = acc.setdefault(f"{q} / {m}", {"false": [], "delay_s": [], "anomalies": []})
                d["false"].append(episodes(fl & (times < onset)))
                if onset_i.size:
                    hit = np.flatnonzero(fl & (times >= onset) & (times <= end))
                    d["anomalies"].append(1.0)
                    d["delay_s"].append(float((times[hit[0]] - onset) * 3600) if hit.size else math.nan)
    out: dict[str, dict[str, float]] = {}
    for key, d in acc.items():
        delay = np.array(d["delay_s"])
        out[key] = {"false_episodes_anomaly_free": float(d["false"][0]),
                    "false_episodes_per_hour_normal": float(sum(d["false"]) / normal_hours),
                    "anomalies": float(len(d["anomalies"])), "warned": float(np.isfinite(delay).sum()),
                    "median_delay_s": float(np.nanmedian(delay)) if np.isfinite(delay).any() else math.nan}
    out["_setup"] = {"normal_hours": normal_hours, "files": float(len(files))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--ramps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-skab", action="store_true")
    a = p.parse_args(argv)
    ett = a.data / "ett" / "ETTh1.csv"
    if not ett.exists():
        print(f"error: {ett} not found (--data)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    r = evaluate_etth1(ett, a.ramps, a.seed)
    setup = r.pop("_setup")
    print(f"ETTh1: {setup['years']:.2f} years, ramp +{setup['ramp_k_per_day']} K/day to +{setup['fault_limit_k']} K "
          f"({a.ramps} ramps, seed {a.seed}), scan every {setup['step_h']:g} h, "
          f"OT threshold (p99) {setup['threshold_ot_c']:.1f} C")
    print(f"{'method':28s} {'false ep/yr':>11s} {'time warn':>9s} {'detected':>8s} {'>=24h':>6s} {'>=48h':>6s} "
          f"{'median lead h':>13s}")
    for m, d in r.items():
        print(f"{m:28s} {d['false_episodes_per_year']:11.1f} {100 * d['share_of_time_warning']:8.2f}% "
              f"{100 * d['detected']:7.0f}% {100 * d['lead_ge_24h']:5.0f}% {100 * d['lead_ge_48h']:5.0f}% "
              f"{d['median_lead_h']:13.0f}")
    if not a.skip_skab and (a.data / "skab").exists():
        s = evaluate_skab(a.data / "skab")
        setup = s.pop("_setup")
        print(f"\nSKAB ({setup['files']:.0f} files, {setup['normal_hours']:.2f} h of normal operation scanned): "
              "quantity on Current, Voltage, Flow; 240 s reference + 60 s window, scan every 5 s; "
              f"limit = first 300 s level + {SKAB_LIMIT_SIGMAS:g} sd of anomaly-free")
        print(f"{'quantity / method':40s} {'false anomaly-free':>18s} {'false /h normal':>15s} {'warned':>8s} "
              f"{'median delay s':>14s}")
        for m, d in s.items():
            print(f"{m:40s} {d['false_episodes_anomaly_free']:18.0f} {d['false_episodes_per_hour_normal']:15.1f} "
                  f"{d['warned']:3.0f}/{d['anomalies']:<4.0f} {d['median_delay_s']:14.0f}")
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
