"""Modbus TCP polling: points per second one edge process reads from the simulator, and its CPU
share at a realistic 5,000 points per second.

The simulator runs in its own process (``sentinel sim run``), serving 50 units x 100 float32
points on one endpoint. Measured, each for ``--seconds``:

- ``poll_block``: the edge daemon polling as fast as it can (poll interval 100 ms for 5,000 points, so it is always
  behind) with block reads (100 points in 2 requests per unit), readings/s into its buffer;
- ``poll_per_point``: the same with one request per point (max_block_registers = 2);
- baseline for both: a bare pymodbus client reading the same registers in a loop, 125-register
  block reads, points/s decoded by nothing (what the wire and the server allow);
- ``cpu_at_5000pps``: the edge at a realistic load, each unit polled once a second (5,000 points/s):
  the share of one core the edge process used (process CPU time / wall time), against 100 %.

    python benchmarks/bench_polling.py [--seconds S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, Figure, machine, print_json_lines, use_repo_root

use_repo_root()

from pymodbus.client import AsyncModbusTcpClient  # noqa: E402

from edge.daemon import EdgeDaemon  # noqa: E402
from protocols.config import parse_config  # noqa: E402
from tests.conftest import free_port  # noqa: E402

UNITS, POINTS = 50, 100


def config_text(port: int, poll_s: float, timeout_s: float, per_point: bool) -> str:
    head = f"""
[identity]
edge_id = "edge-bench"
substation = "BENCH"
[hub]
url = "http://127.0.0.1:{free_port()}"
sync_interval_s = 3600
"""
    devices = []
    for u in range(1, UNITS + 1):
        pts = ",\n".join(
            f'  {{ metric = "p{i:03d}", unit = "kV", address = {100 + 2 * i}, data_type = "float32" }}'
            for i in range(POINTS))
        devices.append(f"""
[[devices]]
id = "U{u:02d}"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {port}
unit_id = {u}
poll_interval_s = {poll_s}
timeout_s = {timeout_s}
max_block_registers = {2 if per_point else 125}
points = [
{pts}
]""")
    return head + "".join(devices)


def start_simulator(tmp: Path, port: int) -> subprocess.Popen:
    cfg = tmp / "sim.toml"
    cfg.write_text(config_text(port, 1.0, 0.5, False))
    scen = tmp / "baseline.json"
    scen.write_text(json.dumps({"scenario_name": "baseline", "description": "no anomalies",
                                "duration_seconds": 86400, "anomalies": []}))
    log = tmp / "sim.log"
    with log.open("w") as out:  # a file, not a pipe: a full pipe would stall the simulator
        proc = subprocess.Popen([sys.executable, "-m", "sentinel_cli.main", "sim", "run", str(scen), "--config",
                                 str(cfg)], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "serving" in log.read_text():
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"simulator did not start: {log.read_text()[-2000:]}")


async def edge_rate(port: int, tmp: Path, seconds: float, poll_s: float, per_point: bool) -> tuple[float, float]:
    """(readings/s buffered, CPU share of one core) for an edge polling the simulator."""
    cfg = parse_config(config_text(port, poll_s, min(0.5, poll_s * 0.9), per_point))
    db = tmp / f"edge-{time.monotonic_ns()}.db"
    daemon = EdgeDaemon(cfg, buffer_path=db)
    task = asyncio.create_task(daemon.run())
    await asyncio.sleep(2.0)  # connect and settle
    n0, c0, t0 = daemon.stats.readings_buffered, time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    n1, c1, t1 = daemon.stats.readings_buffered, time.process_time(), time.monotonic()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return (n1 - n0) / (t1 - t0), (c1 - c0) / (t1 - t0)


async def raw_rate(port: int, seconds: float) -> float:
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    n = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        for u in range(1, UNITS + 1):
            a = await client.read_holding_registers(100, count=124, device_id=u)
            b = await client.read_holding_registers(224, count=76, device_id=u)
            n += (len(a.registers) + len(b.registers)) // 2
    client.close()
    return n / (time.monotonic() - t0)


async def main_async(seconds: float) -> list[Figure]:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        sim = start_simulator(tmp, port)
        try:
            raw = await raw_rate(port, seconds)
            block, _ = await edge_rate(port, tmp, seconds, 0.1, per_point=False)
            single, _ = await edge_rate(port, tmp, seconds, 0.1, per_point=True)
            realistic, cpu = await edge_rate(port, tmp, seconds * 2, 1.0, per_point=False)
        finally:
            sim.terminate()
            sim.wait(10)
    figs = [
        Figure("poll_block_points_per_s", block, "points/s", raw),
        Figure("poll_per_point_points_per_s", single, "points/s", raw),
        Figure("poll_realistic_points_per_s", realistic, "points/s", UNITS * POINTS),
        Figure("edge_cpu_share_at_5000pps", cpu * 100, "% core", 100.0),
    ]
    return figs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    print(f"polling benchmark: {UNITS} units x {POINTS} points, simulator in its own process, on {machine()}")
    figs = asyncio.run(main_async(args.seconds))
    for f in figs:
        print(f.human(), flush=True)
    print_json_lines(figs)


if __name__ == "__main__":
    main()
