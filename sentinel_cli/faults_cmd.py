"""``sentinel sim faults``: the fault suite's long form.

A simulated substation, its edge and a hub on a throwaway PostgreSQL run as separate processes;
for ``--duration`` the six faults (hub killed, edge killed, link cut, PostgreSQL crashed, the
buffer's disk full, devices restarted or answering garbage) are injected at random, interleaved;
then every reading is counted from the edge's buffer to the hub. Prints each fault as it happens
and a summary; exit 1 if a reading was lost without a counted reason, arrived twice or altered, or
a process died by itself. Needs PostgreSQL's server binaries; the disk-full fault needs root (it
mounts a small tmpfs for the buffer) and is left out, with a note, otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["add_parser", "parse_duration"]


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 2h)")
    return float(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[m[2]]


def add_parser(sim: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from sentinel_cli.faults.injectors import FAULTS

    s = sim.add_parser("faults", help="inject faults into a simulated substation, its edge and a hub on PostgreSQL, "
                                      "and account for every reading")
    s.add_argument("--duration", type=parse_duration, default=parse_duration("10m"),
                   help="how long to inject faults, e.g. 90s, 30m, 2h (default 10m)")
    s.add_argument("--faults", default=",".join(FAULTS),
                   help=f"which faults, comma-separated (default all: {','.join(FAULTS)})")
    s.add_argument("--seed", type=int, default=0, help="random seed of the schedule (default 0)")
    s.add_argument("--calm", type=float, nargs=2, default=(2.0, 10.0), metavar=("MIN", "MAX"),
                   help="seconds of calm between faults, drawn between MIN and MAX (default 2 10)")
    s.add_argument("--workdir", default=None,
                   help="keep configs and process logs here (default: a temp dir, kept only when a check fails)")
    s.add_argument("--report", default=None, help="also write the summary as JSON to this file")
    s.set_defaults(func=cmd_sim_faults)


def cmd_sim_faults(args: argparse.Namespace) -> int:
    from sentinel_cli.faults.injectors import FAULTS

    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    if unknown := [k for k in kinds if k not in FAULTS]:
        print(f"sentinel: error: --faults: unknown {', '.join(unknown)} (known: {', '.join(FAULTS)})", file=sys.stderr)
        return 2
    if not kinds:
        print("sentinel: error: --faults names none", file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="sentinel-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    summary = asyncio.run(_run(args, kinds, workdir))
    text = format_summary(summary)
    print(text)
    if args.report:
        Path(args.report).write_text(json.dumps(summary, indent=2) + "\n")
    ok = not summary["problems"]
    if ok and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    elif not ok:
        print(f"logs and configs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1


async def _run(args: argparse.Namespace, kinds: tuple[str, ...], workdir: Path) -> dict:
    from sentinel_cli.faults.injectors import run_schedule, small_filesystem
    from sentinel_cli.faults.rig import FaultRecord, Rig
    from sentinel_cli.pgserver import PostgresServer

    notes: list[str] = []
    fs_cm = small_filesystem(workdir / "buffer-fs", 256) if "disk_full" in kinds and os.geteuid() == 0 else None
    buffer_dir = fs_cm.__enter__() if fs_cm is not None else None
    if "disk_full" in kinds and buffer_dir is None:
        kinds = tuple(k for k in kinds if k != "disk_full")
        notes.append("disk_full left out: mounting a tmpfs for the buffer needs root")
    try:
        with PostgresServer(workdir / "pg") as pg:
            rig = Rig(workdir / "rig", pg, buffer_dir=buffer_dir, hold_rows=2_000, seed=args.seed)
            started = time.monotonic()
            print(f"starting: simulator, hub on PostgreSQL, edge (logs in {workdir / 'rig'})", flush=True)
            await rig.start()

            def show(r: FaultRecord) -> None:
                elapsed = time.monotonic() - started
                rec = f"recovered in {r.recovered_s:.1f} s" if r.recovered_s is not None else "NOT RECOVERED"
                print(f"[{elapsed / 60:5.1f} min] {r.kind:<10} {r.detail}; {rec}", flush=True)

            try:
                await run_schedule(rig, args.duration, random.Random(args.seed), kinds, tuple(args.calm), show)
                print("faults over: draining the edge's backlog, stopping it, counting", flush=True)
                ledger, stop_s = await rig.finish()
            finally:
                await rig.close()
            elapsed = time.monotonic() - started
            crashes = rig.crashes()
            records = rig.records
    finally:
        if fs_cm is not None:
            fs_cm.__exit__(None, None, None)
    by_kind: dict[str, dict] = {}
    for kind in sorted({r.kind for r in records}):
        rec = [r.recovered_s for r in records if r.kind == kind]
        done = [x for x in rec if x is not None]
        by_kind[kind] = {"injected": len(rec), "not_recovered": len(rec) - len(done),
                         "recovery_s_median": round(statistics.median(done), 2) if done else None,
                         "recovery_s_max": round(max(done), 2) if done else None}
    problems = ledger.problems() + crashes
    problems += [f"{r.kind} ({r.detail}): no recovery within 60 s" for r in records if r.recovered_s is None]
    if stop_s > 10:
        problems.append(f"the edge took {stop_s:.1f} s to stop on SIGINT")
    return {"duration_s": round(elapsed, 1), "seed": args.seed, "faults": by_kind,
            "faults_injected": len(records), "ledger": ledger.as_dict(), "edge_stop_s": round(stop_s, 2),
            "edge_restarts_by_itself": sum(1 for c in crashes if c.startswith("edge")),
            "process_crashes": crashes, "notes": notes, "problems": problems,
            "log": [{"kind": r.kind, "detail": r.detail, "started": r.started, "healed": r.healed,
                     "recovered_s": r.recovered_s} for r in records]}


def format_summary(s: dict) -> str:
    led = s["ledger"]
    lines = [f"\nfault run: {s['duration_s'] / 60:.1f} min, {s['faults_injected']} faults (seed {s['seed']})",
             f"  {'fault':<11} {'injected':>8} {'recovery median':>16} {'max':>7}"]
    for kind, k in s["faults"].items():
        med = "-" if k["recovery_s_median"] is None else f"{k['recovery_s_median']:.1f} s"
        mx = "-" if k["recovery_s_max"] is None else f"{k['recovery_s_max']:.1f} s"
        lines.append(f"  {kind:<11} {k['injected']:>8} {med:>16} {mx:>7}"
                     + (f"  ({k['not_recovered']} not recovered)" if k["not_recovered"] else ""))
    lines += [
        f"readings stored by the edge   {led['produced']:>9,}",
        f"  at the hub, once            {led['at_hub_distinct']:>9,}",
        f"  at the hub more than once   {led['duplicates']:>9,}",
        f"  still pending               {led['pending']:>9,}",
        f"  dropped, buffer full        {led['dropped_buffer_full']:>9,}",
        f"  lost without a reason       {led['missing']:>9,}",
        f"  altered on the way          {led['altered']:>9,}",
        f"readings never stored (disk full past hold_rows, counted): {led['dropped_unwritable']:,}",
        f"events: {led['events_produced']:,} stored, {led['events_at_hub']:,} at the hub, "
        f"{led['events_duplicates']:,} twice, {led['events_missing']:,} lost",
        f"content digest (sha256, delivered rows): edge {led['digest_edge'][:16]}  hub {led['digest_hub'][:16]}",
        f"edge stopped in {s['edge_stop_s']:.2f} s on SIGINT; processes that died by themselves: "
        f"{len(s['process_crashes'])}",
    ]
    lines += [f"note: {n}" for n in s["notes"]]
    lines.append("PASS: every reading accounted for" if not s["problems"] else
                 "FAIL:\n  " + "\n  ".join(s["problems"]))
    return "\n".join(lines)
