"""Hostile input at the hub's boundaries, on SQLite and on a throwaway PostgreSQL.

Each attack of the report is here: every one is a 4xx naming what is wrong (the field, or the
limit), and nothing of it is stored; what an edge syncs is stored flagged invalid instead, and
raises no incident; a resent request stores nothing twice. (Model names that would become paths:
tests/hub/test_training.py and tests/models/test_registry.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from litestar.testing import TestClient

from hub.insights.agent_inputs import AgentSettings, run_anomaly_detector, run_grid_monitor
from hub.app import create_app
from hub.ingest.mqtt import MqttIngest, parse_mqtt_url
from hub.settings import Settings
from hub.storage.base import Storage
from protocols.reading import QualityFlag, Reading
from protocols.wire import Event, EventRun, ReadingRun, SyncBatch, encode
from tests.support.hub_auth import ADMIN_KEY, as_admin, edge_headers
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.timeout(120)

NOW = datetime.now(UTC).replace(microsecond=0)


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def seed(value: float = 218.5, second: int = 0, **kw: object) -> dict:
    """A reading in the seed's shape, on a 220 kV bus, ``second`` s before NOW."""
    return {"device_id": "BUS-220", "sensor_type": "voltage", "metric": "voltage_l1", "unit": "kV", "nominal": 220.0,
            "value": value, "timestamp": _iso(NOW - timedelta(seconds=second)), **kw}


def _hub(storage: Storage, **settings: object) -> TestClient:
    s = Settings(admin_key=ADMIN_KEY, agents=None, ingest_rate_per_s=0.0, **settings)  # type: ignore[arg-type]
    return TestClient(create_app(s, storage=storage))


@pytest.fixture
def client(storage: Storage) -> Iterator[TestClient]:
    with _hub(storage) as c:
        yield as_admin(c)


def _nothing_stored(storage: Storage) -> None:
    assert storage.reading_counts() == {}
    assert storage.list_incidents() == []


# -- impossible values and timestamps: POST /sensors/process refuses the request ---------------------------


@pytest.mark.parametrize(("bad", "says"), [
    (seed(-5.0), "sensor_readings[3].value: -5.0 kV is not a possible voltage (must be >= 0)"),
    (seed(-1e308), "sensor_readings[3].value: -1e+308 kV is not a possible voltage (must be >= 0)"),
    (seed(5e6), "sensor_readings[3].value: 5000000.0 kV is not a possible voltage (must be <= 2000 kV)"),
    ({**seed(0.0), "sensor_type": "frequency", "metric": "frequency", "unit": "Hz", "nominal": None},
     "sensor_readings[3].value: 0.0 Hz is not a possible frequency (must be > 0)"),
    ({**seed(1.7), "sensor_type": "power_factor", "metric": "power_factor", "unit": "", "nominal": None},
     "sensor_readings[3].value: 1.7 is not a possible power factor (must be <= 1)"),
    ({**seed(-12.0), "sensor_type": "current", "metric": "current_l1", "unit": "A", "nominal": None},
     "sensor_readings[3].value: -12.0 A is not a possible current (must be >= 0)"),
    ({**seed(), "timestamp": "9999-12-31T23:59:59Z"},
     "sensor_readings[3].timestamp: 9999-12-31T23:59:59+00:00 is in the future: more than 300 s"),
    ({**seed(), "timestamp": "0001-01-01T00:00:00Z"},
     "sensor_readings[3].timestamp: 0001-01-01T00:00:00+00:00 is before 2000-01-01T00:00:00+00:00"),
    ({**seed(), "timestamp": "1970-01-01T00:00:00Z"},
     "sensor_readings[3].timestamp: 1970-01-01T00:00:00+00:00 is before 2000-01-01T00:00:00+00:00"),
    ({**seed(), "timestamp": _iso(NOW + timedelta(hours=1))}, "sensor_readings[3].timestamp: "),
])
def test_an_impossible_reading_refuses_the_request_naming_it_and_nothing_is_stored(
        client: TestClient, storage: Storage, bad: dict, says: str) -> None:
    good = [seed(218.5, 3), seed(190.0, 2), seed(219.0, 1)]  # 190 kV alone would be a CRITICAL sag
    r = client.post("/sensors/process", json={"sensor_readings": [*good, bad, seed(218.0, 0)]})
    assert r.status_code == 400, r.text
    assert says in r.json()["detail"], r.json()
    assert r.json()["errors"][0]["key"] == says.split(":")[0]
    assert "nothing was stored" in r.json()["detail"]
    _nothing_stored(storage)
    # the same readings without the impossible one go in, and the sag is an incident
    ok = client.post("/sensors/process", json={"sensor_readings": good})
    assert ok.status_code == 200 and ok.json()["readings_stored"] == 3 and ok.json()["incidents_detected"] == 1


def test_every_impossible_reading_of_a_request_is_named(client: TestClient, storage: Storage) -> None:
    body = {"sensor_readings": [seed(-1.0, i) for i in range(150)]}
    r = client.post("/sensors/process", json=body)
    assert r.status_code == 400
    errors = r.json()["errors"]
    assert len(errors) == 101 and errors[0]["key"] == "sensor_readings[0].value"
    assert errors[-1] == {"key": "sensor_readings", "source": "body",
                          "message": "50 more impossible values or timestamps"}
    _nothing_stored(storage)


def test_the_timestamp_window_follows_the_settings(storage: Storage) -> None:
    soon, old = seed(second=-1800), {**seed(), "timestamp": "2010-06-01T00:00:00Z"}
    with _hub(storage, max_future_skew_s=3600.0, timestamp_floor=datetime(2015, 1, 1, tzinfo=UTC)) as c:
        as_admin(c)
        assert c.post("/sensors/process", json={"sensor_readings": [soon]}).json()["readings_stored"] == 1
        r = c.post("/sensors/process", json={"sensor_readings": [old]})
        assert r.status_code == 400 and "is before 2015-01-01T00:00:00+00:00" in r.json()["detail"]


# -- idempotent /sensors/process -----------------------------------------------------------------------------


def test_a_resent_request_stores_nothing_twice_and_raises_no_new_occurrence(client: TestClient,
                                                                            storage: Storage) -> None:
    body = {"sensor_readings": [seed(218.5, 2), seed(190.0, 1), seed(219.0, 0)]}
    first = client.post("/sensors/process", json=body).json()
    assert (first["readings_stored"], first["incidents_detected"], len(first["critical_alerts"])) == (3, 1, 1)
    for _ in range(3):  # the client did not see the answer and retries
        again = client.post("/sensors/process", json=body).json()
        assert (again["readings_stored"], again["incidents_detected"], again["critical_alerts"]) == (0, 0, [])
    assert storage.reading_counts() == {"UNASSIGNED": 3}
    (incident,) = storage.list_incidents()
    assert incident.occurrences == 1
    # a request overlapping the first one stores only what is new, and only that is checked again
    overlap = {"sensor_readings": [seed(190.0, 1), seed(185.0, -1)]}
    r = client.post("/sensors/process", json=overlap).json()
    assert (r["readings_stored"], r["incidents_detected"]) == (1, 1)
    assert storage.reading_counts() == {"UNASSIGNED": 4}
    (incident,) = storage.list_incidents()
    assert incident.occurrences == 2 and incident.value == 185.0


def test_duplicates_within_one_request_are_stored_once(client: TestClient, storage: Storage) -> None:
    r = client.post("/sensors/process", json={"sensor_readings": [seed(218.5), seed(218.5), seed(218.7)]})
    assert r.json()["readings_stored"] == 1
    (stored,) = storage.query_readings("BUS-220", "voltage_l1")
    assert stored.value == 218.5  # the first one held wins


# -- edge sync: impossible readings are kept, flagged invalid, and raise nothing ----------------------------


def _sync_batch(readings: list[Reading], events: list[Event], edge: str = "edge-1") -> bytes:
    return encode(SyncBatch(edge_id=edge, substation="NAIROBI-S1", sent_at=NOW,
                            readings=ReadingRun(first_seq=1, items=readings),
                            events=EventRun(first_seq=1, items=events) if events else None))


def _reading(device: str, value: float | None, ts: datetime, score: float | None = None) -> Reading:
    return Reading(ts=ts, substation="NAIROBI-S1", device_id=device, metric="voltage_l1", value=value, unit="kV",
                   anomaly_score=score, anomaly_type="spike" if score else None)


def _event(value: float | None, ts: datetime, device: str = "FEEDER-F12") -> Event:
    return Event(ts=ts, substation="NAIROBI-S1", device_id=device, metric="voltage_l1", type="voltage_sag",
                 state="raised", severity="CRITICAL", value=value, threshold=9.9, nominal=11.0, unit="kV",
                 description=f"Voltage sag ({value} kV)")


def test_an_edge_syncing_impossible_readings_has_them_stored_flagged_invalid_and_no_incident(
        client: TestClient, storage: Storage, caplog: pytest.LogCaptureFixture) -> None:
    t = NOW - timedelta(seconds=30)
    readings = [_reading("FEEDER-F12", 11.0, t), _reading("FEEDER-F12", -5.0, t + timedelta(seconds=1)),
                _reading("FEEDER-F12", -1e308, t + timedelta(seconds=2)),
                _reading("FEEDER-F12", 11.0, datetime(9999, 12, 31, tzinfo=UTC)),
                _reading("FEEDER-F12", 11.0, datetime(1970, 1, 1, tzinfo=UTC))]
    events = [_event(-5.0, t), _event(-1e308, t), _event(9.0, datetime(9999, 12, 31, tzinfo=UTC)),
              _event(9.0, datetime(1970, 1, 1, tzinfo=UTC))]
    with caplog.at_level(logging.WARNING, logger="hub.ingest.telemetry"):
        r = client.post("/edge/sync", content=_sync_batch(readings, events), headers=edge_headers(client, "edge-1"))
    assert r.status_code == 200, r.text  # refused, the edge would resend it for ever
    assert (r.json()["readings_stored"], r.json()["events_stored"]) == (5, 4)
    assert "4 of 5 readings have an impossible value or timestamp" in caplog.text
    stored = sorted(storage.query_readings("FEEDER-F12", "voltage_l1", start=datetime(1, 1, 2, tzinfo=UTC)),
                    key=lambda x: x.ts)
    flags = {(s.ts, s.value): (s.quality, s.flags) for s in stored}
    invalid, unsync = int(QualityFlag.INVALID), int(QualityFlag.INVALID | QualityFlag.CLOCK_UNSYNC)
    assert flags == {
        (datetime(1970, 1, 1, tzinfo=UTC), 11.0): (0.0, unsync),
        (t, 11.0): (1.0, 0),
        (t + timedelta(seconds=1), -5.0): (0.0, invalid),
        (t + timedelta(seconds=2), -1e308): (0.0, invalid),
        (datetime(9999, 12, 31, tzinfo=UTC), 11.0): (0.0, unsync),
    }
    assert len(storage.list_events()) == 4  # kept
    assert storage.list_incidents() == []  # and not one became an incident
    # a real sag in the next batch still does
    real = _sync_batch([], [_event(9.0, t)])
    real = encode(msgspec.structs.replace(msgspec.json.decode(real, type=SyncBatch), readings=None,
                                          events=EventRun(first_seq=5, items=[_event(9.0, t)])))
    assert client.post("/edge/sync", content=real, headers=edge_headers(client, "edge-1")).status_code == 200
    (incident,) = storage.list_incidents()
    assert incident.value == 9.0


def test_the_agents_never_turn_an_invalid_reading_into_an_incident(client: TestClient, storage: Storage) -> None:
    """A broken sensor on FEEDER-F12 (-5 kV, scored anomalous by its edge), a real sag on FEEDER-F13."""
    start = NOW - timedelta(seconds=120)
    broken = [_reading("FEEDER-F12", -5.0 - i / 100, start + timedelta(seconds=i), score=0.99) for i in range(90)]
    sag = [_reading("FEEDER-F13", 8.0 if 30 <= i < 60 else 11.0, start + timedelta(seconds=i),
                    score=0.99 if 30 <= i < 60 else 0.05) for i in range(90)]
    r = client.post("/edge/sync", content=_sync_batch(broken + sag, []), headers=edge_headers(client, "edge-1"))
    assert r.status_code == 200, r.text
    settings = AgentSettings()
    grid = run_grid_monitor(storage, settings, NOW)
    anomalies = run_anomaly_detector(storage, settings, NOW)
    devices = {f.device_id for f in grid.findings} | {f.device_id for f in anomalies.findings}
    assert "FEEDER-F13" in {f.device_id for f in grid.findings}, grid.findings  # the agents did look
    assert "FEEDER-F13" in {f.device_id for f in anomalies.findings}, anomalies.findings
    assert "FEEDER-F12" not in devices, [f.description for f in grid.findings + anomalies.findings
                                         if f.device_id == "FEEDER-F12"]


# -- MQTT: impossible readings become dead letters --------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("mqtt")) as b:
        yield b


def test_mqtt_impossible_readings_become_dead_letters_naming_the_field(broker: MosquittoBroker,
                                                                      storage: Storage) -> None:
    topic = "substations/NAIROBI-S1/BUS-220/voltage_l1"
    batch = {"sensor_readings": [seed(218.5, 2), seed(218.6, 1), seed(-5.0, 0),
                                 {**seed(), "timestamp": "9999-12-31T23:59:59Z"}]}
    single = {**seed(), "value": -1e308, "timestamp": _iso(NOW - timedelta(seconds=5))}
    messages = [(topic, msgspec.json.encode(batch)), (topic, msgspec.json.encode(single)),
                (topic, msgspec.json.encode(batch))]  # delivered twice (QoS 1): stored once
    settings = dataclasses.replace(parse_mqtt_url(f"mqtt://127.0.0.1:{broker.port}", batch_window_s=0.05,
                                                  connect_timeout_s=3.0), client_id=f"hub-hostile-{id(storage)}")

    async def main() -> MqttIngest:
        ingest = MqttIngest(storage, settings)
        task = asyncio.create_task(ingest.run())
        try:
            deadline = time.monotonic() + 15
            while not ingest.stats.connection.connected and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(broker.publish, messages)
            while ingest.stats.dead_letters < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await ingest.close()
        return ingest

    ingest = asyncio.run(main())
    assert storage.reading_counts() == {"NAIROBI-S1": 2}
    assert ingest.stats.readings_stored == 2
    reasons = [d.reason for d in storage.dead_letters()]
    assert len(reasons) == 5, reasons
    assert reasons.count("sensor_readings[2].value: -5.0 kV is not a possible voltage (must be >= 0)") == 2
    assert sum(r.startswith("sensor_readings[3].timestamp: 9999-12-31T23:59:59+00:00 is in the future: more than "
                            "300 s after the receiver's clock") for r in reasons) == 2
    assert "value: -1e+308 kV is not a possible voltage (must be >= 0)" in reasons
    assert all(d.payload.startswith("{") and "sensor_readings" not in d.payload for d in storage.dead_letters())
    assert storage.list_incidents() == []


# -- body limits: deep, huge and garbage bodies on every endpoint that takes one ---------------------------

ENDPOINTS = ["/edge/sync", "/sensors/process", "/ot-logs", "/retrain", "/incidents/INC-2026-000001/status",
             "/agents/run"]


@pytest.fixture
def full_hub(storage: Storage) -> Iterator[TestClient]:
    """The hub with its agents running (``POST /agents/run`` needs them)."""
    with TestClient(create_app(Settings(admin_key=ADMIN_KEY, ingest_rate_per_s=0.0), storage=storage)) as c:
        yield as_admin(c)


def _headers(client: TestClient, path: str) -> dict[str, str]:
    return edge_headers(client, "edge-1") if path == "/edge/sync" else {}


def _stored_anything(storage: Storage) -> bool:
    return bool(storage.reading_counts() or storage.list_incidents() or storage.list_events()
                or storage.ot_logs_between(datetime(1, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))
                or storage.edge_states())


DEEP = {
    "objects": b'{"a":' * 1000 + b"1" + b"}" * 1000,  # 6 KB
    "arrays": b"[" * 1000 + b"]" * 1000,  # 2 KB
    "inside a reading": b'{"sensor_readings": [{"device_id": "D", "sensor_type": "voltage", "value": 1, '
                        b'"timestamp": "2026-01-01T00:00:00Z", "metadata": {"m": ' + b"[" * 996 + b"]" * 996 + b"}}]}",
}


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize("kind", sorted(DEEP))
def test_deeply_nested_json_is_a_400_stating_the_limit(full_hub: TestClient, storage: Storage, caplog,
                                                       path: str, kind: str) -> None:
    with caplog.at_level(logging.INFO):
        r = full_hub.post(path, content=DEEP[kind], headers=_headers(full_hub, path))
    assert r.status_code == 400, r.text
    assert r.json()["detail"] == "request body is JSON nested 1000 levels deep; the limit is 64"
    assert "Traceback" not in r.text and not [x for x in caplog.records if x.exc_info]
    assert not _stored_anything(storage)


def test_the_depth_limit_is_not_over_eager(client: TestClient, storage: Storage) -> None:
    nested: object = 1
    for _ in range(60):  # 60 levels of metadata + 3 of envelope: 63, under the limit of 64
        nested = [nested]
    body = {"sensor_readings": [{**seed(), "metadata": {"m": nested}}]}
    r = client.post("/sensors/process", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["readings_stored"] == 1
    # brackets inside strings are text, not nesting
    text = {"sensor_readings": [{**seed(second=1), "metadata": {"note": "[" * 5000 + '\\"{' * 100}}]}
    assert client.post("/sensors/process", json=text).status_code == 200


@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_body_over_the_size_limit_is_a_413_stating_it(storage: Storage, path: str) -> None:
    with _hub(storage, max_body_bytes=64 * 1024) as c:
        as_admin(c)
        headers = _headers(c, path)
        r = c.post(path, content=b"[" + b" " * (64 * 1024) + b"]", headers=headers)
        assert r.status_code == 413, r.text
        assert r.json()["detail"] == "request body is 65538 bytes; the limit is 64 KiB"

        def stream() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for _ in range(100):
                yield b" " * 1024

        r = c.post(path, content=stream(), headers=headers)
        assert r.status_code == 413, r.text
        assert r.json()["detail"] == "request body is more than 65536 bytes; the limit is 64 KiB"
    assert not _stored_anything(storage)


def test_the_default_size_limit_is_10_mib(client: TestClient, storage: Storage) -> None:
    r = client.post("/sensors/process", content=b" " * (10 * 1024 * 1024 + 1))
    assert r.status_code == 413
    assert r.json()["detail"] == "request body is 10485761 bytes; the limit is 10 MiB"
    _nothing_stored(storage)


GARBAGE = [b"", b"\xff\xfe\x00garbage", b"null", b"[]", b'"x"', b"1e999", b"-1e308", b'{"a":', b"{" * 10 + b"}" * 9,
           b'{"sensor_readings": "x"}', b'{"sensor_readings": [null]}', b"\x00" * 100, b"NaN", b"[Infinity]",
           bytes(random.Random(7).randrange(256) for _ in range(4096))]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_garbage_bodies_are_never_a_500(full_hub: TestClient, storage: Storage, caplog, path: str) -> None:
    headers = _headers(full_hub, path)
    with caplog.at_level(logging.INFO):
        for body in GARBAGE:
            for content_type in ("application/json", None):
                h = {**headers, **({"content-type": content_type} if content_type else {})}
                r = full_hub.post(path, content=body, headers=h)
                assert r.status_code < 500, (body[:40], r.status_code, r.text)
                assert "Traceback" not in r.text
    assert not [x for x in caplog.records if x.levelno >= logging.ERROR], [x.getMessage() for x in caplog.records
                                                                           if x.levelno >= logging.ERROR]
    assert storage.reading_counts() == {} and storage.list_incidents() == []


# -- the limits are settings --------------------------------------------------------------------------------


def test_the_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("SENTINEL_MQTT_URL", "SENTINEL_SITE_CONFIG", "SENTINEL_LLM", "SENTINEL_EDGE_TOKENS"):
        monkeypatch.delenv(var, raising=False)
    defaults = Settings.from_env()
    assert (defaults.max_future_skew_s, defaults.timestamp_floor) == (300.0, datetime(2000, 1, 1, tzinfo=UTC))
    assert (defaults.max_body_bytes, defaults.max_json_depth) == (10 * 1024 * 1024, 64)
    monkeypatch.setenv("SENTINEL_MAX_FUTURE_SKEW_S", "60")
    monkeypatch.setenv("SENTINEL_TIMESTAMP_FLOOR", "2020-01-01T00:00:00+03:00")
    monkeypatch.setenv("SENTINEL_MAX_BODY_BYTES", "1048576")
    monkeypatch.setenv("SENTINEL_MAX_JSON_DEPTH", "16")
    monkeypatch.setenv("SENTINEL_MQTT_URL", "mqtt://127.0.0.1:1883")
    s = Settings.from_env()
    assert (s.max_future_skew_s, s.timestamp_floor) == (60.0, datetime(2019, 12, 31, 21, tzinfo=UTC))
    assert (s.max_body_bytes, s.max_json_depth) == (1048576, 16)
    assert s.mqtt is not None and (s.mqtt.max_future_skew_s, s.mqtt.timestamp_floor) == (60.0, s.timestamp_floor)
    for var, value, says in (("SENTINEL_MAX_FUTURE_SKEW_S", "soon", "not a number"),
                             ("SENTINEL_MAX_FUTURE_SKEW_S", "-1", "must be a number >= 0, not -1"),
                             ("SENTINEL_TIMESTAMP_FLOOR", "2020-01-01T00:00:00", "has no time zone"),
                             ("SENTINEL_TIMESTAMP_FLOOR", "yesterday", "not an ISO 8601 time"),
                             ("SENTINEL_MAX_JSON_DEPTH", "0", "must be a whole number >= 1, not 0"),
                             ("SENTINEL_MAX_BODY_BYTES", "10MB", "not a whole number: '10MB'")):
        with monkeypatch.context() as m:
            m.setenv(var, value)
            with pytest.raises(ValueError, match=f"{var}: .*{says}"):
                Settings.from_env()


def test_a_tighter_depth_limit_applies(storage: Storage) -> None:
    with _hub(storage, max_json_depth=5) as c:  # the body, its list, a reading, metadata, "a": 5 levels
        as_admin(c)
        r = c.post("/sensors/process", json={"sensor_readings": [{**seed(), "metadata": {"a": [[1]]}}]})
        assert r.status_code == 400 and r.json()["detail"].endswith("nested 6 levels deep; the limit is 5")
        ok = c.post("/sensors/process", json={"sensor_readings": [{**seed(), "metadata": {"a": [1]}}]})
        assert ok.status_code == 200, ok.text
