"""What every agent returns: a finding, with the facts behind it. Pure data, no I/O.

The hub turns findings into incidents (one incident per ongoing condition: findings with the same
``condition_key`` update the open incident rather than open a new one), stores forecasts and
maintenance predictions, and may ask an LLM to narrate them. Every figure an operator needs is in
``facts``; the ``description`` and ``recommendation`` are clear template text built from them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from protocols.severity import SEVERITIES, severity_rank  # the one vocabulary, re-exported for the agents

__all__ = ["SEVERITIES", "Finding", "severity_rank"]


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One thing an agent found. ``facts`` holds the evidence: measured values, thresholds, feature
    contributions, the chain of log entries; plain JSON types only (str, int, float, bool, None,
    lists and dicts of them), so it travels to the API and to an LLM as it is."""

    agent: str
    type: str  # e.g. voltage_sag, current_unbalance, transformer_ageing, brute_force
    severity: str  # one of SEVERITIES
    timestamp: datetime  # when the condition was observed (UTC): its latest evidence
    device_id: str
    description: str
    substation: str = ""
    metric: str = ""
    value: float | None = None  # the figure the finding is about (the worst reading, the health score...)
    threshold: float | None = None
    nominal: float | None = None
    confidence: float = 1.0  # 0..1: how much data the finding rests on
    recommendation: str = ""
    facts: dict[str, Any] = msgspec.field(default_factory=dict)
    start: datetime | None = None  # when the condition began, where known
    key: str = ""  # the ongoing condition this finding belongs to; default agent:type:device:metric

    def condition_key(self) -> str:
        return self.key or f"{self.agent}:{self.type}:{self.substation}:{self.device_id}:{self.metric}"
