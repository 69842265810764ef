"""The monitoring samples hold: both ``/metrics`` endpoints scraped for real, and every metric the
Grafana dashboard queries is one of them; the Prometheus sample scrapes the hub with a bearer key.

A hub (uvicorn, SQLite) and an edge daemon syncing to it from a simulated substation, with its
``[metrics]`` endpoint on; readings posted too, and an agent cycle run, so that every family the
dashboard draws has samples."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import httpx
import msgspec
import pytest
import yaml

from edge.daemon import EdgeDaemon
from hub.insights.orchestrator import OrchestratorSettings
from hub.server import HubServer
from hub.settings import Settings
from hub.storage import open_storage
from protocols.config import MetricsSettings, load_config
from simulator.runner import Simulation
from tests.conftest import CONFIGS, REPO, free_port
from tests.support.hub_auth import ADMIN, ADMIN_KEY, bearer, provision_edge
from tests.support.metrics import Scrape

pytestmark = pytest.mark.timeout(120)

DASHBOARD = REPO / "monitoring" / "grafana-dashboard.json"
PROMETHEUS = REPO / "monitoring" / "prometheus.yml"
METRIC = re.compile(r"\b(sentinel_[a-z0-9_]+)")


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _queried(dashboard: dict) -> set[str]:
    """The metric names the dashboard's queries and variables use."""
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    exprs += [json.dumps(v.get("query", "")) for v in dashboard["templating"]["list"]]
    return {name for e in exprs for name in METRIC.findall(e)}


def _scrape_both(tmp_path: Path) -> tuple[Scrape, Scrape, Scrape, int, int]:
    """(hub, edge) scraped while the edge runs; the hub scraped again once the edge stopped, the
    readings the hub then holds from the edge's substation, and those the edge saw acknowledged."""
    base = load_config(CONFIGS / "nairobi-s1.toml")
    modbus, hub_port = free_port(), free_port()
    cfg = msgspec.structs.replace(
        base, devices=[msgspec.structs.replace(d, port=modbus) for d in base.devices],
        hub=msgspec.structs.replace(base.hub, url=f"http://127.0.0.1:{hub_port}", sync_interval_s=0.5),
        metrics=MetricsSettings(listen="127.0.0.1:0"))

    async def main() -> tuple[Scrape, Scrape, Scrape, int, int]:
        storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
        token = provision_edge(storage, cfg.identity.edge_id, cfg.identity.substation)
        hub = HubServer(storage, hub_port, settings=Settings(
            admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"),
            agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600)))
        await hub.start()
        try:
            async with Simulation([cfg]) as sim, httpx.AsyncClient(base_url=hub.url, headers=ADMIN) as client:
                daemon = EdgeDaemon(cfg, buffer_path=tmp_path / "edge.db", token=token)
                tasks = [asyncio.create_task(sim.run()), asyncio.create_task(daemon.run())]
                try:
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 30
                    while daemon.sync.stats.batches < 2:
                        assert loop.time() < deadline, daemon.sync.stats
                        await asyncio.sleep(0.1)
                    # a voltage 18 % low: a CRITICAL incident, so the incident families have samples
                    sag = {"device_id": "FEEDER-F99", "sensor_type": "voltage", "value": 9.0, "nominal": 11.0,
                           "timestamp": "2026-03-01T10:00:00Z", "quality": 1.0}
                    posted = await client.post("/sensors/process", json={"sensor_readings": [sag]})
                    assert posted.status_code == 200 and posted.json()["incidents_detected"] == 1, posted.text
                    assert (await client.post("/agents/run")).status_code == 200
                    key = await client.post("/auth/keys", json={"name": "prometheus", "role": "viewer"})
                    hub_text = (await client.get("/metrics", headers=bearer(key.json()["secret"]))).text
                    assert daemon.metrics is not None and daemon.metrics.address is not None
                    host, port = daemon.metrics.address
                    edge_text = (await client.get(f"http://{host}:{port}/metrics")).text
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
                final = (await client.get("/metrics", headers=bearer(key.json()["secret"]))).text
                held = (await asyncio.to_thread(storage.reading_counts))[cfg.identity.substation]
        finally:
            await hub.stop()
            storage.close()
        return Scrape(hub_text), Scrape(edge_text), Scrape(final), held, daemon.sync.stats.readings_sent

    return asyncio.run(main())


def test_the_dashboard_queries_only_what_the_hub_and_the_edge_export(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    hub, edge, final, held, acked = _scrape_both(tmp_path)

    # the edge synced to the hub: both sides count it (a batch in flight when the edge stopped may
    # be stored without the edge seeing its ack)
    assert final.value("sentinel_hub_readings_ingested_total", source="edge_sync") == held >= acked > 0
    assert edge.value("sentinel_edge_sync_items_total", stream="readings") > 0
    assert final.value("sentinel_hub_readings_ingested_total", source="http") == 1
    assert 0 <= hub.value("sentinel_hub_edge_sync_lag_seconds", edge_id="edge-nairobi-01") < 30
    assert edge.value("sentinel_edge_hub_up") == 1
    assert edge.value("sentinel_edge_sync_attempts_total", outcome="ok") >= 2

    queried = _queried(dashboard)
    assert {"sentinel_hub_readings_ingested_total", "sentinel_hub_edge_sync_lag_seconds",
            "sentinel_hub_http_request_duration_seconds_bucket", "sentinel_hub_agent_run_duration_seconds_bucket",
            "sentinel_hub_agent_runs_total", "sentinel_hub_incidents_active", "sentinel_edge_polls_total",
            "sentinel_edge_buffer_pending", "sentinel_edge_buffer_oldest_unsent_age_seconds",
            "sentinel_edge_sync_attempts_total"} <= queried
    exported = hub.names | edge.names
    assert not queried - exported, f"the dashboard queries metrics nobody exports: {sorted(queried - exported)}"
    # ... and with the labels its queries name
    assert hub.find("sentinel_hub_incidents_active", status="OPEN", severity="CRITICAL")
    assert edge.find("sentinel_edge_polls_total", outcome="failed")


def test_the_dashboard_takes_its_datasource_from_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in _panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_the_prometheus_sample_scrapes_the_hub_with_a_bearer_key_from_a_file() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    hub = jobs["sentinel-hub"]
    assert hub["metrics_path"] == "/metrics" and hub["scheme"] == "https"
    assert hub["authorization"]["type"] == "Bearer" and hub["authorization"]["credentials_file"]
    assert "credentials" not in hub["authorization"]  # the key lives in a file, not in this one
    assert jobs["sentinel-edge"]["static_configs"][0]["targets"] == ["127.0.0.1:9108"]  # [metrics]' default
    assert MetricsSettings().listen == "127.0.0.1:9108"
