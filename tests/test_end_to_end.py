"""Simulated substation -> edge daemon -> sync over HTTP -> hub -> incidents, on real servers."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from edge.buffer import Buffer
from edge.daemon import EdgeDaemon
from edge.sync import SyncLoop
from hub.server import HubServer
from hub.settings import Settings
from hub.storage import open_storage
from protocols.config import FirmwareConfig, load_config
from simulator.runner import Simulation
from simulator.scenario import load_scenario
from tests.conftest import CONFIGS, SCENARIOS, free_port
from tests.support.procs import sentinel_process
from tests.support.hub_auth import ADMIN, ADMIN_KEY, provision_edge

pytestmark = pytest.mark.timeout(180)


def with_ports(cfg: FirmwareConfig, modbus_port: int, hub_port: int, sync_s: float = 0.5) -> FirmwareConfig:
    """The sample config, pointed at free loopback ports."""
    devices = [msgspec.structs.replace(d, port=modbus_port) for d in cfg.devices]
    hub = msgspec.structs.replace(cfg.hub, url=f"http://127.0.0.1:{hub_port}", sync_interval_s=sync_s,
                                  backoff_initial_s=0.2, backoff_max_s=1.0)
    return msgspec.structs.replace(cfg, devices=devices, hub=hub)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("postgres_url")


async def _until(predicate, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await asyncio.to_thread(predicate):
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.1)


def test_scenario_voltage_anomalies_become_incidents(database_url: str, tmp_path: Path) -> None:
    cfg = with_ports(load_config(CONFIGS / "nairobi-s1.toml"), free_port(), free_port())
    scenario = load_scenario(SCENARIOS / "medium_risk_voltage_fluctuation.json", [cfg])

    async def main() -> None:
        storage = open_storage(database_url)
        token = provision_edge(storage, cfg.identity.edge_id, cfg.identity.substation)
        hub = HubServer(storage, int(cfg.hub.url.rsplit(":", 1)[1]), settings=Settings(admin_key=ADMIN_KEY))
        await hub.start()
        try:
            async with Simulation([cfg], scenario) as sim:
                daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db", token=token)
                tasks = [asyncio.create_task(sim.run()), asyncio.create_task(daemon.run())]
                try:
                    await _until(lambda: any(i.device_id == "FEEDER-F12" and i.type.startswith("voltage_")
                                             for i in storage.list_incidents()), 30, "a voltage incident on FEEDER-F12")
                    await _until(lambda: storage.reading_counts().get("NAIROBI-S1", 0) > 30, 15, "readings at the hub")
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            async with httpx.AsyncClient(base_url=hub.url, headers=ADMIN) as client:
                body = (await client.get("/incidents", params={"status": "OPEN"})).json()
        finally:
            await hub.stop()
            storage.close()
        volt = [i for i in body["incidents"] if i["device_id"] == "FEEDER-F12" and i["type"].startswith("voltage_")]
        assert volt, body
        inc = volt[0]
        assert inc["agent"] == "grid_monitor" and inc["status"] == "OPEN"
        assert inc["severity"] in {"WARNING", "CRITICAL"}
        assert "% from nominal 11 kV" in inc["description"]
        # no other device saw a voltage excursion: the scenario only touches FEEDER-F12
        assert all(i["device_id"] == "FEEDER-F12" for i in body["incidents"] if i["type"].startswith("voltage_"))

    asyncio.run(main())


def test_hub_outage_loses_nothing_and_duplicates_nothing(database_url: str, tmp_path: Path) -> None:
    """Stop the hub while the edge polls, start it again: every reading arrives exactly once."""
    cfg = with_ports(load_config(CONFIGS / "nairobi-s1.toml"), free_port(), free_port(), sync_s=0.3)
    hub_port = int(cfg.hub.url.rsplit(":", 1)[1])
    buffer_path = tmp_path / "edge.db"

    async def main() -> tuple[int, tuple]:
        async with Simulation([cfg], None) as sim:
            sim_task = asyncio.create_task(sim.run())
            storage = open_storage(database_url)
            token = provision_edge(storage, cfg.identity.edge_id)
            hub = HubServer(storage, hub_port)
            await hub.start()
            daemon = EdgeDaemon(cfg, buffer_path=buffer_path, token=token)
            edge_task = asyncio.create_task(daemon.run())
            try:
                await _until(lambda: sum(storage.reading_counts().values()) > 20, 15, "first readings at the hub")
                await hub.stop()
                storage.close()
                at_outage = daemon.stats.readings_buffered
                await asyncio.sleep(3)  # the edge keeps polling into its buffer
                assert daemon.stats.readings_buffered > at_outage + 20
                assert daemon.sync.stats.hub_up is False and daemon.sync.stats.failures > 0
                storage = open_storage(database_url)
                hub = HubServer(storage, hub_port)
                await hub.start()
                await _until(lambda: daemon.sync.stats.hub_up is True, 15, "the edge to reach the hub again")
                await asyncio.sleep(1.0)
            finally:
                edge_task.cancel()
                await asyncio.gather(edge_task, return_exceptions=True)
                sim_task.cancel()
                await asyncio.gather(sim_task, return_exceptions=True)
            # polling has stopped; send what is left, as the next run of the daemon would
            buf = Buffer(buffer_path, cfg.identity.substation)
            sync = SyncLoop(cfg, buf, token=token)
            while await sync.sync_once():
                pass
            await sync.aclose()
            assert buf.stats().readings_pending == 0
            buf.close()
            await hub.stop()
            storage.close()
        produced = sqlite3.connect(buffer_path).execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()[0]
        return produced, _hub_sequences(database_url, cfg.identity.edge_id)

    produced, (count, distinct, lo, hi) = asyncio.run(main())
    assert produced > 40
    assert (count, distinct, lo, hi) == (produced, produced, 1, produced)


def _hub_sequences(database_url: str, edge_id: str) -> tuple:
    sql = "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings WHERE source = %s"
    if database_url.startswith("sqlite"):
        path = database_url[len("sqlite:///"):]
        return sqlite3.connect(path).execute(sql.replace("%s", "?"), (edge_id,)).fetchone()
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, (edge_id,)).fetchone()


def test_demo_command_runs_and_exits_zero(tmp_path: Path) -> None:
    """`sentinel demo --duration` as a user runs it (configs moved to free ports): the scenario's
    voltage excursions become incidents, and the stored history gives forecasts and maintenance
    predictions while it runs."""
    configs = []
    for name in ("nairobi-s1.toml", "mombasa-s1.toml"):
        text = (CONFIGS / name).read_text()
        text = text.replace("port = 15020", f"port = {free_port()}").replace("port = 15021", f"port = {free_port()}")
        text = text.replace(":15041", f":{free_port()}")
        path = tmp_path / name
        path.write_text(text)
        configs += ["--config", str(path)]
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SENTINEL_ADMIN_KEY": ADMIN_KEY}
    forecasts: list[dict] = []
    anonymous = None
    predictions: list[dict] = []
    with sentinel_process("demo", "--port", str(port), "--duration", "30", *configs, env=env, cwd=tmp_path) as proc:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None and not (forecasts and predictions):
            time.sleep(0.5)
            try:
                anonymous = httpx.get(f"http://127.0.0.1:{port}/incidents", timeout=5).status_code
                forecasts = httpx.get(f"http://127.0.0.1:{port}/forecast/next-24h", headers=ADMIN,
                                      timeout=5).json()["forecasts"]
                predictions = httpx.get(f"http://127.0.0.1:{port}/maintenance", headers=ADMIN,
                                        timeout=5).json()["predictions"]
            except httpx.HTTPError:
                continue
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"hub on http://127.0.0.1:{port}" in out
    assert f"demo: admin key {ADMIN_KEY}" in out and anonymous == 401  # no way in without the key it printed
    assert "history readings stored" in out, out
    final = out[out.index("demo: final summary"):]
    assert "NAIROBI-S1" in final and "MOMBASA-S1" in final
    assert "voltage_" in final, out  # the scenario's voltage excursions became incidents
    synced = {m[0]: int(m[1].replace(",", "")) for m in re.findall(r"([A-Z]+-S1) ([\d,]+)", final)}
    assert 0 < synced["NAIROBI-S1"] < 20_000, final  # the edges' readings, not the history's 80,000
    # every feeder with active power has a 24 h forecast; both transformers a prediction
    assert {f["device_id"] for f in forecasts} == {"FEEDER-F12", "FEEDER-M03"}, forecasts
    assert all(len(f["points"]) >= 24 for f in forecasts)
    assert {p["device_id"] for p in predictions} == {"TR-04", "TR-07"}
    assert all(p["confidence"] > 0 for p in predictions), predictions
