"""The detector bank scores a large block a few dozen series per pass (to stay in the CPU's cache):
the scores and the state after must be exactly those of each series scored on its own."""

from __future__ import annotations

import itertools

import numpy as np

from models.detectors import DetectorBank, DetectorConfig, _median, _running_median


def test_a_block_split_into_passes_scores_each_series_as_if_alone() -> None:
    rng = np.random.default_rng(11)
    s, blocks = 300, (50, 50, 7, 50)  # 300 x 50 samples: several passes; 300 x 7: one
    x = 11.0 + 0.02 * rng.standard_normal((s, sum(blocks)))
    x[::9, 40:60] = np.nan  # dropouts
    x[::13, 90:] += 0.5  # steps
    x[5, 30:] = x[5, 30]  # frozen
    rows = rng.permutation(s)  # rows given out of order: each result goes back to its own series
    steady, spikes_only = np.arange(0, s, 3), np.array([1, 2, 4])
    bank = DetectorBank(s, DetectorConfig())
    bank.set_steady(steady)
    bank.set_detectors(spikes_only, ("spike",))
    alone = [DetectorBank(1, DetectorConfig()) for _ in range(s)]
    for i in steady.tolist():
        alone[i].set_steady(np.array([0]))
    for i in spikes_only.tolist():
        alone[i].set_detectors(np.array([0]), ("spike",))
    at = 0
    for b in blocks:
        block = x[:, at:at + b]
        out = bank.update(block[rows], rows=rows)
        for k, i in enumerate(rows.tolist()):
            one = alone[i].update(block[i:i + 1])
            for field in ("score", "type", "confidence", "scores", "surprise"):
                np.testing.assert_array_equal(getattr(out, field)[k], getattr(one, field)[0], err_msg=f"{field} {i}")
        at += b
    assert (bank.n == sum(blocks)).all()
    np.testing.assert_array_equal(bank.cal_up[7], alone[7].cal_up[0])
    assert (out.score[:, -20:] >= 0.5).any()  # something was found, so the comparison means something


def test_the_five_sample_median_is_numpys() -> None:
    windows = np.array(list(itertools.product(range(4), repeat=5)), dtype=np.float64)[None]  # every tie
    np.testing.assert_array_equal(_running_median(windows), np.median(windows, axis=2))
    w = np.random.default_rng(0).standard_normal((4, 9, 6))
    np.testing.assert_array_equal(_running_median(w), np.median(w, axis=2))


def test_the_window_median_is_numpys_to_the_bit() -> None:
    """The spike detector's window median and MAD (``_median``) are np.median's, bit for bit, for
    even and odd windows, quantised values with ties, one-sample and long blocks."""
    rng = np.random.default_rng(12)
    for width in (31, 32, 8, 5):
        for b in (1, 50):
            x = rng.normal(size=(40, b, width)) * rng.choice([1e-3, 1.0, 1e4], size=(40, 1, 1))
            x[::3] = np.round(x[::3] * 4) / 4  # quantised: ties
            np.testing.assert_array_equal(_median(x), np.median(x, axis=2))
