"""Hub agents: readings analysed per second by each agent's cycle (storage read, shaping, analysis,
products stored), beside a raw SQLite SELECT of the same rows.

The hub's SQLite storage holds a realistic window: ``--points`` points at 1 Hz for the grid
monitor's 15 minutes (the anomaly detector's hour reads the same rows and more), with edge anomaly
scores; a week of minute readings of feeder load and transformer temperatures (the demand
forecaster and maintenance predictor read their hourly means). The baseline reads the rows the
agent reads, the most direct way (``SELECT ... WHERE ts BETWEEN``, fetchall), without building a
single object. A ratio of 0.1 means the agent's whole cycle costs ten raw reads of its input.

With ``--backend postgres`` (or ``timescaledb``, where the extension is built) the same on a
throwaway PostgreSQL server (sentinel_cli.pgserver), the baseline a psycopg ``SELECT ... fetchall``
of the same rows. ``--agents`` picks the agents to time (the two that read the 1 Hz window are the
ones that grow with the points).

``--shards N``: then each agent's cycle in N processes that split the substations (``--shard I/N``,
hub/insights/shards.py), started together and run at the same time, beside the same cycle in one
process over every substation (also a process of its own, alone), in the same run. The figures
are each shard's cycle (ms) with that unsharded cycle as baseline; ``--substations`` spreads the
points over that many substations (the fleet's 100 points an edge: points / 100).

    python benchmarks/bench_agents.py [--points N] [--backend sqlite|postgres|timescaledb] [--agents a,b]
                                      [--incremental] [--shards N --substations K]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _common import Figure, best_of, machine, print_json_lines, rate, use_repo_root

use_repo_root()

import psycopg

from hub.insights.agent_inputs import RUNNERS, AgentSettings
from hub.storage import open_storage
from hub.storage.base import Storage
from hub.storage.sqlite import SQLiteStorage
from protocols.reading import Reading

NOW = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)


def fill(storage: Storage, points: int, now: datetime = NOW, substations: int = 4) -> dict[str, int]:
    """The agents' window before ``now`` (15 minutes of ``points`` at 1 Hz, with edge anomaly scores)
    and a week of minute history of 4 feeders' load and transformers' temperatures; rows of each."""
    rng = np.random.default_rng(1)
    start = now - timedelta(minutes=15)
    metrics = ("voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3", "frequency",
               "power_factor")
    units = {"voltage": "kV", "current": "A", "frequency": "Hz", "power_factor": ""}
    base = {"voltage": 11.0, "current": 300.0, "frequency": 50.0, "power_factor": 0.95}
    devices = max(1, points // len(metrics))
    window = 0
    for d in range(devices):  # a device at a time: memory stays small at thousands of points
        rows = []
        for m in metrics:
            kind = m.split("_l")[0]
            values = base[kind] * (1 + 0.002 * rng.standard_normal(900))
            scores = np.clip(rng.random(900) ** 8, 0, 1)
            rows += [Reading(ts=start + timedelta(seconds=i), substation=f"SUB-{d % substations}",
                             device_id=f"FEEDER-{d}", metric=m, value=float(values[i]), unit=units[kind],
                             anomaly_score=float(scores[i]), anomaly_type="spike" if scores[i] > 0.8 else None)
                     for i in range(900)]
        window += len(rows)
        storage.insert_readings(rows, "bench")
    week = []
    t0 = now - timedelta(days=7)
    for d in range(4):
        for i in range(7 * 24 * 60):
            ts = t0 + timedelta(minutes=i)
            hour = ts.hour
            week.append(Reading(ts=ts, substation=f"SUB-{d}", device_id=f"FEEDER-{d}", metric="active_power",
                                value=4.0 + 2.0 * np.sin(np.pi * (hour - 6) / 12), unit="MW"))
            week.append(Reading(ts=ts, substation=f"SUB-{d}", device_id=f"TR-{d}", metric="oil_temperature",
                                value=60.0 + 3.0 * i / 1440, unit="degC"))
            week.append(Reading(ts=ts, substation=f"SUB-{d}", device_id=f"TR-{d}", metric="load_current",
                                value=400.0, unit="A"))
    storage.insert_readings(week, "bench")
    return {"window": window, "week": len(week)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=200, help="points at 1 Hz in the 15-minute window (default 200)")
    ap.add_argument("--backend", choices=("sqlite", "postgres", "timescaledb"), default="sqlite")
    ap.add_argument("--agents", default=",".join(READS), help=f"agents to time (default {','.join(READS)})")
    ap.add_argument("--repeat", type=int, default=3, help="cycles per agent, the best kept (default 3)")
    ap.add_argument("--incremental", action="store_true",
                    help="then a minute more of every point, and each 1 Hz agent's cycle with its windows kept "
                         "(AgentSettings.incremental_windows) beside the same cycle reading them whole")
    ap.add_argument("--shards", type=int, default=0, metavar="N",
                    help="then each agent's cycle in N processes splitting the substations, at the same time, "
                         "beside one process over all of them (default 0: not measured)")
    ap.add_argument("--substations", type=int, default=4, metavar="K",
                    help="substations the points are spread over (default 4)")
    ap.add_argument("--worker", nargs=2, metavar=("URL", "SHARD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return shard_worker(args.worker[0], args.worker[1], args.agents.split(","), args.repeat)
    if args.shards < 0 or args.shards == 1 or args.substations < 1:
        ap.error("--shards: 2 or more (or 0: not measured); --substations: 1 or more")
    agents = [a.strip() for a in args.agents.split(",") if a.strip()]
    if unknown := sorted(set(agents) - set(READS)):
        ap.error(f"--agents: unknown {', '.join(unknown)}; known: {', '.join(READS)}")
    print(f"agents benchmark: {args.points} points at 1 Hz, {args.backend}, on {machine()}")
    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        if args.backend == "sqlite":
            path = Path(d) / "hub.db"
            storage: Storage = SQLiteStorage(path)
            raw = sqlite3.connect(path)
            param, stamp, fetch = "?", (lambda t: t.timestamp()), (lambda sql, args: raw.execute(sql, args).fetchall())
        else:
            from sentinel_cli.pgserver import TIMESCALEDB_SETTINGS, PostgresServer

            settings = TIMESCALEDB_SETTINGS if args.backend == "timescaledb" else None
            server = stack.enter_context(PostgresServer(d, settings=settings))
            url = server.create_database()
            storage = open_storage(url)
            if args.backend == "timescaledb" and storage.backend != "timescaledb":
                raise SystemExit(f"the server gave the {storage.backend} layout, not TimescaleDB")
            raw = psycopg.connect(url)
            param, stamp = "%s", (lambda t: t)
            fetch = lambda sql, args: raw.execute(sql, args, binary=True).fetchall()  # noqa: E731 (binary: faster)
        stack.callback(storage.close)
        stack.callback(raw.close)
        started = time.perf_counter()
        sizes = fill(storage, args.points, substations=args.substations)
        print(f"filled {sizes['window']:,} window readings and {sizes['week']:,} week readings "
              f"in {time.perf_counter() - started:.1f} s", flush=True)
        figures = measure(storage, fetch, param, stamp, sizes, agents, args.repeat)
        if args.shards:
            url = f"sqlite:///{path}" if args.backend == "sqlite" else url
            figures += measure_shards(url, args.shards, agents, args.repeat)
        if args.incremental:
            figures += measure_incremental(storage, args.points, [a for a in agents if a in AGENT_WINDOWED])
    print_json_lines(figures)


def shard_worker(url: str, shard: str, agents: list[str], repeat: int) -> None:
    """One agents process (``--worker``): opens the storage, says so, waits for a line on stdin (so the
    shards start together), times each agent's cycle for its shard (best of ``repeat``), prints JSON."""
    from hub.insights.shards import Shard

    split = None if shard == "all" else Shard.parse(shard)
    settings = AgentSettings(shard=split)
    storage = open_storage(url)
    print("ready", flush=True)
    sys.stdin.readline()
    out: dict[str, Any] = {}
    for name in agents:
        if split is not None and not split.runs(name):
            continue
        best, cpu, summary = float("inf"), float("inf"), {}
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            output = RUNNERS[name](storage, settings, NOW)
            if output.documents:  # a shard's anomaly episodes: what shard 0 reads back and correlates
                storage.put_documents(output.documents)
            best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
        summary = output.summary
        counted = next((f"{summary[k]} {k}" for k in ("series", "forecasts", "assets") if k in summary), "")
        if "episodes" in summary:
            counted += f", {summary['episodes']} episodes"
            if "episodes_from_other_shards" in summary:
                counted += f" + {summary['episodes_from_other_shards']} from other shards"
        out[name] = {"ms": best * 1000, "cpu_ms": cpu * 1000, "series": counted,
                     "substations": len(summary["status"]) if "status" in summary else None}
    storage.close()
    print(json.dumps(out), flush=True)


def _agent_processes(url: str, shards: list[str], agents: list[str], repeat: int,
                     together: bool = True) -> list[dict[str, Any]]:
    """One worker process per shard, started together (or one after another); their results in order."""
    if not together:
        return [r for s in shards for r in _agent_processes(url, [s], agents, repeat)]
    cmd = [sys.executable, __file__, "--agents", ",".join(agents), "--repeat", str(repeat), "--worker", url]
    procs = [subprocess.Popen([*cmd, s], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for s in shards]
    for p in procs:  # each has imported and opened its storage
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for s, p in zip(shards, procs):
        out, _ = p.communicate(timeout=3600)
        if p.returncode != 0:
            raise SystemExit(f"the agents process of shard {s} failed (exit {p.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def measure_shards(url: str, n: int, agents: list[str], repeat: int) -> list[Figure]:
    """Each agent's cycle in ``n`` processes of one shard each, run at the same time (and each
    alone, as on machines of their own), beside the same cycle in one process over every substation
    (alone), in the same run; with each process's own CPU time (the database's not counted)."""
    (whole,) = _agent_processes(url, ["all"], agents, repeat)
    labels = [f"{i}/{n}" for i in range(n)]
    figures = []
    # alone first, shard 0 last: it correlates the others' anomaly episodes, stored as they ran
    # (the same NOW each time, so they are fresh); run together, it reads those of that first round,
    # as it reads those of the others' previous cycles when they run side by side
    for how, together in (("alone", False), ("together", True)):
        order = [*labels[1:], labels[0]] if not together else labels
        got_by = dict(zip(order, _agent_processes(url, order, agents, repeat, together)))
        shards = [got_by[label] for label in labels]
        for name in agents:
            for i, got in enumerate(shards):
                if name not in got:
                    continue  # looks across substations (the cyber sentinel): runs in shard 0 only
                g, w = got[name], whole[name]
                figures.append(Figure(f"hub_agent_{name}_shard_{i}_of_{n}_{how}", g["ms"], "ms", w["ms"]))
                subs = f", {g['substations']} substations" if g["substations"] is not None else ""
                print(figures[-1].human() + f"   ({g['series']}{subs}, CPU {g['cpu_ms']:,.0f} ms; baseline: one "
                      f"process, all substations, {w['series']}, alone, CPU {w['cpu_ms']:,.0f} ms)", flush=True)
    return figures


AGENT_WINDOWED = ("grid_monitor", "anomaly_detector")  # the agents that read the 1 Hz windows


def measure_incremental(storage: Storage, points: int, agents: list[str]) -> list[Figure]:
    """A cycle at NOW fills each agent's window cache; a minute more of every point arrives; the
    cycle at NOW + 1 min with the cache (reading what is new) beside the same cycle reading whole."""
    cached = AgentSettings(incremental_windows=True)
    for name in agents:
        RUNNERS[name](storage, cached, NOW)  # the first cycle reads the span whole
    later = NOW + timedelta(minutes=1)
    rng = np.random.default_rng(2)
    metrics = ("voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3", "frequency",
               "power_factor")
    base = {"voltage": (11.0, "kV"), "current": (300.0, "A"), "frequency": (50.0, "Hz"), "power_factor": (0.95, "")}
    for d in range(max(1, points // len(metrics))):
        storage.insert_readings([Reading(ts=NOW + timedelta(seconds=i), substation=f"SUB-{d % 4}",
                                         device_id=f"FEEDER-{d}", metric=m, unit=base[m.split("_l")[0]][1],
                                         value=base[m.split("_l")[0]][0] * (1 + 0.002 * rng.standard_normal()))
                                 for m in metrics for i in range(60)], "bench")
    figures = []
    for name in agents:
        t0 = time.perf_counter()
        RUNNERS[name](storage, cached, later)
        kept = time.perf_counter() - t0
        t0 = time.perf_counter()
        RUNNERS[name](storage, AgentSettings(), later)
        whole = time.perf_counter() - t0
        figures.append(Figure(f"hub_agent_{name}_incremental_cycle", kept * 1000, "ms", whole * 1000))
        print(figures[-1].human() + "   (baseline: the same cycle reading the window whole)", flush=True)
    return figures


READS = ("grid_monitor", "anomaly_detector", "demand_forecaster", "maintenance_predictor")


def measure(storage: Storage, fetch: Any, param: str, stamp: Any, sizes: dict[str, int], agents: list[str],
            repeat: int) -> list[Figure]:
    """Each agent's cycle beside a raw SELECT of what it reads (best of ``repeat``)."""
    settings = AgentSettings()
    window = min(settings.anomaly_window_s, 900.0)  # fill() makes 15 minutes of the 1 Hz points
    reads = {  # what each agent reads, as a raw SELECT
        "grid_monitor": (NOW - timedelta(seconds=settings.grid_window_s), sizes["window"]),
        "anomaly_detector": (NOW - timedelta(seconds=window), sizes["window"]),
        "demand_forecaster": (NOW - timedelta(days=settings.history_days), sizes["week"] // 3),
        "maintenance_predictor": (NOW - timedelta(days=settings.history_days), 2 * sizes["week"] // 3),
    }
    metric_filter = {"demand_forecaster": " AND metric = 'active_power'",
                     "maintenance_predictor": " AND metric IN ('oil_temperature', 'load_current')"}
    figures = []
    for name in agents:
        since, rows = reads[name]
        runner = RUNNERS[name]
        ours = best_of(lambda _, runner=runner: runner(storage, settings, NOW), repeat)
        sql = ("SELECT ts, substation, device_id, metric, value, anomaly_score, anomaly_type FROM readings"
               f" WHERE ts >= {param} AND ts < {param}" + metric_filter.get(name, ""))
        base = best_of(lambda _, sql=sql, since=since: fetch(sql, (stamp(since), stamp(NOW))), repeat)
        figures.append(Figure(f"hub_agent_{name}", rate(rows, ours), "rows/s", rate(rows, base)))
        print(figures[-1].human() + f"   ({ours * 1000:,.0f} ms a cycle, raw read {base * 1000:,.0f} ms)", flush=True)
    return figures


if __name__ == "__main__":
    main()
