"""Detection quality on a real series with injected anomalies: detection rate, delay, false alarms.

``python -m models.evaluation [--csv ../shared/data/ett/ETTh1.csv] [--column OT]`` prints the
tables in ``docs/detection.md``. It takes one series, scores it as it is (alarms there are either
false alarms or the data's own anomalies), then makes many copies, injects one anomaly of one type
and size into each copy at a random time in the evaluated range, scores all copies at once, and
counts per type and size:

- detected: an alarm (combined score >= 0.5) within the type's detection window after the start,
  at a sample where the unmodified series had none (so the data's own alarms earn no credit);
- delay: samples from the start to that alarm (median over the detected copies);
- typed: the share of detected copies whose first alarm names the injected type.

Hub side (it may train a model with scikit-learn); nothing on the edge imports it.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.detectors import ANOMALY_TYPES, DetectorConfig
from models.runtime import Model, Scorer

__all__ = ["Injection", "InjectionResult", "alarm_onsets", "evaluate", "inject"]


@dataclass(frozen=True)
class Injection:
    kind: str  # step | drift | spike | oscillation | dropout | frozen
    size: float  # value units (dropout and frozen: unused)
    duration: int  # samples the anomaly lasts (step and drift: until the end of the window)
    window: int  # samples after the start in which an alarm counts as a detection
    period: float = 6.0  # oscillation period, samples

    @property
    def label(self) -> str:
        if self.kind in ("dropout", "frozen"):
            return f"{self.kind} {self.duration} samples"
        if self.kind == "drift":
            return f"drift {self.size:.3g} over {self.duration} samples"
        if self.kind == "oscillation":
            return f"oscillation +-{self.size:.3g}, period {self.period:g}"
        return f"{self.kind} {self.size:+.3g}"


@dataclass(frozen=True)
class InjectionResult:
    injection: Injection
    copies: int
    detected: int
    median_delay: float | None
    typed: float  # share of detections whose first alarm named the injected type
    named: float  # share of detections where some alarm in the window named it


def inject(x: np.ndarray, injection: Injection, t0: int) -> np.ndarray:
    """A copy of ``x`` with ``injection`` starting at sample ``t0``."""
    y = np.array(x, dtype=np.float64, copy=True)
    k, n = injection.kind, injection.duration
    end = min(len(y), t0 + n)
    u = np.arange(end - t0)
    if k == "step":
        y[t0:] += injection.size
    elif k == "drift":
        y[t0:end] += injection.size * u / n
        y[end:] += injection.size
    elif k == "spike":
        y[t0:end] += injection.size
    elif k == "oscillation":
        y[t0:end] += injection.size * np.sin(2 * np.pi * u / injection.period)
    elif k == "dropout":
        y[t0:end] = np.nan
    elif k == "frozen":
        y[t0:end] = y[t0 - 1]
    else:
        raise ValueError(f"unknown injection kind {k!r}")
    return y


def alarm_onsets(score: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Indices where the score rises to the threshold (the start of each alarm episode)."""
    alarm = score >= threshold
    return np.nonzero(alarm & ~np.r_[False, alarm[:-1]])[0]


def _score_many(series: np.ndarray, model: Model | None, config: DetectorConfig | None,
                block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Scores and type codes of the first column of many groups ``(n, T, inputs)``, streamed in blocks."""
    scorer = Scorer(model, config=config)
    n, t, k = series.shape
    inputs = model.spec.inputs if model is not None else tuple(f"input{j}" for j in range(k))
    keys = [(f"s{i}", inputs[j]) for i in range(n) for j in range(k)]
    flat = series.transpose(0, 2, 1).reshape(n * k, t)
    score = np.zeros((n, t), dtype=np.float32)
    codes = np.zeros((n, t), dtype=np.int8)
    for lo in range(0, t, block):
        out = scorer.score_block(keys, flat[:, lo:lo + block])
        score[:, lo:lo + block] = out.score[0::k]
        codes[:, lo:lo + block] = out.type[0::k]
    return score, codes


def evaluate(x: np.ndarray, injections: list[Injection], *, start: int, stop: int | None = None,
             copies: int = 30, model: Model | None = None, config: DetectorConfig | None = None,
             avoid: np.ndarray | None = None, seed: int = 0) -> tuple[list[InjectionResult], np.ndarray, np.ndarray]:
    """Inject each of ``injections`` into ``copies`` copies of ``x`` at random starts in
    ``[start, stop)`` (not within ``avoid``, a boolean mask of samples to keep clear of), score,
    and count. ``x`` is ``(T,)``, or ``(T, inputs)`` for a model of several inputs: the anomaly
    goes into the first column, which is the one scored. Returns the results and the unmodified
    series' scores and type codes."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    stop = len(x) if stop is None else stop
    clean_score, clean_codes = _score_many(x[None], model, config)
    clean_alarm = clean_score[0] >= 0.5
    blocked = np.zeros(len(x), dtype=bool) if avoid is None else avoid.copy()
    results = []
    rows, plan = [], []
    for inj in injections:
        latest = stop - inj.window - 1
        allowed = np.nonzero(~blocked[start:latest])[0] + start
        allowed = allowed[(allowed > 0)]
        t0s = rng.choice(allowed, size=copies, replace=len(allowed) < copies)
        for t0 in t0s:
            row = x.copy()
            row[:, 0] = inject(x[:, 0], inj, int(t0))
            rows.append(row)
            plan.append((inj, int(t0)))
    score, codes = _score_many(np.stack(rows), model, config)
    names = np.asarray(ANOMALY_TYPES)
    by_injection: dict[Injection, list[tuple[int | None, str | None, bool]]] = {}
    for i, (inj, t0) in enumerate(plan):
        seg = slice(t0, t0 + inj.window + 1)
        hit = np.nonzero((score[i, seg] >= 0.5) & ~clean_alarm[seg])[0]
        if len(hit):
            kinds = names[codes[i, t0 + hit]]
            found = (int(hit[0]), str(kinds[0]), bool(np.any(kinds == inj.kind)))
        else:
            found = (None, None, False)
        by_injection.setdefault(inj, []).append(found)
    for inj in injections:
        found = by_injection[inj]
        detected = [f for f in found if f[0] is not None]
        delays = [d for d, _, _ in detected]
        results.append(InjectionResult(
            inj, len(found), len(detected), float(np.median(delays)) if delays else None,
            float(np.mean([t == inj.kind for _, t, _ in detected])) if detected else 0.0,
            float(np.mean([n for _, _, n in detected])) if detected else 0.0))
    return results, clean_score[0], clean_codes[0]


def frozen_stretches(x: np.ndarray, min_run: int = 6) -> list[tuple[int, int]]:
    """``(start, length)`` of runs of ``min_run`` or more identical values (data the sensor did not update)."""
    same = np.r_[False, np.diff(x) == 0]
    edges = np.diff(np.r_[0, same.astype(np.int8), 0])
    starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
    return [(int(s) - 1, int(e - s) + 1) for s, e in zip(starts, ends) if e - s + 1 >= min_run]


def default_injections(scale: float) -> list[Injection]:
    """Two sizes per type, in units of ``scale`` (the series' typical change per sample), for hourly data."""
    return [
        Injection("step", 5.0 * scale, 0, 48), Injection("step", 10.0 * scale, 0, 48),
        Injection("drift", 10.0 * scale, 72, 96), Injection("drift", 20.0 * scale, 72, 96),
        Injection("spike", 6.0 * scale, 1, 2), Injection("spike", 12.0 * scale, 1, 2),
        Injection("oscillation", 2.0 * scale, 72, 72), Injection("oscillation", 4.0 * scale, 72, 72),
        Injection("dropout", 0.0, 6, 6), Injection("dropout", 0.0, 24, 24),
        Injection("frozen", 0.0, 12, 12), Injection("frozen", 0.0, 24, 24),
    ]


def _print_table(title: str, results: list[InjectionResult]) -> None:
    print(f"\n{title}\n")
    print("| injected | detected | median delay (samples) | first alarm names the type | an alarm in the window does |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in results:
        delay = "-" if r.median_delay is None else f"{r.median_delay:g}"
        print(f"| {r.injection.label} | {r.detected}/{r.copies} | {delay} | {100 * r.typed:.0f} % | {100 * r.named:.0f} % |")


SCORINGS = {
    "calibrated": DetectorConfig(),
    "exponential": DetectorConfig(tail_shape=0.0),
    "uncalibrated": DetectorConfig(calibrate=False, combine="max", quiet_warmup=0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description="detection rate, delay and false alarms on a real series")
    ap.add_argument("--csv", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "ett" / "ETTh1.csv"))
    ap.add_argument("--column", default="OT")
    ap.add_argument("--train-rows", type=int, default=8640, help="rows a model trains on (the standard ETTh1 split)")
    ap.add_argument("--copies", type=int, default=30)
    ap.add_argument("--model", choices=("none", "isolation_forest", "lof", "mahalanobis"), default="none",
                    help="also score with a model trained on the first --train-rows rows")
    ap.add_argument("--load", default=None,
                    help="the model also reads this load column (oil temperature against load), e.g. HUFL")
    ap.add_argument("--scoring", choices=tuple(SCORINGS), default="calibrated",
                    help="the detectors' scoring: calibrated (the default), calibrated with the exponential "
                         "tail throughout (tail_shape 0), or the scoring before calibration")
    args = ap.parse_args()

    from models.tabular import read_csv

    table = read_csv(args.csv, columns=[args.column, *([args.load] if args.load else [])])
    x = table.columns[args.column]
    hours = len(x)
    stretches = frozen_stretches(x)
    avoid = np.zeros(len(x), dtype=bool)
    for s, n in stretches:
        avoid[max(0, s - 48):s + n + 48] = True
    model = None
    if args.model != "none":
        from models.export import export_model
        from models.runtime import load_model
        from models.train import train_from_csv

        if args.load:
            from models.features import CrossFeature, FeatureSpec, compute_features
            from models.manifest import TrainingData
            from models.train import train_model

            spec = FeatureSpec.build(inputs=(args.column, args.load),
                                     series_features=("std", "slope", "roc", "zscore", "band2", "band4", "band8"),
                                     cross=(CrossFeature("oil_vs_load", (args.column, args.load)),))
            feats = compute_features(table.values([args.column, args.load])[:args.train_rows], spec)[spec.window - 1:]
            trained = train_model(feats, kind=args.model, spec=spec, name="eval",
                                  training=TrainingData(start=None, end=None, rows=len(feats), source="csv"))
        else:
            trained = train_from_csv(args.csv, kind=args.model, name="eval", columns=[args.column],
                                     rows=slice(0, args.train_rows))
        exported = export_model(trained)
        model = load_model(exported.manifest, exported.onnx)
    train = x[:args.train_rows]
    scale = float(np.std(np.diff(train[np.isfinite(train)])))  # typical change per sample
    series = table.values([args.column, args.load]) if args.load else x
    results, clean, codes = evaluate(series, default_injections(scale), start=args.train_rows, copies=args.copies,
                                     model=model, avoid=avoid, config=SCORINGS[args.scoring])
    onsets = alarm_onsets(clean)
    onsets = onsets[onsets >= 500]  # after warm-up
    in_frozen = np.zeros(len(x), dtype=bool)
    for s, n in stretches:
        in_frozen[s:s + n] = True
    names = np.asarray(ANOMALY_TYPES)[codes[onsets]]
    own = in_frozen[onsets]
    print(f"{args.csv} column {args.column}: {hours} samples; model: {args.model}"
          f"{f' of {args.column} and {args.load}' if args.load else ''}; sizes in units of the "
          f"standard deviation of its change per sample over the training rows, {scale:.3g}")
    print(f"frozen stretches in the data (>= 6 identical values): {len(stretches)}, "
          f"{sum(n >= 24 for _, n in stretches)} of them 24 samples long")
    print(f"alarm episodes on the unmodified series after warm-up: {len(onsets)}; inside frozen stretches: "
          f"{int(own.sum())} ({', '.join(sorted(set(names[own]))) or '-'}); elsewhere: {int((~own).sum())} "
          f"({', '.join(f'{t} {int(np.sum(names[~own] == t))}' for t in sorted(set(names[~own])))}) = "
          f"{(~own).sum() / (hours - 500):.5f} per sample")
    print("elsewhere at samples:", onsets[~own].tolist())
    _print_table(f"Injected into copies of {args.column}, starts in rows {args.train_rows}..{hours}", results)


if __name__ == "__main__":
    main()
