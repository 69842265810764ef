"""The agents' windows: readings read in chunks as rows and shaped into per-series arrays (no Reading
per row, no row limit), on every backend."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from hub.insights.agent_inputs import _windows
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
