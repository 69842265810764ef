"""Streaming detectors that need no training, for the classic shapes of trouble in a series.

A :class:`DetectorBank` holds the state of many series at once (one row per series, in arrays) and
``update(values)`` advances the series by a block of samples ``(series, B)``, vectorised over both
axes: recurrences run as cumulative sums and accumulates, not as a Python loop over samples. The
score at sample ``t`` uses samples up to ``t`` only, and feeding a history in blocks of any size
gives the same scores as feeding it at once.

Detectors, all in units of samples (each statistic is divided by its threshold ``h``, so 1.0 is
"at the threshold"; see ``docs/detection.md``):

- **step**: two-sided CUSUM of the residual of a 5-sample running median from a fast EWMA baseline,
  in units of the residual's long-run scale.
- **drift**: EWMA drift: the gap between the fast and a slow EWMA baseline, in units of the
  geometric mean of the two baselines' long-run deviations (the fast one alone calls every slow
  swing a drift, the slow one alone soon absorbs the drift it measures); for a series marked
  steady (:meth:`DetectorBank.set_steady`: voltage, frequency), the deviations as they were
  ``drift_scale_lag`` samples back, so a drift does not widen its own yardstick; muted for
  ``slow_span`` samples after a step alarm.
- **spike**: robust z-score: distance from the median of the previous ``window`` samples, over
  1.4826 x their MAD, less what the 5-sample median also moved (so a lasting shift is not a spike).
- **oscillation**: band energy: the largest ratio, over periods of 2 to ``window/2`` samples, of the
  window's sinusoid power (Hann taper, level and trend removed, spikes clipped) to its long-run
  average.
- **dropout**: the fraction of missing samples in the window, or the current run of missing ones.
- **frozen**: the run of exactly repeated values, against the longer of the run length this series'
  own change rate makes a one-in-a-million event and ``frozen_learn_factor`` times the longest run
  it has already ended without a finding. A quantised sensor repeats itself in clumps (SKAB's flow
  meter: 78 % of samples change, yet runs of 11-17 equal values come every few hundred), which the
  change rate alone calls impossible. A run that reached its bound was a finding and is never
  learned, so a sensor that freezes twice is caught twice; the bound grows only with runs the
  series ends short of it. (Learning is part of calibration: ``calibrate=False`` keeps the change
  rate alone.)

Calibration, per series (``DetectorConfig.calibrate``): each statistic ``r`` becomes a surprise
``u = -log10 p``, ``p`` the probability of an episode this high in this series, learned online from
the series' own history (:func:`_calibrated`: upcrossing rates of a grid of levels with hysteresis,
and a peaks-over-threshold exponential tail beyond the highest level seen often enough, both
starting from the nominal tail ``u = 6 r`` the thresholds were designed for, and never above it;
a series whose own episodes have reached its nominal threshold has shown a heavy tail, and past
its highest anchored level the tail is a generalised Pareto of shape ``tail_shape``).
The spike detector's scale is never finer than the series' resolution (its smallest change), so a
move of one quantum is at most 1/6.5 of the spike threshold. :func:`combine` merges
the detectors' surprises by Fisher's method (agreement counts; ``combine="max"``: the largest),
and the score is ``v^p / (v^p + 1)`` of the combined surprise over 6 (0.5 at a nominal threshold).
Nothing alarms during the first ``quiet_warmup`` valid samples of a series.
``DetectorConfig(calibrate=False, combine="max", quiet_warmup=0)`` is the scoring before
calibration, exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal

import msgspec
import numpy as np

from models._windows import band_kernel, causal_fill, cusum, ewma, last_index, trailing_windows

__all__ = [
    "ANOMALY_TYPES", "COMBINE", "DETECTORS", "DetectorBank", "DetectorConfig", "DetectorOutput", "U_ALARM",
    "combine", "hill", "type_names",
]

DETECTORS = ("step", "drift", "spike", "oscillation", "dropout", "frozen")
"""Columns of ``DetectorOutput.scores``; the type code of detector ``i`` is ``i + 1``."""
ANOMALY_TYPES = ("none", *DETECTORS, "multivariate")
"""Type codes: index into this tuple. ``multivariate`` is a learned model's finding."""
STEP, DRIFT, SPIKE, OSCILLATION, DROPOUT, FROZEN = range(6)
MULTIVARIATE_CODE = ANOMALY_TYPES.index("multivariate")

CALIBRATED = (STEP, DRIFT, SPIKE, OSCILLATION)
"""Detectors of the signal, calibrated per series and combined (Fisher); dropout and frozen are findings
about the data (a fact, not a statistic with a tail) and keep their designed thresholds."""
SIGNAL = (STEP, DRIFT, SPIKE, OSCILLATION)
U_ALARM = 6.0
"""Surprise ``-log10 p`` at a detector's nominal threshold: the thresholds were set for about one
alarm per million samples of clean noise; the combined score is 0.5 at this surprise."""
LEVELS = np.array([0.15, 0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0])
"""Levels of a statistic (over its threshold) whose upcrossing rates each series learns."""
COMBINE = ("fisher", "max")
SLOPE_MIN = 0.5  # the shallowest tail extrapolated: u per unit of the statistic over its threshold
SLOPE_MAX = U_ALARM  # the steepest: the nominal tail's

_NEVER = np.iinfo(np.int64).min // 4
_CHUNK_SAMPLES = 4096  # series x samples of a block scored in one pass (DetectorBank.update)
_MAD_TO_SIGMA = 1.4826
_MEAN_ABS_TO_SIGMA = 1.2533  # sqrt(pi / 2): mean absolute deviation of a Gaussian -> its sigma

Positive = Annotated[int, msgspec.Meta(ge=1)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]


class DetectorConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Window lengths (in samples) and thresholds of the detectors. Defaults suit 1 s to 1 h polling."""

    window: Annotated[int, msgspec.Meta(ge=8, le=1024)] = 32
    median_len: Positive = 5
    fast_span: Positive = 32
    slow_span: Positive = 256
    scale_span: Positive = 1024
    warmup: Positive = 64
    step_k: PositiveFloat = 1.0
    step_h: PositiveFloat = 9.0
    drift_h: PositiveFloat = 1.8
    # a steady series' drift is measured in units of its scales as they were this many samples ago
    drift_scale_lag: Annotated[int, msgspec.Meta(ge=0, le=65_536)] = 512
    spike_h: PositiveFloat = 6.5
    oscillation_h: PositiveFloat = 20.0
    dropout_fraction: PositiveFloat = 0.5
    dropout_run: Positive = 5
    frozen_min_run: Positive = 10
    frozen_learn_factor: Annotated[float, msgspec.Meta(ge=1.0, le=100.0)] = 2.0
    hill: PositiveFloat = 4.0
    # --- calibration per series (see the module docstring and docs/detection.md)
    calibrate: bool = True  # False: the raw statistics' nominal tail (the scoring before calibration)
    combine: Literal["fisher", "max"] = "fisher"
    agreement_cost: Annotated[float, msgspec.Meta(ge=0, le=10)] = 1.0  # surprise the Fisher combination gives up
    detectors: tuple[str, ...] = DETECTORS  # the detectors that score (default for every series)
    quiet_warmup: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 128  # valid samples before any alarm
    calib_span: Annotated[int, msgspec.Meta(ge=16, le=10_000_000)] = 16_384  # memory of the tail estimate
    prior_samples: PositiveFloat = 2000.0  # weight of the nominal tail, in samples
    tail_min: PositiveFloat = 5.0  # upcrossings a level needs before it anchors the tail
    # shape of the tail past the highest anchored level of a series whose own episodes have reached
    # its nominal threshold (generalised Pareto; 0: the exponential), steady series excepted
    tail_shape: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.25  # a Student-t with 4 degrees of freedom

    def __post_init__(self) -> None:
        if not self.fast_span < self.slow_span <= self.scale_span:
            raise ValueError(f"need fast_span < slow_span <= scale_span, got {self.fast_span}, "
                             f"{self.slow_span}, {self.scale_span}")
        if self.median_len > self.window:
            raise ValueError(f"median_len {self.median_len} exceeds window {self.window}")
        if not 0.0 <= self.tail_shape <= 1.0:
            raise ValueError(f"tail_shape {self.tail_shape:g}: expected 0 to 1")
        unknown = [d for d in self.detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {', '.join(DETECTORS)}")


@dataclass(frozen=True, slots=True)
class DetectorOutput:
    """Scores of one block: arrays shaped ``(series, B)`` (``scores``: ``(series, B, 6)``)."""

    score: np.ndarray  # float32 0..1, the combined score
    type: np.ndarray  # int8 code into ANOMALY_TYPES (the detector with the largest score)
    confidence: np.ndarray  # float32 0..1: how much data the score rests on
    scores: np.ndarray  # float32 0..1 per detector, columns in DETECTORS order
    surprise: np.ndarray | None = None  # float32 (series, B, 6): -log10 of each detector's tail probability


def hill(r: np.ndarray, p: float) -> np.ndarray:
    """``r^p / (r^p + 1)``: a statistic over its threshold, mapped to 0..1 (0.5 at the threshold)."""
    rp = np.power(np.maximum(r, 0.0), p)
    with np.errstate(invalid="ignore"):
        out = np.where(np.isinf(rp), 1.0, rp / (rp + 1.0))
    return np.nan_to_num(out, nan=0.0)


def type_names(codes: np.ndarray) -> np.ndarray:
    """Type codes -> their names (object array)."""
    return np.asarray(ANOMALY_TYPES, dtype=object)[np.asarray(codes, dtype=np.intp)]


_FIELDS_2D = ("hist", "hist_clip", "hist_valid", "hist_resid", "hist_power", "osc_num", "cal_up", "cal_den",
              "cal_hi", "cal_lo", "cal_nx", "cal_sx", "cal_pk", "enabled")
_CAL_FIELDS = ("cal_up", "cal_den", "cal_hi", "cal_lo", "cal_nx", "cal_sx", "cal_pk")
_PEAK_CAP = 1000.0  # statistics (over their threshold) above this count as this much in a peak
_FIELDS_1D = (
    "n", "n_valid", "last", "fast_num", "fast_den", "slow_num", "slow_den", "sfast_num", "sfast_den",
    "sslow_num", "sslow_den", "cus_pos", "cus_neg", "osc_den", "chg_num", "chg_den", "same_total",
    "same_reset", "p_reset", "run_learned", "last_valid", "last_step_alarm", "mad_num", "mad_den", "quantum",
    "steady", "ring_row",
)


class DetectorBank:
    """State and update of every detector for ``n_series`` series (rows), grown on demand."""

    def __init__(self, n_series: int = 0, config: DetectorConfig | None = None) -> None:
        self.config = config or DetectorConfig()
        c = self.config
        self._bins = tuple(range(2, c.window // 2 + 1))
        self._kernel, self._norm = band_kernel(c.window, self._bins)
        self._a_fast = 2.0 / (c.fast_span + 1)
        self._a_slow = 2.0 / (c.slow_span + 1)
        self._a_scale = 2.0 / (c.scale_span + 1)
        self._h = c.window  # samples of history kept: the spike window ends one sample back
        self._m = max(2, c.fast_span // 2)  # samples averaged for the step residual's long-run scale
        self._q = max(2, c.window // 4)  # consecutive windows whose band power is averaged
        self._a_cal = 2.0 / (c.calib_span + 1)
        self.n_series = 0
        # steady series' drift scales' state (sfast num, den, sslow num, den) after each of their last
        # drift_scale_lag samples, in a ring: sample t at slot t % drift_scale_lag. Rings only for
        # steady series (16 KB each; most series are not steady): ring_row[series] is its row here
        self.hist_scale = np.zeros((0, 4, c.drift_scale_lag))
        self._rings = 0  # rows of hist_scale in use
        self._alloc(0)
        self.grow(n_series)

    # -- state ------------------------------------------------------------------------------------

    def _alloc(self, n: int) -> None:
        h, nb = self._h, len(self._bins)
        self.n = np.zeros(n, dtype=np.int64)  # samples seen: the global index of the next one
        self.n_valid = np.zeros(n, dtype=np.int64)
        self.last = np.full(n, np.nan)  # last valid value
        self.hist = np.full((n, h), np.nan)  # forward-filled values
        self.hist_clip = np.full((n, h), np.nan)  # the same, spikes clipped, for band energy
        self.hist_valid = np.ones((n, h), dtype=bool)
        self.hist_resid = np.zeros((n, self._m - 1))
        self.hist_power = np.zeros((n, self._q - 1, nb))
        for name in ("fast_num", "fast_den", "slow_num", "slow_den", "sfast_num", "sfast_den",
                     "sslow_num", "sslow_den", "cus_pos", "cus_neg", "osc_den", "chg_num", "chg_den",
                     "mad_num", "mad_den"):
            setattr(self, name, np.zeros(n))
        self.osc_num = np.zeros((n, nb))
        self.same_total = np.zeros(n, dtype=np.int64)
        self.same_reset = np.zeros(n, dtype=np.int64)
        self.p_reset = np.full(n, np.nan)
        self.run_learned = np.zeros(n)  # the longest run of repeats ended without a frozen finding
        self.last_valid = np.full(n, -1, dtype=np.int64)
        self.last_step_alarm = np.full(n, _NEVER, dtype=np.int64)
        self.quantum = np.full(n, np.inf)  # smallest change seen between valid samples: the resolution
        # series the grid holds at a level (voltage, frequency): see set_steady
        self.steady = np.zeros(n, dtype=bool)
        self.ring_row = np.full(n, -1, dtype=np.intp)  # the row of hist_scale of a steady series (-1: none)
        # calibration: per calibrated detector, EWMAs of its upcrossings of each level and of the
        # samples it was eligible, and per level the last sample above it and below its half
        self.cal_up = np.zeros((n, len(CALIBRATED), len(LEVELS)))
        self.cal_den = np.zeros((n, len(CALIBRATED)))
        self.cal_hi = np.full((n, len(CALIBRATED), len(LEVELS)), _NEVER, dtype=np.int64)  # last sample above
        self.cal_lo = np.full((n, len(CALIBRATED), len(LEVELS)), _NEVER + 1, dtype=np.int64)  # and below half
        self.cal_nx = np.zeros((n, len(CALIBRATED), len(LEVELS)))  # EWMAs of episodes ended per level
        self.cal_sx = np.zeros((n, len(CALIBRATED), len(LEVELS)))  # and of their peaks' excess over it
        self.cal_pk = np.zeros((n, len(CALIBRATED), len(LEVELS)))  # the running peak since the last low
        self.enabled = np.broadcast_to(np.isin(DETECTORS, self.config.detectors), (n, len(DETECTORS))).copy()

    def grow(self, n_series: int) -> None:
        """Make room for ``n_series`` series; new rows start empty."""
        if n_series <= self.n_series:
            return
        old = {name: getattr(self, name) for name in (*_FIELDS_1D, *_FIELDS_2D)}
        k = self.n_series
        self._alloc(n_series)
        for name, arr in old.items():
            getattr(self, name)[:k] = arr
        self.n_series = n_series

    def reset(self, rows: np.ndarray) -> None:
        """Forget the history of ``rows`` (a replaced sensor, say); whether they are steady stays."""
        fresh = DetectorBank(len(rows), self.config)
        for name in (*_FIELDS_1D, *_FIELDS_2D):
            if name not in ("steady", "enabled", "ring_row"):
                getattr(self, name)[rows] = getattr(fresh, name)
        ring = self.ring_row[rows]
        self.hist_scale[ring[ring >= 0]] = 0.0

    def set_steady(self, rows: np.ndarray, steady: bool | np.ndarray = True) -> None:
        """Mark ``rows`` as series the grid holds at a level (bus voltage, frequency). Their drift is
        measured against the scales they had ``drift_scale_lag`` samples earlier, so a sensor drifting
        away does not widen the yardstick it is measured with; a load-following series (current,
        power, temperature) keeps scales that follow its own swings. Set before its first sample."""
        rows = np.asarray(rows, dtype=np.intp)
        if len(rows) and rows.max() >= self.n_series:
            self.grow(int(rows.max()) + 1)
        self.steady[rows] = steady
        need = np.unique(rows[self.steady[rows] & (self.ring_row[rows] < 0)])
        if len(need):  # a ring for each new steady series
            used = self._rings
            if used + len(need) > len(self.hist_scale):
                old = self.hist_scale
                self.hist_scale = np.zeros((max(used + len(need), 2 * len(old)), *old.shape[1:]))
                self.hist_scale[:used] = old[:used]
            self.ring_row[need] = np.arange(used, used + len(need))
            self._rings = used + len(need)

    def set_detectors(self, rows: np.ndarray, detectors: tuple[str, ...] | list[str]) -> None:
        """Score ``rows`` with ``detectors`` only (names from DETECTORS); the others score 0 there."""
        unknown = [d for d in detectors if d not in DETECTORS]
        if unknown:
            raise ValueError(f"unknown detector(s) {unknown}; known: {', '.join(DETECTORS)}")
        rows = np.asarray(rows, dtype=np.intp)
        if len(rows) and rows.max() >= self.n_series:
            self.grow(int(rows.max()) + 1)
        self.enabled[rows] = np.isin(DETECTORS, list(detectors))

    # -- update -----------------------------------------------------------------------------------

    def update(self, values: np.ndarray, valid: np.ndarray | None = None,
               rows: np.ndarray | None = None) -> DetectorOutput:
        """Advance series ``rows`` (default: all, in order) by a block ``values`` of shape ``(len(rows), B)``.

        NaN, or ``valid=False``, marks a missing sample. Returns the block's scores.
        """
        x = np.asarray(values, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        rows = np.arange(self.n_series) if rows is None else np.asarray(rows, dtype=np.intp)
        if x.shape[0] != len(rows):
            raise ValueError(f"{x.shape[0]} series of values for {len(rows)} rows")
        v = np.isfinite(x) if valid is None else (np.asarray(valid, dtype=bool).reshape(x.shape) & np.isfinite(x))
        if len(rows) and rows.max() >= self.n_series:
            self.grow(int(rows.max()) + 1)
        s, b = x.shape
        if b == 0 or s == 0:
            empty = np.zeros((s, b), dtype=np.float32)
            return DetectorOutput(empty, np.zeros((s, b), dtype=np.int8), empty.copy(),
                                  np.zeros((s, b, len(DETECTORS)), dtype=np.float32),
                                  np.zeros((s, b, len(DETECTORS)), dtype=np.float32))
        # a few dozen series at a time, so that the many intermediate arrays of a pass stay in the
        # CPU's cache (every statistic is per series: the scores do not depend on the split)
        per = max(1, _CHUNK_SAMPLES // b)
        if s <= per or len(np.unique(rows)) < s:  # (a row twice in one call: as one pass, as ever)
            return self._update(x, v, rows)
        parts = [self._update(x[i:i + per], v[i:i + per], rows[i:i + per]) for i in range(0, s, per)]
        return DetectorOutput(*(np.concatenate([getattr(p, f.name) for p in parts])
                                for f in dataclasses.fields(DetectorOutput)))

    def _update(self, x: np.ndarray, v: np.ndarray, rows: np.ndarray) -> DetectorOutput:
        s, b = x.shape
        c = self.config
        # the series' state: rows in one run (the usual case: every series, in order) as views, read
        # only until the new state is written back at the end; else gathered
        lo = int(rows[0])
        mine = slice(lo, lo + s) if s and rows[-1] - lo == s - 1 and (np.diff(rows) == 1).all() else rows
        st = {name: getattr(self, name)[mine] for name in (*_FIELDS_1D, *_FIELDS_2D)}
        w, h = c.window, self._h
        tiny = 1e-12

        # --- fill, history, counts
        filled, seen = causal_fill(x, v, st["last"])
        prev = np.concatenate([st["last"][:, None], filled[:, :-1]], axis=1)  # last valid value before t
        ext = np.concatenate([st["hist"], filled], axis=1)
        has = ~np.isnan(ext)
        first = np.where(has.any(axis=1), ext[np.arange(s), has.argmax(axis=1)], 0.0)
        ext = np.where(has, ext, first[:, None])
        ext_valid = np.concatenate([st["hist_valid"], v], axis=1)
        nv = st["n_valid"][:, None] + np.cumsum(v, axis=1)  # valid samples up to and including t
        start = st["n"]
        gidx = start[:, None] + np.arange(b)[None, :]
        xf = ext[:, h:]

        # --- running median (robust level) and the spike window before each sample
        med_short = _running_median(trailing_windows(ext, c.median_len, b))
        win_prev = trailing_windows(ext, w, b, end_offset=1)
        med_prev = _median(win_prev)
        mad_prev = _median(np.abs(win_prev - med_prev[..., None]))

        # --- baselines: bias-corrected EWMAs over valid samples (num/den), then shifted one sample
        wv = (v & seen).astype(np.float64)
        xm = np.where(v & seen, med_short, 0.0)
        fast_num, fast_den = _ewmas(self._a_fast, (wv * xm, st["fast_num"]), (wv, st["fast_den"]))
        slow_num, slow_den = _ewmas(self._a_slow, (wv * xm, st["slow_num"]), (wv, st["slow_den"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            fast = fast_num / fast_den
            slow = slow_num / slow_den
            fast_prev = _shift(fast, st["fast_num"] / st["fast_den"])
            slow_prev = _shift(slow, st["slow_num"] / st["slow_den"])
        ok_fast = (v & seen) & np.isfinite(fast_prev)
        ok_slow = (v & seen) & np.isfinite(slow_prev)
        # the step residual's scale is that of its mean over m samples, times sqrt(m): the long-run
        # scale, which autocorrelated noise (and the running median's own smoothing) inflates
        resid = np.where(ok_fast, med_short - np.nan_to_num(fast_prev), 0.0)
        m = self._m
        ext_resid = np.concatenate([st["hist_resid"], resid], axis=1)
        rbar = trailing_windows(ext_resid, m, b).mean(axis=2)
        rf = np.abs(rbar) * np.sqrt(m)
        rs = np.where(ok_slow, np.abs(med_short - np.nan_to_num(slow_prev)), 0.0)
        sfast_num, sfast_den, sslow_num, sslow_den = _ewmas(
            self._a_scale, (rf, st["sfast_num"]), (ok_fast.astype(np.float64), st["sfast_den"]),
            (rs, st["sslow_num"]), (ok_slow.astype(np.float64), st["sslow_den"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            sfast_prev = _shift(sfast_num / sfast_den, st["sfast_num"] / st["sfast_den"]) * _MEAN_ABS_TO_SIGMA
            sslow_prev = _shift(sslow_num / sslow_den, st["sslow_num"] / st["sslow_den"]) * _MEAN_ABS_TO_SIGMA
        level_floor = 1e-9 * (1.0 + np.abs(np.nan_to_num(slow_prev)))
        sfast_prev = np.maximum(np.nan_to_num(sfast_prev), level_floor)
        sslow_prev = np.maximum(np.nan_to_num(sslow_prev), level_floor)

        stats = np.zeros((s, b, len(DETECTORS)))

        # --- step: CUSUM of the residual from the fast baseline
        warm = nv >= c.warmup
        ok = ok_fast & warm
        e = np.where(ok, (med_short - np.nan_to_num(fast_prev)) / sfast_prev, 0.0)
        cus_pos = cusum(np.where(ok, e - c.step_k, 0.0), st["cus_pos"])
        cus_neg = cusum(np.where(ok, -e - c.step_k, 0.0), st["cus_neg"])
        # a lasting shift moves the residual's mean over m samples too; an oscillation does not
        shift = rbar / (sfast_prev / np.sqrt(m))
        step_stat = np.maximum(np.where(shift > 3.0, cus_pos, 0.0), np.where(shift < -3.0, cus_neg, 0.0))
        stats[..., STEP] = np.where(v, step_stat / c.step_h, 0.0)

        # --- drift: fast against slow baseline, in units of the two baselines' deviations; for a
        # steady series, the deviations as they were drift_scale_lag samples back (a drift inflates
        # its distance from the slow baseline: a scale that follows it grows with what it measures)
        drift_scale = np.sqrt(sfast_prev * sslow_prev)
        lag = c.drift_scale_lag
        sr = np.flatnonzero(st["steady"]) if lag else ()
        if len(sr):
            cur = np.stack([sfast_num[sr], sfast_den[sr], sslow_num[sr], sslow_den[sr]], axis=1)  # after each sample
            k = min(b, lag)
            at = (st["ring_row"][sr][:, None, None], np.arange(4)[None, :, None])
            # the state after sample t - lag: in the ring (slot t % lag) for the block's first lag samples
            old = self.hist_scale[(*at, (gidx[sr, :k] % lag)[:, None, :])]
            if b > lag:
                old = np.concatenate([old, cur[:, :, :b - lag]], axis=2)
            floor = level_floor[sr]
            with np.errstate(invalid="ignore", divide="ignore"):
                lag_fast = np.maximum(np.nan_to_num(old[:, 0] / old[:, 1]) * _MEAN_ABS_TO_SIGMA, floor)
                lag_slow = np.maximum(np.nan_to_num(old[:, 2] / old[:, 3]) * _MEAN_ABS_TO_SIGMA, floor)
            # once the old state rests on as many samples as the drift's own warm-up
            settled = old[:, 3] >= 1.0 - (1.0 - self._a_scale) ** max(c.warmup, c.slow_span // 2)
            drift_scale[sr] = np.where(settled, np.sqrt(lag_fast * lag_slow), drift_scale[sr])
            self.hist_scale[(*at, (gidx[sr, b - k:] % lag)[:, None, :])] = cur[:, :, b - k:]
        with np.errstate(invalid="ignore"):
            gap = np.abs(fast - slow) / drift_scale
        stats[..., DRIFT] = np.where(v & (nv >= max(c.warmup, c.slow_span // 2)), np.nan_to_num(gap) / c.drift_h, 0.0)

        # --- spike: robust z-score against the window before the sample
        # scale: the window's MAD averaged with the series' usual MAD (steadier than 32 samples' MAD
        # alone, and not 0 for a window of identical values from a quantised sensor)
        wm = (v & (nv > w)).astype(np.float64)
        mad_num, mad_den = _ewmas(self._a_slow, (wm * mad_prev, st["mad_num"]), (wm, st["mad_den"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            mad_usual = _shift(mad_num / mad_den, st["mad_num"] / st["mad_den"])
        mad_usual = np.nan_to_num(mad_usual)
        # and never finer than the sensor's resolution: a quantised series whose windows are all
        # one value (MAD 0) moves by one quantum without that being a spike
        with np.errstate(invalid="ignore"):
            change = np.where(v, np.abs(xf - prev), np.nan)
        quantum = np.minimum(st["quantum"][:, None],
                             np.minimum.accumulate(np.where(change > 0, change, np.inf), axis=1))
        scale_spike = np.maximum(_MAD_TO_SIGMA * 0.5 * (mad_prev + np.where(mad_usual > 0, mad_usual, mad_prev)),
                                 np.maximum(np.where(np.isfinite(quantum), quantum, 0.0), level_floor))
        excess = np.abs(xf - med_prev) - np.abs(med_short - med_prev)
        stats[..., SPIKE] = np.where(v & (nv > w), np.maximum(excess, 0.0) / scale_spike / c.spike_h, 0.0)

        # --- oscillation: band power against its long-run average, on spike-clipped values
        clip = 4.0 * scale_spike
        xc = np.where(nv > w, np.clip(xf, med_prev - clip, med_prev + clip), xf)
        ext_clip = np.concatenate([np.where(np.isnan(st["hist_clip"]), ext[:, :h], st["hist_clip"]), xc], axis=1)
        power = _band_power(ext_clip, w, b, self._kernel, self._norm)  # (s, b, bins)
        miss_frac = 1.0 - trailing_windows(ext_valid, w, b).mean(axis=2)
        ok_osc = v & (nv >= w) & (miss_frac == 0.0)
        wo = ok_osc.astype(np.float64)
        nb = power.shape[2]
        flat = (wo[..., None] * power).transpose(0, 2, 1).reshape(s * nb, b)  # every bin in one scan
        osc_den, osc_flat = _ewmas(self._a_scale, (wo, st["osc_den"]), (flat, st["osc_num"].reshape(s * nb)))
        osc_num = osc_flat.reshape(s, nb, b).transpose(0, 2, 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            den_prev = _shift(osc_den, st["osc_den"])
            base_prev = _shift(osc_flat, st["osc_num"].reshape(s * nb)).reshape(s, nb, b).transpose(0, 2, 1)
            base_prev = base_prev / den_prev[..., None]
        floor = (0.05 * sslow_prev) ** 2 + tiny
        if c.calibrate:  # resolution: a sinusoid under a quarter of a quantum is not resolved
            floor = floor + (0.25 * np.where(np.isfinite(quantum), quantum, 0.0)) ** 2
        # average the power of the last q windows: a sinusoid's stays, noise's varies less
        ext_power = np.concatenate([st["hist_power"], power], axis=1)
        smooth = trailing_windows(ext_power.transpose(0, 2, 1).reshape(s * power.shape[2], -1), self._q, b)
        smooth = smooth.mean(axis=2).reshape(s, power.shape[2], b).transpose(0, 2, 1)
        ratio = smooth / (np.nan_to_num(base_prev) + floor[..., None])
        stats[..., OSCILLATION] = np.where(ok_osc & (nv >= 2 * w), ratio.max(axis=2) / c.oscillation_h, 0.0)

        # --- dropout: missing fraction in the window, or the current run of missing samples
        last_valid = last_index(v, start, st["last_valid"])
        run_missing = gidx - last_valid
        stats[..., DROPOUT] = np.maximum(miss_frac / c.dropout_fraction, run_missing / c.dropout_run)

        # --- frozen: run of repeated values against this series' own change rate
        has_prev = ~np.isnan(prev)
        same = v & has_prev & (x == prev)
        changed = v & has_prev & (x != prev)
        counted = (v & has_prev).astype(np.float64)
        chg_num, chg_den = _ewmas(self._a_slow, (counted * changed, st["chg_num"]), (counted, st["chg_den"]))
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = chg_num / chg_den
        p_reset, _ = causal_fill(rate, changed, st["p_reset"])  # the change rate when the run began
        cs = st["same_total"][:, None] + np.cumsum(same, axis=1)
        at_reset = np.maximum.accumulate(np.where(changed, cs, st["same_reset"][:, None]), axis=1)
        run_same = cs - at_reset
        p = np.clip(np.nan_to_num(p_reset), 1e-9, 1 - 1e-9)
        expected = np.clip(np.log(1e-6) / np.log1p(-p), c.frozen_min_run, 1e6)
        # runs ended in this block (at a change: the repeats just before it) are learned unless they
        # reached the bound as it stood then (a finding is not learned). Solved from below: the
        # bound with what is learned so far admits some runs; those raise the bound, which may admit
        # more; the fixed point is exactly the sequential answer (one or two rounds), so the result
        # does not depend on how samples are split into blocks.
        ended = np.concatenate([(st["same_total"] - st["same_reset"])[:, None], run_same[:, :-1]], axis=1)
        can_learn = changed & (nv > w) & c.calibrate  # the scoring before calibration: the change rate only
        learn = np.zeros_like(changed)
        while True:
            learned = np.maximum.accumulate(np.where(learn, np.maximum(ended, st["run_learned"][:, None]),
                                                     st["run_learned"][:, None]), axis=1)
            before = np.concatenate([st["run_learned"][:, None], learned[:, :-1]], axis=1)  # not the run itself
            bound = np.maximum(expected, c.frozen_learn_factor * before)
            admitted = can_learn & (ended < bound)
            if (admitted == learn).all():
                break
            learn = admitted
        stats[..., FROZEN] = np.where(v & (nv > w) & (p >= 0.05), run_same / bound, 0.0)

        # --- calibration: each statistic's surprise u = -log10 P(an episode this high), per series
        u = U_ALARM * np.maximum(stats, 0.0)  # the nominal tail: u = 6 at the threshold, as designed
        cal = {name: st[name] for name in _CAL_FIELDS}
        if c.calibrate:
            eligible = v & (nv >= c.warmup)
            # a series the grid holds at a level (steady) keeps the exponential tail: its extremes
            # are what the detectors are for, however often they come
            shape = np.where(st["steady"], 0.0, c.tail_shape)
            cal = {name: arr.copy() for name, arr in cal.items()}
            for i, k in enumerate(CALIBRATED):
                u[..., k], *after = _calibrated(stats[..., k], eligible, start,
                                                *(st[name][:, i] for name in _CAL_FIELDS),
                                                self._a_cal, c.prior_samples, c.tail_min, k == DRIFT, shape)
                for name, arr in zip(_CAL_FIELDS, after):
                    cal[name][:, i] = arr
        u = np.where(st["enabled"][:, None, :], u, 0.0)

        # --- precedence: mute evidence another finding explains
        step_alarm = last_index(u[..., STEP] >= U_ALARM, start, st["last_step_alarm"])
        u[..., DRIFT] *= (gidx - step_alarm) > c.slow_span
        osc = u[..., OSCILLATION]
        for k in (STEP, DRIFT):
            u[..., k] = np.where(osc >= U_ALARM, np.minimum(u[..., k], 0.999 * osc), u[..., k])
        # repeated values (a run of a third of the frozen threshold) make level evidence unreliable
        stuck = stats[..., FROZEN] >= 0.3
        for k in (STEP, DRIFT, SPIKE, OSCILLATION):
            u[..., k] = np.where(stuck, np.minimum(u[..., k], 0.999 * u[..., FROZEN]), u[..., k])
        gone = u[..., DROPOUT] >= U_ALARM
        for k in (STEP, DRIFT, SPIKE, OSCILLATION, FROZEN):
            u[..., k] = np.where(gone, 0.0, u[..., k])
        quiet = nv < c.quiet_warmup  # warm-up: nothing alarms
        u = np.where(quiet[..., None], 0.0, u)
        total, top = combine(u, c.combine, c.agreement_cost)
        score = hill(total / U_ALARM, c.hill)
        scores = hill(u / U_ALARM, c.hill)
        ready = np.minimum(1.0, nv / float(c.slow_span))
        confidence = np.where(top == DROPOUT, 1.0, ready * (1.0 - miss_frac))

        # --- store state
        new = {
            "n": start + b, "n_valid": nv[:, -1], "last": filled[:, -1],
            "hist": ext[:, -h:], "hist_clip": ext_clip[:, -h:], "hist_valid": ext_valid[:, -h:],
            "hist_resid": ext_resid[:, ext_resid.shape[1] - (m - 1):],
            "hist_power": ext_power[:, ext_power.shape[1] - (self._q - 1):],
            "fast_num": fast_num[:, -1], "fast_den": fast_den[:, -1], "slow_num": slow_num[:, -1],
            "slow_den": slow_den[:, -1], "sfast_num": sfast_num[:, -1], "sfast_den": sfast_den[:, -1],
            "sslow_num": sslow_num[:, -1], "sslow_den": sslow_den[:, -1],
            "cus_pos": cus_pos[:, -1], "cus_neg": cus_neg[:, -1],
            "osc_den": osc_den[:, -1], "osc_num": osc_num[:, -1, :],
            "chg_num": chg_num[:, -1], "chg_den": chg_den[:, -1], "mad_num": mad_num[:, -1], "mad_den": mad_den[:, -1],
            "quantum": quantum[:, -1],
            "same_total": cs[:, -1], "same_reset": at_reset[:, -1], "p_reset": p_reset[:, -1],
            "run_learned": learned[:, -1],
            "last_valid": last_valid[:, -1], "last_step_alarm": step_alarm[:, -1],
            **cal,
        }
        # a series that has never had a valid sample keeps NaN history, so its first value fills it
        never = np.isnan(new["last"])
        new["hist"] = np.where(never[:, None], np.nan, new["hist"])
        new["hist_clip"] = np.where(never[:, None], np.nan, new["hist_clip"])
        for name, arr in new.items():
            getattr(self, name)[mine] = arr

        return DetectorOutput(score.astype(np.float32), (top + 1).astype(np.int8),
                              confidence.astype(np.float32), scores.astype(np.float32), u.astype(np.float32))


def _calibrated(r: np.ndarray, eligible: np.ndarray, start: np.ndarray, up0: np.ndarray, den0: np.ndarray,
                hi0: np.ndarray, lo0: np.ndarray, nx0: np.ndarray, sx0: np.ndarray, pk0: np.ndarray,
                alpha: float, prior: float,
                tail_min: float, smooth: bool = False, shape: float | np.ndarray = 0.0) -> tuple[np.ndarray, ...]:
    """Surprise ``-log10 p`` of each sample's statistic ``r`` (rows, B) against this series' own history.

    For each level ``L_j`` the series keeps an EWMA (span ``calib_span``) of its upcrossings (the
    statistic rising above ``L_j``: one per episode, so a long anomaly counts once) and of its
    eligible samples; ``prior`` samples of the nominal tail (upcrossing rate ``10^(-6 L_j)``) are
    added to both, so a new series starts at the designed thresholds and a long history of its own
    replaces them. ``p(r)`` is the upcrossing rate at the highest level at or below ``r`` that has
    ``tail_min`` upcrossings (data plus prior), and beyond it an exponential tail (peaks over
    threshold, generalised Pareto of shape 0) whose scale is the mean excess of past episodes'
    peaks over that level (each episode adds its peak when it ends; the prior adds the nominal
    tail's); ``smooth`` statistics (drift) take the nominal slope past the anchor instead: their
    few, long episodes set the rate at the anchor, and the slope between two low levels (the
    bulk's decay) let an hourly series' drift of 20 sigmas pass (ETTh1, docs/detection.md).
    The slope is kept within [SLOPE_MIN, SLOPE_MAX] surprise units per threshold. A series whose
    anchor is at or past the nominal threshold (level 1.0: at least ``tail_min`` episodes that high,
    where the nominal tail expects one in a million samples) has shown a heavy tail: past its anchor
    a non-smooth statistic's tail is a generalised Pareto of ``shape`` (per series, or one for all;
    0: the exponential) with the same initial slope. The surprise never exceeds
    the nominal one: calibration only removes alarms a series' own noise explains. Only samples
    before ``t`` inform the score at ``t``.
    Returns the surprise and the EWMA states after the block.
    """
    s, b = r.shape
    nj = len(LEVELS)
    ok = eligible & (r > 0)
    r = np.where(eligible, r, 0.0)
    # an upcrossing of L_j counts once the statistic has been below L_j / 2 since it was last above
    # L_j (hysteresis: a statistic wobbling about a level during one anomaly counts once)
    high = (r[:, None, :] > LEVELS[None, :, None]).reshape(s * nj, b)
    low = (r[:, None, :] <= 0.5 * LEVELS[None, :, None]).reshape(s * nj, b)
    begin = np.repeat(start, nj)
    last_high = last_index(high, begin, hi0.reshape(s * nj))
    last_low = last_index(low, begin, lo0.reshape(s * nj))
    lh_prev = _shift(last_high.astype(np.float64), hi0.reshape(s * nj))
    ll_prev = _shift(last_low.astype(np.float64), lo0.reshape(s * nj))
    up = (high & (ll_prev > lh_prev)).reshape(s, nj, b) & eligible[:, None, :]
    if smooth:  # the drift takes the nominal slope past its anchor: its episodes' peaks are not needed
        flat_up, den = _ewmas(alpha, (up.reshape(s * nj, b).astype(np.float64), up0.reshape(s * nj)),
                              (eligible.astype(np.float64), den0))
        nx_end, sx_end, peak_end = nx0.reshape(s * nj), sx0.reshape(s * nj), pk0.reshape(s * nj)
    else:
        # declustered peaks over each level: an episode (above L_j, until the statistic falls to L_j / 2)
        # adds its peak's excess over L_j when it ends, so a long episode counts once and never
        # informs its own scores. The peak is the running maximum since the last low sample: a
        # segmented scan, with the segment number as the high part of a monotone key.
        rr = np.minimum(np.repeat(r, nj, axis=0).reshape(s, nj, b).reshape(s * nj, b), _PEAK_CAP)
        seg = np.cumsum(low, axis=1)
        key = np.concatenate([pk0.reshape(s * nj)[:, None], seg * (_PEAK_CAP + 1.0) + rr], axis=1)
        seg_ext = np.concatenate([np.zeros((s * nj, 1)), seg], axis=1)
        if b == 1:  # (an accumulate along a 2-column axis is numpy's slow case: one sample a series at the edge)
            running = np.stack([key[:, 0], np.maximum(key[:, 0], key[:, 1])], axis=1)
        else:
            running = np.maximum.accumulate(key, axis=1)
        peak = running - seg_ext * (_PEAK_CAP + 1.0)  # running max, sample t-1 at t
        peak_prev, peak_end = peak[:, :-1], np.where(low[:, -1], 0.0, peak[:, -1])
        ends = low & (lh_prev > ll_prev) & np.repeat(eligible, nj, axis=0).reshape(s * nj, b)
        excess = np.where(ends, np.maximum(peak_prev - np.repeat(LEVELS[None, :], s, axis=0).reshape(s * nj)[:, None],
                                           0.0), 0.0)
        flat_up, den, flat_nx, flat_sx = _ewmas(
            alpha, (up.reshape(s * nj, b).astype(np.float64), up0.reshape(s * nj)), (eligible.astype(np.float64), den0),
            (ends.astype(np.float64), nx0.reshape(s * nj)), (excess, sx0.reshape(s * nj)))
        nx_end, sx_end = flat_nx[:, -1], flat_sx[:, -1]
    prev_up = _shift(flat_up, up0.reshape(s * nj)).reshape(s, nj, b) / alpha  # decayed counts before t
    prev_n = _shift(den, den0) / alpha
    q = 10.0 ** (-U_ALARM * LEVELS)
    counts = prev_up + (prior * q)[None, :, None]
    logf = np.log10(counts) - np.log10(prev_n + prior)[:, None, :]  # (s, J, b)
    reliable = np.cumprod(counts >= tail_min, axis=1).sum(axis=1) - 1  # highest level of a reliable prefix
    below = np.searchsorted(LEVELS, r, side="right") - 1  # highest level at or below r
    j = np.minimum(below, reliable)
    jj = np.maximum(j, 0)
    anchor = -np.take_along_axis(logf, jj[:, None, :], axis=1)[:, 0]
    # the exponential tail beyond the anchor (peaks over threshold, GPD with shape 0): its scale is
    # the mean excess of the episodes' peaks over the level, with the nominal tail's (1 / (6 ln 10))
    # weighted in as prior episodes; a heavy tail has a large mean excess, so a shallow slope
    if smooth:  # a smoothed statistic (drift): its own rate at the anchor, the designed decay past it
        slope = U_ALARM
    else:
        prior_n = prior * q
        nx = _shift(flat_nx, nx0.reshape(s * nj)).reshape(s, nj, b) / alpha + prior_n[None, :, None]
        sx = _shift(flat_sx, sx0.reshape(s * nj)).reshape(s, nj, b) / alpha + \
            (prior_n / (U_ALARM * np.log(10.0)))[None, :, None]
        mean_excess = np.take_along_axis(sx / nx, jj[:, None, :], axis=1)[:, 0]
        slope = np.clip(1.0 / (mean_excess * np.log(10.0)), SLOPE_MIN, SLOPE_MAX)
    beyond = slope * np.maximum(r - LEVELS[jj], 0.0)  # the exponential tail's surprise past the anchor
    if not smooth and np.any(shape):  # a generalised Pareto past the anchor of a series whose episodes
        # reach its threshold
        xi = np.where(LEVELS[jj] >= 1.0, np.broadcast_to(np.asarray(shape, dtype=np.float64), (s,))[:, None], 0.0)
        heavy = xi > 0
        if heavy.any():
            beyond = np.where(heavy, np.log10(1.0 + xi * np.log(10.0) * beyond) / np.where(heavy, xi, 1.0), beyond)
    u = np.where(j >= 0, anchor + beyond, U_ALARM * r)
    u = np.where(ok, np.minimum(u, U_ALARM * r), 0.0)
    return (u, flat_up[:, -1].reshape(s, nj), den[:, -1], last_high[:, -1].reshape(s, nj),
            last_low[:, -1].reshape(s, nj), nx_end.reshape(s, nj), sx_end.reshape(s, nj), peak_end.reshape(s, nj))


def combine(u: np.ndarray, method: str = "fisher", agreement_cost: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One surprise from the detectors' ``u`` (series, B, columns): ``(total, top column)``.

    ``fisher``: Fisher's method on the signal's independent lines of evidence, K of them (the level
    family, the larger of step and drift, which share the fast baseline; spike; oscillation; a
    model's column too, when given): ``X = -2 sum ln p = 2 ln 10 sum u`` against chi-squared with
    2K degrees of freedom, whose survival is ``exp(-X/2) sum_{i<K} (X/2)^i / i!``, less
    ``agreement_cost`` (default 1, a factor 10 in p: a persistent detector, a drift say, meets the
    others' chance fluctuations many times over an episode, which a per-sample combination does not
    see). The strongest detector alone keeps its own calibrated surprise (its noise is already
    discounted by the calibration). With K = 3, two detectors at u = 4.8 each alarm together
    (u = 6), three at 3.7 each; a lone one at 6, as before. Dropout and frozen stand on their own (data faults,
    not evidence to weigh). ``max``: the largest, as before calibration.
    """
    top = u.argmax(axis=2)
    if method == "max":
        return np.take_along_axis(u, top[..., None], axis=2)[..., 0], top
    if method != "fisher":
        raise ValueError(f"unknown combination {method!r}; known: {', '.join(COMBINE)}")
    # step and drift both measure the residual from the fast baseline: one family, its larger counts
    level = np.maximum(u[..., STEP], u[..., DRIFT])[..., None]
    signal = np.concatenate([level, np.delete(u, [STEP, DRIFT, DROPOUT, FROZEN], axis=2)], axis=2)
    t = signal.sum(axis=2)
    z = t * np.log(10.0)  # X / 2, X = -2 sum ln p ~ chi-squared with 2K degrees of freedom
    k = signal.shape[2]
    terms = np.cumprod(np.concatenate([np.ones_like(z)[..., None], np.repeat(z[..., None], k - 1, axis=2)
                                       / np.arange(1, k)], axis=2), axis=2)  # z^i / i!, i < K
    fisher = np.maximum(t - np.log10(terms.sum(axis=2)), 0.0)
    # less the agreement cost; the strongest detector alone keeps its own (calibrated) surprise
    fisher = np.maximum(fisher - agreement_cost, signal.max(axis=2))
    total = np.maximum(fisher, np.maximum(u[..., DROPOUT], u[..., FROZEN]))
    return total, top


def _ewmas(alpha: float, *pairs: tuple[np.ndarray, np.ndarray]) -> list[np.ndarray]:
    """Several EWMAs of the same ``alpha`` in one scan: ``(inputs (rows, B), state (rows,))`` each."""
    if pairs and pairs[0][0].shape[1] == 1:  # one sample: the recurrence on each, not worth joining them
        return [ewma(u, alpha, st) for u, st in pairs]
    out = ewma(np.concatenate([u for u, _ in pairs]), alpha, np.concatenate([st for _, st in pairs]))
    cuts = np.cumsum([len(u) for u, _ in pairs])[:-1]
    return np.split(out, cuts)


def _median(windows: np.ndarray) -> np.ndarray:
    """``np.median(windows, axis=-1)`` of windows without NaN: the same order statistics from one
    partition, without np.median's NaN check and reduction machinery (a third of its time on the
    edge's one-sample blocks)."""
    n = windows.shape[-1]
    if n % 2:
        return np.partition(windows, n // 2, axis=-1)[..., n // 2]
    part = np.partition(windows, (n // 2 - 1, n // 2), axis=-1)
    return (part[..., n // 2 - 1] + part[..., n // 2]) / 2


def _running_median(windows: np.ndarray) -> np.ndarray:
    """``np.median(windows, axis=2)`` (windows hold no NaN); for 5 samples, the default, with seven
    minimum and maximum operations (the same value, a tenth of the work)."""
    if windows.shape[2] != 5:
        return _median(windows)
    a, b, c, d, e = (windows[..., i] for i in range(5))
    lo = np.maximum(np.minimum(a, b), np.minimum(c, d))  # the median is the median of e, lo and hi
    hi = np.minimum(np.maximum(a, b), np.maximum(c, d))
    return np.maximum(np.minimum(e, lo), np.minimum(np.maximum(e, lo), hi))


def _shift(series: np.ndarray, before: np.ndarray) -> np.ndarray:
    """The value one sample earlier: ``before`` (the state) then ``series[:, :-1]``."""
    return np.concatenate([np.asarray(before, dtype=np.float64)[:, None], series[:, :-1]], axis=1)


def _band_power(ext: np.ndarray, w: int, b: int, kernel: np.ndarray, norm: float) -> np.ndarray:
    out = np.empty((ext.shape[0], b, kernel.shape[1] // 2))
    step = 8192
    for lo in range(0, b, step):
        hi = min(b, lo + step)
        win = trailing_windows(ext[:, :ext.shape[1] - b + hi], w, hi - lo)
        coef = win @ kernel
        out[:, lo:hi] = (coef[..., 0::2] ** 2 + coef[..., 1::2] ** 2) * norm
    return out
