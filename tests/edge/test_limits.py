from __future__ import annotations

import numpy as np

from edge.limits import LimitMonitor
from protocols.config import Limits
from protocols.gridcode import PointSpec

SPECS = [PointSpec("voltage_l1", "kV", 11.0), PointSpec("voltage_l2", "kV", 11.0), PointSpec("voltage_l3", "kV", 11.0),
         PointSpec("frequency", "Hz"), PointSpec("oil_temperature", "degC", None, None, 95.0)]


def _run(values_seq: list[list[float]]) -> list[list[tuple[str, str, str, str]]]:
    m = LimitMonitor("NAIROBI-S1", "FEEDER-F12", SPECS, Limits())
    return [[(e.state, e.type, e.severity, e.metric) for e in m.check(float(i), np.array(v))] for i, v in enumerate(values_seq)]


def test_one_event_per_quantity_on_entering_and_leaving_a_band() -> None:
    out = _run([
        [11.0, 11.0, 11.0, 50.0, 60.0],
        [10.3, 10.2, 10.4, 50.0, 60.0],   # all three phases sag: one event, the worst phase
        [10.3, 10.2, 10.4, 50.0, 60.0],   # still sagging: nothing new
        [9.8, 10.2, 10.4, 50.0, 60.0],    # escalates to CRITICAL
        [10.5, 10.9, 11.0, 50.0, 60.0],   # inside the band but not the hysteresis margin: not yet cleared
        [10.8, 10.9, 11.0, 50.0, 60.0],   # cleared
    ])
    assert out[0] == []
    assert out[1] == [("raised", "voltage_sag", "WARNING", "voltage_l2")]
    assert out[2] == []
    assert out[3] == [("raised", "voltage_sag", "CRITICAL", "voltage_l1")]
    assert out[4] == []
    assert out[5] == [("cleared", "voltage_sag", "INFO", "voltage")]


def test_frequency_and_explicit_limits_and_direction_change() -> None:
    out = _run([
        [11.0, 11.0, 11.0, 50.6, 96.0],
        [11.7, 11.0, 11.0, 50.0, 90.0],
        [10.3, 11.0, 11.0, 50.0, 90.0],   # swell straight to sag: cleared then raised
    ])
    assert sorted(out[0]) == [("raised", "limit_high", "WARNING", "oil_temperature"),
                              ("raised", "over_frequency", "WARNING", "frequency")]
    assert sorted(out[1]) == sorted([("cleared", "over_frequency", "INFO", "frequency"),
                                     ("cleared", "limit_high", "INFO", "oil_temperature"),
                                     ("raised", "voltage_swell", "WARNING", "voltage_l1")])
    assert out[2] == [("cleared", "voltage_swell", "INFO", "voltage"), ("raised", "voltage_sag", "WARNING", "voltage_l1")]


def test_description_has_the_measured_deviation() -> None:
    m = LimitMonitor("S", "FEEDER-F12", SPECS, Limits())
    (e,) = m.check(0.0, np.array([10.3, 11.0, 11.0, 50.0, 20.0]))
    assert e.description == "Voltage sag on FEEDER-F12 voltage_l1 (10.3 kV, -6.4% from nominal 11 kV; limit 10.45 kV)"
    assert e.value == 10.3 and e.threshold == 10.45 and e.nominal == 11.0


def test_nan_is_not_a_violation() -> None:
    assert _run([[np.nan, 11.0, 11.0, np.nan, np.nan]]) == [[]]


def test_frozen_values_are_flagged_stale() -> None:
    from edge.daemon import _Device
    from protocols.sources import PointInfo

    class Src:
        device_id, endpoint, poll_interval_s = "D", "x", 1.0
        points = [PointInfo("a"), PointInfo("b")]

    d = _Device(Src(), None)  # type: ignore[arg-type]
    seq = [(0.0, [1.0, 5.0]), (5.0, [1.0, 5.1]), (11.0, [1.0, 5.2]), (12.0, [1.1, 5.2])]
    out = [d.stale_flags(t, np.array(v), None, 10.0).tolist() for t, v in seq]
    assert out == [[0, 0], [0, 0], [2, 0], [0, 0]]  # a: unchanged for 11 s -> stale; changes -> fresh
    assert d.stale_flags(20.0, np.array([1.1, 5.2]), None, None).tolist() == [0, 0]  # off by default
