"""``sentinel sim run SCENARIO --score``: play a scenario through real edges and a real hub, then
score the alarms the hub received (the edges' raised events) against the anomalies the simulator injected.

Everything runs in one process on 127.0.0.1: the simulated substations at the addresses their
configs name, a hub on SQLite in a temporary directory on a free port, and one edge daemon per
config pointed at it. Scenario time may run ``speed`` times faster than the wall clock: the edges
then poll ``speed`` times as often (each device's poll interval is kept in scenario seconds), so
the detectors see the same samples per scenario second as in the field. The events' timestamps are
mapped back to scenario seconds and matched by :func:`simulator.scoring.score_alarms`.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from edge.daemon import EdgeDaemon
from hub.auth import AuthStore
from hub.server import HubServer
from hub.storage import open_storage
from protocols.config import FirmwareConfig
from sentinel_cli.progress import Progress
from simulator.runner import Simulation
from simulator.scenario import Anomaly, Scenario
from simulator.scoring import Alarm, Scoreboard, TruthSpan, score_alarms

__all__ = ["accelerate", "anomaly_label", "run_scored"]

# Fastest wall-clock poll an accelerated run asks of a device: above x10 the samples are then
# speed / 10 scenario seconds apart (the edge, the simulator and the hub share one process, and
# a timeout of a few milliseconds would be a comm-lost alarm of the harness, not of the device).
MIN_POLL_S = 0.1
PROGRESS_EVERY_S = 10.0  # a plain progress line this often when stdout is no terminal
BAR_EVERY_S = 1.0  # the bar's refresh on a terminal


def accelerate(config: FirmwareConfig, speed: float) -> FirmwareConfig:
    """The config with every poll interval divided by ``speed`` (but at least ``MIN_POLL_S``) and
    each timeout kept below its device's fastest poll."""
    if speed == 1.0:
        return config
    devices = []
    for dev in config.devices:
        if not hasattr(dev, "poll_interval_s"):
            devices.append(dev)  # pushed (MQTT): the simulator publishes per scenario second already
            continue
        interval = max(MIN_POLL_S, dev.poll_interval_s / speed)
        changes: dict = {"poll_interval_s": interval}
        points = getattr(dev, "points", None)
        fastest = interval
        if points and any(getattr(p, "poll_interval_s", None) for p in points):
            new_points = []
            for p in points:
                if getattr(p, "poll_interval_s", None):
                    p = msgspec.structs.replace(p, poll_interval_s=max(MIN_POLL_S, p.poll_interval_s / speed))
                    fastest = min(fastest, p.poll_interval_s)
                new_points.append(p)
            changes["points"] = new_points
        if hasattr(dev, "timeout_s"):
            changes["timeout_s"] = min(dev.timeout_s, 0.8 * fastest)
        devices.append(msgspec.structs.replace(dev, **changes))
    return msgspec.structs.replace(config, devices=devices)


def anomaly_label(anomaly: Anomaly, unit: str = "") -> str:
    """``step 5 % of nominal on voltage``, ``drift 3 degC on temperature``, ``dropout p=0.3 on
    voltage``: what was injected, and how big."""
    if anomaly.type == "dropout":
        return f"dropout p={anomaly.drop_probability:g} on {anomaly.sensor_type}"
    fraction = anomaly.fraction_of_nominal
    size = f"{fraction * 100:g} % of nominal" if fraction is not None else f"{anomaly.magnitude:g} {unit}".rstrip()
    if anomaly.type == "oscillation" and anomaly.frequency_hz:
        size += f" at {anomaly.frequency_hz:g} Hz"
    return f"{anomaly.type} {size} on {anomaly.sensor_type}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_scored(
    configs: Sequence[FirmwareConfig],
    scenario: Scenario,
    *,
    speed: float = 1.0,
    duration_s: float | None = None,
    seed: int = 0,
    grace_s: float = 60.0,
    out: Callable[[str], object] = lambda s: print(s, flush=True),
) -> Scoreboard:
    """Play ``scenario`` (for ``duration_s`` scenario seconds, default its own duration) through
    edges and a hub; returns the scoreboard."""
    duration = float(duration_s if duration_s is not None else scenario.duration_seconds)
    if duration <= 0:
        raise ValueError(f"the scenario runs for {duration:g} s; give a positive --duration")
    port = _free_port()
    hub_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="sentinel-score-") as tmp:
        storage = open_storage(f"sqlite:///{Path(tmp) / 'hub.db'}")
        auth = AuthStore(storage)
        tokens = {c.identity.edge_id: auth.add_edge(c.identity.edge_id, c.identity.substation, created_by="sim").secret
                  for c in configs}
        hub = HubServer(storage, port)
        await hub.start()
        try:
            edge_configs = [
                accelerate(msgspec.structs.replace(c, hub=msgspec.structs.replace(c.hub, url=hub_url)), speed)
                for c in configs
            ]
            tick_s = min(0.1, 1.0 / speed)  # a fresh value every scenario second at least
            async with Simulation(configs, scenario, speed=speed, seed=seed, tick_s=tick_s) as sim:
                daemons = [EdgeDaemon(c, buffer_path=Path(tmp) / f"{c.identity.edge_id}.db",
                                      token=tokens[c.identity.edge_id]) for c in edge_configs]
                out(f"score: {scenario.scenario_name!r}: {duration:g} scenario seconds at x{speed:g} "
                    f"(about {duration / speed:.0f} s); {len(daemons)} edges, hub {hub_url}")
                async with asyncio.TaskGroup() as tg:
                    sim_task = tg.create_task(sim.run(duration), name="score.sim")
                    edges = [tg.create_task(d.run(), name=f"score.edge.{d.config.identity.edge_id}") for d in daemons]
                    try:
                        started = time.monotonic()
                        # a bar over scenario time on a terminal; a plain line every PROGRESS_EVERY_S otherwise
                        with Progress("score: scenario", total=duration, unit="s", plain=out,
                                      plain_every_s=PROGRESS_EVERY_S / 2) as progress:
                            while not sim_task.done():
                                await asyncio.wait([sim_task], timeout=BAR_EVERY_S if progress.drawing
                                                   else PROGRESS_EVERY_S)
                                counts = await asyncio.to_thread(storage.reading_counts)
                                incidents = sum((await asyncio.to_thread(storage.incident_counts)).values())
                                progress(min(sim.now_s, duration), detail=(
                                    f"{sum(counts.values()):,} readings, {incidents} incidents at the hub "
                                    f"({time.monotonic() - started:.0f} s wall)"))
                        for d in daemons:  # send what the edges still hold
                            d.sync.wake.set()
                        await asyncio.sleep(max(c.hub.sync_interval_s for c in edge_configs) + 1.0)
                    finally:
                        for t in edges:
                            t.cancel()
                truth = sim.truth()
                # every raised event the hub received (incidents fold an ongoing condition into one)
                raised = await asyncio.to_thread(storage.list_events, "raised", 10_000_000)
                alarms = []
                for ev in raised:
                    t_s = sim.scenario_time(ev.ts)
                    # past the end the simulated world stands still while the edges poll on: not scored
                    if t_s is not None and t_s <= duration:
                        alarms.append(Alarm(t_s=t_s, device_id=ev.device_id, metric=ev.metric, type=ev.type,
                                            severity=ev.severity))
            units = {(p.device.id, p.metric): p.point.unit for p in sim.plant.points}
            spans = [
                TruthSpan(anomaly=ti.anomaly, type=ti.type, device_id=ti.device_id, metric=ti.metric,
                          start_s=ti.start_s, end_s=ti.end_s,
                          label=anomaly_label(scenario.anomalies[ti.anomaly], units.get((ti.device_id, ti.metric), "")))
                for ti in truth
            ]
            return score_alarms(spans, alarms, observed_s=duration, grace_s=grace_s)
        finally:
            await hub.stop()
            storage.close()
