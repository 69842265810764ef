"""Which hub replica does a job that must run once (the agents' cycles): a leader lock.

On PostgreSQL, a session advisory lock held on a connection of its own: whoever holds it is the
leader; if that hub dies (killed, crashed, its network gone) the server drops its session and the
lock with it, and the next replica to try takes it. On SQLite (one machine), an exclusive ``flock``
on a file beside the database, released by the kernel when the process dies.

``acquire()`` is called before each round of the job: it takes the lock if free, or confirms it is
still held (a lost connection is a lost lock); it never blocks and never raises.
"""

from __future__ import annotations

import fcntl
import logging
import os
import zlib
from pathlib import Path

__all__ = ["FileLeaderLock", "PostgresLeaderLock"]

log = logging.getLogger(__name__)

_LEADER_LOCK_CLASS = 0x5E47_0005  # advisory locks (two-int4 form): (this, crc32 of the job's name)


class PostgresLeaderLock:
    def __init__(self, url: str, name: str, connect_timeout_s: int = 5) -> None:
        self.url, self.name, self._timeout = url, name, connect_timeout_s
        self._key = zlib.crc32(name.encode()) & 0x7FFF_FFFF
        self._conn = None
        self.held = False

    def acquire(self) -> bool:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self.held = False
                self._conn = psycopg.connect(self.url, autocommit=True, connect_timeout=self._timeout,
                                             application_name=f"sentinel-hub-leader-{self.name}")
            if self.held:
                self._conn.execute("SELECT 1")  # the session lives: the lock is still ours
            else:
                self.held = bool(self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                                                    (_LEADER_LOCK_CLASS, self._key)).fetchone()[0])
        except psycopg.Error as exc:
            if self.held:
                log.warning("lost the %s leader lock (%s): another replica may take it", self.name, exc)
            self.release()
        return self.held

    def release(self) -> None:
        """Give the lock up: unlocked first, then the session ends. Closing alone releases it only
        when the server has ended the session, after close() returns: another replica trying at once
        could still find it held."""
        held, self.held = self.held, False
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                if held and not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LEADER_LOCK_CLASS, self._key))
            except Exception:  # noqa: BLE001  (a lost session has released it already)
                pass
            try:
                conn.close()  # the session ends: the server releases anything still held
            except Exception:  # noqa: BLE001
                pass


class FileLeaderLock:
    def __init__(self, path: str | Path | None, name: str) -> None:
        self.path = None if path is None else Path(f"{path}.{name}.lock")
        self.name = name
        self._fd: int | None = None
        self.held = path is None  # an in-memory database: one process, always the leader

    def acquire(self) -> bool:
        if self.path is None or self._fd is not None:
            return self.held
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd, self.held = fd, True
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        self.held = self.path is None
        if fd is not None:
            os.close(fd)  # and the lock with it
