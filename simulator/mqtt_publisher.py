"""A simulated MQTT device: publishes one device's readings in the telemetry schema to a broker.

    publisher = MqttPublisher(device, substation="NAIROBI-S1", values=lambda t: {"oil_temperature": 65.2},
                              form="batch", rate_hz=1.0,
                              corruptions=[Corruption(at_s=30, kind="invalid_json", count=5)])
    async with publisher:
        await publisher.run(duration_s=120)

``device`` is the :class:`~protocols.mqtt.config.MqttDevice` of a firmware config, the same the
edge subscribes with: its broker (host, port, TLS, user), topic template and points. ``values``
gives each point's value by metric: a metric left out (or NaN) is a sample the device did not
take, and no reading is sent for it; None is a reading without a value (sent as ``null`` with
the flag ``comm_lost``). Forms:

- ``single``: one reading object per point, on the point's topic (``.../{device}/{metric}``);
- ``bare``: a bare number per point on the point's topic (the edge stamps it on receipt);
- ``batch``: all points in one ``{"sensor_readings": [...]}`` on the device's topic (the template
  with its trailing ``{metric}`` left out).

Corrupt payloads are injected at given times (seconds since ``run()`` started), ``count`` of them
at once, on the device's first point: ``invalid_json``, ``wrong_type`` (value as a string),
``unknown_metric`` (a metric the device does not have: bad at the edge, which knows the device's
points, but a valid reading at the hub, which does not), ``missing_field`` (no timestamp),
``wrong_device`` (another device_id on this device's topic). What was sent is counted in :attr:`stats`.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from protocols.mqtt.config import MqttDevice, MqttPoint
from protocols.mqtt.source import tls_context
from protocols.reading import sensor_type

__all__ = ["CORRUPTIONS", "Corruption", "MqttPublisher", "PublisherStats"]

Form = Literal["single", "bare", "batch"]
CorruptionKind = Literal["invalid_json", "wrong_type", "unknown_metric", "missing_field", "wrong_device"]
CORRUPTIONS: tuple[CorruptionKind, ...] = ("invalid_json", "wrong_type", "unknown_metric", "missing_field",
                                           "wrong_device")

Values = Callable[[float], Mapping[str, float | None]]
"""Given seconds since run() started, each point's value by metric (left out or NaN: no reading is
sent; None: a reading without a value)."""

_encode = msgspec.json.Encoder().encode

RECONNECT_MIN_S, RECONNECT_MAX_S = 0.25, 1.0  # a device retries its broker soon after a restart


@dataclass(frozen=True)
class Corruption:
    at_s: float  # seconds since run() started
    kind: CorruptionKind
    count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {self.kind!r} (known: {', '.join(CORRUPTIONS)})")
        if self.count < 1 or self.at_s < 0:
            raise ValueError("a corruption needs at_s >= 0 and count >= 1")


@dataclass
class PublisherStats:
    messages: int = 0
    readings: int = 0
    corrupt: dict[str, int] = field(default_factory=dict)


def _taken(values: Mapping[str, float | None], metric: str) -> bool:
    """Whether the device took this sample: present, and not NaN (None is a reading without a value)."""
    if metric not in values:
        return False
    v = values[metric]
    return v is None or not math.isnan(v)


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class MqttPublisher:
    """Publishes one device's points at ``rate_hz``; an async context manager (connects on entry)."""

    def __init__(self, device: MqttDevice, *, substation: str, values: Values, form: Form = "single",
                 rate_hz: float = 1.0, client_id: str | None = None,
                 corruptions: Sequence[Corruption] = (), password: str | None = None) -> None:
        if form not in ("single", "bare", "batch"):
            raise ValueError(f"form must be single, bare or batch, not {form!r}")
        if not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive, not {rate_hz}")
        template = device.template
        if form == "batch" and "metric" in template.fields and not template.optional_metric:
            raise ValueError(f"topic {device.topic!r}: a batch needs a device-level topic ({{metric}} last)")
        if form == "bare" and "metric" not in template.fields:
            raise ValueError(f"topic {device.topic!r}: bare values need a {{metric}} level")
        self.device = device
        self.substation = substation
        self.values = values
        self.form: Form = form
        self.rate_hz = float(rate_hz)
        self.client_id = client_id or f"sim-{substation}-{device.id}"
        self.corruptions = sorted(corruptions, key=lambda c: c.at_s)
        self.stats = PublisherStats()
        self._password = password
        self._fields = {"substation": substation, "device": device.id}
        self._client: mqtt.Client | None = None
        self._unacked: deque[mqtt.MQTTMessageInfo] = deque()

    # -- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self) -> None:
        d = self.device
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5 if d.mqtt_version == "5" else
                             MQTTProtocolVersion.MQTTv311)
        if d.tls is not None:
            client.tls_set_context(tls_context(d.tls))
        if d.username:
            client.username_pw_set(d.username, self._password if self._password is not None
                                   else os.environ.get(d.password_env, ""))
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)  # type: ignore[arg-type] - floats work
        client.connect_timeout = d.connect_timeout_s
        await asyncio.to_thread(client.connect, d.host, d.port, d.keepalive_s)
        client.loop_start()  # paho reconnects a publisher by itself: the simulated device keeps trying
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        await asyncio.to_thread(self._drain_and_stop, client)

    @staticmethod
    def _drain_and_stop(client: mqtt.Client, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while client.is_connected() and client.want_write() and time.monotonic() < deadline:
            time.sleep(0.01)
        client.disconnect()
        client.loop_stop()

    # -- what is sent (pure) ---------------------------------------------------------------------

    def _reading(self, metric: str, value: float | None, ts: float, unit: str, nominal: float | None) -> dict:
        r: dict[str, Any] = {"device_id": self.device.id, "sensor_type": sensor_type(metric), "metric": metric,
                             "value": value, "timestamp": _rfc3339(ts), "unit": unit,
                             "substation": self.substation}
        if value is None:
            r["quality"] = 0.0
            r["quality_flags"] = ["comm_lost"]
        if nominal is not None:
            r["nominal"] = nominal
        return r

    def topic(self, metric: str | None = None) -> str:
        return self.device.template.render(**self._fields, metric=metric or "")

    def messages(self, t_s: float, ts: float | None = None) -> list[tuple[str, bytes]]:
        """The messages for scenario time ``t_s`` (wall time ``ts``, default now): (topic, payload)."""
        return self._messages(t_s, ts)[0]

    def _messages(self, t_s: float, ts: float | None) -> tuple[list[tuple[str, bytes]], int]:
        """The messages and how many readings they carry."""
        ts = time.time() if ts is None else ts
        values = self.values(t_s)
        points = [p for p in self.device.points if _taken(values, p.metric)]
        return self._encode_points(points, values, ts), len(points)

    def _encode_points(self, points: list[MqttPoint], values: Mapping[str, float | None],
                       ts: float) -> list[tuple[str, bytes]]:
        if self.form == "batch":
            if not points:
                return []
            body = {"sensor_readings": [self._reading(p.metric, values[p.metric], ts, p.unit, p.nominal)
                                        for p in points]}
            return [(self.topic(), _encode(body))]
        if self.form == "bare":
            return [(self.topic(p.metric), _encode(values[p.metric])) for p in points]
        return [(self.topic(p.metric), _encode(self._reading(p.metric, values[p.metric], ts, p.unit, p.nominal)))
                for p in points]

    def corrupt(self, kind: CorruptionKind, ts: float | None = None) -> tuple[str, bytes]:
        """One corrupt message of ``kind`` (topic, payload), on the device's first point."""
        ts = time.time() if ts is None else ts
        p = self.device.points[0]
        good = self._reading(p.metric, p.nominal or 1.0, ts, p.unit, None)
        topic = self.topic(p.metric) if "metric" in self.device.template.fields else self.topic()
        if kind == "invalid_json":
            return topic, _encode(good)[:-7]  # cut short
        if kind == "wrong_type":
            return topic, _encode({**good, "value": str(good["value"])})
        if kind == "unknown_metric":
            topic = self.topic("no_such_metric") if "metric" in self.device.template.fields else topic
            return topic, _encode({**good, "metric": "no_such_metric", "sensor_type": "no_such_metric"})
        if kind == "missing_field":
            return topic, _encode({k: v for k, v in good.items() if k != "timestamp"})
        if kind == "wrong_device":  # on this device's topic, naming another device
            return topic, _encode({**good, "device_id": f"{self.device.id}-X"})
        raise ValueError(f"unknown corruption {kind!r}")

    # -- publishing ------------------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes) -> None:
        if self._client is None:
            raise RuntimeError("not connected: use `async with MqttPublisher(...)`")
        info = self._client.publish(topic, payload, qos=self.device.qos)
        self.stats.messages += 1
        unacked = self._unacked
        unacked.append(info)
        if len(unacked) > 10_000:
            while unacked and unacked[0].is_published():
                unacked.popleft()

    def publish_tick(self, t_s: float) -> None:
        """Publish the readings of scenario time ``t_s`` now."""
        messages, readings = self._messages(t_s, None)
        for topic, payload in messages:
            self.publish(topic, payload)
        self.stats.readings += readings

    def inject(self, kind: CorruptionKind, count: int = 1) -> None:
        for _ in range(count):
            self.publish(*self.corrupt(kind))
        self.stats.corrupt[kind] = self.stats.corrupt.get(kind, 0) + count

    async def run(self, duration_s: float | None = None) -> None:
        """Publish every 1/rate_hz s (and the corruptions when due) for ``duration_s``, or until cancelled."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        period = 1.0 / self.rate_hz
        pending = list(self.corruptions)
        tick = 0
        while True:
            t_s = loop.time() - start
            if duration_s is not None and t_s >= duration_s:
                break
            while pending and pending[0].at_s <= t_s:
                c = pending.pop(0)
                self.inject(c.kind, c.count)
            self.publish_tick(t_s)
            tick += 1
            await asyncio.sleep(max(0.0, start + tick * period - loop.time()))
        while pending and duration_s is not None and pending[0].at_s <= duration_s:
            c = pending.pop(0)
            self.inject(c.kind, c.count)

    async def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until everything published so far has left (QoS 1/2: been acknowledged); False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        unacked = self._unacked
        while unacked:
            info = unacked[0]
            if info.is_published() or info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                unacked.popleft()  # sent, or never will be (the queue refused it)
                continue
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.005)
        return True
