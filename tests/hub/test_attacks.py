"""The attacks that once worked against the hub, each replayed as it was made: each now gets a
4xx, stores nothing and leaves a real edge's credential syncing.

Elsewhere: bodies nested 1,000 deep, impossible values and dates, a repeated /sensors/process
(tests/hub/test_hostile_input.py); the edge's side of the 2^63 ack (tests/edge/test_hostile_hub.py);
/retrain names that escape the registry (tests/hub/test_training.py); the contract
(tests/hub/test_contract.py); an edge syncing as another (tests/hub/test_auth.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.insights.orchestrator import OrchestratorSettings
from hub.settings import Settings
from protocols.reading import Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch, encode
from tests.support.hub_auth import ADMIN, ADMIN_KEY, edge_headers, role_headers

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SEED = {"device_id": "FEEDER-F12", "sensor_type": "voltage", "value": 180.0, "timestamp": "2026-03-01T10:15:23Z"}


@pytest.fixture
def hub(database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"),
                        agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))
    with TestClient(create_app(settings)) as c:
        yield c


def _batch(first: int, n: int = 5, emergency: bool = False) -> bytes:
    items = [Reading(ts=T0 + timedelta(seconds=first % 100_000 + i), substation="NAIROBI-S1", device_id="FEEDER-F12",
                     metric="voltage_l1", value=11.0, unit="kV") for i in range(n)]
    events = [Event(ts=T0, substation="NAIROBI-S1", device_id="TR-04", metric="oil_temperature", type="limit_high",
                    state="raised", severity="EMERGENCY", value=140.0, unit="C",
                    description="spoofed: transformer on fire")] if emergency else None
    return encode(SyncBatch(edge_id="edge-nairobi-01", substation="NAIROBI-S1", sent_at=T0,
                            readings=ReadingRun(first_seq=first, items=items),
                            events=EventRun(first_seq=first, items=events) if events else None))


def _state(hub: TestClient) -> tuple[int, int, dict]:
    stats = hub.get("/stats", headers=ADMIN).json()
    return (sum(stats["readings_by_substation"].values()), len(hub.get("/incidents", headers=ADMIN).json()["incidents"]),
            {e["edge_id"]: e["readings_acked_through"] for e in stats["edges"]})


def _edge_still_syncs(hub: TestClient, first: int) -> None:
    r = hub.post("/edge/sync", content=_batch(first), headers=edge_headers(hub, "edge-nairobi-01", "NAIROBI-S1"))
    assert r.status_code == 200 and r.json()["readings_acked_through"] == first + 4, r.text


def test_an_anonymous_sync_near_2_63_with_a_spoofed_emergency(hub: TestClient) -> None:
    _edge_still_syncs(hub, 1)
    before = _state(hub)
    forged_body = msgspec.json.decode(_batch(1, emergency=True))  # as the attacker wrote it, by hand
    forged_body["readings"]["first_seq"] = forged_body["events"]["first_seq"] = 2**63 - 10
    forged = msgspec.json.encode(forged_body)
    assert hub.post("/edge/sync", content=forged).status_code == 401
    # even with the edge's own credential the numbers are refused, before anything is stored
    r = hub.post("/edge/sync", content=forged, headers=edge_headers(hub, "edge-nairobi-01", "NAIROBI-S1"))
    assert r.status_code == 400 and "first_seq" in r.text
    # and a jump within bounds is a 409 with the hub's mark, not a new high-water mark
    r = hub.post("/edge/sync", content=_batch(1_000_000), headers=edge_headers(hub, "edge-nairobi-01", "NAIROBI-S1"))
    assert r.status_code == 409 and r.json()["readings_acked_through"] == 5
    assert _state(hub) == before  # no reading, no incident, no mark moved
    _edge_still_syncs(hub, 6)


def test_resolving_a_critical_incident_anonymously_or_as_someone_else(hub: TestClient) -> None:
    operator = role_headers(hub, "operator")
    assert hub.post("/sensors/process", json={"sensor_readings": [SEED]}, headers=operator).status_code == 200
    (inc,) = hub.get("/incidents", headers=operator).json()["incidents"]
    url = f"/incidents/{inc['id']}/status"
    assert hub.post(url, json={"status": "RESOLVED", "actor": "chief-engineer"}).status_code == 401
    assert hub.post(url, json={"status": "RESOLVED"}, headers=role_headers(hub, "viewer")).status_code == 403
    assert hub.get(f"/incidents/{inc['id']}", headers=operator).json()["status"] == "OPEN"
    r = hub.post(url, json={"status": "RESOLVED", "actor": "chief-engineer"}, headers=operator)
    assert r.status_code == 200
    last = hub.get(f"/incidents/{inc['id']}", headers=operator).json()["history"][-1]
    assert (last["status"], last["actor"]) == ("RESOLVED", "key:test-operator")  # never the body's name
    _edge_still_syncs(hub, 1)


def test_made_up_readings_and_failed_logins_anonymously(hub: TestClient) -> None:
    before = _state(hub)
    assert hub.post("/sensors/process", json={"sensor_readings": [SEED]}).status_code == 401
    logins = [{"ts": (T0 + timedelta(minutes=i)).isoformat(), "kind": "auth", "action": "login",
               "substation": "MOMBASA-S1", "device_id": "RTU-MOM01", "result": "failure", "source": "10.9.9.9"}
              for i in range(20)]
    assert hub.post("/ot-logs", json=logins).status_code == 401
    assert hub.post("/ot-logs", json=logins, headers=role_headers(hub, "viewer")).status_code == 403
    assert hub.post("/agents/run", params={"agent": "cyber_sentinel"}).status_code == 401
    assert _state(hub) == before
    _edge_still_syncs(hub, 1)


def test_agents_as_of_1970_cannot_paint_a_substation_critical(hub: TestClient) -> None:
    _edge_still_syncs(hub, 1)
    assert hub.post("/agents/run", params={"at": "1970-01-01T00:00:00.5Z"}).status_code == 401
    r = hub.post("/agents/run", params={"at": "1970-01-01T00:00:00.5Z"}, headers=ADMIN)
    assert r.status_code == 400 and "outside the readings held" in r.json()["detail"]
    statuses = hub.get("/grid-status", headers=ADMIN).json()["substations"]
    assert all(s.get("status") != "CRITICAL" for s in statuses.values())
    _edge_still_syncs(hub, 6)


def test_retraining_is_for_admins_and_names_stay_inside_the_registry(hub: TestClient, tmp_path: Path) -> None:
    body = {"method": "feedback", "model": "../../escaped", "incidents": []}
    assert hub.post("/retrain", json=body).status_code == 401
    assert hub.post("/retrain", json=body, headers=role_headers(hub, "operator")).status_code == 403
    r = hub.post("/retrain", json=body, headers=ADMIN)
    assert r.status_code == 400 and "model" in r.json()["detail"]
    assert not list(tmp_path.parent.glob("escaped*")) and not (tmp_path / "escaped").exists()
    _edge_still_syncs(hub, 1)
