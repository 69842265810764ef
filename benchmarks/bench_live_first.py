"""After an outage: how soon the newest reading is at the hub, and how fast the whole backlog drains,
with the live lane (edge.sync, "Live first") beside the same drain oldest-first as the baseline.

An edge buffer holds ``--readings`` readings (the hub was down); a real hub (``hub.server`` on
loopback, SQLite in a temp dir) comes back and one ``SyncLoop`` drains the buffer with the default
batch size (5,000 readings). Timed from the first sync: until the hub holds the newest reading,
and until nothing is pending. The baseline is the same drain with the live lane off (the edge as
it was: oldest first). Each way runs ``--repeat`` times; the best run is kept.

    python benchmarks/bench_live_first.py [--readings N] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import msgspec
from _common import Figure, machine, print_json_lines, rate, use_repo_root

use_repo_root()

from edge.buffer import Buffer  # noqa: E402
from edge.sync import SyncLoop  # noqa: E402
from hub.settings import Settings  # noqa: E402
from hub.storage import open_storage  # noqa: E402
from protocols.config import load_config  # noqa: E402
from tests.conftest import CONFIGS  # noqa: E402
from tests.support.hub_auth import provision_edge  # noqa: E402
from tests.support.live_hub import LiveHub  # noqa: E402

EDGE, SUB = "edge-nairobi-01", "NAIROBI-S1"


def drain(readings: int, live: bool, workdir: Path) -> tuple[float, float, int]:
    """(seconds until the newest reading is at the hub, seconds for the whole backlog, batches)."""
    url = f"sqlite:///{workdir / 'hub.db'}"
    storage = open_storage(url)
    token = provision_edge(storage, EDGE)
    buf = Buffer(workdir / "edge.db", SUB)
    t0 = float(int(time.time()) - 3 * 86_400)
    for start in range(0, readings, 10_000):
        buf.append([(t0 + i, "FEEDER-F12", "voltage_l1", 11.0 + i % 97 / 1000, "kV", 1.0, 0)
                    for i in range(start, min(readings, start + 10_000))])
    cfg = load_config(CONFIGS / "nairobi-s1.toml")
    try:
        with LiveHub(storage, Settings(database_url=url, agents=None, model_registry=str(workdir / "models"))) as hub:
            cfg = msgspec.structs.replace(cfg, hub=msgspec.structs.replace(cfg.hub, url=hub.url))

            async def run() -> tuple[float, float, int]:
                sync = SyncLoop(cfg, buf, token=token)
                if not live:
                    sync.LIVE_AFTER_BATCHES = 10**9  # the lane never starts: oldest first, as before it
                start, newest, batches = time.perf_counter(), 0.0, 0
                try:
                    while await sync.sync_once() is not None:
                        batches += 1
                        if not newest:
                            (state,) = storage.edge_states()
                            if state.readings_acked_through >= readings or sync.stats.live_sent:
                                newest = time.perf_counter() - start  # the newest reading (number N) is held
                finally:
                    await sync.aclose()
                return newest, time.perf_counter() - start, batches

            return asyncio.run(run())
    finally:
        buf.close()
        storage.close()


def best(readings: int, live: bool, repeat: int) -> tuple[float, float, int]:
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as d:
            runs.append(drain(readings, live, Path(d)))
    return min(r[0] for r in runs), min(r[1] for r in runs), runs[0][2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    print(f"live-first benchmark: a backlog of {args.readings:,} readings, hub on SQLite, on {machine()}")
    lane_newest, lane_total, lane_batches = best(args.readings, True, args.repeat)
    old_newest, old_total, old_batches = best(args.readings, False, args.repeat)
    print(f"newest reading at the hub: {lane_newest:.2f} s with the live lane, {old_newest:.2f} s oldest first; "
          f"whole backlog {lane_total:.2f} s ({lane_batches} batches) against {old_total:.2f} s ({old_batches})")
    figs = [Figure("live_first_newest_at_hub_ms", 1000 * lane_newest, "ms", 1000 * old_newest),
            Figure("live_first_drain_readings_per_s", rate(args.readings, lane_total), "readings/s",
                   rate(args.readings, old_total))]
    for fig in figs:
        print(fig.human())
    print_json_lines(figs)


if __name__ == "__main__":
    main()
