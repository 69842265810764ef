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
from protocols.wire import SYNC_PATH, EdgeHealth, SyncAck, SyncBatch, decode_ack, decode_conflict, encode

__all__ = ["HubFault", "SyncLoop", "SyncStats"]

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 64 * 1024  # an ack or a refusal is a few hundred bytes
DEADLINE_FACTOR = 3  # a whole sync request, upload included, gets this many hub.timeout_s

_STREAMS = ("readings", "events", "ot_logs")
_UNKNOWN_FIELD = re.compile(r"unknown field `(ot_logs|buffer_id|after|health)`")


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


class SyncLoop:
    OT_LOGS_RETRY_S = 300.0
    OPTIONAL_RETRY_S = 300.0  # how long a hub that refused buffer_id / after is sent batches without them

    HEALTH_EVERY_S = 30.0  # a health report rides with a sync at most this often

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

    async def _sync_once(self) -> int | None:
        readings, events = await asyncio.to_thread(self.buffer.pending, self.config.hub.batch_max_readings)
        ot_logs = None
        if time.monotonic() >= self._ot_logs_refused_until:
            ot_logs = await asyncio.to_thread(self.buffer.pending_ot_logs, self._ot_logs_max)
        if readings is None and events is None and ot_logs is None:
            return None
        acked = await asyncio.to_thread(self.buffer.acked_through)
        health = None
        if self._health is not None and time.monotonic() - self._health_sent >= self.HEALTH_EVERY_S:
            health = await asyncio.to_thread(self._health)
        while True:
            runs = {"readings": readings, "events": events, "ot_logs": ot_logs}
            batch = self._batch(runs, acked)
            if health is not None and self._lacks.get("health", 0.0) <= time.monotonic():
                batch = msgspec.structs.replace(batch, health=health)
            status, body = await self._post(encode(batch))
            if 200 <= status < 300:
                break
            if status == 409:
                self._conflict(body, runs, acked)  # raises
            unknown = _UNKNOWN_FIELD.search(body.decode("utf-8", "replace")) if status == 400 else None
            if unknown is None or not self._leave_out(unknown[1], batch):
                raise _status_fault(status, body)
            if unknown[1] == "ot_logs":
                ot_logs = None
                if readings is None and events is None:
                    return 0
        ack = self._check_ack(body, runs, acked)
        if batch.health is not None:
            self._health_sent = time.monotonic()
        through = {name: getattr(ack, f"{name}_acked_through") if runs[name] is not None else None
                   for name in _STREAMS}
        try:
            await asyncio.to_thread(self.buffer.ack, through["readings"], through["events"], through["ot_logs"])
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
                   "health": batch.health is not None,
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

    def _conflict(self, body: bytes, runs: dict, acked: dict[str, int]) -> None:
        """A 409: the hub says a run does not continue what it holds. Keep its marks to declare the
        gap (or send from where the run starts) next time; always raises a ``sequence`` fault."""
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
            if mark > run.last_seq:  # beyond what this batch sent: not believed, nothing declared
                self._hub_marks.pop(name, None)
                raise HubFault("hub_ahead", f"hub claims to hold {name} through {mark}, beyond the "
                                            f"{run.first_seq}..{run.last_seq} this batch sent; the data stays here")
            self._hub_marks[name] = mark
            if mark < acked[name]:
                notes.append(f"the hub holds {name} through {mark} only, but acknowledged them through "
                             f"{acked[name]} before")
            if mark < run.first_seq - 1:  # everything below first_seq is gone from the buffer
                notes.append(f"the next batch declares {name} {mark + 1}..{run.first_seq - 1} lost")
        raise HubFault("sequence", "; ".join([f"hub refused the batch's sequence (409): {conflict.detail[:300]}",
                                              *notes]))

    def _check_ack(self, body: bytes, runs: dict, acked: dict[str, int]) -> SyncAck:
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
            if through > run.last_seq:
                raise HubFault("ack_beyond_sent", f"hub acked {name} through {through}, but this batch sent "
                                                  f"{run.first_seq}..{run.last_seq}; nothing forgotten")
            if through < acked[name]:
                raise HubFault("ack_below_acked", f"hub acked {name} through {through}, but it had acknowledged "
                                                  f"them through {acked[name]} before")
            if through < run.first_seq:
                raise HubFault("ack_short", f"hub answered 2xx but acked {name} only through {through}, none of "
                                            f"{run.first_seq}..{run.last_seq}")
        return ack

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
