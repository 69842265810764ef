"""``sentinel demo``: a hub on SQLite, the simulated substations, one edge each, a scenario.

Everything runs in one process and one event loop, on 127.0.0.1: the hub (uvicorn) on ``port``,
the simulator's Modbus servers at the addresses the firmware configs name, and an edge daemon per
config whose hub URL is pointed at the demo's hub.

Before the hub starts, its storage gets ``history_days`` of simulated history of the same points
(:func:`simulator.history.history_readings`, one sample per 10 minutes), so the demand forecaster,
the maintenance predictor and the anomaly detector's baselines have something to work on from the
first minute. The summary counts only what the edges sync.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from edge.daemon import EdgeDaemon
from hub.auth import AuthStore
from hub.server import HubServer
from hub.settings import Settings
from hub.storage import Storage, open_storage
from protocols.config import FirmwareConfig

SUMMARY_EVERY_S = 2.0
HISTORY_STEP_S = 600.0


def summary_lines(storage: Storage, elapsed_s: float, before: dict[str, int] | None = None) -> list[str]:
    """Readings synced per substation (beyond ``before``, the counts before the edges started) and
    incidents by type and severity."""
    before = before or {}
    counts = {sub: n - before.get(sub, 0) for sub, n in storage.reading_counts().items()}
    incidents = storage.incident_counts()
    total = sum(incidents.values())
    lines = [f"[{elapsed_s:6.1f}s] readings synced: "
             + (", ".join(f"{sub} {n:,}" for sub, n in sorted(counts.items())) or "none yet")]
    if incidents:
        by = ", ".join(f"{t}/{s} {n}" for (t, s), n in sorted(incidents.items()))
        lines.append(f"          incidents: {total} ({by})")
    else:
        lines.append("          incidents: none yet")
    return lines


async def run_demo(
    configs: list[FirmwareConfig],
    *,
    scenario: str | None,
    port: int = 8000,
    duration_s: float | None = None,
    database_url: str | None = None,
    speed: float = 1.0,
    history_days: float = 28.0,
    out: Callable[[str], None] = lambda s: print(s, flush=True),
) -> dict[str, int]:
    """Run the demo; returns readings synced per substation by the end (history not counted)."""
    from simulator.history import history_readings
    from simulator.runner import Simulation
    from simulator.scenario import load_scenario

    with tempfile.TemporaryDirectory(prefix="sentinel-demo-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'hub.db'}"
        storage = open_storage(url)
        hub_url = f"http://127.0.0.1:{port}"
        edge_configs = [
            msgspec.structs.replace(c, hub=msgspec.structs.replace(c.hub, url=hub_url)) for c in configs
        ]
        scen = load_scenario(scenario, configs) if scenario else None
        if history_days > 0:
            out(f"demo: storing {history_days:g} days of simulated history ({HISTORY_STEP_S / 60:g}-minute samples) ...")
            t0 = time.monotonic()
            rows = await asyncio.to_thread(history_readings, configs, days=history_days,
                                           end=datetime.now(UTC), step_s=HISTORY_STEP_S)
            await asyncio.to_thread(storage.insert_readings, rows, "demo-history")
            out(f"demo: {len(rows):,} history readings stored in {time.monotonic() - t0:.1f} s: forecasts and "
                "maintenance predictions come with the agents' first cycle")
        before = storage.reading_counts()
        # the demo makes its own credentials: an admin key (SENTINEL_ADMIN_KEY if set, else a fresh
        # one) and one per edge, registered before the hub starts
        admin_key = os.environ.get("SENTINEL_ADMIN_KEY", "").strip() or secrets.token_urlsafe(32)
        auth = AuthStore(storage)
        tokens = {c.identity.edge_id: auth.add_edge(c.identity.edge_id, c.identity.substation, created_by="demo").secret
                  for c in configs}
        hub = HubServer(storage, port, settings=Settings(admin_key=admin_key))
        await hub.start()
        out(f"demo: hub on {hub_url} (database {url}); API docs at {hub_url}/docs")
        out(f"demo: admin key {admin_key}")
        out(f"demo: try: curl -H 'Authorization: Bearer {admin_key}' {hub_url}/incidents (also /grid-status, "
            "/forecast/next-24h, /maintenance)")
        started = time.monotonic()
        try:
            async with Simulation(configs, scen, speed=speed) as sim:
                for line in sim.endpoints:
                    out(f"demo: simulator serves {line}")
                if scen is not None:
                    out(f"demo: scenario {scen.scenario_name!r}: {scen.description}")
                daemons = [EdgeDaemon(c, buffer_path=Path(tmp) / f"{c.identity.edge_id}.db",
                                      token=tokens[c.identity.edge_id]) for c in edge_configs]
                for c in edge_configs:
                    out(f"demo: edge {c.identity.edge_id} polls {len(c.devices)} devices of {c.identity.substation}")
                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(sim.run(), name="demo.sim")]
                    tasks += [tg.create_task(d.run(), name=f"demo.edge.{d.config.identity.edge_id}") for d in daemons]
                    try:
                        while duration_s is None or time.monotonic() - started < duration_s:
                            wait = SUMMARY_EVERY_S
                            if duration_s is not None:
                                wait = min(wait, max(0.0, duration_s - (time.monotonic() - started)))
                            await asyncio.sleep(wait)
                            for line in await asyncio.to_thread(summary_lines, storage, time.monotonic() - started, before):
                                out(line)
                        # let the edges send what they hold before stopping
                        for d in daemons:
                            d.sync.wake.set()
                        await asyncio.sleep(min(3.0, max(c.hub.sync_interval_s for c in edge_configs) + 0.5))
                    finally:
                        for t in tasks:
                            t.cancel()
        finally:
            await hub.stop()
            final = {sub: n - before.get(sub, 0) for sub, n in storage.reading_counts().items()}
            out("demo: final summary")
            for line in summary_lines(storage, time.monotonic() - started, before):
                out(line)
            storage.close()
        return final
