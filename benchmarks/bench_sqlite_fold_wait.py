"""How long a small request waits on the SQLite storage while a question folds a backlog of
unrolled hours, with the storage's first-come-first-served lock and with a plain one.

Three weeks of the two sample substations' history (10-minute samples, as the dashboard's browser
tests and ``sentinel demo`` store it) are stored unrolled. Then one thread asks what the anomaly
detector asks on its first cycle, every metric's hourly means over 30 days (``hourly_means``: it
folds every marked hour of its range first, 32 hours a transaction), while the main thread makes
what a chart's first load makes, ``latest_readings`` of one substation and an hour of one point in
buckets (``series_buckets``), every 20 ms until the fold ends:

- ``sqlite_request_during_fold_p50`` / ``_p99`` / ``_max`` (ms), the storage's lock
  (``hub.storage.fifo_lock.FifoLock``);
- the same with ``_plain_lock``: a ``threading.Lock`` put in its place, on a fresh copy of the data;
- baseline: the same request on the same storage once the fold is done (p50/p99 of as many).

    .venv/bin/python benchmarks/bench_sqlite_fold_wait.py [--days 21]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Figure, machine, print_json_lines  # noqa: E402
from hub.storage.fifo_lock import FifoLock  # noqa: E402
from hub.storage.sqlite import SQLiteStorage  # noqa: E402
from protocols.config import load_config  # noqa: E402
from simulator.history import history_readings  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "firmware_configs"


def request(storage: SQLiteStorage, substation: str, device: str, metric: str, now: datetime) -> float:
    t = time.perf_counter()
    storage.latest_readings([substation])
    storage.series_buckets(now - timedelta(hours=1), now, 60, device, metric, substation)
    return (time.perf_counter() - t) * 1000


def measure(db: Path, lock: str, metrics: list[str], point: tuple[str, str, str], now: datetime
            ) -> tuple[list[float], list[float], float]:
    storage = SQLiteStorage(db)
    if lock == "plain":
        storage._lock = threading.Lock()  # type: ignore[assignment]  # noqa: SLF001  (the comparison)
    else:
        assert isinstance(storage._lock, FifoLock)  # noqa: SLF001
    try:
        done = threading.Event()
        fold_s = [0.0]

        def fold() -> None:
            t = time.perf_counter()
            storage.hourly_means(metrics, now - timedelta(days=30), now)
            fold_s[0] = time.perf_counter() - t
            done.set()

        worker = threading.Thread(target=fold)
        worker.start()
        during = []
        while not done.is_set():
            during.append(request(storage, *point, now))
            time.sleep(0.02)
        worker.join()
        idle = [request(storage, *point, now) for _ in range(max(20, len(during)))]
        return during, idle, fold_s[0]
    finally:
        storage.close()


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=float, default=21.0)
    args = ap.parse_args()
    print(machine())
    configs = [load_config(CONFIGS / n) for n in ("nairobi-s1.toml", "mombasa-s1.toml")]
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    rows = history_readings(configs, days=args.days, end=now)
    metrics = sorted({r.metric for r in rows})
    first = rows[0]
    point = (first.substation, first.device_id, first.metric)
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        seed = Path(tmp) / "seed.db"
        storage = SQLiteStorage(seed)
        storage.insert_readings(rows, "history")
        storage.close()
        print(f"{len(rows):,} readings of {len(metrics)} metrics over {args.days:g} days, unrolled", flush=True)
        for lock in ("fifo", "plain"):
            db = Path(tmp) / f"{lock}.db"
            shutil.copy(seed, db)
            during, idle, fold_s = measure(db, lock, metrics, point, now)
            suffix = "" if lock == "fifo" else "_plain_lock"
            print(f"{lock} lock: fold {fold_s:.1f} s, {len(during)} requests during it", flush=True)
            for name, q in (("p50", 50), ("p99", 99)):
                figures.append(Figure(f"sqlite_request_during_fold_{name}{suffix}", pct(during, q), "ms",
                                      pct(idle, q)))
            figures.append(Figure(f"sqlite_request_during_fold_max{suffix}", max(during), "ms", max(idle)))
    for f in figures:
        print(f.human())
    print_json_lines(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
