"""Pure parsing of MQTT messages in the telemetry schema. No I/O, no paho.

A message is a topic and a payload. The topic must fit the device's :class:`TopicTemplate`; its
``{substation}``, ``{device}`` and ``{metric}`` levels fill in what a reading leaves out and must
agree with what it says. The payload is JSON in the telemetry schema
(protocols/schemas/telemetry.schema.json), in one of three forms:

- one reading: ``{"device_id": ..., "sensor_type": ..., "value": ..., "timestamp": ...}``;
- a bare number (or ``null``) when the topic names the metric (and the device); its time is the
  time of receipt;
- a batch: ``{"sensor_readings": [reading, ...]}``.

Each payload is decoded once, by msgspec, straight into typed structs. A batch with bad readings
in it is decoded a second time, item by item, so that its good readings still count: every bad
reading becomes one :class:`Reject` whose reason names the field, e.g.
``sensor_readings[3].value: Expected `float | null`, got `str```.

Two consumers:

- the edge (:class:`DeviceDecoder`): readings of one configured device become point-indexed columns
  (ts, point index, value, flags), the arrays of :class:`protocols.sources.Update`;
- the hub (:func:`to_readings`): readings of any device become :class:`protocols.reading.Reading` s.

Malformed messages and readings become :class:`DeadLetter` s (payload kept as text, at most 64 KiB).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec
import numpy as np

from protocols.mqtt.config import MqttDevice, TopicTemplate
from protocols.reading import QualityFlag, Reading, UtcTime, sensor_type
from protocols.sources import Update
from protocols.telemetry import SensorBatch, TelemetryReading

__all__ = [
    "MAX_DEAD_LETTER_PAYLOAD",
    "Columns",
    "DeadLetter",
    "DeviceDecoder",
    "Parsed",
    "Reject",
    "dead_letters",
    "parse_message",
    "to_readings",
]

MAX_DEAD_LETTER_PAYLOAD = 64 * 1024
"""Bytes of a rejected payload kept in a dead letter."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message (or one reading of a batch) that could not be used, and why."""

    ts: UtcTime  # when it was received
    source: str  # who received it: "<device>@<broker>" on the edge, "hub@<broker>" at the hub
    topic: str
    payload: str  # the payload as text (UTF-8, bad bytes replaced), cut at 64 KiB
    reason: str  # what is wrong, naming the field: "sensor_readings[3].value: Expected ..."

    @classmethod
    def make(cls, source: str, topic: str, payload: bytes, reason: str, ts: float | None = None) -> DeadLetter:
        return cls(ts=datetime.fromtimestamp(time.time() if ts is None else ts, UTC), source=source, topic=topic,
                   payload=payload_text(payload), reason=reason)


def payload_text(payload: bytes) -> str:
    """A payload as storable text: at most 64 KiB, invalid UTF-8 and NUL replaced (PostgreSQL refuses NUL)."""
    text = bytes(payload[:MAX_DEAD_LETTER_PAYLOAD]).decode("utf-8", "replace")
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


class Reject(NamedTuple):
    """What is wrong with a message or with one reading in it; ``payload`` is what it is about."""

    reason: str
    payload: bytes


class Parsed(NamedTuple):
    """One message, parsed: its readings (valid against the schema and the topic) and its rejects.

    ``where[i]`` locates ``readings[i]`` in the payload (``"sensor_readings[3]"``, or ``""``) for
    reasons found later (an unknown metric, another device).
    """

    fields: Mapping[str, str]
    readings: list[TelemetryReading]
    where: list[str]
    rejects: list[Reject]


# -- decoding ------------------------------------------------------------------------------------

class _RawBatch(msgspec.Struct, forbid_unknown_fields=True):
    sensor_readings: list[msgspec.Raw]


_BATCH = msgspec.json.Decoder(SensorBatch)
_READING = msgspec.json.Decoder(TelemetryReading)
_RAW_BATCH = msgspec.json.Decoder(_RawBatch)
_BARE = msgspec.json.Decoder(float | None)
_ENCODE = msgspec.json.Encoder().encode

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD_MSG = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<field>[^`]+)`$")
_WS = b" \t\r\n"


def _located(exc: msgspec.MsgspecError, prefix: str = "") -> str:
    """msgspec's ``Expected X - at `$.a[0].b``` as ``a[0].b: Expected X`` (under ``prefix``)."""
    m = _AT.match(str(exc))
    assert m is not None
    msg, path = m["msg"], (m["path"] or "").lstrip(".")
    field = _FIELD_MSG.match(msg)
    if field:  # name the field itself: "sensor_readings[0].colour: unknown field"
        path = f"{path}.{field['field']}" if path else field["field"]
        msg = "unknown field" if "unknown" in msg else "missing required field"
    path = f"{prefix}{path}" if not path.startswith("[") else f"{prefix.rstrip('.')}{path}"
    path = path.rstrip(".")
    return f"{path}: {msg}" if path else msg


def _decode_error(exc: msgspec.DecodeError) -> str:
    return f"invalid JSON: {exc}"


def parse_message(template: TopicTemplate, topic: str, payload: bytes, received: float,
                  default_device: str | None = None) -> Parsed:
    """Parse one message against ``template`` and the telemetry schema.

    ``received`` (epoch seconds) is the time of a bare value. ``default_device`` names the device
    of a bare value when the topic has no ``{device}``.
    """
    fields = template.match(topic)
    if fields is None:
        return Parsed({}, [], [], [Reject(f"topic {topic} does not match template {template.text}", payload)])
    head = payload.lstrip(_WS)[:1]
    if not head:
        return Parsed(fields, [], [], [Reject("empty payload", payload)])
    if head == b"{":
        if b'"sensor_readings"' in payload:
            readings, where, rejects = _parse_batch(payload)
        else:
            try:
                readings, where, rejects = [_READING.decode(payload)], [""], []
            except msgspec.ValidationError as exc:
                return Parsed(fields, [], [], [Reject(_located(exc), payload)])
            except msgspec.DecodeError as exc:
                return Parsed(fields, [], [], [Reject(_decode_error(exc), payload)])
    else:
        return _parse_bare(fields, topic, payload, received, default_device)
    if fields and readings:
        readings, where, rejects = _apply_topic(fields, readings, where, rejects)
    return Parsed(fields, readings, where, rejects)


def _parse_batch(payload: bytes) -> tuple[list[TelemetryReading], list[str], list[Reject]]:
    try:
        batch = _BATCH.decode(payload)
        return batch.sensor_readings, [f"sensor_readings[{i}]" for i in range(len(batch.sensor_readings))], []
    except msgspec.DecodeError as exc:
        if not isinstance(exc, msgspec.ValidationError):
            return [], [], [Reject(_decode_error(exc), payload)]
        first = exc
    # Some reading is bad (or the envelope is): decode item by item, keep the good ones.
    try:
        raw = _RAW_BATCH.decode(payload)
    except msgspec.ValidationError:
        return [], [], [Reject(_located(first), payload)]
    except msgspec.DecodeError as exc:
        return [], [], [Reject(_decode_error(exc), payload)]
    if not raw.sensor_readings:
        return [], [], [Reject(_located(first), payload)]
    readings: list[TelemetryReading] = []
    where: list[str] = []
    rejects: list[Reject] = []
    for i, item in enumerate(raw.sensor_readings):
        loc = f"sensor_readings[{i}]"
        try:
            readings.append(_READING.decode(item))
            where.append(loc)
        except msgspec.DecodeError as exc:
            rejects.append(Reject(_located(exc, loc + ".") if isinstance(exc, msgspec.ValidationError)
                                  else f"{loc}: {_decode_error(exc)}", bytes(item)))
    return readings, where, rejects


def _parse_bare(fields: Mapping[str, str], topic: str, payload: bytes, received: float,
                default_device: str | None) -> Parsed:
    try:
        value = _BARE.decode(payload)
    except msgspec.ValidationError as exc:
        return Parsed(fields, [], [], [Reject(
            f"payload: {_located(exc)} (give one reading object, a batch {{\"sensor_readings\": [...]}}, "
            "or a bare number on a topic that names the metric)", payload)])
    except msgspec.DecodeError as exc:
        return Parsed(fields, [], [], [Reject(_decode_error(exc), payload)])
    metric = fields.get("metric")
    device = fields.get("device") or default_device
    if not metric or not device:
        missing = "{metric}" if not metric else "{device}"
        return Parsed(fields, [], [], [Reject(
            f"a bare value needs the topic to name the {missing[1:-1]}, but topic {topic} has no {missing} level",
            payload)])
    reading = TelemetryReading(device_id=device, sensor_type=sensor_type(metric), metric=metric, value=value,
                               timestamp=datetime.fromtimestamp(received, UTC), substation=fields.get("substation"))
    return Parsed(fields, [reading], [""], [])


def _apply_topic(fields: Mapping[str, str], readings: list[TelemetryReading], where: list[str],
                 rejects: list[Reject]) -> tuple[list[TelemetryReading], list[str], list[Reject]]:
    """Topic levels fill in what readings leave out and must agree with what they say."""
    device, metric, substation = fields.get("device"), fields.get("metric"), fields.get("substation")
    replace = msgspec.structs.replace
    out: list[TelemetryReading] = []
    out_where: list[str] = []
    for r, loc in zip(readings, where):
        at = f"{loc}." if loc else ""
        if device is not None and r.device_id != device:
            rejects.append(Reject(f"{at}device_id {r.device_id!r} does not match the topic's device {device!r}",
                                  _ENCODE(r)))
            continue
        if metric is not None:
            if r.metric is None:
                r = replace(r, metric=metric)
            elif r.metric != metric:
                rejects.append(Reject(f"{at}metric {r.metric!r} does not match the topic's metric {metric!r}",
                                      _ENCODE(r)))
                continue
        if substation is not None:
            if r.substation is None:
                r = replace(r, substation=substation)
            elif r.substation != substation:
                rejects.append(Reject(
                    f"{at}substation {r.substation!r} does not match the topic's substation {substation!r}",
                    _ENCODE(r)))
                continue
        out.append(r)
        out_where.append(loc)
    return out, out_where, rejects


def dead_letters(source: str, topic: str, rejects: Sequence[Reject], received: float) -> list[DeadLetter]:
    return [DeadLetter.make(source, topic, r.payload, r.reason, received) for r in rejects]


# -- the edge: one device's points ----------------------------------------------------------------

_FLAG_CACHE: dict[tuple[str, ...], int] = {(): 0}


def _flags(names: list[str]) -> int:
    key = tuple(names)
    bits = _FLAG_CACHE.get(key)
    if bits is None:
        bits = _FLAG_CACHE[key] = QualityFlag.parse(names) if len(_FLAG_CACHE) < 4096 else QualityFlag.parse(names)
    return bits


class Columns:
    """Point-indexed values collected from any number of messages; ``update()`` makes the arrays."""

    __slots__ = ("flags", "index", "ts", "values")

    def __init__(self) -> None:
        self.ts: list[float] = []
        self.index: list[int] = []
        self.values: list[float] = []
        self.flags: list[int] = []

    def __len__(self) -> int:
        return len(self.ts)

    def update(self) -> Update:
        return Update(ts=np.array(self.ts, dtype=np.float64), index=np.array(self.index, dtype=np.int64),
                      values=np.array(self.values, dtype=np.float64), flags=np.array(self.flags, dtype=np.int64))

    def clear(self) -> None:
        self.ts.clear()
        self.index.clear()
        self.values.clear()
        self.flags.clear()


class DeviceDecoder:
    """Decodes messages for one configured MQTT device into its points' columns.

    A reading must name this device (``device_id``) and one of its points (``metric``, else
    ``sensor_type``); a reading's ``quality`` is not carried (the edge derives quality from flags).
    """

    def __init__(self, device: MqttDevice) -> None:
        self.device_id = device.id
        self.template = device.template
        self.point_index = {p.metric: i for i, p in enumerate(device.points)}

    def decode(self, topic: str, payload: bytes, received: float, out: Columns) -> list[Reject]:
        """Append the message's good readings to ``out``; return what was rejected."""
        parsed = parse_message(self.template, topic, payload, received, default_device=self.device_id)
        rejects = parsed.rejects
        if not parsed.readings:
            return rejects
        device_id, point_index = self.device_id, self.point_index
        nan = float("nan")
        ts, index, values, flags = out.ts, out.index, out.values, out.flags
        for r, loc in zip(parsed.readings, parsed.where):
            i = point_index.get(r.metric or r.sensor_type)
            if i is None or r.device_id != device_id:
                at = f"{loc}: " if loc else ""
                if r.device_id != device_id:
                    reason = f"{at}device_id {r.device_id!r} is not device {device_id}"
                else:
                    reason = f"{at}unknown metric {r.metric or r.sensor_type!r} for device {device_id}"
                rejects.append(Reject(reason, _ENCODE(r)))
                continue
            ts.append(r.timestamp.timestamp())
            index.append(i)
            v = r.value
            values.append(nan if v is None else v)
            qf = r.quality_flags
            flags.append(_flags(qf) if qf else 0)
        return rejects


# -- the hub: readings of any device --------------------------------------------------------------

def to_readings(parsed: Parsed, default_substation: str) -> tuple[list[Reading], list[float | None]]:
    """The parsed readings as stored readings, and each one's nominal (for the grid-code check)."""
    return ([r.to_reading(default_substation) for r in parsed.readings], [r.nominal for r in parsed.readings])
