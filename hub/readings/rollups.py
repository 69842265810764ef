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
import math
import time
from datetime import UTC, datetime

from hub.storage import Storage

__all__ = ["BATCH_HOURS", "FILLING_EVERY_S", "TARGET_S", "refresh_rollups_forever"]

log = logging.getLogger(__name__)

BATCH_HOURS = 2_000  # the most marked (series, hour) pairs folded per transaction
TARGET_S = 0.05  # how long one refresh transaction should take
FILLING_EVERY_S = 60.0  # how often the hour still filling is folded (every round: the hours before it)


async def refresh_rollups_forever(storage: Storage, interval_s: float = 5.0,
                                  filling_every_s: float = FILLING_EVERY_S) -> None:
    """Fold every marked hour, then again every ``interval_s``; an error is logged once per kind and
    retried at the next round.

    The hour still filling (the current UTC hour, and any later one an edge's clock puts readings
    in) is folded at most every ``filling_every_s``: each sync marks it again, so folding it every
    round would claim and fold a mark per series every few seconds. A fold of it adds the readings
    that came since the last (whole only after a late one: docs/rollups.md); before marks carried
    their earliest reading, each fold re-read the hour so far, and with 10,000 series at 1 Hz that
    outgrew the 60 s. Questions do not wait for it: a question over the current hour reads that
    hour's readings (the ragged end), and a question's own whole hours are folded first.

    Each transaction folds as many marks as take about ``TARGET_S`` (learned from the last one: an
    hour of 1 Hz readings costs far more than an hour of minute ones), and the refresher rests as
    long as it worked before the next. A refresh holds the marks it folds, and an ingest marking
    the same hour waits for it (on SQLite, every storage call waits for it): with 2,000 marks a
    transaction, a backlog of 1 Hz series held edge syncs for over 10 s and took every pooled
    connection, so the whole hub stalled (benchmarks/bench_hub_http.py found it)."""
    said = ""
    batch = 16
    filled_at = -math.inf  # monotonic: when the hours still filling were last folded
    while True:
        try:
            everything = time.monotonic() - filled_at >= filling_every_s
            # None: every hour; else the hours before the current one
            before = None if everything else datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            round_started = time.monotonic()
            while True:
                started = time.monotonic()
                n = await asyncio.to_thread(storage.refresh_rollups, limit=batch, end=before)
                took = time.monotonic() - started
                full = n >= batch
                if n:
                    batch = max(1, min(BATCH_HOURS, int(n * TARGET_S / max(took, 1e-4))))
                if not full:
                    break
                await asyncio.sleep(took)  # half the time at most: ingest and questions go between
            if everything:
                filled_at = round_started
            said = ""
        except Exception as exc:  # noqa: BLE001  (the database may be restarting: next round)
            if type(exc).__name__ != said:
                log.warning("rollup refresh failed (%s: %s); retrying every %g s", type(exc).__name__, exc,
                            interval_s)
                said = type(exc).__name__
        await asyncio.sleep(interval_s)
