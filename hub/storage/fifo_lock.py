"""A lock that goes to its waiters in the order they came (:class:`FifoLock`).

The SQLite storage serialises every statement on one connection behind one lock. A plain
:class:`threading.Lock` is not fair: a thread that releases it and asks again at once (a fold of
many marked hours, a chunk at a time; a keyset scan, a page at a time) nearly always gets it back
before a waiter wakes, so a request that needs the lock for a millisecond can wait behind the whole
job. Measured on the dashboard's hub after three weeks of history were stored unrolled: requests
waited 5-17 s each for the first 50 s while the agents' first questions folded them.

Here a release with waiters hands the lock to the one waiting longest, directly: the releasing
thread cannot take it back first. A waiter therefore waits at most for the holders queued before
it, each for one chunk. Uncontended it costs two more lock operations than a plain lock.
"""

from __future__ import annotations

import threading
from collections import deque
from types import TracebackType

__all__ = ["FifoLock"]


class FifoLock:
    """A non-reentrant mutex granted first come, first served; ``with lock:`` or acquire/release."""

    __slots__ = ("_guard", "_held", "_waiters")

    def __init__(self) -> None:
        self._guard = threading.Lock()  # guards _held and _waiters; held only for a few operations
        self._held = False
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self) -> bool:
        with self._guard:
            if not self._held:
                self._held = True
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        try:
            gate.acquire()  # released by the holder that hands the lock over: held from then on
        except BaseException:  # interrupted while waiting (Ctrl-C in the main thread): not left in line
            with self._guard:
                try:
                    self._waiters.remove(gate)
                    handed = False
                except ValueError:  # handed over just as it was interrupted: pass it on
                    handed = True
            if handed:
                self.release()
            raise
        return True

    def release(self) -> None:
        with self._guard:
            if not self._held:
                raise RuntimeError("release of an unheld FifoLock")
            if self._waiters:
                self._waiters.popleft().release()  # still held: now by the longest waiter
            else:
                self._held = False

    def locked(self) -> bool:
        return self._held

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
