"""The sync contract's wire form: what old hubs and old edges still read, and the bounds."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from protocols.reading import Reading
from protocols.wire import (
    MAX_SEQ,
    EventRun,
    ReadingRun,
    SyncAck,
    SyncBatch,
    WireError,
    decode_ack,
    decode_batch,
    decode_conflict,
    encode,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def reading() -> Reading:
    return Reading(ts=T0, substation="S1", device_id="D", metric="m", value=1.0, unit="V")


def test_runs_without_a_declared_gap_and_batches_without_a_buffer_id_encode_as_before() -> None:
    batch = SyncBatch(edge_id="e", substation="S1", sent_at=T0, readings=ReadingRun(first_seq=3, items=[reading()]))
    body = msgspec.json.decode(encode(batch))
    assert set(body) == {"edge_id", "substation", "sent_at", "readings"} and set(body["readings"]) == {"first_seq",
                                                                                                        "items"}
    declared = msgspec.structs.replace(batch, buffer_id="0123456789abcdef",
                                       readings=ReadingRun(first_seq=3, after=1, items=[reading()]))
    assert decode_batch(encode(declared)) == declared


@pytest.mark.parametrize(
    ("run", "message"),
    [
        ({"first_seq": 2**63 - 1, "items": []}, "Expected `int` <= 9007199254740991 - at `$.readings.first_seq`"),
        ({"first_seq": MAX_SEQ, "items": [1, 2]}, "ends at 9007199254740992, past the largest sequence number"),
        ({"first_seq": 5, "after": 5, "items": []}, "after is 5, but a declared gap must end below first_seq 5"),
        ({"first_seq": 5, "after": -1, "items": []}, "Expected `int` >= 0 - at `$.readings.after`"),
    ],
    ids=["first-seq-near-int64", "last-seq-past-max", "after-not-below-first", "after-negative"],
)
def test_sequence_numbers_are_bounded_on_the_wire(run: dict, message: str) -> None:
    good = msgspec.to_builtins(SyncBatch(edge_id="e", substation="S1", sent_at=T0))
    run["items"] = [msgspec.to_builtins(reading()) for _ in run["items"]]
    with pytest.raises(WireError, match=message.replace("$", r"\$").replace("(", r"\(").replace("[", r"\[")):
        decode_batch(msgspec.json.encode({**good, "readings": run}))


def test_a_buffer_id_is_a_short_token() -> None:
    with pytest.raises(WireError, match=r"buffer_id"):
        decode_batch(msgspec.json.encode({"edge_id": "e", "substation": "S1", "sent_at": "2026-03-01T00:00:00Z",
                                          "buffer_id": "../../" + "x" * 100}))
    with pytest.raises(ValueError, match="declared gap"):
        EventRun(first_seq=2, after=2, items=[])


def test_acks_read_as_before_and_marks_past_the_bound_are_refused() -> None:
    ack = SyncAck(edge_id="e", readings_acked_through=3, events_acked_through=0, readings_stored=3, events_stored=0,
                  duplicates=0)
    assert b"new_buffer" not in encode(ack)  # an old edge reads exactly what it read before
    assert decode_ack(encode(msgspec.structs.replace(ack, new_buffer=True))).new_buffer is True
    with pytest.raises(msgspec.ValidationError, match="readings_acked_through"):
        decode_ack(encode(ack).replace(b'"readings_acked_through":3', b'"readings_acked_through":9223372036854775807'))


def test_the_409_body_is_read_with_whatever_else_the_hub_adds() -> None:
    body = (b'{"status_code": 409, "detail": "readings.first_seq is 90, but ...", "stream": "readings",'
            b' "readings_acked_through": 10, "events_acked_through": 2, "ot_logs_acked_through": 0,'
            b' "errors": [{"key": "readings.first_seq"}]}')
    conflict = decode_conflict(body)
    assert (conflict.stream, conflict.readings_acked_through, conflict.events_acked_through) == ("readings", 10, 2)
    with pytest.raises(msgspec.ValidationError):
        decode_conflict(b'{"status_code": 409, "detail": "no marks"}')
