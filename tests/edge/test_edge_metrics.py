"""The edge's ``/metrics``: a real daemon polling a simulated substation, scraped over HTTP.

One device answers, one never does (nothing serves its port) and no hub answers: the scrape,
parsed with prometheus-client's parser, must show the polls, the failures, the device down, the
backlog growing in the buffer and the sync attempts failing as ``unreachable``."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from pathlib import Path

import httpx
import msgspec
import pytest

from edge.daemon import EdgeDaemon
from protocols.config import ConfigError, FirmwareConfig, MetricsSettings, load_config, parse_config
from simulator.runner import Simulation
from tests.conftest import CONFIGS, free_port
from tests.support.metrics import Scrape

pytestmark = pytest.mark.timeout(120)

DEAD = "BUS-220"  # nothing serves its port
ALIVE = "FEEDER-F12"


def _config(listen: str = "127.0.0.1:0") -> tuple[FirmwareConfig, FirmwareConfig]:
    """(the edge's config, what the simulator serves): DEAD's port unserved, no hub at the hub URL."""
    base = load_config(CONFIGS / "nairobi-s1.toml")
    served_port, dead_port = free_port(), free_port()
    devices = [msgspec.structs.replace(d, port=dead_port if d.id == DEAD else served_port) for d in base.devices]
    hub = msgspec.structs.replace(base.hub, url=f"http://127.0.0.1:{free_port()}", sync_interval_s=0.5,
                                  backoff_initial_s=0.2, backoff_max_s=0.5)
    cfg = msgspec.structs.replace(base, devices=devices, hub=hub, metrics=MetricsSettings(listen=listen))
    return cfg, msgspec.structs.replace(cfg, devices=[d for d in devices if d.id != DEAD])


async def _until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(0.05)


def test_a_scrape_shows_polls_failures_the_backlog_and_the_hub_unreachable(tmp_path: Path) -> None:
    cfg, served = _config()

    async def main() -> tuple[Scrape, httpx.Response, dict, dict, tuple[str, int]]:
        async with Simulation([served]) as sim:
            sim_task = asyncio.create_task(sim.run())
            daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db")
            edge_task = asyncio.create_task(daemon.run())
            try:
                health = daemon.stats.devices
                await _until(lambda: health[ALIVE].polls >= 3 and health[DEAD].failures >= 2
                             and daemon.sync.stats.faults["unreachable"] >= 2 and daemon.stats.readings_buffered > 0,
                             30, "polls, failed polls, failed syncs and a backlog")
                assert daemon.metrics is not None and daemon.metrics.address is not None
                address = daemon.metrics.address
                before = {d: (h.polls, h.failures) for d, h in health.items()}
                async with httpx.AsyncClient() as client:
                    response = await client.get(f"http://{address[0]}:{address[1]}/metrics")
                after = {d: (h.polls, h.failures) for d, h in health.items()}
            finally:
                for task in (edge_task, sim_task):
                    task.cancel()
                await asyncio.gather(edge_task, sim_task, return_exceptions=True)
        return Scrape(response.text), response, before, after, address

    scrape, response, before, after, address = asyncio.run(main())
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")

    assert scrape.value("sentinel_edge_info", edge_id="edge-nairobi-01", substation="NAIROBI-S1") == 1
    for device in (ALIVE, DEAD, "TR-04"):  # counted while the scrape ran: between the two snapshots
        ok = scrape.value("sentinel_edge_polls_total", device=device, outcome="ok")
        failed = scrape.value("sentinel_edge_polls_total", device=device, outcome="failed")
        assert before[device][0] <= ok <= after[device][0], (device, ok, before, after)
        assert before[device][1] <= failed <= after[device][1], (device, failed, before, after)
    assert scrape.value("sentinel_edge_polls_total", device=ALIVE, outcome="ok") >= 3
    assert scrape.value("sentinel_edge_polls_total", device=ALIVE, outcome="failed") == 0
    assert scrape.value("sentinel_edge_polls_total", device=DEAD, outcome="ok") == 0
    assert scrape.value("sentinel_edge_polls_total", device=DEAD, outcome="failed") >= 2
    assert scrape.value("sentinel_edge_device_up", device=ALIVE) == 1
    assert scrape.value("sentinel_edge_device_up", device=DEAD) == 0
    assert 0 < scrape.value("sentinel_edge_device_poll_latency_seconds", device=ALIVE) < 1

    # no hub: everything polled waits in the buffer, and every sync attempt failed as unreachable
    assert scrape.value("sentinel_edge_buffer_pending", stream="readings") > 0
    assert scrape.value("sentinel_edge_buffer_pending", stream="events") >= 1  # DEAD going down is an event
    assert scrape.value("sentinel_edge_buffer_oldest_unsent_age_seconds", stream="telemetry") > 0
    assert scrape.value("sentinel_edge_buffer_oldest_unsent_age_seconds", stream="ot_logs") == 0
    assert scrape.value("sentinel_edge_sync_attempts_total", outcome="unreachable") >= 2
    assert scrape.value("sentinel_edge_sync_attempts_total", outcome="ok") == 0
    assert scrape.value("sentinel_edge_sync_items_total", stream="readings") == 0
    assert scrape.value("sentinel_edge_hub_up") == 0
    assert scrape.value("sentinel_edge_dropped_total", stream="readings", reason="buffer_full") == 0
    assert scrape.value("sentinel_edge_buffer_capacity_rows") == cfg.buffer.max_rows

    # every buffered batch was scored, once per batch
    assert scrape.value("sentinel_edge_scoring_duration_seconds_count") >= 1
    assert scrape.value("sentinel_edge_readings_scored_total") >= scrape.value(
        "sentinel_edge_polls_total", device=ALIVE, outcome="ok")
    assert scrape.families["sentinel_edge_scoring_duration_seconds"].type == "histogram"
    assert "process_cpu_seconds_total" in scrape.names

    with pytest.raises(httpx.ConnectError):  # the endpoint went away with the daemon
        httpx.get(f"http://{address[0]}:{address[1]}/metrics", timeout=2)


def test_a_port_in_use_is_logged_and_the_edge_polls_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg, served = _config(listen=f"127.0.0.1:{port}")

        async def main() -> EdgeDaemon:
            async with Simulation([served]) as sim:
                sim_task = asyncio.create_task(sim.run())
                daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db")
                edge_task = asyncio.create_task(daemon.run())
                try:
                    await _until(lambda: daemon.stats.devices[ALIVE].polls >= 2, 30, "polls")
                finally:
                    for task in (edge_task, sim_task):
                        task.cancel()
                    await asyncio.gather(edge_task, sim_task, return_exceptions=True)
            return daemon

        with caplog.at_level(logging.INFO, logger="edge.metrics"):
            daemon = asyncio.run(main())
    assert daemon.metrics is not None and daemon.metrics.address is None
    errors = [r for r in caplog.records if r.name == "edge.metrics" and r.levelno == logging.ERROR]
    assert len(errors) == 1 and f"cannot listen on 127.0.0.1:{port}" in errors[0].getMessage()


BASE = (CONFIGS / "nairobi-s1.toml").read_text()


def test_the_metrics_table_off_by_default_loopback_when_on() -> None:
    assert parse_config(BASE).metrics is None  # no table: no endpoint
    assert parse_config(BASE + "\n[metrics]\n").metrics == MetricsSettings(listen="127.0.0.1:9108")
    for listen, address, loopback in (("127.0.0.1:9108", ("127.0.0.1", 9108), True),
                                      ("localhost:9108", ("localhost", 9108), True),
                                      ("[::1]:0", ("::1", 0), True),
                                      ("10.20.0.5:9108", ("10.20.0.5", 9108), False),
                                      ("0.0.0.0:9108", ("0.0.0.0", 9108), False)):
        metrics = parse_config(BASE + f'\n[metrics]\nlisten = "{listen}"\n').metrics
        assert metrics is not None and metrics.address() == address and metrics.loopback is loopback, listen


@pytest.mark.parametrize("text, message", [
    ('listen = "edge-box:9108"', "<t>: metrics: listen must be host:port (an IP address, IPv6 in brackets, or "
                                 "localhost; a port 0-65535), e.g. 127.0.0.1:9108, not 'edge-box:9108'"),
    ('listen = "127.0.0.1"', "not '127.0.0.1'"),
    ('listen = "127.0.0.1:65536"', "not '127.0.0.1:65536'"),
    ('listen = "::1:9108"', "not '::1:9108'"),  # IPv6 needs its brackets
    ('listen = "[10.0.0.1]:9108"', "not '[10.0.0.1]:9108'"),
    ("listen = 9108", "<t>: metrics.listen: Expected `str`, got `int`"),
    ("port = 9108", "<t>: metrics.port: unknown key"),
])
def test_a_bad_metrics_table_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + f"\n[metrics]\n{text}\n", "<t>")
    assert message in str(err.value)
