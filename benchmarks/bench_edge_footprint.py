"""The edge's footprint on its box: resident memory and CPU of ``sentinel edge run`` polling 500
points at 1 Hz, beside a bare pymodbus poller of the same points.

The simulator (its own process) serves 5 Modbus units x 100 float32 points. Each measured program
runs as its own process for ``--seconds`` after a settling time; its RSS (``VmRSS``, and the peak
``VmHWM``) and CPU (user + system time / wall time, from ``/proc/<pid>/stat``) are read from
``/proc``:

- ``edge_rss_500pps``: the edge daemon as a technician runs it (``sentinel edge run``; the hub is
  unreachable, so it buffers everything, as on a box cut off; scoring with its detectors, no model);
- ``edge_cpu_500pps``: its share of one core;
- baseline for both: a bare pymodbus client in its own process polling the same 1,000 registers
  once a second (two block reads per unit) and decoding nothing.

The issue's targets: under 100 MB resident and under 2 % of a core.

    .venv/bin/python benchmarks/bench_edge_footprint.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from _common import REPO, Figure, machine, print_json_lines, use_repo_root

use_repo_root()

import bench_polling  # noqa: E402
from tests.conftest import free_port  # noqa: E402

UNITS = 5
CLK = os.sysconf("SC_CLK_TCK")

BARE_POLLER = textwrap.dedent("""
    import asyncio, sys, time
    from pymodbus.client import AsyncModbusTcpClient

    async def main(port: int, units: int) -> None:
        client = AsyncModbusTcpClient("127.0.0.1", port=port)
        await client.connect()
        while True:
            t = time.monotonic()
            for u in range(1, units + 1):
                await client.read_holding_registers(100, count=124, device_id=u)
                await client.read_holding_registers(224, count=76, device_id=u)
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - t)))

    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
""")


def _proc(pid: int) -> tuple[float, float, float]:
    """(RSS MB, peak RSS MB, CPU seconds) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS", "VmHWM"))}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
    return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024, cpu


def measure(name: str, argv: list[str], seconds: float, settle_s: float, cwd: Path) -> tuple[float, float, float]:
    """(mean RSS MB, peak RSS MB, share of one core) of ``argv`` run as its own process."""
    with (cwd / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        time.sleep(settle_s)
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {(cwd / f'{name}.log').read_text()[-1500:]}")
        _, _, c0 = _proc(proc.pid)
        t0 = time.monotonic()
        samples = []
        while time.monotonic() - t0 < seconds:
            samples.append(_proc(proc.pid)[0])
            time.sleep(1.0)
        rss, peak, c1 = _proc(proc.pid)
        return sum(samples) / len(samples), peak, (c1 - c0) / (time.monotonic() - t0)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds before measuring (imports, connects)")
    args = ap.parse_args()
    print(machine(), flush=True)
    bench_polling.UNITS = UNITS
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        sim = bench_polling.start_simulator(tmp, port)
        try:
            cfg = tmp / "edge.toml"
            cfg.write_text(bench_polling.config_text(port, 1.0, 0.5, False))
            edge = measure("edge", [sys.executable, "-m", "sentinel_cli.main", "edge", "run", "--config", str(cfg),
                                    "--buffer", str(tmp / "edge.db")], args.seconds, args.settle, tmp)
            script = tmp / "bare_poller.py"
            script.write_text(BARE_POLLER)
            bare = measure("bare", [sys.executable, str(script), str(port), str(UNITS)], args.seconds, args.settle,
                           tmp)
        finally:
            sim.terminate()
            sim.wait(10)
    figures = [Figure("edge_rss_500pps", edge[0], "MB", bare[0]),
               Figure("edge_rss_peak_500pps", edge[1], "MB", bare[1]),
               Figure("edge_cpu_500pps", edge[2] * 100, "% core", bare[2] * 100)]
    for f in figures:
        print(f.human(), flush=True)
    print_json_lines(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
