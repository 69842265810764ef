"""The agents' windows: readings read in chunks as rows and shaped into per-series arrays (no Reading
per row, no row limit), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from hub.insights.agent_inputs import WindowCache, _windows
from hub.storage.base import Storage, series_of_key
from protocols.reading import QualityFlag, Reading

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def _reading(i: int, device: str, metric: str, value: float | None, *, unit: str = "kV", flags: int = 0,
             score: float | None = None, kind: str | None = None) -> Reading:
    return Reading(ts=T0 + timedelta(seconds=i), substation="S1", device_id=device, metric=metric, value=value,
                   unit=unit, flags=flags, anomaly_score=score, anomaly_type=kind)


def test_window_rows_come_whole_in_chunks_with_an_unambiguous_series_key(storage: Storage) -> None:
    # names that a separator would confuse: ("a:1", "b") and ("a", ":1b") must stay two series
    made = [Reading(ts=T0 + timedelta(seconds=i), substation=sub, device_id=dev, metric="voltage_l1",
                    value=11.0 + i / 100, unit="kV", anomaly_score=i / 100)
            for i in range(120) for sub, dev in (("a:1", "b"), ("a", ":1b"), ("3:x", "7"))]
    storage.insert_readings(made, "test")
    chunks = list(storage.iter_window_rows(T0 + timedelta(seconds=5), T0 + timedelta(seconds=100), chunk_rows=30))
    assert len(chunks) >= 4 and max(len(c) for c in chunks) < 4 * 30  # slices sized to about the chunk
    rows = [r for c in chunks for r in c]
    assert all(isinstance(r[0], float) for r in rows)  # epoch seconds
    got = sorted((r[0], series_of_key(r[1]), r[2], r[5]) for r in rows)
    want = sorted((m.ts.timestamp(), (m.substation, m.device_id, m.metric), m.value, m.anomaly_score)
                  for m in made if 5 <= (m.ts - T0).total_seconds() < 100)
    assert got == want  # [start, end): every reading once


def test_windows_are_per_series_arrays_with_unusable_values_missing(storage: Storage) -> None:
    readings = []
    for i in range(40):
        readings.append(_reading(i, "F1", "voltage_l1", 11.0 + 0.01 * i, score=0.1, kind="spike" if i == 3 else None))
        value, flags = 50.0, 0
        if i == 7:
            value = 0.0  # 0 Hz: no instrument measures it (stored before ingest refused it)
        if i == 9:
            flags = int(QualityFlag.COMM_LOST)  # a lost device's placeholder
        if i == 11:
            flags = int(QualityFlag.INVALID)
        readings.append(_reading(i, "F1", "frequency", value, unit="Hz", flags=flags, score=0.2))
        readings.append(_reading(i, "F2", "voltage_l1", None if i % 10 == 0 else 11.1, unit="kV" if i < 30 else "V",
                                 score=0.3))
    storage.insert_readings(readings, "test")
    whole = _windows(storage, T0, T0 + timedelta(minutes=1))
    chunked = _windows(storage, T0, T0 + timedelta(minutes=1), chunk_rows=13)  # many chunks: the same windows
    for windows in (whole, chunked):
        by = {(w.device_id, w.metric): w for w in windows}
        assert set(by) == {("F1", "voltage_l1"), ("F1", "frequency"), ("F2", "voltage_l1")}
        v = by[("F1", "voltage_l1")]
        assert np.array_equal(v.ts, [(T0 + timedelta(seconds=i)).timestamp() for i in range(40)])
        assert np.allclose(v.values, 11.0 + 0.01 * np.arange(40)) and v.unit == "kV"
        assert v.types[3] == "spike" and v.types[4] is None
        f = by[("F1", "frequency")]
        assert np.flatnonzero(np.isnan(f.values)).tolist() == [7, 9, 11]
        assert np.flatnonzero(np.isnan(f.scores)).tolist() == [7, 9, 11]  # the edge scored a broken sensor
        g = by[("F2", "voltage_l1")]
        assert g.unit == "V"  # the newest reading's
        # 11.1 V is a possible voltage, 11.1 kV too; a missing value is missing but its score stays
        assert np.flatnonzero(np.isnan(g.values)).tolist() == [0, 10, 20, 30]
        assert not np.isnan(g.scores).any()
    assert [(w.device_id, w.metric) for w in whole] == [(w.device_id, w.metric) for w in chunked]


def test_an_empty_window_is_no_series(storage: Storage) -> None:
    assert _windows(storage, T0, T0 + timedelta(minutes=1)) == []


def _same(a: list, b: list) -> None:
    """Two lists of windows hold the same series and readings (NaN where the other has NaN)."""
    by_a = {(w.substation, w.device_id, w.metric): w for w in a}
    by_b = {(w.substation, w.device_id, w.metric): w for w in b}
    assert set(by_a) == set(by_b)
    for key, w in by_a.items():
        v = by_b[key]
        assert w.unit == v.unit, key
        assert np.array_equal(w.ts, v.ts), key
        assert np.array_equal(w.values, v.values, equal_nan=True), key
        assert np.array_equal(w.scores, v.scores, equal_nan=True), key
        assert w.types.tolist() == v.types.tolist(), key


def _second(storage: Storage, i: int, device: str = "F1", value: float = 11.0) -> None:
    storage.insert_readings([_reading(i, device, "voltage_l1", value + i / 1000, score=0.1)], "test")


def test_the_cache_reads_what_is_new_and_answers_as_a_whole_read(storage: Storage) -> None:
    cache = WindowCache(span_s=600, margin_s=30, full_every_s=10_000)
    for i in range(0, 300):
        _second(storage, i)
    at = lambda i: T0 + timedelta(seconds=i)  # noqa: E731
    _same(cache.windows(storage, at(0), at(300)), _windows(storage, at(0), at(300)))
    assert cache.reads == {"full": 1, "incremental": 0, "direct": 0}
    # a minute more, a new series, and a reading 20 s late (within the margin)
    for i in range(300, 360):
        _second(storage, i)
        _second(storage, i, device="F2", value=11.2)
    storage.insert_readings([_reading(285, "F3", "voltage_l1", 11.3)], "test")
    for lo in (0, 200):  # the grid monitor's shorter window and the anomaly detector's longer one
        _same(cache.windows(storage, at(lo), at(360)), _windows(storage, at(lo), at(360)))
    assert cache.reads == {"full": 1, "incremental": 1, "direct": 0}
    # far enough on that the oldest readings leave the span
    for i in range(360, 700):
        _second(storage, i)
    _same(cache.windows(storage, at(100), at(700)), _windows(storage, at(100), at(700)))
    # a question about an earlier time is read from storage, the cache untouched
    _same(cache.windows(storage, at(0), at(200)), _windows(storage, at(0), at(200)))
    assert cache.reads == {"full": 1, "incremental": 2, "direct": 1}


def test_readings_later_than_the_margin_come_in_at_the_next_full_read(storage: Storage) -> None:
    cache = WindowCache(span_s=600, margin_s=30, full_every_s=120)
    at = lambda i: T0 + timedelta(seconds=i)  # noqa: E731
    for i in range(0, 100):
        _second(storage, i)
    cache.windows(storage, at(0), at(100))
    storage.insert_readings([_reading(10, "BACKLOG", "voltage_l1", 11.0)], "test")  # an edge's backlog, 90 s late
    for i in range(100, 160):
        _second(storage, i)
    got = cache.windows(storage, at(0), at(160))
    assert "BACKLOG" not in {w.device_id for w in got}  # not yet: older than the margin
    for i in range(160, 230):
        _second(storage, i)
    _same(cache.windows(storage, at(0), at(230)), _windows(storage, at(0), at(230)))  # the full read, 120 s on
    assert cache.reads["full"] == 2


def test_the_agents_use_the_cache_only_when_asked(storage: Storage, monkeypatch) -> None:
    from hub.insights.agent_inputs import AgentSettings, run_grid_monitor
    from hub.settings import Settings

    for i in range(0, 120):
        _second(storage, i)
    off, on = AgentSettings(), AgentSettings(incremental_windows=True)
    a = run_grid_monitor(storage, off, T0 + timedelta(seconds=120))
    b = run_grid_monitor(storage, on, T0 + timedelta(seconds=120))
    assert a.summary == b.summary and a.summary["series"] == 1
    monkeypatch.setenv("SENTINEL_AGENT_INCREMENTAL", "on")
    assert Settings.from_env().agents.agents.incremental_windows is True
    monkeypatch.setenv("SENTINEL_AGENT_INCREMENTAL", "sometimes")
    with pytest.raises(ValueError, match="SENTINEL_AGENT_INCREMENTAL: on .* not 'sometimes'"):
        Settings.from_env()


def test_what_the_cache_hands_out_is_the_agents_to_change(storage: Storage) -> None:
    cache = WindowCache(span_s=600)
    for i in range(0, 60):
        _second(storage, i)
    (w,) = cache.windows(storage, T0, T0 + timedelta(seconds=60))
    w.values[:] = np.nan  # an agent marking samples in place
    (again,) = cache.windows(storage, T0, T0 + timedelta(seconds=60))
    assert not np.isnan(again.values).any()
