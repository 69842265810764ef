"""``sentinel models skab-eval``: the detectors on SKAB beside the same-run baselines and the leaderboard."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_skab_eval(args: argparse.Namespace) -> int:
    from models.skab_eval import default_methods, evaluate_skab, format_results, skab_files

    try:
        files = len(skab_files(args.data))
        results = evaluate_skab(args.data, default_methods(args.threshold), train_rows=args.train_rows,
                                threshold=args.threshold)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_results(results, files=files, threshold=args.threshold))
    return 0


def add_skab_eval(models: Any) -> None:
    s = models.add_parser("skab-eval", help="evaluate the detectors on SKAB (outlier F1, NAB, anomaly-free alarms)",
                          description="Score every SKAB experiment file as a stream with the calibrated "
                                      "detectors, the scoring before calibration and a rolling z-score; print "
                                      "F1 / false-alarm / missed-alarm rates on each file's test part (rows "
                                      "--train-rows..), NAB scores (60 s right of each changepoint) and the "
                                      "alarm episodes on anomaly-free.csv, beside the published leaderboard.")
    s.add_argument("--data", required=True, help="the SKAB data folder (valve1/, valve2/, other/, anomaly-free/)")
    s.add_argument("--threshold", type=float, default=0.8, help="alarm threshold (default 0.8, the edge's)")
    s.add_argument("--train-rows", type=int, default=400, help="warm-up rows of each file, not counted (default 400)")
    s.set_defaults(func=cmd_skab_eval)
