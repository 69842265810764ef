"""The one severity vocabulary: every finding, event, incident, alert and webhook speaks it.

Ordered from least to most severe. A grid status of OK is "no finding"; the cyber sentinel uses all four."""

from __future__ import annotations

from typing import Literal

__all__ = ["SEVERITIES", "Severity", "severity_rank"]

Severity = Literal["INFO", "WARNING", "CRITICAL", "EMERGENCY"]
SEVERITIES: tuple[Severity, ...] = ("INFO", "WARNING", "CRITICAL", "EMERGENCY")


def severity_rank(severity: str) -> int:
    """0 for INFO .. 3 for EMERGENCY; an unknown name is a ValueError naming it."""
    try:
        return SEVERITIES.index(severity)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"unknown severity {severity!r}; expected one of {', '.join(SEVERITIES)}") from None
