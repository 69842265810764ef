"""Fields every point has, whatever its protocol."""

from __future__ import annotations

from typing import Annotated

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Seconds = Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)]
Unit = Annotated[str, msgspec.Meta(max_length=16)]
Nominal = Annotated[float, msgspec.Meta(gt=0.0)]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^([A-Z_][A-Z0-9_]*)?$")]


def check_limits(limit_low: float | None, limit_high: float | None) -> None:
    if limit_low is not None and limit_high is not None and limit_low >= limit_high:
        raise ValueError(f"limit_low {limit_low} must be below limit_high {limit_high}")


def check_unique_metrics(metrics: list[str]) -> None:
    seen: set[str] = set()
    for i, m in enumerate(metrics):
        if m in seen:
            raise ValueError(f"points[{i}].metric {m!r} appears twice")
        seen.add(m)
