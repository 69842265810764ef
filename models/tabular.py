"""Series from CSV files: reading, putting irregular samples on a regular grid, scoring as a stream.

``sentinel models score`` and ``sentinel models train --csv`` use these; so can anyone who wants
to try the detectors on their own history. numpy only (plus the runtime for scoring).

A CSV has a header, a timestamp column (``timestamp``, ``time``, ``ts``, ``date`` or
``datetime``, else the first column: ISO 8601, naive meaning UTC, or epoch seconds) and one or
more numeric value columns; empty cells, ``nan``, ``null`` and ``NA`` are missing values.
Columns that are not numeric are carried through untouched.

Irregular timestamps: the detectors count in samples, so samples are placed on a grid of the
median sampling interval. Rows closer together than that stay separate samples; a gap longer than
``gap_factor`` intervals becomes that many missing samples (at most ``max_gap_samples``), so a
gap is seen, and scored, as a dropout on the first row after it.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np

from models.detectors import ANOMALY_TYPES, DetectorConfig
from models.runtime import Model, Scorer

__all__ = ["ScoreSummary", "Table", "TableError", "read_csv", "regularise", "score_csv", "score_table"]

TIME_COLUMNS = ("timestamp", "time", "ts", "date", "datetime")
MISSING = {"", "nan", "NaN", "NAN", "null", "NULL", "None", "NA", "N/A", "-"}
Progress = Callable[[int, int], None]


class TableError(ValueError):
    """A CSV that cannot be read as a series: names the file, the row and what was wrong."""


@dataclass
class Table:
    """A CSV read for scoring: its raw lines (echoed on output), times and numeric columns."""

    path: str
    header: list[str]
    lines: list[str]  # data lines as read, without line endings
    time_column: str
    time_s: np.ndarray  # float64 seconds since the epoch, UTC
    columns: dict[str, np.ndarray] = field(default_factory=dict)  # value columns, float64, NaN = missing

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


def _parse_times(raw: list[str], path: str, column: str) -> np.ndarray:
    if not raw:
        return np.zeros(0)
    try:
        seconds = np.asarray([float(t) for t in raw])
        return seconds / 1000.0 if np.nanmedian(np.abs(seconds)) > 1e11 else seconds  # epoch ms
    except ValueError:
        pass
    tz_marked = any(t.endswith(("Z", "z")) or ("+" in t[10:]) or (t[10:].count("-") > 0) for t in raw[:1000])
    if not tz_marked:
        try:
            stamps = np.asarray(raw, dtype="datetime64[us]")
            return stamps.astype(np.int64) / 1e6
        except ValueError:
            pass
    out = np.empty(len(raw))
    for i, text in enumerate(raw):
        try:
            dt = datetime.fromisoformat(text.strip().replace("z", "Z"))
        except ValueError:
            raise TableError(f"{path}: row {i + 2}: {column} {text!r} is not an ISO 8601 time or epoch seconds") from None
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


def read_csv(path: str | Path, *, columns: Sequence[str] | None = None,
             time_column: str | None = None) -> Table:
    """Read a CSV of a timestamp and value columns (all numeric columns, or ``columns``)."""
    path = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(f"{path}: not UTF-8 text ({exc})") from exc
    lines = text.splitlines()
    if not lines:
        raise TableError(f"{path}: empty file")
    header = next(csv.reader([lines[0]]))
    data = [line for line in lines[1:] if line.strip()]
    rows = list(csv.reader(data))
    width = len(header)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise TableError(f"{path}: row {i + 2} has {len(row)} fields, the header has {width}")
    lowered = [h.strip().lower() for h in header]
    if time_column is None:
        tc = next((k for k, h in enumerate(lowered) if h in TIME_COLUMNS), 0)
    elif time_column in header:
        tc = header.index(time_column)
    else:
        raise TableError(f"{path}: no column {time_column!r} (columns: {', '.join(header)})")
    cols = list(zip(*rows)) if rows else [()] * width
    time_s = _parse_times(list(cols[tc]), path, header[tc])
    back = np.nonzero(np.diff(time_s) < 0)[0]
    if len(back):
        i = int(back[0]) + 1
        raise TableError(f"{path}: row {i + 2}: {header[tc]} {cols[tc][i]!r} is earlier than the row before; "
                         f"sort the file by time")
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
        values[name] = parsed
    if not values:
        raise TableError(f"{path}: no numeric value column (columns: {', '.join(header)})")
    return Table(path, header, data, header[tc], time_s, values)


def regularise(time_s: np.ndarray, *, period_s: float | None = None, gap_factor: float = 2.5,
               max_gap_samples: int = 64) -> tuple[np.ndarray, int, float]:
    """Place samples on a grid: ``(position of each row, number of samples, period)``.

    The period is the median positive interval unless given. A gap of ``dt > gap_factor * period``
    before a row inserts ``round(dt / period) - 1`` missing samples, at most ``max_gap_samples``.
    """
    t = np.asarray(time_s, dtype=np.float64)
    if len(t) == 0:
        return np.zeros(0, dtype=np.int64), 0, period_s or 1.0
    dt = np.diff(t)
    if period_s is None:
        positive = dt[dt > 0]
        period_s = float(np.median(positive)) if len(positive) else 1.0
    gaps = np.where(dt > gap_factor * period_s, np.minimum(np.rint(dt / period_s) - 1, max_gap_samples), 0)
    pos = np.arange(len(t), dtype=np.int64) + np.concatenate([[0], np.cumsum(gaps.astype(np.int64))])
    return pos, int(pos[-1]) + 1, period_s


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    samples: int  # rows plus the missing samples put in gaps
    period_s: float
    alarms: int  # rows at or above the threshold
    by_type: dict[str, int]
    model: str | None


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
              threshold: float = 0.5, progress: Progress | None = None) -> ScoreSummary:
    """Score a CSV and write its lines plus ``anomaly_score`` (0..1) and ``anomaly_type``.

    ``anomaly_type`` is ``none`` below ``threshold``. ``output`` is a path, a text stream, or
    ``None``/``"-"`` for stdout.
    """
    table = read_csv(path, columns=columns)
    score, codes, _conf, samples, period = score_table(table, model=model, config=config, progress=progress)
    codes = np.where(score >= threshold, codes, 0)
    names = np.asarray(ANOMALY_TYPES, dtype=object)[codes]
    header = io.StringIO()
    csv.writer(header, lineterminator="").writerow([*table.header, "anomaly_score", "anomaly_type"])
    body = "\n".join(f"{line},{s:.4f},{t}" for line, s, t in zip(table.lines, score.tolist(), names.tolist()))
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
                        model=model.label if model is not None else None)
