"""OT log entries synced from edges: the plan's arithmetic, and apply_sync on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from hub.storage.base import SequenceError, Storage, plan_sync
from protocols.otlog import OtLogEvent
from protocols.reading import Reading
from protocols.wire import Event, EventRun, OtLogRun, ReadingRun, SyncBatch, WireError, decode_ack, decode_batch, encode

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
SUB = "KISUMU-S1"
EDGE = "edge-kisumu-01"
ALL_TIME = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


def entry(i: int, substation: str = SUB) -> OtLogEvent:
    return OtLogEvent(ts=T0 + timedelta(seconds=i), kind="auth", substation=substation, device_id="RTU-K01",
                      result="failure" if i % 2 else "success", action="login", user="operator",
                      source="10.20.0.5", event_id=f"e{i}")


def reading(i: int) -> Reading:
    return Reading(ts=T0 + timedelta(seconds=i), substation=SUB, device_id="TR-11", metric="oil_temperature",
                   value=60.0 + i, unit="degC")


def batch(ot: tuple[int, int] | None, readings: tuple[int, int] | None = None, edge: str = EDGE) -> SyncBatch:
    """A batch with OT log entries numbered ot[0]..ot[1] (and readings likewise)."""
    return SyncBatch(
        edge_id=edge, substation=SUB, sent_at=T0,
        readings=ReadingRun(first_seq=readings[0], items=[reading(i) for i in range(readings[0], readings[1] + 1)])
        if readings else None,
        ot_logs=OtLogRun(first_seq=ot[0], items=[entry(i) for i in range(ot[0], ot[1] + 1)]) if ot else None,
    )


def no_incidents(_events: object) -> list:
    return []


# -- the arithmetic ---------------------------------------------------------------------------


def test_plan_stores_what_is_above_the_ot_log_mark_and_counts_duplicates_and_gaps() -> None:
    fresh = plan_sync(batch((1, 5)), 0, 0, 0)
    assert [e.event_id for e in fresh.ot_logs] == ["e1", "e2", "e3", "e4", "e5"]
    assert (fresh.ot_logs_first, fresh.ot_logs_acked_through, fresh.duplicates, fresh.gaps) == (1, 5, 0, 0)

    overlap = plan_sync(batch((4, 8)), 0, 0, 5)  # 4 and 5 held already
    assert [e.event_id for e in overlap.ot_logs] == ["e6", "e7", "e8"]
    assert (overlap.ot_logs_first, overlap.ot_logs_acked_through, overlap.duplicates) == (6, 8, 2)

    resend = plan_sync(batch((1, 5)), 0, 0, 5)  # the ack was lost: everything is a duplicate
    assert resend.ot_logs == [] and resend.ot_logs_acked_through == 5 and resend.duplicates == 5

    with pytest.raises(SequenceError, match=r"ot_logs.first_seq is 9, but the hub holds ot_logs through 5"):
        plan_sync(batch((9, 10)), 0, 0, 5)  # 6..8 never came, and the edge did not say so
    declared = batch((9, 10))
    declared = msgspec.structs.replace(declared, ot_logs=msgspec.structs.replace(declared.ot_logs, after=5))
    gap = plan_sync(declared, 0, 0, 5)  # 6..8 dropped at the edge, and declared
    assert gap.ot_logs_first == 9 and gap.ot_logs_acked_through == 10 and gap.gaps == 3

    ack = overlap.ack(EDGE)
    assert (ack.ot_logs_acked_through, ack.ot_logs_stored) == (8, 3)


def test_plan_keeps_the_streams_apart() -> None:
    plan = plan_sync(batch((1, 3), readings=(10, 12)), 11, 0, 0)
    assert [r.value for r in plan.readings] == [72.0]
    assert plan.readings_acked_through == 12 and plan.ot_logs_acked_through == 3
    assert plan.duplicates == 2  # the two readings, none of the OT log entries

    no_ot = plan_sync(batch(None, readings=(1, 2)), 0, 0, 7)  # an edge that sends none: its mark stays
    assert no_ot.ot_logs == [] and no_ot.ot_logs_acked_through == 7


# -- the wire -----------------------------------------------------------------------------------


def test_a_batch_without_ot_logs_is_encoded_as_before_and_old_acks_still_decode() -> None:
    old_style = batch(None, readings=(1, 1))
    assert b"ot_logs" not in encode(old_style)  # a hub from before OT log forwarding takes it
    assert decode_batch(encode(old_style)) == old_style
    with_ot = batch((1, 2))
    assert decode_batch(encode(with_ot)) == with_ot
    # an ack from a hub that knows nothing of OT logs
    ack = decode_ack(b'{"edge_id": "e", "readings_acked_through": 3, "events_acked_through": 0,'
                     b' "readings_stored": 3, "events_stored": 0, "duplicates": 0, "gaps": 0}')
    assert ack.ot_logs_acked_through == 0 and ack.ot_logs_stored == 0


def test_a_batch_whose_ot_log_entry_names_another_substation_is_refused() -> None:
    good = msgspec.json.decode(encode(batch((1, 2))))
    good["ot_logs"]["items"][1]["substation"] = "NAIROBI-S1"
    with pytest.raises(WireError, match=r"ot_logs.items\[1\].substation is 'NAIROBI-S1'"):
        decode_batch(msgspec.json.encode(good))


# -- both storages ------------------------------------------------------------------------------


def test_apply_sync_stores_ot_logs_once_with_the_edge_as_source(storage: Storage) -> None:
    ack = storage.apply_sync(batch((1, 3), readings=(1, 2)), no_incidents)
    assert (ack.ot_logs_acked_through, ack.ot_logs_stored, ack.readings_acked_through) == (3, 3, 2)

    again = storage.apply_sync(batch((1, 3), readings=(1, 2)), no_incidents)  # the ack was lost
    assert (again.ot_logs_acked_through, again.ot_logs_stored, again.readings_stored) == (3, 0, 0)
    assert again.duplicates == 5

    more = storage.apply_sync(batch((2, 6)), no_incidents)  # overlaps what is held
    assert (more.ot_logs_acked_through, more.ot_logs_stored, more.duplicates) == (6, 3, 2)

    stored = storage.ot_logs_between(*ALL_TIME)
    assert [e.event_id for e in stored] == [f"e{i}" for i in range(1, 7)]
    assert stored[0] == entry(1)  # every field as sent
    assert len(storage.readings_between(*ALL_TIME)) == 2
    (state,) = storage.edge_states()  # /stats shows how far each edge's OT log has been taken
    assert (state.ot_logs_acked_through, state.readings_acked_through) == (6, 2)


def test_ot_log_marks_are_per_edge_and_old_edges_keep_working(storage: Storage) -> None:
    storage.apply_sync(batch((1, 2)), no_incidents)
    other = storage.apply_sync(batch((1, 2), edge="edge-kisumu-02"), no_incidents)  # its own numbering
    assert other.ot_logs_stored == 2

    old_edge = storage.apply_sync(batch(None, readings=(1, 3), edge="edge-old"), no_incidents)
    assert (old_edge.readings_stored, old_edge.ot_logs_acked_through, old_edge.ot_logs_stored) == (3, 0, 0)
    mine = storage.apply_sync(batch(None, readings=(1, 1)), no_incidents)  # no OT logs this time: mark kept
    assert mine.ot_logs_acked_through == 2
    assert len(storage.ot_logs_between(*ALL_TIME)) == 4


def test_a_failed_sync_stores_no_ot_logs_and_moves_no_mark(storage: Storage) -> None:
    storage.apply_sync(batch((1, 2)), no_incidents)

    def boom(_events: object) -> list:
        raise RuntimeError("incident maker failed")

    event = Event(ts=T0, substation=SUB, device_id="TR-11", metric="oil_temperature", type="limit_high",
                  state="raised", severity="WARNING")
    b = msgspec.structs.replace(batch((3, 4)), events=EventRun(first_seq=1, items=[event]))
    with pytest.raises(RuntimeError):
        storage.apply_sync(b, boom)  # one transaction with the events: nothing of it is kept
    assert len(storage.ot_logs_between(*ALL_TIME)) == 2
    ack = storage.apply_sync(batch((3, 4)), no_incidents)
    assert (ack.ot_logs_stored, ack.ot_logs_acked_through) == (2, 4)
