"""``GET /export/readings``: readings over a time range, raw or bucketed, as CSV or Parquet, streamed.

``?start=2026-03-01T00:00:00Z&end=2026-03-02T00:00:00Z`` (RFC 3339 with a zone; start before end,
at most :data:`MAX_SPAN` apart), optionally ``substation``, ``device_id`` and ``metric`` (each
repeatable: any of them), ``bucket`` (``raw``, ``1m``, ``1h``, ``1d``: min, max, avg, last and
count per series and UTC minute, hour or day, readings flagged INVALID left out) and ``format``
(``csv``, ``parquet``; columns in :mod:`export.readings`). For viewers.

The answer is a file to save (``Content-Disposition: attachment``), sent as it is made: the
export's own thread reads a chunk of rows from storage (:meth:`~hub.storage.base.Storage.iter_readings`
/ ``iter_buckets``) and writes it, the event loop sends it, and the next chunk is read when the
client has taken the last. The hub holds one chunk per export (and, for Parquet, up to a row
group's Arrow columns), whatever the range: a year of one-minute data for 100 points peaks under
200 MB of hub memory (``benchmarks/bench_export.py``). At most :data:`MAX_EXPORTS` run at once
(503 beyond). The first chunk is read before the answer starts, so a storage that cannot be read is
an error status, not a cut-off file; a failure later cuts the answer off (no final chunk), which
HTTP clients report as an incomplete body.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.spec import OpenAPIHeader, OpenAPIMediaType, OpenAPIResponse, OpenAPIType, Operation, Schema
from litestar.params import QueryParameter
from litestar.response import Stream

from export.readings import BUCKETS, MEDIA_TYPES, Bucket, Format, file_name, writer
from hub.auth import VIEWER
from hub.auth.guards import allow, principal
from hub.openapi import error, query_time
from hub.storage.base import Storage

__all__ = ["CHUNK_ROWS", "MAX_EXPORTS", "MAX_SPAN", "ROUTES"]

log = logging.getLogger(__name__)

MAX_SPAN = timedelta(days=366)  # a year, leap or not, per export; longer: several
MAX_EXPORTS = 4  # at once, per hub: each holds a chunk in memory and a thread while it runs
MAX_FILTER_VALUES = 1000  # of each of substation, device_id, metric
# rows per storage query and per piece written: small, as a chunk's Python objects are most of an
# export's memory (10,000: about 10 MB); as fast as 50,000 (bench_export.py), and shorter locks
CHUNK_ROWS = 10_000


@dataclass
class _ExportOperation(Operation):
    """The answer is a CSV or a Parquet file, as ``format`` asks."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format="binary")
        self.responses = {**(self.responses or {}), "200": OpenAPIResponse(
            description="the readings as a file to save, sent as it is written (chunked)",
            content={MEDIA_TYPES["csv"]: OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING)),
                     MEDIA_TYPES["parquet"]: OpenAPIMediaType(schema=binary)},
            headers={"Content-Disposition": OpenAPIHeader(
                schema=Schema(type=OpenAPIType.STRING), required=True,
                description='attachment; filename="readings_<start>_<end>_<bucket>.<format>"')})}


def _filter(what: str) -> Any:
    return QueryParameter(description=f"only these {what} (repeatable; none: all)", max_items=MAX_FILTER_VALUES)


@get("/export/readings", guards=[allow(VIEWER)], operation_class=_ExportOperation,
     summary="Readings over a time range, raw or bucketed, as CSV or Parquet",
     responses={400: error("a parameter is malformed (start and end: RFC 3339 with a zone), start is not before "
                           f"end, or the range is longer than {MAX_SPAN.days} days"),
                503: error(f"{MAX_EXPORTS} exports are running already; try again when one has finished")})
async def export_readings(
    request: Request, state: State,
    start: Annotated[str, QueryParameter(format="date-time", description="from this time (inclusive)")],
    end: Annotated[str, QueryParameter(format="date-time", description="to this time (exclusive)")],
    substation: Annotated[list[str] | None, _filter("substations")] = None,
    device_id: Annotated[list[str] | None, _filter("devices")] = None,
    metric: Annotated[list[str] | None, _filter("metrics")] = None,
    bucket: Annotated[Bucket, QueryParameter(
        description="raw readings, or per series min, max, avg, last and count per UTC minute, hour or day "
                    "(readings flagged invalid left out)")] = "raw",
    fmt: Annotated[Format, QueryParameter(name="format", description="the file's format")] = "csv",
) -> Stream:
    """Columns, raw: ts, substation, device_id, metric, value, unit, quality, flags; bucketed:
    bucket_start, substation, device_id, metric, min, max, avg, last, count. Rows by time, then
    substation, device and metric."""
    lo, hi = query_time("start", start), query_time("end", end)
    assert lo is not None and hi is not None  # required parameters
    if hi <= lo:
        raise _bad("end", f"{hi.isoformat()} is not after start ({lo.isoformat()})")
    if hi - lo > MAX_SPAN:
        raise _bad("end", f"the range is {(hi - lo) / timedelta(days=1):g} days; at most {MAX_SPAN.days} days per "
                          "export: split it")
    slots = _slots(request.app.state)  # the app's own, not a copy
    if not slots.take():
        raise HTTPException(status_code=503, detail=f"{MAX_EXPORTS} exports are running already; try again when one "
                                                    "has finished", headers={"Retry-After": "30"})
    storage: Storage = state.storage
    filters = {"substations": substation, "devices": device_id, "metrics": metric}
    bucket_s = BUCKETS[bucket]
    try:
        if bucket_s is None:
            source = storage.iter_readings(lo, hi, **filters, chunk_rows=CHUNK_ROWS)
        else:
            source = storage.iter_buckets(lo, hi, bucket_s, **filters, chunk_rows=CHUNK_ROWS)
    except BaseException:
        slots.give()
        raise
    export = _Export(source, writer(fmt, bucketed=bucket_s is not None), slots.give)  # it has the slot now
    try:
        first = await export.run(export.start)  # storage errors: an error status, not a cut-off file
    except BaseException:
        _close_soon(export)
        raise
    name = file_name(lo, hi, bucket, fmt)
    who = principal(request).label
    tally = export.tally
    return Stream(_send(export, first, lambda: log.info("export %s for %s: %d rows, %d bytes in %.1f s", name, who,
                                                      tally.rows, tally.bytes, time.monotonic() - tally.began)),
                  media_type=MEDIA_TYPES[fmt], headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _bad(key: str, why: str) -> ValidationException:
    return ValidationException(detail=f"{key}: {why}", extra=[{"key": key, "source": "query", "message": why}])


class _Slots:
    """Exports running at once, at most MAX_EXPORTS (per app: kept in its state)."""

    def __init__(self, limit: int) -> None:
        self.free = limit
        self._lock = threading.Lock()  # give() may come from the garbage collector, in any thread

    def take(self) -> bool:
        with self._lock:
            if self.free <= 0:
                return False
            self.free -= 1
            return True

    def give(self) -> None:
        with self._lock:
            self.free += 1


def _slots(state: State) -> _Slots:
    slots = getattr(state, "readings_export_slots", None)
    if slots is None:
        slots = state.readings_export_slots = _Slots(MAX_EXPORTS)
    return slots


class _Export:
    """One export's blocking side: storage chunks through a writer, stepped a chunk at a time in a
    worker thread. Closing it (the storage's connection with it) waits for a step in flight, and
    gives its slot back; it happens once, when the answer ends, or when the answer is dropped unsent
    (``weakref.finalize``: nothing it holds refers back to it)."""

    def __init__(self, source: Iterator[list[Any]], write: Callable[[Any], Iterator[bytes]],
                 release: Callable[[], None]) -> None:
        self.tally = _Tally()
        self._source = source
        self._head: list[list[Any]] = []  # the first chunk, read by start(), until the writer takes it
        self._out = write(_counted(self._head, source, self.tally))
        self._lock = threading.Lock()
        # one thread of its own: its steps in order, and the allocators' per-thread caches (pyarrow's
        # mimalloc) filled once, not in every worker thread the steps would otherwise land on
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub.export")
        self._finalizer = weakref.finalize(self, _close, self._lock, (self._out, source), release, self._thread)

    def start(self) -> bytes:
        """The first chunk read from storage (what it cannot read raises here), and the first bytes."""
        with self._lock:
            first = next(self._source, None)
            if first is not None:
                self._head.append(first)
            data = next(self._out, b"")
        self.tally.bytes += len(data)
        return data

    def step(self) -> bytes | None:
        """The next bytes, None at the end."""
        with self._lock:
            data = next(self._out, None)
        if data is not None:
            self.tally.bytes += len(data)
        return data

    def run(self, step: Callable[[], Any]) -> asyncio.Future[Any]:
        """``step`` in the export's thread."""
        return asyncio.get_running_loop().run_in_executor(self._thread, step)

    def close(self) -> None:
        self._finalizer()


class _Tally:
    def __init__(self) -> None:
        self.rows = self.bytes = 0
        self.began = time.monotonic()


def _counted(head: list[list[Any]], source: Iterator[list[Any]], tally: _Tally) -> Iterator[list[Any]]:
    """``head``'s chunk (taken out of it: not kept), then the source's; counted."""
    while head:
        chunk = head.pop()
        tally.rows += len(chunk)
        yield chunk
        del chunk
    for chunk in source:
        tally.rows += len(chunk)
        yield chunk
        del chunk  # before the next is read


def _close(lock: threading.Lock, iterators: tuple[Iterator[Any], ...], release: Callable[[], None],
           thread: ThreadPoolExecutor) -> None:
    try:
        with lock:
            for it in iterators:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
    finally:
        thread.shutdown(wait=False)
        release()


async def _send(export: _Export, first: bytes, done: Callable[[], None]) -> AsyncIterator[bytes]:
    finished = False
    try:
        data: bytes | None = first
        while data is not None:
            yield data
            data = await export.run(export.step)
        finished = True
        done()
    finally:
        if finished:
            export.close()
        else:  # the client went away, or a chunk failed
            _close_soon(export)


def _close_soon(export: _Export) -> None:
    """Close in the export's thread, after a step still in flight there (never wait for it here)."""
    export.run(export.close)


ROUTES = [export_readings]
