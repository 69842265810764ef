"""The sync loop: sends buffered readings, events and OT log entries to the hub, forgets them only
once acked.

The edge never trusts the hub. An answer is used only if it is a well-formed ack for this edge
whose marks, for each run sent, lie between what the buffer already knows was acked and the last
number sent: an ack beyond what was sent (the hub claims numbers this buffer never gave it), one
below what it acknowledged before, one for another edge, a malformed or oversized body, any status
but 2xx (redirects are not followed), a hub that hangs or trickles, a connection reset: each is a
*hub fault*. Nothing is deleted on a fault; it is counted (``SyncStats.hub_faults``, by kind in
``SyncStats.faults``), logged once (again only when the kind of fault changes), the loop backs off
and tries again, and polling and limit checks, which never wait on the hub, go on. A stream the
batch did not carry is never acked from what the hub says about it.

Gaps. The buffer drops its oldest unsent rows when full, so a run may start past what the hub holds.
The run then declares the gap (``after``, see :mod:`protocols.wire`): from the buffer's own record
of what was acked, and after a ``409`` from the hub's marks in its body. A gap is declared only for
numbers that are gone from the buffer: a run always starts at the buffer's oldest row of its
stream, so everything below ``first_seq`` was acked or dropped. When the hub holds more than the
run's start (an ack was lost), the run is simply sent again from where it starts and the hub keeps
what is new. When the hub holds more than this buffer ever made, nothing is declared: that is a
hub fault, and the data stays here.

Live first. With more than ``LIVE_AFTER_BATCHES`` batches of readings waiting, a batch carries a
second readings run, ``live`` (at most half the batch): the newest readings, from a live start ``L``
on, beside the backlog below ``L``, oldest first (:meth:`edge.buffer.Buffer.pending_live`). ``L``
is chosen again at each attempt until the hub acknowledges a live range, so the first batch it takes
brings the newest readings; from then on the live run continues the range and the backlog closes
up to it, after which the hub's mark jumps past the range and one stream remains. The ack's live
range is checked as its marks are (it must lie past the readings mark, cover the live run's start
and end within what was sent), and only rows this batch sent in the live run are forgotten by it;
the mark may jump past the backlog run only to the end of a range acknowledged before, and only when
the run reached ``L``. A 409 carries the hub's live range; the edge takes it as its ``L``, which
only moves rows between the two runs (every row the buffer holds is in one of them until an ack for
it arrives), and its end only if this batch sent that far (``UNCONFIRMED`` otherwise). A hub from
before live runs refuses ``live`` (400, unknown field): the edge then sends oldest-first only.

A hub from before OT log forwarding refuses a batch with an ``ot_logs`` run (400, unknown field):
the loop then sends the batch again without it, keeps the entries buffered, logs one warning, and
offers them again every ``OT_LOGS_RETRY_S`` (the hub may have been upgraded meanwhile). Likewise a
hub from before buffer ids and declared gaps is sent batches without ``buffer_id`` / ``after``, and one
from before health reports without ``health`` (a report of the edge's software, model, backlog and
devices, at most every ``HEALTH_EVERY_S``, for the hub's fleet view)."""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import msgspec

from edge.backoff import Backoff
from edge.buffer import Buffer
from edge.hubclient import HubCertificateMismatch, ResponseTooLarge, hub_client, read_capped
from protocols.config import FirmwareConfig
from protocols.wire import SYNC_PATH, EdgeHealth, ReadingRun, SyncAck, SyncBatch, decode_ack, decode_conflict, encode

__all__ = ["HubFault", "SyncLoop", "SyncStats"]

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024  # an ack or a refusal is a few hundred bytes
DEADLINE_FACTOR = 3  # a whole sync request, upload included, gets this many hub.timeout_s

_STREAMS = ("readings", "events", "ot_logs")
UNCONFIRMED = -1  # the end of a live range the hub named but no batch of this edge confirmed: not believed
_UNKNOWN_FIELD = re.compile(r"unknown field `(ot_logs|buffer_id|after|health|live)`")


class HubFault(Exception):
    """The hub could not be reached, or answered in a way the sync contract does not allow.
    ``kind`` says which (``unreachable``, ``tls``, ``timeout``, ``connection``, ``too_large``,
    ``redirect``, ``status``, ``refused``, ``server_error``, ``sequence``, ``malformed_ack``,
    ``wrong_edge``, ``ack_beyond_sent``, ``ack_below_acked``, ``ack_short``, ``hub_ahead``);
    nothing was acked."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


@dataclass
class SyncStats:
    batches: int = 0
    readings_sent: int = 0
    events_sent: int = 0
    failures: int = 0  # sync attempts that failed, for whatever reason
    last_error: str = ""
    last_sync: datetime | None = None
    hub_up: bool | None = None
    ot_logs_sent: int = 0
    ot_logs_refused: str = ""  # why the hub does not take OT log entries ("" while it does)
    hub_faults: int = 0  # failed attempts where the hub answered wrongly or not at all (not: unreachable)
    faults: collections.Counter = field(default_factory=collections.Counter)  # failed attempts by kind (+ internal)
    last_fault: str = ""  # the kind of the latest failure ("" after a success)
    new_buffer: bool = False  # the hub started a new sequence space for this buffer
    sizes: list[int] = field(default_factory=list)
    live_sent: int = 0  # readings acked in the live lane (the newest, sent ahead of a backlog)


class SyncLoop:
    OT_LOGS_RETRY_S = 300.0
    OPTIONAL_RETRY_S = 300.0  # how long a hub that refused buffer_id / after is sent batches without them

    HEALTH_EVERY_S = 30.0  # a health report rides with a sync at most this often
    LIVE_AFTER_BATCHES = 3  # a backlog of more readings than this many batches: the newest go first

    def __init__(self, config: FirmwareConfig, buffer: Buffer, client: httpx.AsyncClient | None = None,
                 token: str | None = None, health: Callable[[], EdgeHealth] | None = None) -> None:
        """``token``: the edge's credential, instead of the one in ``$<hub.token_env>``."""
        self.config = config
        self.buffer = buffer
        hub = config.hub
        self._client = client or hub_client(hub, token, {"content-type": "application/json",
                                                         "accept-encoding": "identity"})
        self._deadline_s = DEADLINE_FACTOR * hub.timeout_s
        self._backoff = Backoff(hub.backoff_initial_s, hub.backoff_max_s)
        self.stats = SyncStats()
        self.wake = asyncio.Event()  # set to sync now (e.g. on a new event)
        self._ot_logs_max = config.ot_logs.batch_max if config.ot_logs is not None else 1_000
        self._ot_logs_refused_until = 0.0  # monotonic; until then OT logs are not offered to this hub
        self._lacks: dict[str, float] = {}  # optional field -> monotonic time until which it is left out
        self._health = health  # the edge's health report (blocking: called in a worker thread)
        self._health_sent = -float("inf")  # monotonic time of the last batch that carried one
        self._hub_marks: dict[str, int] = {}  # per stream, the hub's mark from its latest 409
        self._hub_live: tuple[int, int] | None = None  # the hub's live range from its latest 409, to take as L
        self._logged_fault = ""  # the kind of fault last logged ("" after a success)

    async def aclose(self) -> None:
        await self._client.aclose()

    # -- one batch ------------------------------------------------------------------------------

    async def sync_once(self) -> int | None:
        """Send one batch if anything is pending; return how many items the hub newly acked
        (None: nothing was pending, so the hub was not asked). Raises :class:`HubFault` when the
        hub cannot be reached or answers wrongly (counted in :attr:`stats`, logged once); the
        buffer is then as it was."""
        try:
            sent = await self._sync_once()
        except HubFault as fault:
            self._fault(fault)
            raise
        if sent is not None:
            if self.stats.hub_up is False:
                log.info("hub %s answers properly again; sending the backlog", self.config.hub.url)
            self.stats.hub_up = True
            self.stats.last_fault = ""
            self._logged_fault = ""
        return sent

    def _pending(self) -> tuple:
        """(readings run, live run, events run, the live range held), from the buffer (blocking)."""
        n = self.config.hub.batch_max_readings
        if self._hub_live is not None:  # the hub's live range from a 409: the rows' division follows it
            self.buffer.set_live(*self._hub_live)
            self._hub_live = None
        live_max = max(1, n // 2) if self._lacks.get("live", 0.0) <= time.monotonic() else 0
        readings, live = self.buffer.pending_live(n, live_max, self.LIVE_AFTER_BATCHES * n)
        events = self.buffer.pending(0)[1]
        return readings, live, events, self.buffer.live_range()

    async def _sync_once(self) -> int | None:
        readings, live, events, held = await asyncio.to_thread(self._pending)
        ot_logs = None
        if time.monotonic() >= self._ot_logs_refused_until:
            ot_logs = await asyncio.to_thread(self.buffer.pending_ot_logs, self._ot_logs_max)
        if readings is None and live is None and events is None and ot_logs is None:
            return None
        acked = await asyncio.to_thread(self.buffer.acked_through)
        health = None
        if self._health is not None and time.monotonic() - self._health_sent >= self.HEALTH_EVERY_S:
            health = await asyncio.to_thread(self._health)
        while True:
            runs = {"readings": readings, "events": events, "ot_logs": ot_logs}
            batch = self._batch(runs, acked)
            if live is not None:  # a gap in the live lane is declared after the range's end the hub holds
                after = held[1] if held[1] > 0 and live.first_seq > held[1] + 1 else None
                batch = msgspec.structs.replace(batch, live=msgspec.structs.replace(live, after=after))
            if health is not None and self._lacks.get("health", 0.0) <= time.monotonic():
                batch = msgspec.structs.replace(batch, health=health)
            status, body = await self._post(encode(batch))
            if 200 <= status < 300:
                break
            if status == 409:
                self._conflict(body, runs, acked, live, held[1])  # raises
            unknown = _UNKNOWN_FIELD.search(body.decode("utf-8", "replace")) if status == 400 else None
            if unknown is None or not self._leave_out(unknown[1], batch):
                raise _status_fault(status, body)
            if unknown[1] == "ot_logs":
                ot_logs = None
                if readings is None and events is None:
                    return 0
            if unknown[1] == "live":  # the backlog run alone is still the oldest rows, in order
                live = None
                if readings is not None and not readings.items:
                    readings = None
                if readings is None and events is None and ot_logs is None:
                    return 0
        ack = self._check_ack(body, runs, acked, live, held)
        if batch.health is not None:
            self._health_sent = time.monotonic()
        through = {name: getattr(ack, f"{name}_acked_through") if runs[name] is not None else None
                   for name in _STREAMS}
        live_range = _live_range(ack)
        if live is None and live_range[0] and live_range != held:  # not confirmed by what this batch sent
            live_range = (live_range[0], UNCONFIRMED)
        if live is not None and through["readings"] is None:
            through["readings"] = ack.readings_acked_through
        try:
            await asyncio.to_thread(self.buffer.ack, through["readings"], through["events"], through["ot_logs"],
                                    live=live_range if through["readings"] is not None else None,
                                    live_sent_from=live.first_seq if live is not None else 0)
        except ValueError as exc:  # past what the buffer made: _check_ack should have caught it
            raise HubFault("ack_beyond_sent", str(exc)) from exc
        for name in _STREAMS:
            if runs[name] is not None:
                self._hub_marks.pop(name, None)
        if ot_logs is not None and self.stats.ot_logs_refused:
            log.info("hub %s takes OT log entries now", self.config.hub.url)
            self.stats.ot_logs_refused = ""
        if ack.new_buffer is True:
            self.stats.new_buffer = True
            log.warning("hub %s started a new sequence space for this edge's buffer %s", self.config.hub.url,
                        self.buffer.buffer_id)
        n = {name: through[name] - run.first_seq + 1 for name, run in runs.items() if run is not None}
        if readings is not None:  # past the run: the mark jumped over the live range the hub held
            n["readings"] = max(0, min(through["readings"], readings.last_seq) - readings.first_seq + 1)
        if live is not None:
            end = live_range[1] if live_range[0] else min(through["readings"], live.last_seq)
            n["live"] = max(0, end - live.first_seq + 1)
            n["readings"] = n.get("readings", 0) + n["live"]
            self.stats.live_sent += n.pop("live")
        self.stats.batches += 1
        self.stats.readings_sent += n.get("readings", 0)
        self.stats.events_sent += n.get("events", 0)
        self.stats.ot_logs_sent += n.get("ot_logs", 0)
        self.stats.last_sync = datetime.now(UTC)
        if ack.gaps:
            log.warning("hub reports %d sequence numbers missing before this batch", ack.gaps)
        return sum(n.values())

    def _batch(self, runs: dict, acked: dict[str, int]) -> SyncBatch:
        """The batch for ``runs``, with the gaps declared that the buffer knows of (rows dropped
        before they were sent) or that the hub's latest 409 showed."""
        now = time.monotonic()
        out = {}
        for name, run in runs.items():
            if run is None:
                out[name] = None
                continue
            mark = self._hub_marks.get(name, acked[name])
            after = mark if mark < run.first_seq - 1 else None
            if self._lacks.get("after", 0.0) > now:
                after = None
            out[name] = msgspec.structs.replace(run, after=after) if after != run.after else run
        ident = self.config.identity
        buffer_id = self.buffer.buffer_id if self._lacks.get("buffer_id", 0.0) <= now else None
        return SyncBatch(edge_id=ident.edge_id, substation=ident.substation, sent_at=datetime.now(UTC),
                         readings=out["readings"], events=out["events"], ot_logs=out["ot_logs"], buffer_id=buffer_id)

    async def _post(self, body: bytes) -> tuple[int, bytes]:
        """POST the batch; (status, body). Every way the exchange can fail is a :class:`HubFault`."""
        url = self.config.hub.url
        try:
            async with asyncio.timeout(self._deadline_s):
                async with self._client.stream("POST", SYNC_PATH, content=body) as resp:
                    encoding = resp.headers.get("content-encoding", "identity").strip().lower()
                    if encoding not in ("", "identity"):
                        raise HubFault("malformed_ack", f"hub {url} answered with content-encoding {encoding!r}, "
                                                        "which the edge did not ask for")
                    return resp.status_code, await read_capped(resp, MAX_RESPONSE_BYTES)
        except TimeoutError as exc:
            raise HubFault("timeout", f"hub {url} did not answer within {self._deadline_s:g} s") from exc
        except httpx.TimeoutException as exc:
            raise HubFault("timeout", f"hub {url} timed out ({type(exc).__name__})") from exc
        except ResponseTooLarge as exc:
            raise HubFault("too_large", str(exc)) from exc
        except HubCertificateMismatch as exc:
            raise HubFault("tls", str(exc)) from exc
        except httpx.ConnectError as exc:
            tls = _tls_reason(exc)
            if tls:
                raise HubFault("tls", f"hub {url}: TLS: {tls}") from exc
            raise HubFault("unreachable", f"hub {url} unreachable: {exc or type(exc).__name__}") from exc
        except (httpx.HTTPError, OSError) as exc:  # reset, protocol error, broken stream
            tls = _tls_reason(exc)
            if tls:
                raise HubFault("tls", f"hub {url}: TLS: {tls}") from exc
            raise HubFault("connection", f"hub {url}: {type(exc).__name__}: {exc}") from exc

    def _leave_out(self, name: str, batch: SyncBatch) -> bool:
        """The hub refused an optional field it does not know: send without it for a while.
        False if the batch did not carry it (so this is no reason to try again)."""
        carried = {"ot_logs": batch.ot_logs is not None, "buffer_id": batch.buffer_id is not None,
                   "health": batch.health is not None, "live": batch.live is not None,
                   "after": any(r is not None and r.after is not None
                                for r in (batch.readings, batch.events, batch.ot_logs))}
        if not carried[name]:
            return False
        until = time.monotonic() + (self.OT_LOGS_RETRY_S if name == "ot_logs" else self.OPTIONAL_RETRY_S)
        if name == "ot_logs":
            self._ot_logs_refused_until = until
            self.stats.ot_logs_refused = "the hub does not take OT log entries (an older hub?)"
            log.warning("hub %s does not take OT log entries (an older version?): syncing without them; "
                        "they stay buffered and are offered again every %g s", self.config.hub.url,
                        self.OT_LOGS_RETRY_S)
        else:
            self._lacks[name] = until
            log.warning("hub %s does not know `%s` (an older version?): syncing without it", self.config.hub.url,
                        name)
        return True

    def _conflict(self, body: bytes, runs: dict, acked: dict[str, int], live: ReadingRun | None = None,
                  held: int = 0) -> None:
        """A 409: the hub says a run does not continue what it holds. Keep its marks to declare the
        gap (or send from where the run starts) next time, and its live range as the live lane's
        start; always raises a ``sequence`` fault."""
        try:
            conflict = decode_conflict(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise HubFault("sequence", f"hub refused the batch's sequence (409) without its marks: "
                                       f"{_excerpt(body)}") from exc
        notes = []
        for name in _STREAMS:
            run = runs[name]
            if run is None:
                continue
            mark = getattr(conflict, f"{name}_acked_through")
            last = run.last_seq
            if name == "readings":  # the mark may have jumped over the live range acknowledged before
                last = max(last, held, live.last_seq if live is not None else 0)
            if mark > last:  # beyond what this batch sent: not believed, nothing declared
                self._hub_marks.pop(name, None)
                raise HubFault("hub_ahead", f"hub claims to hold {name} through {mark}, beyond the "
                                            f"{run.first_seq}..{last} this batch sent; the data stays here")
            self._hub_marks[name] = mark
            if mark < acked[name]:
                notes.append(f"the hub holds {name} through {mark} only, but acknowledged them through "
                             f"{acked[name]} before")
            if mark < run.first_seq - 1:  # everything below first_seq is gone from the buffer
                notes.append(f"the next batch declares {name} {mark + 1}..{run.first_seq - 1} lost")
        sent = max((r.last_seq for r in (runs["readings"], live) if r is not None), default=None)
        if sent is not None:  # the live range it holds: its end believed only within what this batch sent
            lo, hi = conflict.live_lo, conflict.live_hi
            if (lo or hi) and not conflict.readings_acked_through + 1 < lo <= hi:
                raise HubFault("hub_ahead", f"hub claims to hold a live range {lo}..{hi}, which does not lie past "
                                            f"the readings {conflict.readings_acked_through} it holds; the data "
                                            "stays here")
            self._hub_live = (lo, hi if hi <= sent else UNCONFIRMED)
            if lo:
                notes.append(f"the hub holds the live range {lo}..{hi}: the live lane continues it")
        raise HubFault("sequence", "; ".join([f"hub refused the batch's sequence (409): {conflict.detail[:300]}",
                                              *notes]))

    def _check_ack(self, body: bytes, runs: dict, acked: dict[str, int], live: ReadingRun | None = None,
                   held: tuple[int, int] = (0, 0)) -> SyncAck:
        """``held``: the live lane's start and the end of the live range the hub acknowledged before
        (the mark may jump to it, when the readings run reached the lane's start)."""
        try:
            ack = decode_ack(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise HubFault("malformed_ack", f"hub answered with something that is not a sync ack ({exc}): "
                                            f"{_excerpt(body)}") from exc
        ident = self.config.identity
        if ack.edge_id != ident.edge_id:
            raise HubFault("wrong_edge", f"hub acked edge {ack.edge_id!r}, expected {ident.edge_id!r}")
        for name in _STREAMS:
            run = runs[name]
            if run is None:
                continue
            through = getattr(ack, f"{name}_acked_through")
            last = run.last_seq
            if name == "readings":
                last = max(last, held[1], live.last_seq if live is not None else 0)
                if through > run.last_seq and held[0] and run.last_seq != held[0] - 1:
                    raise HubFault("ack_beyond_sent", f"hub acked readings through {through}, past this batch's "
                                                      f"backlog run {run.first_seq}..{run.last_seq}, which does not "
                                                      f"reach the live lane's start {held[0]}; nothing forgotten")
            if through > last:
                raise HubFault("ack_beyond_sent", f"hub acked {name} through {through}, but this batch sent "
                                                  f"{run.first_seq}..{last}; nothing forgotten")
            if through < acked[name]:
                raise HubFault("ack_below_acked", f"hub acked {name} through {through}, but it had acknowledged "
                                                  f"them through {acked[name]} before")
            if through < (run.first_seq if run.items else run.first_seq - 1):
                raise HubFault("ack_short", f"hub answered 2xx but acked {name} only through {through}, none of "
                                            f"{run.first_seq}..{run.last_seq}")
        if live is not None:
            if runs["readings"] is None and ack.readings_acked_through > max(live.last_seq, held[1]):
                raise HubFault("ack_beyond_sent", f"hub acked readings through {ack.readings_acked_through}, but "
                                                  f"this batch sent {live.first_seq}..{live.last_seq}")
            self._check_live_ack(ack, live)
        return ack

    @staticmethod
    def _check_live_ack(ack: SyncAck, live: ReadingRun) -> None:
        """The live range in the ack lies past the readings mark, covers the live run's start and
        ends within it; with no range, the mark took the live run in."""
        through = ack.readings_acked_through
        lo, hi = _live_range(ack)
        sent = f"the live run {live.first_seq}..{live.last_seq}"
        if not lo:
            if through < live.first_seq:
                raise HubFault("ack_short", f"hub acked readings through {through} and holds no live range: none of "
                                            f"{sent}")
            return
        if not through + 1 < lo <= hi:
            raise HubFault("malformed_ack", f"hub acked a live range {lo}..{hi} that does not lie past readings "
                                            f"{through}; nothing forgotten")
        if hi > live.last_seq:
            raise HubFault("ack_beyond_sent", f"hub acked a live range {lo}..{hi}, but this batch sent {sent}; "
                                              "nothing forgotten")
        if not lo <= live.first_seq <= hi:
            raise HubFault("ack_short", f"hub acked a live range {lo}..{hi}, which does not hold the start of {sent}")

    def _fault(self, fault: HubFault) -> None:
        stats = self.stats
        stats.failures += 1
        stats.faults[fault.kind] += 1
        if fault.kind != "unreachable":
            stats.hub_faults += 1
        stats.last_error = str(fault)
        stats.last_fault = fault.kind
        stats.hub_up = False
        if fault.kind != self._logged_fault:  # once, and again only when the kind of fault changes
            level = logging.WARNING if fault.kind in ("unreachable", "sequence") else logging.ERROR
            log.log(level, "hub fault (%s): %s; the data stays buffered, retrying with backoff", fault.kind, fault)
            self._logged_fault = fault.kind

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Sync until cancelled. Never raises: a hub fault, or a fault of ours, backs off and goes on
        (the daemon's polling runs beside it in one task group)."""
        interval = self.config.hub.sync_interval_s
        while True:
            try:
                sent = await self.sync_once()
            except HubFault:
                await self._sleep(self._backoff.next_delay())
                continue
            except Exception as exc:  # a bug of ours or a disk error: not a reason to stop polling
                self.stats.failures += 1
                self.stats.faults["internal"] += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if self._logged_fault != "internal":
                    log.exception("sync failed; the data stays buffered, retrying with backoff")
                    self._logged_fault = "internal"
                await self._sleep(self._backoff.next_delay())
                continue
            self._backoff.reset()
            if not sent:  # nothing pending (None), or nothing new acked (0)
                await self._sleep(interval)

    async def _sleep(self, delay: float) -> None:
        self.wake.clear()
        try:
            async with asyncio.timeout(delay):
                await self.wake.wait()
        except TimeoutError:
            pass


def _live_range(ack: SyncAck) -> tuple[int, int]:
    """The live range an ack names ((0, 0): none; hubs from before live runs name none)."""
    lo, hi = ack.live_lo, ack.live_hi
    return (0, 0) if lo is msgspec.UNSET or not lo else (lo, 0 if hi is msgspec.UNSET else hi)


def _status_fault(status: int, body: bytes) -> HubFault:
    if 300 <= status < 400:
        return HubFault("redirect", f"hub answered {status} (a redirect, not followed): {_excerpt(body)}")
    if status >= 500:
        return HubFault("server_error", f"hub error {status}: {_excerpt(body)}")
    if 400 <= status < 500:
        return HubFault("refused", f"hub refused the batch ({status}): {_excerpt(body)}")
    return HubFault("status", f"hub answered {status}, not a sync ack")


def _excerpt(body: bytes, n: int = 300) -> str:
    text = body[:n].decode("utf-8", "replace")
    return repr(text) if not text.isprintable() else text


def _tls_reason(exc: BaseException) -> str:
    """Why TLS failed, if an SSL error is among ``exc``'s causes ("" otherwise)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 10:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return f"the hub's certificate was refused: {cur.verify_message or cur.reason}"
        if isinstance(cur, ssl.SSLError):
            return str(cur.reason or cur)
        cur = cur.__cause__ or cur.__context__
        seen += 1
    return ""
