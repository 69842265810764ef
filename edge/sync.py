"""The sync loop: sends buffered readings, events and OT log entries to the hub, forgets them only
once acked.

A hub from before OT log forwarding refuses a batch with an ``ot_logs`` run (400, unknown field):
the loop then sends the batch again without it, keeps the entries buffered, logs one warning, and
offers them again every ``OT_LOGS_RETRY_S`` (the hub may have been upgraded meanwhile)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import msgspec

from edge.backoff import Backoff
from edge.buffer import Buffer
from protocols.config import FirmwareConfig
from protocols.wire import SYNC_PATH, SyncBatch, decode_ack, encode

log = logging.getLogger(__name__)


class HubRejected(Exception):
    """The hub answered, but refused the batch (4xx): retrying as is will not help by itself."""


@dataclass
class SyncStats:
    batches: int = 0
    readings_sent: int = 0
    events_sent: int = 0
    failures: int = 0
    last_error: str = ""
    last_sync: datetime | None = None
    hub_up: bool | None = None
    renumbered: int = 0
    ot_logs_sent: int = 0
    ot_logs_refused: str = ""  # why the hub does not take OT log entries ("" while it does)
    sizes: list[int] = field(default_factory=list)


class SyncLoop:
    OT_LOGS_RETRY_S = 300.0

    def __init__(self, config: FirmwareConfig, buffer: Buffer, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.buffer = buffer
        hub = config.hub
        headers = {"content-type": "application/json"}
        token = hub.token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._client = client or httpx.AsyncClient(base_url=hub.url.rstrip("/"), timeout=hub.timeout_s, headers=headers)
        self._backoff = Backoff(hub.backoff_initial_s, hub.backoff_max_s)
        self.stats = SyncStats()
        self.wake = asyncio.Event()  # set to sync now (e.g. on a new event)
        self._ot_logs_max = config.ot_logs.batch_max if config.ot_logs is not None else 1_000
        self._ot_logs_refused_until = 0.0  # monotonic; until then OT logs are not offered to this hub

    async def aclose(self) -> None:
        await self._client.aclose()

    async def sync_once(self) -> int | None:
        """Send one batch if anything is pending; return how many items the hub newly acked
        (None: nothing was pending, so the hub was not asked)."""
        readings, events = await asyncio.to_thread(self.buffer.pending, self.config.hub.batch_max_readings)
        ot_logs = None
        if time.monotonic() >= self._ot_logs_refused_until:
            ot_logs = await asyncio.to_thread(self.buffer.pending_ot_logs, self._ot_logs_max)
        if readings is None and events is None and ot_logs is None:
            return None
        ident = self.config.identity
        batch = SyncBatch(edge_id=ident.edge_id, substation=ident.substation, sent_at=datetime.now(UTC),
                          readings=readings, events=events, ot_logs=ot_logs)
        resp = await self._client.post(SYNC_PATH, content=encode(batch))
        if resp.status_code >= 400:
            detail = resp.text[:500]
            if resp.status_code >= 500:
                raise httpx.HTTPStatusError(f"hub error {resp.status_code}: {detail}", request=resp.request,
                                            response=resp)
            if ot_logs is not None and resp.status_code == 400 and "unknown field `ot_logs`" in resp.text:
                self._ot_logs_refused_until = time.monotonic() + self.OT_LOGS_RETRY_S
                self.stats.ot_logs_refused = "the hub does not take OT log entries (an older hub?)"
                log.warning("hub %s does not take OT log entries (an older version?): syncing without them; "
                            "they stay buffered and are offered again every %g s", self.config.hub.url,
                            self.OT_LOGS_RETRY_S)
                if readings is None and events is None:
                    return 0
                return await self.sync_once()
            raise HubRejected(f"hub refused the batch ({resp.status_code}): {detail}")
        try:
            ack = decode_ack(resp.content)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise HubRejected(f"hub answered with something that is not a sync ack: {exc}") from exc
        if ack.edge_id != ident.edge_id:
            raise HubRejected(f"hub acked edge {ack.edge_id!r}, expected {ident.edge_id!r}")
        if ot_logs is not None and self.stats.ot_logs_refused:
            log.info("hub %s takes OT log entries now", self.config.hub.url)
            self.stats.ot_logs_refused = ""
        # The hub holds numbers beyond anything this buffer has made (the box was re-imaged and its
        # buffer began again at 1): acking would discard unsent data, so renumber and resend instead.
        renumbered = False
        for name, run, through in (("readings", readings, ack.readings_acked_through),
                                   ("events", events, ack.events_acked_through),
                                   ("ot_logs", ot_logs, ack.ot_logs_acked_through)):
            if run is not None and through > run.last_seq:
                renumbered |= await asyncio.to_thread(self.buffer.rebase, name, through) > 0
        if renumbered:
            self.stats.renumbered += 1
            return 0
        # OT log entries are forgotten only on an ack of a batch that carried them (a hub that was
        # not sent them says nothing about them)
        await asyncio.to_thread(self.buffer.ack, ack.readings_acked_through, ack.events_acked_through,
                                ack.ot_logs_acked_through if ot_logs is not None else None)
        n_r = len(readings.items) if readings else 0
        n_e = len(events.items) if events else 0
        n_o = len(ot_logs.items) if ot_logs else 0
        self.stats.batches += 1
        self.stats.readings_sent += n_r
        self.stats.events_sent += n_e
        self.stats.ot_logs_sent += n_o
        self.stats.last_sync = datetime.now(UTC)
        if ack.gaps:
            log.warning("hub reports %d sequence numbers missing before this batch", ack.gaps)
        return n_r + n_e + n_o

    async def run(self) -> None:
        interval = self.config.hub.sync_interval_s
        while True:
            try:
                sent = await self.sync_once()
            except (httpx.HTTPError, OSError, HubRejected) as exc:
                self.stats.failures += 1
                self.stats.last_error = str(exc) or type(exc).__name__
                delay = self._backoff.next_delay()
                if self.stats.hub_up is not False:
                    log.error("hub %s unreachable or refusing (%s); buffering, retrying with backoff",
                              self.config.hub.url, self.stats.last_error)
                self.stats.hub_up = False
                await self._sleep(delay)
                continue
            if sent is None:  # nothing to send: the hub was not asked, its state is unchanged
                await self._sleep(interval)
                continue
            if self.stats.hub_up is False:
                log.info("hub %s reachable again; sending the backlog", self.config.hub.url)
            self.stats.hub_up = True
            self._backoff.reset()
            if sent == 0:
                await self._sleep(interval)

    async def _sleep(self, delay: float) -> None:
        self.wake.clear()
        try:
            async with asyncio.timeout(delay):
                await self.wake.wait()
        except TimeoutError:
            pass
