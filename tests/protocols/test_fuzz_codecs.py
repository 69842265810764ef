"""Property tests for what the edge takes in from outside: Modbus registers, MQTT (and OT log)
payloads, firmware config files.

Whatever comes in, a codec answers with values and quality flags, with rejects whose reason names
the field (dead letters), or with its one documented error (the Modbus codec's ValueError on a
register count, the loader's ConfigError naming file and key); never with another exception.
Expected values come from oracles that do not share the code under test (``struct`` for the wire
layouts, the datetime module for timestamps).
"""

from __future__ import annotations

import json
import math
import re
import struct
import tomllib
import warnings
from datetime import UTC, date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from protocols import otlog
from protocols.config import ConfigError, FirmwareConfig, LocatedError, parse_config
from protocols.modbus.codec import NOT_AVAILABLE, DeviceCodec, encode_values, plan_blocks, registers_to_raw
from protocols.modbus.config import REGISTER_COUNT, ModbusPoint
from protocols.mqtt.codec import (
    MAX_DEAD_LETTER_PAYLOAD,
    Columns,
    DeadLetter,
    DeviceDecoder,
    parse_message,
    to_readings,
)
from protocols.mqtt.config import MqttDevice, MqttPoint, TopicTemplate
from protocols.reading import QualityFlag
from tests.conftest import CONFIGS

INVALID = int(QualityFlag.INVALID)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- Modbus: registers <-> values -------------------------------------------------------------------

TYPES = ["int16", "uint16", "int32", "uint32", "float32", "float64"]
ORDERS = ["big", "little"]
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}


def wire_words(raw: float, data_type: str, byte_order: str, word_order: str) -> list[int]:
    """The registers a device sends for ``raw``, worked out with struct rather than numpy."""
    code = _STRUCT[data_type]
    data = struct.pack(">" + code, int(raw) if code in "hHiI" else raw)
    words = [data[i:i + 2] for i in range(0, len(data), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


def wire_value(words: list[int], data_type: str, byte_order: str, word_order: str) -> float:
    """The raw value of the registers a device sent (the inverse of :func:`wire_words`), by struct."""
    words = list(words)
    if word_order == "little":
        words.reverse()
    data = b"".join(w.to_bytes(2, "big") for w in words)
    if byte_order == "little":
        data = b"".join(data[i:i + 2][::-1] for i in range(0, len(data), 2))
    return float(struct.unpack(">" + _STRUCT[data_type], data)[0])


def raw_values(data_type: str) -> st.SearchStrategy[float]:
    """Any raw value a register of this type can carry (floats: NaN and infinities too)."""
    if data_type == "bool":
        return st.sampled_from([0.0, 1.0])
    if data_type == "float32":
        return st.floats(width=32)
    if data_type == "float64":
        return st.floats()
    info = np.iinfo(np.dtype(data_type))
    return st.integers(int(info.min), int(info.max)).map(float)


_scales = st.one_of(st.sampled_from([1.0, 0.1, 0.001, -1.0, 10.0]),
                    st.floats(-1e6, 1e6, allow_nan=False).filter(lambda s: abs(s) > 1e-9))
_offsets = st.one_of(st.just(0.0), st.floats(-1e6, 1e6, allow_nan=False))


@st.composite
def layouts(draw: st.DrawFn, max_points: int = 10) -> list[ModbusPoint]:
    """A device's points: every register type and data type, byte and word order, with gaps."""
    cursor = {rt: draw(st.integers(0, 2000)) for rt in ("holding", "input", "coil", "discrete")}
    points = []
    for i in range(draw(st.integers(1, max_points))):
        data_type = draw(st.sampled_from([*TYPES, "bool"]))
        rtype = draw(st.sampled_from(["coil", "discrete"] if data_type == "bool" else ["holding", "input"]))
        cursor[rtype] += draw(st.sampled_from([0, 0, 0, 1, 3]))  # mostly contiguous, sometimes a gap
        points.append(ModbusPoint(
            metric=f"p{i}", address=cursor[rtype], register_type=rtype, data_type=data_type,
            byte_order=draw(st.sampled_from(ORDERS)), word_order=draw(st.sampled_from(ORDERS)),
            scale=draw(_scales), offset=draw(_offsets), not_available_marker=draw(st.booleans()),
        ))
        cursor[rtype] += REGISTER_COUNT[data_type]
    return points


def block_registers(points: list[ModbusPoint], blocks: list, image: dict[tuple[str, int], int],
                    filler: int) -> list[list[int]]:
    """What each block read returns from a device whose registers are ``image`` (``filler`` between points)."""
    return [[image.get((b.register_type, a), filler) for a in range(b.start, b.start + b.count)] for b in blocks]


def expected(points: list[ModbusPoint], raws: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Each point's value and flags, one point at a time in plain floats."""
    values, flags = [], []
    for p, raw in zip(points, raws, strict=True):
        if p.not_available_marker and NOT_AVAILABLE.get(p.data_type) == raw:
            values.append(math.nan)
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                values.append(float(np.float64(raw) * p.scale + p.offset))
        flags.append(0 if math.isfinite(values[-1]) else INVALID)
    return np.array(values), np.array(flags)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), data_type=st.sampled_from(TYPES), byte_order=st.sampled_from(ORDERS),
       word_order=st.sampled_from(ORDERS))
def test_every_type_and_order_is_the_documented_wire_layout(data: st.DataObject, data_type: str, byte_order: str,
                                                           word_order: str) -> None:
    raw = data.draw(raw_values(data_type).filter(math.isfinite))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning either
        regs, overflow = encode_values(np.array([raw]), data_type, byte_order, word_order)
    assert regs.dtype == np.uint16 and regs.shape == (1, REGISTER_COUNT[data_type])
    assert regs[0].tolist() == wire_words(raw, data_type, byte_order, word_order)
    assert not overflow[0]
    assert registers_to_raw(regs, data_type, byte_order, word_order)[0] == raw


@settings(max_examples=120, deadline=None)
@given(data=st.data(), points=layouts(), max_block=st.integers(1, 125), max_gap=st.integers(0, 8),
       filler=st.integers(0, 0xFFFF))
def test_a_device_decodes_what_it_was_sent_and_flags_what_is_not_a_number(
        data: st.DataObject, points: list[ModbusPoint], max_block: int, max_gap: int, filler: int) -> None:
    """Round trip through the block planner and the device codec, for any layout and any raw value
    (NaN, infinities and SunSpec's not-available markers included: those, and values that overflow
    once scaled, come back as INVALID; every other point keeps its exact value)."""
    raws = [data.draw(raw_values(p.data_type), label=p.metric) for p in points]
    image: dict[tuple[str, int], int] = {}
    for p, raw in zip(points, raws):
        words = [int(raw)] if p.data_type == "bool" else wire_words(raw, p.data_type, p.byte_order, p.word_order)
        for k, w in enumerate(words):
            image[(p.register_type, p.address + k)] = w
    blocks = plan_blocks(points, max_block, max_gap)
    assert sorted(i for b in blocks for i in b.points) == list(range(len(points)))
    codec = DeviceCodec(points, blocks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values, flags = codec.decode(block_registers(points, blocks, image, filler))
    want_values, want_flags = expected(points, raws)
    assert flags.tolist() == want_flags.tolist()
    ok = want_flags == 0
    assert values[ok].tolist() == want_values[ok].tolist()
    assert not np.isfinite(values[~ok]).any()


@settings(max_examples=120, deadline=None)
@given(data=st.data(), points=layouts())
def test_any_register_words_decode_to_a_value_or_invalid(data: st.DataObject, points: list[ModbusPoint]) -> None:
    blocks = plan_blocks(points)
    codec = DeviceCodec(points, blocks)
    regs = [data.draw(st.lists(st.integers(0, 1) if b.register_type in ("coil", "discrete") else
                               st.integers(0, 0xFFFF), min_size=b.count, max_size=b.count)) for b in blocks]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a signalling NaN or an overflow is flagged, not warned about
        values, flags = codec.decode(regs)
    assert values.dtype == np.float64 and flags.dtype == np.int64 and len(values) == len(points)
    assert set(flags.tolist()) <= {0, INVALID}
    assert ((flags == 0) == np.isfinite(values)).all()
    # each point's value, read straight off the words with struct
    raws = []
    for p in points:
        b = next(b for b in blocks if p.address >= b.start and p.address < b.start + b.count
                 and b.register_type == p.register_type)
        words = regs[blocks.index(b)][p.address - b.start:p.address - b.start + p.count]
        raws.append(float(words[0]) if p.data_type == "bool" else
                    wire_value(words, p.data_type, p.byte_order, p.word_order))
    want_values, want_flags = expected(points, raws)
    assert flags.tolist() == want_flags.tolist()
    assert values[flags == 0].tolist() == want_values[want_flags == 0].tolist()


@FAST
@given(points=layouts(), delta=st.integers(-200, 200).filter(bool), word=st.integers(0, 0xFFFF))
def test_a_wrong_register_count_is_the_codecs_one_error(points: list[ModbusPoint], delta: int, word: int) -> None:
    codec = DeviceCodec(points, plan_blocks(points))
    n = codec.total_registers + delta
    assume(n >= 0)
    with pytest.raises(ValueError, match=rf"^expected {codec.total_registers} registers, got {n}$"):
        codec.decode([[word] * n])


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.floats(), min_size=1, max_size=20), data_type=st.sampled_from(TYPES),
       byte_order=st.sampled_from(ORDERS), word_order=st.sampled_from(ORDERS), scale=_scales, offset=_offsets)
def test_encoding_any_number_never_raises_and_flags_what_it_cannot_send(
        values: list[float], data_type: str, byte_order: str, word_order: str, scale: float, offset: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        regs, overflow = encode_values(np.array(values), data_type, byte_order, word_order, scale, offset)
    assert regs.dtype == np.uint16 and regs.shape == (len(values), REGISTER_COUNT[data_type])
    sent = registers_to_raw(regs, data_type, byte_order, word_order)
    with np.errstate(over="ignore", invalid="ignore"):
        raw = (np.array(values) - offset) / scale
    for v, r, s, o in zip(values, raw.tolist(), sent.tolist(), overflow.tolist()):
        if data_type.startswith("float"):
            with np.errstate(over="ignore"):
                want = float(np.float64(r).astype(data_type))
            assert s == want or (math.isnan(s) and math.isnan(want))
            assert o == (math.isfinite(v) and not math.isfinite(s))
        else:
            info = np.iinfo(np.dtype(data_type))
            fits = math.isfinite(r) and info.min <= np.rint(r) <= info.max
            assert o == (not fits)
            if fits:
                assert s == np.rint(r)
            else:
                assert s in (info.min, info.max, 0.0)


# -- MQTT payloads -----------------------------------------------------------------------------------

TEMPLATE = TopicTemplate("substations/{substation}/{device}/{metric}")
DEVICE = MqttDevice(id="TR-04", host="127.0.0.1", points=[
    MqttPoint(metric="voltage_l1", unit="kV", nominal=11.0),
    MqttPoint(metric="oil_temperature", unit="degC"),
    MqttPoint(metric="frequency", unit="Hz"),
])
METRICS = [p.metric for p in DEVICE.points]
DEVICE_TOPIC = "substations/S1/TR-04"
TOPICS = [f"{DEVICE_TOPIC}/voltage_l1", DEVICE_TOPIC, f"{DEVICE_TOPIC}/no_such_metric", "substations/S1/TR-05",
          f"{DEVICE_TOPIC}/voltage_l1/deeper", "other"]
NOW = 1_800_000_000.0
FIELDS = ["device_id", "sensor_type", "value", "timestamp", "metric", "unit", "quality", "quality_flags",
          "substation", "nominal", "sample_rate_hz", "metadata", "sensor_readings"]


def reading(metric: str = "voltage_l1", value: float | None = 11.02, **kw: Any) -> dict:
    r = {"device_id": "TR-04", "sensor_type": metric.split("_")[0], "metric": metric, "value": value,
         "timestamp": "2026-03-01T10:15:23Z"}
    r.update(kw)
    return r


def enc(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def decode(topic: str, payload: bytes) -> tuple[Columns, list]:
    """Decode as the edge does; every reject must make a storable dead letter."""
    cols = Columns()
    rejects = DeviceDecoder(DEVICE).decode(topic, payload, NOW, cols)
    for r in rejects:
        assert r.reason and r.reason.isprintable(), r  # one line, whatever field names the publisher chose
        letter = DeadLetter.make("TR-04@broker:1883", topic, r.payload, r.reason, NOW)
        assert len(letter.payload.encode("utf-8")) <= 3 * MAX_DEAD_LETTER_PAYLOAD and "\x00" not in letter.payload
        assert msgspec.json.decode(msgspec.json.encode(letter), type=DeadLetter) == letter
    return cols, rejects


def hub_decode(topic: str, payload: bytes) -> None:
    """Decode as the hub does; what it accepts must be storable in UTC."""
    parsed = parse_message(TEMPLATE, topic, payload, NOW)
    readings, _nominals = to_readings(parsed, "UNASSIGNED")
    for r in readings:
        r.ts.astimezone(UTC)
    assert all(r.reason for r in parsed.rejects)


json_leaves = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=12) | st.sampled_from(METRICS + ["TR-04", "2026-03-01T10:15:23Z", "invalid"]))
json_docs = st.recursive(json_leaves, lambda c: st.lists(c, max_size=4) | st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6), c, max_size=8), max_leaves=25)


@settings(max_examples=300, deadline=None)
@given(payload=st.one_of(st.binary(max_size=600), json_docs.map(enc),
                         json_docs.map(lambda d: enc({"sensor_readings": d})),
                         json_docs.map(lambda d: enc({"sensor_readings": [reading(), d]}))),
       topic=st.sampled_from(TOPICS))
def test_any_payload_is_used_or_rejected_with_a_reason(payload: bytes, topic: str) -> None:
    cols, rejects = decode(topic, payload)
    assert len(cols) > 0 or rejects, "a message is either used or rejected with a reason"
    u = cols.update()
    assert set(u.index.tolist()) <= {0, 1, 2}
    assert not np.isinf(u.values).any()  # JSON has no infinity; msgspec refuses 1e999
    hub_decode(topic, payload)


def nest(depth: int, kind: str, core: bytes = b"1") -> bytes:
    return (b"[" * depth + core + b"]" * depth) if kind == "array" else (b'{"a":' * depth + core + b"}" * depth)


def deep_payload(where: str, inner: bytes) -> tuple[str, bytes]:
    """``inner`` placed in one part of a message; batches carry a good reading beside it."""
    good = enc(reading("frequency", 49.9))
    meta = enc(reading())[:-1] + b',"metadata":{"deep":' + inner + b"}}"
    return {
        "bare": (f"{DEVICE_TOPIC}/voltage_l1", inner),
        "value": (f"{DEVICE_TOPIC}/voltage_l1", enc(reading())[:-1] + b',"unit":' + inner + b"}"),
        "metadata": (f"{DEVICE_TOPIC}/voltage_l1", meta),
        "batch_item": (DEVICE_TOPIC, b'{"sensor_readings":[' + good + b"," + inner + b"]}"),
        "batch_metadata": (DEVICE_TOPIC, b'{"sensor_readings":[' + good + b"," + meta + b"]}"),
        "envelope": (DEVICE_TOPIC, b'{"sensor_readings":[' + good + b'],"x":' + inner + b"}"),
    }[where]


WHERE = ["bare", "value", "metadata", "batch_item", "batch_metadata", "envelope"]
TOO_DEEP = "invalid JSON: nested too deeply to decode"
DEEP_REASONS = {  # where the nesting fails a type check first, that is the reason
    "bare": {"array": "payload: Expected `float | null`, got `array`", "object": "a: unknown field"},
    "value": {"array": "unit: Expected `str`, got `array`", "object": "unit: Expected `str`, got `object`"},
    "envelope": {"array": "x: unknown field", "object": "x: unknown field"},
}


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("where", WHERE)
def test_a_hundred_thousand_levels_of_nesting_are_a_dead_letter(where: str, kind: str) -> None:
    topic, payload = deep_payload(where, nest(100_000, kind))
    cols, rejects = decode(topic, payload)
    assert len(cols) == 0
    assert [r.reason[:len(DEEP_REASONS.get(where, {}).get(kind, TOO_DEEP))] for r in rejects] == [
        DEEP_REASONS.get(where, {}).get(kind, TOO_DEEP)]
    hub_decode(topic, payload)
    assert len(otlog.decode(payload).errors) == 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(1, 3000), kind=st.sampled_from(["array", "object"]), where=st.sampled_from(WHERE))
def test_nesting_at_any_depth_is_used_or_rejected_and_the_good_reading_beside_it_kept_when_it_can_be(
        depth: int, kind: str, where: str) -> None:
    topic, payload = deep_payload(where, nest(depth, kind))
    cols, rejects = decode(topic, payload)
    u = cols.update()
    if where.startswith("batch") and not any("nested too deeply" in r.reason for r in rejects):
        assert 49.9 in u.values.tolist()  # the bad item alone is rejected
    assert len(cols) > 0 or rejects
    hub_decode(topic, payload)
    otlog.decode(payload)


def test_huge_payloads_are_rejected_or_read_whole() -> None:
    rng = np.random.default_rng(7)
    five_mb = 5 * 1024 * 1024
    good = [reading("frequency", float(i)) for i in range(45_000)]  # about 5 MB of good readings
    batch = enc({"sensor_readings": good})
    assert len(batch) > 4_500_000
    cols, rejects = decode(DEVICE_TOPIC, batch)
    assert rejects == [] and cols.update().values.tolist() == [float(i) for i in range(45_000)]
    for payload in (rng.integers(0, 256, five_mb, dtype=np.uint8).tobytes(), b'"' + b"x" * five_mb + b'"',
                    b"[" + b"1," * (five_mb // 2) + b"1]", b"9" * five_mb,
                    enc(reading(unit="k" * five_mb)),
                    enc({"sensor_readings": [*good[:10], reading(metric="m" * five_mb)]})):
        cols, rejects = decode(f"{DEVICE_TOPIC}/voltage_l1", payload)
        assert rejects and all(len(r.reason) < 1000 for r in rejects)
        assert len(cols) in (0, 10)  # the ten good readings of the last batch are kept


WRONG = {
    "device_id": [None, 4, True, [], {}, "", "d" * 129],
    "sensor_type": [None, 1.5, [], "", "s" * 65],
    "value": ["11.02", True, [], {"v": 1}, "NaN"],
    "timestamp": [None, 1_772_360_123, 1.5e9, "noon", "2026-03-01T10:15:23", "2026-02-30T00:00:00Z", True, []],
    "metric": [5, "", "m" * 65, []],
    "unit": [5, "u" * 17, {}],
    "quality": [-0.1, 1.5, "good", []],
    "quality_flags": ["invalid", ["nope"], [1], {}],
    "substation": [5, "", []],
    "nominal": [0, -1.0, "11", []],
    "sample_rate_hz": [0, -5, "fast"],
    "metadata": [[1], "x", 3],
}


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(sorted(WRONG)), data=st.data(), metric=st.sampled_from(METRICS),
       value=st.floats(-1e9, 1e9, allow_nan=False) | st.none(), batch=st.booleans())
def test_a_wrong_type_in_any_field_rejects_that_reading_naming_the_field(
        field: str, data: st.DataObject, metric: str, value: float | None, batch: bool) -> None:
    bad = {**reading(metric, 1.0), field: data.draw(st.sampled_from(WRONG[field]))}

    def named(reason: str) -> str:  # "quality_flags[0]: Invalid enum value" names quality_flags
        return re.sub(r"\[\d+\]$", "", reason.split(":")[0])

    if batch:
        payload = enc({"sensor_readings": [reading("frequency", value), bad, reading(metric, value)]})
        cols, rejects = decode(DEVICE_TOPIC, payload)
        assert [named(r.reason) for r in rejects] == [f"sensor_readings[1].{field}"], rejects
        np.testing.assert_array_equal(cols.update().values, [math.nan if value is None else value] * 2)
    else:
        cols, rejects = decode(f"{DEVICE_TOPIC}/{metric}", enc(bad))
        assert len(cols) == 0
        assert [named(r.reason) for r in rejects] == [field], rejects


offsets = st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@settings(max_examples=300, deadline=None)
@given(when=st.one_of(st.datetimes(timezones=offsets),
                      st.datetimes(max_value=datetime(1, 1, 2), timezones=offsets),
                      st.datetimes(min_value=datetime(9999, 12, 30), timezones=offsets)),
       batch=st.booleans())
def test_a_timestamp_is_read_exactly_or_refused_when_it_has_no_utc_time(when: datetime, batch: bool) -> None:
    r = reading(timestamp=when.isoformat())
    payload = enc({"sensor_readings": [reading("frequency", 50.0), r]}) if batch else enc(r)
    cols, rejects = decode(DEVICE_TOPIC if batch else f"{DEVICE_TOPIC}/voltage_l1", payload)
    try:  # the oracle: the edge keeps epoch seconds and turns them back into UTC datetimes
        utc = datetime.fromtimestamp(when.timestamp(), UTC)
    except (OverflowError, ValueError, OSError):
        utc = None
    u = cols.update()
    if utc is None:
        assert [x.reason.split(" ")[0] for x in rejects] == ["sensor_readings[1].timestamp:" if batch
                                                             else "timestamp:"]
        assert "out of range in UTC" in rejects[0].reason
        assert u.index.tolist() == ([2] if batch else [])
    else:
        assert rejects == []
        assert u.ts[-1] == when.timestamp()
        assert abs((utc - when).total_seconds()) < 1e-4
    hub_decode(DEVICE_TOPIC, payload)


@settings(max_examples=150, deadline=None)
@given(payload=st.one_of(st.binary(max_size=300), json_docs.map(enc), json_docs.map(lambda d: enc({"events": d})),
                         st.datetimes(timezones=offsets).map(lambda t: enc({
                             "ts": t.isoformat(), "kind": "auth", "substation": "S1", "device_id": "RTU-1",
                             "result": "success", "action": "login"}))))
def test_ot_log_payloads_are_entries_or_errors(payload: bytes) -> None:
    decoded = otlog.decode(payload)
    for e in decoded.errors:  # as the edge and the hub keep them
        assert DeadLetter.make("ot-logs@broker:1883", "scada/logs", payload, f"OT log: {e}", NOW).reason.isprintable()
    if not (decoded.events or decoded.errors):  # only an empty list of entries is nothing to say
        assert msgspec.json.decode(payload) in ([], {"events": []})
    assert all(str(e) for e in decoded.errors)
    for event in decoded.events:
        assert event.ts.utcoffset() in (None, timedelta(0))


# -- the config loader -------------------------------------------------------------------------------

SAMPLES = sorted(CONFIGS.glob("*.toml"))
BASES = {p.name: tomllib.loads(p.read_text()) for p in SAMPLES}
TOP_KEYS = set(FirmwareConfig.__struct_fields__)


def toml_string(s: str) -> str:
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML escapes DEL too


def toml_value(v: Any) -> str:
    """One TOML value, inline (tables as inline tables, arrays of tables as arrays of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_document(doc: dict) -> str:
    return "".join(f"{toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


def key_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def all_paths(node: Any, path: tuple = ()) -> list[tuple]:
    paths = [path] if path else []
    if isinstance(node, dict):
        for k, v in node.items():
            paths += all_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            paths += all_paths(v, (*path, i))
    return paths


def finite_floats(node: Any) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, dict):
        return all(finite_floats(v) for v in node.values())
    if isinstance(node, list | tuple):
        return all(finite_floats(v) for v in node)
    return True


toml_leaves = st.one_of(
    st.booleans(), st.integers(-(2**63), 2**63 - 1), st.integers(-5, 70_000), st.floats(),
    st.sampled_from([0.0, -0.0, 0.5, 1e308, math.nan, math.inf, -math.inf]),
    st.text(max_size=20), st.sampled_from(["", "modbus_tcp", "mqtt", "opcua", "modbus_rtu", "float32", "holding",
                                           "little", "BUS-220", "voltage_l1", "http://hub", "${X}"]),
    st.datetimes(timezones=st.none() | offsets), st.dates(), st.times(),
)
toml_values = st.recursive(toml_leaves, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["id", "protocol", "points", "metric", "address", "scale"]), c,
    max_size=4), max_leaves=8)


@st.composite
def mutated_configs(draw: st.DrawFn) -> tuple[str, str, tuple, str]:
    """A sample config with one change: a value replaced (by anything, or by another of its type), a
    key removed, an unknown key added, or a device switched to another protocol. Returns (op, TOML
    text, path changed, key added)."""
    doc = json.loads(json.dumps(BASES[draw(st.sampled_from(sorted(BASES)))]))  # a deep copy, all plain types
    path = draw(st.sampled_from(all_paths(doc)))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    op = draw(st.sampled_from(["replace", "nudge", "nudge", "delete", "add", "retag"]))
    added = ""
    old = parent[path[-1]]
    if op == "nudge" and isinstance(old, bool | int | float | str):
        parent[path[-1]] = draw({bool: st.booleans(), int: st.integers(-(2**63), 2**63 - 1) | st.integers(-5, 70_000),
                                 float: st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0]),
                                 str: st.text(max_size=30)}[type(old)])
    elif op in ("replace", "nudge"):
        op = "replace"
        parent[path[-1]] = draw(toml_values)
    elif op == "delete":
        del parent[path[-1]]
    elif op == "add":  # to a table: the root, or one found at or above the drawn path
        while path and not isinstance(parent[path[-1]], dict):
            path = path[:-1]
            parent = doc
            for part in path[:-1]:
                parent = parent[part]
        node = parent[path[-1]] if path else doc
        added = draw(st.sampled_from(["colour", "baud", "ip", "Id", "points_"]))
        assume(added not in node)
        node[added] = draw(toml_leaves)
    else:
        devices = doc["devices"]
        i = draw(st.integers(0, len(devices) - 1))
        devices[i]["protocol"] = draw(st.sampled_from(["modbus_tcp", "modbus_rtu", "opcua", "mqtt", "dnp3", ""]))
        path = ("devices", i, "protocol")
    return op, toml_document(doc), path, added


def check_config_error(err: LocatedError, source: str, text: str) -> None:
    """One line naming the file, then the key path (or a message that names the key)."""
    msg = str(err)
    assert msg.startswith(f"{source}: ") and "\n" not in msg, msg
    if err.message.startswith("not valid TOML"):
        return
    if err.path:
        head = re.split(r"[.\[]", err.path, maxsplit=1)[0]
        assert head in TOP_KEYS or f'"{head}"' in text or f"{head} =" in text or f"[{head}" in text, msg
    else:
        assert "`" in err.message or re.match(r"^[a-z_]+(\[\d+\])?\.", err.message), msg


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=mutated_configs())
def test_a_mutated_sample_config_loads_or_names_the_key(case: tuple[str, str, tuple, str]) -> None:
    op, text, path, added = case
    try:
        cfg = parse_config(text, "site.toml")
    except ConfigError as err:
        event(f"{op}: refused")
        check_config_error(err, "site.toml", text)
        changed = key_path(path)
        if op == "add":
            assert (err.path, err.message) == (key_path((*path, added)), "unknown key"), str(err)
        elif op == "nudge" and isinstance(path[-1], str) and err.path != key_path(path):
            # a value of the right type: refused by a check across the fields of a table above it
            assert key_path(path).startswith(err.path), (str(err), key_path(path))
        elif not err.message.startswith("not valid TOML"):
            parent = key_path(path[:-1])
            assert changed.startswith(err.path) or err.path.startswith(parent), (str(err), changed)
        return
    event(f"{op}: loaded")
    assert op != "add"
    assert finite_floats(msgspec.to_builtins(cfg)), "a config that loads carries no NaN or infinity"


TOML_BITS = ["[", "]", "[[", "]]", "{", "}", "=", ",", '"', "'", "\n", ".", "nan", "inf", "-", "+", "0x", "1e999",
             "true", "devices", "points", "1979-05-27T07:32:00Z", "\\u0000", "\\", "#", " ", "\x00", "\ud800"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(BASES)), data=st.data())
def test_damaged_config_text_is_a_config_error_or_a_config(name: str, data: st.DataObject) -> None:
    text = (CONFIGS / name).read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 40))
        insert = "".join(data.draw(st.lists(st.sampled_from(TOML_BITS) | st.text(max_size=3), max_size=4)))
        text = text[:at] + insert + text[at + cut:]
    try:
        cfg = parse_config(text, "site.toml")
    except ConfigError as err:
        event("refused: " + ("TOML" if err.message.startswith("not valid TOML") else "schema"))
        check_config_error(err, "site.toml", text)
    else:
        event("loaded")
        assert finite_floats(msgspec.to_builtins(cfg))


@pytest.mark.parametrize("nested", [
    "x = " + "[" * 100_000 + "]" * 100_000,
    "x = " + "{a = " * 100_000 + "1" + "}" * 100_000,
    "x = [" + "{a = [" * 50_000 + "]}" * 50_000 + "]",
])
def test_nesting_a_config_deeply_is_a_config_error(nested: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(nested, "site.toml")
    assert str(info.value) == "site.toml: not valid TOML: arrays or inline tables nested too deeply"


def _point_float_keys() -> list[tuple[str, int, int, str]]:
    cases = []
    for name, doc in BASES.items():
        for i, dev in enumerate(doc["devices"]):
            keys = ["nominal", "limit_low", "limit_high"]
            keys += ["scale", "offset"] if dev["protocol"] != "mqtt" else []
            cases += [(name, i, 0, k) for k in keys]
    return cases


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
@pytest.mark.parametrize(("name", "device", "point", "key"), _point_float_keys())
def test_nan_and_infinity_are_refused_where_a_number_is_meant(name: str, device: int, point: int, key: str,
                                                              bad: str) -> None:
    doc = json.loads(json.dumps(BASES[name]))
    p = doc["devices"][device]["points"][point]
    p.pop("limit_low", None), p.pop("limit_high", None)
    p[key] = float(bad)
    with pytest.raises(ConfigError) as info:
        parse_config(toml_document(doc), "site.toml")
    where = f"devices[{device}].points[{point}]"
    if info.value.path == f"{where}.{key}":  # a bound checked by the type (nominal > 0) caught it first
        assert info.value.message.startswith("Expected `float` >")
    else:
        assert (info.value.path, info.value.message) == (where, f"{key} = {float(bad)} is not a finite number")


@pytest.mark.parametrize("key", ["frequency_min_hz", "frequency_max_hz", "frequency_critical_min_hz",
                                 "frequency_critical_max_hz"])
def test_open_ended_frequency_bands_are_refused(key: str) -> None:
    doc = json.loads(json.dumps(BASES["nairobi-s1.toml"]))
    doc["limits"] = {"frequency_critical_min_hz": -math.inf, "frequency_min_hz": -math.inf,
                     "frequency_max_hz": math.inf, "frequency_critical_max_hz": math.inf}
    with pytest.raises(ConfigError, match=r"^site.toml: limits: frequency_\w+ = -?inf is not a finite number$"):
        parse_config(toml_document(doc), "site.toml")
    doc["limits"] = {key: math.nan}
    with pytest.raises(ConfigError, match=r"^site.toml: limits: "):
        parse_config(toml_document(doc), "site.toml")


def test_the_sample_configs_survive_the_toml_writer_used_here() -> None:
    """The mutations above start from the samples as this file writes them: they must load as they are."""
    for name, doc in BASES.items():
        assert parse_config(toml_document(doc), name) == parse_config((CONFIGS / name).read_text(), name)
    assert Path(CONFIGS).is_dir() and len(BASES) >= 3
