"""The hub's rollup refresher: folds the hours marked by ingest into the 1-minute, 1-hour and 1-day
rollups (``hub.storage`` ``refresh_rollups``), so a question over months finds them ready.

Questions are exact without it: a bucketed question refreshes the marked hours of its own range
first (``series_buckets``, ``hourly_means``). The refresher only keeps that work small. On several
hub replicas each runs one; they take different marks (``FOR UPDATE SKIP LOCKED`` on PostgreSQL).
On TimescaleDB nothing is marked and each round returns at once: the continuous aggregates'
refresh jobs run inside the database (``hub.storage.postgres``, schema migration 4).
"""

from __future__ import annotations

import asyncio
import logging

from hub.storage import Storage

__all__ = ["BATCH_HOURS", "refresh_rollups_forever"]

log = logging.getLogger(__name__)

BATCH_HOURS = 2_000  # marked (series, hour) pairs folded per transaction


async def refresh_rollups_forever(storage: Storage, interval_s: float = 5.0) -> None:
    """Fold every marked hour, then again every ``interval_s``; an error is logged once per kind and
    retried at the next round (ingest and questions never wait on this)."""
    said = ""
    while True:
        try:
            while await asyncio.to_thread(storage.refresh_rollups, limit=BATCH_HOURS) >= BATCH_HOURS:
                await asyncio.sleep(0)  # other tasks between batches
            said = ""
        except Exception as exc:  # noqa: BLE001  (the database may be restarting: next round)
            if type(exc).__name__ != said:
                log.warning("rollup refresh failed (%s: %s); retrying every %g s", type(exc).__name__, exc,
                            interval_s)
                said = type(exc).__name__
        await asyncio.sleep(interval_s)
