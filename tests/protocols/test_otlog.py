from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import msgspec
import pytest

from protocols.otlog import OtLogError, OtLogEvent, decode, schema

AUTH = {"ts": "2026-03-01T13:15:23+03:00", "kind": "auth", "substation": "MOMBASA", "device_id": "RTU-MOM01",
        "result": "failure", "source": "192.168.1.57", "user": "admin", "action": "login", "method": "password",
        "session_id": "s-1", "event_id": "4711", "detail": "bad password"}
COMMAND = {"ts": "2026-03-01T10:15:24Z", "kind": "command", "substation": "MOMBASA", "device_id": "RTU-MOM01",
           "result": "success", "source": "10.1.0.5", "user": "operator1", "command": "setpoint_write",
           "point": "AVR.Vref", "value": 132.5, "unit": "kV", "protocol": "dnp3", "master": "SCADA-1"}
CHANGE = {"ts": "2026-03-01T10:16:00.250Z", "kind": "config_change", "substation": "MOMBASA", "device_id": "IED-F12",
          "result": "success", "user": "engineer", "parameter": "protection.overcurrent.pickup_a",
          "old_value": "400", "new_value": "800", "detail": "CHG-1234"}

GOOD = [
    AUTH,
    COMMAND,
    CHANGE,
    {**AUTH, "action": "logout", "result": "success"},
    {**AUTH, "source": "fe80::1"},
    {**AUTH, "source": "::ffff:192.168.1.57"},
    {**AUTH, "source": None, "method": "local_console"},  # null is the same as absent
    {k: v for k, v in AUTH.items() if k not in {"source", "user", "session_id", "event_id", "detail", "method"}},
    {**COMMAND, "command": "breaker_open", "point": "CB-12", "value": None},
    {**COMMAND, "command": "tap_raise", "value": 3, "protocol": "iec104"},
    {**COMMAND, "ts": "2026-03-01t10:15:24.123456789z"},
    {**CHANGE, "old_value": None, "detail": ""},
]

BAD = [
    ({k: v for k, v in AUTH.items() if k != "ts"}, "ts", "missing required field"),
    ({k: v for k, v in AUTH.items() if k != "substation"}, "substation", "missing required field"),
    ({**AUTH, "ts": "2026-03-01T10:15:23"}, "ts", None),  # no offset
    ({**AUTH, "ts": "2026-03-01 10:15:23Z"}, "ts", None),  # a space for the T
    ({**AUTH, "ts": "2026-03-01T10:15:23+0300"}, "ts", None),  # offset without its colon
    ({**AUTH, "ts": "2026-02-30T10:15:23Z"}, "ts", None),
    ({**AUTH, "source": "10.0.0.300"}, "source", "not an IPv4 or IPv6 address: '10.0.0.300'"),
    ({**AUTH, "source": "010.0.0.1"}, "source", None),
    ({**AUTH, "source": "fe80::1%eth0"}, "source", None),
    ({**AUTH, "source": "rtu.example"}, "source", None),
    ({**AUTH, "kind": "firmware"}, "kind", None),
    ({**AUTH, "result": "ok"}, "result", None),
    ({k: v for k, v in AUTH.items() if k != "action"}, "action", "missing required field for an auth event"),
    ({**AUTH, "command": "reset"}, "command", "not a field of an auth event (it belongs to command)"),
    ({**AUTH, "colour": "red"}, "colour", "unknown field"),
    ({k: v for k, v in COMMAND.items() if k != "point"}, "point", "missing required field for a command event"),
    ({**COMMAND, "value": None}, "value", "missing required field for a setpoint_write command"),
    ({**COMMAND, "value": "132.5"}, "value", None),
    ({**COMMAND, "value": True}, "value", None),
    ({**COMMAND, "command": "self_destruct"}, "command", None),
    ({**COMMAND, "protocol": "smoke_signals"}, "protocol", None),
    ({**COMMAND, "method": "password"}, "method", None),
    ({**CHANGE, "parameter": None}, "parameter", None),
    ({**CHANGE, "old_value": 400}, "old_value", None),
    ({**CHANGE, "point": "CB-1"}, "point", None),
    ({**AUTH, "device_id": ""}, "device_id", None),
    ({**AUTH, "detail": "x" * 4097}, "detail", None),
]


def _valid(instance: dict) -> bool:
    try:
        jsonschema.validate(instance, schema(), format_checker=jsonschema.FormatChecker())
    except jsonschema.ValidationError:
        return False
    return True


def test_schema_is_valid_draft_2020_12_and_documented() -> None:
    s = schema()
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    undocumented = [name for name, p in s["properties"].items() if not p.get("description")]
    assert undocumented == []
    assert set(s["properties"]) == set(OtLogEvent.__struct_fields__)


@pytest.mark.parametrize("good", GOOD)
def test_schema_and_decoder_accept_the_same_entries(good: dict) -> None:
    assert _valid(good)
    decoded = decode(json.dumps(good))
    assert decoded.errors == [] and len(decoded.events) == 1


@pytest.mark.parametrize(("bad", "field", "message"), BAD)
def test_schema_and_decoder_refuse_the_same_entries_naming_the_field(bad: dict, field: str, message: str | None) -> None:
    assert not _valid(bad)
    decoded = decode(json.dumps(bad))
    assert decoded.events == []
    [error] = decoded.errors
    assert (error.index, error.field) == (None, field)
    if message is not None:
        assert error.message == message


def test_one_entry_is_decoded_with_its_time_in_utc() -> None:
    [event] = decode(json.dumps(AUTH).encode()).events
    assert event.ts == datetime(2026, 3, 1, 10, 15, 23, tzinfo=UTC)
    assert event.ts.utcoffset().total_seconds() == 0
    assert (event.kind, event.source, event.user, event.action, event.result) == (
        "auth", "192.168.1.57", "admin", "login", "failure")
    assert msgspec.to_builtins(event)["ts"] == "2026-03-01T10:15:23Z"


def test_a_list_keeps_its_good_entries_and_names_index_and_field_of_the_bad() -> None:
    payload = [AUTH, {**AUTH, "source": "10.0.0.300"}, COMMAND, {**COMMAND, "value": "high"}, 7,
               {**AUTH, "ts": "2026-03-01 10:15:23Z"}, CHANGE]
    decoded = decode(json.dumps(payload))
    assert [e.kind for e in decoded.events] == ["auth", "command", "config_change"]
    assert decoded.items == [0, 2, 6]
    assert [(e.index, e.field) for e in decoded.errors] == [
        (1, "[1].source"), (3, "[3].value"), (4, "[4]"), (5, "[5].ts")]
    assert str(decoded.errors[0]) == "[1].source: not an IPv4 or IPv6 address: '10.0.0.300'"


def test_an_events_envelope_names_events_index_and_field() -> None:
    decoded = decode(json.dumps({"events": [CHANGE, {**CHANGE, "user": ""}, {**AUTH, "colour": "red"}]}))
    assert decoded.items == [0]
    assert decoded.errors == [
        OtLogError(1, "events[1].user", "Expected `str` of length >= 1"),
        OtLogError(2, "events[2].colour", "unknown field"),
    ]
    good = decode(json.dumps({"events": [AUTH, COMMAND, CHANGE]}))
    assert (len(good.events), good.items, good.errors) == (3, [0, 1, 2], [])


def test_an_entry_whose_user_is_called_events_is_one_entry() -> None:
    decoded = decode(json.dumps({**AUTH, "user": "events"}))
    assert decoded.errors == [] and decoded.events[0].user == "events"


@pytest.mark.parametrize(
    ("payload", "message"),
    [(b"{not json", "invalid JSON"), (b"", "invalid JSON"), (b'{"events": 3}', "Expected `array`, got `int`"),
     (b'{"events": [], "extra": 1}', "unknown field"), (b"42", "Expected `object`, got `int`")],
)
def test_payloads_that_are_not_one_of_the_three_forms(payload: bytes, message: str) -> None:
    decoded = decode(payload)
    assert decoded.events == []
    [error] = decoded.errors
    assert error.index is None and message in error.message
