"""Series from CSV files: reading, putting irregular samples on a regular grid, scoring as a stream.

``sentinel models score`` and ``sentinel models train --csv`` use these; so can anyone who wants
to try the detectors on their own history. numpy only (plus the runtime for scoring).

A CSV has a header, a timestamp column (``timestamp``, ``time``, ``ts``, ``date`` or
``datetime``, else the first column: ISO 8601, naive meaning UTC, or epoch seconds) and one or
more numeric value columns; empty cells, ``nan``, ``null`` and ``NA`` are missing values.
Columns that are not numeric are carried through untouched.

Files from the field as they are: the delimiter is the header's (``,``, ``;``, tab); dates may
also be written day or month first (``31-12-2004 01:00``). Rows out of time order (a logger's clock
stepping back, a daylight-saving hour repeated, a file written newest day first) are sorted, rows
repeating a time are averaged into one sample, and :class:`TimeReport` says which rows, per row;
``strict=True`` refuses such a file instead (at its first such row).

Irregular timestamps: the detectors count in samples, so samples are placed on a grid of the
median sampling interval. Rows closer together than that stay separate samples; a gap longer than
``gap_factor`` intervals becomes that many missing samples (at most ``max_gap_samples``), so a
gap is seen, and scored, as a dropout on the first row after it.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np

from models.detectors import ANOMALY_TYPES, DetectorConfig
from models.runtime import Model, Scorer

__all__ = ["ScoreSummary", "Table", "TableError", "TimeReport", "read_csv", "regularise", "score_csv", "score_table"]

TIME_COLUMNS = ("timestamp", "time", "ts", "date", "datetime")
MISSING = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A", "-"}
Progress = Callable[[int, int], None]


class TableError(ValueError):
    """A CSV that cannot be read as a series: names the file, the row and what was wrong."""


def _duration(seconds: float) -> str:
    s = abs(float(seconds))
    if s >= 3 * 86400:
        return f"{s / 86400:.3g} d"
    if s >= 3600:
        return f"{s / 3600:.3g} h"
    if s >= 60:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


def _iso(t: float) -> str:
    return datetime.fromtimestamp(float(t), timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class TimeReport:
    """What reading a file did about its timestamps, per row. Rows are the file's line numbers (header = 1).

    - ``steps_back``: rows whose time is earlier than the row just above them (a clock stepping back,
      a daylight-saving repeat, a file not in time order), with how far back (``back_s``); all rows are
      kept and put in time order (a stable sort)
    - ``out_of_order``: how many rows were earlier than some row above them (the rows the sort moved)
    - ``repeated``: rows whose time equals an earlier row's: with ``duplicates="mean"`` they share one
      sample holding the mean of their values (every row is kept and gets that sample's score); with
      ``"first"`` the later rows are dropped
    - ``gaps``: rows after an interval longer than ``gap_factor`` sampling periods (a clock stepping
      forward, or data missing), with the interval (``gap_s``); ``regularise`` makes the longer ones
      (over 2.5 periods) missing samples
    """

    rows: int
    period_s: float = 1.0
    steps_back: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    back_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    out_of_order: int = 0
    repeated: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    repeats_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # the row each repeats
    duplicates: str = "mean"
    gaps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    gap_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gap_factor: float = 1.5

    @property
    def clean(self) -> bool:
        """No step back, no repeated time (gaps alone are ordinary missing data)."""
        return not len(self.steps_back) and not len(self.repeated)

    def summary(self) -> str:
        """One line: what was found and done, or that the times were in order."""
        parts = []
        if len(self.steps_back):
            hours = int(np.sum(np.abs(self.back_s - 3600.0) < 1.0))
            dst = f", {hours} of them by exactly 1 h" if hours else ""
            parts.append(f"{len(self.steps_back)} steps back in time{dst} ({self.out_of_order} rows out of order, "
                         f"sorted by time, none dropped)")
        if len(self.repeated):
            done = "averaged into one sample" if self.duplicates == "mean" else "later ones dropped"
            parts.append(f"{len(self.repeated)} rows repeat an earlier row's time ({done})")
        if len(self.gaps):
            parts.append(f"{len(self.gaps)} gaps (intervals over {self.gap_factor:g} periods of "
                         f"{_duration(self.period_s)})")
        if not parts:
            return f"timestamps: {self.rows} rows in time order, no repeats, no gaps"
        return "timestamps: " + "; ".join(parts)

    def details(self, limit: int = 5) -> list[str]:
        """The first ``limit`` rows of each kind, e.g. ``row 26: 2 d 23 h earlier than row 25``."""
        out = []
        for row, back in list(zip(self.steps_back.tolist(), self.back_s.tolist()))[:limit]:
            out.append(f"row {row}: {_duration(back)} earlier than the row above (step back)")
        for row, first in list(zip(self.repeated.tolist(), self.repeats_of.tolist()))[:limit]:
            done = "averaged" if self.duplicates == "mean" else "dropped"
            out.append(f"row {row}: same time as row {first} ({done})")
        for row, gap in list(zip(self.gaps.tolist(), self.gap_s.tolist()))[:limit]:
            out.append(f"row {row}: {_duration(gap)} after the previous sample (gap)")
        return out


@dataclass
class Table:
    """A CSV read for scoring: its raw lines (echoed on output), times and numeric columns.

    Rows are in time order (see :class:`TimeReport`); ``line_numbers`` are their lines in the file.
    """

    path: str
    header: list[str]
    lines: list[str]  # data lines as read, without line endings, in time order
    time_column: str
    time_s: np.ndarray  # float64 seconds since the epoch, UTC, not decreasing
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # value columns, float64, NaN = missing
    delimiter: str = ","
    line_numbers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    timestamps: TimeReport | None = None  # what was done about out-of-order and repeated times

    @property
    def rows(self) -> int:
        return len(self.time_s)

    def values(self, names: Sequence[str] | None = None) -> np.ndarray:
        names = list(self.columns) if names is None else list(names)
        return np.stack([self.columns[n] for n in names], axis=1)

    def time_range(self) -> tuple[str | None, str | None]:
        if not self.rows:
            return None, None
        iso = [datetime.fromtimestamp(float(t), timezone.utc).isoformat() for t in (self.time_s[0], self.time_s[-1])]
        return iso[0], iso[1]


# dates written day or month first: 31-12-2004 01:00, 12/31/2004, 31.12.2004 01:00:00
_NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})([-./])(\d{1,2})\2(\d{4})(?:[ T](\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?))?\s*$")


def _reorder_numeric_dates(raw: list[str], path: str, column: str, line_no: np.ndarray) -> list[str]:
    """``DD-MM-YYYY [HH:MM[:SS]]`` (or month first) as ISO 8601; day first unless the values say otherwise
    (a first field above 12 means day first, a second one above 12 month first; ``/`` alone means month first)."""
    parts = []
    for i, text in enumerate(raw):
        m = _NUMERIC_DATE.match(text)
        if m is None:
            raise TableError(f"{path}: row {line_no[i]}: {column} {text!r} is not a date like {raw[0].strip()!r} "
                             f"(nor ISO 8601 or epoch seconds)")
        parts.append(m.groups())
    first = np.fromiter((int(p[0]) for p in parts), dtype=np.int64, count=len(parts))
    second = np.fromiter((int(p[2]) for p in parts), dtype=np.int64, count=len(parts))
    if (first > 12).any() and (second > 12).any():
        i = int(np.argmax(second > 12))
        raise TableError(f"{path}: row {line_no[i]}: {column} {raw[i]!r}: neither day nor month first fits every row")
    day_first = bool((first > 12).any()) or (not (second > 12).any() and parts[0][1] != "/")
    out = []
    for d, _sep, mo, y, hms in parts:
        day, month = (d, mo) if day_first else (mo, d)
        clock = f"T{hms if hms.count(':') == 2 or '.' in hms else hms + ':00'}" if hms else ""
        if clock and len(clock.split(":")[0]) == 2:  # T1:00 -> T01:00
            clock = "T0" + clock[1:]
        out.append(f"{y}-{int(month):02d}-{int(day):02d}{clock}")
    return out


def _parse_times(raw: list[str], path: str, column: str, line_no: np.ndarray | None = None) -> np.ndarray:
    """Seconds since the epoch (UTC) of every cell; a cell that is no time raises naming its row."""
    if not raw:
        return np.zeros(0)
    line_no = np.arange(2, len(raw) + 2) if line_no is None else line_no
    try:
        seconds = np.asarray([float(t) for t in raw])
        bad = ~np.isfinite(seconds)
        if bad.any():
            i = int(np.argmax(bad))
            raise TableError(f"{path}: row {line_no[i]}: {column} {raw[i]!r} is not a time")
        return seconds / 1000.0 if np.nanmedian(np.abs(seconds)) > 1e11 else seconds  # epoch ms
    except ValueError as exc:
        if isinstance(exc, TableError):
            raise
    if _NUMERIC_DATE.match(raw[0]):
        raw = _reorder_numeric_dates(raw, path, column, line_no)
    tz_marked = any(t.endswith(("Z", "z")) or ("+" in t[10:]) or (t[10:].count("-") > 0) for t in raw[:1000])
    if not tz_marked:
        try:
            stamps = np.asarray([t.strip() for t in raw], dtype="datetime64[us]")
            nat = np.isnat(stamps)
            if not nat.any():
                return stamps.astype(np.int64) / 1e6
        except ValueError:
            pass
    out = np.empty(len(raw))
    for i, text in enumerate(raw):
        try:
            dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
        except ValueError:
            raise TableError(f"{path}: row {line_no[i]}: {column} {text!r} is not an ISO 8601 time or epoch "
                             f"seconds") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        out[i] = dt.timestamp()
    return out


def _parse_numbers(raw: list[str]) -> np.ndarray | None:
    """The column as float64 (NaN for missing cells), or None if it is not a numeric column."""
    out = np.empty(len(raw))
    bad = 0
    for i, text in enumerate(raw):
        t = text.strip()
        if t in MISSING:
            out[i] = np.nan
            continue
        try:
            out[i] = float(t)
        except ValueError:
            out[i] = np.nan
            bad += 1
            if bad > max(10, len(raw) // 100):
                return None
    return out


def _sniff_delimiter(header_line: str) -> str:
    """The header's most frequent of ``,``, ``;``, tab and ``|`` (``,`` if none)."""
    counts = {d: header_line.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _order_times(time_s: np.ndarray, line_no: np.ndarray, *, path: str, column: str, raw: Sequence[str],
                 strict: bool, duplicates: str, gap_factor: float) -> tuple[np.ndarray, np.ndarray, TimeReport]:
    """``(order, keep, report)``: the stable sort putting rows in time order, which of the sorted rows
    to keep (``duplicates="first"`` drops repeats), and the per-row report."""
    n = len(time_s)
    dt = np.diff(time_s)
    back = np.nonzero(dt < 0)[0] + 1
    if strict and len(back):
        i = int(back[0])
        raise TableError(f"{path}: row {line_no[i]}: {column} {raw[i]!r} is earlier than the row before "
                         f"({raw[i - 1]!r}); sort the file by time (or read it without --strict)")
    running = np.maximum.accumulate(time_s) if n else time_s
    out_of_order = int(np.sum(time_s[1:] < running[:-1])) if n else 0
    order = np.argsort(time_s, kind="stable")
    t = time_s[order]
    same = np.nonzero(np.diff(t) == 0)[0] + 1  # sorted positions repeating the one before
    if strict and len(same):
        i = int(order[same[0]])
        raise TableError(f"{path}: row {line_no[i]}: {column} {raw[i]!r} repeats an earlier row's time "
                         f"(read it without --strict to average them)")
    group_start = np.maximum.accumulate(np.where(np.concatenate([[True], np.diff(t) != 0]), np.arange(n), 0))
    keep = np.ones(n, dtype=bool)
    if duplicates == "first":
        keep[same] = False
    positive = np.diff(t)[np.diff(t) > 0]
    period = float(np.median(positive)) if len(positive) else 1.0
    dts = np.diff(t)
    gap_at = np.nonzero(dts > gap_factor * period)[0] + 1
    report = TimeReport(
        rows=n, period_s=period, steps_back=line_no[back], back_s=-dt[back - 1], out_of_order=out_of_order,
        repeated=line_no[order[same]], repeats_of=line_no[order[group_start[same]]], duplicates=duplicates,
        gaps=line_no[order[gap_at]], gap_s=dts[gap_at - 1], gap_factor=gap_factor)
    return order, keep, report


def read_csv(path: str | Path, *, columns: Sequence[str] | None = None,
             time_column: str | None = None, strict: bool = False, duplicates: str = "mean",
             gap_factor: float = 1.5) -> Table:
    """Read a CSV of a timestamp and value columns (all numeric columns, or ``columns``).

    The delimiter is the header's (``,``, ``;``, tab or ``|``). Rows come back in time order: rows
    out of order (a clock stepping back, a daylight-saving repeat, a file written newest day first)
    are sorted, and rows repeating a time are averaged (``duplicates="mean"``: every row keeps its
    line, all get the mean of their values) or dropped after the first (``"first"``); the table's
    :class:`TimeReport` says which rows (and which follow an interval over ``gap_factor`` periods).
    ``strict=True`` refuses such a file at its first such row.
    A cell that is no time, a row with the wrong number of fields or a file without a numeric column
    is a :class:`TableError` naming the file, the row (its line number) and the column.
    """
    if duplicates not in ("mean", "first"):
        raise ValueError(f"duplicates must be 'mean' or 'first', got {duplicates!r}")
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text ({exc})") from exc
    lines = text.splitlines()
    if not lines:
        raise TableError(f"{path}: empty file")
    delimiter = _sniff_delimiter(lines[0])
    header = next(csv.reader([lines[0]], delimiter=delimiter))
    numbered = [(k + 2, line) for k, line in enumerate(lines[1:]) if line.strip()]
    data = [line for _, line in numbered]
    line_no = np.fromiter((k for k, _ in numbered), dtype=np.int64, count=len(numbered))
    rows = list(csv.reader(data, delimiter=delimiter))
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise TableError(f"{path}: row {line_no[i]} has {len(row)} fields, the header has {width} "
                             f"(delimiter {delimiter!r})")
    lowered = [h.strip().lower() for h in header]
    if time_column is None:
        tc = next((k for k, h in enumerate(lowered) if h in TIME_COLUMNS), 0)
    elif time_column in header:
        tc = header.index(time_column)
    else:
        raise TableError(f"{path}: no column {time_column!r} (columns: {', '.join(header)})")
    cols = list(zip(*rows)) if rows else [()] * width
    raw_times = list(cols[tc])
    time_s = _parse_times(raw_times, path, header[tc], line_no)
    order, keep, report = _order_times(time_s, line_no, path=path, column=header[tc], raw=raw_times,
                                       strict=strict, duplicates=duplicates, gap_factor=gap_factor)
    values: dict[str, np.ndarray] = {}
    wanted = [h for k, h in enumerate(header) if k != tc] if columns is None else list(columns)
    for name in wanted:
        if name not in header:
            raise TableError(f"{path}: no column {name!r} (columns: {', '.join(header)})")
        parsed = _parse_numbers(list(cols[header.index(name)]))
        if parsed is None:
            if columns is not None:
                raise TableError(f"{path}: column {name!r} is not numeric")
            continue
        values[name] = parsed[order]
    if not values:
        raise TableError(f"{path}: no numeric value column (columns: {', '.join(header)})")
    time_sorted = time_s[order]
    if len(report.repeated) and duplicates == "mean":
        _, group = np.unique(time_sorted, return_inverse=True)
        for name, v in values.items():
            ok = np.isfinite(v)
            sums = np.bincount(group, weights=np.where(ok, v, 0.0))
            counts = np.bincount(group, weights=ok.astype(np.float64))
            with np.errstate(invalid="ignore", divide="ignore"):
                values[name] = (sums / counts)[group]  # NaN where no row of the time has a value
    sel = order[keep]
    return Table(path, header, [data[i] for i in sel], header[tc], time_sorted[keep],
                 {k: v[keep] for k, v in values.items()}, delimiter=delimiter, line_numbers=line_no[sel],
                 timestamps=report)


def regularise(time_s: np.ndarray, *, period_s: float | None = None, gap_factor: float = 2.5,
               max_gap_samples: int = 64) -> tuple[np.ndarray, int, float]:
    """Place samples on a grid: ``(position of each row, number of samples, period)``.

    The period is the median positive interval unless given. Rows with the same time share a
    position (``read_csv`` has averaged their values). A gap of ``dt > gap_factor * period`` before a
    row inserts ``round(dt / period) - 1`` missing samples, at most ``max_gap_samples``.
    """
    t = np.asarray(time_s, dtype=np.float64)
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64), 0, period_s or 1.0
    dt = np.diff(t)
    if period_s is None:
        positive = dt[dt > 0]
        period_s = float(np.median(positive)) if len(positive) else 1.0
    gaps = np.where(dt > gap_factor * period_s, np.minimum(np.rint(dt / period_s) - 1, max_gap_samples), 0)
    steps = (dt != 0).astype(np.int64) + gaps.astype(np.int64)
    pos = np.concatenate([[0], np.cumsum(steps)]).astype(np.int64)
    return pos, int(pos[-1]) + 1, period_s


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    samples: int  # rows plus the missing samples put in gaps
    period_s: float
    alarms: int  # rows at or above the threshold
    by_type: dict[str, int]
    model: str | None
    timestamps: TimeReport | None = None  # rows out of order, repeated times, gaps (read_csv's report)


def _model_keys(table_columns: list[str], model: Model | None) -> list[tuple[str, str]]:
    """Series keys for the table's columns; a one-input model reads a one-column table whatever its name."""
    if model is not None and len(model.spec.inputs) == 1 and len(table_columns) == 1:
        return [("csv", model.spec.inputs[0])]
    if model is not None:
        missing = [i for i in model.spec.inputs if i not in table_columns]
        if missing:
            raise TableError(f"model {model.label} reads columns {list(model.spec.inputs)}; the file has "
                             f"no {', '.join(missing)} (value columns: {', '.join(table_columns)})")
    return [("csv", c) for c in table_columns]


def score_table(table: Table, *, model: Model | None = None, config: DetectorConfig | None = None,
                chunk: int = 16384, progress: Progress | None = None,
                gap_factor: float = 2.5) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
    """Score every row causally, as a stream: ``(score, type code, confidence, samples, period)``.

    With several value columns a row's score is its highest column's, with that column's type.
    """
    names = list(table.columns)
    w = (config or DetectorConfig()).window
    pos, samples, period = regularise(table.time_s, gap_factor=gap_factor, max_gap_samples=2 * w)
    grid = np.full((len(names), samples), np.nan)
    grid[:, pos] = table.values(names).T
    scorer = Scorer(model, config=config)
    keys = _model_keys(names, model)
    score = np.zeros(samples, dtype=np.float32)
    codes = np.zeros(samples, dtype=np.int8)
    conf = np.zeros(samples, dtype=np.float32)
    rows_done = 0
    for lo in range(0, samples, chunk):
        hi = min(samples, lo + chunk)
        out = scorer.score_block(keys, grid[:, lo:hi])
        top = out.score.argmax(axis=0)
        cols = np.arange(hi - lo)
        score[lo:hi] = out.score[top, cols]
        codes[lo:hi] = out.type[top, cols]
        conf[lo:hi] = out.confidence[top, cols]
        if progress is not None:
            rows_done = int(np.searchsorted(pos, hi))
            progress(rows_done, table.rows)
    return score[pos], codes[pos], conf[pos], samples, period


def score_csv(path: str | Path, output: str | Path | TextIO | None = None, *, model: Model | None = None,
              columns: Sequence[str] | None = None, config: DetectorConfig | None = None,
              threshold: float = 0.5, progress: Progress | None = None, strict_times: bool = False) -> ScoreSummary:
    """Score a CSV and write its lines plus ``anomaly_score`` (0..1) and ``anomaly_type``.

    ``anomaly_type`` is ``none`` below ``threshold``. ``output`` is a path, a text stream, or
    ``None``/``"-"`` for stdout.
    """
    table = read_csv(path, columns=columns, strict=strict_times)
    score, codes, _conf, samples, period = score_table(table, model=model, config=config, progress=progress)
    codes = np.where(score >= threshold, codes, 0)
    names = np.asarray(ANOMALY_TYPES, dtype=object)[codes]
    header = io.StringIO()
    d = table.delimiter  # the input's: a semicolon file stays one
    csv.writer(header, lineterminator="", delimiter=d).writerow([*table.header, "anomaly_score", "anomaly_type"])
    body = "\n".join(f"{line}{d}{s:.4f}{d}{t}" for line, s, t in zip(table.lines, score.tolist(), names.tolist()))
    text = header.getvalue() + "\n" + body + ("\n" if body else "")
    if output is None or output == "-":
        sys.stdout.write(text)
    elif hasattr(output, "write"):
        output.write(text)  # type: ignore[union-attr]
    else:
        Path(output).write_text(text)  # type: ignore[arg-type]
    alarm_types = names[score >= threshold]
    kinds, counts = np.unique(alarm_types.astype(str), return_counts=True) if len(alarm_types) else ([], [])
    return ScoreSummary(rows=table.rows, samples=samples, period_s=period, alarms=int((score >= threshold).sum()),
                        by_type={str(k): int(c) for k, c in zip(kinds, counts)},
                        model=model.label if model is not None else None, timestamps=table.timestamps)
