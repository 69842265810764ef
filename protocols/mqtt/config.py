"""MQTT device configuration (part of the firmware config), and the topic templates it names."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

from protocols.points import (
    EnvName,
    Name,
    Nominal,
    Seconds,
    Unit,
    check_finite,
    check_limits,
    check_unique_metrics,
)

__all__ = ["FIELDS", "MqttDevice", "MqttPoint", "MqttTls", "TopicTemplate"]

FIELDS = ("substation", "device", "metric")
"""The placeholders a topic template may use, each standing for one whole topic level."""

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class TopicTemplate:
    """A topic template such as ``substations/{substation}/{device}/{metric}``.

    Each placeholder is one whole topic level; it is subscribed as ``+`` (or as a fixed value, see
    :meth:`filter`) and read back from each message's topic by :meth:`match`. Raises ValueError
    on a template that is not one.

    A ``{metric}`` in the last level is optional: a device may publish per metric
    (``substations/S1/TR-1/oil_temperature``) or everything at once one level up
    (``substations/S1/TR-1``: a batch, or readings that name their metric), so the filter ends in
    ``#`` (which also brings deeper topics; they do not match and are rejected).
    """

    __slots__ = ("fields", "levels", "optional_metric", "text", "_slots")

    def __init__(self, text: str) -> None:
        if not text:
            raise ValueError("topic template is empty")
        if "+" in text or "#" in text:
            raise ValueError(f"topic template {text!r}: use {{substation}}, {{device}}, {{metric}} for "
                             "levels, not the wildcards + and #")
        if text.startswith("$"):
            raise ValueError(f"topic template {text!r}: topics starting with $ are the broker's own")
        self.text = text
        self.levels: tuple[str, ...] = tuple(text.split("/"))
        slots: list[tuple[int, str]] = []
        for i, level in enumerate(self.levels):
            names = _PLACEHOLDER.findall(level)
            if not names:
                if "{" in level or "}" in level:
                    raise ValueError(f"topic template {text!r}: level {i} ({level!r}) has an unbalanced brace")
                continue
            if level != f"{{{names[0]}}}":
                raise ValueError(f"topic template {text!r}: a placeholder must be a whole level, not part of "
                                 f"{level!r}")
            name = names[0]
            if name not in FIELDS:
                raise ValueError(f"topic template {text!r}: unknown placeholder {{{name}}} (known: "
                                 + ", ".join(f"{{{f}}}" for f in FIELDS) + ")")
            if any(name == n for _, n in slots):
                raise ValueError(f"topic template {text!r}: {{{name}}} appears twice")
            slots.append((i, name))
        self._slots = tuple(slots)
        self.fields = frozenset(name for _, name in slots)
        self.optional_metric = bool(slots) and slots[-1] == (len(self.levels) - 1, "metric")

    def __repr__(self) -> str:
        return f"TopicTemplate({self.text!r})"

    def filter(self, **fixed: str) -> str:
        """The subscription filter: ``+`` for every placeholder, unless ``fixed`` gives its value."""
        levels = list(self.levels)
        for i, name in self._slots:
            levels[i] = fixed.get(name) or "+"
        if self.optional_metric and not fixed.get("metric"):
            levels[-1] = "#"
        return "/".join(levels)

    def render(self, **values: str) -> str:
        """The topic for these placeholder values (publishers); an optional trailing ``{metric}``
        left out gives the device-level topic. Raises ValueError if a value is missing or is not
        one topic level."""
        levels = list(self.levels)
        for i, name in self._slots:
            value = values.get(name)
            if not value:
                if name == "metric" and self.optional_metric:
                    levels.pop()
                    continue
                raise ValueError(f"topic template {self.text!r} needs a value for {{{name}}}")
            if "/" in value or "+" in value or "#" in value:
                raise ValueError(f"{{{name}}} = {value!r} is not one topic level")
            levels[i] = value
        return "/".join(levels)

    def match(self, topic: str) -> dict[str, str] | None:
        """The placeholders' values in ``topic``, or None if the topic does not fit the template."""
        levels = topic.split("/")
        if len(levels) != len(self.levels):
            if not (self.optional_metric and len(levels) == len(self.levels) - 1):
                return None
        values: dict[str, str] = {}
        slot_names = dict(self._slots)
        for i, (want, got) in enumerate(zip(self.levels, levels)):
            name = slot_names.get(i)
            if name is None:
                if want != got:
                    return None
            elif not got:
                return None  # an empty level names nothing
            else:
                values[name] = got
        return values


class MqttPoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: Name
    unit: Unit = ""
    nominal: Nominal | None = None
    limit_low: float | None = None
    limit_high: float | None = None

    def __post_init__(self) -> None:
        check_finite(self, "nominal", "limit_low", "limit_high")
        check_limits(self.limit_low, self.limit_high)


class MqttTls(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca_file: str = ""  # CA bundle to verify the broker; empty: the system's
    cert_file: str = ""  # client certificate, for brokers that require one
    key_file: str = ""
    insecure: bool = False  # skip host name verification (test benches only); the chain is still verified

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")


def check_session(c: Any) -> None:
    """The checks of an MQTT session's fields against each other, whoever holds them (a device, the
    edge's OT log feed): a user needs a password variable and back, a persistent MQTT 5 session
    needs an expiry, and the connect timeout must come before the broker gives up on keepalive."""
    if c.username and not c.password_env:
        raise ValueError("username needs password_env (the environment variable holding the password)")
    if c.password_env and not c.username:
        raise ValueError("password_env needs username (MQTT sends no password without a user name)")
    if c.qos > 0 and c.clean_session is False and c.mqtt_version == "5" and c.session_expiry_s == 0:
        raise ValueError("session_expiry_s 0 ends the session at every disconnect: with clean_session = "
                         "false give it a duration (MQTT 5)")
    if c.connect_timeout_s >= 3 * c.keepalive_s:
        raise ValueError(f"connect_timeout_s ({c.connect_timeout_s}) must be shorter than 3 x keepalive_s "
                         f"({c.keepalive_s})")


class MqttDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="protocol", tag="mqtt"):
    """A device (or a group of IoT sensors) publishing telemetry to a broker.

    ``topic`` is a template: ``{substation}``, ``{device}`` and ``{metric}`` stand for topic levels
    and are read back from each message's topic. ``{device}`` is subscribed as this device's ``id``
    (the broker sends only this device's messages); the others as ``+``. Payloads are JSON in the
    telemetry schema (protocols/schemas/telemetry.schema.json): one reading, a bare number (when the
    topic names the metric), or a batch ``{"sensor_readings": [...]}``. Every reading must name this
    device (``device_id`` = ``id``) and one of its points' metrics.
    """

    id: Name
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)] = "substations/{substation}/{device}/{metric}"
    qos: Literal[0, 1, 2] = 1
    mqtt_version: Literal["3.1.1", "5"] = "3.1.1"
    client_id: Annotated[str, msgspec.Meta(max_length=128)] = ""  # empty: <edge_id>-<device id>; fixed so the broker keeps the session
    clean_session: bool = False  # False: persistent session, QoS 1 messages wait while we are away
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)] = 86_400  # MQTT 5: how long the broker keeps it
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    connect_timeout_s: Seconds = 10.0
    username: str = ""
    password_env: EnvName = ""
    tls: MqttTls | None = None
    stale_after_s: Seconds | None = None  # no message for this long: the device counts as down
    description: str = ""
    points: Annotated[list[MqttPoint], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        check_session(self)
        TopicTemplate(self.topic)  # raises ValueError naming what is wrong
        if self.stale_after_s is not None and self.stale_after_s <= self.connect_timeout_s:
            raise ValueError(f"stale_after_s ({self.stale_after_s}) must be longer than connect_timeout_s "
                             f"({self.connect_timeout_s})")
        check_unique_metrics([p.metric for p in self.points])

    @property
    def template(self) -> TopicTemplate:
        return TopicTemplate(self.topic)

    def subscription(self) -> str:
        """The topic filter this device subscribes to."""
        return self.template.filter(device=self.id)
