"""The webhook dispatcher: a task of the hub's event loop that reads incidents and POSTs them.

Ingest never calls it. Every ``poll_s`` it reads the incidents changed since its cursor
(``updated_at``) and queues, in its own table, an ``incident.created`` event for an incident it
has not seen and an ``incident.escalated`` event for one whose severity rose, for each webhook
whose least severity the incident reaches (:meth:`WebhookStore.queue`: once per webhook, incident
and severity). Then it leases the deliveries that are due and sends them, each in a task of its
own:

- ``POST`` of the JSON ``{"event", "incident"}`` (the incident as ``GET /incidents/{id}`` serves
  it), with ``X-Sentinel-Signature: sha256=<hex HMAC-SHA256 of the body, keyed with the secret>``,
  ``X-Sentinel-Timestamp`` (seconds since the epoch, at sending), ``X-Sentinel-Delivery`` (the
  delivery's id: the same at every attempt) and ``X-Sentinel-Event``;
- a 2xx delivers it; anything else (another status, a refused connection, no answer within
  ``timeout_s``; redirects are not followed) is retried after ``backoff_s``, doubling each time
  up to ``backoff_cap_s``, until ``max_attempts`` have been made: then it has ``failed``;
- every attempt is recorded (``GET /webhooks/{id}/deliveries``).

At most ``concurrency`` sends at once, and at most ``per_webhook`` of them to one webhook: a
receiver that hangs holds its own slots until its timeout, never another's. A delivery leased to
a send that never finished (the hub stopped, or died) is due again when its lease ends: delivery is
at least once, and a receiver tells a repeat by ``X-Sentinel-Delivery``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from hub.envvars import env_number
from hub.storage.base import IncidentError, Storage
from hub.webhooks.store import Claimed, WebhookStore

__all__ = ["WebhookDispatcher", "WebhookSettings", "sign", "webhook_settings_from_env"]

log = logging.getLogger(__name__)

LEASE_MARGIN_S = 30.0  # a lease outlives the send's timeout by this much (recording it, a slow thread pool)
USER_AGENT = "SmartGrid-Sentinel-Hub"


@dataclass(frozen=True)
class WebhookSettings:
    """How the dispatcher polls and delivers. Retry ``n`` (after attempt ``n`` failed) waits
    ``min(backoff_cap_s, backoff_s * 2 ** (n - 1))``: 1, 2, 4 ... 256, 300, 300 s by default, so 12
    attempts span about 23 minutes."""

    poll_s: float = 1.0  # how often incidents are read for changes, and due deliveries looked for
    timeout_s: float = 5.0  # a receiver's whole answer (connect, send, status line) within this
    backoff_s: float = 1.0
    backoff_cap_s: float = 300.0
    max_attempts: int = 12  # then the delivery has failed
    concurrency: int = 8  # sends at once, all webhooks together
    per_webhook: int = 2  # sends at once to one webhook
    lookback_s: float = 60.0  # incidents re-read before the cursor (a transaction that committed late)

    def __post_init__(self) -> None:
        for name in ("poll_s", "timeout_s", "backoff_s", "backoff_cap_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"webhooks.{name}: must be > 0, not {getattr(self, name)}")
        if self.backoff_cap_s < self.backoff_s:
            raise ValueError(f"webhooks.backoff_cap_s ({self.backoff_cap_s}) is less than backoff_s ({self.backoff_s})")
        for name in ("max_attempts", "concurrency", "per_webhook"):
            if getattr(self, name) < 1:
                raise ValueError(f"webhooks.{name}: must be at least 1, not {getattr(self, name)}")
        if self.lookback_s < 0:
            raise ValueError(f"webhooks.lookback_s: must be >= 0, not {self.lookback_s}")

    def retry_delay(self, attempt: int) -> float | None:
        """Seconds to wait after attempt ``attempt`` (1, 2, ...) failed; None when it was the last."""
        if attempt >= self.max_attempts:
            return None
        return min(self.backoff_cap_s, self.backoff_s * 2.0 ** min(attempt - 1, 60))


def webhook_settings_from_env() -> WebhookSettings:
    """``SENTINEL_WEBHOOK_TIMEOUT_S``, ``_BACKOFF_S``, ``_BACKOFF_CAP_S``, ``_MAX_ATTEMPTS``; ValueError
    naming the variable when one is unusable."""
    values: dict[str, float | int] = {}
    for var, name, kind in (("SENTINEL_WEBHOOK_TIMEOUT_S", "timeout_s", float),
                            ("SENTINEL_WEBHOOK_BACKOFF_S", "backoff_s", float),
                            ("SENTINEL_WEBHOOK_BACKOFF_CAP_S", "backoff_cap_s", float),
                            ("SENTINEL_WEBHOOK_MAX_ATTEMPTS", "max_attempts", int)):
        if (value := env_number(var, whole=kind is int)) is not None:
            values[name] = value
    try:
        return WebhookSettings(**values)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"SENTINEL_WEBHOOK_*: {exc}") from None


def sign(secret: str, body: bytes) -> str:
    """The ``X-Sentinel-Signature`` of ``body``: ``sha256=`` and the hex HMAC-SHA256 keyed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# on_attempt(result, outcome): result "ok" (a 2xx), "http_error" (another status) or "error" (no
# answer); outcome "delivered", "failed" (no attempt left) or None (to be retried)
AttemptHook = Callable[[str, "str | None"], None]


class WebhookDispatcher:
    """Queue and deliver webhook events: ``await run()`` as a task of the hub's loop; cancel it to stop."""

    def __init__(self, storage: Storage, store: WebhookStore, settings: WebhookSettings, *,
                 on_attempt: AttemptHook | None = None) -> None:
        self.storage, self.store, self.settings = storage, store, settings
        self.on_attempt = on_attempt
        self._wake = asyncio.Event()
        self._sends: dict[asyncio.Task[None], Claimed] = {}
        self._in_flight: collections.Counter[str] = collections.Counter()
        self._storage_ok = True
        self._failing: set[str] = set()  # webhooks whose last attempt failed (logged once, until one succeeds)

    async def run(self) -> None:
        timeout = httpx.Timeout(self.settings.timeout_s)
        limits = httpx.Limits(max_connections=self.settings.concurrency, max_keepalive_connections=self.settings.concurrency)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False,
                                     headers={"User-Agent": USER_AGENT}) as client:
            try:
                while True:
                    await self._cycle(client)
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.settings.poll_s):
                            await self._wake.wait()
            finally:
                await self._stop_sends()

    async def _cycle(self, client: httpx.AsyncClient) -> None:
        try:
            await asyncio.to_thread(self.queue_changes)
            free = self.settings.concurrency - len(self._sends)
            claimed = [] if free <= 0 else await asyncio.to_thread(
                self.store.claim, free, per_webhook=self.settings.per_webhook, in_flight=dict(self._in_flight),
                lease_s=self.settings.timeout_s + LEASE_MARGIN_S)
        except Exception as exc:  # the database is down: say so once, keep trying
            if self._storage_ok:
                log.error("webhooks: the storage failed (%s); retrying every %g s", exc, self.settings.poll_s)
                self._storage_ok = False
            return
        if not self._storage_ok:
            log.info("webhooks: the storage answers again")
            self._storage_ok = True
        for c in claimed:
            task = asyncio.create_task(self._send(client, c), name=f"hub.webhooks.{c.webhook_id}.{c.id}")
            self._sends[task] = c
            self._in_flight[c.webhook_id] += 1
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        c = self._sends.pop(task)
        self._in_flight[c.webhook_id] -= 1
        if not self._in_flight[c.webhook_id]:
            del self._in_flight[c.webhook_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("webhooks: delivery %s failed unexpectedly", c.id, exc_info=task.exception())
        self._wake.set()  # a slot is free: the webhook's next delivery may go

    def queue_changes(self) -> int:
        """Read the incidents changed since the cursor and queue their events (blocking: a thread's
        work). Returns how many deliveries were queued."""
        changes, cursor, position = self.store.changes(self.settings.lookback_s)
        if not changes and position <= cursor:
            return 0
        found, gone = [], []
        for change in changes:
            try:
                found.append((change, self.storage.get_incident(change.incident_id)))
            except IncidentError:
                gone.append(change)
        if gone:
            self.store.forget(gone)
        return self.store.queue(found, position)

    async def _send(self, client: httpx.AsyncClient, c: Claimed) -> None:
        headers = {"Content-Type": "application/json", "X-Sentinel-Signature": sign(c.secret, c.body),
                   "X-Sentinel-Timestamp": str(int(time.time())), "X-Sentinel-Delivery": c.id,
                   "X-Sentinel-Event": c.event}
        at, started = time.time(), time.perf_counter()
        status_code: int | None = None
        error = ""
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                async with client.stream("POST", c.url, content=c.body, headers=headers) as answer:
                    status_code = answer.status_code  # the body is not read: a receiver's answer is its status
        except TimeoutError:
            error = f"no answer within {self.settings.timeout_s:g} s"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        except Exception as exc:  # noqa: BLE001  (a URL httpx cannot send to, a TLS setup error: recorded like any failure)
            error = f"{type(exc).__name__}: {exc}".rstrip(": ")
        duration_ms = round((time.perf_counter() - started) * 1000.0, 3)
        delivered = status_code is not None and 200 <= status_code < 300
        if status_code is not None and not delivered:
            error = f"HTTP {status_code}" + (" (redirects are not followed)" if 300 <= status_code < 400 else "")
        delay = None if delivered else self.settings.retry_delay(c.attempt)
        outcome = await asyncio.to_thread(
            self.store.record, c, at=at, duration_ms=duration_ms, status_code=status_code, error=error,
            delivered=delivered, next_retry_at=None if delay is None else time.time() + delay)
        if outcome is None:  # the webhook was deleted meanwhile
            return
        self._log(c, delivered, error, delay)
        if self.on_attempt is not None:
            result = "ok" if delivered else ("http_error" if status_code is not None else "error")
            self.on_attempt(result, outcome if outcome != "pending" else None)

    def _log(self, c: Claimed, delivered: bool, error: str, delay: float | None) -> None:
        """One line when a webhook starts failing, one when it delivers again; a delivery given up, always."""
        if delivered:
            if c.webhook_id in self._failing:
                self._failing.discard(c.webhook_id)
                log.info("webhook %s (%s) delivers again", c.webhook_id, c.url)
            return
        if delay is None:
            log.error("webhook %s (%s): delivery %s failed after %d attempts (last: %s)", c.webhook_id, c.url, c.id,
                      c.attempt, error)
        elif c.webhook_id not in self._failing:
            log.warning("webhook %s (%s): %s; retrying in %g s (and with backoff while it fails)", c.webhook_id,
                        c.url, error, delay)
        self._failing.add(c.webhook_id)

    async def _stop_sends(self) -> None:
        """Cancel the sends in flight and make their deliveries due again at once (not at the lease's end)."""
        sends = list(self._sends.items())
        for task, _ in sends:
            task.cancel()
        await asyncio.gather(*(t for t, _ in sends), return_exceptions=True)
        unfinished = [c.id for t, c in sends if t.cancelled()]
        if unfinished:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.store.release, unfinished)
