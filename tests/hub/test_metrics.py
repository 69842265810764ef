"""The hub's ``/metrics``: what was sent, stored and run, as Prometheus reads it.

A real hub (on SQLite and on PostgreSQL) takes readings through ``/edge/sync`` and
``/sensors/process`` (resends too), runs an agent cycle and has an incident acknowledged; the
scrape, parsed with prometheus-client's parser, must count exactly what was stored, per source,
and agree with what the API says about edges, agents and incidents."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar.datastructures import State
from litestar.testing import TestClient

from hub.insights.agent_inputs import AgentOutput
from hub.app import create_app
from hub.metrics import HubMetrics
from hub.insights.orchestrator import Orchestrator, OrchestratorSettings
from hub.settings import Settings
from hub.storage import open_storage
from hub.storage.base import Storage
from protocols.reading import Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch, encode
from tests.support.hub_auth import ADMIN, ADMIN_KEY, edge_headers, role_headers
from tests.support.metrics import Scrape

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
EDGE = "EDGE-M"


@pytest.fixture
def client(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"),
                        max_body_bytes=64 * 1024,
                        agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))  # cycles only when asked
    with TestClient(create_app(settings)) as c:
        yield c


def _sync(first: int, n: int, with_sag: bool = False) -> bytes:
    items = [Reading(ts=T0 + timedelta(seconds=first + i), substation="NAIROBI-S1", device_id="FEEDER-F12",
                     metric="voltage_l1", value=11.0, unit="kV") for i in range(n)]
    sag = Event(ts=T0, substation="NAIROBI-S1", device_id="FEEDER-F12", metric="voltage_l1", type="voltage_sag",
                state="raised", severity="CRITICAL", value=9.8, threshold=9.9, nominal=11.0, unit="kV",
                description="Voltage sag on FEEDER-F12 voltage_l1 (9.8 kV, -10.9% from nominal 11 kV)")
    return encode(SyncBatch(edge_id=EDGE, substation="NAIROBI-S1", sent_at=T0,
                            readings=ReadingRun(first_seq=first, items=items),
                            events=EventRun(first_seq=1, items=[sag]) if with_sag else None))


def _telemetry(n: int, start_s: int = 0) -> dict:
    return {"sensor_readings": [{"device_id": "TR-04", "sensor_type": "voltage", "value": 11.0 + i * 0.01,
                                 "timestamp": (T0 + timedelta(seconds=start_s + i)).isoformat().replace("+00:00", "Z"),
                                 "quality": 1.0} for i in range(n)]}


def _scrape(client: TestClient, headers: dict[str, str]) -> Scrape:
    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return Scrape(r.text)


def _settled(client: TestClient, headers: dict[str, str]) -> tuple[dict[str, dict], Scrape]:
    """GET /agents and a scrape, with no agent running, nor a cycle started between them (new data
    wakes a cycle in the background, besides the one a test asks for)."""
    def agents() -> dict[str, dict]:
        return {a["name"]: a for a in client.get("/agents", headers=headers).json()["agents"]}

    for _ in range(200):
        before = agents()
        if all(a["state"] != "running" for a in before.values()):
            scrape = _scrape(client, headers)
            if agents() == before:
                return before, scrape
        time.sleep(0.05)
    raise AssertionError(f"the agents did not settle: {agents()}")


def test_the_scrape_counts_what_was_stored_run_and_raised(client: TestClient) -> None:
    viewer = role_headers(client, "viewer")
    operator = role_headers(client, "operator")
    edge = edge_headers(client, EDGE, "NAIROBI-S1")

    anonymous = client.get("/metrics")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/metrics", headers=edge).status_code == 403  # an edge reads no metrics

    first = client.post("/edge/sync", content=_sync(1, 5, with_sag=True), headers=edge)
    assert first.status_code == 200 and first.json()["readings_stored"] == 5, first.text
    resent = client.post("/edge/sync", content=_sync(1, 5, with_sag=True), headers=edge)  # the ack was lost
    assert resent.json()["readings_stored"] == 0
    assert client.post("/edge/sync", content=_sync(6, 3), headers=edge).json()["readings_stored"] == 3
    posted = client.post("/sensors/process", json=_telemetry(4), headers=operator)
    assert posted.status_code == 200 and posted.json()["readings_stored"] == 4, posted.text
    assert client.post("/sensors/process", json=_telemetry(4), headers=operator).json()["readings_stored"] == 0
    too_large = client.post("/sensors/process", json=_telemetry(1000, start_s=100), headers=operator)
    assert too_large.status_code == 413  # refused by the body limits, before the handler
    ran = client.post("/agents/run", headers=ADMIN)
    assert ran.status_code == 200, ran.text

    agents, scrape = _settled(client, viewer)

    # readings newly stored, per source: resends and refused bodies count nothing
    assert scrape.value("sentinel_hub_readings_ingested_total", source="edge_sync") == 8
    assert scrape.value("sentinel_hub_readings_ingested_total", source="http") == 4
    assert scrape.value("sentinel_hub_readings_ingested_total", source="mqtt") == 0
    assert scrape.families["sentinel_hub_readings_ingested"].type == "counter"

    # the edge, as storage holds it
    edges = {e["edge_id"]: e for e in client.get("/stats", headers=viewer).json()["edges"]}
    assert scrape.value("sentinel_hub_edge_readings_acked_through", edge_id=EDGE, substation="NAIROBI-S1") == 8
    assert edges[EDGE]["readings_acked_through"] == 8
    assert 0 <= scrape.value("sentinel_hub_edge_sync_lag_seconds", edge_id=EDGE, substation="NAIROBI-S1") < 60
    assert scrape.value("sentinel_hub_edge_sequence_gaps", edge_id=EDGE, substation="NAIROBI-S1") == 0
    assert scrape.value("sentinel_hub_storage_up") == 1

    # each agent's runs (the one asked for; and one the ingest may have woken), their outcomes and
    # durations, as GET /agents counts them
    assert len(agents) == 5
    for name, status in agents.items():
        assert status["runs"] >= 1
        assert scrape.total("sentinel_hub_agent_runs_total", agent=name) == status["runs"], status
        assert scrape.value("sentinel_hub_agent_runs_total", agent=name, outcome=status["state"]) >= 1, status
        assert scrape.value("sentinel_hub_agent_run_duration_seconds_count", agent=name) == status["runs"]
        assert scrape.value("sentinel_hub_agent_consecutive_failures", agent=name) == status["failures"]

    # incidents: what the API lists, by status, severity and type
    def listed() -> tuple[Counter, Counter]:
        incidents = client.get("/incidents", headers=viewer, params={"limit": 1000}).json()["incidents"]
        active = Counter((i["status"], i["severity"], i["type"]) for i in incidents if i["status"] != "RESOLVED")
        return active, Counter((i["severity"], i["type"]) for i in incidents)

    def scraped(s: Scrape) -> tuple[Counter, Counter]:
        active = Counter({(x.labels["status"], x.labels["severity"], x.labels["type"]): int(x.value)
                          for x in s.find("sentinel_hub_incidents_active")})
        return active, Counter({(x.labels["severity"], x.labels["type"]): int(x.value)
                                for x in s.find("sentinel_hub_incidents_total")})

    active, recorded = listed()
    assert active[("OPEN", "CRITICAL", "voltage_sag")] == 1  # the edge's event
    assert scraped(scrape) == (active, recorded)
    sag = next(i for i in client.get("/incidents", headers=viewer).json()["incidents"] if i["type"] == "voltage_sag")
    moved = client.post(f"/incidents/{sag['id']}/status", json={"status": "ACKNOWLEDGED"}, headers=operator)
    assert moved.status_code == 200, moved.text
    after = _scrape(client, viewer)
    assert scraped(after) == listed()
    assert after.value("sentinel_hub_incidents_active", status="ACKNOWLEDGED", severity="CRITICAL",
                       type="voltage_sag") == 1
    assert not after.find("sentinel_hub_incidents_active", status="OPEN", type="voltage_sag")

    # requests, by route template (never the raw path), method and status
    def requests(route: str, method: str, status: str, s: Scrape = after) -> float:
        return s.value("sentinel_hub_http_request_duration_seconds_count", route=route, method=method, status=status)

    assert requests("/edge/sync", "POST", "200") == 3
    assert requests("/sensors/process", "POST", "200") == 2
    assert requests("/sensors/process", "POST", "413") == 1
    assert requests("/metrics", "GET", "401") == 1 and requests("/metrics", "GET", "403") == 1
    assert requests("/metrics", "GET", "200") >= 1  # a scrape is timed once answered: it shows in the next
    routes = {s.labels["route"] for s in after.find("sentinel_hub_http_request_duration_seconds_count")}
    assert not any(sag["id"] in route for route in routes), routes
    assert "/incidents/{incident_id}/status" in routes, routes
    assert "process_cpu_seconds_total" in after.names


def test_agent_failures_and_overruns_are_counted(storage: Storage) -> None:
    """A real orchestrator, with agents that fail and overrun (faults our agents cannot be made to
    have on purpose): their runs, durations and failures in a row, as scraped."""

    def good(*_: object) -> AgentOutput:
        return AgentOutput()

    def bad(*_: object) -> AgentOutput:
        raise RuntimeError("no data")

    def slow(*_: object) -> AgentOutput:
        time.sleep(1.0)
        return AgentOutput()

    async def main() -> Scrape:
        metrics = HubMetrics()
        orch = Orchestrator(storage, OrchestratorSettings(budget_s=0.3), runners={"good": good, "bad": bad,
                                                                                   "slow": slow},
                            on_run=metrics.agent_run)
        metrics.watch(State({"storage": storage, "orchestrator": orch}))
        try:
            await orch.run_once()  # slow: past its budget
            await orch.run_once()  # slow: still running, not started again
        finally:
            await orch.aclose()
        return Scrape(metrics.exposition().decode())

    scrape = asyncio.run(main())
    runs = {(s.labels["agent"], s.labels["outcome"]): s.value for s in scrape.find("sentinel_hub_agent_runs_total")}
    assert runs == {("good", "ok"): 2, ("bad", "failed"): 2, ("slow", "timed_out"): 1, ("slow", "busy"): 1}
    assert scrape.value("sentinel_hub_agent_run_duration_seconds_count", agent="good") == 2
    assert scrape.value("sentinel_hub_agent_run_duration_seconds_count", agent="slow") == 1  # busy: no duration
    assert 0.29 <= scrape.value("sentinel_hub_agent_run_duration_seconds_sum", agent="slow") < 1.0  # its budget
    assert scrape.value("sentinel_hub_agent_consecutive_failures", agent="bad") == 2
    assert scrape.value("sentinel_hub_agent_consecutive_failures", agent="good") == 0


def test_a_storage_that_does_not_answer_is_reported_not_fatal(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
    storage.close()  # every query now fails
    metrics = HubMetrics()
    metrics.watch(State({"storage": storage}))
    scrape = Scrape(metrics.exposition().decode())
    assert scrape.value("sentinel_hub_storage_up") == 0
    assert not scrape.find("sentinel_hub_edge_sync_lag_seconds") and not scrape.find("sentinel_hub_incidents_total")
    assert scrape.value("sentinel_hub_readings_ingested_total", source="http") == 0
