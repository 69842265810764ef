"""Webhooks, their delivery queue and log, kept in the hub's own database (SQLite or PostgreSQL).

Tables of this module only, created and used through ``storage.transaction()`` (``?``
placeholders on both backends, as :mod:`hub.auth.store` does):

- ``webhooks``: the receivers admins registered: URL, signing secret (kept in clear: the hub signs
  with it), least severity sent.
- ``webhook_deliveries``: one row per event per webhook, unique on (webhook, incident, severity):
  an incident reaching a severity is queued for a webhook once, whatever restarts happen. The body
  is kept as first sent, so every attempt sends (and signs) the same bytes.
- ``webhook_attempts``: every POST of a delivery: status code or error, duration, next retry.
- ``webhook_incidents``: the severity the dispatcher last saw of each incident (an escalation is a
  severity above it; an incident it never saw is new), and ``webhook_cursor``: how far through the
  incidents' ``updated_at`` it has read. Both are written in the transaction that queues the
  deliveries, so a restart neither loses nor repeats an event.

The incidents table is read, never written: ``updated_at`` (indexed here) finds what changed.
Times in this module's tables are seconds since the epoch (``DOUBLE PRECISION``), as the auth
tables keep them.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from hub.storage.base import SqlTx, Storage, incident_id
from hub.webhooks.schemas import Delivery, DeliveryAttempt, Payload, Webhook, WebhookCreated
from protocols.incident import Incident
from protocols.wire import SEVERITIES

__all__ = ["Change", "Claimed", "WebhookStore", "rank"]

_LOCK = 0x5E_B00C  # advisory lock key serialising queueing (and table creation) across hub processes on PostgreSQL
CURSOR = "incidents"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS webhooks (
        id TEXT PRIMARY KEY,              -- whk_...
        url TEXT NOT NULL,
        secret TEXT NOT NULL,             -- in clear: the hub signs each body with it
        min_severity TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id TEXT PRIMARY KEY,              -- dlv_...: the X-Sentinel-Delivery header
        webhook_id TEXT NOT NULL,
        incident_number BIGINT NOT NULL,
        incident_id TEXT NOT NULL,
        severity TEXT NOT NULL,
        event TEXT NOT NULL,              -- incident.created | incident.escalated
        body TEXT NOT NULL,               -- the JSON sent (and signed) at every attempt
        status TEXT NOT NULL,             -- pending | delivered | failed
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION, -- pending: due then (or leased to a sender until then)
        delivered_at DOUBLE PRECISION,
        UNIQUE (webhook_id, incident_number, severity)
    )""",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (webhook_id, status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS webhook_deliveries_created ON webhook_deliveries (webhook_id, created_at)",
    """CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        duration_ms DOUBLE PRECISION NOT NULL,
        status_code INTEGER,
        error TEXT NOT NULL,
        next_retry_at DOUBLE PRECISION,
        PRIMARY KEY (delivery_id, attempt)
    )""",
    """CREATE TABLE IF NOT EXISTS webhook_incidents (
        number BIGINT PRIMARY KEY,        -- the incident's
        severity TEXT NOT NULL            -- as the dispatcher last saw it
    )""",
    """CREATE TABLE IF NOT EXISTS webhook_cursor (
        name TEXT PRIMARY KEY,
        position DOUBLE PRECISION NOT NULL -- incidents.updated_at read through, seconds since the epoch
    )""",
    # the storage's incidents table, read by updated_at at every poll
    "CREATE INDEX IF NOT EXISTS incidents_updated_at ON incidents (updated_at)",
)


def rank(severity: str) -> int:
    """INFO 0 < WARNING 1 < CRITICAL 2 < EMERGENCY 3 (the one vocabulary, :data:`protocols.wire.SEVERITIES`)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


@dataclass(frozen=True, slots=True)
class Change:
    """An incident whose severity the dispatcher has not seen yet (``seen`` None: a new incident)."""

    number: int
    incident_id: str
    severity: str
    seen: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to one sender: what to POST, where, and which attempt this is."""

    id: str
    webhook_id: str
    url: str
    secret: str
    event: str
    body: bytes
    attempt: int


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class WebhookStore:
    """Webhooks and their deliveries over a hub :class:`Storage`. Thread-safe (each method is one
    transaction).

    ``watch``: a dispatcher will read the incidents. The first time, the incidents held are taken
    as seen (old news, not delivered); from then on the cursor moves only as events are queued, so
    what changes while the hub is down is delivered when it is back."""

    def __init__(self, storage: Storage, *, watch: bool = True) -> None:
        self.storage = storage
        with storage.transaction() as tx:
            tx.lock(_LOCK)  # two hub processes creating the tables at once
            for ddl in SCHEMA:
                tx.execute(ddl)
            if watch and tx.execute("SELECT 1 FROM webhook_cursor WHERE name = ?", (CURSOR,)).fetchone() is None:
                tx.execute("INSERT INTO webhook_incidents (number, severity) SELECT number, severity FROM incidents"
                           " WHERE true ON CONFLICT (number) DO NOTHING")
                last = tx.execute("SELECT max(updated_at) FROM incidents").fetchone()[0]
                tx.execute("INSERT INTO webhook_cursor (name, position) VALUES (?, ?)",
                           (CURSOR, _epoch(last) if last is not None else time.time()))

    # -- webhooks -----------------------------------------------------------------------------

    def create(self, url: str, min_severity: str, *, secret: str | None = None,
               created_by: str = "") -> WebhookCreated:
        secret = secret or f"whsec_{secrets.token_urlsafe(32)}"
        hook_id = f"whk_{secrets.token_hex(6)}"
        now = time.time()
        with self.storage.transaction() as tx:
            tx.execute("INSERT INTO webhooks (id, url, secret, min_severity, created_at, created_by)"
                       " VALUES (?,?,?,?,?,?)", (hook_id, url, secret, min_severity, now, created_by))
        return WebhookCreated(id=hook_id, url=url, min_severity=min_severity, created_at=_utc(now),  # type: ignore[arg-type]
                              created_by=created_by, secret=secret)

    def webhooks(self) -> list[Webhook]:
        with self.storage.transaction() as tx:
            rows = tx.execute("SELECT id, url, min_severity, created_at, created_by FROM webhooks"
                              " ORDER BY created_at, id").fetchall()
        return [Webhook(id=r[0], url=r[1], min_severity=r[2], created_at=_utc(r[3]), created_by=r[4])  # type: ignore[arg-type]
                for r in rows]

    def get(self, hook_id: str) -> Webhook | None:
        return next((h for h in self.webhooks() if h.id == hook_id), None)

    def delete(self, hook_id: str) -> Webhook | None:
        """Remove a webhook with its deliveries and their attempts; None if there is no such webhook.
        An attempt in flight finishes, and is not recorded."""
        hook = self.get(hook_id)
        if hook is None:
            return None
        with self.storage.transaction() as tx:
            tx.execute("DELETE FROM webhook_attempts WHERE delivery_id IN"
                       " (SELECT id FROM webhook_deliveries WHERE webhook_id = ?)", (hook_id,))
            tx.execute("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (hook_id,))
            if not tx.execute("DELETE FROM webhooks WHERE id = ?", (hook_id,)).rowcount:
                return None
        return hook

    def deliveries(self, hook_id: str, *, status: str | None = None, limit: int = 100) -> list[Delivery]:
        """Newest first, each with its attempts, oldest first."""
        q = ("SELECT id, webhook_id, event, incident_id, severity, status, created_at, next_attempt_at, delivered_at"
             " FROM webhook_deliveries WHERE webhook_id = ?")
        params: list[Any] = [hook_id]
        if status:
            q += " AND status = ?"
            params.append(status)
        with self.storage.transaction() as tx:
            rows = tx.execute(q + " ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit]).fetchall()
            attempts: dict[str, list[DeliveryAttempt]] = {r[0]: [] for r in rows}
            if rows:
                ids = list(attempts)
                for a in tx.execute("SELECT delivery_id, attempt, at, duration_ms, status_code, error, next_retry_at"
                                    f" FROM webhook_attempts WHERE delivery_id IN ({','.join('?' * len(ids))})"
                                    " ORDER BY delivery_id, attempt", ids).fetchall():
                    attempts[a[0]].append(DeliveryAttempt(attempt=a[1], at=_utc(a[2]), duration_ms=a[3],  # type: ignore[arg-type]
                                                          status_code=a[4], error=a[5], next_retry_at=_utc(a[6])))
        return [Delivery(id=r[0], webhook_id=r[1], event=r[2], incident_id=r[3], severity=r[4], status=r[5],
                         created_at=_utc(r[6]), next_attempt_at=_utc(r[7]) if r[5] == "pending" else None,  # type: ignore[arg-type]
                         delivered_at=_utc(r[8]), attempts=attempts[r[0]]) for r in rows]

    # -- the dispatcher's side ----------------------------------------------------------------

    def changes(self, lookback_s: float, limit: int = 500) -> tuple[list[Change], float, float]:
        """Incidents changed since the cursor (less ``lookback_s``: a transaction that committed late
        with an earlier ``updated_at``) whose severity differs from the one last seen; the cursor;
        and the position to move it to once they are queued."""
        with self.storage.transaction() as tx:
            cursor = tx.execute("SELECT position FROM webhook_cursor WHERE name = ?", (CURSOR,)).fetchone()[0]
            since = _param(tx, cursor - lookback_s)
            newest = tx.execute("SELECT max(updated_at) FROM incidents WHERE updated_at >= ?", (since,)).fetchone()[0]
            rows = tx.execute(
                "SELECT i.number, i.ts, i.severity, s.severity, i.updated_at FROM incidents i"
                " LEFT JOIN webhook_incidents s ON s.number = i.number"
                " WHERE i.updated_at >= ? AND (s.severity IS NULL OR s.severity <> i.severity)"
                " ORDER BY i.updated_at, i.number LIMIT ?", (since, limit)).fetchall()
        out = [Change(number=r[0], incident_id=incident_id(_year(r[1]), r[0]), severity=r[2], seen=r[3],
                      updated_at=_epoch(r[4])) for r in rows]
        if len(out) == limit:  # more to read: resume from the last one read
            return out, cursor, max(cursor, out[-1].updated_at)
        return out, cursor, max(cursor, _epoch(newest) if newest is not None else cursor)

    def queue(self, incidents: Sequence[tuple[Change, Incident]], position: float) -> int:
        """Queue each incident's event for every webhook whose least severity it reaches, remember
        the severities seen and move the cursor, in one transaction. The incident as read after the
        scan is what counts (it may have escalated since). Returns how many deliveries were queued."""
        now = time.time()
        queued = 0
        with self.storage.transaction() as tx:
            tx.lock(_LOCK)  # another hub process queueing the same changes: one of them does
            hooks = tx.execute("SELECT id, min_severity FROM webhooks").fetchall()
            for change, incident in incidents:
                seen = tx.execute("SELECT severity FROM webhook_incidents WHERE number = ?",
                                  (change.number,)).fetchone()
                event = None
                if seen is None:
                    event = "incident.created"
                elif rank(incident.severity) > rank(seen[0]):
                    event = "incident.escalated"
                if event is not None:
                    body = msgspec.json.encode(Payload(event=event, incident=incident)).decode()  # type: ignore[arg-type]
                    for hook_id, min_severity in hooks:
                        if rank(incident.severity) < rank(min_severity):
                            continue
                        queued += tx.execute(
                            "INSERT INTO webhook_deliveries (id, webhook_id, incident_number, incident_id, severity,"
                            " event, body, status, attempts, created_at, next_attempt_at) VALUES"
                            " (?,?,?,?,?,?,?,'pending',0,?,?) ON CONFLICT (webhook_id, incident_number, severity)"
                            " DO NOTHING",
                            (f"dlv_{secrets.token_hex(8)}", hook_id, change.number, incident.id, incident.severity,
                             event, body, now, now)).rowcount
                if seen is None or rank(incident.severity) > rank(seen[0]):
                    tx.execute("INSERT INTO webhook_incidents (number, severity) VALUES (?, ?) ON CONFLICT (number)"
                               " DO UPDATE SET severity = excluded.severity", (change.number, incident.severity))
            tx.execute("UPDATE webhook_cursor SET position = ? WHERE name = ? AND position < ?",
                       (position, CURSOR, position))
        return queued

    def forget(self, changes: Sequence[Change]) -> None:
        """Incidents read as changed that are gone (no such incident): seen as they were, not news."""
        with self.storage.transaction() as tx:
            for c in changes:
                tx.execute("INSERT INTO webhook_incidents (number, severity) VALUES (?, ?) ON CONFLICT (number)"
                           " DO UPDATE SET severity = excluded.severity", (c.number, c.severity))

    def claim(self, total: int, *, per_webhook: int, in_flight: Mapping[str, int], lease_s: float) -> list[Claimed]:
        """Lease up to ``total`` due deliveries to this sender until ``now + lease_s`` (a sender that
        dies mid-send leaves them due again then): per webhook at most ``per_webhook`` less those
        already in flight, webhooks in random order, so one webhook's backlog cannot take every slot."""
        now = time.time()
        out: list[Claimed] = []
        with self.storage.transaction() as tx:
            hooks = tx.execute("SELECT id, url, secret FROM webhooks").fetchall()
            random.shuffle(hooks)
            for hook_id, url, secret in hooks:
                n = min(per_webhook - in_flight.get(hook_id, 0), total - len(out))
                if n <= 0:
                    continue
                rows = tx.execute("SELECT id, event, body, attempts FROM webhook_deliveries WHERE webhook_id = ?"
                                  " AND status = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at"
                                  " LIMIT ?", (hook_id, now, n)).fetchall()
                for d_id, event, body, attempts in rows:
                    if tx.execute("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ? AND status = 'pending'"
                                  " AND next_attempt_at <= ?", (now + lease_s, d_id, now)).rowcount:
                        out.append(Claimed(id=d_id, webhook_id=hook_id, url=url, secret=secret, event=event,
                                           body=body.encode(), attempt=attempts + 1))
        return out

    def record(self, claimed: Claimed, *, at: float, duration_ms: float, status_code: int | None, error: str,
               delivered: bool, next_retry_at: float | None) -> str | None:
        """Record one attempt and its outcome: ``delivered``, ``pending`` (retried at
        ``next_retry_at``) or ``failed`` (no retry left); None if the delivery is gone (its webhook
        was deleted meanwhile)."""
        status = "delivered" if delivered else ("pending" if next_retry_at is not None else "failed")
        with self.storage.transaction() as tx:
            if not tx.execute("UPDATE webhook_deliveries SET status = ?, attempts = ?, next_attempt_at = ?,"
                              " delivered_at = ? WHERE id = ? AND status = 'pending'",
                              (status, claimed.attempt, next_retry_at, at if delivered else None,
                               claimed.id)).rowcount:
                return None
            tx.execute("INSERT INTO webhook_attempts (delivery_id, attempt, at, duration_ms, status_code, error,"
                       " next_retry_at) VALUES (?,?,?,?,?,?,?) ON CONFLICT (delivery_id, attempt) DO NOTHING",
                       (claimed.id, claimed.attempt, at, duration_ms, status_code, error, next_retry_at))
        return status

    def release(self, delivery_ids: Sequence[str]) -> None:
        """End the leases of sends that were stopped unfinished: due again now."""
        with self.storage.transaction() as tx:
            for d_id in delivery_ids:
                tx.execute("UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ? AND status = 'pending'",
                           (time.time(), d_id))


# The incidents table keeps times as the backend does: seconds since the epoch (SQLite), timestamptz
# (PostgreSQL). These three are the only place this module meets that difference.

def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _param(tx: SqlTx, epoch_s: float) -> Any:
    return epoch_s if tx.backend == "sqlite" else datetime.fromtimestamp(epoch_s, UTC)


def _year(ts: Any) -> int:
    """The incident's year, as the storage numbers it (``INC-<year>-...``)."""
    return ts.year if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC).year
