"""Rollups (schema migrations 2 and 4): 1-minute, 1-hour and 1-day min/max/sum/count/last per series,
tables the hub keeps on SQLite and plain PostgreSQL, continuous aggregates on TimescaleDB. Whatever
the order readings arrive in, duplicates, readings without a value or flagged invalid, several
substations, edge syncs and HTTP, a question answered from the rollups equals the same question
answered from the raw readings, on every backend."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from hub.storage import open_storage
from hub.storage.base import QUESTION_CHUNK_HOURS, ROLLUP_WIDTHS, Storage, rollup_span, shard_of
from protocols.reading import Reading
from protocols.wire import ReadingRun, SyncBatch

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _readings(rng: random.Random, n: int, span_s: float) -> list[Reading]:
    out = []
    for _ in range(n):
        ts = T0 + timedelta(microseconds=round(rng.uniform(0, span_s) * 1e6))
        value = None if rng.random() < 0.05 else round(rng.gauss(11.0, 0.3), 4)
        out.append(Reading(ts=ts, substation=rng.choice(["S1", "S2"]), device_id=rng.choice(["F1", "F2"]),
                           metric="voltage_l1", value=value, unit="kV", quality=1.0,
                           flags=1 if rng.random() < 0.05 else 0))
    return out


def _raw(storage: Storage, start: datetime, end: datetime, bucket_s: int, device: str) -> list:
    rows = [b for chunk in storage.iter_buckets(start, end, bucket_s, devices=[device], metrics=["voltage_l1"])
            for b in chunk]
    return sorted(rows, key=lambda b: (b.bucket_start, b.substation))


def _same(got: list, want: list) -> None:
    assert [(b.bucket_start, b.substation, b.count) for b in got] == [(b.bucket_start, b.substation, b.count)
                                                                     for b in want]
    for g, w in zip(got, want, strict=True):
        assert (g.min, g.max, g.last) == (w.min, w.max, w.last), (g, w)
        assert g.avg == pytest.approx(w.avg, rel=1e-12, abs=1e-9)


def test_rollup_answers_equal_raw_answers_however_the_readings_came(storage: Storage) -> None:
    rng = random.Random(7)
    data = _readings(rng, 6_000, 3 * 86_400)
    rng.shuffle(data)  # late and out-of-order arrivals
    for i in range(0, 3_000, 300):  # HTTP / MQTT: de-duplicated on (series, ts)
        storage.insert_readings(data[i:i + 300], "http")
    storage.insert_readings(data[:500], "http")  # again: held already, must not count twice
    edge = sorted(data[3_000:], key=lambda r: r.ts)
    for i, first in enumerate(range(0, len(edge), 500)):  # an edge's syncs
        storage.apply_sync(SyncBatch(edge_id="e1", substation="S1", sent_at=T0,
                                     readings=ReadingRun(first_seq=first + 1, items=edge[first:first + 500])),
                           lambda events: [])
    ranges = [(T0, T0 + timedelta(days=3)),  # whole buckets only
              (T0 + timedelta(seconds=17.25), T0 + timedelta(days=2, hours=5, seconds=31)),  # ragged ends
              (T0 + timedelta(minutes=10), T0 + timedelta(minutes=70))]  # no whole hour or day
    for width in ROLLUP_WIDTHS:
        for start, end in ranges:
            for device in ("F1", "F2"):
                _same(storage.series_buckets(start, end, width, device, "voltage_l1"),
                      _raw(storage, start, end, width, device))
                one = storage.series_buckets(start, end, width, device, "voltage_l1", substation="S2")
                assert one and {b.substation for b in one} == {"S2"}
    # a bucket width that is not rolled up is answered from the readings, the same way
    _same(storage.series_buckets(T0, T0 + timedelta(days=1), 300, "F1", "voltage_l1"),
          _raw(storage, T0, T0 + timedelta(days=1), 300, "F1"))


def test_a_shards_hourly_means_are_its_substations_filtered_by_the_database(storage: Storage) -> None:
    """``hourly_means(shard=(i, n))``: the database computes the shard of each row's substation as
    Python does (``shard_of``: whatever the name's characters), over the rollups and the ragged ends."""
    rng = random.Random(11)
    names = [f"SUB-{i:02d}" for i in range(30)] + ["Ñairobi-Ω", "mombasa s1", "東京-7", "a'b\"c", ""]
    storage.insert_readings([
        Reading(ts=T0 + timedelta(minutes=rng.uniform(0, 300)), substation=name, device_id="T1",
                metric="oil_temperature", value=60.0 + rng.random(), unit="C", quality=1.0, flags=0)
        for name in names for _ in range(12)], "http")
    start, end = T0 + timedelta(minutes=13), T0 + timedelta(hours=4, minutes=41)  # whole hours and ragged ends
    everything = storage.hourly_means(["oil_temperature"], start, end)
    assert {h.substation for h in everything} == set(names)
    for count in (2, 3, 7):
        got = [storage.hourly_means(["oil_temperature"], start, end, shard=(i, count)) for i in range(count)]
        for i, part in enumerate(got):
            assert part == [h for h in everything if shard_of(h.substation, count) == i], (i, count)
        assert sum(len(part) for part in got) == len(everything)
        assert sum(1 for part in got if part) > 1  # the names do spread over the shards


def test_hourly_means_from_the_rollups_equal_the_readings(storage: Storage) -> None:
    rng = random.Random(3)
    storage.insert_readings(_readings(rng, 4_000, 2 * 86_400), "http")
    start, end = T0 + timedelta(minutes=13), T0 + timedelta(days=1, hours=20, minutes=7)
    got = storage.hourly_means(["voltage_l1"], start, end)
    want = sorted(((b.substation, b.device_id, b.bucket_start, b.avg, b.count) for b in
                   (x for chunk in storage.iter_buckets(start, end, 3600, metrics=["voltage_l1"]) for x in chunk)))
    assert [(h.substation, h.device_id, h.hour, h.count) for h in got] == [(w[0], w[1], w[2], w[4]) for w in want]
    assert [h.mean for h in got] == pytest.approx([w[3] for w in want], rel=1e-12)
    assert got == sorted(got, key=lambda h: (h.substation, h.device_id, h.metric, h.hour))


def test_rollup_span_is_the_whole_buckets_inside_the_range() -> None:
    assert rollup_span(T0 + timedelta(seconds=1), T0 + timedelta(hours=3, seconds=5), 3600) == \
        (T0 + timedelta(hours=1), T0 + timedelta(hours=3))
    assert rollup_span(T0, T0 + timedelta(minutes=59), 3600) is None
    assert rollup_span(T0, T0 + timedelta(days=1), 86_400) == (T0, T0 + timedelta(days=1))


def test_ingest_marks_hours_and_a_refresh_folds_them_once(storage: Storage) -> None:
    if storage.backend == "timescaledb":  # nothing marked: its continuous aggregates track changes themselves
        storage.insert_readings(_readings(random.Random(11), 500, 3 * 3600), "http")
        assert storage.refresh_rollups() == 0 and storage.refresh_rollups(start=T0, end=T0 + timedelta(hours=3)) == 0
        with storage.transaction() as tx:
            assert tx.execute("SELECT to_regclass('rollup_dirty'), to_regclass('rollups')").fetchone() == (None, None)
        _same(storage.series_buckets(T0, T0 + timedelta(hours=3), 3600, "F2", "voltage_l1"),
              _raw(storage, T0, T0 + timedelta(hours=3), 3600, "F2"))
        return
    rng = random.Random(11)
    storage.insert_readings(_readings(rng, 500, 3 * 3600), "http")  # three hours, two devices, two substations
    assert storage.refresh_rollups(device_id="F1", start=T0, end=T0 + timedelta(hours=1)) == 2  # F1's hour 0, both
    assert storage.refresh_rollups(limit=3) == 3
    left = storage.refresh_rollups()
    assert left == 12 - 2 - 3 and storage.refresh_rollups() == 0  # 2 devices x 2 substations x 3 hours
    late = _readings(random.Random(12), 50, 3600)  # late readings of hour 0: marked again, folded again
    storage.insert_readings(late, "http")
    assert storage.refresh_rollups() > 0
    _same(storage.series_buckets(T0, T0 + timedelta(hours=3), 3600, "F2", "voltage_l1"),
          _raw(storage, T0, T0 + timedelta(hours=3), 3600, "F2"))


def test_a_question_folds_a_backlog_a_chunk_at_a_time_and_is_exact(storage: Storage) -> None:
    """Ten days of marks for two series (about 480 hours: 15 transactions of QUESTION_CHUNK_HOURS): the
    question takes them all, in chunks, and answers as the readings do; nothing is left marked."""
    rng = random.Random(5)
    data = [r for r in _readings(rng, 6_000, 10 * 86_400) if r.substation == "S1"]
    storage.insert_readings(data, "http")
    hours = {(r.device_id, int(r.ts.timestamp()) // 3600) for r in data}  # F1 and F2 of S1, nearly every hour
    marked = 0 if storage.backend == "timescaledb" else len(hours)
    assert storage.refresh_rollups(metric="voltage_l1", start=T0, end=T0 + timedelta(days=10)) == marked
    assert marked == 0 or marked > 10 * QUESTION_CHUNK_HOURS
    assert storage.refresh_rollups() == 0
    for device in ("F1", "F2"):
        _same(storage.series_buckets(T0, T0 + timedelta(days=10), 3600, device, "voltage_l1"),
              _raw(storage, T0, T0 + timedelta(days=10), 3600, device))


def test_the_hub_folds_marked_hours_in_the_background(tmp_path) -> None:  # noqa: ANN001
    import asyncio

    from hub.readings.rollups import refresh_rollups_forever
    from hub.storage.sqlite import SQLiteStorage

    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        storage.insert_readings(_readings(random.Random(5), 300, 2 * 3600), "http")

        async def run() -> None:
            task = asyncio.create_task(refresh_rollups_forever(storage, interval_s=0.05))
            await asyncio.sleep(0.5)
            task.cancel()

        asyncio.run(run())
        assert storage.refresh_rollups() == 0  # nothing was left marked
    finally:
        storage.close()


def test_the_background_refresher_folds_the_hour_still_filling_less_often(storage: Storage) -> None:
    """Every round folds the hours before the current one; the current hour (each sync marks it
    again, each fold recomputes all of it so far) only every ``filling_every_s``, and at the first
    round. A question over the current hour is exact meanwhile."""
    import asyncio

    from hub.readings.rollups import refresh_rollups_forever

    now = datetime.now(UTC)
    if storage.backend == "timescaledb":  # nothing marked: TimescaleDB's own jobs refresh the aggregates, and the
        hour = now.replace(minute=0, second=0, microsecond=0)  # background refresher materializes nothing there
        storage.insert_readings([Reading(ts=hour - timedelta(hours=2), substation="S1", device_id="F1",
                                         metric="voltage_l1", value=11.0, unit="kV")], "http")

        def materialized() -> int:
            with storage.transaction() as tx:
                return tx.execute(f"SELECT count(*) FROM {_materialized(storage, 'rollups_1m')}").fetchone()[0]

        assert storage.refresh_rollups(limit=16, end=hour) == 0 and materialized() == 0
        storage.refresh_rollups(start=hour - timedelta(hours=3), end=hour)  # a question's range: refreshed
        assert materialized() == 1
        return
    if now.minute == 59 and now.second >= 45:  # the hour must not turn while the test runs
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    hour = now.replace(minute=0, second=0, microsecond=0)

    def some(at: datetime, seed: int) -> list[Reading]:
        rng = random.Random(seed)
        return [Reading(ts=at + timedelta(seconds=rng.uniform(0, 30)), substation="S1", device_id="F1",
                        metric="voltage_l1", value=round(rng.gauss(11.0, 0.3), 4), unit="kV") for _ in range(20)]

    async def run(rounds_s: float, filling_every_s: float) -> None:
        task = asyncio.create_task(refresh_rollups_forever(storage, interval_s=0.05, filling_every_s=filling_every_s))
        await asyncio.sleep(rounds_s)
        task.cancel()

    storage.insert_readings(some(hour - timedelta(hours=2), 1) + some(hour, 2), "http")
    asyncio.run(run(0.5, 3600.0))
    assert storage.refresh_rollups() == 0  # the first round folded both hours
    storage.insert_readings(some(hour - timedelta(hours=2), 3) + some(hour, 4), "http")  # both marked again
    asyncio.run(run(0.5, 3600.0))  # a fresh refresher: its first round folds everything again
    assert storage.refresh_rollups() == 0

    async def later_rounds() -> None:  # one refresher: its first round, then new readings, then more rounds
        task = asyncio.create_task(refresh_rollups_forever(storage, interval_s=0.05, filling_every_s=3600.0))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(storage.insert_readings, some(hour - timedelta(hours=2), 5) + some(hour, 6), "http")
        await asyncio.sleep(0.5)
        task.cancel()

    asyncio.run(later_rounds())
    # the past hour was folded by a later round; the current one was left for filling_every_s
    assert storage.refresh_rollups(start=hour - timedelta(hours=2), end=hour - timedelta(hours=1)) == 0
    _same(storage.series_buckets(hour - timedelta(hours=3), now + timedelta(minutes=1), 3600, "F1", "voltage_l1"),
          _raw(storage, hour - timedelta(hours=3), now + timedelta(minutes=1), 3600, "F1"))  # exact meanwhile
    assert storage.refresh_rollups(start=hour, end=hour + timedelta(hours=1)) == 1  # still marked: folded now


def _materialized(storage: Storage, view: str) -> str:
    with storage.transaction() as tx:
        schema, table = tx.execute("SELECT materialization_hypertable_schema, materialization_hypertable_name"
                                   " FROM timescaledb_information.continuous_aggregates WHERE view_name = ?",
                                   [view]).fetchone()
    return f'"{schema}"."{table}"'


@pytest.mark.postgres
def test_on_timescaledb_the_rollups_are_hierarchical_continuous_aggregates_and_questions_read_them(
        timescale_url: str) -> None:
    with open_storage(timescale_url) as storage:
        _questions_read_the_continuous_aggregates(storage)


def _questions_read_the_continuous_aggregates(storage: Storage) -> None:
    assert storage.backend == "timescaledb"
    with storage.transaction() as tx:
        views = tx.execute("SELECT view_name, materialized_only, view_definition"
                           " FROM timescaledb_information.continuous_aggregates ORDER BY view_name").fetchall()
        jobs = {r[0]: r[1] for r in tx.execute(
            "SELECT v.view_name, array_agg(j.proc_name::text ORDER BY j.proc_name) FROM timescaledb_information.jobs j"
            " JOIN timescaledb_information.continuous_aggregates v"
            " ON v.materialization_hypertable_name = j.hypertable_name GROUP BY v.view_name").fetchall()}
    assert [v[:2] for v in views] == [("rollups_1d", False), ("rollups_1h", False), ("rollups_1m", False)]
    sources = {name: definition for name, _, definition in views}  # 1 h from 1 min, 1 day from 1 h
    assert "FROM rollups_1h" in sources["rollups_1d"] and "FROM rollups_1m" in sources["rollups_1h"]
    assert "FROM readings" in sources["rollups_1m"]
    assert jobs == {"rollups_1m": ["policy_compression", "policy_refresh_continuous_aggregate"],
                    "rollups_1h": ["policy_compression", "policy_refresh_continuous_aggregate"],
                    "rollups_1d": ["policy_refresh_continuous_aggregate"]}
    storage.insert_readings(_readings(random.Random(21), 2_000, 2 * 86_400), "http")
    day = (T0, T0 + timedelta(days=1))
    before = storage.series_buckets(*day, 3600, "F1", "voltage_l1", substation="S1")
    _same(before, [b for b in _raw(storage, *day, 3600, "F1") if b.substation == "S1"])
    # what the question reads is the aggregate: change its materialized hour, and the answer changes
    with storage.transaction() as tx:
        changed = tx.execute(f"UPDATE {_materialized(storage, 'rollups_1h')} SET vmax = 1e6"
                             " WHERE bucket = ? AND device_id = 'F1' AND substation = 'S1'", [T0]).rowcount
    assert changed == 1
    after = storage.series_buckets(*day, 3600, "F1", "voltage_l1", substation="S1")
    assert after[0].max == 1e6 and after[1:] == before[1:]


def test_readings_that_arrive_after_a_refresh_are_counted_at_once(storage: Storage) -> None:
    """Late and repeated readings land in buckets already rolled up (materialized, on TimescaleDB):
    the next question counts them, without waiting for a background refresh."""
    rng = random.Random(31)
    data = _readings(rng, 3_000, 2 * 86_400)
    storage.insert_readings(data[:2_000], "http")
    span = (T0, T0 + timedelta(days=2))
    storage.refresh_rollups(start=span[0], end=span[1])  # every bucket rolled up (materialized) now
    for width in ROLLUP_WIDTHS:
        _same(storage.series_buckets(*span, width, "F1", "voltage_l1"), _raw(storage, *span, width, "F1"))
    storage.insert_readings(data[2_000:], "http")  # late, into the same buckets
    storage.insert_readings(data[:300], "http")  # again: held already
    edge = sorted(data[2_500:], key=lambda r: r.ts)  # and again, as an edge's sync (not de-duplicated)
    storage.apply_sync(SyncBatch(edge_id="e9", substation="S1", sent_at=T0,
                                 readings=ReadingRun(first_seq=1, items=edge)), lambda events: [])
    for width in ROLLUP_WIDTHS:
        _same(storage.series_buckets(*span, width, "F1", "voltage_l1"), _raw(storage, *span, width, "F1"))
    got = storage.hourly_means(["voltage_l1"], *span)
    assert sum(h.count for h in got) == sum(b.count for c in storage.iter_buckets(*span, 3600, metrics=["voltage_l1"])
                                            for b in c)


@pytest.mark.postgres
def test_a_sync_marking_an_hour_being_recomputed_does_not_wait_for_the_recompute(postgres_url: str) -> None:
    """The background refresh claims its marks in a transaction of its own and recomputes in a
    second: a sync marking one of those hours meanwhile goes through at once, and its mark stays for
    the next refresh. (When one transaction held the marks through the recompute, the syncs of 1 Hz
    series queued behind every recompute; docs/scaling.md, "Rollup marks under load".) The recompute
    is held here by another session's lock on the rollups."""
    import threading

    import psycopg

    from hub.storage.postgres import PostgresStorage

    storage = PostgresStorage(postgres_url)
    blocker = psycopg.connect(postgres_url, autocommit=True)
    try:
        storage.insert_readings(_readings(random.Random(8), 500, 3000), "http")  # T0's hour, two series
        blocker.execute("BEGIN")
        blocker.execute("LOCK TABLE rollups IN SHARE MODE")  # the recompute's INSERT waits for this
        refresh = threading.Thread(target=storage.refresh_rollups, kwargs={"limit": 100})
        refresh.start()
        deadline = time.monotonic() + 10
        while not blocker.execute("SELECT count(*) FROM rollup_dirty WHERE marks < 0").fetchone()[0]:
            assert time.monotonic() < deadline, "the refresh never claimed the marks"
            time.sleep(0.02)
        late = Reading(ts=T0 + timedelta(minutes=59), substation="S1", device_id="F1", metric="voltage_l1",
                       value=99.0, unit="kV", quality=1.0, flags=0)
        sync = threading.Thread(target=storage.apply_sync, args=(SyncBatch(
            edge_id="e1", substation="S1", sent_at=T0, readings=ReadingRun(first_seq=1, items=[late])), lambda _: []))
        sync.start()
        sync.join(10)
        assert not sync.is_alive(), "the sync waited for the recompute"
        assert refresh.is_alive()  # still held: the sync went through while the hour was being recomputed
        blocker.execute("COMMIT")
        refresh.join(10)
        assert not refresh.is_alive()
        # the sync's mark survived the refresh that claimed its hour: the next one folds the late reading
        assert blocker.execute("SELECT count(*) FROM rollup_dirty WHERE device_id = 'F1' AND substation = 'S1'"
                               " AND marks > 0").fetchone()[0] == 1
        assert storage.refresh_rollups(limit=100) >= 1
        _same(storage.series_buckets(T0, T0 + timedelta(hours=1), 3600, "F1", "voltage_l1"),
              _raw(storage, T0, T0 + timedelta(hours=1), 3600, "F1"))
        assert max(b.max for b in storage.series_buckets(T0, T0 + timedelta(hours=1), 60, "F1", "voltage_l1",
                                                         substation="S1")) == 99.0
    finally:
        blocker.close()
        storage.close()


def test_a_serving_hub_freezes_what_start_up_made_and_a_hub_built_in_a_test_does_not(tmp_path) -> None:  # noqa: ANN001
    """``freeze_gc`` (set by `sentinel hub serve` and its workers): what exists once the hub has
    started is out of the collector's sight, so a full collection during a year's question walks only
    what came since (docs/rollups.md); a hub built without it freezes nothing."""
    import gc

    from litestar.testing import TestClient

    from hub.app import create_app
    from hub.settings import Settings
    from hub.storage.sqlite import SQLiteStorage
    from tests.support.hub_auth import ADMIN_KEY

    storage = SQLiteStorage(tmp_path / "hub.db")
    gc.unfreeze()
    try:
        with TestClient(create_app(Settings(admin_key=ADMIN_KEY, agents=None, webhooks=None), storage=storage)):
            assert gc.get_freeze_count() == 0
        with TestClient(create_app(Settings(admin_key=ADMIN_KEY, agents=None, webhooks=None, freeze_gc=True),
                                   storage=storage)) as client:
            assert gc.get_freeze_count() > 1000  # the app, its routes, the modules: everything then alive
            assert client.get("/healthz").status_code == 200
    finally:
        gc.unfreeze()
        storage.close()


FOLDED = [pytest.param("sqlite"), pytest.param("postgres-plain", marks=pytest.mark.postgres)]  # the hub's own rollups


def _at(hour: datetime, seconds: float, value: float | None, *, device: str = "F1", flags: int = 0) -> Reading:
    return Reading(ts=hour + timedelta(microseconds=round(seconds * 1e6)), substation="S1", device_id=device,
                   metric="voltage_l1", value=value, unit="kV", quality=1.0, flags=flags)


def _store(storage: Storage, batch: list[Reading], seq: int, *, over_http: bool) -> int:
    """``batch`` stored over HTTP (de-duplicated) or as an edge's next sync (sorted, not); the next seq."""
    if over_http:
        storage.insert_readings(batch, "http")
        return seq
    batch = sorted(batch, key=lambda r: r.ts)
    storage.apply_sync(SyncBatch(edge_id="e1", substation="S1", sent_at=T0,
                                 readings=ReadingRun(first_seq=seq, items=batch)), lambda events: [])
    return seq + len(batch)


def _every_width_as_raw(storage: Storage) -> None:
    for width in ROLLUP_WIDTHS:
        for device in ("F1", "F2"):
            _same(storage.series_buckets(T0, T0 + timedelta(days=1), width, device, "voltage_l1"),
                  _raw(storage, T0, T0 + timedelta(days=1), width, device))


@pytest.mark.parametrize("storage", FOLDED, indirect=True)
def test_a_fold_rereads_only_the_minutes_of_the_readings_that_came(storage: Storage) -> None:
    """A fold recomputes an hour's minutes from its new readings' earliest on, and the hour from its
    minutes: the minutes before are not read again. Seen here by removing a folded reading behind the
    rollups' back: its minute keeps counting it until a reading comes in that minute."""
    hour = T0 + timedelta(hours=5)

    def hour_bucket() -> tuple[int, float, float]:
        (b,) = storage.series_buckets(hour, hour + timedelta(hours=1), 3600, "F1", "voltage_l1")
        return b.count, b.max, b.last

    storage.insert_readings([_at(hour, 10, 11.0), _at(hour, 70, 77.0), _at(hour, 130, 11.2)], "http")
    assert hour_bucket() == (3, 77.0, 11.2)  # the first fold: the whole hour
    with storage.transaction() as tx:
        tx.execute("DELETE FROM readings WHERE value = ?", [77.0])
    storage.insert_readings([_at(hour, 190, 11.4)], "http")  # after the newest folded: added
    assert hour_bucket() == (4, 77.0, 11.4)  # the removed reading is still counted: its minute was not re-read
    minutes = storage.series_buckets(hour, hour + timedelta(minutes=4), 60, "F1", "voltage_l1")
    assert [(b.count, b.max) for b in minutes] == [(1, 11.0), (1, 77.0), (1, 11.2), (1, 11.4)]
    storage.insert_readings([_at(hour, 100, 11.1)], "http")  # late, in the removed reading's minute
    assert hour_bucket() == (4, 11.4, 11.4)  # that minute recomputed, from the readings as they are
    _same(storage.series_buckets(hour, hour + timedelta(hours=1), 60, "F1", "voltage_l1"),
          _raw(storage, hour, hour + timedelta(hours=1), 60, "F1"))


def test_an_hour_filling_in_rounds_is_exact_after_every_fold(storage: Storage) -> None:
    """An hour filled in rounds, as edges sync it, folded after each: mostly readings after the newest
    folded, some at the same instant (an edge's repeat, a larger value: the new last), some late,
    some without a value or flagged invalid, over HTTP and edge syncs. After every fold each width's
    answer equals the raw readings'."""
    rng = random.Random(17)
    hour = T0 + timedelta(hours=2)
    newest, seq = 0.0, 1
    for round_ in range(14):
        batch = []
        for _ in range(rng.randint(1, 30)):
            kind = rng.random()
            seconds = newest if kind < 0.1 else rng.uniform(0, newest) if kind < 0.25 else \
                min(3599.0, newest + rng.uniform(0.001, 240))
            value = None if rng.random() < 0.05 else round(rng.gauss(11.0, 0.3), 3)
            batch.append(_at(hour, seconds, value, device=rng.choice(["F1", "F2"]),
                             flags=1 if rng.random() < 0.05 else 0))
        newest = max([newest] + [(r.ts - hour).total_seconds() for r in batch])
        seq = _store(storage, batch, seq, over_http=round_ % 2 == 1)
        _every_width_as_raw(storage)


@pytest.mark.postgres
def test_refreshes_racing_over_a_filling_hour_count_each_reading_once(postgres_url: str) -> None:
    """The background refresher (two replicas' worth) and questions fold the same filling hour while
    syncs keep coming: folds run one at a time, so an older view of the readings never overwrites a
    newer one, no reading is missed, and no refresh deadlocks another."""
    import threading

    from hub.storage.postgres import PostgresStorage

    storage = PostgresStorage(postgres_url)
    hour = T0 + timedelta(hours=3)
    done, errors = threading.Event(), []

    def ingest() -> None:
        rng, seq = random.Random(23), 1
        for i in range(150):
            batch = [_at(hour, i * 20 + j * 3 + rng.random(), round(rng.gauss(11, 0.3), 3), device=device)
                     for j in range(6) for device in ("F1", "F2")]
            if i % 10 == 9:  # now and then a late one
                batch.append(_at(hour, rng.uniform(0, i * 20), 50.0 + i, device="F2"))
            seq = _store(storage, batch, seq, over_http=i % 2 == 1)

    def keep(step: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                while not done.is_set():
                    step()
            except Exception as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)
        return run

    racers = [threading.Thread(target=keep(lambda: storage.refresh_rollups(limit=3))) for _ in range(2)]
    racers.append(threading.Thread(target=keep(lambda: storage.series_buckets(
        hour, hour + timedelta(hours=1), 60, "F2", "voltage_l1"))))
    try:
        for t in racers:
            t.start()
        ingest()
        done.set()
        for t in racers:
            t.join(30)
        assert not errors, errors
        _every_width_as_raw(storage)
    finally:
        done.set()
        storage.close()


@pytest.mark.parametrize("storage", FOLDED, indirect=True)
def test_the_refresher_folds_the_longest_waiting_marks_first(storage: Storage) -> None:
    """A series marked again by every sync must not keep the refresher from the others: it takes the
    marks whose readings have waited longest (the earliest ``since``), not the first in key order,
    where series A, folded and marked again each round, would be taken every time."""
    hour = T0 + timedelta(hours=7)

    def marked() -> set[str]:
        with storage.transaction() as tx:
            return {r[0] for r in tx.execute("SELECT device_id FROM rollup_dirty").fetchall()}

    storage.insert_readings([_at(hour, 20, 11.0, device="B"), _at(hour, 10, 11.0, device="A"),
                             _at(hour, 0, 11.0, device="C")], "http")
    assert storage.refresh_rollups(limit=1) == 1 and marked() == {"A", "B"}  # C waited longest
    storage.insert_readings([_at(hour, 30, 11.1, device="A")], "http")  # A's mark still from 10 s
    assert storage.refresh_rollups(limit=1) == 1 and marked() == {"B"}
    storage.insert_readings([_at(hour, 40, 11.2, device="A")], "http")  # A marked again, from 40 s
    assert storage.refresh_rollups(limit=1) == 1 and marked() == {"A"}  # B (20 s) before A
    assert storage.refresh_rollups(limit=1) == 1 and marked() == set()
    for device in ("A", "B", "C"):
        _same(storage.series_buckets(hour, hour + timedelta(hours=1), 60, device, "voltage_l1"),
              _raw(storage, hour, hour + timedelta(hours=1), 60, device))


def test_sqlite_folds_search_the_marks_rows_rather_than_walk_every_reading(tmp_path) -> None:  # noqa: ANN001
    """The recomputes' plans start from the marks and search their readings (and minutes, and hours)
    by index: with no statistics on the fresh temp table of marks, SQLite otherwise walked the whole
    readings index and looked each reading up among the marks, so every fold read every reading."""
    import hub.storage.sqlite as sqlite_storage

    storage = sqlite_storage.SQLiteStorage(tmp_path / "hub.db")
    try:
        storage.insert_readings(_readings(random.Random(3), 2_000, 3 * 86_400), "test")
        db = storage._db  # noqa: SLF001  (the plan of the storage's own statements)
        db.execute(sqlite_storage._TODO_TABLE)  # noqa: SLF001
        inner = {"_RECOMPUTE_MINUTES": "r", "_RECOMPUTE_HOURS": "m", "_RECOMPUTE_DAYS": "h"}
        for name, alias in inner.items():
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + getattr(sqlite_storage, name))]
            assert any(step.startswith(f"SEARCH {alias} USING") for step in plan), (name, plan)
            assert not any(step.startswith(f"SCAN {alias} ") or step == f"SCAN {alias}" for step in plan), (name, plan)
    finally:
        storage.close()
