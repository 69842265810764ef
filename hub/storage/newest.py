"""Each device's newest reading, as stored, for the liveness check (``Storage.latest_reading_times``).

The liveness check asks, every few seconds and for every WebSocket state read, when the hub last
heard from each device. Reading that off ``readings`` costs a scan of the readings in the window:
on the plain PostgreSQL layout the BRIN index on ``ts`` cannot narrow it as soon as one edge sends
readings hours old beside the others' current ones (a wrong clock, a backlog after an outage), so the
scan grew with the table: 1.0 s at 6 M readings, 4.4 s at 18 M (half an hour of 10,000 readings/s),
and the stream's p99 went from 0.4 to 2.5 s over a soak (docs/scaling.md).

So PostgreSQL keeps a table of its own, ``device_newest`` (substation, device, newest timestamp;
schema migration 7), as small as the fleet's device count. Writing it in each sync's transaction
would rewrite a row per device per sync (MVCC: a new row version each time); instead each process
notes the newest per device of what it stored (:meth:`DeviceNewest.note`, after the commit) and
writes them with one upsert at most every ``every_s`` (:meth:`DeviceNewest.flush`; 5 s: at 2,500
devices an upsert a second took a tenth of a core of PostgreSQL under load), in key order
(two processes' upserts cannot deadlock), never moving a device's time back. A read in the same
process lays the notes not yet written over what it read (:meth:`DeviceNewest.overlay`), so it is
exact there without writing on the read's path (an upsert of 2,500 devices took up to 0.27 s under
load, and the stream reads on every change); another process's readings show at most ``every_s``
late. A failed write keeps the notes for the next one.

Only readings that measured something count (not flagged INVALID or COMM_LOST), as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime

from protocols.reading import QualityFlag

__all__ = ["FLUSH_EVERY_S", "NOT_HEARD_FLAGS", "DeviceNewest"]

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 5.0  # far inside the liveness thresholds (an edge is offline after 3 x 30 s by default)
NOT_HEARD_FLAGS = int(QualityFlag.INVALID | QualityFlag.COMM_LOST)  # readings that are no sign of life

Newest = dict[tuple[str, str], datetime]  # (substation, device_id) -> newest reading's time


class DeviceNewest:
    """The notes of one storage object. ``write`` stores (substation, device_id, ts) rows, sorted,
    keeping the later time of each device (blocking; raises on failure)."""

    def __init__(self, write: Callable[[list[tuple[str, str, datetime]]], None], every_s: float = FLUSH_EVERY_S) -> None:
        if not every_s > 0:
            raise ValueError(f"every_s must be > 0, not {every_s}")
        self._write = write
        self.every_s = every_s
        self._lock = threading.Lock()
        self._pending: Newest = {}
        self._writing: list[Newest] = []  # taken by a flush, not committed yet (still laid over reads)
        self._timer: threading.Timer | None = None
        self._closed = False
        self._failing = False

    @staticmethod
    def newest_of(rows: Iterable[tuple]) -> Newest:
        """The newest time per device of reading rows (ts, substation, device_id, metric, value, unit,
        quality, flags, ...) that measured something."""
        newest: Newest = {}
        get = newest.get
        for r in rows:
            if r[7] & NOT_HEARD_FLAGS:
                continue
            key, ts = (r[1], r[2]), r[0]
            held = get(key)
            if held is None or ts > held:
                newest[key] = ts
        return newest

    def note(self, rows: Iterable[tuple]) -> None:
        """Reading rows just committed: written at the next flush (within ``every_s``)."""
        self._merge(self.newest_of(rows))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _merge(self, newest: Newest) -> None:
        if not newest:
            return
        with self._lock:
            pending = self._pending
            for key, ts in newest.items():
                held = pending.get(key)
                if held is None or ts > held:
                    pending[key] = ts
            if self._timer is None and not self._closed:
                self._timer = threading.Timer(self.every_s, self._tick)
                self._timer.daemon = True
                self._timer.name = "device-newest-flush"
                self._timer.start()

    def _tick(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.flush()
        except Exception:  # kept for the next flush (logged there)
            pass

    def overlay(self, rows: Iterable[tuple[str, str, datetime]], start: datetime,
                end: datetime) -> list[tuple[str, str, datetime]]:
        """``rows`` (substation, device_id, newest ts with start <= ts < end, as read from the table)
        with the notes not written yet laid over them."""
        newest = {(sub, dev): ts for sub, dev, ts in rows}
        with self._lock:
            notes = [self._pending, *self._writing]
            for part in notes:
                for key, ts in part.items():
                    if start <= ts < end:
                        held = newest.get(key)
                        if held is None or ts > held:
                            newest[key] = ts
        return [(sub, dev, ts) for (sub, dev), ts in newest.items()]

    def flush(self) -> None:
        """Write what is noted now (raises if the write fails; the notes are kept)."""
        with self._lock:
            pending, self._pending = self._pending, {}
            if pending:
                self._writing.append(pending)
        if not pending:
            return
        try:
            self._write(sorted((sub, dev, ts) for (sub, dev), ts in pending.items()))
        except Exception as exc:
            if not self._failing:
                log.warning("could not write the devices' newest reading times (%s): kept, tried again in %g s",
                            exc, self.every_s)
                self._failing = True
            self._merge(pending)
            raise
        finally:
            with self._lock:
                self._writing.remove(pending)
        if self._failing:
            log.info("the devices' newest reading times are written again")
            self._failing = False

    def close(self) -> None:
        """A last flush (a failure is logged, not raised); no timer after."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        try:
            self.flush()
        except Exception as exc:
            log.warning("closing: %d devices' newest reading times not written (%s)", self.pending, exc)
