"""Anomaly scoring at the edge: one ``models.runtime.Scorer`` call per buffered batch, and events.

The daemon's writer drains everything queued into one batch; :meth:`EdgeScoring.score` scores the
batch's reading rows in one call (detectors always, the loaded model when there is one), so the
fixed cost of a call (about 2 ms) is paid once per batch, not per reading. :class:`AnomalyMonitor`
turns scores into ``anomaly_<type>`` events, once per device and metric per episode, with
hysteresis (as ``edge.limits`` does for grid-code limits). ``ScoringSettings`` name the detectors,
their combination and calibration; ``ScoringSettings.points`` overrides the detector set and the
thresholds of single points.

Imports ``models.runtime`` only (numpy, onnxruntime): never scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np

from edge.buffer import ReadingRow
from models.detectors import DetectorConfig, type_names
from models.runtime import Scorer
from protocols.config import ScoringSettings
from protocols.reading import QualityFlag
from protocols.wire import Event

__all__ = ["AnomalyMonitor", "EdgeScoring", "detector_config"]

_BAD = int(QualityFlag.INVALID | QualityFlag.COMM_LOST | QualityFlag.SUBSTITUTED)


class AnomalyMonitor:
    """Per (device, metric): raised at ``threshold`` (WARNING) or ``critical_threshold`` (CRITICAL),
    escalated once from WARNING to CRITICAL, cleared once the score has stayed below ``clear_below``
    for ``clear_after`` readings in a row."""

    def __init__(self, substation: str, settings: ScoringSettings) -> None:
        self.substation = substation
        self.settings = settings
        # (device, metric) -> [type, severity, readings in a row below clear_below]
        self.active: dict[tuple[str, str], list] = {}
        self._thresholds: dict[tuple[str, str], tuple[float, float]] = {}
        self._lowest = min([settings.threshold, *(p.threshold for p in settings.points.values()
                                                  if p.threshold is not None)])

    def thresholds(self, device_id: str, metric: str) -> tuple[float, float]:
        """``(threshold, critical_threshold)`` of a point: its override in ``settings.points``, or the substation's."""
        s = self.settings
        got = self._thresholds.get((device_id, metric))
        if got is None:
            p = s.point(device_id, metric)
            got = (s.threshold if p is None or p.threshold is None else p.threshold,
                   s.critical_threshold if p is None or p.critical_threshold is None else p.critical_threshold)
            self._thresholds[(device_id, metric)] = got
        return got

    def check(self, rows: Sequence[ReadingRow], scores: np.ndarray, types: Sequence[str]) -> list[Event]:
        s = self.settings
        if not self.active and (len(scores) == 0 or float(scores.max()) < self._lowest):
            return []  # the usual case: nothing raised, nothing to clear
        events: list[Event] = []
        active = self.active
        for i in range(len(rows)):
            score = float(scores[i])
            key = (rows[i][1], rows[i][2])
            held = active.get(key)
            if held is None:
                threshold, critical = self.thresholds(*key)
                if score >= threshold:
                    severity = "CRITICAL" if score >= critical else "WARNING"
                    active[key] = [types[i], severity, 0]
                    events.append(self._event(rows[i], score, types[i], "raised", severity))
            elif score < s.clear_below:
                held[2] += 1
                if held[2] >= s.clear_after:
                    del active[key]
                    events.append(self._event(rows[i], score, held[0], "cleared", "INFO"))
            else:
                held[2] = 0
                if held[1] == "WARNING" and score >= self.thresholds(*key)[1]:
                    held[1] = "CRITICAL"
                    events.append(self._event(rows[i], score, held[0], "raised", "CRITICAL"))
        return events

    def _event(self, row: ReadingRow, score: float, kind: str, state: str, severity: str) -> Event:
        ts, device, metric, value, unit = row[0], row[1], row[2], row[3], row[4]
        etype = f"anomaly_{kind}"
        if state == "raised":
            what = f"{kind.capitalize()} anomaly on {device} {metric}: score {score:.2f}"
            if value is not None:
                what += f" at {value:g} {unit}".rstrip()
        else:
            what = f"{kind.capitalize()} anomaly on {device} {metric} cleared (score {score:.2f})"
        return Event(ts=datetime.fromtimestamp(ts, UTC), substation=self.substation, device_id=device,
                     metric=metric, type=etype, state=state, severity=severity,  # type: ignore[arg-type]
                     value=value, threshold=self.thresholds(device, metric)[0] if state == "raised" else None,
                     unit=unit,
                     description=what)


class EdgeScoring:
    """The edge's scorer and anomaly monitor. ``score`` is called from one thread at a time."""

    def __init__(self, substation: str, settings: ScoringSettings, scorer: Scorer | None = None) -> None:
        self.settings = settings
        self.scorer = scorer or Scorer(config=detector_config(settings))
        self.monitor = AnomalyMonitor(substation, settings)
        self._configured: set[tuple[str, str]] = set()  # series whose per-point detector set is applied
        self.readings_scored = 0
        self.calls = 0

    def score(self, rows: Sequence[ReadingRow]) -> tuple[tuple[list[float], list[str]], list[Event]]:
        """Scores and types of ``rows`` (in time order per series) in one scorer call, and the events."""
        if not rows:
            return ([], []), []
        n = len(rows)
        _, devices, metrics, raw, _, _, flags = zip(*rows)
        values = np.array(raw, dtype=np.float64)  # None -> NaN
        values[(np.array(flags, dtype=np.int64) & _BAD) != 0] = np.nan
        # the series (in order of first appearance) and each row's series
        index: dict[tuple[str, str], int] = {}
        series = np.fromiter((index.setdefault(k, len(index)) for k in zip(devices, metrics)), dtype=np.intp, count=n)
        keys = list(index)
        # at[k, j]: the row of series k's j-th reading in the batch
        counts = np.bincount(series, minlength=len(keys))
        order = np.argsort(series, kind="stable")
        at = np.zeros((len(keys), int(counts.max())), dtype=np.intp)
        at[series[order], np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)] = order
        score = np.zeros(n, dtype=np.float32)
        codes = np.zeros(n, dtype=np.int8)
        # a series may appear several times in a batch (several polls drained at once): blocks of
        # the series that have at least n readings advance together, as Scorer.score_readings does
        if self.settings.points:
            self._configure([k for k in keys if k not in self._configured])
        done = 0
        for count in np.unique(counts).tolist():
            sel = np.flatnonzero(counts >= count)
            take = at[sel, done:count]
            out = self.scorer.score_block(keys if len(sel) == len(keys) else [keys[k] for k in sel.tolist()],
                                          values[take])
            score[take], codes[take] = out.score, out.type
            done = count
        self.calls += 1
        self.readings_scored += len(rows)
        types = type_names(codes).tolist()
        scores = np.round(score.astype(np.float64), 4)
        events = self.monitor.check(rows, scores, types)
        return (scores.tolist(), types), events

    def _configure(self, keys: list[tuple[str, str]]) -> None:
        """Apply the per-point detector sets of ``settings.points`` to new series."""
        for key in keys:
            self._configured.add(key)
            point = self.settings.point(*key)
            if point is not None and point.detectors is not None:
                self.scorer.detectors.set_detectors(self.scorer.series_rows([key]), point.detectors)


def detector_config(settings: ScoringSettings) -> DetectorConfig:
    """The detectors' configuration the edge's scoring settings name."""
    return DetectorConfig(detectors=tuple(settings.detectors), combine=settings.combine,
                          calibrate=settings.calibrate, quiet_warmup=settings.warmup, tail_shape=settings.tail_shape)
