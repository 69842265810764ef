"""The streaming detectors on synthetic series with known injected anomalies.

Each shape is injected at sample T0 into 24 independent noise series scored at once (one bank,
24 rows): every one must be detected within a bounded delay, and clean noise must stay quiet.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.detectors import ANOMALY_TYPES, DETECTORS, DetectorBank, DetectorConfig, DetectorOutput, hill

SERIES, SAMPLES, T0 = 24, 3000, 2000


def _noise(seed: int = 0) -> np.ndarray:
    return 20.0 + np.random.default_rng(seed).normal(scale=1.0, size=(SERIES, SAMPLES))


def _score(x: np.ndarray, chunk: int | None = None, config: DetectorConfig | None = None,
           steady: bool = False) -> DetectorOutput:
    bank = DetectorBank(x.shape[0], config)
    bank.set_steady(np.arange(x.shape[0]), steady)
    if chunk is None:
        return bank.update(x)
    parts = [bank.update(x[:, lo:lo + chunk]) for lo in range(0, x.shape[1], chunk)]
    return DetectorOutput(*(np.concatenate([getattr(p, f) for p in parts], axis=1)
                            for f in ("score", "type", "confidence", "scores", "surprise")))


def _first_alarm(out: DetectorOutput, start: int) -> tuple[np.ndarray, np.ndarray]:
    """Per series: samples from ``start`` to the first score >= 0.5 (-1: none), and that alarm's type."""
    alarm = out.score[:, start:] >= 0.5
    delay = np.where(alarm.any(axis=1), alarm.argmax(axis=1), -1)
    types = np.asarray(ANOMALY_TYPES)[out.type[np.arange(len(delay)), start + np.maximum(delay, 0)]]
    return delay, types


def _inject(kind: str) -> np.ndarray:
    x = _noise()
    u = np.arange(SAMPLES - T0)
    if kind == "step":
        x[:, T0:] += 4.0
    elif kind == "drift":
        x[:, T0:] += 0.05 * u
    elif kind == "spike":
        x[:, T0] += 10.0
    elif kind == "oscillation":
        x[:, T0:T0 + 400] += 4.0 * np.sin(2 * np.pi * u[:400] / 8)
    elif kind == "dropout":
        x[:, T0:T0 + 100] = np.nan
    elif kind == "frozen":
        x[:, T0:T0 + 100] = x[:, T0 - 1:T0]
    return x


# kind: (largest delay allowed, in samples; the type the alarm must carry at least this often)
CASES = {"step": (15, 0.9), "drift": (200, 0.9), "spike": (0, 1.0), "oscillation": (60, 0.9),
         "dropout": (5, 1.0), "frozen": (20, 1.0)}


@pytest.mark.parametrize("kind", list(CASES))
def test_injected_anomaly_is_detected_quickly_and_named(kind: str) -> None:
    max_delay, type_share = CASES[kind]
    out = _score(_inject(kind))
    before = out.score[:, 300:T0] >= 0.5
    assert not before.any(), f"{kind}: alarms before the anomaly at {np.argwhere(before)[:5]}"
    delay, types = _first_alarm(out, T0)
    assert (delay >= 0).all(), f"{kind}: missed in {np.sum(delay < 0)} of {SERIES} series"
    assert delay.max() <= max_delay, f"{kind}: delays {sorted(delay)}"
    assert np.mean(types == kind) >= type_share, f"{kind}: typed as {list(types)}"


def test_clean_noise_raises_no_alarm() -> None:
    """Gaussian, autocorrelated and quantised noise: 24 x 20,000 samples each, no alarm after warm-up."""
    rng = np.random.default_rng(7)
    white = rng.normal(size=(SERIES, 20_000))
    red = np.zeros_like(white)
    for t in range(1, white.shape[1]):  # AR(1), phi 0.8: slow wander, like a temperature
        red[:, t] = 0.8 * red[:, t - 1] + white[:, t]
    quantised = np.round(rng.normal(size=(SERIES, 20_000)) * 4) / 4
    for name, x in (("white", white), ("ar1", red), ("quantised", quantised)):
        for steady in (False, True):
            out = _score(x, chunk=5000, steady=steady)
            alarms = (out.score[:, 300:] >= 0.5).sum()
            assert alarms == 0, f"{name}{' (steady)' * steady}: {alarms} alarm samples"


def test_scores_are_causal() -> None:
    """Appending future samples (an anomaly, even) does not change any earlier score."""
    x = _inject("step")
    full = _score(x)
    past = _score(x[:, :1700])
    np.testing.assert_array_equal(full.score[:, :1700], past.score)
    np.testing.assert_array_equal(full.scores[:, :1700], past.scores)
    np.testing.assert_array_equal(full.type[:, :1700], past.type)


@pytest.mark.parametrize("steady", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 500, 700])
def test_blocks_of_any_size_give_the_same_scores(chunk: int, steady: bool) -> None:
    x = _inject("oscillation")[:4, :1800]
    x[:, 1300:] += 0.05 * np.arange(500)  # a drift, once the steady scale's lag (512) has passed
    x[1, 100:140] = np.nan
    x[2, :50] = np.nan  # a series that starts with missing values
    whole = _score(x, steady=steady)
    parts = _score(x, chunk=chunk, steady=steady)
    np.testing.assert_allclose(parts.scores, whole.scores, atol=1e-6)
    np.testing.assert_array_equal(parts.type, whole.type)


def test_a_steady_series_drifting_away_is_caught_while_it_drifts() -> None:
    """A bus voltage (220 kV, noise 1 kV) drifting to +6 % over 1,200 samples. Marked steady, it is
    a drift within 400 samples; measured with scales that follow it, the drift widens its own
    yardstick and is not called before the ramp ends. Clean, neither sees a drift."""
    rng = np.random.default_rng(3)
    x = 220.0 + rng.normal(scale=1.0, size=(SERIES, 4000))
    ramp = x.copy()
    ramp[:, 2500:3700] += 0.06 * 220.0 * np.arange(1200) / 1200
    steady = _score(ramp, chunk=256, steady=True)
    delay, types = _first_alarm(steady, 2500)
    assert ((delay >= 0) & (delay <= 400)).all(), sorted(delay)
    assert (types == "drift").all(), list(types)
    adaptive = _score(ramp, chunk=256)
    assert not (adaptive.score[:, 300:3700] >= 0.5).any()
    drift = DETECTORS.index("drift")
    for st in (True, False):  # clean: no drift either way
        assert not (_score(x, chunk=256, steady=st).scores[:, 300:, drift] >= 0.5).any()


def test_reset_forgets_a_series_but_not_that_it_is_steady() -> None:
    bank = DetectorBank(2)
    bank.set_steady(np.array([1]))
    bank.update(np.ones((2, 600)))
    bank.reset(np.array([0, 1]))
    assert bank.steady.tolist() == [False, True] and (bank.hist_scale == 0).all() and (bank.n == 0).all()


def test_series_are_independent_and_rows_update_separately() -> None:
    x = _inject("spike")[:3, :2500]
    together = DetectorBank(3).update(x)
    bank = DetectorBank(3)
    alone = [bank.update(x[i:i + 1], rows=np.array([i])) for i in (2, 0, 1)]
    np.testing.assert_allclose(alone[1].score[0], together.score[0], atol=1e-6)
    np.testing.assert_allclose(alone[0].score[0], together.score[2], atol=1e-6)


def test_warm_up_is_quiet_and_confidence_grows() -> None:
    x = _noise()[:, :600]
    out = _score(x)
    assert (out.score < 0.5).all()
    assert out.confidence[:, 10].max() < 0.1 < out.confidence[:, 599].min()


def test_missing_samples_score_as_dropout_with_full_confidence() -> None:
    x = _inject("dropout")
    out = _score(x)
    assert (np.asarray(ANOMALY_TYPES)[out.type[:, T0 + 10]] == "dropout").all()
    assert (out.confidence[:, T0 + 10] == 1.0).all()


def test_hill_maps_threshold_to_one_half() -> None:
    r = np.array([0.0, 1.0, 2.0, np.inf])
    np.testing.assert_allclose(hill(r, 4.0), [0.0, 0.5, 16 / 17, 1.0])
    assert len(DETECTORS) == 6


def test_config_rejects_inconsistent_spans() -> None:
    with pytest.raises(ValueError, match="fast_span"):
        DetectorConfig(fast_span=300, slow_span=256)
