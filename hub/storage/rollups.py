"""Questions answered from the rollups, the same on every engine (docs/rollups.md).

A bucketed question of a rolled-up width (1 minute, 1 hour, 1 day) splits its range in three: the
whole buckets inside it (:func:`hub.storage.base.rollup_span`), read from the rollups, and the two
ragged ends, aggregated from the raw readings (:meth:`RollupSource.raw_buckets`, as ``iter_buckets``
gives them). Each engine gives only the rollup rows of the whole buckets, exact when it returns them
(:meth:`RollupSource.rollup_buckets`), and those short raw ranges:

- SQLite and plain PostgreSQL fold the hours ingest marked in the range first (``refresh_rollups``),
  then read table ``rollups``;
- TimescaleDB refreshes its continuous aggregates over the range first (a no-op unless readings
  arrived there since), then reads them.

The mean is sum / count, kept within [min, max] against rounding; each engine computes it in its
query and gives the buckets as they are answered (a year of hours, 8,760 rows, is built once, not
as a row and then a bucket: half the time and fewer collections by the garbage collector).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Protocol

from hub.storage.base import ROLLUP_WIDTHS, HourlyMean, ReadingBucket, ShardSpec, rollup_span

__all__ = ["ROLLUP_MEAN", "RollupSource", "hourly_means", "series_buckets"]

# the mean of a rollup as each engine computes it in SQL (sum / count, kept within [min, max])
ROLLUP_MEAN = "{least}({greatest}(vsum / n, vmin), vmax)"


class RollupSource(Protocol):
    """What an engine gives the shared questions."""

    def rollup_buckets(self, width: int, start: datetime, end: datetime, metrics: Sequence[str], *,
                       device_id: str | None = None, substation: str | None = None,
                       shard: ShardSpec | None = None) -> list[ReadingBucket]:
        """The rollups of ``width`` seconds over [start, end) (whole buckets of it) of the given metrics
        (and device, substation, shard's substations) as buckets (the mean as :data:`ROLLUP_MEAN`), up
        to date with every reading stored; ordered by bucket, then substation."""
        ...

    def raw_buckets(self, start: datetime, end: datetime, width: int, metrics: Sequence[str], *,
                    device_id: str | None = None, substation: str | None = None,
                    shard: ShardSpec | None = None) -> list[ReadingBucket]:
        """``iter_buckets`` of a short range (under two buckets: a ragged end), in one query on a
        connection the engine holds already."""
        ...

    def iter_buckets(self, start: datetime, end: datetime, bucket_s: int, *,
                     substations: Sequence[str] | None = None, devices: Sequence[str] | None = None,
                     metrics: Sequence[str] | None = None, chunk_rows: int = 50_000) -> Iterator[list[ReadingBucket]]:
        ...


def series_buckets(source: RollupSource, start: datetime, end: datetime, bucket_s: int, device_id: str,
                   metric: str, substation: str | None = None) -> list[ReadingBucket]:
    """``Storage.series_buckets``: rollups over the whole buckets, raw readings at the ragged ends."""
    if bucket_s not in ROLLUP_WIDTHS:  # any range, in chunks
        return [b for chunk in source.iter_buckets(start, end, bucket_s, substations=None if substation is None
                                                   else [substation], devices=[device_id], metrics=[metric])
                for b in chunk]

    def from_readings(lo: datetime, hi: datetime) -> list[ReadingBucket]:
        return source.raw_buckets(lo, hi, bucket_s, [metric], device_id=device_id, substation=substation) \
            if lo < hi else []

    span = rollup_span(start, end, bucket_s)
    if span is None:  # under two buckets
        return from_readings(start, end)
    a, b = span
    whole = source.rollup_buckets(bucket_s, a, b, [metric], device_id=device_id, substation=substation)
    # (bucket, substation) order: the ragged start's bucket, the whole ones, the ragged end's
    head, tail = from_readings(start, a), from_readings(b, end)
    if head or tail:
        whole = [*head, *whole, *tail]
    return whole


def hourly_means(source: RollupSource, metrics: Sequence[str], start: datetime, end: datetime,
                 shard: ShardSpec | None = None) -> list[HourlyMean]:
    """``Storage.hourly_means``: the 1-hour rollups over the whole hours, raw readings at the ragged
    ends; ordered by series, then hour."""
    if not metrics:
        return []
    metrics = list(dict.fromkeys(metrics))
    span = rollup_span(start, end, 3600)
    pieces = [(start, end)] if span is None else [(start, span[0]), (span[1], end)]
    out = [HourlyMean(b.substation, b.device_id, b.metric, b.bucket_start, b.avg, b.count)
           for lo, hi in pieces if lo < hi for b in source.raw_buckets(lo, hi, 3600, metrics, shard=shard)]
    if span is not None:
        out += [HourlyMean(r.substation, r.device_id, r.metric, r.bucket_start, r.avg, r.count)
                for r in source.rollup_buckets(3600, span[0], span[1], metrics, shard=shard)]
    return sorted(out, key=lambda h: (h.substation, h.device_id, h.metric, h.hour))
