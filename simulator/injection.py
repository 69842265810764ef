"""Anomaly injection: a scenario's anomalies applied to the plant's baseline values.

Anomalies are injected at the measurement: they change the values the matched points serve, not
the physics behind them (a current step does not heat the transformer). Each is active on
[start_time, start_time + duration_seconds) of scenario time; ``u`` is the time since its start,
``D`` its duration and ``A`` its size per point (``magnitude``, or the fraction times the point's
nominal):

- drift:       + A * u / D                     (a linear ramp that reaches A at the end)
- step:        + A
- spike:       + A * exp(-(u mod P) / (P / 5)) pulses every P = 1 / frequency_hz seconds (one pulse,
               P = D, without frequency_hz): each jumps to A and decays to < 1 % before the next
- oscillation: + A * sin(2 pi f u)
- dropout:     each sample (simulated step) is missing with probability drop_probability

A missing value is NaN; the Modbus server writes NaN into float registers and the "not available"
pattern into integer ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.physics import counter_rng
from simulator.plant import Plant
from simulator.scenario import Anomaly, Scenario, resolve_targets

__all__ = ["Injector", "Target", "anomaly_shape"]

_DROPOUT_STREAM = 0x44524F50  # "DROP"


@dataclass(frozen=True, slots=True)
class Target:
    """One anomaly and the points it hits, with its size per point in each point's unit."""

    index: int
    anomaly: Anomaly
    points: np.ndarray  # plant point indices
    size: np.ndarray  # A per point (0 for dropouts)


def anomaly_shape(anomaly: Anomaly, t_s: float) -> float:
    """The dimensionless shape of an additive anomaly at scenario time ``t_s`` (0 when inactive)."""
    u = t_s - anomaly.start_time
    if u < 0 or t_s >= anomaly.end_time:
        return 0.0
    match anomaly.type:
        case "step":
            return 1.0
        case "drift":
            return u / anomaly.duration_seconds
        case "oscillation":
            assert anomaly.frequency_hz is not None
            return math.sin(2 * math.pi * anomaly.frequency_hz * u)
        case "spike":
            period = 1.0 / anomaly.frequency_hz if anomaly.frequency_hz else anomaly.duration_seconds
            return math.exp(-(u % period) / (period / 5.0))
    return 0.0


class Injector:
    """Applies a scenario to the plant's values; no scenario means no change."""

    def __init__(self, plant: Plant, scenario: Scenario | None, *, seed: int = 0) -> None:
        self.seed = seed
        self.targets: list[Target] = []
        if scenario is None:
            return
        for i, (anomaly, points) in enumerate(zip(scenario.anomalies, resolve_targets(scenario, plant))):
            idx = np.array([p.index for p in points], dtype=np.int64)
            fraction = anomaly.fraction_of_nominal
            if anomaly.type == "dropout":
                size = np.zeros(len(points))
            elif fraction is not None:
                size = np.array([fraction * (p.nominal or 0.0) for p in points])
            else:
                size = np.full(len(points), anomaly.magnitude or 0.0)
            self.targets.append(Target(i, anomaly, idx, size))

    def apply(self, values: np.ndarray, t_s: float, step: int) -> np.ndarray:
        """Values with every anomaly active at ``t_s`` applied; dropped samples are NaN (a new array).

        ``step`` is the simulated step of ``t_s``: the dropout draw of a step is fixed by (seed, step).
        """
        out = np.array(values, dtype=np.float64, copy=True)
        dropped = np.zeros(out.shape, dtype=bool)
        rng: np.random.Generator | None = None
        for target in self.targets:
            a = target.anomaly
            if not a.start_time <= t_s < a.end_time:
                continue
            if a.type == "dropout":
                rng = rng or counter_rng(self.seed, _DROPOUT_STREAM, step)
                uniform = rng.random(len(out))  # one draw per plant point: independent of other targets
                dropped[target.points] |= uniform[target.points] < (a.drop_probability or 0.0)
            else:
                out[target.points] += target.size * anomaly_shape(a, t_s)
        out[dropped] = np.nan
        return out

    def active(self, t_s: float) -> list[Target]:
        """The targets whose anomaly is active at ``t_s``."""
        return [t for t in self.targets if t.anomaly.start_time <= t_s < t.anomaly.end_time]
