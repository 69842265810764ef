"""Each device's newest reading for the liveness check (``hub.storage.newest``): on PostgreSQL it is
kept in ``device_newest`` as readings are stored, not read off the readings (a scan that grew with
the table when one edge's readings came hours behind the others'), and it must answer as that scan did.
"""

from __future__ import annotations

import threading
import time
from contextlib import closing
from datetime import UTC, datetime, timedelta

import pytest

from hub.storage import open_storage
from hub.storage.base import Storage
from hub.storage.newest import DeviceNewest
from protocols.reading import QualityFlag, Reading
from protocols.wire import ReadingRun, SyncBatch

NOW = datetime.now(UTC).replace(microsecond=0)


def _reading(device: str, ts: datetime, flags: int = 0, substation: str = "S1") -> Reading:
    return Reading(ts=ts, substation=substation, device_id=device, metric="voltage_l1", value=11.0, unit="kV",
                   flags=flags)


def _heard(storage: Storage, start: datetime = NOW - timedelta(hours=3),
           end: datetime = NOW + timedelta(minutes=1)) -> dict[tuple[str, str], datetime]:
    return {(sub, dev): ts for sub, dev, ts in storage.latest_reading_times(start, end)}


def test_each_device_is_heard_at_its_newest_reading_that_measured_something(storage: Storage) -> None:
    """Over HTTP-style inserts and edge syncs alike; late readings do not move a device back; flagged
    ones (INVALID, COMM_LOST) are no sign of life; the range bounds the newest time."""
    storage.insert_readings([_reading("A", NOW - timedelta(seconds=30)), _reading("A", NOW - timedelta(seconds=10)),
                             _reading("B", NOW - timedelta(hours=2)),
                             _reading("C", NOW - timedelta(seconds=5), flags=QualityFlag.COMM_LOST)], "http")
    storage.insert_readings([_reading("A", NOW - timedelta(seconds=50))], "http")  # late: A stays at -10 s
    storage.apply_sync(SyncBatch(edge_id="E1", substation="S2", sent_at=NOW, readings=ReadingRun(first_seq=1, items=[
        _reading("D", NOW - timedelta(seconds=3), substation="S2"),
        _reading("D", NOW - timedelta(seconds=2), flags=QualityFlag.INVALID, substation="S2"),
        _reading("C", NOW - timedelta(seconds=1), substation="S2")])), lambda events: [])
    assert _heard(storage) == {("S1", "A"): NOW - timedelta(seconds=10), ("S1", "B"): NOW - timedelta(hours=2),
                               ("S2", "D"): NOW - timedelta(seconds=3), ("S2", "C"): NOW - timedelta(seconds=1)}
    assert set(_heard(storage, start=NOW - timedelta(minutes=5))) == {("S1", "A"), ("S2", "D"), ("S2", "C")}
    assert set(_heard(storage, start=NOW - timedelta(minutes=5), end=NOW - timedelta(seconds=2))) == {("S1", "A"),
                                                                                                     ("S2", "D")}


@pytest.mark.postgres
def test_readings_one_hub_process_stores_are_heard_by_another_within_seconds(postgres_url: str) -> None:
    """Two storage objects on one database, as two hub replicas or worker processes: the one that
    did not store the readings sees them once the other's notes are written (at most every 5 s),
    without any read of the readings table."""
    with closing(open_storage(postgres_url)) as writer, closing(open_storage(postgres_url)) as reader:
        writer.insert_readings([_reading("A", NOW - timedelta(seconds=5))], "http")
        with writer.transaction() as tx:  # the readings are gone: only device_newest can answer
            tx.execute("DELETE FROM readings")
        deadline = time.monotonic() + 15.0
        while not (got := _heard(reader)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert got == {("S1", "A"): NOW - timedelta(seconds=5)}
        writer.insert_readings([_reading("A", NOW - timedelta(seconds=1))], "http")
        writer.close()  # closing writes what is noted
        assert _heard(reader) == {("S1", "A"): NOW - timedelta(seconds=1)}


@pytest.mark.postgres
def test_migration_7_fills_the_table_from_the_last_days_readings(postgres_url: str) -> None:
    with closing(open_storage(postgres_url)) as storage:
        storage.insert_readings([_reading("A", NOW - timedelta(minutes=2)), _reading("B", NOW - timedelta(days=3)),
                                 _reading("C", NOW - timedelta(seconds=1), flags=QualityFlag.COMM_LOST)], "http")
        with storage.transaction() as tx:  # as version 6 left it
            tx.execute("DROP TABLE device_newest")
            tx.execute("DELETE FROM schema_migrations WHERE version >= 7")
    with closing(open_storage(postgres_url)) as storage:
        assert storage.migration_status().pending == []
        assert _heard(storage, start=NOW - timedelta(days=30)) == {("S1", "A"): NOW - timedelta(minutes=2)}


def test_a_failed_write_keeps_the_notes_for_the_next_one() -> None:
    written: list[list[tuple[str, str, datetime]]] = []
    failing = threading.Event()
    failing.set()

    def write(rows: list[tuple[str, str, datetime]]) -> None:
        if failing.is_set():
            raise ConnectionError("the database is down")
        written.append(rows)

    newest = DeviceNewest(write, every_s=0.05)
    row = (NOW, "S1", "A", "voltage_l1", 11.0, "kV", 1.0, 0)
    newest.note([row, (NOW - timedelta(seconds=1), "S1", "A", *row[3:]), (NOW, "S1", "B", *row[3:7], 16)])
    with pytest.raises(ConnectionError):
        newest.flush()
    assert newest.pending == 1  # kept (B's reading was COMM_LOST: no sign of life)
    # a read in this process sees the notes not written yet, over what the table holds
    window = (NOW - timedelta(minutes=5), NOW + timedelta(minutes=1))
    assert sorted(newest.overlay([("S1", "A", NOW - timedelta(seconds=3)), ("S1", "C", NOW)], *window)) == [
        ("S1", "A", NOW), ("S1", "C", NOW)]
    assert newest.overlay([], NOW + timedelta(seconds=1), NOW + timedelta(minutes=1)) == []  # out of the range
    newest.note([(NOW - timedelta(seconds=9), "S0", "Z", *row[3:])])
    failing.clear()
    deadline = time.monotonic() + 5.0
    while not written and time.monotonic() < deadline:  # the timer writes them, in key order
        time.sleep(0.01)
    assert written == [[("S0", "Z", NOW - timedelta(seconds=9)), ("S1", "A", NOW)]]
    newest.close()
    newest.note([row])
    assert newest.pending == 1 and written == [[("S0", "Z", NOW - timedelta(seconds=9)), ("S1", "A", NOW)]]


@pytest.mark.postgres
def test_closing_with_postgresql_down_gives_up_the_last_write_within_seconds(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    """A hub stopping while its database is down (a failover, a restart) must not hang in the last
    write of the notes for the pool's 30 s: it logs what it could not write and goes."""
    from sentinel_cli.pgserver import PostgresServer

    with PostgresServer(tmp_path / "pg") as server:
        storage = open_storage(server.create_database())
        storage.insert_readings([_reading("A", NOW - timedelta(seconds=1))], "http")  # noted, not yet written
        server.stop("immediate")
        started = time.monotonic()
        with caplog.at_level("WARNING", logger="hub.storage.newest"):
            storage.close()
        took = time.monotonic() - started
    assert took < 12.0, f"close took {took:.1f} s"
    assert "1 devices' newest reading times not written" in caplog.text, caplog.text
