"""Edge anomaly scores reach the hub with the readings; the edge's anomaly events are the anomaly detector's."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar.testing import TestClient

from hub.app import create_app
from hub.settings import Settings
from tests.support.hub_auth import ADMIN_KEY, as_admin, edge_headers
from hub.storage import open_storage
from protocols.reading import Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch, encode

T0 = datetime(2026, 3, 1, 10, 15, 23, tzinfo=UTC)


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    with TestClient(create_app(Settings(database_url=database_url, admin_key=ADMIN_KEY))) as c:
        yield as_admin(c)


def _readings(n: int, scored: bool = True) -> list[Reading]:
    return [Reading(ts=T0 + timedelta(seconds=i), substation="S1", device_id="FEEDER-F12", metric="voltage_l1",
                    value=11.0 + i, unit="kV", anomaly_score=(i / n) if scored else None,
                    anomaly_type=("step" if i == n - 1 else "none") if scored else None) for i in range(n)]


def test_scores_are_stored_and_anomaly_events_become_anomaly_detector_incidents(client: TestClient,
                                                                                 database_url: str) -> None:
    step = Event(ts=T0 + timedelta(seconds=3), substation="S1", device_id="FEEDER-F12", metric="voltage_l1",
                 type="anomaly_step", state="raised", severity="WARNING", value=14.0, threshold=0.8, unit="kV",
                 description="Step anomaly on FEEDER-F12 voltage_l1: score 0.91 at 14 kV")
    sag = Event(ts=T0, substation="S1", device_id="FEEDER-F12", metric="voltage_l1", type="voltage_sag",
                state="raised", severity="CRITICAL", value=9.8, unit="kV", description="sag")
    batch = SyncBatch(edge_id="e1", substation="S1", sent_at=T0, readings=ReadingRun(first_seq=1, items=_readings(4)),
                      events=EventRun(first_seq=1, items=[sag, step]))
    r = client.post("/edge/sync", content=encode(batch), headers=edge_headers(client, "e1"))
    assert r.status_code == 200, r.text
    agents = {i["type"]: i["agent"] for i in client.get("/incidents").json()["incidents"]}
    assert agents["anomaly_step"] == "anomaly_detector"
    assert agents["voltage_sag"] != "anomaly_detector"
    storage = client.app.state.storage
    back = storage.query_readings("FEEDER-F12", "voltage_l1")
    assert [(r.anomaly_score, r.anomaly_type) for r in back] == [(0.0, "none"), (0.25, "none"), (0.5, "none"),
                                                                 (0.75, "step")]


def test_a_batch_from_an_edge_without_scores_still_decodes_and_stores_nulls(client: TestClient) -> None:
    body = encode(SyncBatch(edge_id="e1", substation="S1", sent_at=T0,
                            readings=ReadingRun(first_seq=1, items=_readings(2, scored=False))))
    assert b"anomaly_score" in body  # the field is there as null ...
    old = body.replace(b',"anomaly_score":null,"anomaly_type":null', b"")
    assert b"anomaly" not in old  # ... and an older edge sends no such field at all
    assert client.post("/edge/sync", content=old, headers=edge_headers(client, "e1")).status_code == 200
    back = client.app.state.storage.query_readings("FEEDER-F12", "voltage_l1")
    assert [r.anomaly_score for r in back] == [None, None]


def test_an_older_sqlite_database_gains_the_score_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE readings (ts REAL NOT NULL, substation TEXT NOT NULL, device_id TEXT NOT NULL,"
               " metric TEXT NOT NULL, value REAL, unit TEXT NOT NULL, quality REAL NOT NULL, flags INTEGER NOT NULL,"
               " source TEXT NOT NULL, seq INTEGER)")
    db.execute("INSERT INTO readings VALUES (?, 'S1', 'D', 'm', 1.0, '', 1.0, 0, 'http', NULL)", (T0.timestamp(),))
    db.commit()
    db.close()
    storage = open_storage(f"sqlite:///{path}")
    try:
        storage.insert_readings(_readings(1), source="http")
        assert [r.anomaly_score for r in storage.query_readings("D", "m")] == [None]
        assert [r.anomaly_type for r in storage.query_readings("FEEDER-F12", "voltage_l1")] == ["step"]
    finally:
        storage.close()
