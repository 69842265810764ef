"""Edge scoring: what one reading costs through models.runtime, beside bare onnxruntime calls.

Figures, each best of --repeat runs:

- ``scoring_model_batch{1,100,10000}``: ``Model.score`` (cast, ``session.run``, calibration) on
  prebuilt feature rows of an IsolationForest (64 trees, compact graph), rows/s; baseline: a bare
  ``session.run`` of the same graph on the same float32 array.
- ``scoring_skl2onnx_graph_batch{1,100,10000}``: a bare ``session.run`` of the same forest exported
  by skl2onnx's converter, rows/s; baseline: the bare compact graph. How much the graph design
  alone costs.
- ``scoring_scorer_batch{1,100,10000}``: ``Scorer.score_block`` with the model loaded, a batch
  being one new sample of each of N series (one poll of N points), readings/s: detectors on every
  reading, the feature window, the model once per 8 samples of a series. Baseline: the bare
  compact graph scoring N rows per call (every reading through the model, nothing else).
- ``scoring_detectors_series10000`` / ``scoring_detectors_stream``: the detectors alone,
  readings/s, on 10,000 series x 1 sample per call (the edge) and on one series in blocks of
  16,384 samples (a CSV); baseline: one rolling median of the same samples over the same
  32-sample window (the single most expensive step inside).
- ``scoring_csv_rows``: ``sentinel models score`` on a CSV (``score_csv``), rows/s; baseline:
  reading and writing the same CSV with the csv module, no scoring.

    python benchmarks/bench_scoring.py [--repeat N] [--csv-rows N]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Figure, best_of, machine, print_json_lines, rate, use_repo_root

use_repo_root()

import onnxruntime as ort  # noqa: E402
from numpy.lib.stride_tricks import sliding_window_view  # noqa: E402

from models.detectors import DetectorBank  # noqa: E402
from models.export import export_model, to_onnx  # noqa: E402
from models.features import FeatureSpec, compute_features  # noqa: E402
from models.manifest import TrainingData  # noqa: E402
from models.runtime import Scorer, load_model  # noqa: E402
from models.tabular import score_csv  # noqa: E402
from models.train import train_model  # noqa: E402

BATCHES = (1, 100, 10_000)


def bare_session(onnx: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def calls_per_second(fn, seconds: float = 0.3) -> float:
    """Calls per second of ``fn()``, timed over at least ``seconds`` (many calls for fast ones)."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def best_rate(fn, rows: int, repeat: int) -> float:
    return max(rows * calls_per_second(fn) for _ in range(repeat))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--csv-rows", type=int, default=300_000)
    args = ap.parse_args()
    print(f"scoring benchmark on {machine()}")
    rng = np.random.default_rng(0)
    spec = FeatureSpec.build()
    history = 20.0 + np.sin(np.arange(30_000) / 500)[:, None] + rng.normal(scale=0.1, size=(30_000, 1))
    x = compute_features(history, spec)[spec.window - 1:]
    trained = train_model(x, kind="isolation_forest", spec=spec, name="bench-if",
                          training=TrainingData(start=None, end=None, rows=len(x), source="synthetic"))
    exported = export_model(trained)
    model = load_model(exported.manifest, exported.onnx)
    compact = bare_session(exported.onnx)
    skl = bare_session(to_onnx(trained, exporter="skl2onnx").onnx)
    rows = np.ascontiguousarray(np.tile(x, (max(1, 10_000 // len(x) + 1), 1))[:10_000], dtype=np.float32)
    print(f"IsolationForest: 64 trees, {spec.n_features} features; compact graph {len(exported.onnx):,} bytes")
    figures: list[Figure] = []

    def show(fig: Figure) -> None:
        figures.append(fig)
        print(fig.human(), flush=True)

    for n in BATCHES:
        batch = rows[:n]
        raw = best_rate(lambda: compact.run(["scores"], {"features": batch}), n, args.repeat)
        show(Figure(f"scoring_model_batch{n}", best_rate(lambda: model.score(batch), n, args.repeat), "rows/s", raw))
        show(Figure(f"scoring_skl2onnx_graph_batch{n}",
                    best_rate(lambda: skl.run(["scores"], {"features": batch}), n, args.repeat), "rows/s", raw))

    # the whole runtime: N series, one new sample each per call, model every 8 samples of a series
    for n in BATCHES:
        keys = [(f"dev{i}", "value") for i in range(n)]
        scorer = Scorer(model, model_stride=8)
        stream = 20.0 + rng.normal(scale=0.1, size=(n, 64 + 8 * 16))
        for t in range(64):  # warm: windows full, the model scoring
            scorer.score_block(keys, stream[:, t:t + 1])
        t_next = [64]

        def step() -> None:
            t = t_next[0]
            scorer.score_block(keys, stream[:, t:t + 1])
            t_next[0] = 64 + (t - 63) % (stream.shape[1] - 64)

        raw = best_rate(lambda: compact.run(["scores"], {"features": rows[:n]}), n, args.repeat)
        show(Figure(f"scoring_scorer_batch{n}", best_rate(step, n, args.repeat), "readings/s", raw))

    # detectors alone
    bank = DetectorBank(10_000)
    block = 20.0 + rng.normal(size=(10_000, 1))
    for _ in range(40):
        bank.update(block)
    ours = best_rate(lambda: bank.update(block), 10_000, args.repeat)
    hist = 20.0 + rng.normal(size=(10_000, 33))
    raw = best_rate(lambda: np.median(sliding_window_view(hist, 32, axis=1), axis=2), 10_000, args.repeat)
    show(Figure("scoring_detectors_series10000", ours, "readings/s", raw))
    # the same with every series steady (voltage, frequency): the drift scale's 512-sample ring too
    steady = DetectorBank(10_000)
    steady.set_steady(np.arange(10_000))
    for _ in range(40):
        steady.update(block)
    ours = best_rate(lambda: steady.update(block), 10_000, args.repeat)
    show(Figure("scoring_detectors_series10000_steady", ours, "readings/s", raw))
    stream = 20.0 + rng.normal(size=(1, 200_000))

    def run_stream(_: object) -> None:
        b = DetectorBank(1)
        for lo in range(0, stream.shape[1], 16_384):
            b.update(stream[:, lo:lo + 16_384])

    ours = rate(stream.shape[1], best_of(run_stream, args.repeat))
    raw = rate(stream.shape[1], best_of(lambda _: np.median(sliding_window_view(stream, 32, axis=1), axis=2),
                                        args.repeat))
    show(Figure("scoring_detectors_stream", ours, "readings/s", raw))

    # the CLI's library function on a CSV
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "in.csv", Path(d) / "out.csv"
        t = 1.77e9 + np.cumsum(rng.uniform(0.5, 1.5, args.csv_rows))
        v = 230.0 + rng.normal(size=args.csv_rows)
        src.write_text("timestamp,voltage_v\n" + "\n".join(f"{a:.3f},{b:.3f}" for a, b in zip(t, v)) + "\n")

        def copy_csv(_: object) -> None:
            with src.open(newline="") as f, out.open("w", newline="") as g:
                w = csv.writer(g)
                for row in csv.reader(f):
                    w.writerow([*row, "0.0000", "none"])

        ours = rate(args.csv_rows, best_of(lambda _: score_csv(src, out), args.repeat))
        raw = rate(args.csv_rows, best_of(copy_csv, args.repeat))
        show(Figure("scoring_csv_rows", ours, "rows/s", raw))
    print_json_lines(figures)


if __name__ == "__main__":
    main()
