"""EN 50160 compliance of a feeder's supply, from the readings the hub holds: weekly voltage
statistics (10-min means within Un +-10 % for 95 % of each week, all within +10 % / -15 %), yearly
power-frequency statistics (within 50 Hz +-1 % for 99.5 % of a year, all within +4 % / -6 %) and,
where a device reports it, weekly negative-sequence unbalance (<= 2 % for 95 % of each week).

Routes in :mod:`hub.compliance.routes` (``ROUTES``), answers in :mod:`hub.compliance.schemas`, the work
in :mod:`hub.compliance.service` (interval means by the database, the statistics by
:mod:`agents.grid_monitor.en50160`). Users' guide: ``docs/en50160.md``."""

from __future__ import annotations

from hub.compliance.routes import ROUTES

__all__ = ["ROUTES"]
