"""`sentinel edge check` beside a live edge does it no harm: against a real Mosquitto, a running
EdgeDaemon with its persistent session stays connected while the check runs, and every QoS 1
message published meanwhile, and while the daemon was stopped, reaches the daemon's buffer."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.check import PointCheck, check_devices
from protocols.config import parse_config
from protocols.mqtt.config import MqttDevice
from protocols.mqtt.source import MqttSource
from tests.conftest import free_port
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.timeout(120)

CONFIG = """
[identity]
edge_id = "edge-check-01"
substation = "SUB-C"
[hub]
url = "http://127.0.0.1:{hub_port}"
sync_interval_s = 60.0
[buffer]
path = "{buffer}"

[[devices]]
id = "TR-9-IOT"
protocol = "mqtt"
host = "127.0.0.1"
port = {port}
qos = 1
mqtt_version = "{mqtt_version}"
clean_session = false
connect_timeout_s = 3.0
points = [
  {{ metric = "frequency", unit = "Hz" }},
  {{ metric = "voltage_l1", unit = "kV", nominal = 11.0 }},
]
"""


class Publisher:
    """QoS 1 frequency readings, each with its own value and timestamp, so each can be found again."""

    def __init__(self, broker: MosquittoBroker, dev: MqttDevice) -> None:
        self.broker, self.dev, self.sent = broker, dev, []

    def message(self, metric: str = "frequency", value: float | None = None) -> tuple[str, bytes]:
        n = len(self.sent)
        value = 50.0 + n / 1000 if value is None else value
        if metric == "frequency":
            self.sent.append(value)
        ts = datetime.fromtimestamp(time.time() - 600 + n, UTC).isoformat().replace("+00:00", "Z")
        body = {"device_id": self.dev.id, "sensor_type": metric.split("_")[0], "metric": metric, "value": value,
                "timestamp": ts}
        topic = self.dev.template.render(substation="SUB-C", device=self.dev.id, metric=metric)
        return topic, json.dumps(body).encode()

    async def send(self, n: int, metric: str = "frequency") -> None:
        batch = [self.message(metric, 11.0 if metric == "voltage_l1" else None) for _ in range(n)]
        await asyncio.to_thread(self.broker.publish, batch, client_id=f"pub-{time.monotonic_ns()}")

    async def trickle(self, seconds: float) -> None:
        """A message of each point every 100 ms for ``seconds``: what a check listening meanwhile sees."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await self.send(1)
            await self.send(1, "voltage_l1")
            await asyncio.sleep(0.1)


async def wait_connected(source: MqttSource, task: asyncio.Task) -> None:
    deadline = time.monotonic() + 15
    while not source.stats.connected:
        assert time.monotonic() < deadline and not task.done(), "the daemon did not connect"
        await asyncio.sleep(0.02)


async def check_meanwhile(config, pub: Publisher) -> list[PointCheck]:  # noqa: ANN001
    check = asyncio.create_task(check_devices(config, wait_s=3.0))
    await pub.trickle(1.5)
    return await check


@pytest.mark.parametrize("mqtt_version", ["3.1.1", "5"])
def test_check_beside_a_live_and_a_stopped_daemon_loses_nothing_and_disconnects_nobody(tmp_path: Path,
                                                                                       mqtt_version: str) -> None:
    from edge.daemon import EdgeDaemon

    with MosquittoBroker(tmp_path) as broker:
        buffer = tmp_path / "edge.db"
        config = parse_config(CONFIG.format(hub_port=free_port(), buffer=buffer, port=broker.port,
                                            mqtt_version=mqtt_version), "site.toml")
        dev = config.devices[0]
        assert isinstance(dev, MqttDevice)
        pub = Publisher(broker, dev)

        async def main() -> tuple[list[PointCheck], list[PointCheck], MqttSource]:
            first = EdgeDaemon(config, buffer_path=buffer)  # makes the persistent session at the broker
            task = asyncio.create_task(first.run())
            await wait_connected(first.devices[0].source, task)
            await pub.send(5)
            deadline = time.monotonic() + 10
            while first.stats.readings_buffered < 5:  # taken (and acknowledged) before the daemon stops
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

            # the daemon is stopped: the broker queues QoS 1 messages for its session
            await pub.send(20)
            while_stopped = await check_meanwhile(config, pub)
            await pub.send(20)

            second = EdgeDaemon(config, buffer_path=buffer)
            source = second.devices[0].source
            assert isinstance(source, MqttSource)
            task = asyncio.create_task(second.run())
            await wait_connected(source, task)
            while_running = await check_meanwhile(config, pub)
            await pub.send(20)
            deadline = time.monotonic() + 15
            while second.stats.readings_buffered < len(pub.sent) - 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert source.stats.connected and not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return while_stopped, while_running, source

        while_stopped, while_running, source = asyncio.run(main())

    # the daemon was never taken over by the check: one connection, its session resumed, never dropped
    assert source.stats.connects == 1 and source.stats.disconnects == 0
    assert source.stats.session_resumed == 1
    # every frequency value published (before, during and after each check, with the daemon up or down)
    with sqlite3.connect(buffer) as db:
        got = [v for (v,) in db.execute("SELECT value FROM readings WHERE metric = 'frequency'")]
    assert sorted(got) == pytest.approx(sorted(pub.sent))
    # and the checks themselves saw the data, point by point
    for checks in (while_stopped, while_running):
        assert [c.metric for c in checks] == ["frequency", "voltage_l1"]
        assert all(c.ok and c.quality == "good" for c in checks), checks


def test_a_wait_timeout_fails_only_the_points_that_got_nothing(tmp_path: Path) -> None:
    with MosquittoBroker(tmp_path) as broker:
        config = parse_config(CONFIG.format(hub_port=free_port(), buffer=tmp_path / "edge.db", port=broker.port,
                                            mqtt_version="3.1.1"), "site.toml")
        dev = config.devices[0]
        assert isinstance(dev, MqttDevice)
        pub = Publisher(broker, dev)

        async def main() -> list[PointCheck]:
            check = asyncio.create_task(check_devices(config, wait_s=2.0))
            end = time.monotonic() + 1.0
            while time.monotonic() < end:  # only the frequency sensor is alive
                await pub.send(1)
                await asyncio.sleep(0.1)
            return await check

        checks = {c.metric: c for c in asyncio.run(main())}
    assert checks["frequency"].ok and checks["frequency"].value is not None
    assert not checks["voltage_l1"].ok and "no value within 2 s" in checks["voltage_l1"].error


OPCUA_CONFIG = """
[identity]
edge_id = "edge-check-02"
substation = "SUB-C"
[hub]
url = "http://127.0.0.1:{hub_port}"
sync_interval_s = 60.0
[buffer]
path = "{buffer}"

[[devices]]
id = "RTU-5"
protocol = "opcua"
url = "{url}"
mode = "subscribe"
publishing_interval_s = 0.1
points = [
  {{ metric = "voltage_l1", node_id = "ns=2;s=RTU-5.voltage_l1", unit = "kV", nominal = 11.0 }},
  {{ metric = "frequency", node_id = "ns=2;s=RTU-5.frequency", unit = "Hz" }},
]
"""


def test_check_beside_a_daemon_subscribed_to_an_opcua_server_leaves_it_subscribed(tmp_path: Path) -> None:
    from edge.daemon import EdgeDaemon
    from simulator.opcua_server import OpcUaEndpoint

    url = f"opc.tcp://127.0.0.1:{free_port()}"
    buffer = tmp_path / "edge.db"
    config = parse_config(OPCUA_CONFIG.format(hub_port=free_port(), buffer=buffer, url=url), "site.toml")
    written: list[float] = []

    async def main() -> list[PointCheck]:
        async with OpcUaEndpoint(url, config.devices) as server:
            async def write_for(seconds: float) -> None:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    f = 50.0 + len(written) / 1000
                    written.append(f)
                    await server.write("RTU-5", {"voltage_l1": 11.02, "frequency": f})
                    await asyncio.sleep(0.3)

            daemon = EdgeDaemon(config, buffer_path=buffer)
            task = asyncio.create_task(daemon.run())
            await write_for(1.5)
            check = asyncio.create_task(check_devices(config, wait_s=3.0))
            await write_for(1.5)
            checks = await check
            await write_for(1.5)
            health = daemon.stats.devices["RTU-5"]
            assert health.online and health.failures == 0, health  # never dropped, never resubscribed
            assert not task.done()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            return checks

    checks = asyncio.run(main())
    assert all(c.ok and c.quality == "good" for c in checks), checks
    with sqlite3.connect(buffer) as db:
        got = {v for (v,) in db.execute("SELECT value FROM readings WHERE metric = 'frequency'")}
    missing = [w for w in written if not any(abs(w - g) < 1e-4 for g in got)]  # values 1e-3 apart
    assert not missing, (missing, len(written))
