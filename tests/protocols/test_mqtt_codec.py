"""protocols/mqtt/codec.py and the topic templates: pure parsing, no broker."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime

import jsonschema
import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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
from protocols.telemetry import schema
from simulator.mqtt_publisher import CORRUPTIONS, MqttPublisher

TEMPLATE = TopicTemplate("substations/{substation}/{device}/{metric}")
DEVICE = MqttDevice(id="TR-04", host="127.0.0.1", points=[
    MqttPoint(metric="voltage_l1", unit="kV", nominal=11.0),
    MqttPoint(metric="oil_temperature", unit="degC"),
    MqttPoint(metric="frequency", unit="Hz"),
])
T0 = "2026-03-01T10:15:23Z"
T0_S = datetime(2026, 3, 1, 10, 15, 23, tzinfo=UTC).timestamp()
NOW = 1_800_000_000.0


def reading(**kw: object) -> dict:
    r: dict = {"device_id": "TR-04", "sensor_type": "voltage", "metric": "voltage_l1", "value": 11.02,
               "timestamp": T0}
    r.update(kw)
    return {k: v for k, v in r.items() if v is not ...}


def enc(obj: object) -> bytes:
    return msgspec.json.encode(obj)


def decode(topic: str, payload: bytes) -> tuple[Columns, list]:
    cols = Columns()
    rejects = DeviceDecoder(DEVICE).decode(topic, payload, NOW, cols)
    return cols, rejects


# -- topic templates ---------------------------------------------------------------------------------


def test_template_matches_filters_and_renders() -> None:
    assert TEMPLATE.match("substations/S1/TR-04/voltage_l1") == {"substation": "S1", "device": "TR-04",
                                                                "metric": "voltage_l1"}
    assert TEMPLATE.match("substations/S1/TR-04") == {"substation": "S1", "device": "TR-04"}  # device level
    for other in ("substations/S1", "substations/S1/TR-04/a/b", "stations/S1/TR-04/x", "substations//TR-04/x"):
        assert TEMPLATE.match(other) is None, other
    assert TEMPLATE.filter(device="TR-04") == "substations/+/TR-04/#"
    assert TEMPLATE.filter() == "substations/+/+/#"
    assert TopicTemplate("plant/{device}/{metric}/value").filter() == "plant/+/+/value"
    assert TEMPLATE.render(substation="S1", device="D", metric="m") == "substations/S1/D/m"
    assert TEMPLATE.render(substation="S1", device="D") == "substations/S1/D"
    assert DEVICE.subscription() == "substations/+/TR-04/#"


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("a/{x}", "unknown placeholder {x}"),
        ("a/b{device}", "must be a whole level"),
        ("a/{device}/{device}", "{device} appears twice"),
        ("a/+/{device}", "not the wildcards"),
        ("a/#", "not the wildcards"),
        ("a/{dev", "unbalanced brace"),
        ("$SYS/{device}", "broker's own"),
    ],
)
def test_bad_templates_say_what_is_wrong(text: str, what: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        TopicTemplate(text)
    assert what in str(info.value)


# -- the three payload forms ---------------------------------------------------------------------------


def test_one_reading() -> None:
    cols, rejects = decode("substations/S1/TR-04/voltage_l1", enc(reading(quality_flags=["stale"])))
    assert rejects == []
    u = cols.update()
    assert u.ts.tolist() == [T0_S] and u.index.tolist() == [0] and u.values.tolist() == [11.02]
    assert u.flags.tolist() == [int(QualityFlag.STALE)]


def test_bare_number_takes_metric_and_device_from_the_topic_and_time_of_receipt() -> None:
    cols, rejects = decode("substations/S1/TR-04/oil_temperature", b" 65.5\n")
    assert rejects == []
    u = cols.update()
    assert (u.ts.tolist(), u.index.tolist(), u.values.tolist()) == ([NOW], [1], [65.5])
    cols, rejects = decode("substations/S1/TR-04/oil_temperature", b"null")
    assert rejects == [] and math.isnan(cols.update().values[0])


def test_batch_on_the_device_topic() -> None:
    body = {"sensor_readings": [reading(), reading(metric="frequency", sensor_type="frequency", value=49.98),
                                reading(metric=..., sensor_type="oil_temperature", value=66.0)]}
    cols, rejects = decode("substations/S1/TR-04", enc(body))
    assert rejects == []
    u = cols.update()
    assert u.index.tolist() == [0, 2, 1] and u.values.tolist() == [11.02, 49.98, 66.0]


def test_a_bad_reading_in_a_batch_does_not_hold_up_the_good_ones() -> None:
    body = {"sensor_readings": [reading(value=1.0), reading(value="11.2"), reading(value=3.0),
                                reading(device_id=...), reading(metric="foo", sensor_type="foo"),
                                reading(colour="red"), reading(value=5.0)]}
    cols, rejects = decode("substations/S1/TR-04", enc(body))
    assert cols.update().values.tolist() == [1.0, 3.0, 5.0]
    assert [r.reason for r in rejects] == [
        "sensor_readings[1].value: Expected `float | null`, got `str`",
        "sensor_readings[3].device_id: missing required field",
        "sensor_readings[5].colour: unknown field",
        "sensor_readings[4]: unknown metric 'foo' for device TR-04",
    ]
    # each reject carries the reading it is about, as it came
    assert msgspec.json.decode(rejects[0].payload)["value"] == "11.2"
    assert msgspec.json.decode(rejects[3].payload)["metric"] == "foo"


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("substations/S1/TR-04/voltage_l1", b'{"device_id": "TR-04", "val', "invalid JSON: "),
        ("substations/S1/TR-04/voltage_l1", b"", "empty payload"),
        ("substations/S1/TR-04/voltage_l1", b'"11.2"', "payload: Expected `float | null`, got `str`"),
        ("substations/S1/TR-04/voltage_l1", b"true", "payload: Expected `float | null`, got `bool`"),
        ("substations/S1/TR-04/voltage_l1", enc(reading(value="x")), "value: Expected `float | null`, got `str`"),
        ("substations/S1/TR-04/voltage_l1", enc(reading(timestamp="2026-03-01T10:15:23")),
         "timestamp: Expected `datetime` with a timezone component"),
        ("substations/S1/TR-04/voltage_l1", enc(reading(quality=1.5)), "quality: Expected `float` <= 1.0"),
        ("substations/S1/TR-04/voltage_l1", enc(reading(quality_flags=["sparkly"])),
         "quality_flags[0]: Invalid enum value 'sparkly'"),
        ("substations/S1/TR-04/foo", b"1.0", "unknown metric 'foo' for device TR-04"),
        ("substations/S1/TR-04", b"1.0", "a bare value needs a topic that names the metric"),
        ("substations/S1/TR-04/voltage_l1", enc(reading(device_id="TR-05")),
         "device_id 'TR-05' does not match the topic's device 'TR-04'"),
        ("substations/S1/TR-04", enc(reading(device_id="TR-05")), "device_id 'TR-05' does not match"),
        ("substations/S1/TR-04/voltage_l1", enc(reading(metric="voltage_l2")),
         "metric 'voltage_l2' does not match the topic's metric 'voltage_l1'"),
        ("substations/S1/TR-04/voltage_l1", enc(reading(substation="S2")),
         "substation 'S2' does not match the topic's substation 'S1'"),
        ("substations/S1/TR-04/voltage_l1/x", b"1", "topic substations/S1/TR-04/voltage_l1/x does not match "
         "template substations/{substation}/{device}/{metric}"),
        ("substations/S1/TR-04", b'{"sensor_readings": []}', "sensor_readings: Expected `array` of length >= 1"),
        ("substations/S1/TR-04", b'{"sensor_readings": {}}', "sensor_readings: Expected `array`, got `object`"),
        ("substations/S1/TR-04", b'{"sensor_readings": [1]}', "sensor_readings[0]: Expected `object`, got `int`"),
        ("substations/S1/TR-04", b'{"sensor_readings": [], "x": 1}', "sensor_readings: Expected `array` of length"),
        ("substations/S1/TR-04", b"[1, 2]", "payload: Expected `float | null`, got `array`"),
    ],
)
def test_rejects_name_what_is_wrong(topic: str, payload: bytes, reason: str) -> None:
    cols, rejects = decode(topic, payload)
    assert len(cols) == 0
    assert len(rejects) == 1
    assert rejects[0].reason.startswith(reason), rejects[0].reason


def test_topic_levels_fill_in_what_a_reading_leaves_out() -> None:
    parsed = parse_message(TEMPLATE, "substations/S1/TR-04/voltage_l1",
                           enc(reading(metric=..., sensor_type="voltage")), NOW)
    assert parsed.rejects == []
    (r,) = parsed.readings
    assert parsed.metric(r) == "voltage_l1"
    (stored,), _ = to_readings(parsed, "UNASSIGNED")
    assert (stored.metric, stored.substation) == ("voltage_l1", "S1")
    cols, rejects = decode("substations/S1/TR-04/voltage_l1", enc(reading(metric=..., sensor_type="voltage")))
    assert rejects == [] and cols.update().index.tolist() == [0]


# -- the hub's side -----------------------------------------------------------------------------------


def test_hub_readings_keep_device_substation_quality_and_nominal() -> None:
    body = {"sensor_readings": [reading(quality=0.8, nominal=11.0, unit="kV"),
                                reading(device_id="FEEDER-F12", sensor_type="voltage", metric=..., value=218.5)]}
    parsed = parse_message(TopicTemplate("utility/telemetry"), "utility/telemetry", enc(body), NOW)
    readings, nominals = to_readings(parsed, "UNASSIGNED")
    assert [(r.device_id, r.metric, r.value, r.quality, r.substation) for r in readings] == [
        ("TR-04", "voltage_l1", 11.02, 0.8, "UNASSIGNED"), ("FEEDER-F12", "voltage", 218.5, 1.0, "UNASSIGNED")]
    assert nominals == [11.0, None]
    bare = parse_message(TEMPLATE, "substations/S9/FEEDER-F12/voltage", b"207.0", NOW)
    (r,), _ = to_readings(bare, "UNASSIGNED")
    assert (r.device_id, r.metric, r.substation, r.value, r.ts.timestamp()) == ("FEEDER-F12", "voltage", "S9",
                                                                               207.0, NOW)


def test_a_bare_value_needs_a_device_at_the_hub() -> None:
    parsed = parse_message(TopicTemplate("telemetry/{metric}"), "telemetry/voltage", b"1", NOW)
    assert parsed.rejects[0].reason == ("a bare value needs a topic that names the device, and topic "
                                        "telemetry/voltage has no {device} level")


# -- dead letters ---------------------------------------------------------------------------------------


def test_dead_letters_keep_64_kib_of_text_without_nul() -> None:
    big = b"\x00\xff" + b"x" * (2 * MAX_DEAD_LETTER_PAYLOAD)
    d = DeadLetter.make("TR-04@broker:1883", "a/b", big, "invalid JSON", NOW)
    assert d.ts == datetime.fromtimestamp(NOW, UTC)
    assert len(d.payload.encode("utf-8", "replace")) <= MAX_DEAD_LETTER_PAYLOAD + 8
    assert "\x00" not in d.payload and d.payload.startswith("\ufffd\ufffd")
    assert msgspec.json.decode(msgspec.json.encode(d), type=DeadLetter) == d


# -- properties ------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(payload=st.one_of(st.binary(max_size=200),
                         st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=8),
                                      lambda c: st.lists(c, max_size=4) | st.dictionaries(
                                          st.sampled_from(["device_id", "sensor_type", "value", "timestamp",
                                                           "sensor_readings", "metric", "quality", "x"]), c,
                                          max_size=6), max_leaves=12).map(msgspec.json.encode)),
       topic=st.sampled_from(["substations/S1/TR-04/voltage_l1", "substations/S1/TR-04", "other"]))
def test_no_payload_crashes_the_decoder_and_everything_is_accounted_for(payload: bytes, topic: str) -> None:
    cols, rejects = decode(topic, payload)  # never raises
    assert len(cols) > 0 or rejects, "a message is either used or rejected with a reason"
    assert all(r.reason for r in rejects)


VALIDATOR = jsonschema.Draft202012Validator(schema())
_values = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False, width=64))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["voltage_l1", "oil_temperature", "frequency"]), _values,
                               st.integers(0, 2_000_000_000),
                               st.lists(st.sampled_from(["invalid", "stale", "overflow", "substituted",
                                                         "comm_lost", "clock_unsync"]), unique=True)),
                     min_size=1, max_size=50))
def test_valid_batches_arrive_exactly(rows: list) -> None:
    body = {"sensor_readings": [
        reading(metric=m, sensor_type=m, value=v, quality_flags=f,
                timestamp=datetime.fromtimestamp(ts, UTC).isoformat()) for m, v, ts, f in rows]}
    for r in body["sensor_readings"]:
        VALIDATOR.validate(r)  # what we send is the published schema
    cols, rejects = decode("substations/S1/TR-04", enc(body))
    assert rejects == []
    u = cols.update()
    index = {"voltage_l1": 0, "oil_temperature": 1, "frequency": 2}
    assert u.index.tolist() == [index[m] for m, *_ in rows]
    assert u.ts.tolist() == [float(ts) for _, _, ts, _ in rows]
    np.testing.assert_array_equal(u.values, np.array([np.nan if v is None else v for _, v, _, _ in rows]))
    assert u.flags.tolist() == [QualityFlag.parse(f) for *_, f in rows]


# -- the simulator's payloads are what the codec reads --------------------------------------------------


@pytest.mark.parametrize("form", ["single", "bare", "batch"])
def test_the_simulated_device_publishes_what_the_edge_reads(form: str) -> None:
    values = {"voltage_l1": 11.05, "oil_temperature": None, "frequency": 50.01}
    pub = MqttPublisher(DEVICE, substation="S1", values=lambda t: values, form=form)  # type: ignore[arg-type]
    cols = Columns()
    dec = DeviceDecoder(DEVICE)
    now = time.time()
    for topic, payload in pub.messages(0.0, ts=now):
        assert dec.decode(topic, payload, now, cols) == []
    u = cols.update()
    assert u.index.tolist() == [0, 1, 2]
    np.testing.assert_allclose(u.ts, now, atol=1e-5)
    assert u.values[0] == 11.05 and math.isnan(u.values[1]) and u.values[2] == 50.01
    if form != "bare":
        assert u.flags[1] == QualityFlag.COMM_LOST
    for kind in CORRUPTIONS:
        topic, payload = pub.corrupt(kind)  # type: ignore[arg-type]
        assert len(dec.decode(topic, payload, now, Columns())) == 1, kind
