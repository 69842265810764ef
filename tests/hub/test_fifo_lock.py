"""hub.storage.fifo_lock: the SQLite storage's lock goes to its waiters in order, so a request is
not starved by a job that releases the lock and takes it again a chunk at a time."""

from __future__ import annotations

import threading
import time

import pytest

from hub.storage.fifo_lock import FifoLock
from hub.storage.sqlite import SQLiteStorage


def _until(predicate, timeout_s: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def _queued(lock: FifoLock) -> int:
    return len(lock._waiters)  # noqa: SLF001  (who is waiting: the only way to order the threads)


def test_a_chunked_job_lets_a_waiter_in_after_its_current_chunk() -> None:
    lock, chunks, stop = FifoLock(), [0], threading.Event()

    def job() -> None:  # a fold: the lock for a chunk, released, taken again at once
        while not stop.is_set():
            with lock:
                time.sleep(0.002)
                chunks[0] += 1

    worker = threading.Thread(target=job)
    worker.start()
    try:
        _until(lambda: chunks[0] > 3)
        got: list[int] = []
        asked = threading.Thread(target=lambda: (lock.acquire(), got.append(chunks[0]), lock.release()))
        asked.start()
        _until(lambda: _queued(lock) >= 1 or bool(got))
        waiting_from = chunks[0]
        asked.join(10)
        assert got and got[0] - waiting_from <= 1  # the chunk under way, then the waiter
    finally:
        stop.set()
        worker.join(10)


def test_waiters_get_the_lock_in_the_order_they_asked() -> None:
    lock, order = FifoLock(), []
    lock.acquire()
    threads = []
    for n in range(5):
        t = threading.Thread(target=lambda n=n: (lock.acquire(), order.append(n), lock.release()))
        t.start()
        _until(lambda n=n: _queued(lock) == n + 1)
        threads.append(t)
    lock.release()
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3, 4] and not lock.locked()


def test_one_holder_at_a_time() -> None:
    lock, inside, most, total = FifoLock(), [0], [0], [0]

    def work() -> None:
        for _ in range(300):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                total[0] += 1
                if total[0] % 50 == 0:
                    time.sleep(0)
                inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1 and total[0] == 1800 and not lock.locked()


def test_releasing_a_lock_nobody_holds_is_an_error() -> None:
    lock = FifoLock()
    with pytest.raises(RuntimeError, match="unheld"):
        lock.release()
    with lock:
        assert lock.locked()
    assert not lock.locked()


def test_the_sqlite_storage_serialises_on_it(tmp_path) -> None:  # noqa: ANN001
    storage = SQLiteStorage(tmp_path / "hub.db")
    try:
        assert isinstance(storage._lock, FifoLock)  # noqa: SLF001
    finally:
        storage.close()


def _gate_interrupted(monkeypatch: pytest.MonkeyPatch, before: object = None) -> None:
    """The gates FifoLock makes from now on: a waiter's wait (a gate's second acquire) raises
    KeyboardInterrupt, as Ctrl-C does in the main thread, after calling ``before`` if given."""
    real = threading.Lock

    class Gate:
        def __init__(self) -> None:
            self.inner, self.calls = real(), 0

        def acquire(self) -> bool:
            self.calls += 1
            if self.calls == 2:
                if callable(before):
                    before()
                raise KeyboardInterrupt
            return self.inner.acquire()

        def release(self) -> None:
            self.inner.release()

    monkeypatch.setattr(threading, "Lock", Gate)


def test_a_waiter_interrupted_leaves_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while waiting must not leave a waiter in line that would be handed the lock and never
    release it."""
    lock = FifoLock()
    lock.acquire()
    with monkeypatch.context() as m:
        _gate_interrupted(m)
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()
    assert _queued(lock) == 0
    lock.release()
    assert not lock.locked()
    with lock:  # usable as before
        assert lock.locked()


def test_a_waiter_interrupted_as_it_is_handed_the_lock_passes_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    lock = FifoLock()
    lock.acquire()
    with monkeypatch.context() as m:
        _gate_interrupted(m, before=lock.release)  # the holder hands the lock over, then Ctrl-C lands
        with pytest.raises(KeyboardInterrupt):
            lock.acquire()
    assert not lock.locked() and _queued(lock) == 0  # passed on: nobody holds it, nobody waits
