"""What the compliance API answers: per metric, the statistics of each week (voltage, unbalance) or
year (frequency), as :class:`agents.grid_monitor.en50160.PeriodStatistics`."""

from __future__ import annotations

from datetime import datetime

import msgspec

from agents.grid_monitor.en50160 import PeriodStatistics

__all__ = ["En50160Query", "En50160Report", "FrequencyCompliance", "PeriodStatistics", "UnbalanceCompliance",
           "VoltageCompliance"]


class En50160Query(msgspec.Struct, frozen=True, kw_only=True):
    """The question as the hub took it: defaults filled in, times in UTC."""

    device_id: str
    substation: str | None  # None: not named (the one substation holding the device's readings is taken)
    start: datetime  # inclusive; weeks and the year run from here
    end: datetime  # exclusive
    nominal: float | None  # as given (None: inferred per voltage metric)
    nominal_frequency_hz: float
    min_coverage: float


class VoltageCompliance(msgspec.Struct, frozen=True, kw_only=True):
    """One voltage (a phase, or a line-to-line voltage): its weeks' 10-min-mean statistics."""

    metric: str
    unit: str
    nominal: float
    nominal_source: str  # "given" or "inferred" (the standard system voltage nearest the median)
    summary: str  # "3 compliant, 1 non_compliant, 0 insufficient_data"
    weeks: list[PeriodStatistics]


class FrequencyCompliance(msgspec.Struct, frozen=True, kw_only=True):
    metric: str
    unit: str
    nominal_hz: float
    resolution_s: int  # the means assessed: 10 s (EN 50160's), or the readings' own spacing when sparser
    summary: str
    years: list[PeriodStatistics]


class UnbalanceCompliance(msgspec.Struct, frozen=True, kw_only=True):
    metric: str
    summary: str
    weeks: list[PeriodStatistics]


class En50160Report(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /compliance/en50160``: one device's (a feeder's) EN 50160 statistics over a range."""

    query: En50160Query
    substation: str | None  # whose readings these are
    voltage: list[VoltageCompliance]
    frequency: FrequencyCompliance | None  # None: the device reports no frequency
    unbalance: UnbalanceCompliance | None  # None: no negative-sequence unbalance readings
    notes: list[str]
