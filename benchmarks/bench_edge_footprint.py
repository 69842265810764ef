"""The edge's footprint on its box: resident memory and CPU of ``sentinel edge run`` polling 500
points at 1 Hz, beside a bare pymodbus poller of the same points.

The simulator (its own process) serves 5 Modbus units x 100 float32 points. Each measured program
runs as its own process for ``--seconds`` after a settling time; its RSS (``VmRSS``, and the peak
``VmHWM``) and CPU (user + system time / wall time, from ``/proc/<pid>/stat``) are read from
``/proc``:

- ``edge_rss_500pps``: the edge daemon as a technician runs it (``sentinel edge run``; the hub is
  unreachable, so it buffers everything, as on a box cut off; scoring with its detectors, no model);
- ``edge_cpu_500pps``: its share of one core;
- ``edge_model_rss_500pps``, ``edge_model_cpu_500pps``: the same with an ONNX model loaded (an
  IsolationForest of 100 trees on three points' windows, trained, exported and signed here, kept in
  the edge's model cache as a model pulled from the hub is, so it loads it at start, verified, and
  scores every unit's three points with it through onnxruntime);
- baseline for all: a bare pymodbus client in its own process polling the same 1,000 registers
  once a second (two block reads per unit) and decoding nothing.

The edge runs with the environment its service unit sets (``Environment=`` in
deploy/systemd/sentinel-edge.service: one malloc arena), the bare poller without. With ``--runs N``
the three programs are measured N times in turn (CPU figures on a shared machine move by a tenth or
two of a percent from run to run); each figure is the mean, printed with the runs' spread.

The issue's targets: under 100 MB resident and under 2 % of a core, with models loaded.

    .venv/bin/python benchmarks/bench_edge_footprint.py [--seconds 60] [--settle 15] [--runs 1] [--no-model]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
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
UNIT_FILE = REPO / "deploy" / "systemd" / "sentinel-edge.service"


def unit_environment() -> dict[str, str]:
    """The variables the edge's service unit sets (its ``Environment=`` lines)."""
    env = {}
    for line in UNIT_FILE.read_text().splitlines():
        if line.startswith("Environment="):
            for item in line.split("=", 1)[1].split():
                key, _, value = item.partition("=")
                env[key] = value
    return env

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


def _proc(pid: int) -> tuple[float, float, float, float]:
    """(RSS MB, peak RSS MB, CPU seconds, anonymous RSS MB) of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS", "VmHWM", "RssAnon"))}
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK  # utime, stime
    return kb["VmRSS"] / 1024, kb["VmHWM"] / 1024, cpu, kb["RssAnon"] / 1024


MODEL = "bench-model"


def publish_model(cache_dir: Path, key_dir: Path) -> dict[str, str]:
    """Train, export and sign a model on the points p000-p002 into ``cache_dir`` (the edge's model
    cache: it loads it at start, as after a pull); the environment that makes the edge trust it."""
    import numpy as np

    from models.export import export_model
    from models.features import FeatureSpec, compute_features
    from models.manifest import TrainingData
    from models.registry import Registry
    from models.signing import generate_keypair, load_private_key
    from models.train import train_model

    rng = np.random.default_rng(0)
    t = np.arange(3600)
    x3 = np.stack([11.0 + 0.05 * np.sin(2 * np.pi * t / 900) + rng.normal(scale=0.01, size=len(t))
                   for _ in range(3)], axis=1)
    spec = FeatureSpec.build(window=16, inputs=("p000", "p001", "p002"), series_features=("mean", "std", "slope"))
    x = compute_features(x3, spec)[spec.window - 1:]
    trained = train_model(x, kind="isolation_forest", spec=spec, name=MODEL,
                          training=TrainingData(start=None, end=None, rows=len(x), source="arrays"))
    private, public = generate_keypair()
    (key_dir / "model.key").write_bytes(private)
    (key_dir / "model.pub").write_bytes(public)
    Registry(cache_dir).publish(export_model(trained), load_private_key(key_dir / "model.key"))
    return {"SENTINEL_MODEL_PUBLIC_KEY": str(key_dir / "model.pub")}


def scoring_status(buffer: Path) -> dict:
    """The edge's last status (``sentinel edge status``): which model it scored with."""
    with sqlite3.connect(buffer) as db:
        row = db.execute("SELECT value FROM meta WHERE key = 'status'").fetchone()
    return json.loads(row[0])["scoring"] if row else {}


def measure(name: str, argv: list[str], seconds: float, settle_s: float, cwd: Path,
            env: dict[str, str] | None = None) -> tuple[float, float, float, float]:
    """(mean RSS MB, peak RSS MB, share of one core, mean anonymous RSS MB) of ``argv`` run as its own
    process. Anonymous: RSS less the pages mapped from files (the libraries' code, which the kernel
    can drop and read again, and which processes running the same library share)."""
    with (cwd / f"{name}.log").open("w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    try:
        time.sleep(settle_s)
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {(cwd / f'{name}.log').read_text()[-1500:]}")
        c0 = _proc(proc.pid)[2]
        t0 = time.monotonic()
        samples, anon = [], []
        while time.monotonic() - t0 < seconds:
            rss, _, _, anon_mb = _proc(proc.pid)
            samples.append(rss)
            anon.append(anon_mb)
            time.sleep(1.0)
        _, peak, c1, _ = _proc(proc.pid)
        return (sum(samples) / len(samples), peak, (c1 - c0) / (time.monotonic() - t0),
                sum(anon) / len(anon))
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _means(got: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return tuple(sum(r[i] for r in got) / len(got) for i in range(4))  # type: ignore[return-value]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds before measuring (imports, connects)")
    ap.add_argument("--no-model", action="store_true", help="skip the case with an ONNX model loaded")
    ap.add_argument("--runs", type=int, default=1, help="measure each program this many times, in turn")
    args = ap.parse_args()
    print(machine(), flush=True)
    unit_env = unit_environment()
    print(f"edge environment (its service unit): {' '.join(f'{k}={v}' for k, v in unit_env.items())}", flush=True)
    bench_polling.UNITS = UNITS
    runs: dict[str, list[tuple[float, float, float, float]]] = {"edge": [], "edge-model": [], "bare": []}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        port = free_port()
        sim = bench_polling.start_simulator(tmp, port)
        try:
            cfg = tmp / "edge.toml"
            cfg.write_text(bench_polling.config_text(port, 1.0, 0.5, False))
            model_cfg = tmp / "edge-model.toml"
            model_cfg.write_text(cfg.read_text().replace("[[devices]]", f'[scoring]\nmodel = "{MODEL}"\n\n'
                                                         "[[devices]]", 1))
            model_env = {} if args.no_model else publish_model(tmp / "models", tmp)
            script = tmp / "bare_poller.py"
            script.write_text(BARE_POLLER)
            for run in range(1, args.runs + 1):
                buffer = tmp / f"edge-{run}.db"  # a fresh buffer each run
                runs["edge"].append(measure("edge", [sys.executable, "-m", "sentinel_cli.main", "edge", "run",
                                                     "--config", str(cfg), "--buffer", str(buffer)],
                                            args.seconds, args.settle, tmp, unit_env))
                if not args.no_model:
                    buffer = tmp / f"edge-model-{run}.db"
                    shutil.copytree(tmp / "models", buffer.with_name(buffer.name + ".models"))  # its model cache
                    runs["edge-model"].append(measure(
                        "edge-model", [sys.executable, "-m", "sentinel_cli.main", "edge", "run", "--config",
                                       str(model_cfg), "--buffer", str(buffer)],
                        args.seconds, args.settle, tmp, {**unit_env, **model_env}))
                    scoring = scoring_status(buffer)
                    if not (scoring.get("model") or "").startswith(MODEL):
                        raise RuntimeError(f"the edge did not score with the model: {scoring}; "
                                           f"{(tmp / 'edge-model.log').read_text()[-1500:]}")
                    print(f"run {run} edge-model: scored with {scoring['model']}, "
                          f"{scoring['readings_scored']:,} readings", flush=True)
                runs["bare"].append(measure("bare", [sys.executable, str(script), str(port), str(UNITS)],
                                            args.seconds, args.settle, tmp))
                for name, got in runs.items():
                    if got:
                        rss, peak, cpu, anon = got[-1]
                        print(f"run {run} {name:<10} RSS {rss:6.1f} MB  peak {peak:6.1f} MB  anonymous {anon:5.1f} MB"
                              f"  CPU {100 * cpu:5.2f} % of a core", flush=True)
        finally:
            sim.terminate()
            sim.wait(10)
    edge, bare = _means(runs["edge"]), _means(runs["bare"])
    if not args.no_model:
        with_model = _means(runs["edge-model"])
    for name, got in runs.items():
        if len(got) > 1:
            spread = [f"{what} {min(r[i] * k for r in got):.2f}-{max(r[i] * k for r in got):.2f}"
                      for what, i, k in (("RSS MB", 0, 1), ("anonymous MB", 3, 1), ("CPU %", 2, 100))]
            print(f"{name:<10} over {len(got)} runs: {', '.join(spread)}", flush=True)
    figures = [Figure("edge_rss_500pps", edge[0], "MB", bare[0]),
               Figure("edge_rss_peak_500pps", edge[1], "MB", bare[1]),
               Figure("edge_rss_anon_500pps", edge[3], "MB", bare[3]),
               Figure("edge_cpu_500pps", edge[2] * 100, "% core", bare[2] * 100)]
    if not args.no_model:
        figures += [Figure("edge_model_rss_500pps", with_model[0], "MB", bare[0]),
                    Figure("edge_model_rss_peak_500pps", with_model[1], "MB", bare[1]),
                    Figure("edge_model_rss_anon_500pps", with_model[3], "MB", bare[3]),
                    Figure("edge_model_cpu_500pps", with_model[2] * 100, "% core", bare[2] * 100)]
    for f in figures:
        print(f.human(), flush=True)
    print_json_lines(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
