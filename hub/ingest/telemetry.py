"""Storing telemetry readings with their grid-code check: shared by POST /sensors/process and MQTT ingest;
and what each ingest boundary does with readings no instrument can give (:mod:`protocols.validation`).

- ``POST /sensors/process`` refuses the request (400 naming ``sensor_readings[3].value``):
  :func:`impossible_fields`;
- MQTT ingest turns such a reading into a dead letter (:mod:`hub.ingest.mqtt`);
- edge sync stores it, marked invalid (:func:`sanitise_sync`): the edge would resend a refused batch
  for ever. The edge's events with an impossible value or timestamp are stored and raise no incident.

Readings from HTTP and MQTT are de-duplicated on (device_id, metric, ts) by the storage
(``insert_new_readings``): a resent request stores nothing twice, and only the readings it stored
are checked against the grid code, so a resend adds no incident occurrences either.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import msgspec

from agents import grid_monitor
from hub.incidents.service import incident_from_finding
from hub.storage import Incident, Storage
from protocols.config import Limits
from protocols.reading import Reading
from protocols.validation import impossible_readings, sanitise_readings
from protocols.wire import SyncBatch

__all__ = ["MAX_ERRORS_LISTED", "impossible_fields", "incident_from_finding", "sanitise_sync", "store_telemetry"]

log = logging.getLogger(__name__)

MAX_ERRORS_LISTED = 100  # impossible readings named in one answer (the count says how many in all)


def store_telemetry(storage: Storage, readings: Sequence[Reading], nominals: Sequence[float | None],
                    limits: Limits, source: str) -> tuple[int, list[Incident]]:
    """Store the readings not held yet (on (device_id, metric, ts)), check those against the grid
    code, store the incidents found.

    Returns (readings stored, incidents). Blocking (storage is synchronous): call it in a thread.
    """
    if not readings:
        return 0, []
    new = storage.insert_new_readings(readings, source=source)
    if len(new) < len(readings):
        readings, nominals = [readings[i] for i in new], [nominals[i] for i in new]
    findings = grid_monitor.check_readings(readings, nominals, limits) if readings else []
    incidents = storage.add_incidents([incident_from_finding(f) for f in findings]) if findings else []
    return len(new), incidents


def impossible_fields(readings: Sequence[Reading], prefix: str, *, max_future_skew_s: float, floor: datetime,
                      now: datetime | None = None) -> list[dict[str, str]]:
    """The readings' impossible values and timestamps as a validation error's fields, named in the
    telemetry schema (``sensor_readings[3].value``, ``sensor_readings[0].timestamp``); at most
    :data:`MAX_ERRORS_LISTED`, then one entry saying how many more. Empty: all are possible."""
    bad = impossible_readings(readings, now=now, max_future_skew_s=max_future_skew_s, floor=floor)
    out = [{"key": f"{prefix}[{p.index}].{p.field}", "source": "body", "message": p.message}
           for p in bad[:MAX_ERRORS_LISTED]]
    if len(bad) > MAX_ERRORS_LISTED:
        out.append({"key": prefix, "source": "body",
                    "message": f"{len(bad) - MAX_ERRORS_LISTED} more impossible values or timestamps"})
    return out


def sanitise_sync(batch: SyncBatch, *, max_future_skew_s: float, floor: datetime,
                  now: datetime | None = None) -> SyncBatch:
    """``batch`` with its impossible readings marked (quality 0, INVALID; CLOCK_UNSYNC too for a
    timestamp), not refused: the edge resends a refused batch for ever. Logged once per batch."""
    run = batch.readings
    if run is None or not run.items:
        return batch
    items, marked = sanitise_readings(run.items, now=now, max_future_skew_s=max_future_skew_s, floor=floor)
    if not marked:
        return batch
    log.warning("edge %s (%s): %d of %d readings have an impossible value or timestamp; stored flagged invalid",
                batch.edge_id, batch.substation, marked, len(items))
    return msgspec.structs.replace(batch, readings=msgspec.structs.replace(run, items=items))
