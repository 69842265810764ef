"""The compliance API's work: 10-min (and 10-s) means of a device's readings from storage
(:meth:`~hub.storage.base.Storage.iter_buckets`, the database's averages over epoch-aligned UTC
intervals, read chunk by chunk into arrays), held to EN 50160 by :mod:`agents.grid_monitor.en50160`.

Errors are :class:`~hub.readings.service.QueryError` (a 400 naming the parameter) and
:class:`~hub.readings.service.UnknownPoint` (no voltage, frequency or unbalance reading of the
device is held: a 404)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from agents.grid_monitor import en50160
from hub.compliance.schemas import (En50160Query, En50160Report, FrequencyCompliance, UnbalanceCompliance,
                                    VoltageCompliance)
from hub.readings.service import QueryError, UnknownPoint
from hub.storage.base import Storage, epoch_us
from protocols import gridcode

__all__ = ["DEFAULT_SPAN", "FREQUENCY_METRIC", "MAX_SPAN", "UNBALANCE_METRIC", "VOLTAGE_METRICS", "en50160_report"]

VOLTAGE_METRICS = ("voltage", "voltage_l1", "voltage_l2", "voltage_l3")
FREQUENCY_METRIC = "frequency"
UNBALANCE_METRIC = "voltage_unbalance"  # negative-sequence unbalance in %, where a device reports it
DEFAULT_SPAN = timedelta(days=28)
MAX_SPAN = timedelta(days=366)
CHUNK_ROWS = 20_000
SPACING_SAMPLE = 2_000  # raw readings read to find the frequency readings' spacing
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC)
_LATEST = datetime(9998, 12, 1, tzinfo=UTC)  # its weeks and year stay dates


def _series(storage: Storage, device_id: str, metric: str, substation: str | None, start: datetime,
            end: datetime, bucket_s: int) -> tuple[set[str], np.ndarray, np.ndarray]:
    """(substations, bucket starts in epoch s, bucket means) of one series over [start, end)."""
    subs: set[str] = set()
    ts: list[np.ndarray] = []
    avg: list[np.ndarray] = []
    for chunk in storage.iter_buckets(start, end, bucket_s, substations=[substation] if substation else None,
                                      devices=[device_id], metrics=[metric], chunk_rows=CHUNK_ROWS):
        subs.update(b.substation for b in chunk)
        ts.append(np.fromiter((epoch_us(b.bucket_start) for b in chunk), dtype=np.int64, count=len(chunk)))
        avg.append(np.fromiter((b.avg for b in chunk), dtype=np.float64, count=len(chunk)))
    t = np.concatenate(ts) // 10**6 if ts else np.empty(0, dtype=np.int64)
    return subs, t, np.concatenate(avg) if avg else np.empty(0)


def _spacing_sample(storage: Storage, device_id: str, metric: str, substation: str | None, start: datetime,
                    end: datetime) -> np.ndarray:
    chunks = storage.iter_readings(start, end, substations=[substation] if substation else None,
                                   devices=[device_id], metrics=[metric], chunk_rows=SPACING_SAMPLE)
    first: list = []
    try:
        for chunk in chunks:  # short time windows: a chunk may hold a few readings
            first += chunk
            if len(first) >= SPACING_SAMPLE:
                break
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return np.array([epoch_us(r.ts) / 1e6 for r in first if r.value is not None], dtype=np.float64)


def _one(found: set[str], device_id: str, substation: str | None) -> str | None:
    if len(found) > 1:
        raise QueryError("substation", f"device {device_id!r} has readings in this range from {len(found)} substations "
                                       f"({', '.join(sorted(found))}): name one")
    return next(iter(found), substation)


def en50160_report(storage: Storage, *, device_id: str, substation: str | None, start: datetime | None,
                   end: datetime | None, nominal: float | None, nominal_frequency_hz: float,
                   min_coverage: float) -> En50160Report:
    """``GET /compliance/en50160``. ``start``/``end`` in UTC (None: the 28 days before ``end``, which
    is now when None)."""
    if end is None and start is not None and start >= datetime.now(UTC):
        raise QueryError("start", f"{start.isoformat()} is in the future, and end (not given) is now")
    if nominal is not None and not (math.isfinite(nominal) and nominal > 0):
        raise QueryError("nominal", f"{nominal!r} is not a positive finite voltage")
    end = datetime.now(UTC) if end is None else end
    if end > _LATEST:
        raise QueryError("end", f"{end.isoformat()} is too far ahead: a year from it must be a date")
    if start is None:
        if end - _EARLIEST < DEFAULT_SPAN:
            raise QueryError("end", f"{end.isoformat()} leaves no {DEFAULT_SPAN.days} days before it: give start")
        start = end - DEFAULT_SPAN
    if start >= end:
        raise QueryError("start", f"{start.isoformat()} is not before end ({end.isoformat()})")
    if end - start > MAX_SPAN:
        raise QueryError("end", f"the range is {(end - start) / timedelta(days=1):.4g} days; ask at most "
                                f"{MAX_SPAN.days} days (a year of frequency statistics) per question")
    query = En50160Query(device_id=device_id, substation=substation, start=start, end=end, nominal=nominal,
                         nominal_frequency_hz=nominal_frequency_hz, min_coverage=min_coverage)
    s0, s1 = start.timestamp(), end.timestamp()
    found: set[str] = set()
    held = {m: storage.series_extent(device_id, m, substation)
            for m in (*VOLTAGE_METRICS, FREQUENCY_METRIC, UNBALANCE_METRIC)}
    if all(e is None for e in held.values()):
        where = f" in substation {substation!r}" if substation is not None else ""
        raise UnknownPoint(f"no voltage, frequency or unbalance reading of device {device_id!r} is held{where}")
    notes = ["10-min means are the database's averages of the stored readings over UTC-aligned intervals "
             "(not a class A instrument's r.m.s. aggregation); an interval with at least one reading counts "
             "as measured"]
    voltage = []
    for metric in VOLTAGE_METRICS:
        extent = held[metric]
        if extent is None:
            continue
        subs, t, v = _series(storage, device_id, metric, substation, start, end, en50160.TEN_MIN_S)
        found |= subs
        _one(found, device_id, substation)  # before the means: two substations' buckets would interleave
        if t.size == 0:
            notes.append(f"{metric}: no reading in the range")
            continue
        nom, source = nominal, "given"
        if nom is None:
            nom, source = gridcode.infer_nominal_voltage(float(np.median(v)), extent.unit), "inferred"
            if nom is None:
                raise QueryError("nominal", f"{metric}'s median 10-min mean {float(np.median(v)):.6g} "
                                            f"{extent.unit} is near no standard system voltage: give nominal")
        weeks = en50160.voltage_weeks(t, v, nom, start=s0, end=s1, aggregated=True, min_coverage=min_coverage)
        voltage.append(VoltageCompliance(metric=metric, unit=extent.unit, nominal=nom, nominal_source=source,
                                         summary=en50160.summarise(weeks), weeks=weeks))
    frequency = None
    if (extent := held[FREQUENCY_METRIC]) is not None:
        sample = _spacing_sample(storage, device_id, FREQUENCY_METRIC, substation, start, end)
        res = en50160.frequency_resolution_s(sample)
        subs, t, v = _series(storage, device_id, FREQUENCY_METRIC, substation, start, end, res)
        found |= subs
        _one(found, device_id, substation)  # before the means: two substations' buckets would interleave
        if t.size:
            years = en50160.frequency_years(t, v, nominal_frequency_hz, start=s0, end=s1, resolution_s=res,
                                            aggregated=True, min_coverage=min_coverage)
            frequency = FrequencyCompliance(metric=FREQUENCY_METRIC, unit=extent.unit, nominal_hz=nominal_frequency_hz,
                                            resolution_s=res, summary=en50160.summarise(years), years=years)
            if res > 10:
                notes.append(f"frequency: readings are {res} s apart or more, so {res}-s means are assessed in place "
                             "of EN 50160's 10-s means")
        else:
            notes.append("frequency: no reading in the range")
    unbalance = None
    if held[UNBALANCE_METRIC] is not None:
        subs, t, v = _series(storage, device_id, UNBALANCE_METRIC, substation, start, end, en50160.TEN_MIN_S)
        found |= subs
        _one(found, device_id, substation)  # before the means: two substations' buckets would interleave
        if t.size:
            weeks = en50160.unbalance_weeks(t, v, start=s0, end=s1, aggregated=True, min_coverage=min_coverage)
            unbalance = UnbalanceCompliance(metric=UNBALANCE_METRIC, summary=en50160.summarise(weeks), weeks=weeks)
    else:
        notes.append(f"unbalance: the device reports no {UNBALANCE_METRIC} (negative-sequence, %); phase "
                     "magnitudes alone do not give it")
    return En50160Report(query=query, substation=_one(found, device_id, substation), voltage=voltage,
                         frequency=frequency, unbalance=unbalance, notes=notes)
