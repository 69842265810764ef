"""A pushed device whose clock steps back (or repeats a timestamp): every reading kept, retimed, flagged, counted.

The hub keeps one reading per (device, metric, time) and takes a repeat for a resend, so a device
clock stepping back an hour would lose that hour's readings there; the edge gives such readings its
receive time instead, flags them ``clock_unsync`` and counts them in the device's health.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from edge.daemon import DeviceHealth, EdgeDaemon, _Device
from protocols.reading import QualityFlag
from protocols.sources import PointInfo, Update


class _Src:
    device_id, endpoint, poll_interval_s = "RTU-1", "mqtt://x", 1.0
    points = [PointInfo("voltage_l1"), PointInfo("oil_temp")]


class _Monitor:
    def check(self, ts: float, values: np.ndarray) -> list:
        return []


def _daemon_and_device() -> tuple[SimpleNamespace, _Device]:
    d = _Device(_Src(), _Monitor())  # type: ignore[arg-type]
    fake = SimpleNamespace(config=SimpleNamespace(quality=SimpleNamespace(stale_after_s=None)),
                           stats=SimpleNamespace(devices={"RTU-1": DeviceHealth("RTU-1")}))
    fake._rows = lambda *a, **k: EdgeDaemon._rows(fake, *a, **k)  # type: ignore[attr-defined]
    return fake, d


def _update(ts: list[float], index: list[int]) -> Update:
    n = len(ts)
    return Update(ts=np.asarray(ts, dtype=np.float64), index=np.asarray(index, dtype=np.int64),
                  values=np.arange(n, dtype=np.float64) + 1.0, flags=np.zeros(n, dtype=np.int64))


def test_times_in_order_pass_through_untouched() -> None:
    _, d = _daemon_and_device()
    t, retimed = d.monotonic_times(np.array([10.0, 10.0, 11.0]), np.array([0, 1, 0]), now=50.0)
    assert t.tolist() == [10.0, 10.0, 11.0] and not retimed.any()
    assert d.latest_ts.tolist() == [11.0, 10.0]


def test_a_clock_step_back_is_retimed_after_the_latest_and_flagged() -> None:
    fake, d = _daemon_and_device()
    now = 1_000_000.0
    hour = [now - 3600 + 60 * i for i in range(60)]  # the device's clock was right for an hour
    rows, _ = EdgeDaemon._update_rows(fake, d, _update(hour, [0] * 60))  # type: ignore[arg-type]
    assert all(r[6] == 0 for r in rows)
    # it steps back an hour: the next readings repeat times already stored (and one repeats within the update)
    stepped = [now - 3600, now - 3540, now - 3540]
    rows, _ = EdgeDaemon._update_rows(fake, d, _update(stepped, [0, 0, 1]))  # type: ignore[arg-type]
    by_metric = {}
    for r in rows:
        by_metric.setdefault(r[2], []).append(r)
    v = by_metric["voltage_l1"]
    assert len(v) == 2 and all(r[6] & QualityFlag.CLOCK_UNSYNC for r in v)  # both kept, flagged
    assert all(r[0] >= now for r in v) and v[0][0] < v[1][0]  # after everything stored, distinct
    assert by_metric["oil_temp"][0][0] == now - 3540 and by_metric["oil_temp"][0][6] == 0  # its first: untouched
    health = fake.stats.devices["RTU-1"]
    assert health.clock_retimed == 2 and health.clock_steps == 1
    # every stored time is distinct per metric: nothing the hub would take for a resend
    times = [r[0] for r in rows if r[2] == "voltage_l1"] + hour
    assert len(set(times)) == len(times)


def test_steps_are_counted_per_episode_and_device_time_resumes_when_it_is_new_again() -> None:
    fake, d = _daemon_and_device()
    EdgeDaemon._update_rows(fake, d, _update([100.0], [0]))  # type: ignore[arg-type]
    EdgeDaemon._update_rows(fake, d, _update([100.0], [0]))  # type: ignore[arg-type]  # a repeat
    EdgeDaemon._update_rows(fake, d, _update([90.0], [0]))  # type: ignore[arg-type]  # same episode
    health = fake.stats.devices["RTU-1"]
    assert health.clock_retimed == 2 and health.clock_steps == 1
    later = float(d.latest_ts[0]) + 5.0  # the device's clock is ahead of all that was stored again
    rows, _ = EdgeDaemon._update_rows(fake, d, _update([later], [0]))  # type: ignore[arg-type]
    assert rows[0][0] == later and rows[0][6] == 0
    EdgeDaemon._update_rows(fake, d, _update([later], [0]))  # type: ignore[arg-type]  # a new episode
    assert health.clock_steps == 2 and health.clock_retimed == 3
