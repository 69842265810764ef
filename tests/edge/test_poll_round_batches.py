"""The edge scores and buffers a round of polls as one batch, not one batch per device.

A scorer call costs about as much for 100 series as for 500 (docs/edge-footprint.md), so the
writer waits for the polls of a round still reading (briefly, bounded) before it scores.
"""

from __future__ import annotations

import asyncio
import json

import msgspec
import pytest

from edge.daemon import EdgeDaemon
from protocols.config import load_config
from simulator import Simulation, parse_scenario
from tests.conftest import CONFIGS, free_port

pytestmark = pytest.mark.timeout(60)

QUIET = parse_scenario(json.dumps({"scenario_name": "quiet", "duration_seconds": 10_000, "anomalies": []}))


def test_one_scorer_call_per_round_of_polls(tmp_path) -> None:
    base = load_config(CONFIGS / "nairobi-s1.toml")
    port = free_port()
    devices = [msgspec.structs.replace(d, port=port, poll_interval_s=0.1, timeout_s=0.08) for d in base.devices]
    hub = msgspec.structs.replace(base.hub, url=f"http://127.0.0.1:{free_port()}")
    cfg = msgspec.structs.replace(base, devices=devices, hub=hub)
    assert len(devices) >= 3

    async def main() -> EdgeDaemon:
        async with Simulation([cfg], QUIET, speed=10.0, tick_s=0.1, seed=1) as sim:
            daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db")
            tasks = [asyncio.create_task(sim.run()), asyncio.create_task(daemon.run())]
            while min(h.polls for h in daemon.stats.devices.values()) < 20:
                await asyncio.sleep(0.1)
            for t in reversed(tasks):
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return daemon

    daemon = asyncio.run(main())
    polls = [h.polls for h in daemon.stats.devices.values()]
    assert all(h.failures == 0 for h in daemon.stats.devices.values())
    assert daemon.scoring.readings_scored == daemon.stats.readings_buffered > 0
    # a call per round (and a few for the rounds the first device answers alone, at the start),
    # where a call per device's poll would be len(devices) times as many
    assert daemon.scoring.calls <= max(polls) + 5, (daemon.scoring.calls, polls)
