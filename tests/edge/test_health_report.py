"""An edge's health report rides with its syncs (at most every HEALTH_EVERY_S) and the hub's fleet
view shows it: software, model, backlog and its age, drops, devices."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec

from edge.buffer import Buffer
from edge.daemon import EdgeDaemon
from edge.sync import SyncLoop
from hub.settings import Settings
from hub.storage.sqlite import SQLiteStorage
from protocols.config import load_config
from protocols.wire import DeviceState, EdgeHealth, SyncBatch, encode
from tests.conftest import CONFIGS
from tests.support.hub_auth import ADMIN, ADMIN_KEY, provision_edge
from tests.support.live_hub import LiveHub

EDGE = "edge-nairobi-01"
T0 = time.time() - 600


def test_the_daemon_reports_its_software_backlog_and_devices(tmp_path: Path) -> None:
    async def main() -> EdgeHealth:  # a daemon is made on a running loop (its drivers' clients)
        daemon = EdgeDaemon(load_config(CONFIGS / "nairobi-s1.toml"), buffer_path=tmp_path / "edge.db")
        try:
            daemon.buffer.append([(T0 + i, "FEEDER-F12", "voltage_l1", 11.0, "kV", 1.0, 0) for i in range(5)])
            report = daemon.health_report()
            assert {d.device_id for d in report.devices} == set(daemon.stats.devices)
            return report
        finally:
            daemon.buffer.close()

    report = asyncio.run(main())
    assert report.software and report.model == ""
    assert report.readings_pending == 5 and report.oldest_pending == datetime.fromtimestamp(T0, UTC)
    msgspec.json.decode(encode(SyncBatch(edge_id=EDGE, substation="NAIROBI-S1", sent_at=datetime.now(UTC),
                                         health=report)), type=SyncBatch)  # on the wire and back


def test_the_hub_shows_each_edges_latest_report_in_the_fleet(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    token = provision_edge(storage, EDGE)
    settings = Settings(admin_key=ADMIN_KEY, agents=None, model_registry=str(tmp_path / "models"))
    buf = Buffer(tmp_path / "edge.db", "NAIROBI-S1")
    calls = []

    def health() -> EdgeHealth:
        calls.append(time.monotonic())
        pending, oldest, dropped = buf.backlog()
        return EdgeHealth(software="9.9.9", model="isoforest@3", readings_pending=pending, oldest_pending=oldest,
                          dropped=dropped, devices=[DeviceState(device_id="FEEDER-F12", up=True),
                                                    DeviceState(device_id="TX-1", up=False,
                                                                error="Modbus TCP 10.0.0.5:502 unit 1: refused")])

    try:
        with LiveHub(storage, settings) as hub:
            cfg = load_config(CONFIGS / "nairobi-s1.toml")
            cfg = msgspec.structs.replace(cfg, hub=msgspec.structs.replace(cfg.hub, url=hub.url))
            old = time.time() - 3600

            async def run() -> None:
                sync = SyncLoop(cfg, buf, token=token, health=health)
                try:
                    buf.append([(old + i, "FEEDER-F12", "voltage_l1", 11.0, "kV", 1.0, 0) for i in range(3)])
                    assert await sync.sync_once() == 3
                    buf.append([(old + 10, "FEEDER-F12", "voltage_l1", 11.0, "kV", 1.0, 0)])
                    assert await sync.sync_once() == 1  # within HEALTH_EVERY_S: no report this time
                finally:
                    await sync.aclose()

            asyncio.run(run())
            assert len(calls) == 1
            fleet = httpx.get(f"{hub.url}/fleet", headers=ADMIN, timeout=10).json()
            report = fleet["reports"][EDGE]
            assert (report["software"], report["model"], report["readings_pending"]) == ("9.9.9", "isoforest@3", 3)
            assert report["sync_lag_s"] >= 3590  # its oldest unsent reading was an hour old when it reported
            assert [(d["device_id"], d["up"]) for d in report["devices"]] == [("FEEDER-F12", True), ("TX-1", False)]
            assert "10.0.0.5:502" in report["devices"][1]["error"]
    finally:
        buf.close()
        storage.close()
