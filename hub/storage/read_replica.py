"""History reads from a streaming replica of the hub's PostgreSQL (``SENTINEL_READ_DATABASE_URL``).

:class:`hub.storage.postgres.PostgresStorage` sends its history reads here (the readings API's raw
and bucketed reads, exports, the agents' windows); everything else stays on the primary. A read is
never staler than the primary was when it was asked. Before each one:

1. the primary's ``pg_current_wal_flush_lsn()``: one cheap query. Every commit the hub acknowledged
   is flushed by then (its sessions commit with ``synchronous_commit`` on), so an edge that has just
   synced, or a question that has just folded its rollup marks on the primary, is covered;
2. on the replica, ``pg_last_wal_replay_lsn()``, polled until it has replayed that far, for at most
   ``max_wait_s``.

Otherwise the read goes to the primary, never an error for the caller. The replica is then

- ``lagging``: not caught up within ``max_wait_s``. Until a check finds it caught up, reads do not
  wait for it (one far behind would make every read ``max_wait_s`` slower): one look, then the primary;
- ``down``: no connection, or a query failed there (stopped, restarting, a query cancelled by a
  recovery conflict); its pool is closed (no reconnect attempts in the background) and it is tried
  again after ``retry_s``, on a new pool;
- ``unfit``: not a standby (``pg_is_in_recovery()`` false: promoted, or a primary), or a standby of
  another cluster (its system identifier); not tried again for ``retry_s``.

Each change of state is logged once (a warning; info when it serves again). Which pool answered each
read is counted (:meth:`ReadReplica.counts`: the hub's ``/metrics``) and logged at debug.

An export (``iter_readings``, ``iter_buckets``) is checked once, when it starts, and then reads its
windows on one connection: if the replica goes away in the middle, the export fails, as it would if
the primary did.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

__all__ = ["ReadReplica"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_OPTIONS = "-c TimeZone=UTC"
# bytes the replica has still to replay to reach the primary's position (<= 0: caught up); NULL: not a standby
_BEHIND = "SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())"
_SYSTEM_ID = "SELECT system_identifier FROM pg_control_system()"


class ReadReplica:
    """A streaming standby's pool, the check that it has caught up, and its state.

    ``primary`` is the storage's own pool: the primary's position is read there, and reads fall back
    to it. ``where`` names the replica in logs (``host:port/db``, no credentials).
    """

    def __init__(self, url: str, primary: ConnectionPool, *, where: str, max_wait_s: float = 0.2,
                 retry_s: float = 5.0, pool_size: int = 8, connect_timeout_s: float = 10.0,
                 checkout_s: float = 0.5) -> None:
        if max_wait_s < 0 or retry_s < 0:
            raise ValueError(f"read replica: max_wait_s and retry_s must be >= 0, not {max_wait_s}, {retry_s}")
        self.url, self.where = url, where
        self.max_wait_s, self.retry_s = max_wait_s, retry_s
        self._primary = primary
        self._connect_timeout = max(1, round(connect_timeout_s))
        self._checkout_s = max(checkout_s, max_wait_s)
        self._pool_size = pool_size
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = self._new_pool()  # None: down, the next try makes a new one
        self.state = "new"  # new | up | lagging | down | unfit
        self._retry_at = 0.0  # time.monotonic() before which a down or unfit replica is not tried
        self._counts = {"replica": 0, "primary": 0}

    def _new_pool(self) -> ConnectionPool:
        # opened in the background: a replica that is down when the hub starts is only a warning
        pool = ConnectionPool(self.url, min_size=1, max_size=self._pool_size, open=False, name="hub-storage-replica",
                              check=ConnectionPool.check_connection,
                              kwargs={"options": _OPTIONS, "connect_timeout": self._connect_timeout})
        pool.open(wait=False)
        return pool

    def _current_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = self._new_pool()
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def counts(self) -> dict[str, int]:
        """History reads answered so far, by pool: ``replica``, ``primary`` (the fallback)."""
        with self._lock:
            return dict(self._counts)

    # -- reads ----------------------------------------------------------------------------------

    def read(self, what: str, fn: Callable[[psycopg.Connection], T]) -> T:
        """``fn`` on a pooled connection: the replica's if it has replayed what the primary had
        flushed when asked, else the primary's. Errors of the primary are raised as they are."""
        if time.monotonic() >= self._retry_at:
            target = self._primary_position()
            try:
                with self._current_pool().connection(timeout=self._checkout_s) as conn:
                    if self._caught_up(conn, target):
                        result = fn(conn)
                        self._served("replica", what)
                        return result
            except (psycopg.Error, PoolTimeout) as exc:
                self._down(exc)
        with self._primary.connection() as conn:
            result = fn(conn)
        self._served("primary", what)
        return result

    def connect(self, what: str, connect_primary: Callable[[], psycopg.Connection]) -> psycopg.Connection:
        """A connection of its own (autocommit) for a long read (an export): the replica's if it has
        caught up, else ``connect_primary()``'s."""
        if time.monotonic() >= self._retry_at:
            target = self._primary_position()
            conn = None
            try:
                conn = psycopg.connect(self.url, autocommit=True, options=_OPTIONS,
                                       connect_timeout=self._connect_timeout)
                if self._caught_up(conn, target):
                    self._served("replica", what)
                    return conn
            except psycopg.Error as exc:
                self._down(exc)
            if conn is not None:
                conn.close()
        conn = connect_primary()
        self._served("primary", what)
        return conn

    # -- the check ------------------------------------------------------------------------------

    def _primary_position(self) -> str:
        with self._primary.connection() as conn:
            return conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()[0]

    def _caught_up(self, conn: psycopg.Connection, target: str) -> bool:
        """Whether the replica has replayed up to ``target``: polled for up to ``max_wait_s`` (not at
        all when it was lagging at the last check); the state follows."""
        if self.state not in ("up", "lagging") and not self._fit(conn):
            return False
        wait = 0.0 if self.state == "lagging" else self.max_wait_s
        deadline = time.monotonic() + wait
        pause = 0.001
        while True:
            behind = conn.execute(_BEHIND, (target,)).fetchone()[0]
            if behind is None:
                self._unfit("it is not a standby (pg_is_in_recovery() is false: promoted, or a primary)")
                return False
            if behind <= 0:
                self._set("up", "has caught up: history reads go to it")
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                self._set("lagging", f"is {int(behind)} bytes of WAL behind the primary after {wait * 1000:g} ms: "
                                     "history reads go to the primary until it catches up", logging.WARNING)
                return False
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.02)

    def _fit(self, conn: psycopg.Connection) -> bool:
        """A standby of the primary's cluster (same system identifier, where this role may read it)?"""
        try:
            mine = conn.execute(_SYSTEM_ID).fetchone()[0]
            with self._primary.connection() as p:
                theirs = p.execute(_SYSTEM_ID).fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            conn.rollback()
            return True  # cannot tell; pg_is_in_recovery() is still checked
        if mine != theirs:
            self._unfit(f"it belongs to another cluster (system identifier {mine}, the primary's {theirs})")
            return False
        return True

    # -- state ----------------------------------------------------------------------------------

    def _served(self, pool: str, what: str) -> None:
        with self._lock:
            self._counts[pool] += 1
        log.debug("%s: answered by the %s", what, pool)

    def _down(self, exc: BaseException) -> None:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:  # closed aside, not holding up the read (a connection lent out closes when it comes back)
            threading.Thread(target=pool.close, name="hub-storage-replica-close", daemon=True).start()
        self._retry_at = time.monotonic() + self.retry_s
        self._set("down", f"cannot be used ({reason}): history reads go to the primary; trying it again every "
                          f"{self.retry_s:g} s", logging.WARNING)

    def _unfit(self, why: str) -> None:
        self._retry_at = time.monotonic() + self.retry_s
        self._set("unfit", f"is not used: {why}; history reads go to the primary", logging.WARNING)

    def _set(self, state: str, message: str, level: int = logging.INFO) -> None:
        with self._lock:
            changed, self.state = self.state != state, state
        if changed:
            log.log(level, "read replica at %s %s", self.where, message)
