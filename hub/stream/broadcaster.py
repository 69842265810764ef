"""The stream's broadcaster: one reader of the hub's state for every WebSocket client.

The state is the seed's message, ``{grid_status, alerts, forecasts, maintenance_predictions}``:
the grid status (:func:`hub.fleet.grid_status`), the incidents not resolved yet (newest first),
the latest demand forecast per feeder (its next 24 hours, as ``GET /forecast/next-24h``) and
maintenance prediction per transformer (as ``GET /maintenance``). The broadcaster reads it when
woken (:meth:`Broadcaster.notify`: new data was stored, a liveness check changed something), at
most every ``min_gap_s`` (but ``URGENT_GAP_S`` after a notification that new events or incidents
were stored: under load the stream reads every ``min_gap_s``, and a new incident waited out that gap
before anyone saw it), and at least every ``poll_s`` while a client is connected (to see what
changes without a notification: an incident's status, the agents' products). A read after new
events or incidents takes the agents' products from the last read if that is under ``poll_s`` old.
It reads it once per change for all clients, encodes it once per substation filter, and sends a
filter's clients an ``update`` only when their part changed (``last_seen`` and ``as_of`` moving on
are no change).

Each client has a slot of one message, not a queue: a newer update replaces one the client has not
taken yet (counted: ``sentinel_hub_ws_updates_coalesced_total``). A slow or stuck client therefore
holds one message of memory, never holds up the others or the hub, and gets the latest state when it
reads again, not a backlog.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec

from hub.envvars import env_number
from hub.insights.products import forecast_window
from hub.fleet import Liveness, SubstationStatus, active_incidents, grid_status
from hub.storage.base import Incident, Storage

__all__ = ["Broadcaster", "Client", "GridState", "StreamSettings", "encode_message", "read_state",
           "stream_settings_from_env"]

log = logging.getLogger(__name__)

Filter = frozenset[str] | None  # the substations a client asked for (None: all)
URGENT_GAP_S = 0.02  # the least time between reads when new incidents wait to be seen


@dataclass(frozen=True)
class StreamSettings:
    heartbeat_s: float = 15.0  # a heartbeat after this long without a message (SENTINEL_WS_HEARTBEAT_S)
    poll_s: float = 1.0  # the state is read at least this often while a client is connected
    min_gap_s: float = 0.2  # and at most this often: notifications in a burst make one read
    max_alerts: int = 200  # incidents per message, newest first
    send_timeout_s: float = 60.0  # a client that takes no message for this long is disconnected

    def __post_init__(self) -> None:
        for name in ("heartbeat_s", "poll_s", "send_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"stream: {name} must be > 0, not {getattr(self, name)}")
        if self.min_gap_s < 0 or self.max_alerts < 1:
            raise ValueError("stream: min_gap_s must be >= 0 and max_alerts >= 1")


def stream_settings_from_env(environ: Mapping[str, str] | None = None) -> StreamSettings:
    """``SENTINEL_WS_HEARTBEAT_S``; a ValueError naming it when unusable."""
    value = env_number("SENTINEL_WS_HEARTBEAT_S", environ, above=0)
    if value is None:
        return StreamSettings()
    return StreamSettings(heartbeat_s=value)


class StreamMetrics(Protocol):
    """What the broadcaster counts (:class:`hub.metrics.HubMetrics`)."""

    def ws_client(self, delta: int) -> None: ...

    def ws_coalesced(self) -> None: ...


@dataclass(frozen=True)
class GridState:
    """The hub's state as read once: ``seq`` orders the reads."""

    seq: int
    read_at: datetime
    grid_status: dict[str, SubstationStatus]
    alerts: list[Incident]
    forecasts: list[tuple[str, dict[str, Any]]]  # (substation, forecast)
    maintenance: list[tuple[str, dict[str, Any]]]  # (substation, prediction)


def read_state(storage: Storage, liveness: Liveness, seq: int = 0, now: datetime | None = None, *,
               products: GridState | None = None) -> GridState:
    """Read the state (blocking: storage); with ``products``, its forecasts and maintenance
    predictions are taken from there instead of read."""
    now = now or datetime.now(UTC)
    active = active_incidents(storage)
    if products is not None:
        forecasts, maintenance = products.forecasts, products.maintenance
    else:
        forecasts = [(d.key.split("/", 1)[0], forecast_window(d.body, 24, now))
                     for d in storage.latest_documents("forecast")]
        maintenance = [(d.key.split("/", 1)[0], d.body) for d in storage.latest_documents("maintenance")]
    return GridState(seq=seq, read_at=now, grid_status=grid_status(storage, liveness, now=now, active=active),
                     alerts=active, forecasts=forecasts, maintenance=maintenance)


def message_body(state: GridState, substations: Filter, max_alerts: int) -> dict[str, Any]:
    """The seed's four fields of ``state``, for the substations asked (None: all)."""
    def mine(sub: str) -> bool:
        return substations is None or sub in substations

    return {
        "grid_status": {k: v for k, v in state.grid_status.items() if mine(k)},
        "alerts": [i for i in state.alerts if mine(i.substation)][:max_alerts],
        "forecasts": [body for sub, body in state.forecasts if mine(sub)],
        "maintenance_predictions": [body for sub, body in state.maintenance if mine(sub)],
    }


def fingerprint(body: dict[str, Any]) -> bytes:
    """What makes a change: the body without the times that move on without one (a substation's
    ``last_seen``, the grid monitor's ``as_of``)."""
    steady = {k: msgspec.structs.replace(v, last_seen=None, as_of=None) for k, v in body["grid_status"].items()}
    return hashlib.blake2b(msgspec.json.encode({**body, "grid_status": steady}), digest_size=16).digest()


def encode_message(kind: str, at: datetime, substations: Filter, body: dict[str, Any] | None = None) -> bytes:
    """One message: ``type`` (snapshot, update, heartbeat), ``timestamp``, the ``substations`` asked
    (null: all) and, but for a heartbeat, the seed's four fields."""
    head: dict[str, Any] = {"type": kind, "timestamp": at, "substations": sorted(substations) if substations else None}
    return msgspec.json.encode(head if body is None else {**head, **body})


class Client:
    """One connected client: its filter and a slot of one message."""

    def __init__(self, substations: Filter) -> None:
        self.substations = substations
        self.ready = asyncio.Event()
        self.seq = -1  # the newest state it was given
        self.fingerprint = b""
        self._slot: bytes | None = None

    def offer(self, message: bytes, seq: int, fp: bytes) -> bool:
        """Put ``message`` in the slot; True if it replaced one the client had not taken."""
        replaced = self._slot is not None
        self._slot, self.seq, self.fingerprint = message, seq, fp
        self.ready.set()
        return replaced

    def take(self) -> bytes | None:
        message, self._slot = self._slot, None
        self.ready.clear()
        return message


class Broadcaster:
    """Reads the state for all clients and hands each the latest. Made on the event loop it runs on."""

    def __init__(self, storage: Storage, liveness: Liveness, settings: StreamSettings | None = None, *,
                 metrics: StreamMetrics | None = None) -> None:
        self.storage = storage
        self.liveness = liveness
        self.settings = settings or StreamSettings()
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self._clients: set[Client] = set()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()  # new events or incidents: the next read comes without the gap
        self._reading = asyncio.Lock()  # one read at a time: seq follows the order of the reads
        self._seq = 0
        self._failing = False
        self._products: GridState | None = None  # the last read of the agents' products
        self._products_at = -math.inf  # monotonic: when

    @property
    def clients(self) -> int:
        return len(self._clients)

    def notify(self, urgent: bool = False) -> None:
        """Something changed: read the state soon; ``urgent`` (new events or incidents were stored):
        without waiting out ``min_gap_s``. On the loop's thread."""
        self._wake.set()
        if urgent:
            self._urgent.set()

    def notify_threadsafe(self, urgent: bool = False) -> None:
        """:meth:`notify` from any thread (request handlers in worker threads, the liveness check)."""
        self.loop.call_soon_threadsafe(self.notify, urgent)

    async def read(self, urgent: bool = False) -> GridState:
        """The state read now. An ``urgent`` read (new events or incidents) takes the agents'
        products (forecasts, maintenance predictions) from the last read if that is less than
        ``poll_s`` old: they change once an agent cycle, and with a forecast per feeder they were
        most of a read (2,500 forecasts under the benchmark's load), which a new incident waited for."""
        async with self._reading:
            self._seq += 1
            reuse = urgent and time.monotonic() - self._products_at < self.settings.poll_s
            started = time.monotonic()
            state = await asyncio.to_thread(read_state, self.storage, self.liveness, self._seq,
                                            products=self._products if reuse else None)
            if not reuse:
                self._products, self._products_at = state, started
            return state

    async def connect(self, substations: Filter) -> tuple[Client, bytes]:
        """A new client and its ``snapshot``: the state read now."""
        client = Client(substations)
        self._clients.add(client)
        if self.metrics is not None:
            self.metrics.ws_client(+1)
        try:
            state = await self.read()
        except BaseException:
            self.disconnect(client)
            raise
        body = message_body(state, substations, self.settings.max_alerts)
        client.seq, client.fingerprint = state.seq, fingerprint(body)
        return client, encode_message("snapshot", state.read_at, substations, body)

    def disconnect(self, client: Client) -> None:
        if client in self._clients:
            self._clients.discard(client)
            if self.metrics is not None:
                self.metrics.ws_client(-1)

    def publish(self, state: GridState) -> int:
        """Offer ``state`` to every client whose part of it changed; returns how many were offered it."""
        groups: dict[Filter, list[Client]] = {}
        for client in self._clients:
            groups.setdefault(client.substations, []).append(client)
        offered = 0
        for substations, clients in groups.items():
            body = message_body(state, substations, self.settings.max_alerts)
            fp = fingerprint(body)
            message = None
            for client in clients:
                if client.seq >= state.seq or client.fingerprint == fp:
                    continue
                if message is None:  # encoded once per filter
                    message = encode_message("update", state.read_at, substations, body)
                if client.offer(message, state.seq, fp) and self.metrics is not None:
                    self.metrics.ws_coalesced()
                offered += 1
        return offered

    async def run(self) -> None:
        """Read and publish until cancelled: when notified, and every ``poll_s`` while anyone listens."""
        s = self.settings
        while True:
            try:
                async with asyncio.timeout(s.poll_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            urgent = self._urgent.is_set()
            self._urgent.clear()  # what it was for is stored: this read sees it
            if not self._clients:
                continue
            try:
                state = await self.read(urgent)
            except Exception as exc:  # the database is down: say so once, keep the clients, try again
                if not self._failing:
                    log.error("stream: reading the grid state failed: %s (retrying)", exc, exc_info=exc)
                    self._failing = True
                continue
            if self._failing:
                log.info("stream: reading the grid state works again")
                self._failing = False
            self.publish(state)
            try:  # min_gap_s between reads, cut short by new incidents
                async with asyncio.timeout(s.min_gap_s):
                    await self._urgent.wait()
                await asyncio.sleep(URGENT_GAP_S)
            except TimeoutError:
                pass
