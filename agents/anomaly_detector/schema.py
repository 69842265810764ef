"""What the anomaly detector is handed: per-sensor series with the edge's scores, and its config.

A :class:`SensorSeries` is one metric of one device: the recent readings (timestamps, values, the
edge's ``anomaly_score`` 0..1 with NaN where it did not score, and ``anomaly_type``), and optionally
a longer history (the last 90 days, downsampled if the reader likes) for the hour-of-week
baselines. Without a history the recent readings are their own history.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = ["AGENT", "AnomalyConfig", "AnomalyInput", "SensorSeries"]

AGENT = "anomaly_detector"

Positive = Annotated[float, msgspec.Meta(gt=0)]
Score = Annotated[float, msgspec.Meta(gt=0, le=1)]


class SensorSeries(msgspec.Struct, frozen=True, kw_only=True):
    """One metric of one device over time.

    ``timestamps``: non-decreasing float seconds since the epoch (or ``datetime64``, read as UTC).
    ``values``: float, NaN where a sample is missing. ``scores``: the edge's anomaly score per
    reading, NaN (or None) where there is none; ``None`` for the whole field: no scores at all.
    ``types``: the edge's anomaly type per reading, as names (``spike``; None or ``""`` for none)
    or as integer codes into :data:`models.detectors.ANOMALY_TYPES`. ``history_timestamps`` /
    ``history_values``: the longer history for the baselines (same conventions as the recent
    series). ``device_kind`` names the equipment in text (``transformer``); default: from the id's
    prefix (``TR-07``: transformer). Array-likes are accepted and converted when analysed.
    """

    substation: str
    device_id: str
    metric: str
    timestamps: Any
    values: Any
    unit: str = ""
    scores: Any = None
    types: Any = None
    history_timestamps: Any = None
    history_values: Any = None
    device_kind: str = ""


class AnomalyInput(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one analysis looks at. ``model`` is the kind of learned model the edges score
    with (``isolation_forest``, ``lof``, ``mahalanobis``, ``risk_classifier``; empty: detectors
    only); it only names the score in the text ("Isolation Forest score: 0.94")."""

    series: list[SensorSeries]
    model: str = ""


class AnomalyConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Thresholds and windows.

    Baselines: per sensor and hour of week (0 = Monday 00:00 in UTC shifted by
    ``utc_offset_hours``), the median and the MAD (times 1.4826; where the MAD is 0, the mean
    absolute deviation times 1.2533) of the history in each trailing window of
    ``baseline_windows_days``, ending where the assessed period (the last ``deviation_window_s``)
    begins. A window is used when the history reaches back ``min_window_coverage`` of it; a bucket
    is trusted with ``min_bucket_count`` samples. A reading's z is its distance from the bucket
    medians interpolated between the middles of the hours, over the largest of the bucket's scale,
    the sensor's week-over-week scale (:func:`.baseline.week_over_week_scale`) and, for a
    quantised sensor, its step. The period's level z is the median z of its readings, shrunk by
    the standard error of that median (``z / sqrt(1 + se^2)``: a few scattered readings prove
    little). A sensor whose level z, in absolute value, over the assessed period (at least
    ``min_recent_readings`` readings in trusted buckets, against the longest used window) reaches
    ``deviation_z_warning`` is a ``baseline_deviation`` (CRITICAL from ``deviation_z_critical``).

    Episodes: readings scoring ``score_threshold`` or more (the edge's alarm threshold), joined
    while the gap between consecutive high readings of a sensor is below ``episode_gap_s``;
    CRITICAL from ``critical_score``. Episodes closer in time than ``correlation_slack_s`` are
    correlated (see :mod:`agents.anomaly_detector.correlate`).
    """

    utc_offset_hours: Annotated[float, msgspec.Meta(ge=-12, le=14)] = 0.0
    baseline_windows_days: tuple[Annotated[int, msgspec.Meta(ge=1, le=3660)], ...] = (30, 60, 90)
    min_window_coverage: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    min_bucket_count: Annotated[int, msgspec.Meta(ge=1)] = 4
    deviation_window_s: Positive = 3600.0
    deviation_z_warning: Positive = 4.0  # an hour level 4 week-to-week scales off its usual: rare by chance
    deviation_z_critical: Positive = 6.0
    min_recent_readings: Annotated[int, msgspec.Meta(ge=1)] = 3
    score_threshold: Score = 0.8
    critical_score: Score = 0.95
    episode_gap_s: Positive = 300.0
    correlation_slack_s: Annotated[float, msgspec.Meta(ge=0)] = 120.0
    max_readings_in_facts: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 5
    max_members_in_facts: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 50

    def __post_init__(self) -> None:
        w = self.baseline_windows_days
        if not w:
            raise ValueError("baseline_windows_days: at least one window")
        if list(w) != sorted(set(w)):
            raise ValueError(f"baseline_windows_days: expected distinct days in increasing order, got {list(w)}")
        if self.deviation_z_critical < self.deviation_z_warning:
            raise ValueError(f"deviation_z_critical ({self.deviation_z_critical:g}) must be at least "
                             f"deviation_z_warning ({self.deviation_z_warning:g})")
        if self.critical_score < self.score_threshold:
            raise ValueError(f"critical_score ({self.critical_score:g}) must be at least "
                             f"score_threshold ({self.score_threshold:g})")
