"""Ingest and API latency while the agents cycle: agents in the hub process, or in their own.

A throwaway PostgreSQL server (sentinel_cli/pgserver.py) holds a realistic window for the agents:
``--points`` points at 1 Hz for the last 15 minutes (the grid monitor and anomaly detector read
them) and a week of minute readings of feeders and transformers (the forecaster and maintenance
predictor). Each mode gets a copy of that database and real processes, started as a user starts
them, with the agents cycling as often as they may (``SENTINEL_AGENT_INTERVAL_S=1``: a cycle every
``min_gap_s``, 5 s):

- ``none``: ``sentinel hub serve --agents off`` and no agents process: the baseline, nothing cycles;
- ``in_process``: ``sentinel hub serve`` (agents in the hub process, as shipped by default);
- ``own_process``: ``sentinel hub serve --agents off`` plus ``sentinel hub agents``.

Load for ``--seconds``: ``--clients`` threads each POST ``/sensors/process`` with 200 readings
``--rate`` times a second between them (about 200 x rate readings/s in all), and one thread GETs
``/incidents?limit=50`` ten times a second. Latency is from each request's send to its answer.
Figures: ``ingest_post_p50/p99_agents_<mode>`` and ``api_get_p99_agents_<mode>`` in ms, each
beside the ``none`` mode's figure of the same run, and the agent cycles each mode ran.

    .venv/bin/python benchmarks/bench_agents_isolation.py [--points 400] [--seconds 20] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
from _common import REPO, Figure, machine, print_json_lines, use_repo_root

use_repo_root()

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

import bench_agents  # noqa: E402  (the same data as the agents benchmark)
from hub.storage import open_storage  # noqa: E402
from sentinel_cli.pgserver import PostgresServer  # noqa: E402

KEY = "bench-admin-key-0123456789abcdef"
HEADERS = {"Authorization": f"Bearer {KEY}"}
def fill(url: str, points: int, now: datetime) -> int:
    """The agents' window (15 minutes of ``points`` at 1 Hz) and a week of minute history, as
    bench_agents.py makes them, with their rollups folded; rows stored."""
    storage = open_storage(url)
    try:
        rows = bench_agents.fill(storage, points, now)
        storage.refresh_rollups()
    finally:
        storage.close()
    return rows["window"] + rows["week"]


def copy_of(server: PostgresServer, template: str, name: str) -> str:
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    return server.url(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sentinel(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "sentinel_cli.main", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def load(url: str, seconds: float, clients: int, rate: float) -> tuple[list[float], list[float]]:
    """POST latencies and GET latencies (ms) over ``seconds``."""
    posts: list[float] = []
    gets: list[float] = []
    stop = time.monotonic() + seconds
    lock = threading.Lock()

    def poster(k: int) -> None:
        gap = clients / rate
        next_at = time.monotonic() + k * gap / clients
        with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as http:
            n = 0
            while next_at < stop:
                time.sleep(max(0.0, next_at - time.monotonic()))
                ts = datetime.now(UTC)
                body = {"sensor_readings": [
                    {"device_id": f"LOAD-{k}-{i % 20}", "sensor_type": "voltage", "metric": f"voltage_l{1 + i // 20 % 3}",
                     "value": 11.0 + 0.01 * (n % 7), "unit": "kV", "nominal": 11.0, "substation": "SUB-LOAD",
                     "timestamp": (ts - timedelta(milliseconds=i)).isoformat().replace("+00:00", "Z")}
                    for i in range(200)]}
                started = time.perf_counter()
                r = http.post("/sensors/process", json=body)
                took = (time.perf_counter() - started) * 1000
                if r.status_code != 200:
                    raise RuntimeError(f"POST /sensors/process: {r.status_code} {r.text[:200]}")
                with lock:
                    posts.append(took)
                n += 1
                next_at += gap

    def getter() -> None:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as http:
            while time.monotonic() < stop:
                started = time.perf_counter()
                http.get("/incidents", params={"limit": 50}).raise_for_status()
                gets.append((time.perf_counter() - started) * 1000)
                time.sleep(0.1)

    threads = [threading.Thread(target=poster, args=(k,)) for k in range(clients)] + [threading.Thread(target=getter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return posts, gets


def agent_runs(url: str) -> tuple[int, float]:
    """Cycles run so far, and the slowest agent's last run (ms)."""
    agents = httpx.get(f"{url}/agents", headers=HEADERS, timeout=10).json()["agents"]
    return max((a["runs"] for a in agents), default=0), max((a["elapsed_ms"] or 0.0 for a in agents), default=0.0)


def run_mode(mode: str, db: str, args: argparse.Namespace) -> dict[str, float]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}, "SENTINEL_ADMIN_KEY": KEY,
           "SENTINEL_DATABASE_URL": db, "SENTINEL_AGENT_INTERVAL_S": "1", "SENTINEL_INGEST_RATE": "0",
           "SENTINEL_MODEL_REGISTRY": tempfile.mkdtemp(prefix="bench-models-")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    procs = [sentinel("hub", "serve", "--port", str(port), "--agents", "on" if mode == "in_process" else "off", env=env)]
    if mode == "own_process":
        procs.append(sentinel("hub", "agents", env=env))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError(f"{mode}: the hub did not start")
            time.sleep(0.2)
        time.sleep(6)  # the agents' first cycle (in_process: after the interval) is under way
        runs_before = agent_runs(url)[0] if mode != "none" else 0
        posts, gets = load(url, args.seconds, args.clients, args.rate)
        time.sleep(1.5)  # the statuses of the last cycle reach the database (own_process)
        runs, slowest = agent_runs(url) if mode != "none" else (0, 0.0)
        runs -= runs_before
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    out = {"post_p50": float(np.percentile(posts, 50)), "post_p99": float(np.percentile(posts, 99)),
           "get_p99": float(np.percentile(gets, 99)), "posts": len(posts), "cycles": runs, "slowest_ms": slowest}
    print(f"{mode:<12} POST p50 {out['post_p50']:7.1f} ms  p99 {out['post_p99']:7.1f} ms  GET p99 "
          f"{out['get_p99']:7.1f} ms  ({len(posts)} POSTs of 200 readings, {runs} agent cycles, slowest agent's "
          f"last run {slowest:,.0f} ms)", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=400, help="points at 1 Hz in the agents' 15-minute window")
    ap.add_argument("--seconds", type=float, default=20.0, help="load per mode (default 20)")
    ap.add_argument("--clients", type=int, default=4, help="posting threads (default 4)")
    ap.add_argument("--rate", type=float, default=20.0, help="POSTs of 200 readings a second, all clients (default 20)")
    args = ap.parse_args()
    print(f"agents isolation benchmark: {args.points} points in the agents' window, {args.rate:g} POST/s of 200 "
          f"readings for {args.seconds:g} s per mode, on {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as d, PostgresServer(d) as server:
        seed = server.create_database()
        started = time.perf_counter()
        rows = fill(seed, args.points, datetime.now(UTC))
        print(f"filled {rows:,} readings in {time.perf_counter() - started:.1f} s", flush=True)
        template = seed.rsplit("/", 1)[1]
        results = {mode: run_mode(mode, copy_of(server, template, f"bench_{mode}"), args)
                   for mode in ("none", "in_process", "own_process")}
    base = results["none"]
    figures = []
    for mode in ("in_process", "own_process"):
        r = results[mode]
        figures += [Figure(f"ingest_post_p50_agents_{mode}", r["post_p50"], "ms", base["post_p50"]),
                    Figure(f"ingest_post_p99_agents_{mode}", r["post_p99"], "ms", base["post_p99"]),
                    Figure(f"api_get_p99_agents_{mode}", r["get_p99"], "ms", base["get_p99"])]
    print_json_lines(figures)
    for mode in ("in_process", "own_process"):
        print(json.dumps({"name": f"agent_cycles_{mode}", "value": results[mode]["cycles"], "unit": "cycles",
                          "seconds": args.seconds, "slowest_agent_ms": round(results[mode]["slowest_ms"], 1)}),
              flush=True)


if __name__ == "__main__":
    main()
