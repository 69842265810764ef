"""History questions over a year: the rollups against the raw readings, on SQLite, PostgreSQL and
TimescaleDB (when installed).

A year of one-minute readings of one point (525,600 rows; ``--points`` more points beside it, so
the point is not alone in its tables) is stored through the hub's storage as edge syncs; the marked
hours are folded (``refresh_rollups``, timed: ``rollup_refresh_year``; on TimescaleDB the continuous
aggregates are refreshed over the year). Then, ``--repeat`` times
each, p50 and p99 in ms:

- ``query_year_1h``: one point's hourly min/max/avg/last/count over the year (8,760 buckets) as the
  readings API asks it (``series_buckets``: rollups over whole hours, readings at the ragged ends);
  baseline: the same buckets computed from the raw readings (``iter_buckets``), as before rollups.
- ``query_year_1d``: the same with daily buckets (365).
- ``query_day_raw``: one day of raw readings of the point (1,440 rows, ``iter_readings``); no
  baseline (it reads the readings themselves).
- ``rollup_bytes_per_reading`` beside ``raw_bytes_per_reading``: the tables' size on disk per reading.
- TimescaleDB only: every chunk compressed at once (what the policies do after ``compress_after``):
  ``compressed_bytes_per_reading`` (baseline: uncompressed) and the same for the rollups; then
  ``query_year_1h/1d_compressed_p99`` over compressed rollups.

    .venv/bin/python benchmarks/bench_rollups.py [--backend sqlite,postgresql,timescaledb] [--points 9] [--repeat 30]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Figure, machine, print_json_lines  # noqa: E402
from hub.storage import open_storage  # noqa: E402
from protocols.reading import Reading  # noqa: E402
from protocols.wire import ReadingRun, SyncBatch  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=UTC)
MINUTES = 365 * 1440
BATCH = 5_000


def _load(storage, points: int) -> float:  # noqa: ANN001
    """Store the year as edge syncs, then fold every marked hour; seconds the folding took."""
    import numpy as np

    rng = np.random.default_rng(1)
    devices = ["FEEDER-F12", *(f"FEEDER-X{i}" for i in range(points))]
    seq = 0
    for lo in range(0, MINUTES, BATCH // len(devices)):
        hi = min(MINUTES, lo + BATCH // len(devices))
        items = [Reading(ts=START + timedelta(minutes=m), substation="S1", device_id=d, metric="voltage_l1",
                         value=float(11.0 + 0.1 * np.sin(m / 720) + rng.normal(0, 0.01)), unit="kV")
                 for m in range(lo, hi) for d in devices]
        storage.apply_sync(SyncBatch(edge_id="bench", substation="S1", sent_at=START,
                                     readings=ReadingRun(first_seq=seq + 1, items=items)), lambda events: [])
        seq += len(items)
    t = time.perf_counter()
    if storage.backend == "timescaledb":  # nothing marked: materialize the continuous aggregates over the year
        storage.refresh_rollups(start=START, end=START + timedelta(days=365))
    while storage.refresh_rollups(limit=20_000):
        pass
    return time.perf_counter() - t


def _times(fn, repeat: int) -> tuple[float, float]:  # noqa: ANN001
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, round(0.99 * (len(out) - 1)))]


def _sizes(storage) -> tuple[float, float]:  # noqa: ANN001
    """Bytes on disk of the readings and of the rollups (with their indexes)."""
    if storage.backend == "sqlite":
        with storage.transaction() as tx:
            try:
                rows = tx.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
            except Exception:  # noqa: BLE001  (dbstat not compiled in)
                return float("nan"), float("nan")
        size = dict(rows)
        raw = sum(v for k, v in size.items() if k.startswith(("readings", "sqlite_autoindex_readings")))
        return raw, size.get("rollups", 0)
    with storage.transaction() as tx:
        raw = tx.execute("SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
                         " WHERE c.relkind IN ('r', 'p') AND (c.relname LIKE 'readings%%'"
                         " OR c.relname LIKE '_hyper_%%')").fetchone()[0]
        if storage.backend == "timescaledb":
            raw = tx.execute("SELECT hypertable_size('readings')").fetchone()[0]
            rolled = tx.execute("SELECT sum(hypertable_size(format('%%I.%%I', materialization_hypertable_schema,"
                                " materialization_hypertable_name)::regclass))"
                                " FROM timescaledb_information.continuous_aggregates").fetchone()[0]
        else:
            rolled = tx.execute("SELECT pg_total_relation_size('rollups')").fetchone()[0]
    return float(raw), float(rolled)


def _compress_all(storage) -> None:  # noqa: ANN001
    """TimescaleDB: compress every chunk of the readings and of the rollups now, not after a week."""
    with storage.transaction() as tx:
        tx.execute("SELECT count(compress_chunk(c, if_not_compressed => true))"
                   " FROM (SELECT show_chunks('readings') AS c"
                   " UNION ALL SELECT show_chunks(format('%%I.%%I', materialization_hypertable_schema,"
                   " materialization_hypertable_name)::regclass) FROM timescaledb_information.continuous_aggregates"
                   " WHERE compression_enabled) AS chunks")


def run(url: str, label: str, points: int, repeat: int) -> list[Figure]:
    storage = open_storage(url)
    try:
        t = time.perf_counter()
        fold_s = _load(storage, points)
        print(f"{label}: loaded {MINUTES * (points + 1):,} readings in {time.perf_counter() - t:.0f} s "
              f"(layout {storage.backend}); folded the year's marked hours in {fold_s:.1f} s", flush=True)
        gc.collect()  # the load's garbage is not the questions'; and what exists now is frozen, as the hub
        gc.freeze()  # freezes what its start-up made (hub/app.py)
        end = START + timedelta(days=365)
        q = {"devices": ["FEEDER-F12"], "metrics": ["voltage_l1"]}
        figures = [Figure(f"rollup_refresh_year_{label}", MINUTES * (points + 1) / fold_s, "rows/s", float("nan"))]
        for name, width in (("1h", 3600), ("1d", 86_400)):
            rolled = _times(lambda w=width: storage.series_buckets(START, end, w, "FEEDER-F12", "voltage_l1"), repeat)
            raw = _times(lambda w=width: [b for c in storage.iter_buckets(START, end, w, **q) for b in c],
                         max(3, repeat // 10))
            figures += [Figure(f"query_year_{name}_p50_{label}", rolled[0], "ms", raw[0]),
                        Figure(f"query_year_{name}_p99_{label}", rolled[1], "ms", raw[1])]
        day = START + timedelta(days=200)
        raw_day = _times(lambda: [r for c in storage.iter_readings(day, day + timedelta(days=1), **q) for r in c],
                         repeat)
        figures += [Figure(f"query_day_raw_p50_{label}", raw_day[0], "ms", float("nan")),
                    Figure(f"query_day_raw_p99_{label}", raw_day[1], "ms", float("nan"))]
        raw_b, rolled_b = _sizes(storage)
        n = MINUTES * (points + 1)
        figures.append(Figure(f"rollup_bytes_per_reading_{label}", rolled_b / n, "bytes", raw_b / n))
        if storage.backend == "timescaledb":  # and once compressed (the policies' work, done at once)
            _compress_all(storage)
            packed_b, packed_rolled_b = _sizes(storage)
            figures += [Figure(f"compressed_bytes_per_reading_{label}", packed_b / n, "bytes", raw_b / n),
                        Figure(f"compressed_rollup_bytes_per_reading_{label}", packed_rolled_b / n, "bytes",
                               rolled_b / n)]
            for name, width in (("1h", 3600), ("1d", 86_400)):  # questions over compressed rollups
                rolled = _times(lambda w=width: storage.series_buckets(START, end, w, "FEEDER-F12", "voltage_l1"),
                                repeat)
                figures.append(Figure(f"query_year_{name}_compressed_p99_{label}", rolled[1], "ms", float("nan")))
        for f in figures:
            print(f.human(), flush=True)
        return figures
    finally:
        storage.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="sqlite,postgresql,timescaledb")
    ap.add_argument("--points", type=int, default=9, help="points stored beside the one asked (default 9)")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args()
    print(machine(), flush=True)
    figures: list[Figure] = []
    backends = args.backend.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-rollups-") as tmp:
        if "sqlite" in backends:
            figures += run(f"sqlite:///{tmp}/hub.db", "sqlite", args.points, args.repeat)
        if {"postgresql", "timescaledb"} & set(backends):
            from sentinel_cli.pgserver import PostgresServer, find_bindir

            if "postgresql" in backends:  # a server without TimescaleDB: the plain (partitioned) layout
                with PostgresServer(f"{tmp}/pg") as server:
                    figures += run(server.create_database(), "postgresql", args.points, args.repeat)
            if "timescaledb" in backends:
                if any((find_bindir().parent / "lib").glob("timescaledb*.so")):
                    settings = {"shared_preload_libraries": "'timescaledb'", "timescaledb.telemetry_level": "off"}
                    with PostgresServer(f"{tmp}/tsdb", settings=settings) as server:
                        figures += run(server.create_database(), "timescaledb", args.points, args.repeat)
                else:
                    print("timescaledb: not installed (scripts/timescaledb.sh builds it): skipped", flush=True)
    print_json_lines(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
