"""Exporting readings through the hub: a year of one-minute data for 100 points (52,560,000 rows), as
CSV and Parquet, with the hub's peak memory and the export's throughput beside a bare SELECT.

The data goes straight into a fresh database (SQLite: one INSERT ... SELECT per month from a
recursive CTE, then the hub's own indexes; PostgreSQL: the hub's partitions, then INSERT ... SELECT
from generate_series), ordered by time as ingest writes it. Then, for each format, the hub is
started in a process of its own (this script with ``--serve``: HubServer on 127.0.0.1, SQLite or
PostgreSQL) and one export is streamed from ``GET /export/readings`` by an httpx client in this
process, to /dev/null. The hub's memory is read from ``/proc/<pid>/status``: VmRSS sampled every
50 ms, and VmHWM (the kernel's own peak) when the export ends; a fresh hub per export, so each peak
is that export's (or start-up's, whichever is higher: the idle figure says which).

Two sizes of each export, ``--small-days`` (30) and ``--days`` (365), from the same database: if the
hub held rows, its peak would grow twelvefold between them.

Baseline: a bare ``SELECT ts, substation, device_id, metric, value, unit, quality, flags FROM
readings WHERE ts >= ? AND ts < ?`` of the same rows, iterated with a cursor (SQLite's sqlite3;
PostgreSQL: a psycopg server-side cursor fetching 50,000 rows at a time), in storage order (here
time order, as written; an ORDER BY would sort the year on PostgreSQL, which has no btree on ts),
rows/s: what reading the rows costs before any object is built, any order checked, any file written.

    .venv/bin/python benchmarks/bench_export.py [--days 365] [--small-days 30] [--points 100]
        [--backend sqlite|postgresql|both] [--formats csv,parquet] [--dir DIR]

A year takes minutes to generate and each full export a few more; ``--days 3 --small-days 1`` is a
quick look. Needs about 8 GB of disk per backend for a year (``--dir``: where; default a temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from _common import Figure, machine, print_json_lines, use_repo_root

use_repo_root()

START = datetime(2025, 12, 1, tzinfo=UTC)  # a year ending before "today": PostgreSQL gives every day its partition
KEY = "bench-admin-key-0123456789abcdefghij"
MB = 1024 * 1024
SUBSTATIONS = ("BENCH-S1", "BENCH-S2")
METRICS = (("voltage_l1", "kV", 11.0), ("voltage_l2", "kV", 11.0), ("voltage_l3", "kV", 11.0),
           ("current_l1", "A", 400.0), ("frequency", "Hz", 50.0))


def points(n: int) -> list[tuple[int, str, str, str, str, float]]:
    """``n`` points: (k, substation, device_id, metric, unit, nominal); 5 metrics per device."""
    out = []
    for k in range(n):
        device, m = divmod(k, len(METRICS))
        metric, unit, nominal = METRICS[m]
        out.append((k, SUBSTATIONS[device % 2], f"FEEDER-{device:03d}", metric, unit, nominal))
    return out


# -- the data -----------------------------------------------------------------------------------------


def make_sqlite(path: str, days: int, n_points: int) -> None:
    from hub.storage.sqlite import SCHEMA, SQLiteStorage

    db = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-1000000", "threads=2"):
        db.execute(f"PRAGMA {pragma}")
    table = re.search(r"CREATE TABLE IF NOT EXISTS readings \(.*?\n\);", SCHEMA, re.S)
    assert table, "hub.storage.sqlite.SCHEMA has no readings table"
    db.execute(table.group(0))
    db.execute("CREATE TEMP TABLE points (k INTEGER PRIMARY KEY, substation TEXT, device_id TEXT, metric TEXT,"
               " unit TEXT, nominal REAL)")
    db.executemany("INSERT INTO points VALUES (?,?,?,?,?,?)", points(n_points))
    minutes = days * 1440
    for first in range(0, minutes, 30 * 1440):  # a month per transaction
        last = min(minutes, first + 30 * 1440)
        db.execute("BEGIN")
        db.execute(
            "WITH RECURSIVE m(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM m WHERE i < ?)"
            " INSERT INTO readings (ts, substation, device_id, metric, value, unit, quality, flags, source)"
            " SELECT ? + m.i * 60.0, p.substation, p.device_id, p.metric,"
            " p.nominal * (1 + ((m.i * 7919 + p.k * 104729) % 1000003 - 500001) / 50000000.0), p.unit, 1.0, 0, 'bench'"
            " FROM m CROSS JOIN points AS p", (first, last - 1, START.timestamp()))
        db.execute("COMMIT")
    for index in re.findall(r"CREATE INDEX IF NOT EXISTS \w+ ON readings \([^)]*\);", SCHEMA):
        db.execute(index)  # the hub's own indexes, built once with a big cache
    db.close()
    SQLiteStorage(path).close()  # the rest of the hub's schema, and WAL


def make_postgres(url: str, days: int, n_points: int) -> None:
    import psycopg

    from hub.storage.postgres import PostgresStorage
    from protocols.reading import Reading

    storage = PostgresStorage(url)
    try:  # every day's partition, as ingest makes them
        storage._ensure_partitions([Reading(ts=START + timedelta(days=d), substation="", device_id="", metric="",
                                            value=None) for d in range(days)])
    finally:
        storage.close()
    values = ", ".join(f"({k}, '{s}', '{d}', '{m}', '{u}', {n})" for k, s, d, m, u, n in points(n_points))
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(0, days, 30):
            last = min(days, first + 30)
            conn.execute(
                "INSERT INTO readings (ts, substation, device_id, metric, value, unit, quality, flags, source)"
                " SELECT %s + make_interval(mins => m.i), p.substation, p.device_id, p.metric,"
                " p.nominal * (1 + ((m.i::bigint * 7919 + p.k * 104729) %% 1000003 - 500001) / 50000000.0),"
                " p.unit, 1.0, 0,"
                f" 'bench' FROM generate_series(%s::int, %s::int) AS m(i) CROSS JOIN (VALUES {values})"
                " AS p(k, substation, device_id, metric, unit, nominal)", (START, first * 1440, last * 1440 - 1))
        conn.execute("VACUUM ANALYZE readings")


# -- the baseline -------------------------------------------------------------------------------------

_BARE = ("SELECT ts, substation, device_id, metric, value, unit, quality, flags FROM readings"
         " WHERE ts >= {0} AND ts < {0}")


def bare_select(url: str, start: datetime, end: datetime) -> tuple[int, float]:
    """Rows and seconds of the bare SELECT, iterated with a cursor."""
    from hub.storage import parse_database_url

    kind, target = parse_database_url(url)
    began = time.perf_counter()
    rows = 0
    if kind == "sqlite":
        db = sqlite3.connect(target)
        for _ in db.execute(_BARE.format("?"), (start.timestamp(), end.timestamp())):
            rows += 1
        db.close()
    else:
        import psycopg

        with psycopg.connect(target, options="-c TimeZone=UTC") as conn, conn.cursor(name="bare") as cur:
            cur.itersize = 50_000
            cur.execute(_BARE.format("%s"), (start, end))
            for _ in cur:
                rows += 1
    return rows, time.perf_counter() - began


# -- the hub, in a process of its own -----------------------------------------------------------------


def serve(url: str, port: int) -> None:
    """``--serve``: the hub on 127.0.0.1:port until stdin closes; "ready" on stdout once it answers."""
    import logging

    from hub.server import HubServer
    from hub.settings import Settings
    from hub.storage import open_storage

    logging.basicConfig(level=logging.ERROR)
    registry = tempfile.mkdtemp(prefix="bench-export-models-")
    settings = Settings(database_url=url, admin_key=KEY, agents=None, model_registry=registry)
    storage = open_storage(url)

    async def run() -> None:
        server = HubServer(storage, port, settings=settings)
        await server.start()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.stop()

    try:
        asyncio.run(run())
    finally:
        storage.close()


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0]) * 1024
    return out


@dataclass
class Export:
    fmt: str
    days: int
    rows: int
    bytes: int = 0
    seconds: float = 0.0
    idle_rss: int = 0
    peak_rss: int = 0  # sampled
    hwm: int = 0  # the kernel's peak, start-up included
    rss_at: list[tuple[float, int]] = field(default_factory=list)  # (share of the bytes, rss) through the export


def export_via_hub(url: str, fmt: str, days: int, expected_rows: int) -> Export:
    import httpx

    from tests.conftest import free_port

    port = free_port()
    hub = subprocess.Popen([sys.executable, __file__, "--serve", url, str(port)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    result = Export(fmt, days, expected_rows)
    try:
        line = hub.stdout.readline() if hub.stdout else ""
        if line.strip() != "ready":
            raise RuntimeError(f"the hub did not start (said {line!r})")
        time.sleep(0.5)
        result.idle_rss = _status(hub.pid)["VmRSS"]
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                samples.append((time.perf_counter(), _status(hub.pid)["VmRSS"]))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        params = {"start": START.isoformat(), "end": (START + timedelta(days=days)).isoformat(), "format": fmt}
        progress: list[tuple[float, int]] = []
        newlines = 0
        with open(os.devnull, "wb") as sink, httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300,
                                                          headers={"Authorization": f"Bearer {KEY}"}) as client:
            sampler.start()
            began = time.perf_counter()
            with client.stream("GET", "/export/readings", params=params) as answer:
                if answer.status_code != 200:
                    answer.read()
                    raise RuntimeError(f"export answered {answer.status_code}: {answer.text[:300]}")
                for data in answer.iter_raw(1 << 20):
                    sink.write(data)
                    result.bytes += len(data)
                    newlines += data.count(b"\n")
                    progress.append((time.perf_counter(), result.bytes))
            result.seconds = time.perf_counter() - began
            stop.set()
            sampler.join()
        result.hwm = _status(hub.pid)["VmHWM"]
        if fmt == "csv" and newlines - 1 != expected_rows:
            raise RuntimeError(f"the CSV held {newlines - 1:,} rows, not {expected_rows:,}")
        result.peak_rss = max(rss for _, rss in samples)
        for share in (0.1, 0.25, 0.5, 0.75, 1.0):  # the hub's RSS when that share of the bytes had come
            when = next(t for t, b in progress if b >= share * result.bytes)
            result.rss_at.append((share, max((rss for t, rss in samples if t <= when), default=0)))
        return result
    finally:
        if hub.stdin:
            hub.stdin.close()
        try:
            hub.wait(30)
        except subprocess.TimeoutExpired:
            hub.send_signal(signal.SIGKILL)
            hub.wait()


# -- the run ------------------------------------------------------------------------------------------


def run_backend(backend: str, url: str, args: argparse.Namespace) -> list[Figure]:
    rows_per_day = 1440 * args.points
    print(f"\n[{backend}] generating {args.days} days x {args.points} points = {args.days * rows_per_day:,} rows ...",
          flush=True)
    began = time.perf_counter()
    (make_sqlite if backend == "sqlite" else make_postgres)(url.removeprefix("sqlite:///") if backend == "sqlite"
                                                             else url, args.days, args.points)
    print(f"[{backend}] generated in {time.perf_counter() - began:,.0f} s", flush=True)
    rows, seconds = bare_select(url, START, START + timedelta(days=args.days))
    assert rows == args.days * rows_per_day, f"the database holds {rows:,} rows in the range"
    baseline = rows / seconds
    print(f"[{backend}] bare SELECT of {rows:,} rows: {seconds:,.1f} s, {baseline:,.0f} rows/s", flush=True)
    figures = []
    for fmt in args.formats:
        for days in sorted({args.small_days, args.days}):
            e = export_via_hub(url, fmt, days, days * rows_per_day)
            through = ", ".join(f"{share:.0%} {rss / MB:,.0f}" for share, rss in e.rss_at)
            print(f"[{backend}] {fmt} {days} d: {e.rows:,} rows, {e.bytes / MB:,.0f} MiB in {e.seconds:,.1f} s "
                  f"({e.rows / e.seconds:,.0f} rows/s); hub RSS idle {e.idle_rss / MB:,.0f} MiB, peak sampled "
                  f"{e.peak_rss / MB:,.0f} MiB, VmHWM {e.hwm / MB:,.0f} MiB; through the export (MiB): {through}",
                  flush=True)
            figures.append(Figure(f"export_{backend}_{fmt}_{days}d_rows_per_s", e.rows / e.seconds, "rows/s", baseline))
            # the kernel's peak of the hub process (start-up included) beside its RSS before the export
            figures.append(Figure(f"export_{backend}_{fmt}_{days}d_hub_peak_rss", e.hwm / MB, "MiB", e.idle_rss / MB))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=365, help="days of one-minute data (365)")
    ap.add_argument("--small-days", type=int, default=30, help="the smaller export, in days (30)")
    ap.add_argument("--points", type=int, default=100, help="points (series) (100)")
    ap.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="sqlite")
    ap.add_argument("--formats", default="csv,parquet", type=lambda s: s.split(","))
    ap.add_argument("--dir", default=None, help="where the databases go (default: a temp dir, removed after)")
    args = ap.parse_args()
    print(f"{machine()}; export of {args.days} and {args.small_days} days x {args.points} points of one-minute data")
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="bench-export-", dir=args.dir) as tmp:
        if args.backend in ("sqlite", "both"):
            figures += run_backend("sqlite", f"sqlite:///{tmp}/hub.db", args)
            os.unlink(f"{tmp}/hub.db")
        if args.backend in ("postgresql", "both"):
            from sentinel_cli.pgserver import PostgresServer

            with PostgresServer(f"{tmp}/pg", settings={"max_wal_size": "'8GB'", "checkpoint_timeout": "'30min'",
                                                       "shared_buffers": "'256MB'"}) as server:
                figures += run_backend("postgresql", server.create_database(), args)
    print()
    for figure in figures:
        print(figure.human())
    print_json_lines(figures)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main()
