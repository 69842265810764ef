"""The edge -> hub sync contract.

An edge numbers everything it buffers: readings, events and OT log entries each get a sequence
number from their own counter, increasing by one. A :class:`SyncBatch` carries one contiguous run of each stream
(``first_seq`` plus the items in order, so item ``i`` has sequence ``first_seq + i``). The hub
stores only items above the highest sequence it has already stored for that edge and stream, and
answers with a :class:`SyncAck` naming the highest sequence it now holds. A batch resent after a lost
acknowledgement is therefore stored once; the edge deletes nothing until it holds the ack.

Encoded as JSON with msgspec. The endpoint is ``POST /edge/sync``.

Sequence integrity. The hub takes a run only if it continues the stream: its ``first_seq`` is at
most the hub's high-water mark + 1 (an overlap is fine: the part already held counts as duplicates).
A run that starts further on is a gap and is refused, unless the run declares it: ``after = N``
says "this run continues the stream after sequence N; N+1 .. first_seq-1 were dropped at the edge"
(its buffer drops the oldest unsent rows when full). A declared gap is taken when ``after`` equals
the hub's mark (and counted in ``gaps``); any other ``after`` is refused too. A refused batch is
answered ``409`` with a :class:`SyncConflict` body carrying the hub's marks for this edge, from which
the edge can tell whether to resend from what the hub holds or to declare the gap; nothing of the
batch is stored. Sequence numbers are at most :data:`MAX_SEQ` (2**53 - 1: exact in every JSON
reader, far from int64 overflow), for every item of a run and in acks.

Buffer identity. ``buffer_id`` names the edge's buffer (random, made once when the buffer file is
created). A batch whose ``buffer_id`` differs from the one the hub holds for the edge starts a new
sequence space: the hub's marks for the edge go back to 0 in the same transaction (rows already
stored keep their data and numbers), and the ack says ``new_buffer: true``. That is how a re-imaged
box, whose new buffer counts from 1 again, is told apart from an edge sending old numbers. A batch
without ``buffer_id`` (an edge from before it) uses the marks the hub holds, as before. The edge
never trusts an acknowledgement beyond what it sent (see :mod:`edge.sync`).

Live first. After an outage the stream's backlog can take hours to send oldest-first, and the hub
would see nothing live meanwhile. So a batch may carry a second readings run, ``live``: the newest
readings, from a live start ``L`` the edge chose when it saw the backlog, onward. The hub holds, per
edge, one live range ``live_lo .. live_hi`` beside its mark (empty: both 0). A live run starts the
range (any ``first_seq`` past mark + 1, with no ``after``), or continues it with the same arithmetic
as the mark (``first_seq`` at most ``live_hi`` + 1, or a gap declared with ``after = live_hi``); one
that starts at or below mark + 1 simply continues the stream. The ``readings`` run stays oldest-first
and must end below the range: when the mark reaches ``live_lo - 1`` it jumps to ``live_hi`` and the
range is empty again. A ``readings`` run with no items but ``after`` declares the numbers from the
mark to ``first_seq - 1`` lost (the backlog's last rows were dropped at the edge), and so lets the
mark reach the range. The ack carries the range (``live_lo``, ``live_hi``, left out when it is empty)
and so does a 409. A live run must start past the ``readings`` run's end.

Compatibility: fields added later are optional and left out when empty (``omit_defaults``), so an
edge that sends no ``ot_logs`` run sends exactly what edges before OT log forwarding sent, and an old
edge reads a new hub's ack (``SyncAck`` ignores fields it does not know). A hub from before OT log
forwarding refuses a batch that has an ``ot_logs`` run (unknown field): the edge then syncs without
it and keeps the entries buffered (see :mod:`edge.sync`). The same holds for ``buffer_id`` and
``after``: a hub from before them refuses them as unknown fields, and the edge sends the batch again
without them, and one from before live runs refuses ``live``: the edge then sends the backlog
oldest-first only. An edge from before sequence integrity never declares a gap: after its buffer dropped
rows, a new hub refuses its batches (409) until the edge is upgraded.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocols.otlog import OtLogEvent
from protocols.reading import Reading, UtcTime
from protocols.severity import SEVERITIES, Severity  # noqa: F401 - re-exported: events carry a severity

SYNC_PATH = "/edge/sync"


NonNegative = Annotated[int, msgspec.Meta(ge=0)]
Positive = Annotated[int, msgspec.Meta(ge=1)]

MAX_SEQ = 2**53 - 1
"""The largest sequence number on the wire: exact as a JSON number everywhere, far from int64's end."""
Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
Mark = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]  # a high-water mark: 0 = nothing held yet
BufferId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


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


class _Run(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """What every run has: its first sequence number and, optionally, the gap it declares."""

    first_seq: Seq
    after: Mark | None = None  # a declared gap: this run continues the stream after sequence ``after``

    items: list  # narrowed by each run

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.items) - 1

    def __post_init__(self) -> None:
        if self.last_seq > MAX_SEQ:
            raise ValueError(f"first_seq {self.first_seq} with {len(self.items)} items ends at {self.last_seq}, "
                             f"past the largest sequence number {MAX_SEQ} (2**53 - 1)")
        if self.after is not None and self.after >= self.first_seq:
            raise ValueError(f"after is {self.after}, but a declared gap must end below first_seq {self.first_seq}")


class ReadingRun(_Run, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    items: list[Reading]


class EventRun(_Run, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    items: list[Event]


class OtLogRun(_Run, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """OT log entries (authentication, commands, configuration changes) the edge collected from the
    substation's RTUs, gateways and HMIs, for the hub's cyber sentinel."""

    items: list[OtLogEvent]


class DeviceState(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One device as its edge sees it."""

    device_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    up: bool
    error: Annotated[str, msgspec.Meta(max_length=500)] = ""  # why it is down ("": it is up)


class EdgeHealth(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """How an edge is doing, sent with its syncs for the hub's fleet view: software and model, its
    buffer's backlog and drops, its devices. Optional: edges from before it leave it out."""

    software: Annotated[str, msgspec.Meta(max_length=64)]  # the edge's version
    model: Annotated[str, msgspec.Meta(max_length=200)] = ""  # the scoring model in use ("": detectors only)
    readings_pending: NonNegative = 0
    events_pending: NonNegative = 0
    oldest_pending: UtcTime | None = None  # the oldest unsent reading's time
    dropped: NonNegative = 0  # readings the buffer dropped at its limits, ever
    devices: Annotated[list[DeviceState], msgspec.Meta(max_length=1000)] = []
    config_version: NonNegative = 0  # the hub-given config it runs (0: its own file; docs/remote-config.md)


class SyncBatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    edge_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    substation: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    sent_at: datetime
    readings: ReadingRun | None = None
    events: EventRun | None = None
    ot_logs: OtLogRun | None = None  # optional: edges that forward no OT logs leave it out
    buffer_id: BufferId | None = None  # the edge's buffer; optional: edges from before it leave it out
    health: EdgeHealth | None = None  # optional: edges from before it leave it out
    live: ReadingRun | None = None  # the newest readings, past the backlog; optional (see "Live first")

    def __post_init__(self) -> None:
        if self.live is not None:
            if not self.live.items:
                raise ValueError("live has no items: leave the live run out instead")
            if self.readings is not None and self.live.first_seq <= self.readings.last_seq:
                raise ValueError(f"live.first_seq is {self.live.first_seq}, but the readings run ends at "
                                 f"{self.readings.last_seq}: the live run must start past it")
        # Readings and events are checked by decode_batch and the hub's handler; OT log entries here,
        # so that every decoder of a batch refuses an edge speaking for another substation.
        if self.ot_logs is not None:
            for i, item in enumerate(self.ot_logs.items):
                if item.substation != self.substation:
                    raise ValueError(f"ot_logs.items[{i}].substation is {item.substation!r}, but the batch is "
                                     f"from substation {self.substation!r}")


class SyncAck(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: str
    readings_acked_through: Mark  # highest reading sequence the hub holds for this edge
    events_acked_through: Mark
    readings_stored: NonNegative  # stored by this request
    events_stored: NonNegative
    duplicates: NonNegative  # items in this request already held
    gaps: NonNegative = 0  # sequence numbers skipped before this batch (lost at the edge)
    ot_logs_acked_through: Mark = 0  # highest OT log sequence the hub holds (0 from older hubs)
    ot_logs_stored: NonNegative = 0
    # the batch's buffer_id differed from the one held: the marks began again at 0 for it. Left out
    # of the JSON unless true (UNSET), so acks read exactly as before for everyone else.
    new_buffer: bool | msgspec.UnsetType = msgspec.UNSET
    # the live range the hub holds past the mark (see "Live first"); left out while it is empty
    live_lo: Mark | msgspec.UnsetType = msgspec.UNSET
    live_hi: Mark | msgspec.UnsetType = msgspec.UNSET


class SyncConflict(msgspec.Struct, frozen=True, kw_only=True):
    """The body of a ``409`` from ``POST /edge/sync``: the batch does not continue the edge's
    sequence (a gap it did not declare, or a declared gap that does not start at the hub's mark).
    Nothing of the batch was stored. The marks are the hub's for this edge, in the batch's sequence
    space (all 0 when the batch's ``buffer_id`` starts a new one)."""

    status_code: int = 409
    detail: str = ""
    stream: str = ""  # the run refused: "readings", "events", "ot_logs" or "live"
    readings_acked_through: Mark
    events_acked_through: Mark
    ot_logs_acked_through: Mark = 0
    live_lo: Mark = 0  # the live range the hub holds (0, 0: none; older hubs leave them out)
    live_hi: Mark = 0


_batch_decoder = msgspec.json.Decoder(SyncBatch)
_ack_decoder = msgspec.json.Decoder(SyncAck)
_conflict_decoder = msgspec.json.Decoder(SyncConflict)
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
    for name, run in (("readings", batch.readings), ("events", batch.events), ("live", batch.live)):
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
    """Raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` for anything that is not an ack."""
    return _ack_decoder.decode(data)


def decode_conflict(data: bytes) -> SyncConflict:
    """The body of a 409; raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` like :func:`decode_ack`."""
    return _conflict_decoder.decode(data)
