"""A device killed and restarted: the edge resumes by itself; the other devices keep their rate."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import msgspec
import numpy as np
import pytest

from edge.daemon import EdgeDaemon, _bounded
from protocols.config import load_config
from simulator.runner import Simulation
from tests.conftest import CONFIGS, free_port

pytestmark = pytest.mark.timeout(120)


def test_device_restart_is_survived_and_others_keep_their_poll_rate(tmp_path: Path) -> None:
    base = load_config(CONFIGS / "nairobi-s1.toml")
    port_a, port_b = free_port(), free_port()
    # BUS-220 alone on endpoint A (it will die); FEEDER-F12 and TR-04 on endpoint B
    devices = [msgspec.structs.replace(d, port=port_a if d.id == "BUS-220" else port_b) for d in base.devices]
    hub = msgspec.structs.replace(base.hub, url=f"http://127.0.0.1:{free_port()}", backoff_initial_s=0.2,
                               backoff_max_s=0.5)
    cfg = msgspec.structs.replace(base, devices=devices, hub=hub)
    only_a = msgspec.structs.replace(cfg, devices=[d for d in devices if d.id == "BUS-220"])
    only_b = msgspec.structs.replace(cfg, devices=[d for d in devices if d.id != "BUS-220"])
    buffer = tmp_path / "edge.db"

    async def main() -> tuple[EdgeDaemon, float, float]:
        loop = asyncio.get_running_loop()
        async with Simulation([only_b]) as sim_b:
            tasks = [asyncio.create_task(sim_b.run())]
            sim_a = Simulation([only_a])
            await sim_a.__aenter__()
            daemon = EdgeDaemon(cfg, buffer_path=buffer)
            tasks.append(asyncio.create_task(daemon.run()))
            await asyncio.sleep(2.5)
            await sim_a.__aexit__(None, None, None)  # the device dies
            killed = loop.time()
            await asyncio.sleep(4)
            assert daemon.stats.devices["BUS-220"].online is False
            sim_a = Simulation([only_a])
            await sim_a.__aenter__()  # and comes back
            back = loop.time()
            for _ in range(100):
                if daemon.stats.devices["BUS-220"].online:
                    break
                await asyncio.sleep(0.1)
            resumed_after = loop.time() - back
            await asyncio.sleep(1.5)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await sim_a.__aexit__(None, None, None)
            return daemon, killed, resumed_after

    daemon, _killed, resumed_after = asyncio.run(main())
    assert daemon.stats.devices["BUS-220"].online is True
    assert resumed_after < 5.5  # reconnect backoff is capped at 5 poll intervals (5 s here)
    db = sqlite3.connect(buffer)
    ts = np.array([r[0] for r in db.execute(
        "SELECT ts FROM readings WHERE device_id = 'FEEDER-F12' AND metric = 'voltage_l1' ORDER BY ts")])
    gaps = np.diff(ts)
    assert len(ts) >= 8
    assert gaps.max() < 1.0 + 0.5, gaps.max()  # 1 s poll; the dead device costs at most its 0.5 s timeout
    a = np.array([r[0] for r in db.execute(
        "SELECT ts FROM readings WHERE device_id = 'BUS-220' AND metric = 'frequency' ORDER BY ts")])
    assert np.diff(a).max() > 3.5  # the outage shows as a gap in BUS-220's readings ...
    kinds = [r[0] for r in db.execute("SELECT count(*) FROM events")]
    assert kinds == [2]  # ... and as one "down" and one "back" event, not one per failed poll


def test_a_close_that_never_returns_does_not_hold_the_shutdown_up(caplog: pytest.LogCaptureFixture) -> None:
    async def never() -> None:
        await asyncio.Event().wait()

    started = time.monotonic()
    asyncio.run(_bounded(never(), "closing device X", timeout_s=0.2))
    assert time.monotonic() - started < 5
    assert "closing device X took longer than 0.2 s" in caplog.text
