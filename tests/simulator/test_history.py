"""Simulated history: every point, on the step grid before ``end``, with the live physics' daily shape."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import numpy as np
import pytest

from simulator.history import history_readings
from tests.simulator.conftest import sample_configs

END = datetime(2026, 3, 9, 0, 0, tzinfo=UTC)


def test_every_point_every_step_before_end() -> None:
    configs = sample_configs()
    rows = history_readings(configs, days=2, end=END, step_s=900)
    per_point = Counter((r.substation, r.device_id, r.metric) for r in rows)
    n_points = sum(len(d.points) for c in configs for d in c.devices)
    assert len(per_point) == n_points and set(per_point.values()) == {2 * 96}
    stamps = sorted({r.ts for r in rows})
    assert stamps[0] == END - timedelta(days=2) and stamps[-1] == END - timedelta(minutes=15)
    assert all(b - a == timedelta(minutes=15) for a, b in pairwise(stamps))
    assert all(r.value is not None and np.isfinite(r.value) and r.quality == 1.0 for r in rows)


def test_integer_registers_come_in_their_steps() -> None:
    rows = history_readings(sample_configs(), days=1, end=END, step_s=3600)
    oil = [r.value for r in rows if r.device_id == "TR-04" and r.metric == "oil_temperature"]  # int16 x 0.1
    volts = [r.value for r in rows if r.device_id == "FEEDER-F12" and r.metric == "voltage_l1"]  # float32
    assert all(abs(v * 10 - round(v * 10)) < 1e-9 for v in oil)
    assert any(abs(v * 10 - round(v * 10)) > 1e-3 for v in volts)


def test_load_peaks_in_the_local_evening() -> None:
    rows = history_readings(sample_configs(), days=3, end=END, step_s=600)
    power = [r for r in rows if r.device_id == "FEEDER-F12" and r.metric == "active_power"]
    eat = timezone(timedelta(hours=3))
    hourly = np.zeros(24)
    counts = np.zeros(24)
    for r in power:
        hourly[r.ts.astimezone(eat).hour] += r.value
        counts[r.ts.astimezone(eat).hour] += 1
    hourly /= counts
    assert 18 <= int(np.argmax(hourly)) <= 21  # the evening peak, East Africa Time
    assert int(np.argmin(hourly)) in {*range(6), 23}
    assert hourly.max() > 1.6 * hourly.min()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        history_readings(sample_configs(), days=1, end=datetime(2026, 3, 9))
    with pytest.raises(ValueError, match="positive"):
        history_readings(sample_configs(), days=0, end=END)
