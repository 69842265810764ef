"""The whole edge pipeline on one core: decode -> limits -> rows -> score -> buffer, in readings/s,
beside raw SQLite inserts of the same rows.

A 20-unit substation with 25 float32 points per unit (three-phase voltages, currents, power ...)
is polled 400 times; the registers each poll returns are prebuilt, so no network is involved.
Every poll goes through the edge's own code: ``DeviceCodec.decode`` (registers -> values),
``LimitMonitor.check`` (grid-code events), ``EdgeDaemon._rows`` (quality and stale flags, row
tuples), then per writer batch (50 polls drained at once, as under load) ``EdgeScoring.score``
(detectors, one call per batch) and ``Buffer.append`` (one transaction). The baseline inserts the
same rows, with the same scores, in the same batches, with executemany into an identical table.
Figures, and where the pipeline's time goes: docs/scaling.md.

    python benchmarks/bench_edge_pipeline.py [--polls N]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import Figure, machine, print_json_lines, use_repo_root

use_repo_root()

from edge.buffer import SCHEMA, Buffer  # noqa: E402
from edge.daemon import EdgeDaemon  # noqa: E402
from edge.scoring import EdgeScoring  # noqa: E402
from protocols.config import parse_config  # noqa: E402
from protocols.modbus.codec import encode_values  # noqa: E402

UNITS, POINTS, BATCH = 20, 25, 50


def config_text() -> str:
    devices = []
    for u in range(1, UNITS + 1):
        pts = ",\n".join(
            f'  {{ metric = "voltage_p{i:02d}", unit = "kV", address = {100 + 2 * i}, data_type = "float32", '
            f'nominal = 11.0 }}' for i in range(POINTS))
        devices.append(f'[[devices]]\nid = "U{u:02d}"\nprotocol = "modbus_tcp"\nhost = "127.0.0.1"\nport = 9\n'
                       f'unit_id = {u}\npoints = [\n{pts}\n]\n')
    return ('[identity]\nedge_id = "bench"\nsubstation = "BENCH"\n[hub]\nurl = "http://127.0.0.1:9"\n'
            '[quality]\nstale_after_s = 600\n' + "\n".join(devices))


async def run(polls: int, tmp: Path) -> tuple[float, float, int]:
    cfg = parse_config(config_text())
    daemon = EdgeDaemon(cfg, buffer_path=tmp / "unused.db")  # for its sources, monitors and _rows
    rng = np.random.default_rng(0)
    values = 11.0 * (1 + 0.002 * rng.standard_normal((polls, POINTS)))
    regs = [encode_values(v, "float32")[0].ravel() for v in values]  # one block of 50 registers per poll
    scoring = EdgeScoring("BENCH", cfg.scoring)
    buffer = Buffer(tmp / "pipeline.db", "BENCH")
    t0 = 1_800_000_000.0
    all_rows: list[list] = []
    all_scores: list = []
    started = time.perf_counter()
    cpu0 = time.process_time()
    for start in range(0, polls, BATCH):
        rows, events = [], []
        for p in range(start, min(polls, start + BATCH)):
            ts = t0 + p
            for d in daemon.devices:
                v, f = d.source.codec.decode([regs[p]])
                events += d.monitor.check(ts, v)
                rows += daemon._rows(d, ts, v, f)
        scores, more = scoring.score(rows)
        buffer.append(rows, events + more, scores)
        all_rows.append(rows)
        all_scores.append(scores)
    ours_s = time.perf_counter() - started
    cpu_s = time.process_time() - cpu0
    buffer.close()
    await daemon.sync.aclose()
    daemon.buffer.close()
    n = sum(len(r) for r in all_rows)

    raw = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=NORMAL")
    raw.executescript(SCHEMA)
    cols = {r[1] for r in raw.execute("PRAGMA table_info(readings)")}
    if "anomaly_score" not in cols:
        raw.execute("ALTER TABLE readings ADD COLUMN anomaly_score REAL")
        raw.execute("ALTER TABLE readings ADD COLUMN anomaly_type TEXT")
    sql = ("INSERT INTO readings (ts, device_id, metric, value, unit, quality, flags, anomaly_score, anomaly_type)"
           " VALUES (?,?,?,?,?,?,?,?,?)")
    prepared = [[(*r, s, t) for r, s, t in zip(rows, sc[0], sc[1])] for rows, sc in zip(all_rows, all_scores)]
    started = time.perf_counter()
    for batch in prepared:
        raw.execute("BEGIN")
        raw.executemany(sql, batch)
        raw.execute("COMMIT")
    raw_s = time.perf_counter() - started
    raw.close()
    return n / ours_s, n / raw_s, int(100 * cpu_s / ours_s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=400)
    args = ap.parse_args()
    print(f"edge pipeline benchmark: {UNITS} units x {POINTS} points, {args.polls} polls, on {machine()}")
    with tempfile.TemporaryDirectory() as d:
        ours, raw, cpu = asyncio.run(run(args.polls, Path(d)))
    figs = [Figure("edge_pipeline_readings_per_s", ours, "readings/s", raw)]
    print(figs[0].human())
    print(f"(the pipeline used {cpu} % of one core while it ran)")
    print_json_lines(figs)


if __name__ == "__main__":
    main()
