"""Readings out as CSV or Parquet, one chunk at a time.

A writer takes an iterable of chunks and gives an iterator of bytes: a header (CSV), then a piece
per chunk (CSV) or per row group (Parquet, with the magic number first and the footer last). A chunk
is let go before the next is read, so a year of readings goes through in the memory of one chunk
(Parquet: and up to a row group of Arrow columns), whoever pulls the bytes (the hub's streamed
answer, the CLI writing a file).

Chunks hold :class:`~protocols.reading.Reading` (raw) or bucket rows: tuples ``(bucket_start,
substation, device_id, metric, min, max, avg, last, count)`` (the hub's ``ReadingBucket`` is one).

Columns, raw: ``ts, substation, device_id, metric, value, unit, quality, flags``; bucketed:
``bucket_start, substation, device_id, metric, min, max, avg, last, count``.

- CSV: a header line, ``\\n`` line ends, UTF-8. Times are ISO 8601 in UTC with ``Z``
  (``2026-03-01T10:00:00Z``, with microseconds when there are any); numbers as Python writes them
  (the shortest text that reads back to the same float); no value is an empty field; ``flags`` is
  the names of the quality flags joined by ``|`` (``stale|substituted``), empty for none.
- Parquet: times ``timestamp[us, tz=UTC]``; the text columns dictionary-encoded; numbers
  ``float64`` (``count``: ``int64``); ``flags`` as in CSV. Each chunk becomes an Arrow table at
  once (its Python objects let go); a row group is written from whole chunks once they hold
  :data:`ROW_GROUP_ROWS` rows, through a pyarrow output stream whose bytes are handed on as each
  row group is written. Row groups, not chunks: pyarrow keeps some 7 KB of metadata per row group
  until the footer (a year of 10,000-row chunks as row groups: 35 MB), while writing bigger row
  groups costs more at once; 50,000 rows is where the two are least (``bench_export.py``). On the
  system allocator (see ``_pyarrow``).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from protocols.reading import QualityFlag, Reading

__all__ = ["BUCKETS", "BUCKET_COLUMNS", "FORMATS", "MEDIA_TYPES", "READING_COLUMNS", "ROW_GROUP_ROWS", "Bucket",
           "Format", "buckets_csv", "buckets_parquet", "file_name", "flag_names", "readings_csv", "readings_parquet",
           "writer"]

Format = Literal["csv", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "parquet")
Bucket = Literal["raw", "1m", "1h", "1d"]
BUCKETS: dict[str, int | None] = {"raw": None, "1m": 60, "1h": 3600, "1d": 86_400}  # name -> seconds (raw: None)
ROW_GROUP_ROWS = 50_000  # a Parquet row group once whole chunks add up to this many rows
MEDIA_TYPES: dict[str, str] = {"csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}
READING_COLUMNS = ("ts", "substation", "device_id", "metric", "value", "unit", "quality", "flags")
BUCKET_COLUMNS = ("bucket_start", "substation", "device_id", "metric", "min", "max", "avg", "last", "count")

Chunks = Iterable[Sequence[Any]]


def writer(fmt: Format, *, bucketed: bool) -> Callable[[Chunks], Iterator[bytes]]:
    """The writer for ``fmt`` (``csv`` or ``parquet``), of buckets or of raw readings."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "csv":
        return buckets_csv if bucketed else readings_csv
    return buckets_parquet if bucketed else readings_parquet


def file_name(start: datetime, end: datetime, bucket: str, fmt: Format) -> str:
    """``readings_20260301T000000Z_20260302T000000Z_1h.csv``: what was asked, as a file name."""
    def stamp(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")

    return f"readings_{stamp(start)}_{stamp(end)}_{bucket}.{fmt}"


# -- CSV --------------------------------------------------------------------------------------------


def readings_csv(chunks: Iterable[Sequence[Reading]]) -> Iterator[bytes]:
    yield (",".join(READING_COLUMNS) + "\n").encode()
    names = _FlagNames()
    for chunk in chunks:
        if chunk:
            data = _csv([(_iso(r.ts), r.substation, r.device_id, r.metric, r.value, r.unit, r.quality, names[r.flags])
                         for r in chunk])
            del chunk  # let it go before the next is read: one chunk in memory, not two
            yield data


def buckets_csv(chunks: Iterable[Sequence[tuple]]) -> Iterator[bytes]:
    yield (",".join(BUCKET_COLUMNS) + "\n").encode()
    for chunk in chunks:
        if chunk:
            data = _csv([(_iso(b[0]), *b[1:9]) for b in chunk])
            del chunk
            yield data


def _csv(rows: list[tuple]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue().encode()


def _iso(ts: datetime) -> str:
    """ISO 8601 in UTC with ``Z``; fast for the UTC times storage gives."""
    text = ts.isoformat()
    if not text.endswith("+00:00"):
        text = ts.astimezone(UTC).isoformat()
    return text[:-6] + "Z"


def flag_names(flags: int) -> str:
    """``stale|substituted``: the quality flags' names joined by ``|``; empty for none."""
    return "|".join(QualityFlag.names(flags))


class _FlagNames(dict[int, str]):
    """flag_names, remembered: a few combinations occur, millions of times."""

    def __missing__(self, flags: int) -> str:
        self[flags] = names = flag_names(flags)
        return names


# -- Parquet ----------------------------------------------------------------------------------------


def readings_parquet(chunks: Iterable[Sequence[Reading]], *, row_group_rows: int = ROW_GROUP_ROWS) -> Iterator[bytes]:
    pa, _ = _pyarrow()
    names = _FlagNames()
    schema = _readings_schema(pa)

    def table(chunk: Sequence[Reading]) -> Any:
        return pa.Table.from_arrays([
            pa.array([r.ts for r in chunk], _time(pa)),
            _text(pa, [r.substation for r in chunk]),
            _text(pa, [r.device_id for r in chunk]),
            _text(pa, [r.metric for r in chunk]),
            pa.array([r.value for r in chunk], pa.float64()),
            _text(pa, [r.unit for r in chunk]),
            pa.array([r.quality for r in chunk], pa.float64()),
            _text(pa, [names[r.flags] for r in chunk]),
        ], schema=schema)

    return _parquet(chunks, schema, table, row_group_rows)


def buckets_parquet(chunks: Iterable[Sequence[tuple]], *, row_group_rows: int = ROW_GROUP_ROWS) -> Iterator[bytes]:
    pa, _ = _pyarrow()
    schema = _buckets_schema(pa)

    def table(chunk: Sequence[tuple]) -> Any:
        columns = list(zip(*chunk, strict=True))
        return pa.Table.from_arrays([
            pa.array(columns[0], _time(pa)),
            *(_text(pa, columns[i]) for i in (1, 2, 3)),
            *(pa.array(columns[i], pa.float64()) for i in (4, 5, 6, 7)),
            pa.array(columns[8], pa.int64()),
        ], schema=schema)

    return _parquet(chunks, schema, table, row_group_rows)


def _pyarrow() -> tuple[Any, Any]:
    # imported when a Parquet file is written, not with this module: pyarrow costs a CSV export
    # (and the hub, until someone asks for Parquet) some 50 MB
    if "pyarrow" not in sys.modules:
        # Arrow picks its allocator from this variable, once (an operator's choice stands): the
        # system's, as mimalloc's per-thread caches kept 20 MB more of the hub's memory for the same
        # export. No other code of ours uses pyarrow.
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    import pyarrow
    import pyarrow.parquet

    return pyarrow, pyarrow.parquet


def _time(pa: Any) -> Any:
    return pa.timestamp("us", tz="UTC")


def _text(pa: Any, values: Sequence[str]) -> Any:
    """A dictionary-encoded string column, encoded here: pyarrow's ``dictionary_encode`` would load its
    compute kernels, some 10 MB of the hub's memory, for a few distinct names per chunk."""
    index: dict[str, int] = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(list(index), pa.string()))


def _readings_schema(pa: Any) -> Any:
    text = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([("ts", _time(pa), False), ("substation", text, False), ("device_id", text, False),
                      ("metric", text, False), ("value", pa.float64()), ("unit", text, False),
                      ("quality", pa.float64(), False), ("flags", text, False)])


def _buckets_schema(pa: Any) -> Any:
    text = pa.dictionary(pa.int32(), pa.string())
    return pa.schema([("bucket_start", _time(pa), False), ("substation", text, False), ("device_id", text, False),
                      ("metric", text, False), *((name, pa.float64(), False) for name in ("min", "max", "avg", "last")),
                      ("count", pa.int64(), False)])


def _parquet(chunks: Chunks, schema: Any, table: Callable[[Sequence[Any]], Any],
             row_group_rows: int) -> Iterator[bytes]:
    pa, pq = _pyarrow()
    sink = _Sink()
    out = pa.PythonFile(sink, mode="w")
    text = [f.name for f in schema if pa.types.is_dictionary(f.type)]  # numbers and times: plain, as they vary
    parquet = pq.ParquetWriter(out, schema, compression="snappy", use_dictionary=text)
    pending: list[Any] = []  # chunks as Arrow tables, for the next row group
    rows = 0

    def row_group() -> bytes:
        nonlocal rows
        parquet.write_table(pa.concat_tables(pending), row_group_size=rows)
        pending.clear()
        rows = 0
        return sink.take()

    try:
        for chunk in chunks:
            if chunk:
                pending.append(table(chunk))
                rows += len(chunk)
                del chunk  # its Python objects go; its Arrow columns are a fraction of them
                if rows >= row_group_rows:
                    yield row_group()
        if pending:
            yield row_group()
    finally:
        parquet.close()  # the footer; on an early stop, written to nobody
    yield sink.take()


class _Sink:
    """What pyarrow writes, held until the next :meth:`take` (a row group at most)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: Any) -> int:
        data = bytes(data)
        self._parts.append(data)
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data
