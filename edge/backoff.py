"""Capped exponential backoff with full jitter (the AWS architecture blog's variant)."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s, self.max_s = initial_s, max_s
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next try."""
        cap = min(self.max_s, self.initial_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return self._rng.uniform(cap / 2, cap)

    def reset(self) -> None:
        self.failures = 0
