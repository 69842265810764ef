"""The hub's HTTP API, on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.settings import Settings
from tests.support.hub_auth import ADMIN_KEY, as_admin, edge_headers
from protocols.reading import Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch, encode

T0 = datetime(2026, 3, 1, 10, 15, 23, tzinfo=UTC)
SEED_READING = {"device_id": "FEEDER-F12", "sensor_type": "voltage", "value": 218.5,
                "timestamp": "2026-03-01T10:15:23Z", "quality": 0.98}


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=database_url, admin_key=ADMIN_KEY))) as c:
        yield as_admin(c)  # admin may do what operators and viewers may; edges sync with their own credential


def _batch(first: int, n: int, events: list[Event] | None = None, first_event: int = 1, edge: str = "edge-1") -> bytes:
    items = [Reading(ts=T0 + timedelta(seconds=first + i), substation="NAIROBI-S1", device_id="FEEDER-F12",
                     metric="voltage_l1", value=11.0, unit="kV") for i in range(n)]
    return encode(SyncBatch(edge_id=edge, substation="NAIROBI-S1", sent_at=T0,
                            readings=ReadingRun(first_seq=first, items=items) if n else None,
                            events=EventRun(first_seq=first_event, items=events) if events else None))


def _sag(i: int = 0) -> Event:
    return Event(ts=T0 + timedelta(seconds=i), substation="NAIROBI-S1", device_id="FEEDER-F12", metric="voltage_l1",
                 type="voltage_sag", state="raised", severity="CRITICAL", value=9.8, threshold=9.9, nominal=11.0,
                 unit="kV", description="Voltage sag on FEEDER-F12 voltage_l1 (9.8 kV, -10.9% from nominal 11 kV)")


def _count(client: TestClient) -> int:
    return sum(client.get("/stats").json()["readings_by_substation"].values())


def test_sync_is_idempotent_and_events_become_incidents(client: TestClient) -> None:
    body = _batch(1, 50, [_sag()])
    r = client.post("/edge/sync", content=body, headers=edge_headers(client, "edge-1"))
    assert r.status_code == 200, r.text
    assert r.json() == {"edge_id": "edge-1", "readings_acked_through": 50, "events_acked_through": 1,
                        "readings_stored": 50, "events_stored": 1, "duplicates": 0, "gaps": 0,
                        "ot_logs_acked_through": 0, "ot_logs_stored": 0}
    again = client.post("/edge/sync", content=body, headers=edge_headers(client, "edge-1"))  # the ack was lost: the edge resends
    assert again.json()["readings_stored"] == 0 and again.json()["duplicates"] == 51
    assert again.json()["readings_acked_through"] == 50
    assert _count(client) == 50
    overlap = client.post("/edge/sync", content=_batch(41, 20), headers=edge_headers(client, "edge-1")).json()
    assert overlap["readings_stored"] == 10 and overlap["duplicates"] == 10 and overlap["readings_acked_through"] == 60
    assert _count(client) == 60
    incidents = client.get("/incidents").json()["incidents"]
    assert len(incidents) == 1
    inc = incidents[0]
    assert set(inc) >= {"id", "timestamp", "type", "device_id", "severity", "description", "status", "agent"}
    assert (inc["type"], inc["device_id"], inc["severity"], inc["status"], inc["agent"]) == (
        "voltage_sag", "FEEDER-F12", "CRITICAL", "OPEN", "grid_monitor")
    assert inc["id"] == "INC-2026-000001" and inc["timestamp"] == "2026-03-01T10:15:23Z"
    edges = client.get("/stats").json()["edges"]
    assert edges[0]["edge_id"] == "edge-1" and edges[0]["readings_acked_through"] == 60


def test_seed_sensors_process_shape_and_incident(client: TestClient) -> None:
    sag = {**SEED_READING, "value": 205.0, "timestamp": "2026-03-01T10:16:00Z"}
    r = client.post("/sensors/process", json={"sensor_readings": [SEED_READING, sag]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["incidents_detected"] == 1 and body["readings_stored"] == 2
    assert set(body) >= {"success", "incidents_detected", "critical_alerts", "forecasts", "processing_time_ms"}
    (inc,) = client.get("/incidents", params={"status": "OPEN", "severity": "WARNING"}).json()["incidents"]
    assert inc["type"] == "voltage_sag" and inc["device_id"] == "FEEDER-F12"
    assert "205 kV, -6.8% from nominal 220 kV" in inc["description"]
    assert client.get("/incidents", params={"severity": "CRITICAL"}).json() == {"incidents": []}
    # a later reading (one at SEED_READING's instant is held already: de-duplicated, not checked again)
    crit = client.post("/sensors/process", json={"sensor_readings": [
        {**SEED_READING, "value": 190.0, "timestamp": "2026-03-01T10:17:00Z"}]}).json()
    assert [a["severity"] for a in crit["critical_alerts"]] == ["CRITICAL"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sensor_readings": [{**SEED_READING, "value": "high"}]}, "sensor_readings[0].value"),
        ({"sensor_readings": [SEED_READING, {**SEED_READING, "timestamp": "2026-03-01T10:15:23"}]},
         "sensor_readings[1].timestamp"),
        ({"sensor_readings": [{**SEED_READING, "quality": 2}]}, "sensor_readings[0].quality"),
        ({"sensor_readings": [{**SEED_READING, "extra": 1}]}, "extra"),
        ({"readings": []}, "readings"),
    ],
)
def test_bad_sensor_body_is_a_400_naming_the_field_and_stores_nothing(client: TestClient, body: dict, field: str) -> None:
    client.post("/sensors/process", json={"sensor_readings": [SEED_READING]})
    before = _count(client)
    r = client.post("/sensors/process", json=body)
    assert r.status_code == 400
    assert field in r.json()["detail"], r.json()
    assert _count(client) == before == 1


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["readings"]["items"][3].update(value="x"), "readings.items[3].value"),
        (lambda b: b["readings"].update(first_seq=0), "readings.first_seq"),
        (lambda b: b["readings"]["items"][1].update(substation="OTHER"), "readings.items[1].substation"),
        (lambda b: b.pop("edge_id"), "edge_id"),
    ],
)
def test_malformed_sync_batch_is_a_400_naming_the_field_and_changes_nothing(client: TestClient, mutate, field: str) -> None:
    assert client.post("/edge/sync", content=_batch(1, 10), headers=edge_headers(client, "edge-1")).status_code == 200
    bad = msgspec.json.decode(_batch(11, 10))
    mutate(bad)
    r = client.post("/edge/sync", content=msgspec.json.encode(bad), headers=edge_headers(client, "edge-1"))
    assert r.status_code == 400
    assert field in r.text, r.text
    assert _count(client) == 10
    # the edge's high-water mark did not move: the good batch still goes in whole
    assert client.post("/edge/sync", content=_batch(11, 10), headers=edge_headers(client, "edge-1")).json()["readings_stored"] == 10


def test_a_rejected_batch_is_one_log_line_naming_the_field(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    bad = msgspec.json.decode(_batch(1, 3))
    bad["readings"]["first_seq"] = 0
    with caplog.at_level(logging.INFO, logger="hub.app"):
        assert client.post("/edge/sync", content=msgspec.json.encode(bad), headers=edge_headers(client, "edge-1")).status_code == 400
    (rec,) = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert rec.name == "hub.app" and rec.levelno == logging.WARNING and rec.exc_info is None  # no traceback for a 400
    assert "POST /edge/sync rejected (400)" in rec.getMessage() and "readings.first_seq" in rec.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hub.app"):
        assert client.get("/incidents", params={"status": "CLOSED"}).status_code == 400
    (rec,) = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert rec.levelno == logging.INFO and "GET /incidents rejected (400)" in rec.getMessage()


def test_building_the_app_leaves_the_process_logging_alone(database_url: str) -> None:
    """No dictConfig per app: it closed every handler the process had and left a queue thread behind."""
    probe = logging.getLogger("sentinel.test.probe")
    handler = logging.FileHandler(os.devnull)
    probe.addHandler(handler)
    try:
        before = threading.active_count()
        for _ in range(3):
            create_app(Settings(database_url=database_url))
        assert threading.active_count() == before
        assert handler.stream is not None and not handler.stream.closed  # not shut down under us
    finally:
        probe.removeHandler(handler)
        handler.close()


def test_not_json_is_a_400(client: TestClient) -> None:
    r = client.post("/edge/sync", content=b"{not json",
                    headers={**edge_headers(client, "edge-1"), "content-type": "application/json"})
    assert r.status_code == 400


def test_incident_filters_are_validated(client: TestClient) -> None:
    r = client.get("/incidents", params={"status": "CLOSED"})
    assert r.status_code == 400 and "status" in r.json()["detail"]


def test_health_and_openapi(client: TestClient, request: pytest.FixtureRequest) -> None:
    layout = {"sqlite": "sqlite", "postgres-plain": "postgresql", "postgres-timescaledb": "timescaledb"}
    assert client.get("/healthz").json()["database"] == layout[request.node.callspec.params["database_url"]]
    spec = client.get("/docs/openapi.json").json()
    assert {"/edge/sync", "/sensors/process", "/incidents", "/healthz"} <= set(spec["paths"])
