"""One suite for both hub storages: whatever SQLite does, PostgreSQL must do identically.

The PostgreSQL cases run against a throwaway server (sentinel_cli/pgserver.py) on 127.0.0.1, one fresh
database per test.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone

import msgspec
import pytest

from hub.storage.base import Document, EdgeState, Incident, IncidentError, NewIncident, SequenceError, Storage
from hub.storage.sqlite import SQLiteStorage
from protocols.otlog import decode as decode_ot_logs
from protocols.reading import Reading
from protocols.wire import (
    MAX_SEQ,
    Event,
    EventRun,
    ReadingRun,
    SyncBatch,
    WireError,
    decode_batch,
    decode_conflict,
    encode,
)

T0 = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)  # an hour before midnight: batches span two UTC days
SUB = "nairobi-s1"
EDGE = "edge-nairobi-1"


# -- builders ----------------------------------------------------------------------------------------


def readings(n: int, *, start: int = 0, device: str = "feeder-1", metric: str = "voltage_l1",
             step: timedelta = timedelta(minutes=1), substation: str = SUB) -> list[Reading]:
    """``n`` readings one ``step`` apart from ``T0 + start*step``; value ``230 + i/10`` (``i`` absolute)."""
    return [
        Reading(ts=T0 + (start + i) * step, substation=substation, device_id=device, metric=metric,
                value=230.0 + (start + i) / 10, unit="V", quality=0.95, flags=0)
        for i in range(n)
    ]


def events(n: int, *, start: int = 0) -> list[Event]:
    """Alternating raised/cleared voltage sags; value ``200 + i`` (``i`` absolute)."""
    return [
        Event(ts=T0 + timedelta(minutes=start + i), substation=SUB, device_id="feeder-1", metric="voltage_l1",
              type="voltage_sag", state="raised" if (start + i) % 2 == 0 else "cleared",
              severity="CRITICAL" if (start + i) % 4 == 0 else "WARNING", value=200.0 + start + i,
              threshold=207.0, nominal=230.0, unit="V", description=f"sag {start + i}")
        for i in range(n)
    ]


def batch(r_first: int | None = None, r_items: Sequence[Reading] = (), e_first: int | None = None,
          e_items: Sequence[Event] = (), edge: str = EDGE, *, r_after: int | None = None, e_after: int | None = None,
          buffer_id: str | None = None) -> SyncBatch:
    """A batch; ``r_after`` / ``e_after`` declare a gap before the run, ``buffer_id`` names the edge's buffer."""
    return SyncBatch(
        edge_id=edge, substation=SUB, sent_at=datetime.now(UTC), buffer_id=buffer_id,
        readings=ReadingRun(first_seq=r_first, items=list(r_items), after=r_after) if r_first is not None else None,
        events=EventRun(first_seq=e_first, items=list(e_items), after=e_after) if e_first is not None else None,
    )


class Incidents:
    """An incident maker that records what it was given: one incident per *raised* event."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []

    def __call__(self, new_events: Sequence[Event]) -> list[NewIncident]:
        self.calls.append(list(new_events))
        return [
            NewIncident(timestamp=e.ts, type=e.type, device_id=e.device_id, severity=e.severity,
                        description=e.description, agent="edge-limits", substation=e.substation, metric=e.metric,
                        value=e.value)
            for e in new_events if e.state == "raised"
        ]


def new_incident(ts: datetime, severity: str = "WARNING", type_: str = "voltage_sag",
                 value: float | None = 201.5, key: str = "") -> NewIncident:
    """Findings with the same ``key`` (default: agent, type, device, metric) are one ongoing condition."""
    return NewIncident(timestamp=ts, type=type_, device_id="tx-1", severity=severity, description="d",
                       agent="analyst", substation=SUB, metric="voltage_l1", value=value, condition_key=key)


def _no_clock(value: object) -> object:
    """``value`` with every incident's ``updated_at`` (the writer's wall clock) blanked out."""
    if isinstance(value, Incident):
        return msgspec.structs.replace(value, updated_at=None)
    if isinstance(value, list):
        return [_no_clock(v) for v in value]
    return value


def values(store: Storage, **kw) -> list[float | None]:
    return [r.value for r in store.query_readings("feeder-1", "voltage_l1", **kw)]


# -- sync ----------------------------------------------------------------------------------------------


def test_sync_stores_readings_and_events_and_makes_incidents_from_them(storage: Storage) -> None:
    maker = Incidents()
    ack = storage.apply_sync(batch(1, readings(120), 1, events(6)), maker)

    assert (ack.edge_id, ack.readings_acked_through, ack.events_acked_through) == (EDGE, 120, 6)
    assert (ack.readings_stored, ack.events_stored, ack.duplicates, ack.gaps) == (120, 6, 0, 0)
    assert storage.reading_counts() == {SUB: 120}
    assert [len(c) for c in maker.calls] == [6]
    # three raised sags of one device and metric: one ongoing condition, its worst severity
    assert storage.incident_counts() == {("voltage_sag", "CRITICAL"): 1}
    (incident,) = storage.list_incidents()
    assert (incident.occurrences, incident.description, incident.value) == (3, "sag 4", 204.0)
    assert incident.first_seen == T0 and incident.last_seen == T0 + timedelta(minutes=4)
    got = storage.query_readings("feeder-1", "voltage_l1")
    assert got == readings(120)


def test_resending_a_batch_stores_nothing_twice_and_acks_the_same_marks(storage: Storage) -> None:
    maker = Incidents()
    sent = batch(1, readings(50), 1, events(4))
    first = storage.apply_sync(sent, maker)
    counts = (storage.reading_counts(), storage.incident_counts())

    again = storage.apply_sync(sent, maker)

    assert (again.readings_acked_through, again.events_acked_through) == (
        first.readings_acked_through, first.events_acked_through) == (50, 4)
    assert (again.readings_stored, again.events_stored, again.duplicates, again.gaps) == (0, 0, 54, 0)
    assert (storage.reading_counts(), storage.incident_counts()) == counts
    assert len(maker.calls) == 1  # no new events, so no call to make incidents
    assert [i.occurrences for i in storage.list_incidents()] == [2]


def test_an_overlapping_batch_stores_only_the_new_tail(storage: Storage) -> None:
    maker = Incidents()
    storage.apply_sync(batch(1, readings(10), 1, events(4)), maker)

    ack = storage.apply_sync(batch(6, readings(10, start=5), 3, events(5, start=2)), maker)

    assert (ack.readings_stored, ack.events_stored, ack.duplicates, ack.gaps) == (5, 3, 5 + 2, 0)
    assert (ack.readings_acked_through, ack.events_acked_through) == (15, 7)
    assert values(storage) == [230.0 + i / 10 for i in range(15)]
    assert [e.description for e in maker.calls[1]] == ["sag 4", "sag 5", "sag 6"]


def test_a_batch_entirely_below_the_marks_changes_nothing(storage: Storage) -> None:
    storage.apply_sync(batch(1, readings(10), 1, events(3)), Incidents())

    ack = storage.apply_sync(batch(3, readings(4, start=2), 2, events(1, start=1)), Incidents())

    assert (ack.readings_acked_through, ack.events_acked_through) == (10, 3)
    assert (ack.readings_stored, ack.events_stored, ack.duplicates) == (0, 0, 5)
    assert storage.reading_counts() == {SUB: 10}


def test_declared_gaps_are_counted_per_batch_and_in_total(storage: Storage) -> None:
    storage.apply_sync(batch(1, readings(10), 1, events(2)), Incidents())

    # 11..13 were dropped at the edge (its buffer was full)
    ack = storage.apply_sync(batch(14, readings(5, start=13), r_after=10), Incidents())
    assert (ack.gaps, ack.readings_acked_through, ack.readings_stored) == (3, 18, 5)
    ack = storage.apply_sync(batch(None, (), 5, events(1, start=4), e_after=2), Incidents())  # events 3..4 lost
    assert (ack.gaps, ack.events_acked_through) == (2, 5)

    (state,) = storage.edge_states()
    assert state.gaps == 5
    assert (state.readings_acked_through, state.events_acked_through) == (18, 5)


def test_a_first_batch_that_does_not_start_at_one_declares_the_gap(storage: Storage) -> None:
    with pytest.raises(SequenceError):
        storage.apply_sync(batch(101, readings(3)), Incidents())
    ack = storage.apply_sync(batch(101, readings(3), r_after=0), Incidents())
    assert (ack.gaps, ack.readings_acked_through, ack.duplicates) == (100, 103, 0)


def test_an_undeclared_jump_is_refused_naming_the_field_and_the_marks_and_stores_nothing(storage: Storage) -> None:
    maker = Incidents()
    storage.apply_sync(batch(1, readings(10), 1, events(2)), maker)

    with pytest.raises(SequenceError) as caught:  # the attack: a run far past what the hub holds
        storage.apply_sync(batch(1000, readings(3, start=20), 3, events(2, start=2)), maker)
    err = caught.value
    assert str(err) == (f"readings.first_seq is 1000, but the hub holds readings through 10 for edge {EDGE}; "
                        "expected at most 11")
    assert (err.stream, err.first_seq, err.marks()) == ("readings", 1000, {"readings": 10, "events": 2, "ot_logs": 0})
    conflict = err.conflict()
    assert (conflict.status_code, conflict.stream, conflict.readings_acked_through,
            conflict.events_acked_through) == (409, "readings", 10, 2)
    assert decode_conflict(encode(conflict)) == conflict
    # nothing of the batch went in: not the events either, nor an incident, nor a mark
    assert storage.reading_counts() == {SUB: 10} and len(storage.list_events()) == 2 and len(maker.calls) == 1
    (state,) = storage.edge_states()
    assert (state.readings_acked_through, state.events_acked_through, state.gaps) == (10, 2, 0)
    # the edge goes on where the hub is: taken
    ack = storage.apply_sync(batch(11, readings(3, start=10), 3, events(2, start=2)), maker)
    assert (ack.readings_acked_through, ack.events_acked_through, ack.gaps) == (13, 4, 0)


def test_a_gap_declared_from_anywhere_but_the_hubs_mark_is_refused(storage: Storage) -> None:
    storage.apply_sync(batch(1, readings(10)), Incidents())
    for after in (0, 5, 11 - 1 - 1, 12):  # below the mark, or past it
        with pytest.raises(SequenceError, match=rf"readings.after is {after} \(a gap declared before first_seq 14\), "
                                                 r"but the hub holds readings through 10 .*only after 10"):
            storage.apply_sync(batch(14, readings(2, start=13), r_after=after), Incidents())
    assert storage.edge_states()[0].readings_acked_through == 10
    # `after` on a run that continues the stream anyway changes nothing
    ack = storage.apply_sync(batch(8, readings(5, start=7), r_after=3), Incidents())
    assert (ack.readings_acked_through, ack.duplicates, ack.gaps) == (12, 3, 0)


def test_a_new_buffer_of_an_edge_starts_a_new_sequence_space(storage: Storage) -> None:
    old, new = "a" * 32, "b" * 32
    first = storage.apply_sync(batch(1, readings(10), 1, events(2), buffer_id=old), Incidents())
    assert first.new_buffer is msgspec.UNSET  # the first buffer an edge names is simply kept
    ack = storage.apply_sync(batch(11, readings(5, start=10), buffer_id=old), Incidents())
    assert ack.readings_acked_through == 15 and ack.new_buffer is msgspec.UNSET

    # the box was re-imaged: its new buffer counts from 1 again, and the hub starts over for it
    ack = storage.apply_sync(batch(1, readings(4, start=100), buffer_id=new), Incidents())
    assert (ack.readings_acked_through, ack.events_acked_through, ack.readings_stored, ack.duplicates) == (4, 0, 4, 0)
    assert ack.new_buffer is True and b'"new_buffer":true' in encode(ack)
    assert storage.reading_counts() == {SUB: 19}  # the old buffer's rows keep their data (and numbers)
    assert [v for v in values(storage)][:1] == [230.0] and len(values(storage)) == 19
    (state,) = storage.edge_states()
    assert (state.readings_acked_through, state.events_acked_through) == (4, 0)
    ack = storage.apply_sync(batch(5, readings(1, start=104), buffer_id=new), Incidents())
    assert ack.readings_acked_through == 5 and ack.new_buffer is msgspec.UNSET
    # a new buffer's first batch must start at 1 or declare its gap from 0, like any other
    with pytest.raises(SequenceError, match="readings through 0"):
        storage.apply_sync(batch(50, readings(1), buffer_id="c" * 32), Incidents())
    assert storage.edge_states()[0].readings_acked_through == 5  # refused: the switch did not happen either


def test_an_edge_that_names_no_buffer_keeps_the_marks_held(storage: Storage) -> None:
    storage.apply_sync(batch(1, readings(10), buffer_id="a" * 32), Incidents())
    ack = storage.apply_sync(batch(11, readings(2, start=10)), Incidents())  # an edge from before buffer ids
    assert ack.readings_acked_through == 12 and ack.new_buffer is msgspec.UNSET
    ack = storage.apply_sync(batch(13, readings(1, start=12), buffer_id="a" * 32), Incidents())
    assert ack.readings_acked_through == 13 and ack.new_buffer is msgspec.UNSET  # still the same buffer


def test_a_database_from_before_buffer_ids_gets_the_column_and_keeps_its_marks(database_url: str) -> None:
    from hub.storage import open_storage

    old_table = ("CREATE TABLE edge_sync (edge_id TEXT PRIMARY KEY, substation TEXT NOT NULL,"
                 " readings_acked_through BIGINT NOT NULL DEFAULT 0, events_acked_through BIGINT NOT NULL DEFAULT 0,"
                 " gaps BIGINT NOT NULL DEFAULT 0, last_sync {ts}, ot_logs_acked_through BIGINT NOT NULL DEFAULT 0)")
    row = "INSERT INTO edge_sync (edge_id, substation, readings_acked_through) VALUES ('{}', '{}', 7)".format(EDGE, SUB)
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url[len("sqlite:///"):]) as db:
            db.execute(old_table.format(ts="REAL"))
            db.execute(row)
    else:
        import psycopg

        with psycopg.connect(database_url) as conn:
            conn.execute(old_table.format(ts="timestamptz"))
            conn.execute(row)
    store = open_storage(database_url)
    try:
        with pytest.raises(SequenceError, match="readings through 7"):
            store.apply_sync(batch(20, readings(1), buffer_id="a" * 32), Incidents())
        ack = store.apply_sync(batch(8, readings(2), buffer_id="a" * 32), Incidents())  # adopted, not a new space
        assert ack.readings_acked_through == 9 and ack.new_buffer is msgspec.UNSET
        ack = store.apply_sync(batch(1, readings(1), buffer_id="b" * 32), Incidents())
        assert ack.readings_acked_through == 1 and ack.new_buffer is True
    finally:
        store.close()


def test_sequence_numbers_near_the_int64_end_are_refused_on_the_wire() -> None:
    good = msgspec.json.decode(encode(batch(1, readings(2))))
    for first, where in ((2**63 - 5, "readings.first_seq"), (MAX_SEQ, "readings")):
        bad = {**good, "readings": {**good["readings"], "first_seq": first}}
        with pytest.raises(WireError, match=re.escape(where)):
            decode_batch(msgspec.json.encode(bad))
    fits = {**good, "readings": {**good["readings"], "first_seq": MAX_SEQ - 1}}
    assert decode_batch(msgspec.json.encode(fits)).readings.last_seq == MAX_SEQ


@pytest.mark.parametrize("known_edge", [False, True], ids=["new-edge", "known-edge"])
def test_concurrent_syncs_of_the_same_batch_store_it_once(storage: Storage, known_edge: bool) -> None:
    maker = Incidents()
    sent = batch(1, readings(2_000, step=timedelta(seconds=1)), 1, events(10))
    if known_edge:  # the edge's row exists already, so only the row lock can keep the syncs apart
        storage.apply_sync(batch(1, sent.readings.items[:1], 1, sent.events.items[:1]), maker)
    barrier = threading.Barrier(4)
    acks, errors = [], []

    def sync() -> None:
        try:
            barrier.wait(timeout=10)
            acks.append(storage.apply_sync(sent, maker))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sync, name=f"sync-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    already = 1 if known_edge else 0
    assert sorted(a.readings_stored for a in acks) == [0, 0, 0, 2_000 - already]
    assert sorted(a.events_stored for a in acks) == [0, 0, 0, 10 - already]
    assert {(a.readings_acked_through, a.events_acked_through) for a in acks} == {(2_000, 10)}
    assert storage.reading_counts() == {SUB: 2_000}
    assert [i.occurrences for i in storage.list_incidents()] == [5]  # five raised, each folded in once
    assert len(maker.calls) == 1 + already


def test_concurrent_syncs_from_different_edges_all_land(storage: Storage) -> None:
    def sync(i: int) -> None:
        storage.apply_sync(batch(1, readings(300, device=f"feeder-{i}"), edge=f"edge-{i}"), Incidents())

    threads = [threading.Thread(target=sync, args=(i,), name=f"edge-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert storage.reading_counts() == {SUB: 1_200}
    assert [s.edge_id for s in storage.edge_states()] == ["edge-0", "edge-1", "edge-2", "edge-3"]


def test_a_failing_sync_leaves_nothing_behind(storage: Storage) -> None:
    storage.apply_sync(batch(1, readings(5), 1, events(2)), Incidents())

    def broken(new_events: Sequence[Event]) -> list[NewIncident]:
        raise RuntimeError("analyst crashed")

    sent = batch(6, readings(5, start=5), 3, events(2, start=2))
    with pytest.raises(RuntimeError, match="analyst crashed"):
        storage.apply_sync(sent, broken)

    assert storage.reading_counts() == {SUB: 5}
    (state,) = storage.edge_states()
    assert (state.readings_acked_through, state.events_acked_through) == (5, 2)
    ack = storage.apply_sync(sent, Incidents())  # the edge resends; now it lands, once
    assert (ack.readings_stored, ack.events_stored, ack.duplicates) == (5, 2, 0)
    assert storage.reading_counts() == {SUB: 10}


def test_values_none_round_trip(storage: Storage) -> None:
    sent = [Reading(ts=T0, substation=SUB, device_id="feeder-1", metric="voltage_l1", value=None, unit="V",
                    quality=0.0, flags=16),
            Reading(ts=T0 + timedelta(seconds=1), substation=SUB, device_id="feeder-1", metric="voltage_l1",
                    value=0.0, unit="V")]
    storage.apply_sync(batch(1, sent), Incidents())

    assert storage.query_readings("feeder-1", "voltage_l1") == sent
    (inc,) = storage.add_incidents([new_incident(T0, value=None)])
    assert inc.value is None


# -- insert_readings -----------------------------------------------------------------------------------


def test_insert_readings_stores_readings_without_sequence_once_per_key(storage: Storage) -> None:
    assert storage.insert_readings(readings(30), "http") == 30
    # no sequence: de-duplicated on (device_id, metric, ts), whatever the source
    assert storage.insert_readings(readings(30), "mqtt") == 0
    assert storage.insert_readings(readings(40), "http") == 10
    assert storage.insert_readings(readings(5, metric="frequency") + readings(5, device="feeder-2"), "http") == 10
    assert storage.insert_readings([], "http") == 0

    assert storage.reading_counts() == {SUB: 50}
    assert storage.edge_states() == []
    assert len(storage.query_readings("feeder-1", "voltage_l1")) == 40


def test_insert_new_readings_names_what_it_stored(storage: Storage) -> None:
    first = readings(3)
    changed = Reading(**{**msgspec.structs.asdict(first[1]), "value": 999.0})  # same key, another value
    later = readings(2, start=3)
    mixed = [first[1], later[0], changed, later[0], later[1]]
    assert storage.insert_new_readings(first[:2], "http") == [0, 1]
    # held already (0, 2), repeated within the request (3): only the first of each new key is stored
    assert storage.insert_new_readings(mixed, "http") == [1, 4]
    assert [r.value for r in storage.query_readings("feeder-1", "voltage_l1")] == [230.0, 230.1, 230.3, 230.4]
    # a key held from an edge's sync is held too: the first value stays
    storage.apply_sync(batch(1, readings(1, start=9), edge="edge-9"), Incidents())
    assert storage.insert_new_readings(readings(1, start=9) + readings(1, start=10), "http") == [1]
    # another time zone, the same instant: the same key
    eat = timezone(timedelta(hours=3))
    same = msgspec.structs.replace(first[0], ts=first[0].ts.astimezone(eat))
    assert storage.insert_new_readings([same], "http") == []


def test_readings_from_other_time_zones_are_stored_in_utc(storage: Storage) -> None:
    eat = timezone(timedelta(hours=3))
    local = Reading(ts=datetime(2026, 3, 2, 1, 30, tzinfo=eat), substation=SUB, device_id="feeder-1",
                    metric="voltage_l1", value=231.0)  # 22:30 UTC on 1 March
    storage.insert_readings([local], "http")

    (got,) = storage.query_readings("feeder-1", "voltage_l1")
    assert got.ts == datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    assert got.ts.utcoffset() == timedelta(0)


# -- incidents -----------------------------------------------------------------------------------------


def test_add_incidents_numbers_them_by_year_and_returns_them(storage: Storage) -> None:
    added = storage.add_incidents([new_incident(datetime(2025, 12, 31, 23, 59, tzinfo=UTC), key="a"),
                                   new_incident(T0, severity="CRITICAL", value=190.0, key="b")])

    assert [i.id for i in added] == ["INC-2025-000001", "INC-2026-000002"]
    first = added[0]
    assert isinstance(first, Incident)
    assert (first.status, first.type, first.device_id, first.agent, first.metric) == (
        "OPEN", "voltage_sag", "tx-1", "analyst", "voltage_l1")
    assert first.timestamp == datetime(2025, 12, 31, 23, 59, tzinfo=UTC)
    assert first.timestamp.tzinfo is not None and first.timestamp.utcoffset() == timedelta(0)
    assert isinstance(added[1].value, float) and added[1].value == 190.0
    assert storage.add_incidents([]) == []


def test_list_incidents_is_newest_first_and_filters(storage: Storage) -> None:
    severities = ["WARNING", "CRITICAL", "WARNING", "EMERGENCY", "CRITICAL"]
    storage.add_incidents([new_incident(T0 + timedelta(hours=i), severity=s, key=f"k{i}")
                           for i, s in enumerate(severities)])

    assert [i.id for i in storage.list_incidents()] == [f"INC-2026-{n:06d}" for n in (5, 4, 3, 2, 1)]
    assert [i.id for i in storage.list_incidents(severity="CRITICAL")] == ["INC-2026-000005", "INC-2026-000002"]
    assert len(storage.list_incidents(status="OPEN")) == 5
    assert storage.list_incidents(status="RESOLVED") == []
    assert [i.id for i in storage.list_incidents(status="OPEN", severity="WARNING", limit=1)] == ["INC-2026-000003"]
    assert [i.id for i in storage.list_incidents(limit=2)] == ["INC-2026-000005", "INC-2026-000004"]
    assert len(storage.list_incidents(status="", severity="")) == 5  # empty filters are no filters


def test_incident_counts_group_by_type_and_severity(storage: Storage) -> None:
    storage.add_incidents([new_incident(T0, key="a"), new_incident(T0, key="b"),
                           new_incident(T0, severity="CRITICAL", key="c"), new_incident(T0, type_="over_frequency")])
    assert storage.incident_counts() == {
        ("voltage_sag", "WARNING"): 2, ("voltage_sag", "CRITICAL"): 1, ("over_frequency", "WARNING"): 1}


# -- reads ---------------------------------------------------------------------------------------------


def test_reading_counts_are_per_substation(storage: Storage) -> None:
    assert storage.reading_counts() == {}
    storage.insert_readings(readings(7), "http")
    storage.insert_readings(readings(3, substation="mombasa-s1"), "mqtt")
    assert storage.reading_counts() == {SUB: 7, "mombasa-s1": 3}


def test_edge_states_report_marks_gaps_and_last_sync(storage: Storage) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    storage.apply_sync(batch(1, readings(5), edge="edge-b"), Incidents())
    storage.apply_sync(batch(3, readings(2), 1, events(2), edge="edge-a", r_after=0), Incidents())

    states = storage.edge_states()

    assert [(s.edge_id, s.substation, s.readings_acked_through, s.events_acked_through, s.gaps) for s in states] == [
        ("edge-a", SUB, 4, 2, 2), ("edge-b", SUB, 5, 0, 0)]
    for s in states:
        assert isinstance(s, EdgeState)
        assert s.last_sync is not None and s.last_sync.utcoffset() == timedelta(0)
        assert before <= s.last_sync <= datetime.now(UTC) + timedelta(seconds=5)


def test_query_readings_ranges_are_half_open_and_oldest_first(storage: Storage) -> None:
    storage.insert_readings(list(reversed(readings(100))), "http")  # stored out of order
    storage.insert_readings(readings(100, metric="frequency"), "http")
    storage.insert_readings(readings(100, device="feeder-2"), "http")
    at = lambda i: T0 + timedelta(minutes=i)  # noqa: E731

    assert values(storage) == [230.0 + i / 10 for i in range(100)]
    assert values(storage, start=at(10), end=at(20)) == [230.0 + i / 10 for i in range(10, 20)]
    assert values(storage, start=at(95)) == [230.0 + i / 10 for i in range(95, 100)]
    assert values(storage, end=at(3)) == [230.0, 230.1, 230.2]
    assert values(storage, start=at(50), limit=2) == [235.0, 235.1]
    assert values(storage, start=at(200)) == []
    assert storage.query_readings("feeder-9", "voltage_l1") == []
    got = storage.query_readings("feeder-2", "voltage_l1", limit=1)[0]
    assert (got.device_id, got.metric, got.unit, got.quality, got.flags) == ("feeder-2", "voltage_l1", "V", 0.95, 0)
    assert type(got.value) is float and type(got.quality) is float and type(got.flags) is int
    assert got.ts == T0 and got.ts.utcoffset() == timedelta(0)


# -- PostgreSQL only -----------------------------------------------------------------------------------


@pytest.mark.postgres
def test_postgres_answers_exactly_as_sqlite_does(postgres_url: str, tmp_path) -> None:
    from hub.storage.postgres import PostgresStorage

    def scenario(store: Storage) -> list:
        maker = Incidents()
        acks = [
            store.apply_sync(batch(1, readings(40), 1, events(6)), maker),
            store.apply_sync(batch(31, readings(20, start=30), 5, events(4, start=4)), maker),
            store.apply_sync(batch(60, readings(5, start=59), r_after=50), maker),
            store.apply_sync(batch(1, readings(3, start=70), buffer_id="d" * 32), maker),  # a new buffer
        ]
        store.insert_readings(readings(5, device="feeder-2", metric="frequency") + [
            Reading(ts=T0, substation="mombasa-s1", device_id="x", metric="m", value=None)], "http")
        added = store.add_incidents([new_incident(datetime(2025, 6, 1, tzinfo=UTC), value=None)])
        states = [(s.edge_id, s.substation, s.readings_acked_through, s.events_acked_through, s.gaps)
                  for s in store.edge_states()]
        return [acks, added, store.list_incidents(), store.list_incidents(severity="CRITICAL", limit=2),
                store.reading_counts(), store.incident_counts(), states,
                store.query_readings("feeder-1", "voltage_l1", start=T0 + timedelta(minutes=5), limit=30),
                store.query_readings("x", "m")]

    lite = SQLiteStorage(tmp_path / "hub.db")
    pg = PostgresStorage(postgres_url)
    try:
        assert _no_clock(scenario(pg)) == _no_clock(scenario(lite))
    finally:
        lite.close()
        pg.close()


@pytest.mark.postgres
def test_postgres_without_timescaledb_partitions_readings_by_utc_day(postgres_url: str) -> None:
    import psycopg

    from hub.storage.postgres import PostgresStorage

    with PostgresStorage(postgres_url) as store:
        assert store.backend == "postgresql"
        # 23:00 on 1 March to 01:59 on 2 March, UTC; and one reading three days later.
        store.apply_sync(batch(1, readings(180)), Incidents())
        store.insert_readings(readings(1, start=3 * 24 * 60), "http")

    with psycopg.connect(postgres_url) as conn:
        partitions = {name for (name,) in conn.execute(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'readings'::regclass")}
        placed = dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1"))
        (kind,) = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'readings'").fetchone()
        indexes = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'readings'").fetchall())

    assert kind == "p"
    assert partitions == {"readings_default", "readings_p20260301", "readings_p20260302", "readings_p20260304"}
    assert placed == {"readings_p20260301": 60, "readings_p20260302": 120, "readings_p20260304": 1}
    assert "USING brin (ts)" in indexes["readings_ts_brin"]
    assert "(device_id, metric, ts)" in indexes["readings_device_metric_ts"]


@pytest.mark.postgres
def test_postgres_reopens_an_existing_database(postgres_url: str) -> None:
    from hub.storage.postgres import PostgresStorage

    with PostgresStorage(postgres_url) as store:
        store.apply_sync(batch(1, readings(100)), Incidents())
        store.add_incidents([new_incident(T0)])
    with PostgresStorage(postgres_url) as store:  # schema creation is idempotent; partitions remembered
        assert store.backend == "postgresql"
        ack = store.apply_sync(batch(1, readings(120)), Incidents())
        assert (ack.readings_stored, ack.duplicates) == (20, 100)
        assert store.reading_counts() == {SUB: 120}
        assert [i.id for i in store.add_incidents([new_incident(T0, key="another")])] == ["INC-2026-000002"]
        # the first condition is still open: a new finding of it updates it
        assert [(i.id, i.occurrences) for i in store.add_incidents([new_incident(T0)])] == [("INC-2026-000001", 2)]


@pytest.mark.postgres
def test_postgres_moves_stray_rows_out_of_the_default_partition(postgres_url: str) -> None:
    import psycopg

    from hub.storage.postgres import PostgresStorage

    with PostgresStorage(postgres_url) as store:
        store.insert_readings(readings(3), "http")
    with psycopg.connect(postgres_url) as conn:  # someone drops a day's partition; new rows land in DEFAULT
        conn.execute("DROP TABLE readings_p20260301")
        conn.execute("INSERT INTO readings (ts, substation, device_id, metric, value, unit, quality, flags, source)"
                     " VALUES ('2026-03-01 23:30+00', 's', 'd', 'm', 1, '', 1, 0, 'http')")
    with PostgresStorage(postgres_url) as store:
        store.insert_readings(readings(1, start=5), "http")
        assert store.reading_counts() == {SUB: 1, "s": 1}
    with psycopg.connect(postgres_url) as conn:
        placed = dict(conn.execute("SELECT tableoid::regclass::text, count(*) FROM readings GROUP BY 1"))
    assert placed == {"readings_p20260301": 2}


def test_postgres_unreachable_server_is_a_clear_error() -> None:
    from tests.conftest import free_port

    from hub.storage.postgres import PostgresStorage, PostgresUnavailable

    port = free_port()
    with pytest.raises(PostgresUnavailable, match=f"127.0.0.1:{port}/nothing"):
        PostgresStorage(f"postgresql://nobody@127.0.0.1:{port}/nothing", connect_timeout_s=1)


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_postgres_binaries_the_server_skips_outside_ci_and_fails_in_ci(
        ci: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from sentinel_cli import pgserver as pg

    def nothing_installed() -> None:
        raise pg.PostgresNotFound("no PostgreSQL server binaries found")

    monkeypatch.setattr(pg, "find_bindir", nothing_installed)
    monkeypatch.setenv("CI", ci)
    expected = pg.PostgresNotFound if ci else pytest.skip.Exception
    with pytest.raises(expected, match="no PostgreSQL server binaries"):
        with pg.PostgresServer(tmp_path):
            pass


# -- one incident per ongoing condition, and its lifecycle ------------------------------------------


def test_a_condition_that_goes_on_updates_its_incident(storage: Storage) -> None:
    first = new_incident(T0, value=205.0)
    worse = msgspec.structs.replace(new_incident(T0 + timedelta(minutes=5), severity="CRITICAL", value=190.0),
                                    description="worse", facts={"deviation_pct": -17.4}, recommendation="act")
    milder = new_incident(T0 + timedelta(minutes=9), severity="WARNING", value=203.0)
    other = new_incident(T0, type_="over_frequency")
    storage.add_incidents([first, other])
    (updated,) = storage.add_incidents([worse])
    storage.add_incidents([milder])

    got = storage.get_incident(updated.id)
    assert (got.severity, got.occurrences, got.value) == ("CRITICAL", 3, 203.0)  # never lowered while open
    assert got.first_seen == T0 and got.last_seen == T0 + timedelta(minutes=9)
    assert got.condition_key == "analyst:voltage_sag:nairobi-s1:tx-1:voltage_l1"
    assert len(storage.list_incidents()) == 2
    assert [(h.status, h.actor) for h in got.history] == [("OPEN", "analyst")]


def test_facts_and_recommendation_round_trip(storage: Storage) -> None:
    facts = {"value_kv": 210.0, "deviation_pct": -4.5, "events": [{"start": "2026-03-01T23:00:00Z", "pu": 0.95}]}
    (inc,) = storage.add_incidents([msgspec.structs.replace(new_incident(T0), facts=facts, confidence=0.75,
                                                            recommendation="Transfer load to F14")])
    got = storage.get_incident(inc.id)
    assert (got.facts, got.confidence, got.recommendation) == (facts, 0.75, "Transfer load to F14")
    storage.set_incident_narrative(inc.id, "The sag follows the load peak.")
    assert storage.get_incident(inc.id).narrative == "The sag follows the load peak."


def test_lifecycle_moves_forward_and_records_who_and_when(storage: Storage) -> None:
    (inc,) = storage.add_incidents([new_incident(T0)])
    before = datetime.now(UTC)
    storage.set_incident_status(inc.id, "ACKNOWLEDGED", "alice", "looking")
    storage.set_incident_status(inc.id, "IN_PROGRESS", "bob")
    done = storage.set_incident_status(inc.id, "RESOLVED", "bob", "tap changer reset")

    assert done.status == "RESOLVED"
    assert [(h.status, h.actor, h.note) for h in done.history] == [
        ("OPEN", "analyst", "raised"), ("ACKNOWLEDGED", "alice", "looking"), ("IN_PROGRESS", "bob", ""),
        ("RESOLVED", "bob", "tap changer reset")]
    assert all(h.timestamp >= before - timedelta(seconds=1) for h in done.history[1:])
    with pytest.raises(IncidentError, match="can move only forward"):
        storage.set_incident_status(inc.id, "ACKNOWLEDGED", "carol")
    # the condition coming back after it was resolved opens a new incident
    (again,) = storage.add_incidents([new_incident(T0 + timedelta(hours=1))])
    assert again.id != inc.id and again.status == "OPEN"
    assert storage.list_incidents(status="RESOLVED")[0].id == inc.id


def test_unknown_incidents_and_statuses_are_clear_errors(storage: Storage) -> None:
    (inc,) = storage.add_incidents([new_incident(T0)])
    with pytest.raises(IncidentError, match="no incident INC-2026-000099"):
        storage.get_incident("INC-2026-000099")
    with pytest.raises(IncidentError, match="not an incident id"):
        storage.get_incident("42")
    with pytest.raises(IncidentError, match="unknown status 'DONE'"):
        storage.set_incident_status(inc.id, "DONE", "alice")
    assert storage.get_incident(inc.id).status == "OPEN"


# -- agents' products, OT logs, events, windows ----------------------------------------------------


def test_documents_keep_the_newest_per_key(storage: Storage) -> None:
    storage.put_documents([Document(kind="forecast", key="F12", timestamp=T0, body={"peak": 1.0}),
                           Document(kind="forecast", key="M03", timestamp=T0, body={"peak": 2.0}),
                           Document(kind="maintenance", key="TR-04", timestamp=T0, body={"health": 82.1})])
    storage.put_documents([Document(kind="forecast", key="F12", timestamp=T0 + timedelta(hours=1), body={"peak": 3.0})])
    got = storage.latest_documents("forecast")
    assert [(d.key, d.timestamp, d.body) for d in got] == [
        ("F12", T0 + timedelta(hours=1), {"peak": 3.0}), ("M03", T0, {"peak": 2.0})]
    assert [d.body for d in storage.latest_documents("maintenance")] == [{"health": 82.1}]
    assert storage.latest_documents("agent_run") == []


def test_ot_logs_round_trip_in_a_time_window(storage: Storage) -> None:
    logs = decode_ot_logs(json.dumps([
        {"ts": (T0 + timedelta(minutes=i)).isoformat(), "kind": "auth", "action": "login", "substation": "MOMBASA-S1",
         "device_id": "RTU-MOM01", "result": "failure", "source": "192.168.1.57", "user": "admin"}
        for i in range(4)])).events
    assert storage.add_ot_logs(logs, "http") == 4
    got = storage.ot_logs_between(T0 + timedelta(minutes=1), T0 + timedelta(minutes=3))
    assert got == logs[1:3]


def test_events_and_reading_windows_are_served_oldest_first(storage: Storage) -> None:
    storage.apply_sync(batch(1, readings(10), 1, events(4)), Incidents())
    raised = storage.list_events(state="raised")
    assert [e.description for e in raised] == ["sag 0", "sag 2"]
    assert len(storage.list_events()) == 4
    window = storage.readings_between(T0 + timedelta(minutes=2), T0 + timedelta(minutes=5))
    assert [r.value for r in window] == [230.2, 230.3, 230.4]


def test_hourly_means_per_series_and_utc_hour(storage: Storage) -> None:
    # 150 one-minute readings from 23:00: hours 23:00 (60), 00:00 (60), 01:00 (30); values 230 + i/10
    storage.insert_readings(readings(150) + readings(3, metric="current_l1"), "http")
    got = storage.hourly_means(["voltage_l1"], T0, T0 + timedelta(hours=3))
    assert [(h.device_id, h.metric, h.hour, h.count) for h in got] == [
        ("feeder-1", "voltage_l1", T0, 60), ("feeder-1", "voltage_l1", T0 + timedelta(hours=1), 60),
        ("feeder-1", "voltage_l1", T0 + timedelta(hours=2), 30)]
    assert [round(h.mean, 6) for h in got] == [232.95, 238.95, 243.45]
    assert storage.hourly_means([], T0, T0 + timedelta(hours=3)) == []
    assert len(storage.hourly_means(["voltage_l1", "current_l1"], T0, T0 + timedelta(hours=1))) == 2


def test_hourly_means_leave_out_readings_flagged_invalid(storage: Storage) -> None:
    from protocols.reading import QualityFlag

    good = readings(60)
    bad = [msgspec.structs.replace(r, ts=r.ts + timedelta(seconds=30), value=-1e308, quality=0.0,
                                   flags=int(QualityFlag.INVALID)) for r in readings(60)]
    storage.apply_sync(batch(1, good + bad), Incidents())  # edge sync keeps impossible values, flagged
    (hour,) = storage.hourly_means(["voltage_l1"], T0, T0 + timedelta(hours=1))
    assert hour.count == 60 and round(hour.mean, 6) == 232.95
    assert len(storage.query_readings("feeder-1", "voltage_l1")) == 120  # kept as evidence all the same


def test_concurrent_resends_store_each_reading_once(storage: Storage) -> None:
    rows = readings(300) + readings(300, device="feeder-2")
    stored: list[int] = []
    errors: list[BaseException] = []

    def send() -> None:
        try:
            stored.append(storage.insert_readings(rows, "http"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(stored) == [0, 0, 0, 0, 0, 600]
    assert storage.reading_counts() == {SUB: 600}


@pytest.mark.postgres
def test_timescaledb_layout_compresses_and_still_answers_and_deduplicates(timescale_url: str) -> None:
    """The TimescaleDB layout: readings a hypertable of one-day chunks with a compression policy
    (segmented by device and metric) and, when asked, a retention policy. Compressed chunks still
    answer queries exactly, and a batch sent again after compression stores nothing twice."""
    import psycopg

    from hub.storage.postgres import PostgresStorage

    first = readings(180)  # 23:00 on 1 March to 01:59 on 2 March, UTC: two chunks
    with PostgresStorage(timescale_url, retain_for=timedelta(days=400)) as store:
        assert store.backend == "timescaledb"
        store.apply_sync(batch(1, first), Incidents())
        before = [r for chunk in store.iter_readings(T0 - timedelta(days=1), T0 + timedelta(days=2)) for r in chunk]
        with psycopg.connect(timescale_url, autocommit=True) as conn:
            compressed = conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('readings') c").fetchone()[0]
            jobs = {name for (name,) in conn.execute("SELECT proc_name FROM timescaledb_information.jobs"
                                                     " WHERE hypertable_name = 'readings'")}
            (segmentby,) = conn.execute(
                "SELECT string_agg(attname, ',' ORDER BY segmentby_column_index) FROM"
                " timescaledb_information.compression_settings WHERE hypertable_name = 'readings'"
                " AND segmentby_column_index IS NOT NULL").fetchone()
        assert compressed == 2
        assert {"policy_compression", "policy_retention"} <= jobs
        assert segmentby == "device_id,metric"
        after = [r for chunk in store.iter_readings(T0 - timedelta(days=1), T0 + timedelta(days=2)) for r in chunk]
        assert after == before and len(after) == 180
        assert store.insert_readings(first[:50], "http") == 0  # held already, compressed or not
        assert store.insert_readings(readings(10, start=180), "http") == 10  # new ones into a compressed chunk
        assert store.reading_counts() == {first[0].substation: 190}
