"""Long ranges in chunks: ``iter_readings`` and ``iter_buckets`` on both storages, held to a reference
computed here in Python, and to each other (the same data in SQLite and PostgreSQL gives the same
rows and the same buckets, in the same order)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.storage import open_storage
from hub.storage.base import Storage, TimeWindows
from hub.storage.sqlite import SQLiteStorage
from protocols.reading import QualityFlag, Reading
from protocols.wire import ReadingRun, SyncBatch
from tests.support.export_data import SERIES, T0, US, dataset, order_key, reference_buckets

DUPLICATE_TS = T0 + timedelta(minutes=30, seconds=50)  # a point two edges both sent: stored twice (its minute's newest)


def load(storage: Storage) -> list[Reading]:
    """The dataset through HTTP-style inserts, plus one point stored twice (two edges' syncs)."""
    rows = dataset()
    assert storage.insert_readings(rows, "http") == len(rows)
    sub, dev, metric, unit = SERIES[0]
    for edge, value in (("EDGE-A", 120.25), ("EDGE-B", 120.75)):
        dup = Reading(ts=DUPLICATE_TS, substation=sub, device_id=dev, metric=metric, value=value, unit=unit)
        storage.apply_sync(SyncBatch(edge_id=edge, substation=sub, sent_at=DUPLICATE_TS,
                                     readings=ReadingRun(first_seq=1, items=[dup])), lambda events: [])
        rows.append(dup)
    return rows


def flat(chunks: Iterator[list]) -> tuple[list, list[int]]:
    rows, sizes = [], []
    for chunk in chunks:
        sizes.append(len(chunk))
        rows += chunk
    return rows, sizes


def same_readings(got: list[Reading], want: list[Reading]) -> None:
    """Equal, in order; rows of one (ts, series) (the duplicate) in either order."""
    assert [order_key(r) for r in got] == [order_key(r) for r in want]
    assert sorted(got, key=lambda r: (*order_key(r), r.value)) == sorted(want, key=lambda r: (*order_key(r), r.value))


# -- the windows ----------------------------------------------------------------------------------


def test_windows_cover_the_range_exactly_and_follow_the_density() -> None:
    hour = 3600 * 10**6
    windows = TimeWindows(5 * 10**6, 10 * hour + 7, 1000, align_us=60 * 10**6)
    seen = []
    for lo, hi in windows:
        seen.append((lo, hi))
        windows.done({0: 10, 1: 10, 2: 10_000}.get(len(seen) - 1, 1000))  # sparse, sparse, dense, just right
    assert seen[0][0] == 5 * 10**6 and seen[-1][1] == 10 * hour + 7
    assert all(a[1] == b[0] for a, b in zip(seen, seen[1:], strict=False)), "gaps or overlaps"
    assert all(hi % (60 * 10**6) == 0 for _, hi in seen[:-1]), "a window splits a bucket"
    spans = [hi - lo for lo, hi in seen]
    assert spans[0] == 55 * 10**6  # the first minute, from 00:00:05
    assert spans[1] == 240 * 10**6 and spans[2] == 960 * 10**6  # x4 while sparse
    assert spans[3] == 240 * 10**6  # /4 after ten times too many
    assert spans[4] == 240 * 10**6  # as many as wanted: kept


def test_empty_windows_grow_to_a_day_at_most_or_skip_to_the_next_reading() -> None:
    day = 86_400 * 10**6
    windows = TimeWindows(0, 30 * day, 100)
    spans = []
    for lo, hi in windows:
        spans.append(hi - lo)
        windows.done(0)
    assert max(spans) == day and sum(spans) == 30 * day
    asked = []
    windows = TimeWindows(0, 30 * day, 100,
                          next_us=lambda at: asked.append(at) or (20 * day + 5 if at < 20 * day else None))
    seen = []
    for lo, hi in windows:
        seen.append((lo, hi))
        windows.done(0)
    assert seen == [(0, 60 * 10**6), (20 * day + 5, 20 * day + 60 * 10**6 + 5)]
    assert asked == [60 * 10**6, 20 * day + 60 * 10**6 + 5]


# -- raw readings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7, 50_000])
def test_iter_readings_is_every_reading_in_order_in_bounded_chunks(storage: Storage, chunk_rows: int) -> None:
    rows = load(storage)
    start, end = T0 + timedelta(minutes=1), T0 + timedelta(days=22)
    want = sorted((r for r in rows if start <= r.ts < end), key=order_key)
    got, sizes = flat(storage.iter_readings(start, end, chunk_rows=chunk_rows))
    same_readings(got, want)
    assert max(sizes) <= chunk_rows and 0 not in sizes
    assert got[-1].ts == T0 + timedelta(days=21, seconds=30)  # past the three weeks' gap
    assert any(r.value is None for r in got) and any(r.anomaly_type == "spike" for r in got)


def test_iter_readings_bounds_are_start_inclusive_end_exclusive_to_the_microsecond(storage: Storage) -> None:
    rows = load(storage)
    edge = next(r.ts for r in rows if r.ts.second == 59)  # hh:mm:59.999999
    got, _ = flat(storage.iter_readings(edge, edge + US))
    assert {r.ts for r in got} == {edge}
    got, _ = flat(storage.iter_readings(edge - 5 * US, edge))
    assert got == []


@pytest.mark.parametrize("filters", [
    {"substations": ["arusha-s1"]},
    {"devices": ["TR-01"]},  # both substations have a TR-01
    {"metrics": ["voltage_l1", "current_l1"], "substations": ["arusha-s1", "nowhere"]},
    {"substations": ["arusha-s1"], "devices": ["FEEDER-F12"], "metrics": ["voltage_l1"]},
    {"substations": [], "devices": None},  # empty: no filter
    {"devices": ["nothing-here"]},
])
def test_iter_readings_filters(storage: Storage, filters: dict) -> None:
    rows = load(storage)
    start, end = T0, T0 + timedelta(hours=4)

    def keep(r: Reading) -> bool:
        return all(not filters.get(name) or value in filters[name] for name, value in
                   (("substations", r.substation), ("devices", r.device_id), ("metrics", r.metric)))

    want = sorted((r for r in rows if start <= r.ts < end and keep(r)), key=order_key)
    got, _ = flat(storage.iter_readings(start, end, chunk_rows=100, **filters))
    same_readings(got, want)


def test_iter_readings_refuses_naive_times_and_empty_chunks(storage: Storage) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        storage.iter_readings(datetime(2026, 3, 1), T0)
    with pytest.raises(ValueError, match="chunk_rows"):
        storage.iter_readings(T0, T0 + timedelta(hours=1), chunk_rows=0)
    assert list(storage.iter_readings(T0 + timedelta(hours=1), T0)) == []  # an empty range: nothing


# -- buckets ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bucket_s", "chunk_rows"), [(60, 3), (60, 50_000), (3600, 4), (86_400, 50_000)])
def test_iter_buckets_aggregate_as_the_reference(storage: Storage, bucket_s: int, chunk_rows: int) -> None:
    rows = load(storage)
    start, end = T0 + timedelta(minutes=1, seconds=30), T0 + timedelta(days=22)  # not on a bucket's boundary
    want = reference_buckets(rows, start, end, bucket_s)
    got, sizes = flat(storage.iter_buckets(start, end, bucket_s, chunk_rows=chunk_rows))
    assert got == want
    assert max(sizes) <= chunk_rows
    assert sum(b.count for b in got) == sum(1 for r in rows if start <= r.ts < end and r.value is not None
                                            and not r.flags & QualityFlag.INVALID)
    assert got[0].bucket_start <= start  # the first bucket is the whole one it falls in, filled from start


def test_iter_buckets_leave_out_invalid_and_valueless_readings_and_take_the_newest_as_last(storage: Storage) -> None:
    rows = load(storage)
    got, _ = flat(storage.iter_buckets(T0, T0 + timedelta(hours=3), 60))
    assert all(b.max < 999.0 for b in got)  # the INVALID readings hold 999
    sub, dev, metric, _ = SERIES[0]
    minute = DUPLICATE_TS.replace(second=0)
    (dup,) = [b for b in got if b.bucket_start == minute and b.device_id == dev and b.substation == sub]
    newest = max((r for r in rows if r.substation == sub and r.device_id == dev and r.metric == metric
                  and minute <= r.ts < minute + timedelta(minutes=1)), key=lambda r: (r.ts, r.value))
    assert newest.ts == DUPLICATE_TS and dup.last == newest.value == 120.75  # of two at one instant, the larger


def test_iter_buckets_filters_and_refusals(storage: Storage) -> None:
    rows = load(storage)
    start, end = T0, T0 + timedelta(hours=3)
    got, _ = flat(storage.iter_buckets(start, end, 3600, devices=["FEEDER-F12"], metrics=["voltage_l1"]))
    want = [b for b in reference_buckets(rows, start, end, 3600) if b.device_id == "FEEDER-F12"
            and b.metric == "voltage_l1"]
    assert got == want and len(got) == 3
    with pytest.raises(ValueError, match="bucket_s"):
        storage.iter_buckets(start, end, 0)


# -- both at once ------------------------------------------------------------------------------------


_ICU_NAMES = itertools.count(1)


def _locale_database(server: object) -> str:
    """A new database sorting text as English does ('arusha' < 'B' < 'Zanzibar'), where the server
    has ICU; else a plain one (which sorts bytes, as SQLite)."""
    import psycopg

    name = f"db_icu_{next(_ICU_NAMES)}"
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:  # type: ignore[attr-defined]
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
                         " LOCALE 'C.UTF-8'")
    except psycopg.Error:
        return server.create_database()  # type: ignore[attr-defined]
    return server.url(name)  # type: ignore[attr-defined]




@pytest.mark.postgres
def test_sqlite_and_postgresql_give_the_same_rows_and_buckets(tmp_path: Path, postgres_server: object) -> None:
    """On a PostgreSQL database whose text order is a locale's, not bytes: the export's order is still SQLite's."""
    lite, pg = SQLiteStorage(tmp_path / "hub.db"), open_storage(_locale_database(postgres_server))
    try:
        for store in (lite, pg):
            load(store)
        start, end = T0 - timedelta(hours=1), T0 + timedelta(days=30)
        a, _ = flat(lite.iter_readings(start, end, chunk_rows=13))
        b, _ = flat(pg.iter_readings(start, end, chunk_rows=13))
        same_readings(a, b)
        for bucket_s in (60, 3600, 86_400):
            assert flat(lite.iter_buckets(start, end, bucket_s, chunk_rows=5))[0] == \
                flat(pg.iter_buckets(start, end, bucket_s, chunk_rows=5))[0]
    finally:
        lite.close()
        pg.close()


def test_an_export_in_progress_blocks_no_ingest(storage: Storage) -> None:
    """Between two chunks the storage holds no lock: readings go on being stored, even for a new day
    (PostgreSQL: a new partition, which needs the table to itself)."""
    load(storage)
    chunks = storage.iter_readings(T0, T0 + timedelta(days=22), chunk_rows=10)
    assert len(next(chunks)) == 10
    sub, dev, metric, unit = SERIES[1]
    stored: list[int] = []
    later = T0 + timedelta(days=60)
    writer = threading.Thread(target=lambda: stored.append(storage.insert_readings(
        [Reading(ts=later, substation=sub, device_id=dev, metric=metric, value=1.0, unit=unit)], "http")))
    writer.start()
    writer.join(20)
    assert stored == [1], "the insert waited on the export"
    assert len(list(chunks)) > 10
    chunks.close()
