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
    reason: str  # what is wrong, naming the field: "sensor_readings[3].value: Expected ..."; one line

    @classmethod
    def make(cls, source: str, topic: str, payload: bytes, reason: str, ts: float | None = None) -> DeadLetter:
        return cls(ts=datetime.fromtimestamp(time.time() if ts is None else ts, UTC), source=source, topic=topic,
                   payload=payload_text(payload), reason=one_line(reason))


def one_line(text: str) -> str:
    """``text`` with what is not printable escaped (``\\n``, ``\\x00``, ``\\u202e``): a reason quotes
    field names and topics a publisher chose, and must stay one honest line in a log (no line breaks,
    no right-to-left overrides) and storable (PostgreSQL refuses NUL)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


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

    ``items[i]`` is the position of ``readings[i]`` in a batch's ``sensor_readings`` (-1 when the
    payload is not a batch), for reasons found later (an unknown metric, another device):
    :meth:`where` and :meth:`raw` locate it.
    """

    fields: Mapping[str, str]
    readings: list[TelemetryReading]
    items: list[int]
    rejects: list[Reject]
    payload: bytes

    def metric(self, r: TelemetryReading) -> str:
        """A reading's metric: its own, else the topic's ``{metric}``, else its ``sensor_type``."""
        return r.metric or self.fields.get("metric") or r.sensor_type

    def where(self, i: int) -> str:
        """``"sensor_readings[3]: "`` for reading ``i`` of a batch, ``""`` otherwise."""
        item = self.items[i]
        return f"sensor_readings[{item}]: " if item >= 0 else ""

    def raw(self, i: int) -> bytes:
        """The JSON of reading ``i`` as it came (the whole payload unless it came in a batch)."""
        item = self.items[i]
        if item < 0:
            return self.payload
        try:
            return bytes(_RAW_BATCH.decode(self.payload).sensor_readings[item])
        except (msgspec.DecodeError, IndexError, RecursionError):  # pragma: no cover - it decoded once already
            return _ENCODE(self.readings[i])


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
_OWN_MSG = re.compile(r"^(?P<field>[a-z_]+): (?P<msg>.*)$", re.DOTALL)  # TelemetryReading.__post_init__
_WS = b" \t\r\n"


def _located(exc: msgspec.MsgspecError, prefix: str = "") -> str:
    """msgspec's ``Expected X - at `$.a[0].b``` as ``a[0].b: Expected X`` (under ``prefix``)."""
    m = _AT.match(str(exc))
    assert m is not None
    msg, path = m["msg"], (m["path"] or "").lstrip(".")
    field = _FIELD_MSG.match(msg)
    own = _OWN_MSG.match(msg)
    if field:  # name the field itself: "sensor_readings[0].colour: unknown field"
        path = f"{path}.{field['field']}" if path else field["field"]
        msg = "unknown field" if "unknown" in msg else "missing required field"
    elif own:  # raised as "field: message" by a check across fields
        path = f"{path}.{own['field']}" if path else own["field"]
        msg = own["msg"]
    path = f"{prefix}{path}" if not path.startswith("[") else f"{prefix.rstrip('.')}{path}"
    path = path.rstrip(".")
    return one_line(f"{path}: {msg}" if path else msg)  # field names are the publisher's


def _decode_error(exc: msgspec.DecodeError) -> str:
    return f"invalid JSON: {exc}"


# msgspec decodes (and skips) nested arrays and objects recursively and raises RecursionError
# beyond Python's recursion limit (about 1,000 levels): a rejected message, not a crash.
_TOO_DEEP = "invalid JSON: nested too deeply to decode"


def parse_message(template: TopicTemplate, topic: str, payload: bytes, received: float,
                  default_device: str | None = None) -> Parsed:
    """Parse one message against ``template`` and the telemetry schema.

    ``received`` (epoch seconds) is the time of a bare value. ``default_device`` names the device
    of a bare value when the topic has no ``{device}``.
    """
    fields = template.match(topic)
    if fields is None:
        return _rejected({}, f"topic {one_line(topic)} does not match template {template.text}", payload)
    head = payload.lstrip(_WS)[:1]
    if not head:
        return _rejected(fields, "empty payload", payload)
    if head != b"{":
        return _parse_bare(fields, topic, payload, received, default_device)
    rejects: list[Reject] = []
    if b'"sensor_readings"' in payload:
        readings, items = _parse_batch(payload, rejects)
    else:
        try:
            readings, items = [_READING.decode(payload)], [-1]
        except msgspec.ValidationError as exc:
            return _rejected(fields, _located(exc), payload)
        except msgspec.DecodeError as exc:
            return _rejected(fields, _decode_error(exc), payload)
        except RecursionError:
            return _rejected(fields, _TOO_DEEP, payload)
    parsed = Parsed(fields, readings, items, rejects, payload)
    return _apply_topic(parsed) if fields and readings else parsed


def _rejected(fields: Mapping[str, str], reason: str, payload: bytes) -> Parsed:
    return Parsed(fields, [], [], [Reject(reason, payload)], payload)


def _parse_batch(payload: bytes, rejects: list[Reject]) -> tuple[list[TelemetryReading], list[int]]:
    first: msgspec.ValidationError | None = None
    try:
        batch = _BATCH.decode(payload)
        return batch.sensor_readings, list(range(len(batch.sensor_readings)))
    except msgspec.ValidationError as exc:
        first = exc
    except msgspec.DecodeError as exc:
        rejects.append(Reject(_decode_error(exc), payload))
        return [], []
    except RecursionError:
        pass  # some reading nests too deeply: item by item below
    # Some reading is bad (or the envelope is): decode item by item, keep the good ones.
    try:
        raw = _RAW_BATCH.decode(payload)
    except msgspec.ValidationError:
        raw = None
    except msgspec.DecodeError as exc:
        rejects.append(Reject(_decode_error(exc), payload))
        return [], []
    except RecursionError:
        rejects.append(Reject(_TOO_DEEP, payload))
        return [], []
    if raw is None or not raw.sensor_readings:
        rejects.append(Reject(_TOO_DEEP if first is None else _located(first), payload))
        return [], []
    readings: list[TelemetryReading] = []
    items: list[int] = []
    for i, item in enumerate(raw.sensor_readings):
        try:
            readings.append(_READING.decode(item))
            items.append(i)
        except msgspec.ValidationError as exc:
            rejects.append(Reject(_located(exc, f"sensor_readings[{i}]."), bytes(item)))
        except msgspec.DecodeError as exc:  # pragma: no cover - the envelope decoded, so the item is JSON
            rejects.append(Reject(f"sensor_readings[{i}]: {_decode_error(exc)}", bytes(item)))
        except RecursionError:
            rejects.append(Reject(f"sensor_readings[{i}]: {_TOO_DEEP}", bytes(item)))
    return readings, items


def _parse_bare(fields: Mapping[str, str], topic: str, payload: bytes, received: float,
                default_device: str | None) -> Parsed:
    try:
        value = _BARE.decode(payload)
    except msgspec.ValidationError as exc:
        return _rejected(fields, f"payload: {_located(exc)} (send one reading object, a batch "
                         '{"sensor_readings": [...]}, or a bare number on a topic that names the metric)', payload)
    except msgspec.DecodeError as exc:
        return _rejected(fields, _decode_error(exc), payload)
    metric = fields.get("metric")
    device = fields.get("device") or default_device
    if not metric or not device:
        missing = "metric" if not metric else "device"
        return _rejected(fields, f"a bare value needs a topic that names the {missing}, and topic {one_line(topic)} "
                         f"has no {{{missing}}} level", payload)
    reading = TelemetryReading(device_id=device, sensor_type=sensor_type(metric), metric=metric, value=value,
                               timestamp=datetime.fromtimestamp(received, UTC), substation=fields.get("substation"))
    return Parsed(fields, [reading], [-1], [], payload)


def _apply_topic(parsed: Parsed) -> Parsed:
    """Topic levels must agree with what readings say (filling in what they leave out is left to
    the consumers: :meth:`Parsed.metric`, :func:`to_readings`). No copies when all agree."""
    fields = parsed.fields
    device, metric, substation = fields.get("device"), fields.get("metric"), fields.get("substation")
    bad: list[tuple[int, str]] = []
    for i, r in enumerate(parsed.readings):
        if device is not None and r.device_id != device:
            bad.append((i, f"device_id {r.device_id!r} does not match the topic's device {device!r}"))
        elif metric is not None and r.metric is not None and r.metric != metric:
            bad.append((i, f"metric {r.metric!r} does not match the topic's metric {metric!r}"))
        elif substation is not None and r.substation is not None and r.substation != substation:
            bad.append((i, f"substation {r.substation!r} does not match the topic's substation {substation!r}"))
    if not bad:
        return parsed
    rejects = parsed.rejects
    for i, reason in bad:
        rejects.append(Reject(parsed.where(i) + reason, parsed.raw(i)))
    drop = {i for i, _ in bad}
    keep = [i for i in range(len(parsed.readings)) if i not in drop]
    return Parsed(fields, [parsed.readings[i] for i in keep], [parsed.items[i] for i in keep], rejects,
                  parsed.payload)


def dead_letters(source: str, topic: str, rejects: Sequence[Reject], received: float) -> list[DeadLetter]:
    return [DeadLetter.make(source, topic, r.payload, r.reason, received) for r in rejects]


# -- the edge: one device's points ----------------------------------------------------------------

_FLAG_CACHE: dict[tuple[str, ...], int] = {(): 0}


def _flags(names: list[str]) -> int:
    key = tuple(names)
    bits = _FLAG_CACHE.get(key)
    if bits is None:
        bits = int(QualityFlag.parse(names))
        if len(_FLAG_CACHE) < 4096:  # the names are validated, so the combinations are few anyway
            _FLAG_CACHE[key] = bits
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
        topic_metric = parsed.fields.get("metric")
        for k, r in enumerate(parsed.readings):
            metric = r.metric or topic_metric or r.sensor_type
            i = point_index.get(metric)
            if i is None or r.device_id != device_id:
                if r.device_id != device_id:
                    reason = f"device_id {r.device_id!r} is not device {device_id}"
                else:
                    reason = f"unknown metric {metric!r} for device {device_id}"
                rejects.append(Reject(parsed.where(k) + reason, parsed.raw(k)))
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
    """The parsed readings as stored readings, and each one's nominal (for the grid-code check).

    The topic's ``{substation}`` and ``{metric}`` fill in what a reading leaves out; then
    ``default_substation``, and the ``sensor_type``.
    """
    substation = parsed.fields.get("substation") or default_substation
    metric = parsed.fields.get("metric")
    out = [r.to_reading(substation) for r in parsed.readings]
    if metric is not None:
        replace = msgspec.structs.replace
        out = [o if r.metric is not None else replace(o, metric=metric) for o, r in zip(out, parsed.readings)]
    return out, [r.nominal for r in parsed.readings]
