"""The hub end to end over HTTP, as deployed: ingest from many edges at once, and the time from a
sensor changing to the incident an operator sees, under load.

Starts its own throwaway PostgreSQL server (sentinel_cli/pgserver.py, fsync off: CPU figures, not
disk ones) and ``sentinel hub serve`` in its own process, then measures:

1. ``ingest_http_<N>_edges`` for N in ``--edges`` (1,10,50,200): N edges, each on its own keep-alive
   connection as a real edge is, POST ``/edge/sync`` batches of ``--batch`` readings (200: an edge
   with 100 points syncing every 2 s) back to back for ``--seconds``. Figure: readings stored per
   second. Baseline: one binary COPY of the same kind of rows into a plain table of the same server,
   same run (the ceiling of what PostgreSQL takes on this machine). Beside each: POST p50/p99, and the
   CPU (share of one core) of the hub, of PostgreSQL and of the load client itself, so the client is
   seen not to be the bottleneck. The load client is a process of its own speaking raw HTTP/1.1 on
   asyncio streams (a request costs it a few microseconds of bytes.replace), not httpx.
2. ``sensor_to_incident_{api,ws}_p50`` / ``_p99``: a Modbus TCP device (the simulator's pymodbus
   server, in this process) drops a 11 kV feeder's voltage to 0.85 pu; ``sentinel edge run`` (its own
   process) polls it every 0.1 s, raises the limit event and syncs at once; the time from the
   register write to the incident in ``GET /incidents`` (polled every 10 ms) and in a
   ``WS /ws/grid-status`` update, ``--trials`` times (each incident resolved before the next sag),
   while ``--background`` readings/s (default 10,000) arrive from 50 other edges. Baseline: the same
   trials with no background load, same run. The poll interval alone adds 0-100 ms (50 on average).
   With ``--soak MINUTES``, the load stays on that much longer and the trials run again
   (``..._after_<M>_min``, baseline: the first trials under load): a hub that has run a while, its
   tables, rollups and liveness reads grown, beside the same hub fresh.

``--pg-statements`` loads pg_stat_statements and prints, after each ingest run and each set of
trials, the statements that took most of PostgreSQL's time (share of a core, calls, mean): where the
database's part of a request goes.

``--agents in-process`` (default, as shipped) runs the five agents in the hub process;
``separate`` runs them in ``sentinel hub agents`` beside it; ``off`` not at all. ``--workers N``
serves on N processes. Figures go to stdout as human lines, then JSON lines (``grep '^{'``).

3. With ``--fleet EDGESxPOINTS`` instead of 1 and 2: a fleet at its real rate (``fleet_run``): does
   the hub keep up with, say, 200 edges x 100 points at 1 Hz, at what CPU, and how long do the
   agents' cycles take at that size (``--prefill`` fills their 15-minute window first).

    .venv/bin/python benchmarks/bench_hub_http.py [--edges 1,10,50,200] [--seconds 10] [--trials 30]
    .venv/bin/python benchmarks/bench_hub_http.py --fleet 200x100 --agents separate --prefill [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from _common import REPO, Figure, machine, print_json_lines, rate, use_repo_root
from bench_hub_ingest import RAW_COPY, RAW_TABLE, RAW_TYPES  # the same baseline table as bench_hub_ingest

use_repo_root()

import httpx  # noqa: E402
import psycopg  # noqa: E402

from protocols.reading import Reading  # noqa: E402
from protocols.wire import SYNC_PATH, ReadingRun, SyncBatch, encode  # noqa: E402
from sentinel_cli.pgserver import PostgresServer  # noqa: E402

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
SENTINEL = [sys.executable, "-m", "sentinel_cli.main"]
METRICS = (("voltage_l1", "kV", 11.0), ("voltage_l2", "kV", 11.0), ("frequency", "Hz", 50.0),
           ("oil_temperature", "degC", 65.0))
SEQ_MARK, TS_MARK = b'"first_seq":987654321', b'"2001-02-03T04:05:06Z"'
CLK_TCK = os.sysconf("SC_CLK_TCK")



# -- processes and their CPU -------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += _children(p)
    return pids


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (processes gone since count nothing)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


class CpuMeter:
    """CPU share of a core of a process tree, re-listed when read: a process that appeared meanwhile
    (a PostgreSQL backend for a new connection, a worker) counts all its CPU, one there at the start
    what it used since."""

    def __init__(self, root_pid: int) -> None:
        self.root = root_pid
        self._start = {pid: cpu_s([pid]) for pid in _tree(root_pid)}
        self._t0 = time.monotonic()

    def share(self) -> float:
        dt = time.monotonic() - self._t0
        used = sum(cpu_s([pid]) - self._start.get(pid, 0.0) for pid in _tree(self.root))
        return used / dt if dt > 0 else 0.0


def postmaster_pid(server: PostgresServer) -> int:
    return int((server.datadir / "postmaster.pid").read_text().split()[0])


# -- the hub ------------------------------------------------------------------------------------------

class Hub:
    def __init__(self, database_url: str, tmp: Path, agents: str, workers: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "SENTINEL_DATABASE_URL": database_url, "SENTINEL_ADMIN_KEY": ADMIN_KEY,
                    "SENTINEL_INGEST_RATE": "0", "SENTINEL_MODEL_REGISTRY": str(tmp / "models"),
                    "PYTHONPATH": str(REPO)}
        self.log = open(tmp / "hub.log", "w")  # noqa: SIM115  (closed in stop)
        argv = [*SENTINEL, "hub", "serve", "--port", str(self.port), "--agents", "on" if agents == "in-process" else "off"]
        if workers > 1:
            argv += ["--workers", str(workers)]
        self.proc = subprocess.Popen(argv, cwd=tmp, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        self.agents = None
        if agents == "separate":
            self.agents = subprocess.Popen([*SENTINEL, "hub", "agents"], cwd=tmp, env=self.env, stdout=self.log,
                                           stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the hub did not start: see {tmp / 'hub.log'}")
            time.sleep(0.2)

    def pids(self) -> list[int]:
        return [self.proc.pid] + ([self.agents.pid] if self.agents is not None else [])

    def add_edges(self, prefix: str, n: int) -> list[dict[str, str]]:
        edges = []
        for i in range(n):
            edge_id, substation = f"{prefix}-{i:03d}", f"{prefix.upper()}-S{i:03d}"
            r = self.http.post("/edges/credentials", json={"edge_id": edge_id, "substation": substation})
            r.raise_for_status()
            edges.append({"edge_id": edge_id, "substation": substation, "token": r.json()["secret"]})
        return edges

    def stop(self) -> None:
        self.http.close()
        for p in (self.agents, self.proc):
            if p is not None:
                p.terminate()
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.log.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the load client (a process of its own) -----------------------------------------------------------

def batch_template(edge: dict[str, str], batch: int, instants: int = 1) -> bytes:
    """A sync batch of ``batch`` readings: ``batch / instants / 4`` feeders x 4 metrics at each of
    ``instants`` instants a second apart, with the sequence number and the instants as markers to
    replace (:func:`ts_marks`; the first is also ``sent_at``)."""
    per = max(1, batch // instants)  # series at each instant: feeder i // 4, metric i % 4
    rng = random.Random(edge["edge_id"])
    items = [Reading(ts=TS_BASE + timedelta(seconds=k), substation=edge["substation"], device_id=f"F{i // 4:03d}",
                     metric=m, unit=u, value=round(nominal * (1 + rng.gauss(0, 0.005)), 4), quality=1.0, flags=0)
             for k in range(instants) for i in range(per) for m, u, nominal in (METRICS[i % len(METRICS)],)]
    body = encode(SyncBatch(edge_id=edge["edge_id"], substation=edge["substation"], sent_at=TS_BASE,
                            readings=ReadingRun(first_seq=987654321, items=items)))
    marks = ts_marks(instants)
    assert body.count(SEQ_MARK) == 1 and body.count(marks[0]) == per + 1, (body.count(marks[0]), per)
    assert all(body.count(m) == per for m in marks[1:])
    return body


TS_BASE = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)


def ts_marks(instants: int) -> list[bytes]:
    """The markers of a template's instants, in order (TS_MARK first)."""
    return [(TS_BASE + timedelta(seconds=k)).strftime('"%Y-%m-%dT%H:%M:%SZ"').encode() for k in range(instants)]


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length) if length else b""


async def _edge(port: int, edge: dict[str, str], batch: int, start: datetime, deadline: float, interval: float,
                out: dict[str, Any], instants: int = 1, realtime: bool = False) -> None:
    template = batch_template(edge, batch, instants)
    marks = ts_marks(instants)
    head = (f"POST {SYNC_PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {edge['token']}\r\n"
            f"Content-Type: application/json\r\nContent-Length: ").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seq, tick = 1, 0
    next_at = time.monotonic() + random.random() * interval
    try:
        while time.monotonic() < deadline:
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            first = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=instants) if realtime else \
                start + timedelta(seconds=tick * instants)
            body = template.replace(SEQ_MARK, b'"first_seq":%d' % seq)
            for k, mark in enumerate(marks):
                body = body.replace(mark, (first + timedelta(seconds=k)).strftime('"%Y-%m-%dT%H:%M:%SZ"').encode())
            t0 = time.perf_counter()
            writer.write(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status, reply = await _read_response(reader)
            out["latency"].append(time.perf_counter() - t0)
            if status == 200:
                out["readings"] += batch
                out["late_s"] = max(out.get("late_s", 0.0), time.monotonic() - next_at) if interval else 0.0
                seq, tick = seq + batch, tick + 1
            else:
                out["errors"] += 1
                out.setdefault("first_error", f"{status} {reply[:300].decode(errors='replace')}")
                await asyncio.sleep(0.5)
    finally:
        writer.close()


def client_main(spec_path: str) -> None:
    """``bench_hub_http.py --client SPEC``: run the edges of SPEC (JSON), print what happened (JSON)."""
    spec = json.loads(Path(spec_path).read_text())
    out: dict[str, Any] = {"readings": 0, "errors": 0, "latency": []}
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)

    async def main() -> None:
        deadline = time.monotonic() + spec["seconds"]
        await asyncio.gather(*(_edge(spec["port"], e, spec["batch"], start, deadline, spec["interval"], out,
                                     spec.get("instants", 1), spec.get("realtime", False))
                               for e in spec["edges"]))

    cpu0, t0 = time.process_time(), time.monotonic()
    asyncio.run(main())
    wall = time.monotonic() - t0
    lat = np.array(out.pop("latency")) * 1000
    print(json.dumps({**out, "wall_s": wall, "cpu_share": (time.process_time() - cpu0) / wall,
                      "posts": len(lat), "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                      "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None}), flush=True)


def start_client(hub: Hub, edges: list[dict[str, str]], batch: int, seconds: float, interval: float,
                 tmp: Path, instants: int = 1, realtime: bool = False) -> subprocess.Popen[str]:
    spec = tmp / f"client-{edges[0]['edge_id']}.json"
    spec.write_text(json.dumps({"port": hub.port, "edges": edges, "batch": batch, "seconds": seconds,
                                "interval": interval, "instants": instants, "realtime": realtime}))
    return subprocess.Popen([sys.executable, __file__, "--client", str(spec)], stdout=subprocess.PIPE, text=True)


def client_result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    if proc.returncode != 0 or not out.strip():
        raise SystemExit(f"the load client failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


# -- the baseline: raw binary COPY --------------------------------------------------------------------

def raw_copy_rate(server: PostgresServer, n: int = 200_000) -> float:
    start = datetime.now(UTC) - timedelta(hours=2)
    rows = [(start + timedelta(seconds=i // 200), "RAW-S1", f"F{(i % 200) // 4:03d}", METRICS[i % 4][0],
             METRICS[i % 4][2], METRICS[i % 4][1], 1.0, 0, "raw-edge", i + 1) for i in range(n)]
    best = float("inf")
    for _ in range(3):
        with psycopg.connect(server.create_database()) as conn:
            conn.execute(RAW_TABLE)
            conn.commit()
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(RAW_COPY) as copy:
                copy.set_types(RAW_TYPES)
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            best = min(best, time.perf_counter() - t0)
    return rate(n, best)


# -- sensor to incident -------------------------------------------------------------------------------

EDGE_CONFIG = """
[identity]
edge_id = "{edge_id}"
substation = "{substation}"

[hub]
url = "{hub_url}"
token_env = "SENTINEL_EDGE_TOKEN"
sync_interval_s = 2.0

[buffer]
path = "{buffer}"

[limits]
voltage_tolerance_pct = 5.0
voltage_critical_pct = 10.0

[[devices]]
id = "FEEDER-LAT"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
unit_id = 1
poll_interval_s = 0.1
timeout_s = 0.08
points = [{{ metric = "voltage_l1", unit = "kV", address = 100, data_type = "float32", nominal = 11.0 }}]
"""


class Feeder:
    """The simulator's Modbus server for one 11 kV feeder, on a loop in a thread of this process."""

    def __init__(self, config_text: str) -> None:
        from protocols.config import parse_config
        from simulator.modbus_server import ModbusEndpoint
        from simulator.plant import Plant

        self.plant = Plant([parse_config(config_text)])
        ((host, port), devices), = self.plant.endpoints.items()
        self.server = ModbusEndpoint(host, port, devices, self.plant.points)
        self.device_id = devices[0].id
        self.set(11.0)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)

    def set(self, kv: float) -> None:
        self.server.write(np.array([kv]))

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


async def _latency_trials(hub: Hub, feeder: Feeder, substation: str, trials: int) -> tuple[list[float], list[float]]:
    from websockets.asyncio.client import connect

    api_ms: list[float] = []
    ws_ms: list[float] = []
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=hub.url, headers=headers, timeout=10) as http, \
            connect(f"{hub.url.replace('http://', 'ws://')}/ws/grid-status?substation={substation}",
                    additional_headers=headers, max_size=None) as ws:
        async def open_incident() -> dict[str, Any] | None:
            r = await http.get("/incidents", params={"status": "OPEN", "limit": 10_000})
            found = [i for i in r.json()["incidents"] if i["device_id"] == feeder.device_id]
            return found[0] if found else None

        async def ws_sees(since: float) -> None:
            while True:
                m = json.loads(await ws.recv())
                if m.get("type") == "update" and any(a.get("device_id") == feeder.device_id
                                                     for a in m.get("alerts", [])):
                    ws_ms.append((time.perf_counter() - since) * 1000)
                    return

        for _ in range(trials):
            feeder.set(11.0)
            await asyncio.sleep(1.0)  # the edge sees normal again, then the last incident is resolved
            while (old := await open_incident()) is not None:
                await http.post(f"/incidents/{old['id']}/status", json={"status": "RESOLVED"})
            await asyncio.sleep(0.5)
            while True:  # pass over what the stream sent meanwhile
                try:
                    await asyncio.wait_for(ws.recv(), 0.05)
                except TimeoutError:
                    break
            t0 = time.perf_counter()
            feeder.set(11.0 * 0.85)
            ws_task = asyncio.create_task(ws_sees(t0))
            while await open_incident() is None:
                if time.perf_counter() - t0 > 30:
                    raise SystemExit("no incident 30 s after the sag: see the hub and edge logs")
                await asyncio.sleep(0.01)
            api_ms.append((time.perf_counter() - t0) * 1000)
            try:
                await asyncio.wait_for(ws_task, 30)
            except TimeoutError:
                ws_task.cancel()
    return api_ms, ws_ms


class LatencyRig:
    """The feeder's Modbus server and ``sentinel edge run`` polling it, for as long as it is open."""

    def __init__(self, hub: Hub, tmp: Path) -> None:
        (edge,) = hub.add_edges("latency", 1)
        self.substation = edge["substation"]
        text = EDGE_CONFIG.format(edge_id=edge["edge_id"], substation=edge["substation"], hub_url=hub.url,
                                  buffer=tmp / "edge-latency.db", modbus_port=_free_port())
        cfg = tmp / "edge-latency.toml"
        cfg.write_text(text)
        self.feeder = Feeder(text)
        self.log = open(tmp / "edge.log", "w")  # noqa: SIM115  (closed in close)
        self.proc = subprocess.Popen([*SENTINEL, "edge", "run", "--config", str(cfg)], cwd=tmp, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     env={**os.environ, "SENTINEL_EDGE_TOKEN": edge["token"], "PYTHONPATH": str(REPO)})
        time.sleep(3)
        if self.proc.poll() is not None:
            self.close()
            raise SystemExit(f"the edge stopped: see {tmp / 'edge.log'}")

    def trials(self, hub: Hub, n: int) -> tuple[list[float], list[float]]:
        return asyncio.run(_latency_trials(hub, self.feeder, self.substation, n))

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.feeder.close()
        self.log.close()


# -- a fleet at its real rate --------------------------------------------------------------------------

AGENT_WINDOWS = {"grid_monitor": 900.0, "anomaly_detector": 3600.0}  # AgentSettings' 1 Hz windows


def fleet_run(hub: Hub, database_url: str, server: PostgresServer, tmp: Path, n_edges: int, points: int,
              sync_s: int, seconds: float, prefill: bool, record: Any) -> None:
    """``n_edges`` edges of ``points`` points at 1 Hz, each syncing ``points x sync_s`` readings every
    ``sync_s`` s (as ``sentinel edge run`` does), stamped with the wall clock so the agents see them:
    does the hub keep up (stored against offered readings/s, how late the edges fall behind their
    schedule), at what CPU, and how long the agents' cycles take at that size (beside a raw binary
    read of the same window)."""
    if prefill:  # the agents' 15-minute window full from the start, as on a hub that has run a while
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_agents import fill

        from hub.storage import open_storage

        storage = open_storage(database_url)
        t0 = time.perf_counter()
        sizes = fill(storage, n_edges * points, now=datetime.now(UTC))
        storage.close()
        print(f"prefilled {sizes['window']:,} readings (15 min of {n_edges * points:,} points) in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    edges = hub.add_edges("fleet", n_edges)
    meters = {"hub": CpuMeter(hub.proc.pid), "pg": CpuMeter(postmaster_pid(server))}
    if hub.agents is not None:
        meters["agents"] = CpuMeter(hub.agents.pid)
    client = start_client(hub, edges, points * sync_s, seconds, float(sync_s), tmp, instants=sync_s, realtime=True)
    cycles: dict[str, list[float]] = {}
    states: dict[str, set[str]] = {}
    last_runs: dict[str, int] = {}
    while client.poll() is None:
        time.sleep(2.0)
        try:
            agents = hub.http.get("/agents").json().get("agents", [])
        except (httpx.HTTPError, ValueError):
            continue
        for a in agents:
            states.setdefault(a["name"], set()).add(a["state"])
            if a.get("runs", 0) > last_runs.get(a["name"], 0) and a.get("elapsed_ms") is not None:
                cycles.setdefault(a["name"], []).append(a["elapsed_ms"])
            last_runs[a["name"]] = a.get("runs", 0)
    res = client_result(client)
    shares = ", ".join(f"{k} {m.share():.2f}" for k, m in meters.items()) + f", client {res['cpu_share']:.2f} cores"
    offered = n_edges * points
    record(Figure(f"fleet_ingest_{n_edges}x{points}", res["readings"] / res["wall_s"], "rows/s", offered),
           f"(baseline: offered) POST p50 {res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms; furthest behind "
           f"schedule {res.get('late_s', 0.0):.1f} s; {shares}; errors {res['errors']}")
    now = datetime.now(UTC)
    with psycopg.connect(database_url) as conn:
        for name, window_s in AGENT_WINDOWS.items():
            t0 = time.perf_counter()
            rows = conn.execute("SELECT ts, substation, device_id, metric, value, anomaly_score, anomaly_type"
                                " FROM readings WHERE ts >= %s AND ts < %s",
                                (now - timedelta(seconds=window_s), now), binary=True).fetchall()
            raw_ms = (time.perf_counter() - t0) * 1000
            done = cycles.get(name, [])
            if done:
                record(Figure(f"fleet_agent_{name}_cycle", float(np.median(done)), "ms", raw_ms),
                       f"(baseline: raw binary read of its {len(rows):,}-row window now) {len(done)} cycles, "
                       f"longest {max(done):,.0f} ms; states seen {sorted(states.get(name, []))}")
            else:
                print(f"fleet_agent_{name}_cycle: no cycle finished in {seconds:g} s (states seen "
                      f"{sorted(states.get(name, []))}; raw read of its {len(rows):,}-row window {raw_ms:,.0f} ms)",
                      flush=True)
            del rows


def hub_readings(database_url: str) -> int:
    """Readings the hub holds now (counted after the trials: a scan of them all)."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    return int(row[0] or 0)


# -- where PostgreSQL's time goes ---------------------------------------------------------------------

STATEMENTS_SETTINGS = {"shared_preload_libraries": "'pg_stat_statements'", "pg_stat_statements.track": "all",
                       "pg_stat_statements.max": "1000"}


def reset_statements(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("SELECT pg_stat_statements_reset()")


def print_statements(database_url: str, wall_s: float, top: int = 12) -> None:
    """The statements that took the most of PostgreSQL's time since the last reset (pg_stat_statements,
    nested ones included: a CTE's or a function's parts appear both on their own and in their caller)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT total_exec_time, calls, rows, regexp_replace(query, '\\s+', ' ', 'g') FROM pg_stat_statements"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " ORDER BY total_exec_time DESC LIMIT %s", (top,)).fetchall()
    print(f"  PostgreSQL's busiest statements over {wall_s:.0f} s (share of one core, calls, mean):")
    for total_ms, calls, n, query in rows:
        print(f"  {total_ms / 1000 / wall_s:6.3f}  {calls:>9,}  {total_ms / max(calls, 1):8.3f} ms  {n:>10,} rows  "
              f"{query[:150]}", flush=True)


# -- main ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--edges", default="1,10,50,200", help="concurrent edges per ingest run (default 1,10,50,200)")
    parser.add_argument("--batch", type=int, default=200, help="readings per sync POST (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per ingest run (default 10)")
    parser.add_argument("--trials", type=int, default=30, help="sensor-to-incident trials per load (default 30; 0: skip)")
    parser.add_argument("--background", type=float, default=10_000, help="readings/s of load during the trials")
    parser.add_argument("--agents", choices=("in-process", "separate", "off"), default="in-process")
    parser.add_argument("--workers", type=int, default=1, help="hub worker processes (default 1)")
    parser.add_argument("--fleet", metavar="EDGESxPOINTS", default=None,
                        help="instead of the runs above: EDGES edges of POINTS points at 1 Hz at their real rate "
                             "(e.g. 200x100), for --fleet-seconds; with the agents' cycle times")
    parser.add_argument("--fleet-seconds", type=float, default=120.0, help="length of the fleet run (default 120)")
    parser.add_argument("--sync-s", type=int, default=2, help="the fleet's edges sync every N s (default 2)")
    parser.add_argument("--soak", type=float, default=0.0, metavar="MINUTES",
                        help="after the trials under load, keep the load on MINUTES more and run them again: "
                             "a hub that has run a while, beside the same hub fresh (default 0: not run)")
    parser.add_argument("--pg-statements", action="store_true",
                        help="load pg_stat_statements and print, after each ingest run and each set of trials, the "
                             "statements that took the most of PostgreSQL's time")
    parser.add_argument("--prefill", action="store_true",
                        help="fill the agents' 15-minute window at the fleet's size before the run")
    args = parser.parse_args(argv)
    if args.client:
        client_main(args.client)
        return 0

    figures: list[Figure] = []

    def record(figure: Figure, extra: str = "") -> None:
        figures.append(figure)
        print(figure.human() + (f"  {extra}" if extra else ""), flush=True)

    print(f"# hub over HTTP: agents {args.agents}, {args.workers} worker(s); {machine()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp_name, PostgresServer(
            tmp_name, STATEMENTS_SETTINGS if args.pg_statements else None) as server:
        tmp = Path(tmp_name)
        baseline = raw_copy_rate(server)
        print(f"{'raw binary COPY (baseline)':<34} {baseline:>14,.0f} rows/s", flush=True)
        database_url = server.create_database()
        hub = Hub(database_url, tmp, args.agents, args.workers)
        try:
            pg = postmaster_pid(server)
            if args.fleet:
                n_edges, points = (int(x) for x in args.fleet.lower().split("x"))
                fleet_run(hub, database_url, server, tmp, n_edges, points, args.sync_s, args.fleet_seconds,
                          args.prefill, record)
            for n in (int(x) for x in args.edges.split(",") if x.strip() and not args.fleet):
                edges = hub.add_edges(f"load{n}", n)
                if args.pg_statements:
                    reset_statements(database_url)
                hub_cpu, pg_cpu = CpuMeter(hub.proc.pid), CpuMeter(pg)
                res = client_result(start_client(hub, edges, args.batch, args.seconds, 0.0, tmp))
                shares = f"hub {hub_cpu.share():.2f} pg {pg_cpu.share():.2f} client {res['cpu_share']:.2f} cores"
                record(Figure(f"ingest_http_{n}_edges", res["readings"] / res["wall_s"], "rows/s", baseline),
                       f"POST p50 {res['p50_ms']:.1f} ms p99 {res['p99_ms']:.1f} ms; {shares}; errors {res['errors']}"
                       + (f" (first: {res['first_error']})" if res.get("first_error") else ""))
                if args.pg_statements:
                    print_statements(database_url, res["wall_s"])
            if args.trials and not args.fleet:
                rig = LatencyRig(hub, tmp)
                try:
                    idle_api, idle_ws = rig.trials(hub, args.trials)
                    load_edges = hub.add_edges("bg", 50)
                    interval = 50 * args.batch / args.background
                    length = args.trials * 4.0 + 60 + (args.soak * 60 + args.trials * 4.0 + 60 if args.soak else 0)
                    client = start_client(hub, load_edges, args.batch, length, interval, tmp)
                    time.sleep(5)
                    if args.pg_statements:
                        reset_statements(database_url)
                    hub_cpu, t_load = CpuMeter(hub.proc.pid), time.monotonic()
                    api, ws = rig.trials(hub, args.trials)
                    share = hub_cpu.share()
                    if args.pg_statements:
                        print_statements(database_url, time.monotonic() - t_load)
                    soaked = None
                    if args.soak:  # the same load on, then the trials again: a hub that has run a while
                        print(f"soaking: {args.background:,.0f} readings/s for {args.soak:g} min", flush=True)
                        time.sleep(args.soak * 60)
                        if args.pg_statements:
                            reset_statements(database_url)
                        soak_cpu, t_soak = CpuMeter(hub.proc.pid), time.monotonic()
                        soaked = (*rig.trials(hub, args.trials), soak_cpu)
                        if args.pg_statements:
                            print_statements(database_url, time.monotonic() - t_soak)
                    client.terminate()
                    client.wait(30)
                finally:
                    rig.close()
                for name, busy, idle in (("api", api, idle_api), ("ws", ws, idle_ws)):
                    for q in (50, 99):
                        record(Figure(f"sensor_to_incident_{name}_p{q}", float(np.percentile(busy, q)), "ms",
                                      float(np.percentile(idle, q))),
                               f"(baseline: no load; {len(busy)} trials; hub {share:.2f} cores under load)")
                if soaked is not None:
                    late_api, late_ws, soak_cpu = soaked
                    stored = hub_readings(database_url)
                    for name, late, fresh in (("api", late_api, api), ("ws", late_ws, ws)):
                        for q in (50, 99):
                            record(Figure(f"sensor_to_incident_{name}_p{q}_after_{args.soak:g}_min",
                                          float(np.percentile(late, q)), "ms", float(np.percentile(fresh, q))),
                                   f"(baseline: the same load's first minutes; {len(late)} trials; "
                                   f"{stored:,} readings stored; hub {soak_cpu.share():.2f} cores)")
        except BaseException:
            for log in ("hub.log", "edge.log"):
                if (tmp / log).exists():
                    tail = (tmp / log).read_text(errors="replace").splitlines()[-40:]
                    print(f"--- last lines of {log}:", *tail, sep="\n", file=sys.stderr)
            raise
        finally:
            hub.stop()
    print_json_lines(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
