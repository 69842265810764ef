"""The edge -> hub sync contract.

An edge numbers everything it buffers: readings, events and OT log entries each get a sequence
number from their own counter, increasing by one. A :class:`SyncBatch` carries one contiguous run of each stream
(``first_seq`` plus the items in order, so item ``i`` has sequence ``first_seq + i``). The hub
stores only items above the highest sequence it has already stored for that edge and stream, and
answers with a :class:`SyncAck` naming the highest sequence it now holds. A batch resent after a lost
acknowledgement is therefore stored once; the edge deletes nothing until it holds the ack.

Encoded as JSON with msgspec. The endpoint is ``POST /edge/sync``.

Compatibility: fields added later are optional and left out when empty (``omit_defaults``), so an
edge that sends no ``ot_logs`` run sends exactly what edges before OT log forwarding sent, and an old
edge reads a new hub's ack (``SyncAck`` ignores fields it does not know). A hub from before OT log
forwarding refuses a batch that has an ``ot_logs`` run (unknown field): the edge then syncs without
it and keeps the entries buffered (see :mod:`edge.sync`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocols.otlog import OtLogEvent
from protocols.reading import Reading, UtcTime

SYNC_PATH = "/edge/sync"

Severity = Literal["INFO", "WARNING", "CRITICAL", "EMERGENCY"]
SEVERITIES: tuple[str, ...] = ("INFO", "WARNING", "CRITICAL", "EMERGENCY")

NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Something the edge noticed, such as a grid-code limit crossed. Becomes an incident at the hub."""

    ts: UtcTime
    substation: str
    device_id: str
    metric: str
    type: str  # voltage_sag, voltage_swell, under_frequency, over_frequency, limit_high, limit_low, device_offline
    state: Literal["raised", "cleared"]
    severity: Severity
    value: float | None = None
    threshold: float | None = None
    nominal: float | None = None
    unit: str = ""
    description: str = ""


class ReadingRun(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    first_seq: Positive
    items: list[Reading]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.items) - 1


class EventRun(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    first_seq: Positive
    items: list[Event]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.items) - 1


class OtLogRun(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """OT log entries (authentication, commands, configuration changes) the edge collected from the
    substation's RTUs, gateways and HMIs, for the hub's cyber sentinel."""

    first_seq: Positive
    items: list[OtLogEvent]

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.items) - 1


class SyncBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    edge_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    substation: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    sent_at: datetime
    readings: ReadingRun | None = None
    events: EventRun | None = None
    ot_logs: OtLogRun | None = None  # optional: edges that forward no OT logs leave it out

    def __post_init__(self) -> None:
        # Readings and events are checked by decode_batch and the hub's handler; OT log entries here,
        # so that every decoder of a batch refuses an edge speaking for another substation.
        if self.ot_logs is not None:
            for i, item in enumerate(self.ot_logs.items):
                if item.substation != self.substation:
                    raise ValueError(f"ot_logs.items[{i}].substation is {item.substation!r}, but the batch is "
                                     f"from substation {self.substation!r}")


class SyncAck(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: str
    readings_acked_through: NonNegative  # highest reading sequence the hub holds for this edge
    events_acked_through: NonNegative
    readings_stored: NonNegative  # stored by this request
    events_stored: NonNegative
    duplicates: NonNegative  # items in this request already held
    gaps: NonNegative = 0  # sequence numbers skipped before this batch (lost at the edge)
    ot_logs_acked_through: NonNegative = 0  # highest OT log sequence the hub holds (0 from older hubs)
    ot_logs_stored: NonNegative = 0


_batch_decoder = msgspec.json.Decoder(SyncBatch)
_ack_decoder = msgspec.json.Decoder(SyncAck)
_encoder = msgspec.json.Encoder()


class WireError(ValueError):
    """A sync message that does not follow the contract; the message names the field."""


def decode_batch(data: bytes) -> SyncBatch:
    try:
        batch = _batch_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise WireError(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise WireError(f"malformed JSON: {exc}") from exc
    for name, run in (("readings", batch.readings), ("events", batch.events)):
        if run is None:
            continue
        for i, item in enumerate(run.items):
            if item.substation != batch.substation:
                raise WireError(
                    f"{name}.items[{i}].substation is {item.substation!r}, "
                    f"but the batch is from substation {batch.substation!r} - at `$.{name}.items[{i}].substation`"
                )
    return batch


def encode(msg: msgspec.Struct) -> bytes:
    return _encoder.encode(msg)


def decode_ack(data: bytes) -> SyncAck:
    return _ack_decoder.decode(data)
