"""What every benchmark shares: timing, and printing figures beside the machine's raw baseline.

A benchmark prints one human line per figure as it measures, then one JSON object per figure per
line, so tools can pick the JSON lines out (``grep '^{'``)::

    {"name": "hub_ingest_apply_sync", "value": 151234.5, "unit": "rows/s", "baseline": 402113.0, "ratio": 0.376}

``baseline`` is the same work done the most direct way the machine allows (for ingest: a binary
COPY of prebuilt rows), measured in the same run; ``ratio`` is ``value / baseline``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["REPO", "Figure", "best_of", "machine", "print_json_lines", "rate", "use_repo_root"]

REPO = Path(__file__).resolve().parent.parent

T = TypeVar("T")


def use_repo_root() -> None:
    """Make ``hub``, ``protocols`` and ``tests.support`` importable when run as ``python benchmarks/x.py``."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")

    def human(self) -> str:
        return (f"{self.name:<34} {self.value:>14,.0f} {self.unit:<7} baseline {self.baseline:>14,.0f}"
                f"  ratio {self.ratio:.3f}")

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "value": round(self.value, 1), "unit": self.unit,
                "baseline": round(self.baseline, 1), "ratio": round(self.ratio, 4)}


def print_json_lines(figures: list[Figure]) -> None:
    for figure in figures:
        print(json.dumps(figure.as_json()), flush=True)


def best_of(fn: Callable[[T], object], repeat: int = 3, setup: Callable[[], T] | None = None,
            teardown: Callable[[T], object] | None = None) -> float:
    """Seconds taken by the fastest of ``repeat`` runs of ``fn(setup())``; setup and teardown untimed."""
    best = float("inf")
    for _ in range(repeat):
        arg = setup() if setup is not None else None
        try:
            start = time.perf_counter()
            fn(arg)  # type: ignore[arg-type]
            best = min(best, time.perf_counter() - start)
        finally:
            if teardown is not None:
                teardown(arg)  # type: ignore[arg-type]
    return best


def rate(count: int, seconds: float) -> float:
    """Items per second."""
    return count / seconds if seconds > 0 else float("inf")


def machine() -> str:
    """One line naming this machine, for the human output and the README's table."""
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"
