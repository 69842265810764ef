"""The live range (protocols.wire, "Live first"): a batch's live run of the newest readings beside its
oldest-first readings run, on SQLite and PostgreSQL in both layouts. Every reading is stored once,
the mark jumps over the range when the backlog reaches it, and whatever does not fit the contract
is refused whole with the hub's marks and range."""

from __future__ import annotations

import contextlib
import sqlite3
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from hub.storage import open_storage
from hub.storage.base import SequenceError, Storage, plan_sync
from hub.storage.migrations import LATEST
from protocols.reading import Reading
from protocols.wire import ReadingRun, SyncBatch, WireError, decode_ack, decode_batch, encode

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SUB, EDGE = "KISUMU-S1", "edge-kisumu-01"
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def reading(seq: int) -> Reading:
    """The edge's reading number ``seq``, taken ``seq`` seconds after T0."""
    return Reading(ts=T0 + timedelta(seconds=seq), substation=SUB, device_id="TR-11", metric="oil_temperature",
                   value=60.0 + seq % 7, unit="degC")


def run(first: int, last: int, after: int | None = None) -> ReadingRun:
    return ReadingRun(first_seq=first, after=after, items=[reading(s) for s in range(first, last + 1)])


def batch(readings: ReadingRun | None = None, live: ReadingRun | None = None,
          buffer_id: str = "buffer-one") -> SyncBatch:
    return SyncBatch(edge_id=EDGE, substation=SUB, sent_at=T0, readings=readings, live=live, buffer_id=buffer_id)


def held(storage: Storage) -> list[int]:
    """The reading numbers the hub holds, with repeats, in order."""
    return sorted(round((r.ts - T0).total_seconds())
                  for r in storage.query_readings("TR-11", "oil_temperature", *ALL_TIME, limit=100_000))


def sync(storage: Storage, b: SyncBatch):
    return storage.apply_sync(b, lambda events: [])


def test_the_newest_first_then_the_backlog_oldest_first_and_every_reading_once(storage: Storage) -> None:
    # an outage left 1..1000 at the edge: the first batch brings the oldest 100 and the newest 100
    ack = sync(storage, batch(run(1, 100), run(901, 1000)))
    assert (ack.readings_acked_through, ack.live_lo, ack.live_hi, ack.readings_stored) == (100, 901, 1000, 200)
    assert held(storage) == [*range(1, 101), *range(901, 1001)]
    # the same batch again (its ack was lost): nothing stored twice
    again = sync(storage, batch(run(1, 100), run(901, 1000)))
    assert (again.readings_stored, again.duplicates, again.readings_acked_through, again.live_hi) == (0, 200, 100, 1000)
    # the backlog goes on oldest first while new readings continue the live range
    ack = sync(storage, batch(run(101, 500), run(1001, 1010)))
    assert (ack.readings_acked_through, ack.live_lo, ack.live_hi) == (500, 901, 1010)
    # the backlog reaches the range: the mark jumps over it, the range is gone, one stream again
    ack = sync(storage, batch(run(501, 900), run(1011, 1020)))
    assert (ack.readings_acked_through, ack.live_lo, ack.live_hi) == (1020, msgspec.UNSET, msgspec.UNSET)
    assert b'"live_lo"' not in encode(ack)
    # that last batch resent (its ack lost): all duplicates, mark unchanged
    again = sync(storage, batch(run(501, 900), run(1011, 1020)))
    assert (again.readings_stored, again.duplicates, again.readings_acked_through) == (0, 410, 1020)
    ack = sync(storage, batch(run(1021, 1030)))
    assert ack.readings_acked_through == 1030
    assert held(storage) == list(range(1, 1031))
    (state,) = storage.edge_states()
    assert (state.readings_acked_through, state.gaps) == (1030, 0)


def test_a_backlog_whose_last_rows_were_dropped_closes_with_an_empty_run_declaring_the_gap(storage: Storage) -> None:
    sync(storage, batch(run(1, 100), run(901, 950)))
    ack = sync(storage, batch(run(101, 400)))  # then 401..900 were dropped at the edge
    assert (ack.readings_acked_through, ack.live_hi) == (400, 950)
    ack = sync(storage, batch(ReadingRun(first_seq=901, after=400, items=[]), run(951, 960)))
    assert (ack.readings_acked_through, ack.gaps, ack.live_lo) == (960, 500, msgspec.UNSET)
    (state,) = storage.edge_states()
    assert (state.readings_acked_through, state.gaps) == (960, 500)
    assert held(storage) == [*range(1, 401), *range(901, 961)]


def test_a_gap_in_the_live_lane_is_taken_only_when_declared_after_the_range(storage: Storage) -> None:
    sync(storage, batch(run(1, 10), run(101, 120)))
    with pytest.raises(SequenceError) as err:
        sync(storage, batch(run(11, 20), run(131, 140)))
    assert "the hub holds the live range 101..120 for edge edge-kisumu-01; expected at most 121, or after = 120" \
        in str(err.value)
    body = err.value.conflict()
    assert (body.stream, body.readings_acked_through, body.live_lo, body.live_hi) == ("live", 10, 101, 120)
    ack = sync(storage, batch(run(11, 20), run(131, 140, after=120)))
    assert (ack.readings_acked_through, ack.live_hi, ack.gaps) == (20, 140, 10)
    assert held(storage) == [*range(1, 21), *range(101, 121), *range(131, 141)]


def test_runs_that_do_not_fit_the_range_are_refused_whole(storage: Storage) -> None:
    sync(storage, batch(run(1, 10), run(101, 120)))
    before = held(storage)
    cases = [
        (batch(run(11, 101)), "readings", "readings run 11..101 reaches into the live range 101..120"),
        (batch(run(11, 20), run(90, 95)), "live", "live.first_seq is 90, below the live range 101..120"),
        (batch(ReadingRun(first_seq=130, after=10, items=[])), "readings", "reaches into the live range"),
        (batch(run(11, 20), run(125, 130, after=119)), "live", "expected at most 121, or after = 120"),
    ]
    for b, stream, words in cases:
        with pytest.raises(SequenceError) as err:
            sync(storage, b)
        assert err.value.stream == stream and words in str(err.value), str(err.value)
        assert (err.value.conflict().live_lo, err.value.conflict().live_hi) == (101, 120)
    assert held(storage) == before
    (state,) = storage.edge_states()
    assert (state.readings_acked_through, state.gaps) == (10, 0)


def test_a_live_run_at_or_below_the_mark_continues_the_stream_and_a_new_buffer_clears_the_range(
        storage: Storage) -> None:
    sync(storage, batch(run(1, 10)))
    ack = sync(storage, batch(live=run(5, 15)))  # no range: it continues the stream, the overlap once
    assert (ack.readings_acked_through, ack.readings_stored, ack.duplicates, ack.live_lo) == (15, 5, 6, msgspec.UNSET)
    sync(storage, batch(run(16, 20), run(50, 60)))
    ack = sync(storage, batch(run(1, 3), run(10, 12), buffer_id="buffer-two"))  # a re-imaged box: no range held
    assert ack.new_buffer is True and (ack.readings_acked_through, ack.live_lo, ack.live_hi) == (3, 10, 12)


def test_the_wire_refuses_a_live_run_that_is_empty_or_overlaps_the_readings_run() -> None:
    def wire(readings: ReadingRun, live: ReadingRun, substation: str = SUB) -> bytes:
        body = msgspec.to_builtins(batch(readings))
        body["live"] = msgspec.to_builtins(live)
        for item in body["live"]["items"][:1]:
            item["substation"] = substation
        return msgspec.json.encode(body)

    with pytest.raises(WireError, match="live.first_seq is 10, but the readings run ends at 12"):
        decode_batch(wire(run(1, 12), run(10, 20)))
    with pytest.raises(WireError, match="live has no items"):
        decode_batch(wire(run(1, 12), ReadingRun(first_seq=20, items=[])))
    with pytest.raises(WireError, match=r"live.items\[0\].substation is 'ELSEWHERE'"):
        decode_batch(wire(run(1, 2), run(5, 6), "ELSEWHERE"))
    assert decode_batch(wire(run(1, 2), run(5, 6))).live.first_seq == 5


def test_the_plan_alone_matches_an_old_hub_when_no_live_run_is_sent() -> None:
    b = batch(run(5, 9))
    plan = plan_sync(b, 4, 0)
    assert (plan.readings_acked_through, len(plan.readings), plan.live_lo, plan.live) == (9, 5, 0, [])
    assert decode_ack(encode(plan.ack(EDGE))).live_lo is msgspec.UNSET


def test_migration_5_adds_the_live_range_to_a_database_of_version_4(database_url: str) -> None:
    with contextlib.closing(open_storage(database_url)) as storage:
        sync(storage, batch(run(1, 10)))
    if database_url.startswith("sqlite"):
        db = sqlite3.connect(database_url.removeprefix("sqlite:///"))
        db.execute("ALTER TABLE edge_sync DROP COLUMN live_lo")
        db.execute("ALTER TABLE edge_sync DROP COLUMN live_hi")
        db.execute("DELETE FROM schema_migrations WHERE version >= 5")
        db.commit()
        db.close()
    else:
        import psycopg

        with psycopg.connect(database_url) as conn:
            conn.execute("ALTER TABLE edge_sync DROP COLUMN live_lo, DROP COLUMN live_hi")
            conn.execute("DELETE FROM schema_migrations WHERE version >= 5")
    with contextlib.closing(open_storage(database_url)) as storage:
        status = storage.migration_status()
        assert (status.version, status.pending) == (LATEST, []) and 5 in {a[0] for a in status.applied}
        (state,) = storage.edge_states()
        assert state.readings_acked_through == 10
        ack = sync(storage, batch(run(11, 12), run(20, 25)))
        assert (ack.readings_acked_through, ack.live_lo, ack.live_hi) == (12, 20, 25)


def test_a_refusal_after_the_backlog_reached_the_range_names_the_range_held(storage: Storage) -> None:
    """The readings run closes up to the range, but the live run beside it does not continue the
    stream: nothing is stored, and the 409 names the mark and range as they were."""
    sync(storage, batch(run(1, 10), run(21, 30)))
    with pytest.raises(SequenceError) as err:
        sync(storage, batch(run(11, 20), run(40, 45, after=35)))
    body = err.value.conflict()
    assert (body.readings_acked_through, body.live_lo, body.live_hi) == (10, 21, 30)
    assert "a gap may be declared only after 30" in body.detail
    assert held(storage) == [*range(1, 11), *range(21, 31)]


def test_over_http_a_live_run_is_checked_like_the_readings_run_and_a_409_names_the_range(storage: Storage) -> None:
    """``POST /edge/sync``: an impossible reading in the live run is stored flagged invalid, as in
    the readings run; a live run from another substation is a 400; a refusal's body carries the range."""
    from litestar.testing import TestClient

    from hub.app import create_app
    from hub.settings import Settings
    from protocols.reading import QualityFlag
    from tests.support.hub_auth import ADMIN_KEY, as_admin, edge_headers

    now = datetime.now(UTC).replace(microsecond=0)

    def near_now(seq: int, value: float = 60.0, substation: str = SUB) -> Reading:
        return Reading(ts=now - timedelta(seconds=1000 - seq), substation=substation, device_id="TR-11",
                       metric="oil_temperature", value=value, unit="degC")

    def body(readings: list[int], live: list[Reading]) -> dict:
        out = msgspec.to_builtins(SyncBatch(edge_id=EDGE, substation=SUB, sent_at=now,
                                            readings=ReadingRun(first_seq=readings[0],
                                                                items=[near_now(s) for s in readings])))
        out["live"] = {"first_seq": live_first, "items": msgspec.to_builtins(live)}
        return out

    settings = Settings(admin_key=ADMIN_KEY, agents=None, ingest_rate_per_s=0.0)
    with TestClient(create_app(settings, storage=storage)) as raw:
        client = as_admin(raw)
        headers = edge_headers(client, EDGE)
        live_first = 101
        r = client.post("/edge/sync", json=body([1, 2], [near_now(101), near_now(102, value=-1e308)]), headers=headers)
        assert r.status_code == 200, r.text
        assert (r.json()["live_lo"], r.json()["live_hi"], r.json()["readings_stored"]) == (101, 102, 4)
        stored = {round(x.value): (x.quality, x.flags) for x in storage.query_readings("TR-11", "oil_temperature")}
        assert stored[-1e308] == (0.0, int(QualityFlag.INVALID)) and stored[60] == (1.0, 0)
        r = client.post("/edge/sync", json=body([3], [near_now(103, substation="ELSEWHERE")]), headers=headers)
        assert r.status_code == 400 and "live.items[0].substation is 'ELSEWHERE'" in r.text
        live_first = 90
        r = client.post("/edge/sync", json=body([3], [near_now(90)]), headers=headers)
        assert r.status_code == 409, r.text
        assert (r.json()["stream"], r.json()["live_lo"], r.json()["live_hi"]) == ("live", 101, 102)
