"""Detection quality on SKAB (Skoltech Anomaly Benchmark): outlier F1 and the changepoint NAB scores.

``sentinel models skab-eval --data ../shared/data/skab`` scores every experiment file (valve1/,
valve2/, other/) with each method, as a stream, and prints, beside the published leaderboard:

- outlier detection: F1, false-alarm rate FP / (FP + TN) and missed-alarm rate FN / (FN + TP) over
  the rows of every file's test part (labels in ``anomaly``), all files pooled;
- changepoint detection: NAB scores (standard / low FP / low FN) of the alarm onsets against a 60 s
  window to the right of each labelled changepoint;
- the alarm episodes per channel on ``anomaly-free/anomaly-free.csv`` after the warm-up.

Split: the first ``train_rows`` (400) rows of each file are warm-up (the detectors learn, nothing is
counted), the rest is the test part, as the tsad package's Evaluating notebook trains on the first
400 rows of each file. Every channel of a file is scored as its own series; a row's score is its
highest channel's. An alarm is a row scoring ``threshold`` (0.8, the edge's default) or more; its
episode is held, as the edge's ``AnomalyMonitor`` holds it, until ``clear_after`` (30) rows in a
row score below ``clear_below`` (0.6). The held state is the outlier prediction; the episodes'
first rows are the changepoint predictions.

Methods measured in the same run: the calibrated detectors (``DetectorConfig()``), the scoring
before calibration (``DetectorConfig(calibrate=False, combine="max", quiet_warmup=0)``) and a naive
rolling z-score (any channel more than ``z`` standard deviations from the mean of its previous
``zscore_window`` rows). Hub side; nothing on the edge imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.detectors import DetectorBank, DetectorConfig

__all__ = ["NAB_PROFILES", "SkabFile", "SkabResult", "evaluate_skab", "format_results", "hold_alarms", "nab_score",
           "outlier_metrics", "read_skab", "rolling_zscore", "skab_files"]

NAB_PROFILES = {"standard": (1.0, -0.11, -1.0), "low_fp": (1.0, -0.22, -1.0), "low_fn": (1.0, -0.11, -2.0)}
"""NAB weights (true positive, false positive, false negative) of each application profile."""

LEADERBOARD = {
    "outlier": [("Conv-AE", 0.78, 0.136, 0.280), ("MSET", 0.78, 0.397, 0.141),
                ("T-squared+Q (PCA)", 0.76, 0.266, 0.249), ("Isolation forest", 0.29, 0.026, 0.829)],
    "nab": [("MSCRED", 32.4, 16.5, 40.3), ("Isolation forest", 26.2, 19.5, 30.8),
            ("T-squared+Q (PCA)", 25.4, 14.5, 31.3), ("Conv-AE", 23.6, 21.5, 27.6)],
}


@dataclass(frozen=True)
class SkabFile:
    path: Path
    columns: list[str]
    values: np.ndarray  # (T, channels)
    time_s: np.ndarray  # seconds from the first row
    anomaly: np.ndarray  # bool (T,)
    changepoints: np.ndarray  # row indices


def read_skab(path: str | Path) -> SkabFile:
    """One SKAB CSV: ``datetime;<channels...>;anomaly;changepoint`` (the last two optional)."""
    path = Path(path)
    lines = path.read_text().splitlines()
    if not lines:
        raise ValueError(f"{path}: empty file")
    header = lines[0].split(";")
    if header[0] != "datetime":
        raise ValueError(f"{path}: first column is {header[0]!r}, expected 'datetime' (semicolon-separated SKAB file)")
    rows = [line.split(";") for line in lines[1:] if line.strip()]
    bad = [i + 2 for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path}: line {bad[0]} has a different number of fields than the header ({len(header)})")
    try:
        times = np.array([r[0].replace(" ", "T") for r in rows], dtype="datetime64[s]")
        data = np.array([[float(x) for x in r[1:]] for r in rows], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    names = header[1:]
    labelled = [n for n in ("anomaly", "changepoint") if n in names]
    keep = [j for j, n in enumerate(names) if n not in labelled]
    anomaly = data[:, names.index("anomaly")] > 0 if "anomaly" in names else np.zeros(len(rows), dtype=bool)
    cps = np.nonzero(data[:, names.index("changepoint")] > 0)[0] if "changepoint" in names else np.zeros(0, int)
    t = (times - times[0]).astype(np.float64) if len(rows) else np.zeros(0)
    return SkabFile(path, [names[j] for j in keep], data[:, keep], t, anomaly, cps)


def skab_files(root: str | Path) -> list[Path]:
    """The experiment files of a SKAB data folder (valve1, valve2, other), in a fixed order."""
    root = Path(root)
    out = [p for d in ("valve1", "valve2", "other") for p in sorted((root / d).glob("*.csv"),
                                                                   key=lambda p: (len(p.stem), p.stem))]
    if not out:
        raise ValueError(f"{root}: no SKAB experiment files (valve1/*.csv, valve2/*.csv, other/*.csv)")
    return out


# -- scoring methods ----------------------------------------------------------------------------

def detector_scores(values: np.ndarray, config: DetectorConfig | None = None, block: int = 256) -> np.ndarray:
    """Per-channel combined detector scores ``(channels, T)``, streamed in blocks of ``block`` rows."""
    x = np.asarray(values, dtype=np.float64).T
    bank = DetectorBank(x.shape[0], config)
    out = np.zeros(x.shape, dtype=np.float32)
    for lo in range(0, x.shape[1], block):
        out[:, lo:lo + block] = bank.update(x[:, lo:lo + block]).score
    return out


def channels_fisher(scores: np.ndarray, agreement_cost: float = 1.0, hill_p: float = 4.0) -> np.ndarray:
    """A row's score from its channels' scores ``(channels, T)`` by the detectors' Fisher combination
    across channels (agreement between sensors counts; see ``models.detectors.combine``), as
    ``(1, T)``."""
    from models.detectors import U_ALARM, hill

    a = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0 - 1e-12)
    u = U_ALARM * np.power(a / (1.0 - a), 1.0 / hill_p)  # each channel's surprise
    t = u.sum(axis=0)
    z = t * np.log(10.0)
    k = u.shape[0]
    terms = np.cumprod(np.concatenate([np.ones((1, len(t))), np.repeat(z[None, :], k - 1, axis=0)
                                       / np.arange(1, k)[:, None]], axis=0), axis=0)
    total = np.maximum(t - np.log10(terms.sum(axis=0)) - agreement_cost, u.max(axis=0))
    return hill(total / U_ALARM, hill_p)[None, :].astype(np.float32)


def rolling_zscore(values: np.ndarray, window: int = 100, z: float = 3.0) -> np.ndarray:
    """Naive baseline, per channel ``(channels, T)``: 1.0 where a value is more than ``z`` standard
    deviations of the previous ``window`` rows from their mean, else 0 (0 before a full window)."""
    x = np.asarray(values, dtype=np.float64).T
    c, t = x.shape
    out = np.zeros((c, t), dtype=np.float32)
    if t <= window:
        return out
    cs = np.concatenate([np.zeros((c, 1)), np.cumsum(x, axis=1)], axis=1)
    cs2 = np.concatenate([np.zeros((c, 1)), np.cumsum(x * x, axis=1)], axis=1)
    idx = np.arange(window, t)
    mean = (cs[:, idx] - cs[:, idx - window]) / window
    var = np.maximum((cs2[:, idx] - cs2[:, idx - window]) / window - mean ** 2, 0.0)
    sd = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = np.abs(x[:, idx] - mean) / sd
    out[:, window:] = np.where(sd > 0, zs > z, np.abs(x[:, idx] - mean) > 0).astype(np.float32)
    return out


def hold_alarms(score: np.ndarray, threshold: float = 0.8, clear_below: float = 0.6,
                clear_after: int = 30) -> np.ndarray:
    """The alarm state an ``AnomalyMonitor`` keeps for one series of scores: raised at ``threshold``,
    cleared after ``clear_after`` scores in a row below ``clear_below``."""
    held = np.zeros(len(score), dtype=bool)
    active, quiet = False, 0
    for i, s in enumerate(np.asarray(score, dtype=np.float64).tolist()):  # evaluation only, not a hot path
        if not active:
            if s >= threshold:
                active, quiet = True, 0
        elif s < clear_below:
            quiet += 1
            if quiet >= clear_after:
                active = False
        else:
            quiet = 0
        held[i] = active
    return held


def onsets(held: np.ndarray) -> np.ndarray:
    return np.nonzero(held & ~np.r_[False, held[:-1]])[0]


# -- metrics ------------------------------------------------------------------------------------

def outlier_metrics(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """``(F1, false-alarm rate, missed-alarm rate)`` of boolean predictions against labels."""
    tp = int(np.sum(pred & truth))
    fp = int(np.sum(pred & ~truth))
    fn = int(np.sum(~pred & truth))
    tn = int(np.sum(~pred & ~truth))
    f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    return f1, fp / max(fp + tn, 1), fn / max(fn + tp, 1)


def _sigmoid(y: float) -> float:
    return 2.0 / (1.0 + np.exp(5.0 * y)) - 1.0


def nab_raw(detections: np.ndarray, time_s: np.ndarray, changepoints: np.ndarray, window_s: float,
            weights: tuple[float, float, float]) -> tuple[float, float, float]:
    """``(score, null score, perfect score)`` of one file: NAB's scaled sigmoid for the first
    detection in each window ``[cp, cp + window_s]``, ``A_fp`` per detection outside every window,
    ``A_fn`` per window without one; null = no detection, perfect = each window's first row."""
    a_tp, a_fp, a_fn = weights
    det_t = time_s[detections]
    covered = np.zeros(len(det_t), dtype=bool)
    score = 0.0
    for cp in changepoints:
        t0 = time_s[cp]
        inside = (det_t >= t0) & (det_t <= t0 + window_s)
        covered |= inside
        if inside.any():
            y = (det_t[inside].min() - (t0 + window_s)) / window_s  # -1 at the window's start, 0 at its end
            score += a_tp * _sigmoid(y)
        else:
            score += a_fn
    score += a_fp * int((~covered).sum())
    n = len(changepoints)
    return score, a_fn * n, a_tp * _sigmoid(-1.0) * n


def nab_score(parts: list[tuple[float, float, float]]) -> float:
    """NAB's normalised score, 100 (S - S_null) / (S_perfect - S_null), summed over files."""
    s, null, perfect = (sum(p[i] for p in parts) for i in range(3))
    return 100.0 * (s - null) / (perfect - null) if perfect != null else 0.0


# -- the benchmark --------------------------------------------------------------------------------

@dataclass
class SkabResult:
    method: str
    f1: float
    far: float
    mar: float
    nab: dict[str, float]
    episodes: int  # alarm episodes (onsets, held) in the test parts
    raw_false: int  # onsets of a score >= threshold, not held, at rows not labelled anomalous (test parts)
    free_episodes: list[int] = field(default_factory=list)  # per channel of anomaly-free.csv, after warm-up
    free_columns: list[str] = field(default_factory=list)


Method = Callable[[np.ndarray], np.ndarray]


def default_methods(threshold: float = 0.8) -> dict[str, Method]:
    return {
        "calibrated detectors (fisher)": lambda v: detector_scores(v, DetectorConfig()),
        "calibrated detectors, channels combined (fisher)": lambda v: channels_fisher(
            detector_scores(v, DetectorConfig())),
        "calibrated, exponential tail throughout (tail_shape 0)": lambda v: detector_scores(
            v, DetectorConfig(tail_shape=0.0)),
        "before calibration (max)": lambda v: detector_scores(
            v, DetectorConfig(calibrate=False, combine="max", quiet_warmup=0)),
        "rolling z-score (100 rows, |z| > 3)": lambda v: rolling_zscore(v),
        "always alarm (reference)": lambda v: np.ones((1, len(v)), dtype=np.float32),
    }


def evaluate_skab(root: str | Path, methods: dict[str, Method] | None = None, *, train_rows: int = 400,
                  threshold: float = 0.8, clear_below: float = 0.6, clear_after: int = 30,
                  window_s: float = 60.0) -> list[SkabResult]:
    """Every method on every experiment file of ``root`` and on anomaly-free.csv (see the module doc)."""
    root = Path(root)
    methods = methods or default_methods(threshold)
    files = [read_skab(p) for p in skab_files(root)]
    free_path = root / "anomaly-free" / "anomaly-free.csv"
    free = read_skab(free_path) if free_path.is_file() else None
    results = []
    for name, method in methods.items():
        preds, truths, parts = [], [], {k: [] for k in NAB_PROFILES}
        episodes = raw_false = 0
        for f in files:
            row = method(f.values).max(axis=0)
            raw = onsets(row >= threshold)
            raw_false += int(np.sum((raw >= train_rows) & ~f.anomaly[raw]))
            held = hold_alarms(row, threshold, clear_below, clear_after)
            test = slice(train_rows, None)
            preds.append(held[test])
            truths.append(f.anomaly[test])
            det = onsets(held)
            det = det[det >= train_rows]
            episodes += len(det)
            cps = f.changepoints[f.changepoints >= train_rows]
            for k, w in NAB_PROFILES.items():
                parts[k].append(nab_raw(det, f.time_s, cps, window_s, w))
        f1, far, mar = outlier_metrics(np.concatenate(preds), np.concatenate(truths))
        res = SkabResult(name, f1, far, mar, {k: nab_score(v) for k, v in parts.items()}, episodes, raw_false)
        if free is not None:
            scores = method(free.values)
            res.free_columns = free.columns
            res.free_episodes = [int(np.sum(onsets(s >= threshold) >= train_rows)) for s in scores]
        results.append(res)
    return results


def format_results(results: list[SkabResult], *, files: int | None = None, threshold: float = 0.8) -> str:
    out = [f"SKAB, {files or 'all'} experiment files; test part = rows 400.. of each file; alarm at {threshold:g}",
           "", "| method | F1 | false-alarm rate | missed-alarm rate | NAB standard | NAB low FP | NAB low FN "
           "| held alarm episodes (test parts) | rows rising to the threshold outside labelled anomalies "
           "| the same on anomaly-free.csv after warm-up, per channel |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        free = f"{sum(r.free_episodes)} ({', '.join(str(e) for e in r.free_episodes)})" if r.free_episodes else "-"
        out.append(f"| {r.method} | {r.f1:.2f} | {100 * r.far:.1f} % | {100 * r.mar:.1f} % | {r.nab['standard']:.1f} "
                   f"| {r.nab['low_fp']:.1f} | {r.nab['low_fn']:.1f} | {r.episodes} | {r.raw_false} | {free} |")
    for name, f1, far, mar in LEADERBOARD["outlier"]:
        out.append(f"| leaderboard: {name} | {f1:.2f} | {100 * far:.1f} % | {100 * mar:.1f} % | | | | | | |")
    for name, a, b, c in LEADERBOARD["nab"]:
        out.append(f"| leaderboard: {name} | | | | {a:.1f} | {b:.1f} | {c:.1f} | | | |")
    return "\n".join(out)
