"""MQTT device configuration (part of the firmware config)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocols.points import EnvName, Name, Nominal, Seconds, Unit, check_limits, check_unique_metrics


class MqttPoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: Name
    unit: Unit = ""
    nominal: Nominal | None = None
    limit_low: float | None = None
    limit_high: float | None = None

    def __post_init__(self) -> None:
        check_limits(self.limit_low, self.limit_high)


class MqttTls(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca_file: str = ""  # CA bundle to verify the broker; empty: the system's
    cert_file: str = ""  # client certificate, for brokers that require one
    key_file: str = ""
    insecure: bool = False  # skip host name verification (test benches only)

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together")


class MqttDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="protocol", tag="mqtt"):
    """A device (or a group of IoT sensors) publishing telemetry to a broker.

    ``topic`` is a template: ``{substation}``, ``{device}`` and ``{metric}`` stand for topic levels
    (subscribed as ``+``) and are read back from each message's topic. Payloads are JSON in the
    telemetry schema (protocols/schemas/telemetry.schema.json): one reading, a bare number (when the
    topic names the metric), or a batch ``{"sensor_readings": [...]}``.
    """

    id: Name
    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    topic: Annotated[str, msgspec.Meta(min_length=1)] = "substations/{substation}/{device}/{metric}"
    qos: Literal[0, 1, 2] = 1
    client_id: str = ""  # empty: <edge_id>-<device id>; fixed so the broker keeps the session
    clean_session: bool = False  # False: persistent session, QoS 1 messages wait while we are away
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    username: str = ""
    password_env: EnvName = ""
    tls: MqttTls | None = None
    stale_after_s: Seconds | None = None  # no message for this long: the device counts as down
    description: str = ""
    points: Annotated[list[MqttPoint], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        if self.username and not self.password_env:
            raise ValueError("username needs password_env (the environment variable holding the password)")
        check_unique_metrics([p.metric for p in self.points])
