"""Run the detection suite (scenarios/detection/) through simulator, edges and hub, and print the
table docs/detection.md keeps: per injected anomaly, detected or not and the delay; the false
alarms per hour of each run.

    .venv/bin/python scripts/score_suite.py [--speed 10] [--clean-speed 60] [--skip-clean] [--out var/score]

The anomaly scenarios take about 2.5 minutes each at x10, the clean day about 24 minutes at x60.
Each run's scoreboard is also written as JSON under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
from pathlib import Path

import msgspec

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from protocols.config import load_config  # noqa: E402
from sentinel_cli.sim_score import run_scored  # noqa: E402
from simulator.scenario import load_scenario  # noqa: E402
from simulator.scoring import Scoreboard, format_scoreboard  # noqa: E402

CONFIGS = [REPO / "firmware_configs" / "nairobi-s1.toml", REPO / "firmware_configs" / "mombasa-s1.toml"]
SUITE = REPO / "scenarios" / "detection"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speed", type=float, default=10.0, help="speed-up of the anomaly scenarios (default 10)")
    p.add_argument("--clean-speed", type=float, default=60.0, help="speed-up of the clean day (default 60)")
    p.add_argument("--skip-clean", action="store_true", help="leave out the clean 24-hour run")
    p.add_argument("--out", default=str(REPO / "var" / "score"), help="where the JSON scoreboards go")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [load_config(c) for c in CONFIGS]
    boards: dict[str, Scoreboard] = {}
    for path in sorted(SUITE.glob("*.json")):
        clean = path.stem.startswith("clean")
        if clean and args.skip_clean:
            continue
        scenario = load_scenario(path, configs)
        speed = args.clean_speed if clean else args.speed
        print(f"== {path.name} at x{speed:g}", flush=True)
        board = asyncio.run(run_scored(configs, scenario, speed=speed, out=lambda s: None))
        print(format_scoreboard(board), flush=True)
        (out / f"{path.stem}.json").write_bytes(msgspec.json.encode(board))
        boards[path.stem] = board

    print("\n| scenario | injected | detected | delay (s) | caught by |\n| --- | --- | --- | ---: | --- |")
    delays: dict[str, list[float]] = {}
    for name, board in boards.items():
        for a in board.anomalies:
            when = ("yes, after its end" if a.after_end else "yes") if a.detected else "no"
            delay = "-" if a.delay_s is None else f"{a.delay_s:.0f}"
            print(f"| {name} | {a.label} on {a.device_id} | {when} | {delay} | {a.alarm_type or '-'} |")
        large = max(board.anomalies, key=lambda a: a.anomaly, default=None)  # the suite puts the larger second
        if large is not None and large.detected and large.delay_s is not None:
            delays.setdefault(large.type, []).append(large.delay_s)
    print("\n| run | scenario hours | false alarms | per hour |\n| --- | ---: | ---: | ---: |")
    for name, board in boards.items():
        print(f"| {name} | {board.observed_s / 3600:.2f} | {board.false_alarms} | {board.false_alarms_per_hour:.2f} |")
    print("\nmedian delay at the larger magnitude: "
          + ", ".join(f"{t} {statistics.median(d):.0f} s" for t, d in sorted(delays.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
