"""The dead-letter table: malformed messages kept with their reason, identically on both storages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


from hub.storage.base import Storage
from protocols.mqtt.codec import MAX_DEAD_LETTER_PAYLOAD, DeadLetter

T0 = datetime(2026, 3, 1, 23, 59, 59, 500_000, tzinfo=UTC)


def letters(n: int, start: int = 0) -> list[DeadLetter]:
    return [
        DeadLetter(ts=T0 + timedelta(milliseconds=start + i), source="hub@broker.example:8883",
                   topic=f"substations/S1/TR-{start + i}/voltage", payload=f'{{"value": "{start + i}"}}',
                   reason=f"value: Expected `float | null`, got `str` ({start + i})")
        for i in range(n)
    ]


def test_empty_storage_has_none(storage: Storage) -> None:
    assert storage.dead_letter_count() == 0
    assert storage.dead_letters() == []
    assert storage.add_dead_letters([]) == 0


def test_added_letters_come_back_newest_first_as_they_went_in(storage: Storage) -> None:
    first, second = letters(3), letters(2, start=3)
    assert storage.add_dead_letters(first) == 3
    assert storage.add_dead_letters(second) == 2
    assert storage.dead_letter_count() == 5
    assert storage.dead_letters() == list(reversed(first + second))
    assert storage.dead_letters(limit=2) == list(reversed(second))
    assert all(d.ts.utcoffset() == timedelta(0) for d in storage.dead_letters())


def test_any_payload_is_storable(storage: Storage) -> None:
    """Binary junk, NUL (which PostgreSQL text refuses) and oversized payloads, via DeadLetter.make."""
    junk = [b"\x00\x01\xfe\xff", "caf\u00e9 \u26a1".encode() + b"\x00", b"{" * (MAX_DEAD_LETTER_PAYLOAD + 5000), b""]
    made = [DeadLetter.make("TR-1@127.0.0.1:1883", "a/b", p, "invalid JSON: ...", T0.timestamp()) for p in junk]
    storage.add_dead_letters(made)
    back = list(reversed(storage.dead_letters()))
    assert back == made
    assert back[1].payload == "caf\u00e9 \u26a1\ufffd"
    assert len(back[2].payload) == MAX_DEAD_LETTER_PAYLOAD


def test_many_letters_in_one_call(storage: Storage) -> None:
    storage.add_dead_letters(letters(2000))
    assert storage.dead_letter_count() == 2000
    assert storage.dead_letters(limit=1)[0].topic == "substations/S1/TR-1999/voltage"
