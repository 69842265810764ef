"""What the grid monitor is handed and what it hands back: snapshot, config, report. Pure data.

A :class:`GridSnapshot` is a list of :class:`Series`, one per device and metric (``voltage_l1``,
``current_l2``, ``frequency``, ``power_factor``, ``thd_voltage``, ``active_power`` ...: the metric
names of :mod:`protocols.reading` and ``firmware_configs/*.toml``), each with its own timestamps
and values as numpy arrays; plus, optionally, feeder ratings and which feeders can take load from
which (for load-transfer recommendations).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from agents.findings import Finding
from protocols.config import Limits

__all__ = [
    "AGENT",
    "STATUSES",
    "FeederRating",
    "GridMonitorConfig",
    "GridReport",
    "GridSnapshot",
    "Series",
]

AGENT = "grid_monitor"
STATUSES = ("OK", "WARNING", "CRITICAL")

Pct = Annotated[float, msgspec.Meta(gt=0, le=1000)]


class Series(msgspec.Struct, frozen=True, kw_only=True):
    """One metric of one device over time.

    ``timestamps``: non-decreasing, either ``datetime64`` (UTC) or float seconds since the epoch.
    ``values``: float, same length, NaN where a sample is missing. Array-likes are accepted and
    converted when analysed. ``nominal`` is in ``unit`` (a voltage without one gets the nearest
    standard system voltage, as :func:`protocols.gridcode.infer_nominal_voltage` finds it).
    """

    device_id: str
    substation: str
    metric: str
    timestamps: Any  # np.ndarray of datetime64 or float64 epoch seconds
    values: Any  # np.ndarray of float64
    unit: str = ""
    nominal: float | None = None


class FeederRating(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A feeder's thermal rating, in A (per phase) or MW, and optionally its present load in the
    same unit. Without ``load`` the latest measured value in the snapshot is used: the highest
    phase current (``current_l1..l3``, else ``load_current``) for A, ``active_power`` for MW."""

    device_id: str
    rating: Annotated[float, msgspec.Meta(gt=0)]
    unit: Literal["A", "MW"] = "A"
    load: float | None = None


class GridSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one analysis looks at. ``adjacency`` maps a feeder to the feeders it can transfer
    load to; it is read as undirected (a tie works both ways), so listing a pair once is enough."""

    series: list[Series]
    feeders: list[FeederRating] = msgspec.field(default_factory=list)
    adjacency: dict[str, list[str]] = msgspec.field(default_factory=dict)


class GridMonitorConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds. Voltage and frequency bands are the grid code's (:class:`protocols.config.Limits`,
    checked by :mod:`protocols.gridcode`); ``bus_limits`` overrides them per device id or, failing
    that, per substation.

    Defaults: voltage unbalance WARNING above 2 %, CRITICAL above 3 % (EN 50160 / IEC 61000-2-2
    compatibility level 2 %); current unbalance 10 % / 20 %; power factor WARNING below 0.9 (read
    as lagging), no CRITICAL unless set; voltage THD WARNING above 5 %, CRITICAL above 8 %
    (IEEE 519-2014 Table 1 for buses up to 69 kV / EN 50160's 8 % limit), both on 10-min means
    (``power_quality_window_s``); feeder loading WARNING above 100 % of rating, CRITICAL above 120 %.
    """

    limits: Limits = Limits()
    bus_limits: dict[str, Limits] = msgspec.field(default_factory=dict)
    voltage_unbalance_warning_pct: Pct = 2.0
    voltage_unbalance_critical_pct: Pct = 3.0
    current_unbalance_warning_pct: Pct = 10.0
    current_unbalance_critical_pct: Pct = 20.0
    # at light load a few amps between phases is a large percentage and means nothing: current
    # unbalance is judged only while the mean phase current is at least this share of the feeder's
    # rating (when its rating in A is known)
    current_unbalance_min_load_pct: Pct = 10.0
    power_factor_warning_below: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    power_factor_critical_below: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    thd_voltage_warning_pct: Pct = 5.0
    thd_voltage_critical_pct: Pct = 8.0
    # power factor and voltage THD are judged on their mean over this window, as IEC 61000-4-30
    # aggregates them (10 min) and EN 50160 and tariffs judge them; 0 judges single readings
    power_quality_window_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 600.0
    overload_warning_pct: Pct = 100.0
    overload_critical_pct: Pct = 120.0
    max_events_in_facts: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50

    def __post_init__(self) -> None:
        for name in ("voltage_unbalance", "current_unbalance", "thd_voltage", "overload"):
            warn, crit = getattr(self, f"{name}_warning_pct"), getattr(self, f"{name}_critical_pct")
            if crit < warn:
                raise ValueError(f"{name}_critical_pct ({crit:g}) must be at least {name}_warning_pct ({warn:g})")
        crit_pf = self.power_factor_critical_below
        if crit_pf is not None and crit_pf > self.power_factor_warning_below:
            raise ValueError(f"power_factor_critical_below ({crit_pf:g}) must not exceed "
                             f"power_factor_warning_below ({self.power_factor_warning_below:g})")

    def limits_for(self, device_id: str, substation: str = "") -> Limits:
        """The grid-code limits for one device: its own override, its substation's, or the default."""
        return self.bus_limits.get(device_id) or self.bus_limits.get(substation) or self.limits


class GridReport(msgspec.Struct, frozen=True, kw_only=True):
    """The findings (one per device and condition) and the status they give each substation and
    device: ``device_status[substation][device_id]``. Every device in the snapshot has a status;
    OK means no finding."""

    findings: list[Finding]
    substation_status: dict[str, str]
    device_status: dict[str, dict[str, str]]
