"""The OT log schema: security-relevant entries from RTU, PLC, IED and gateway logs.

The JSON schema file ``protocols/schemas/ot_log.schema.json`` is the published contract; the
msgspec type :class:`OtLogEvent` decodes exactly that shape and is checked against the file in the
tests (the same examples are accepted and refused by both).

Three kinds of entry, one type:

- ``auth``: a login (successful or failed) or a logout: ``action``, ``user``, ``method``;
- ``command``: a control command sent to an RTU/PLC/IED: ``command`` (breaker_open, setpoint_write,
  ...), ``point``, ``value``, ``protocol`` (modbus, dnp3, iec61850, iec104, ...), ``master``;
- ``config_change``: a change of device configuration: ``parameter``, ``old_value``, ``new_value``.

Every entry carries ``ts`` (RFC 3339 with an offset; held as UTC), ``substation``, the target
``device_id`` and the ``result``, and may carry the ``source`` address (IPv4 or IPv6), ``user``,
``session_id``, ``event_id`` and free ``detail``. An optional field may be null, the same as
absent; the fields of another kind must be absent (or null).

:func:`decode` takes one entry, a list of entries, or ``{"events": [...]}``. A list with bad
entries in it is decoded a second time, entry by entry, so one bad entry never loses the good
ones: each bad entry becomes one :class:`OtLogError` naming its index and field, e.g.
``events[3].source: not an IPv4 or IPv6 address: '10.0.0.300'``.
"""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import UTC
from importlib import resources
from typing import Annotated, Any, Literal, NamedTuple

import msgspec

from protocols.reading import UtcTime

__all__ = [
    "AUTH_ACTIONS",
    "COMMANDS",
    "KINDS",
    "PROTOCOLS",
    "Decoded",
    "OtLogError",
    "OtLogEvent",
    "decode",
    "schema",
]

Kind = Literal["auth", "command", "config_change"]
Result = Literal["success", "failure"]
AuthAction = Literal["login", "logout"]
Command = Literal["breaker_open", "breaker_close", "setpoint_write", "tap_raise", "tap_lower", "reset"]
Protocol = Literal["modbus", "dnp3", "iec61850", "iec104", "iec101", "opcua"]

KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
AUTH_ACTIONS: tuple[str, ...] = AuthAction.__args__  # type: ignore[attr-defined]
COMMANDS: tuple[str, ...] = Command.__args__  # type: ignore[attr-defined]
PROTOCOLS: tuple[str, ...] = Protocol.__args__  # type: ignore[attr-defined]

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]

# What each kind requires, and the fields that belong to each kind only (refused on the others).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "auth": ("action",),
    "command": ("command", "point"),
    "config_change": ("parameter",),
}
_OWN: dict[str, tuple[str, ...]] = {
    "auth": ("action", "method"),
    "command": ("command", "point", "value", "unit", "protocol", "master"),
    "config_change": ("parameter", "old_value", "new_value"),
}

_AN = {"auth": "an auth event", "command": "a command event", "config_change": "a config_change event"}

# The strict RFC 3339 spelling that the schema's "date-time" format checks. msgspec's datetime
# decoder also takes a space for the "T" and "+0300" offsets; :func:`decode` refuses those too, so
# that the decoder and the published schema agree.
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})$", re.ASCII
)


class OtLogEvent(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One OT log entry. ``ts`` is UTC whatever offset it came with."""

    ts: UtcTime
    kind: Kind
    substation: Id
    device_id: Id  # the target: the RTU/PLC/IED logged into, commanded or reconfigured
    result: Result
    source: Annotated[str, msgspec.Meta(min_length=2, max_length=45)] | None = None  # IPv4/IPv6 address
    user: Id | None = None
    session_id: Id | None = None
    event_id: Id | None = None  # the entry's id or sequence number in the log it came from
    detail: Text | None = None
    # auth
    action: AuthAction | None = None
    method: Short | None = None  # password, certificate, radius, ssh_key, local_console, ...
    # command
    command: Command | None = None
    point: Id | None = None  # the object addressed: CB-12, a DNP3 index, XCBR1.Pos, ...
    value: float | None = None  # the value written (setpoint_write) or commanded
    unit: Annotated[str, msgspec.Meta(max_length=16)] | None = None
    protocol: Protocol | None = None
    master: Id | None = None  # the master station that sent the command
    # config_change
    parameter: Annotated[str, msgspec.Meta(min_length=1, max_length=256)] | None = None
    old_value: Text | None = None
    new_value: Text | None = None

    def __post_init__(self) -> None:
        if self.source is not None and not _is_ip(self.source):
            raise ValueError(f"source: not an IPv4 or IPv6 address: {self.source!r}")
        for name in _REQUIRED[self.kind]:
            if getattr(self, name) is None:
                raise ValueError(f"{name}: missing required field for {_AN[self.kind]}")
        for kind, names in _OWN.items():
            if kind != self.kind:
                for name in names:
                    if getattr(self, name) is not None:
                        raise ValueError(f"{name}: not a field of {_AN[self.kind]} (it belongs to {kind})")
        if self.command == "setpoint_write" and self.value is None:
            raise ValueError("value: missing required field for a setpoint_write command")
        if self.ts.utcoffset():
            try:
                utc = self.ts.astimezone(UTC)
            except OverflowError:  # 9999-12-31T23:00:00-02:00 is in year 10000 in UTC
                raise ValueError(f"ts: {self.ts.isoformat()} is out of range in UTC") from None
            msgspec.structs.force_setattr(self, "ts", utc)


def _is_ip(text: str) -> bool:
    """What the schema's ``ipv4`` / ``ipv6`` formats accept: no IPv6 scope (``%eth0``)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return not getattr(address, "scope_id", None)


class OtLogError(NamedTuple):
    """One bad entry. ``index`` is its position in the list (None for a lone entry); ``field`` the
    JSON path of what is wrong (``events[3].source``); ``message`` what is wrong with it."""

    index: int | None
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class Decoded(NamedTuple):
    """The good entries (in input order), their positions in the input, and the bad ones."""

    events: list[OtLogEvent]
    items: list[int]
    errors: list[OtLogError]


class _Envelope(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[OtLogEvent], msgspec.Meta(max_length=100_000)]


class _RawEnvelope(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[msgspec.Raw], msgspec.Meta(max_length=100_000)]


class _Probe(msgspec.Struct):
    events: msgspec.Raw = msgspec.Raw(b"")


class _Ts(msgspec.Struct):
    ts: str = ""


_EVENT = msgspec.json.Decoder(OtLogEvent)
_LIST = msgspec.json.Decoder(Annotated[list[OtLogEvent], msgspec.Meta(max_length=100_000)])
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_RAW_LIST = msgspec.json.Decoder(Annotated[list[msgspec.Raw], msgspec.Meta(max_length=100_000)])
_RAW_ENVELOPE = msgspec.json.Decoder(_RawEnvelope)
_PROBE = msgspec.json.Decoder(_Probe)
_TS = msgspec.json.Decoder(_Ts)
_TS_LIST = msgspec.json.Decoder(list[_Ts])
_TS_ENVELOPE = msgspec.json.Decoder(msgspec.defstruct("_TsEnvelope", [("events", list[_Ts])]))

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD_MSG = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<field>[^`]+)`$")
_OWN_MSG = re.compile(r"^(?P<field>[a-z_]+): (?P<msg>.*)$", re.DOTALL)
_WS = b" \t\r\n"


def _join(prefix: str, path: str) -> str:
    if not path:
        return prefix
    if not prefix or path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


def _error(exc: msgspec.MsgspecError, prefix: str, index: int | None) -> OtLogError:
    """msgspec's ``Expected X - at `$.a[0].b``` as field ``<prefix>.a[0].b``, message ``Expected X``."""
    m = _AT.match(str(exc))
    assert m is not None
    msg, path = m["msg"], (m["path"] or "").lstrip(".")
    field = _FIELD_MSG.match(msg)
    own = _OWN_MSG.match(msg)
    if field:  # name the field itself: "events[0].colour: unknown field"
        path = _join(path, field["field"])
        msg = "unknown field" if "unknown" in msg else "missing required field"
    elif own:  # raised by OtLogEvent.__post_init__ as "field: message"
        path, msg = _join(path, own["field"]), own["msg"]
    return OtLogError(index, _join(prefix, path), msg)


def _ts_error(ts: str, prefix: str, index: int | None) -> OtLogError | None:
    if _RFC3339.match(ts):
        return None
    return OtLogError(index, _join(prefix, "ts"), f"not an RFC 3339 date-time with an offset: {ts!r}")


def decode(payload: bytes | str) -> Decoded:
    """Decode one entry, a list of entries, or ``{"events": [...]}`` (JSON).

    A payload that is not JSON, or not one of the three forms, is one error with ``index`` None.
    """
    data = payload.encode() if isinstance(payload, str) else payload
    try:
        return _decode(data)
    except RecursionError:  # msgspec decodes (and skips) nesting recursively, to about 1,000 levels
        return Decoded([], [], [OtLogError(None, "", "invalid JSON: nested too deeply to decode")])


def _decode(data: bytes) -> Decoded:
    head = data.lstrip(_WS)[:1]
    if head == b"[":
        return _decode_list(data, _LIST, _RAW_LIST, _TS_LIST, "", unwrap=lambda x: x)
    if head == b"{":
        try:
            envelope = len(_PROBE.decode(data).events) > 0
        except msgspec.DecodeError as exc:
            return Decoded([], [], [OtLogError(None, "", f"invalid JSON: {exc}")])
        if envelope:
            return _decode_list(data, _ENVELOPE, _RAW_ENVELOPE, _TS_ENVELOPE, "events", unwrap=lambda x: x.events)
    try:
        event = _EVENT.decode(data)
        bad = _ts_error(_TS.decode(data).ts, "", None)
    except msgspec.ValidationError as exc:
        return Decoded([], [], [_error(exc, "", None)])
    except msgspec.DecodeError as exc:
        return Decoded([], [], [OtLogError(None, "", f"invalid JSON: {exc}")])
    return Decoded([], [], [bad]) if bad else Decoded([event], [0], [])


def _decode_list(data: bytes, typed: msgspec.json.Decoder, raw: msgspec.json.Decoder,
                 stamps: msgspec.json.Decoder, prefix: str, unwrap: Any) -> Decoded:
    try:
        events = unwrap(typed.decode(data))
        ts = [t.ts for t in unwrap(stamps.decode(data))]
    except msgspec.ValidationError:
        pass  # some entry is bad (or the envelope is): entry by entry below
    except msgspec.DecodeError as exc:
        return Decoded([], [], [OtLogError(None, "", f"invalid JSON: {exc}")])
    else:
        bad_ts = [i for i, t in enumerate(ts) if not _RFC3339.match(t)]
        if not bad_ts:
            return Decoded(events, list(range(len(events))), [])
    try:
        items = unwrap(raw.decode(data))
    except msgspec.ValidationError as exc:
        return Decoded([], [], [_error(exc, "", None)])
    except msgspec.DecodeError as exc:  # [{"bad": 1}, ... cut short: the typed decoder stopped at the entry
        return Decoded([], [], [OtLogError(None, "", f"invalid JSON: {exc}")])
    good: list[OtLogEvent] = []
    where: list[int] = []
    errors: list[OtLogError] = []
    for i, item in enumerate(items):
        at = f"{prefix}[{i}]"
        try:
            event = _EVENT.decode(item)
            bad = _ts_error(_TS.decode(item).ts, at, i)
        except msgspec.ValidationError as exc:
            errors.append(_error(exc, at, i))
            continue
        if bad:
            errors.append(bad)
        else:
            good.append(event)
            where.append(i)
    return Decoded(good, where, errors)


def schema() -> dict[str, Any]:
    """The published JSON schema of one OT log entry."""
    text = resources.files("protocols").joinpath("schemas/ot_log.schema.json").read_text()
    return json.loads(text)
