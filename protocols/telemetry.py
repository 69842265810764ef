"""The telemetry schema: readings as utilities and devices send them (POST /sensors/process, MQTT).

The JSON schema file ``protocols/schemas/telemetry.schema.json`` is the published contract; the
msgspec types here decode exactly that shape fast and are checked against the file in the tests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec

from protocols.reading import QualityFlag, Reading, UtcTime

FlagName = Literal["invalid", "stale", "overflow", "substituted", "comm_lost", "clock_unsync"]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class TelemetryReading(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    device_id: Id
    sensor_type: Short
    value: float | None
    timestamp: UtcTime
    metric: Short | None = None
    unit: Annotated[str, msgspec.Meta(max_length=16)] = ""
    quality: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)] = 1.0
    quality_flags: list[FlagName] = []
    substation: Id | None = None
    nominal: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    sample_rate_hz: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Every consumer keeps the time in UTC: the edge's buffer as epoch seconds, turned back into
        # UTC datetimes to send them, the hub as UTC datetimes. Only a time in year 1 or 9999 can
        # leave datetime's range on the way (an offset, or float seconds rounding up at the end).
        ts = self.timestamp
        if ts.year == 1 or ts.year == 9999:
            try:
                datetime.fromtimestamp(ts.timestamp(), UTC)
            except (OverflowError, ValueError, OSError):
                raise ValueError(f"timestamp: {ts.isoformat()} is out of range in UTC") from None

    def to_reading(self, default_substation: str) -> Reading:
        return Reading(
            ts=self.timestamp,
            substation=self.substation or default_substation,
            device_id=self.device_id,
            metric=self.metric or self.sensor_type,
            value=self.value,
            unit=self.unit,
            quality=self.quality,
            flags=QualityFlag.parse(list(self.quality_flags)),
        )


class SensorBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The body of the seed's ``POST /sensors/process``."""

    sensor_readings: Annotated[list[TelemetryReading], msgspec.Meta(min_length=1, max_length=100_000)]


def schema() -> dict[str, Any]:
    """The published JSON schema of one telemetry reading."""
    text = resources.files("protocols").joinpath("schemas/telemetry.schema.json").read_text()
    return json.loads(text)
