"""Readings to export and read back: a small, awkward dataset, and what exporting it must give."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from hub.storage.base import ReadingBucket, epoch_us, from_epoch_us
from protocols.reading import QualityFlag, Reading

__all__ = ["SERIES", "T0", "US", "dataset", "order_key", "reference_buckets"]

T0 = datetime(2026, 3, 1, 23, 0, tzinfo=UTC)  # the data crosses midnight: two daily partitions
US = timedelta(microseconds=1)
# byte order differs from a locale's: upper case before lower, 'Z' before 'a'; a name CSV must quote
SERIES = [("Zanzibar-S1", "TR-01", "oil_temperature", "degC"), ("arusha-s1", "TR-01", "oil_temperature", "degC"),
          ("arusha-s1", "FEEDER-F12", "voltage_l1", "kV"), ("arusha-s1", "FEEDER-F12", "current_l1", "A"),
          ("arusha-s1", 'feeder "F2", north', "voltage_l1", "kV")]


def dataset(hours: int = 3) -> list[Reading]:
    """Readings of five series every 20 s (many sharing a timestamp, not every series every time),
    some a microsecond before a minute's end, some without a value, some flagged (invalid ones hold
    999), anomaly scores here and there, and one reading three weeks later (a long gap). Values are
    multiples of 1/8, so every sum is exact on both backends."""
    out = []
    for i in range(hours * 180):
        for j, (sub, dev, metric, unit) in enumerate(SERIES):
            if (i + j) % 7 == 0:
                continue
            ts = T0 + timedelta(seconds=20 * i)
            if i % 3 == 0 and i % 41 < 3:
                ts -= US  # hh:mm:59.999999, a microsecond before a minute's bucket ends
            value: float | None = 100 + ((i * 5 + j * 3) % 97) / 8
            flags = 0
            if i % 53 == 7:
                value, flags = None, int(QualityFlag.COMM_LOST)
            elif i % 61 == 3:
                value, flags = 999.0, int(QualityFlag.INVALID)
            elif i % 29 == 2:
                flags = int(QualityFlag.STALE | QualityFlag.SUBSTITUTED)
            out.append(Reading(ts=ts, substation=sub, device_id=dev, metric=metric, value=value, unit=unit,
                               quality=0.5 if flags else 1.0, flags=flags, anomaly_score=0.25 if i % 10 == 0 else None,
                               anomaly_type="spike" if i % 20 == 0 else None))
    sub, dev, metric, unit = SERIES[2]
    out.append(Reading(ts=T0 + timedelta(days=21, seconds=30), substation=sub, device_id=dev, metric=metric,
                       value=101.5, unit=unit))
    return out


def order_key(r: Reading) -> tuple:
    """An export's order: time, then the series (str order is code-point order: UTF-8 byte order)."""
    return (r.ts, r.substation, r.device_id, r.metric)


def reference_buckets(rows: Iterable[Reading], start: datetime, end: datetime, bucket_s: int) -> list[ReadingBucket]:
    """min, max, avg, last (newest; of equal times the largest) and count per series and bucket of
    the readings in [start, end) that have a value and are not flagged invalid, in an export's order."""
    groups: dict[tuple, list[Reading]] = defaultdict(list)
    for r in rows:
        if start <= r.ts < end and r.value is not None and not r.flags & QualityFlag.INVALID:
            k = epoch_us(r.ts) // (bucket_s * 10**6)
            groups[(from_epoch_us(k * bucket_s * 10**6), r.substation, r.device_id, r.metric)].append(r)
    out = []
    for key in sorted(groups):
        values = [r.value for r in groups[key]]
        last = max(groups[key], key=lambda r: (r.ts, r.value)).value
        out.append(ReadingBucket(*key, min(values), max(values), sum(values) / len(values), last, len(values)))
    return out
