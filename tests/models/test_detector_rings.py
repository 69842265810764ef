"""Memory of the drift detector's scale ring: only series the grid holds steady have one."""

from __future__ import annotations

import numpy as np

from models.detectors import DetectorBank, DetectorConfig


def test_only_steady_series_have_a_ring_and_each_keeps_its_own() -> None:
    config = DetectorConfig(drift_scale_lag=16)
    rng = np.random.default_rng(3)
    x = 230.0 + rng.normal(size=(1000, 300))
    x[:, 200:] += 0.05 * np.arange(100)  # a drift, measured against the scales of 16 samples back
    steady = np.array([3, 500, 998, 40])
    bank = DetectorBank(1000, config)
    bank.set_steady(steady[:3])
    first = bank.update(x[:, :150])
    bank.set_steady(steady[3:])  # one more, after the others have history
    bank.set_steady(steady)  # marking again takes no new ring
    later = bank.update(x[:, 150:])
    assert bank.hist_scale.shape[0] < 10  # 16 KB a ring at the default lag: 16 MB for 1000 series
    assert sorted(bank.ring_row[bank.ring_row >= 0].tolist()) == [0, 1, 2, 3]

    # the same series scored in a bank of their own, every row steady from the start except the
    # late one: the same scores, so no two series share a ring
    alone = DetectorBank(4, config)
    alone.set_steady(np.arange(3))
    a1 = alone.update(x[steady, :150])
    alone.set_steady(np.array([3]))
    a2 = alone.update(x[steady, 150:])
    np.testing.assert_array_equal(first.score[steady], a1.score)
    np.testing.assert_array_equal(later.score[steady], a2.score)
    assert (later.score[steady[:3], 60:] >= 0.5).any()  # the drift is found on the steady series

    bank.reset(steady[:1])
    assert (bank.hist_scale[bank.ring_row[steady[0]]] == 0).all()
    assert bank.hist_scale[bank.ring_row[steady[1]]].any()
