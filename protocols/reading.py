"""The one reading type, and the quality model carried from edge to hub."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated

import msgspec

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""A timestamp that must carry a time zone; stored and compared as UTC."""


class QualityFlag(enum.IntFlag):
    """Why a reading's quality is below 1.0. Flags combine; 0 means nothing to report."""

    NONE = 0
    INVALID = 1  # the value could not be decoded or is impossible (NaN, inf, -5 kV; see protocols.validation),
    # or, with CLOCK_UNSYNC, the timestamp is (year 9999, 1970). Never turned into a finding.
    STALE = 2  # the value has been frozen for too long
    OVERFLOW = 4  # the value hit the range of its register type
    SUBSTITUTED = 8  # the value was filled in, not measured
    COMM_LOST = 16  # the device did not answer; the value is a placeholder
    CLOCK_UNSYNC = 32  # the timestamp comes from a clock that is not synchronised

    @classmethod
    def names(cls, flags: int) -> list[str]:
        return [f.name.lower() for f in cls if f and flags & f]  # type: ignore[union-attr]

    @classmethod
    def parse(cls, names: list[str]) -> int:
        value = 0
        for name in names:
            try:
                value |= cls[name.upper()]
            except KeyError:
                known = ", ".join(f.name.lower() for f in cls if f)  # type: ignore[union-attr]
                raise ValueError(f"unknown quality flag {name!r} (known: {known})") from None
        return value


class Quality(enum.StrEnum):
    GOOD = "good"
    UNCERTAIN = "uncertain"
    BAD = "bad"


def quality_class(quality: float, flags: int = 0) -> Quality:
    """Map the 0..1 quality and flags onto good / uncertain / bad."""
    if flags & (QualityFlag.INVALID | QualityFlag.COMM_LOST) or quality < 0.5:
        return Quality.BAD
    if flags or quality < 0.9:
        return Quality.UNCERTAIN
    return Quality.GOOD


class Reading(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One measured value of one metric of one device, at one instant (UTC)."""

    ts: UtcTime
    substation: str
    device_id: str
    metric: str  # e.g. voltage_l1, frequency, oil_temperature
    value: float | None  # None: no value (the device did not answer, or it could not be decoded)
    unit: str = ""
    quality: float = 1.0  # 0..1
    flags: int = 0  # QualityFlag bits
    # The edge's anomaly score (0..1) and type (drift, step, spike, ...); None where it did not score
    # (older edges, HTTP and MQTT ingest). Optional, so a batch without them still decodes.
    anomaly_score: float | None = None
    anomaly_type: str | None = None


def sensor_type(metric: str) -> str:
    """The seed's ``sensor_type`` of a metric: ``voltage_l1`` -> ``voltage``.

    A metric named ``<type>_l1`` / ``_l2`` / ``_l3`` / ``_n`` is one phase of ``<type>``.
    """
    head, sep, tail = metric.rpartition("_")
    if sep and tail in {"l1", "l2", "l3", "n", "avg"}:
        return head
    return metric
