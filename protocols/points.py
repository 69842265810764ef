"""Fields every point has, whatever its protocol."""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Seconds = Annotated[float, msgspec.Meta(gt=0.0, le=86_400.0)]
Unit = Annotated[str, msgspec.Meta(max_length=16)]
Nominal = Annotated[float, msgspec.Meta(gt=0.0)]
EnvName = Annotated[str, msgspec.Meta(pattern=r"^([A-Z_][A-Z0-9_]*)?$")]


def check_finite(struct: object, *fields: str) -> None:
    """Raise ValueError naming the first of ``fields`` (float or None) that is NaN or infinite.

    TOML spells ``nan`` and ``inf`` as numbers, and a range check lets them through (NaN compares
    false; ``inf > 0``): a scale of ``nan`` would turn every value invalid, a limit of ``nan`` would
    never trip, and neither would say why. Refused at load time instead, naming the key."""
    for name in fields:
        value = getattr(struct, name)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} = {value} is not a finite number")


def check_limits(limit_low: float | None, limit_high: float | None) -> None:
    if limit_low is not None and limit_high is not None and limit_low >= limit_high:
        raise ValueError(f"limit_low {limit_low} must be below limit_high {limit_high}")


def check_unique_metrics(metrics: list[str]) -> None:
    seen: set[str] = set()
    for i, m in enumerate(metrics):
        if m in seen:
            raise ValueError(f"points[{i}].metric {m!r} appears twice")
        seen.add(m)
