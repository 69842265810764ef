"""The hub's MQTT subscriber against a real Mosquitto, storing into SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from hub.ingest.mqtt import MqttIngest, MqttIngestSettings, parse_mqtt_url, settings_from_env
from hub.storage.base import Storage
from hub.storage.sqlite import SQLiteStorage
from protocols.mqtt.config import MqttDevice, MqttPoint, MqttTls
from simulator.mqtt_publisher import CORRUPTIONS, MqttPublisher
from tests.support.mosquitto import MosquittoBroker

# What the hub rejects: it knows no device's points, so an unknown metric is a valid reading there.
HUB_BAD = [k for k in CORRUPTIONS if k != "unknown_metric"]

PASSWORD = "hub-password"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("mqtt")) as b:
        yield b


# -- settings --------------------------------------------------------------------------------------------


def test_settings_from_env() -> None:
    assert settings_from_env({}) is None
    s = settings_from_env({"SENTINEL_MQTT_URL": "mqtt://broker.example", "SENTINEL_DEFAULT_SUBSTATION": "S9"})
    assert s is not None
    assert (s.host, s.port, s.topics, s.tls, s.username, s.default_substation, s.client_id) == (
        "broker.example", 1883, ("substations/{substation}/{device}/{metric}",), None, "", "S9", "sentinel-hub")
    s = settings_from_env({
        "SENTINEL_MQTT_URL": "mqtts://sentinel@broker.example/grid/{substation}/{device}/{metric}"
                             "?ca_file=/etc/ca.pem&qos=2&client_id=hub-2&mqtt_version=5",
        "SENTINEL_MQTT_PASSWORD": "x"}, default_substation="UNKNOWN")
    assert s is not None
    assert (s.port, s.topics, s.tls, s.username, s.qos, s.client_id, s.mqtt_version, s.default_substation) == (
        8883, ("grid/{substation}/{device}/{metric}",), MqttTls(ca_file="/etc/ca.pem"), "sentinel", 2, "hub-2",
        "5", "UNKNOWN")
    s = settings_from_env({"SENTINEL_MQTT_URL": "mqtt://h:1884/ignored",
                           "SENTINEL_MQTT_TOPICS": "a/{device}/{metric}, b/{substation}/{device}"})
    assert s is not None and s.port == 1884 and s.topics == ("a/{device}/{metric}", "b/{substation}/{device}")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SENTINEL_MQTT_URL": "mqtt://u:secret@h"}, "carries a password: put it in SENTINEL_MQTT_PASSWORD"),
        ({"SENTINEL_MQTT_URL": "mqtt://u@h"}, "names user 'u': set SENTINEL_MQTT_PASSWORD"),
        ({"SENTINEL_MQTT_URL": "tcp://h"}, "use mqtt://host[:port]/topic or mqtts://"),
        ({"SENTINEL_MQTT_URL": "mqtt://h?ca_file=/x"}, "ca_file needs mqtts://"),
        ({"SENTINEL_MQTT_URL": "mqtt://h?colour=red"}, "unknown option 'colour'"),
        ({"SENTINEL_MQTT_URL": "mqtt://h?qos=3"}, "qos='3': use 0, 1 or 2"),
        ({"SENTINEL_MQTT_URL": "mqtt://h:99999"}, "SENTINEL_MQTT_URL 'mqtt://h:99999'"),
        ({"SENTINEL_MQTT_URL": "mqtt://h", "SENTINEL_MQTT_TOPICS": "a/{site}"}, "unknown placeholder {site}"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as info:
        settings_from_env(env)
    assert "SENTINEL_MQTT" in str(info.value) and message in str(info.value), str(info.value)


# -- ingest ------------------------------------------------------------------------------------------------


def _settings(broker: MosquittoBroker, **kw: object) -> MqttIngestSettings:
    s = parse_mqtt_url(f"mqtt://127.0.0.1:{broker.port}", batch_window_s=0.05, backoff_initial_s=0.1,
                       backoff_max_s=0.5, connect_timeout_s=3.0)
    return dataclasses.replace(s, **kw)


async def _until(condition: Callable[[], bool], what: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what()}")
        await asyncio.sleep(0.02)


class Running:
    """An MqttIngest running as a task until the block ends."""

    def __init__(self, ingest: MqttIngest) -> None:
        self.ingest = ingest
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> MqttIngest:
        self.task = asyncio.create_task(self.ingest.run(), name="hub.mqtt")
        await _until(lambda: self.ingest.stats.connection.connected, lambda: self.ingest.stats)
        return self.ingest

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task
        await self.ingest.close()


FEEDER = MqttDevice(id="FEEDER-F12", host="127.0.0.1", points=[
    MqttPoint(metric="voltage_l1", unit="kV", nominal=11.0), MqttPoint(metric="current_l1", unit="A")])
TR = MqttDevice(id="TR-07", host="127.0.0.1", points=[MqttPoint(metric="oil_temperature", unit="degC")])


def test_good_readings_stored_bad_ones_dead_lettered_grid_checked(broker: MosquittoBroker, storage: Storage) -> None:
    """1,000 malformed payloads interleaved with good ones: every good one stored, every bad one kept."""
    feeder = MqttPublisher(FEEDER, substation="NAIROBI-S1", form="batch",
                           values=lambda t: {"voltage_l1": 11.0 + t / 10_000, "current_l1": 200.0 + t})
    # (oil temperatures stay below 1000 degC: hotter is no reading, it is a dead letter)
    tr = MqttPublisher(TR, substation="MOMBASA-S1", form="bare", values=lambda t: {"oil_temperature": 60.0 + t / 100})
    messages: list[tuple[str, bytes]] = []
    for i in range(1000):
        messages += (feeder if i % 2 else tr).messages(float(i))
        messages.append((feeder if i % 3 else tr).corrupt(HUB_BAD[i % len(HUB_BAD)]))
    # a sag on the feeder: 9.4 kV on an 11 kV bus is 14.5 % low, beyond the 10 % critical band
    sag = {"device_id": "FEEDER-F12", "sensor_type": "voltage", "metric": "voltage_l1", "value": 9.4, "unit": "kV",
           "nominal": 11.0, "timestamp": datetime.now(UTC).isoformat(), "substation": "NAIROBI-S1"}
    messages.append(("substations/NAIROBI-S1/FEEDER-F12/voltage_l1", msgspec.json.encode(sag)))
    # a utility feed without a substation anywhere: the default one
    messages.append(("substations/X/Y", b"{"))
    expected_dead = 1001

    async def main() -> MqttIngest:
        ingest = MqttIngest(storage, _settings(broker, client_id=f"hub-{id(storage)}", default_substation="UNASSIGNED"))
        async with Running(ingest):
            await asyncio.to_thread(broker.publish, messages)
            await _until(lambda: ingest.stats.readings_stored == 1501 and ingest.stats.dead_letters == expected_dead,
                         lambda: ingest.stats)
        return ingest

    ingest = asyncio.run(main())
    assert storage.reading_counts() == {"NAIROBI-S1": 1001, "MOMBASA-S1": 500}
    currents = storage.query_readings("FEEDER-F12", "current_l1")
    assert [r.value for r in currents] == [200.0 + i for i in range(1, 1000, 2)]
    oil = storage.query_readings("TR-07", "oil_temperature")
    assert [r.value for r in oil] == [60.0 + i / 100 for i in range(0, 1000, 2)] and oil[0].unit == ""
    assert storage.dead_letter_count() == expected_dead
    reasons = [d.reason for d in storage.dead_letters(limit=2000)]
    assert reasons[0] == "invalid JSON: Input data was truncated"
    fragments = ("invalid JSON", "value: Expected `float | null`, got `str`", "timestamp: missing required field",
                 "device_id 'FEEDER-F12-X' does not match the topic's device 'FEEDER-F12'",
                 "device_id 'TR-07-X' does not match the topic's device 'TR-07'")
    assert all(any(f in r for f in fragments) for r in reasons[1:]), {r for r in reasons if
                                                                      not any(f in r for f in fragments)}
    assert all(d.source == f"hub@127.0.0.1:{broker.port}" for d in storage.dead_letters(limit=5))
    incidents = storage.list_incidents()
    sags = [i for i in incidents if i.device_id == "FEEDER-F12" and i.metric == "voltage_l1"]
    assert len(sags) == 1 and sags[0].severity == "CRITICAL" and sags[0].value == 9.4, incidents
    assert ingest.stats.incidents == len(incidents) and ingest.stats.store_failures == 0


def test_the_hubs_session_keeps_what_was_sent_while_it_was_away(broker: MosquittoBroker, tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    settings = _settings(broker, client_id="hub-away")
    away = [("substations/S1/TR-07/oil_temperature", str(60 + i).encode()) for i in range(200)]

    async def main() -> None:
        async with Running(MqttIngest(storage, settings)):
            pass
        await asyncio.to_thread(broker.publish, away)
        ingest = MqttIngest(storage, settings)
        async with Running(ingest):
            await _until(lambda: ingest.stats.readings_stored == 200, lambda: ingest.stats)
        assert ingest.stats.connection.session_resumed == 1

    try:
        asyncio.run(main())
        assert [r.value for r in storage.query_readings("TR-07", "oil_temperature")] == [60.0 + i for i in range(200)]
    finally:
        storage.close()


def test_reconnects_by_itself_after_a_broker_restart(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    with MosquittoBroker(tmp_path) as broker:
        ingest = MqttIngest(storage, _settings(broker, keepalive_s=5))

        async def main() -> None:
            async with Running(ingest):
                await asyncio.to_thread(broker.publish, [("substations/S1/TR-07/oil_temperature", b"61")])
                await _until(lambda: ingest.stats.readings_stored == 1, lambda: ingest.stats)
                await asyncio.to_thread(broker.kill)
                await _until(lambda: "connection lost" in ingest.stats.last_error, lambda: ingest.stats)
                await asyncio.sleep(0.3)
                await asyncio.to_thread(broker.start)
                await _until(lambda: ingest.stats.connection.connected, lambda: ingest.stats)
                await asyncio.to_thread(broker.publish, [("substations/S1/TR-07/oil_temperature", b"62")])
                await _until(lambda: ingest.stats.readings_stored == 2, lambda: ingest.stats)

        try:
            asyncio.run(main())
        finally:
            storage.close()
    assert ingest.stats.connection.connects == 2


def test_several_templates_and_tls_with_a_password(tmp_path: Path) -> None:
    storage = SQLiteStorage(tmp_path / "hub.db")
    with MosquittoBroker(tmp_path, tls=True, users={"sentinel": PASSWORD, "utility": "u"}) as broker:
        settings = settings_from_env({
            "SENTINEL_MQTT_URL": f"mqtts://sentinel@127.0.0.1:{broker.tls_port}?ca_file={broker.ca_file}",
            "SENTINEL_MQTT_TOPICS": "grid/{substation}/{device}/{metric},utility/{device}/telemetry",
            "SENTINEL_MQTT_PASSWORD": PASSWORD})
        assert settings is not None
        settings = dataclasses.replace(settings, batch_window_s=0.05)
        ingest = MqttIngest(storage, settings)
        reading = {"device_id": "TR-07", "sensor_type": "temperature", "metric": "oil_temperature", "value": 70.5,
                   "timestamp": "2026-03-01T10:15:23Z"}

        async def main() -> None:
            import os

            os.environ["SENTINEL_MQTT_PASSWORD"] = PASSWORD
            try:
                async with Running(ingest):
                    await asyncio.to_thread(broker.publish, [
                        ("grid/S1/FEEDER-F12/frequency", b"50.01"),
                        ("utility/TR-07/telemetry", msgspec.json.encode(reading)),
                        ("utility/TR-07/telemetry", b"50.0"),  # a bare value, but the topic names no metric
                        ("grid/S1", b"{}"),  # nobody subscribes to this: never arrives
                        ("grid/S1/FEEDER-F12/frequency/raw", b"50.0"),  # grid/+/+/# brings it; no template fits
                    ], user="utility")
                    await _until(lambda: ingest.stats.readings_stored == 2 and ingest.stats.dead_letters == 2,
                                 lambda: ingest.stats)
            finally:
                os.environ.pop("SENTINEL_MQTT_PASSWORD", None)

        try:
            asyncio.run(main())
            assert storage.reading_counts() == {"S1": 1, "UNASSIGNED": 1}
            deeper, bare = storage.dead_letters()
            assert bare.reason.startswith("a bare value needs a topic that names the metric")
            assert deeper.reason == ("topic grid/S1/FEEDER-F12/frequency/raw matches none of the templates "
                                     "grid/{substation}/{device}/{metric}, utility/{device}/telemetry")
        finally:
            storage.close()


def test_ot_logs_from_the_utilitys_broker_reach_storage_and_bad_entries_are_dead_lettered(
        broker: MosquittoBroker, storage: Storage) -> None:
    entry = {"ts": "2026-03-01T10:00:00Z", "kind": "auth", "action": "login", "substation": "MOMBASA-S1",
             "device_id": "RTU-MOM01", "result": "failure", "source": "192.168.1.57", "user": "admin"}
    messages = [
        ("ot-logs/MOMBASA-S1", msgspec.json.encode(entry)),
        ("ot-logs/MOMBASA-S1", msgspec.json.encode([{**entry, "ts": "2026-03-01T10:01:00Z"},
                                                    {**entry, "source": "not-an-address"}])),
        ("ot-logs/MOMBASA-S1", b"{not json"),
        ("substations/MOMBASA-S1/TR-07/oil_temperature", b"61.5"),  # telemetry still flows beside them
    ]
    notified: list[int] = []

    async def main() -> MqttIngest:
        ingest = MqttIngest(storage, _settings(broker, client_id=f"hub-ot-{id(storage)}", ot_log_topics=("ot-logs/#",)),
                            on_data=lambda: notified.append(1))
        async with Running(ingest):
            await asyncio.to_thread(broker.publish, messages)
            await _until(lambda: ingest.stats.ot_logs_stored == 2 and ingest.stats.dead_letters == 2
                         and ingest.stats.readings_stored == 1, lambda: ingest.stats)
        return ingest

    asyncio.run(main())
    logs = storage.ot_logs_between(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    assert [(e.device_id, e.ts.minute) for e in logs] == [("RTU-MOM01", 0), ("RTU-MOM01", 1)]
    reasons = sorted(d.reason for d in storage.dead_letters())
    assert reasons[0].startswith("OT log:") and "[1].source: not an IPv4 or IPv6 address" in " ".join(reasons)
    assert notified


def test_ot_log_topic_filters_are_checked() -> None:
    with pytest.raises(ValueError, match="not an MQTT topic filter"):
        MqttIngestSettings(host="h", ot_log_topics=("ot-logs/#/x",))
    s = settings_from_env({"SENTINEL_MQTT_URL": "mqtt://h", "SENTINEL_MQTT_OT_LOG_TOPICS": "ot/#, sec/+/auth"})
    assert s is not None and s.ot_log_topics == ("ot/#", "sec/+/auth")


def test_hub_replicas_in_a_share_group_split_the_messages_each_stored_once(broker: MosquittoBroker,
                                                                           tmp_path: Path) -> None:
    """Two hubs on one database subscribe as one shared subscription: the broker gives each message
    to one of them; together they store every reading, once."""
    storage = SQLiteStorage(tmp_path / "hub.db")
    sent = [(f"substations/S1/TR-{i % 5:02d}/oil_temperature", str(50 + i / 10).encode()) for i in range(400)]
    ingests = [MqttIngest(storage, _settings(broker, share_group="hubs", client_id=f"hub-replica-{n}"))
               for n in range(2)]
    assert ingests[0].session.filters == ["$share/hubs/substations/+/+/#"]

    async def main() -> None:
        async with Running(ingests[0]), Running(ingests[1]):
            await asyncio.to_thread(broker.publish, sent)
            await _until(lambda: sum(i.stats.readings_stored for i in ingests) >= len(sent),
                         lambda: [i.stats for i in ingests])
            await asyncio.sleep(0.3)  # nothing more comes: none was given to both

    try:
        asyncio.run(main())
        got = [i.stats.readings_stored for i in ingests]
        assert sum(got) == len(sent) and min(got) > 0, got
        held = sum(len(storage.query_readings(f"TR-{d:02d}", "oil_temperature")) for d in range(5))
        assert held == len(sent)
    finally:
        storage.close()


def test_a_share_group_gives_each_replica_its_own_client_id() -> None:
    s = parse_mqtt_url("mqtt://broker.example:1883?share_group=hubs")
    assert s.share_group == "hubs" and s.session_client_id.startswith("sentinel-hub-") and s.session_client_id != "sentinel-hub"
    assert parse_mqtt_url("mqtt://b:1883?share_group=hubs&client_id=hub-a").session_client_id == "hub-a"
    with pytest.raises(ValueError, match="share_group 'a/b'"):
        parse_mqtt_url("mqtt://b:1883?share_group=a/b")
