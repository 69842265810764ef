"""The maintenance predictor's settings: one frozen Struct, checked once when built."""

from __future__ import annotations

from typing import Annotated

import msgspec

from agents.maintenance_predictor.dga import TYPICAL_PPM
from agents.maintenance_predictor.precursor import PrecursorConfig

__all__ = ["FACTORS", "MaintenanceConfig"]

# The health score's factors, in the order they are reported.
FACTORS = ("thermal", "oil_temperature", "dga", "vibration", "age", "maintenance")


def _default_weights() -> dict[str, float]:
    # the most a factor can take off the score of 100; they add up to 100
    return {"thermal": 20.0, "oil_temperature": 25.0, "dga": 25.0, "vibration": 12.0, "age": 10.0, "maintenance": 8.0}


class MaintenanceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds and model constants. Temperatures in degC, times as named."""

    # window of history the trends and the ageing are computed over
    trend_window_days: float = 7.0
    trend_min_points: int = 6
    trend_confidence: float = 0.95
    # top-oil limits: IEC 60076-7:2018 Table 1 puts the top-oil limit at 105 degC for every loading
    # type; the alarm below it and the level where the score starts to count are site choices
    top_oil_normal_c: float = 75.0
    top_oil_alarm_c: float = 95.0
    top_oil_trip_c: float = 105.0
    oil_slope_full_c_per_day: float = 5.0  # a rise this fast counts fully
    # ageing: a mean relative ageing rate this high (log scale from 1) counts fully; 16 = hot spot 24 K over 98
    ageing_rate_full: float = 16.0
    # vibration zone boundaries A/B, B/C, C/D in mm/s RMS (ISO 10816-3, group 1, rigid foundation)
    vibration_zones_mm_s: tuple[float, float, float] = (2.3, 4.5, 7.1)
    # DGA typical values (IEC 60599 Annex A, upper ends of the 90 % ranges), ppm
    dga_typical_ppm: dict[str, float] = msgspec.field(default_factory=lambda: dict(TYPICAL_PPM))
    dga_level_full: float = 8.0  # a gas at this multiple of its typical value counts fully
    maintenance_interval_days: float = 365.0
    weights: dict[str, float] = msgspec.field(default_factory=_default_weights)
    # hazard: constant-rate (exponential) model whose rate rises exponentially as health falls,
    # anchored at a healthy unit's annual failure rate and a mean time to failure at health 0
    annual_failure_rate_at_full_health: float = 0.01
    mttf_at_zero_health_hours: float = 24.0
    # a trend's slope uncertainty never taken below this fraction of the slope (model error)
    trend_relative_uncertainty: float = 0.2
    trend_min_uncertainty_per_day: float = 0.1
    # action bands
    critical_health: float = 50.0
    critical_probability_48h: float = 0.5
    warning_health: float = 70.0
    warning_probability_168h: float = 0.2
    monitor_health: float = 90.0
    monitor_probability_168h: float = 0.05
    emergency_within_hours: float = 12.0
    schedule_within_hours: float = 168.0
    maintenance_duration_hours: float = 8.0
    # precursors of slowly developing faults (see agents/maintenance_predictor/precursor.py): top oil
    # explained by load and ambient, warn when its excess over that is due to reach the limit; the
    # vibration's own trend toward the C/D zone boundary. Need reference + window of history (28 days).
    precursor_enabled: bool = True
    precursor_oil: PrecursorConfig = PrecursorConfig()
    precursor_oil_excess_c: float = 10.0  # top oil this much hotter than load and ambient explain: a fault
    precursor_vibration: PrecursorConfig = PrecursorConfig(min_slope_per_day=0.05)
    # the site's clock for the texts (the maintenance window is told in local time); 0 = UTC
    utc_offset_h: Annotated[float, msgspec.Meta(ge=-12, le=14)] = 0.0

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(FACTORS)
        if unknown:
            raise ValueError(f"weights: unknown factor(s) {', '.join(sorted(unknown))}; expected {', '.join(FACTORS)}")
        missing = set(FACTORS) - set(self.weights)
        if missing:
            raise ValueError(f"weights: missing {', '.join(sorted(missing))}")
        if any(w < 0 for w in self.weights.values()) or abs(sum(self.weights.values()) - 100.0) > 1e-9:
            raise ValueError(f"weights: must be >= 0 and add up to 100, got {sum(self.weights.values())}")
        if not self.top_oil_normal_c < self.top_oil_alarm_c <= self.top_oil_trip_c:
            raise ValueError("top_oil_normal_c < top_oil_alarm_c <= top_oil_trip_c expected, got "
                             f"{self.top_oil_normal_c}, {self.top_oil_alarm_c}, {self.top_oil_trip_c}")
        a, b, c = self.vibration_zones_mm_s
        if not 0 < a < b < c:
            raise ValueError(f"vibration_zones_mm_s: expected 0 < A/B < B/C < C/D, got {self.vibration_zones_mm_s}")
        if not self.critical_health < self.warning_health < self.monitor_health:
            raise ValueError("critical_health < warning_health < monitor_health expected")
        if not 0 < self.trend_confidence < 1:
            raise ValueError(f"trend_confidence: expected 0..1, got {self.trend_confidence}")
        for key in ("trend_window_days", "oil_slope_full_c_per_day", "maintenance_interval_days",
                    "annual_failure_rate_at_full_health", "mttf_at_zero_health_hours", "maintenance_duration_hours"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: must be > 0, got {getattr(self, key)}")
        if not self.precursor_oil_excess_c > 0:
            raise ValueError(f"precursor_oil_excess_c: must be > 0, got {self.precursor_oil_excess_c}")
        if self.ageing_rate_full <= 1 or self.dga_level_full <= 1:
            raise ValueError("ageing_rate_full and dga_level_full must be > 1")
