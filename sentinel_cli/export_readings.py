"""``sentinel export readings``: readings over a time range, raw or bucketed, as CSV or Parquet.

From a hub over HTTP (``--hub-url``, a viewer's key in ``$SENTINEL_API_KEY``; the hub's
``GET /export/readings``), or straight from a hub's database (``--database``, on the hub's
machine). Either way the file is written as it comes, a chunk at a time, into ``FILE.part``, renamed
to ``FILE`` only once whole: an export that fails half-way leaves no file that looks complete.
A progress line on stderr (when it is a terminal); one line to say what was written.
"""

from __future__ import annotations

import argparse
import os
import ssl
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from export.readings import BUCKETS, FORMATS, file_name, writer
from protocols.validation import parse_zoned_time
from sentinel_cli.progress import Progress

__all__ = ["add_parser"]

API_KEY_ENV = "SENTINEL_API_KEY"


class ExportError(Exception):
    """Something to tell the user in one line (exit status 2)."""


def add_parser(actions: Any) -> None:
    """Add ``readings`` under ``sentinel export``."""
    p = actions.add_parser(
        "readings", help="readings over a time range, raw or bucketed, as CSV or Parquet",
        description="Export readings over a time range (start inclusive, end exclusive), raw or as min/max/avg/"
                    "last/count per series and UTC minute, hour or day, as CSV or Parquet: from a hub over HTTP "
                    f"(--hub-url, a viewer's key in ${API_KEY_ENV}) or straight from a hub's database (--database).")
    p.add_argument("--start", required=True, help="from this time, ISO 8601 with a zone (2026-03-01T00:00:00Z)")
    p.add_argument("--end", required=True, help="to this time, ISO 8601 with a zone (exclusive)")
    p.add_argument("--substation", action="append", metavar="S", help="only this substation (repeatable)")
    p.add_argument("--device", action="append", metavar="D", help="only this device id (repeatable)")
    p.add_argument("--metric", action="append", metavar="M", help="only this metric (repeatable)")
    p.add_argument("--bucket", choices=list(BUCKETS), default="raw",
                   help="raw readings (default), or min/max/avg/last/count per minute, hour or day")
    p.add_argument("--format", choices=FORMATS, default="csv", dest="fmt", help="csv (default) or parquet")
    p.add_argument("--output", "-o", metavar="FILE", default=None,
                   help="the file to write, - for stdout (default: readings_<start>_<end>_<bucket>.<format> here)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--hub-url", metavar="URL", help=f"export through this hub (key: ${API_KEY_ENV})")
    source.add_argument("--database", metavar="URL",
                        help="export straight from this hub database (sqlite:///path.db, postgresql://...)")
    p.add_argument("--ca-file", metavar="PEM", help="with an https:// hub: trust these certificates")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.set_defaults(func=cmd_export_readings)


def cmd_export_readings(args: argparse.Namespace) -> int:
    try:
        start, end = _time("--start", args.start), _time("--end", args.end)
        if end <= start:
            raise ExportError(f"--end {args.end} is not after --start {args.start}")
        target = args.output or file_name(start, end, args.bucket, args.fmt)
        progress = _Progress(start, end, enabled=not args.no_progress)
        with _Output(target) as out, progress:
            if args.hub_url:
                _from_hub(args, start, end, out, progress)
            else:
                _from_database(args, start, end, out, progress)
    except ExportError as exc:
        print(f"sentinel: error: {exc}", file=sys.stderr)
        return 2
    rows = progress.rows if progress.rows is not None else _rows_in(target, args.fmt)
    what = f"{rows:,} {'buckets' if args.bucket != 'raw' else 'rows'}" if rows is not None else "the export"
    print(f"sentinel: wrote {what} ({progress.bytes / 1e6:,.1f} MB) to {'stdout' if target == '-' else target} "
          f"in {time.monotonic() - progress.began:.1f} s", file=sys.stderr)
    return 0


def _time(flag: str, text: str) -> datetime:
    try:
        return parse_zoned_time(text, flag)
    except ValueError as exc:
        raise ExportError(str(exc)) from None


# -- sources ----------------------------------------------------------------------------------------


def _from_hub(args: argparse.Namespace, start: datetime, end: datetime, out: IO[bytes],
              progress: _Progress) -> None:
    import httpx

    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        raise ExportError(f"no API key: set ${API_KEY_ENV} to a viewer's key (`sentinel hub keys add NAME --role "
                          "viewer` makes one)")
    params: list[tuple[str, str]] = [("start", start.isoformat()), ("end", end.isoformat()),
                                     ("bucket", args.bucket), ("format", args.fmt)]
    for name, values in (("substation", args.substation), ("device_id", args.device), ("metric", args.metric)):
        params += [(name, v) for v in values or ()]
    verify: Any = True
    if args.ca_file:
        try:
            verify = ssl.create_default_context(cafile=args.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ExportError(f"--ca-file {args.ca_file}: {exc}") from exc
    url = args.hub_url.rstrip("/")
    # a chunk may take a while to come (a window of buckets aggregated), never minutes
    timeout = httpx.Timeout(30.0, read=300.0)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, verify=verify,
                          timeout=timeout) as client, client.stream("GET", "/export/readings", params=params) as answer:
            if answer.status_code != 200:
                answer.read()
                raise ExportError(f"the hub at {url} answered {answer.status_code}: {_detail(answer)}")
            csv = args.fmt == "csv"
            for data in answer.iter_bytes():
                out.write(data)
                progress.add_bytes(data, csv=csv)
    except httpx.RemoteProtocolError as exc:
        raise ExportError(f"the hub at {url} broke off the export after {progress.bytes:,} bytes ({exc}); "
                          "nothing was written") from exc
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot export from the hub at {url}: {exc or type(exc).__name__}") from exc


def _from_database(args: argparse.Namespace, start: datetime, end: datetime, out: IO[bytes],
                   progress: _Progress) -> None:
    from hub.storage import open_storage, parse_database_url

    try:
        kind, target = parse_database_url(args.database)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if kind == "sqlite" and target != ":memory:" and not Path(target).is_file():
        raise ExportError(f"--database {args.database}: no such file")
    try:
        storage = open_storage(args.database)
    except Exception as exc:  # noqa: BLE001  (PostgresUnavailable, sqlite3.Error: one line either way)
        raise ExportError(f"cannot open {args.database}: {exc}") from exc
    try:
        filters = {"substations": args.substation, "devices": args.device, "metrics": args.metric}
        bucket_s = BUCKETS[args.bucket]
        if bucket_s is None:
            source = storage.iter_readings(start, end, **filters)
        else:
            source = storage.iter_buckets(start, end, bucket_s, **filters)
        try:
            for data in writer(args.fmt, bucketed=bucket_s is not None)(progress.counted(source)):
                out.write(data)
                progress.add_bytes(data)
        finally:
            source.close()
    finally:
        storage.close()


def _detail(answer: Any) -> str:
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:200] or answer.reason_phrase


def _rows_in(target: str, fmt: str) -> int | None:
    """Rows of a Parquet file written (a CSV's are counted as it is written)."""
    if target == "-" or fmt != "parquet":
        return None
    import pyarrow.parquet as pq

    return pq.read_metadata(target).num_rows


# -- output and progress ------------------------------------------------------------------------------


class _Output:
    """``FILE.part``, renamed to ``FILE`` when the block ends without an error, removed otherwise;
    ``-``: stdout."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._part = Path(f"{target}.part")
        self._file: IO[bytes] | None = None

    def __enter__(self) -> IO[bytes]:
        if self.target == "-":
            return sys.stdout.buffer
        try:
            self._file = self._part.open("wb")
        except OSError as exc:
            raise ExportError(f"cannot write {self._part}: {exc.strerror or exc}") from exc
        return self._file

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if self._file is None:
            sys.stdout.buffer.flush()
            return
        self._file.close()
        if exc_type is None:
            os.replace(self._part, self.target)
        else:
            self._part.unlink(missing_ok=True)


class _Progress:
    """Counts rows (or bytes) and the time reached, and shows them with the shared progress bar
    (:class:`sentinel_cli.progress.Progress`: drawn on a terminal, nothing otherwise) as how far
    through the requested range the export is."""

    def __init__(self, start: datetime, end: datetime, enabled: bool) -> None:
        self.start, self.span = start, (end - start).total_seconds()
        self.rows: int | None = None  # counted when they pass through here (database, CSV from a hub)
        self.bytes = 0
        self.at: datetime | None = None
        self.began = time.monotonic()
        self._newlines = 0
        # the range read so far, in days (hours for a range under three days)
        self._per, unit = (86400.0, "days") if self.span >= 3 * 86400 else (3600.0, "hours")
        self._bar = Progress("exporting", total=max(self.span, 0.0) / self._per, unit=unit, enabled=enabled)

    def __enter__(self) -> _Progress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.__exit__(*exc)

    def counted(self, chunks: Iterator[list[Any]]) -> Iterator[list[Any]]:
        """Pass the chunks on, counting rows and noting the time reached."""
        self.rows = 0
        for chunk in chunks:
            self.rows += len(chunk)
            if chunk:
                last = chunk[-1]
                self.at = last.ts if hasattr(last, "ts") else last[0]
            yield chunk
            del chunk  # before the next is read

    def add_bytes(self, data: bytes, *, csv: bool = False) -> None:
        self.bytes += len(data)
        if csv:  # rows: lines after the header; time reached: the last whole line's first field
            self._newlines += data.count(b"\n")
            self.rows = max(0, self._newlines - 1)
            end = data.rfind(b"\n")
            line = data[data.rfind(b"\n", 0, end) + 1:end] if end > 0 else b""
            if b"\n" in data[:end] and line:
                try:
                    self.at = datetime.fromisoformat(line.split(b",", 1)[0].decode())
                except ValueError:
                    pass
        self._show()

    def _show(self) -> None:
        if not self._bar.drawing:
            return
        done = 0.0
        if self.at is not None and self.span > 0:
            done = min(self.span, max(0.0, (self.at - self.start).total_seconds())) / self._per
        parts = [f"{self.rows:,} rows" if self.rows is not None else "", f"{self.bytes / 1e6:,.1f} MB",
                 f"at {self.at:%Y-%m-%d %H:%M}" if self.at is not None else ""]
        self._bar(done, detail=", ".join(p for p in parts if p))
