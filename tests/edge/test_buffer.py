from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.buffer import Buffer
from protocols.wire import Event


def _rows(n: int, t0: float = 1_700_000_000.0, device: str = "FEEDER-F12") -> list[tuple]:
    return [(t0 + i, device, "voltage_l1", 11.0 + i / 1000, "kV", 1.0, 0) for i in range(n)]


def _event(i: int = 0) -> Event:
    return Event(ts=datetime.fromtimestamp(1_700_000_000 + i, UTC), substation="S", device_id="F", metric="voltage_l1",
                 type="voltage_sag", state="raised", severity="WARNING", value=10.3, threshold=10.45, nominal=11.0,
                 unit="kV", description="sag")


def test_pending_returns_contiguous_runs_and_ack_forgets(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S")
    b.append(_rows(10), [_event(0), _event(1)])
    r, e = b.pending(4)
    assert r.first_seq == 1 and len(r.items) == 4 and r.last_seq == 4
    assert r.items[0].substation == "S" and r.items[0].value == 11.0
    assert e.first_seq == 1 and [x.description for x in e.items] == ["sag", "sag"]
    b.ack(4, 2)
    r, e = b.pending(100)
    assert (r.first_seq, len(r.items)) == (5, 6) and e is None
    st = b.stats()
    assert st.readings_pending == 6 and st.events_pending == 0 and st.last_sync is not None
    assert st.oldest_pending == datetime.fromtimestamp(1_700_000_004, UTC)


def test_sequence_numbers_never_go_back_across_acks_and_restarts(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S")
    b.append(_rows(5))
    b.ack(5, 0)
    b.close()
    b = Buffer(tmp_path / "b.db", "S")  # reopened: nothing pending, but numbering continues
    assert b.pending(10) == (None, None)
    b.append(_rows(3))
    r, _ = b.pending(10)
    assert r.first_seq == 6 and r.last_seq == 8


def test_values_none_survive(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S")
    b.append([(1.0, "D", "m", None, "", 0.0, 16)])
    r, _ = b.pending(1)
    assert r.items[0].value is None and r.items[0].flags == 16


def test_the_buffer_id_is_made_once_and_kept_across_restarts(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S")
    first = b.buffer_id
    b.close()
    b = Buffer(tmp_path / "b.db", "S")
    assert b.buffer_id == first and len(first) == 32
    b.close()
    assert Buffer(tmp_path / "other.db", "S").buffer_id != first  # a new file (a re-imaged box): a new id


def test_a_buffer_from_before_buffer_ids_gets_one_on_open_and_keeps_its_numbers(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S")
    b.append(_rows(4))
    b.ack(2, 0)
    b.close()
    db = sqlite3.connect(tmp_path / "b.db")
    db.execute("DELETE FROM meta WHERE key = 'buffer_id'")  # as a file made before them
    db.commit()
    db.close()
    b = Buffer(tmp_path / "b.db", "S")
    assert b.buffer_id and b.acked_through() == {"readings": 2, "events": 0, "ot_logs": 0}
    r, _ = b.pending(10)
    assert (r.first_seq, r.last_seq) == (3, 4)


def test_an_ack_beyond_what_the_buffer_made_forgets_nothing(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S")
    b.append(_rows(3), [_event(0)])
    with pytest.raises(ValueError, match="readings through 4611686018427387904, but this buffer made readings only up to 3"):
        b.ack(2**62, 1)
    assert b.stats().readings_pending == 3 and b.stats().events_pending == 1  # the events' part rolled back too
    assert b.acked_through() == {"readings": 0, "events": 0, "ot_logs": 0}


def test_an_ack_of_one_stream_leaves_the_others_alone(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S")
    b.append(_rows(3), [_event(0), _event(1)])
    b.ack(None, 2)
    assert b.stats().readings_pending == 3 and b.stats().events_pending == 0
    assert b.acked_through() == {"readings": 0, "events": 2, "ot_logs": 0}


def test_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    b = Buffer(tmp_path / "b.db", "S", max_rows=1000)
    for _ in range(3):
        b.append(_rows(5000))
    st = b.stats()
    assert st.readings_pending <= 1000 + 5000 and st.dropped > 0
    r, _ = b.pending(10)
    assert r.first_seq > 1
