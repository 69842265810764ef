"""The edge's MQTT driver against a real Mosquitto the tests start on 127.0.0.1 (plain and TLS)."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import numpy as np
import pytest

from protocols.config import parse_config
from protocols.drivers import SourceFactory
from protocols.mqtt.codec import DeadLetter
from protocols.mqtt.config import MqttDevice, MqttPoint, MqttTls
from protocols.mqtt.source import MqttSource
from protocols.sources import PushedSource, SourceConnectError, SourceReadError
from simulator.mqtt_publisher import CORRUPTIONS, MqttPublisher
from tests.support.mosquitto import MosquittoBroker, make_certificates
from tests.support.streams import Listener

PASSWORD = "correct horse battery staple"
SAMPLE = Path(__file__).resolve().parents[2] / "protocols" / "mqtt" / "sample.toml"
POINTS = [MqttPoint(metric="voltage_l1", unit="kV", nominal=11.0), MqttPoint(metric="oil_temperature", unit="degC"),
          MqttPoint(metric="frequency", unit="Hz")]
_ids = itertools.count()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("mqtt")) as b:
        yield b


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("mqtts"), tls=True,
                         users={"edge-nairobi-01": PASSWORD, "sim": "sim-password"}) as b:
        yield b


def device(port: int, **kw: object) -> MqttDevice:
    """A device with a fresh id (one broker serves the whole module, so sessions must not mix)."""
    fields: dict = {"id": f"TR-{next(_ids)}", "host": "127.0.0.1", "port": port, "points": POINTS,
                    "connect_timeout_s": 3.0}
    fields.update(kw)
    return MqttDevice(**fields)


def reading(dev: MqttDevice, metric: str, value: object, ts: str = "2026-03-01T10:15:23Z") -> dict:
    return {"device_id": dev.id, "sensor_type": metric.split("_")[0], "metric": metric, "value": value,
            "timestamp": ts}


def topic(dev: MqttDevice, metric: str | None = None) -> str:
    return dev.template.render(substation="S1", device=dev.id, metric=metric or "")


def publish(broker: MosquittoBroker, messages: list[tuple[str, bytes]], **kw: object) -> asyncio.Future:
    return asyncio.ensure_future(asyncio.to_thread(broker.publish, messages, **kw))


# -- receiving ---------------------------------------------------------------------------------------------


def test_is_a_pushed_source_made_by_the_factory_with_the_edges_client_id(broker: MosquittoBroker) -> None:
    dev = device(broker.port)
    (source,) = SourceFactory("edge-nairobi-01").create(dev)
    assert isinstance(source, MqttSource) and isinstance(source, PushedSource)
    assert source.client_id == f"edge-nairobi-01-{dev.id}"
    assert source.endpoint == f"mqtt://127.0.0.1:{broker.port}"
    assert source.subscription == f"substations/+/{dev.id}/#"
    assert [p.metric for p in source.points] == ["voltage_l1", "oil_temperature", "frequency"]


def test_single_bare_and_batch_payloads_arrive(broker: MosquittoBroker) -> None:
    dev = device(broker.port)

    async def main() -> Listener:
        async with Listener(MqttSource(dev, client_id=f"edge-{dev.id}")) as ear:
            t_before = time.time()
            await publish(broker, [
                (topic(dev, "voltage_l1"), msgspec.json.encode(reading(dev, "voltage_l1", 11.1))),
                (topic(dev, "oil_temperature"), b"65.5"),
                (topic(dev), msgspec.json.encode({"sensor_readings": [
                    reading(dev, "frequency", 49.9), reading(dev, "voltage_l1", None),
                    reading(dev, "oil_temperature", 66.0, "2026-03-01T10:15:24+03:00")]})),
            ])
            await ear.until(lambda: ear.readings == 5)
            assert t_before <= ear.updates[0].ts[1] <= time.time()  # the bare value: time of receipt
            return ear

    ear = asyncio.run(main())
    index = np.concatenate([u.index for u in ear.updates]).tolist()
    assert index == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(ear.values(), [11.1, 65.5, 49.9, np.nan, 66.0])
    ts = np.concatenate([u.ts for u in ear.updates])
    assert ts[0] == ts[2] == ts[3] == 1772360123.0 and ts[4] == 1772360124.0 - 3 * 3600
    assert ear.dead == [] and ear.errors == []
    stats = ear.source.stats
    assert (stats.messages, stats.readings, stats.rejected) == (3, 5, 0)


def test_a_thousand_malformed_payloads_never_hold_up_the_good_ones(broker: MosquittoBroker) -> None:
    dev = device(broker.port)
    pub = MqttPublisher(dev, substation="S1", values=lambda t: {})
    bad_kinds = [*CORRUPTIONS, "other_device", "empty", "partial_batch"]
    messages: list[tuple[str, bytes]] = []
    expected_reasons: list[str] = []
    good_values: list[float] = []
    for i in range(1000):
        value = float(i)
        if i % 2:  # a good one: single and batch forms in turn
            if i % 4 == 1:
                messages.append((topic(dev, "voltage_l1"), msgspec.json.encode(reading(dev, "voltage_l1", value))))
                good_values.append(value)
            else:
                messages.append((topic(dev), msgspec.json.encode(
                    {"sensor_readings": [reading(dev, "frequency", value), reading(dev, "oil_temperature", -value)]})))
                good_values += [value, -value]
        kind = bad_kinds[i % len(bad_kinds)]
        if kind in CORRUPTIONS:
            messages.append(pub.corrupt(kind))  # type: ignore[arg-type]
        elif kind == "other_device":
            messages.append((f"substations/S1/{dev.id}-other/voltage_l1", b"1.0"))  # not ours: not even delivered
            continue
        elif kind == "empty":
            messages.append((topic(dev, "frequency"), b""))
        else:  # one bad reading in an otherwise good batch: the good one counts
            messages.append((topic(dev), msgspec.json.encode({"sensor_readings": [
                reading(dev, "frequency", 1000.0 + i), {**reading(dev, "frequency", 0.0), "timestamp": "noon"}]})))
            good_values.append(1000.0 + i)
        expected_reasons.append(kind)

    async def main() -> Listener:
        async with Listener(MqttSource(dev, client_id=f"edge-{dev.id}")) as ear:
            await publish(broker, messages)
            await ear.until(lambda: ear.readings == len(good_values) and len(ear.dead) == len(expected_reasons))
            await asyncio.sleep(0.1)  # nothing more comes
            return ear

    ear = asyncio.run(main())
    assert sorted(ear.values().tolist()) == sorted(good_values)
    assert ear.errors == []
    assert len(ear.dead) == len(expected_reasons) == ear.source.stats.rejected
    fragments = {"invalid_json": "invalid JSON", "wrong_type": "value: Expected `float | null`, got `str`",
                 "unknown_metric": "unknown metric 'no_such_metric' for device", "missing_field":
                 "timestamp: missing required field", "empty": "empty payload",
                 "wrong_device": "does not match the topic's device",
                 "partial_batch": "sensor_readings[1].timestamp: Invalid RFC3339"}
    for letter, kind in zip(ear.dead, expected_reasons):
        assert fragments[kind] in letter.reason, (kind, letter.reason)
        assert letter.source == f"{dev.id}@127.0.0.1:{broker.port}" and letter.topic.startswith("substations/S1/")


def test_a_failing_dead_letter_sink_does_not_stop_the_stream(broker: MosquittoBroker) -> None:
    dev = device(broker.port)

    def sink(letters: list[DeadLetter]) -> None:
        raise RuntimeError("dead-letter store is full")

    async def main() -> Listener:
        async with Listener(MqttSource(dev, client_id=f"edge-{dev.id}")) as ear:
            ear.source.on_reject = sink
            await publish(broker, [(topic(dev, "frequency"), b"{"), (topic(dev, "frequency"), b"50.0")])
            await ear.until(lambda: ear.readings == 1)
            return ear

    ear = asyncio.run(main())
    assert ear.source.stats.dead_letters_dropped == 1 and ear.errors == []


# -- sessions and faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_qos1_messages_sent_while_the_edge_is_away_arrive_when_it_returns(broker: MosquittoBroker,
                                                                           version: str) -> None:
    dev = device(broker.port, mqtt_version=version, qos=1)
    away = [(topic(dev, "frequency"), str(50.0 + i / 1000).encode()) for i in range(300)]

    async def main() -> tuple[Listener, MqttSource]:
        source = MqttSource(dev, client_id=f"edge-{dev.id}")
        async with Listener(source):  # first visit: the broker learns the subscription
            pass
        await publish(broker, away)  # the edge is away
        async with Listener(source) as ear:  # back, with the same client id
            await ear.until(lambda: ear.readings == len(away))
        return ear, source

    ear, source = asyncio.run(main())
    np.testing.assert_array_equal(ear.values(), [float(p) for _, p in away])  # all of them, in order
    assert source.stats.session_resumed == 1 and source.stats.connects == 2


def test_a_backlog_larger_than_the_connect_timeout_drains(broker: MosquittoBroker) -> None:
    """After an outage the broker sends the queued messages before the SUBACK: no timeout for that."""
    dev = device(broker.port, connect_timeout_s=0.3)
    backlog = [(topic(dev, "frequency"), b"50.0")] * 10_000

    async def main() -> Listener:
        source = MqttSource(dev, client_id=f"edge-{dev.id}")
        async with Listener(source):
            pass
        await publish(broker, backlog)
        async with Listener(source) as ear:
            await ear.until(lambda: ear.readings == len(backlog), timeout_s=30)
        return ear

    ear = asyncio.run(main())
    assert ear.errors == [] and ear.source.stats.connects == 2


def test_a_clean_session_does_not_get_what_was_sent_while_away(broker: MosquittoBroker) -> None:
    dev = device(broker.port, clean_session=True)

    async def main() -> Listener:
        source = MqttSource(dev, client_id=f"edge-{dev.id}")
        async with Listener(source):
            pass
        await publish(broker, [(topic(dev, "frequency"), b"50.0")])
        async with Listener(source) as ear:
            await asyncio.sleep(0.3)
            await publish(broker, [(topic(dev, "frequency"), b"50.1")])
            await ear.until(lambda: ear.readings >= 1)
            await asyncio.sleep(0.1)
        return ear

    ear = asyncio.run(main())
    assert ear.values().tolist() == [50.1]


def test_broker_killed_and_restarted_the_stream_fails_and_a_later_one_works(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path, persistence=True) as broker:
        dev = device(broker.port, keepalive_s=5)

        async def main() -> Listener:
            async with Listener(MqttSource(dev, client_id=f"edge-{dev.id}"), backoff_s=0.2) as ear:
                await publish(broker, [(topic(dev, "frequency"), b"50.0")])
                await ear.until(lambda: ear.readings == 1)
                await asyncio.to_thread(broker.kill)
                await ear.until(lambda: len(ear.errors) >= 1)
                assert isinstance(ear.errors[0], SourceConnectError)
                assert "connection lost" in ear.errors[0].reason
                await asyncio.sleep(0.5)  # reconnects fail while the broker is down ...
                assert any("connection refused" in e.reason for e in ear.errors[1:])
                await asyncio.to_thread(broker.start)  # ... and succeed once it is back
                await ear.until(lambda: ear.source.stats.connected, timeout_s=10)
                await publish(broker, [(topic(dev, "frequency"), b"50.2")])
                await ear.until(lambda: ear.readings == 2)
                return ear

        ear = asyncio.run(main())
    assert ear.values().tolist() == [50.0, 50.2]
    assert all(isinstance(e, SourceConnectError) for e in ear.errors)


def test_no_broker_is_a_connect_error_naming_the_endpoint(broker: MosquittoBroker) -> None:
    from tests.conftest import free_port

    port = free_port()
    dev = device(port)

    async def main() -> None:
        with pytest.raises(SourceConnectError) as info:
            async for _ in MqttSource(dev, client_id="x").stream():
                pass
        assert info.value.reason == "connection refused"
        assert str(info.value) == f"{dev.id} at mqtt://127.0.0.1:{port}: connection refused"

    asyncio.run(main())


def test_silence_beyond_stale_after_is_a_read_error(broker: MosquittoBroker) -> None:
    dev = device(broker.port, connect_timeout_s=0.5, stale_after_s=0.8)

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(SourceReadError, match="no message for 0.8 s"):
            async for _ in MqttSource(dev, client_id=f"edge-{dev.id}").stream():
                pass
        assert time.monotonic() - started < 3.0

    asyncio.run(main())


# -- TLS and passwords ------------------------------------------------------------------------------------


def _secure(broker: MosquittoBroker, **kw: object) -> MqttDevice:
    fields: dict = {"port": broker.tls_port, "tls": MqttTls(ca_file=broker.ca_file), "username": "edge-nairobi-01",
                    "password_env": "TEST_MQTT_PASSWORD"}
    fields.update(kw)
    return device(**fields)


def _receive_one(broker: MosquittoBroker, dev: MqttDevice) -> Listener:
    async def main() -> Listener:
        async with Listener(MqttSource(dev, client_id=f"edge-{dev.id}")) as ear:
            if ear.errors:
                raise ear.errors[0]
            await publish(broker, [(topic(dev, "frequency"), b"50.02")], user="sim" if broker.users else None)
            await ear.until(lambda: ear.readings == 1)
            return ear

    return asyncio.run(main())


def test_tls_with_password(secure_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", PASSWORD)
    ear = _receive_one(secure_broker, _secure(secure_broker))
    assert ear.values().tolist() == [50.02]
    assert ear.source.endpoint == f"mqtts://127.0.0.1:{secure_broker.tls_port}"


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("wrong password", "the broker refused the connection: Not authorized"),
        ("password unset", "the password variable TEST_MQTT_PASSWORD is not set"),
        ("unknown CA", "TLS: the broker's certificate was refused: "),
        ("plain to TLS port", "connection lost"),
    ],
)
def test_refusals_say_why(secure_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                          case: str, reason: str) -> None:
    monkeypatch.setenv("TEST_MQTT_PASSWORD", PASSWORD)
    dev = _secure(secure_broker)
    if case == "wrong password":
        monkeypatch.setenv("TEST_MQTT_PASSWORD", "guess")
    elif case == "password unset":
        monkeypatch.delenv("TEST_MQTT_PASSWORD")
    elif case == "unknown CA":
        other = make_certificates(tmp_path / "other", "Someone else's CA")
        dev = _secure(secure_broker, tls=MqttTls(ca_file=str(other["ca"])))
    else:
        dev = _secure(secure_broker, tls=None)

    async def main() -> None:
        with pytest.raises(SourceConnectError) as info:
            async for _ in MqttSource(dev, client_id=f"edge-{dev.id}").stream():
                pass
        assert reason in info.value.reason, info.value.reason

    asyncio.run(main())


def test_client_certificate(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path, tls=True, require_certificate=True) as broker:
        with_cert = device(broker.tls_port, tls=MqttTls(ca_file=broker.ca_file, cert_file=broker.client_cert,
                                                        key_file=broker.client_key))
        assert _receive_one(broker, with_cert).values().tolist() == [50.02]
        without = device(broker.tls_port, tls=MqttTls(ca_file=broker.ca_file))

        async def main() -> None:
            with pytest.raises(SourceConnectError, match="TLS|connection lost"):
                async for _ in MqttSource(without, client_id="no-cert").stream():
                    pass

        asyncio.run(main())


# -- the sample config and the edge daemon ----------------------------------------------------------------

HEAD = """
[identity]
edge_id = "edge-nairobi-01"
substation = "NAIROBI-S1"
[hub]
url = "http://127.0.0.1:{hub_port}"
sync_interval_s = 60.0
[buffer]
path = "{buffer}"
"""


def _sample_config(port: int, buffer: Path, hub_port: int) -> str:
    text = SAMPLE.read_text().replace("port = 1883", f"port = {port}")
    return HEAD.format(hub_port=hub_port, buffer=buffer) + text


def test_the_sample_device_through_the_edge_daemon_into_its_buffer(secure_broker: MosquittoBroker, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Good readings reach the edge's SQLite buffer; 1,000 bad ones interleaved reach the dead-letter sink."""
    from edge.daemon import EdgeDaemon
    from tests.conftest import free_port

    monkeypatch.setenv("SENTINEL_MQTT_PASSWORD", PASSWORD)
    buffer = tmp_path / "edge.db"
    config = parse_config(_sample_config(secure_broker.port, buffer, free_port()), "sample.toml")
    dev = config.devices[0]
    assert isinstance(dev, MqttDevice)
    pub = MqttPublisher(dev, substation="NAIROBI-S1", values=lambda t: {
        "oil_temperature": 60 + t, "winding_temperature": 70 + t, "vibration": 2.0, "voltage_l1": 11.0},
        form="batch", password="sim-password")
    messages: list[tuple[str, bytes]] = []
    for i in range(1000):
        messages += pub.messages(float(i))
        messages.append(pub.corrupt(CORRUPTIONS[i % len(CORRUPTIONS)]))

    async def main() -> None:
        daemon = EdgeDaemon(config, buffer_path=buffer)
        source = daemon.devices[0].source
        assert isinstance(source, MqttSource)
        assert source.on_reject is not None  # the daemon keeps rejects in its buffer's dead-letter table
        task = asyncio.create_task(daemon.run())
        deadline = time.monotonic() + 20
        while not source.stats.connected:
            assert time.monotonic() < deadline and not task.done(), daemon.stats.devices
            await asyncio.sleep(0.01)
        await publish(secure_broker, messages, user="sim")
        while daemon.stats.readings_buffered < 4000 or daemon.stats.dead_letters < 1000:
            assert time.monotonic() < deadline, (daemon.stats.readings_buffered, daemon.stats.dead_letters)
            await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    with sqlite3.connect(buffer) as db:
        rows = db.execute("SELECT device_id, metric, count(*), min(value), max(value) FROM readings"
                          " GROUP BY device_id, metric ORDER BY metric").fetchall()
    assert rows == [("TR-04-IOT", "oil_temperature", 1000, 60.0, 1059.0),
                    ("TR-04-IOT", "vibration", 1000, 2.0, 2.0),
                    ("TR-04-IOT", "voltage_l1", 1000, 11.0, 11.0),
                    ("TR-04-IOT", "winding_temperature", 1000, 70.0, 1069.0)]
    with sqlite3.connect(buffer) as db:
        dead = db.execute("SELECT topic, payload, reason FROM dead_letters").fetchall()
    assert len(dead) == 1000 and all(reason and topic for topic, _, reason in dead)
    assert any("Expected" in reason for _, _, reason in dead)  # reasons name what is wrong


# -- a broker that never answers ----------------------------------------------------------------------------


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel's backlog) and never says a word."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_a_silent_broker_is_a_timeout_not_a_hang(silent_port: int) -> None:
    dev = device(silent_port, connect_timeout_s=0.5)

    async def main() -> None:
        started = time.monotonic()
        with pytest.raises(SourceConnectError, match=r"no answer from the broker within 0.5 s"):
            async for _ in MqttSource(dev, client_id="x").stream():
                pass
        assert time.monotonic() - started < 1.5

    asyncio.run(main())


def test_cancelling_a_stream_that_waits_for_the_broker_returns_at_once(silent_port: int) -> None:
    """A stuck device cannot hang the edge's shutdown."""
    dev = device(silent_port, connect_timeout_s=30.0, keepalive_s=30)

    async def main() -> None:
        source = MqttSource(dev, client_id="x")
        task = asyncio.create_task(Listener(source)._run())
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await source.close()
        assert time.monotonic() - started < 1.0

    asyncio.run(main())
