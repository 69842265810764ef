"""``sentinel models load-eval``: the day-ahead load forecaster scored on a real hourly load file, with the
same-run baselines (library: :mod:`agents.demand_forecaster.evaluate`; docs/forecasting.md)."""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from typing import Any

from sentinel_cli.progress import Progress

__all__ = ["add_load_eval", "cmd_load_eval"]

_COLUMNS = (("forecaster", "forecaster"), ("same_hour_yesterday", "same hour yesterday"),
            ("same_hour_last_week", "same hour last week"), ("linear_per_hour", "per-hour linear"))


def _years(text: str | None) -> list[int] | None:
    if not text:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(p) for p in part.split("-"))
                out += list(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"--years {text!r}: expected years like 2016,2017 or 2015-2017") from None
    return out


def _single_threaded() -> Any:
    """BLAS on one thread: the forecaster's small matrices run several times faster than with a pool
    contending for shared cores."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext()
    return threadpool_limits(limits=1)


def cmd_load_eval(args: argparse.Namespace) -> int:
    from agents.demand_forecaster.evaluate import evaluate_load, read_load_csv

    try:
        years = _years(args.years)
        series = read_load_csv(args.csv, args.column)
        with _single_threaded(), Progress("load-eval", unit="days", enabled=not args.no_progress,
                                            plain=lambda line: print(line, file=sys.stderr)) as progress:
            result = evaluate_load(series, history_days=args.history_days, years=years,
                                   holidays=not args.no_holidays, every=args.every,
                                   progress=progress)
    except (ValueError, OSError) as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.csv}: {series.name}, {series.rows} rows; {'; '.join(series.notes) or 'clean'}")
    print(f"issued at local midnight on {result['issues']} days of {', '.join(map(str, result['years']))}; "
          f"{result['history_days']} days of history each; "
          f"{result['ms_per_forecast']:.0f} ms per forecast (fit included)")
    print(f"{'horizon':>7}  {'hours':>6}  " + "  ".join(f"{label + ' MAPE':>24}" for _, label in _COLUMNS)
          + f"  {'10-90% coverage':>15}  {'width':>6}")
    for h, row in result["horizons"].items():
        print(f"{str(h) + ' h':>7}  {row['hours']:>6}  "
              + "  ".join(f"{row[key + '_mape']:>23.2f}%" for key, _ in _COLUMNS)
              + f"  {row['coverage']:>15.1%}  {row['interval_width_pct']:>5.1f}%")
    return 0


def add_load_eval(models: Any) -> None:
    """Register ``load-eval`` on the ``sentinel models`` subparsers."""
    s = models.add_parser("load-eval", help="score the day-ahead load forecaster on an hourly load CSV beside "
                                            "same-hour-yesterday, same-hour-last-week and per-hour linear baselines",
                          description="Issue a 48 h forecast at every local midnight of the scored years from the "
                                      "N days before it; print MAPE at 24 h and 48 h and the 10-90 %% interval "
                                      "coverage, beside the baselines on the same days. Reads the PJM hourly "
                                      "files as they are (any row order, DD-MM-YYYY or ISO times, repeated DST "
                                      "hours, gaps). See docs/forecasting.md.")
    s.add_argument("--csv", required=True, help="hourly load CSV: Datetime,<ZONE>_MW (hour-ending local time)")
    s.add_argument("--column", default=None, help="load column (default: the second)")
    s.add_argument("--history-days", type=int, default=365, help="days of history per forecast (default 365)")
    s.add_argument("--years", default=None,
                   help="years to score, e.g. 2016,2017 or 2015-2017 (default: the last two full years)")
    s.add_argument("--every", type=int, default=1, metavar="K",
                   help="score every K-th day only, a quicker sample (default 1: every day)")
    s.add_argument("--no-holidays", action="store_true", help="no US holiday calendar")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_load_eval)
