"""Readings out, as a dashboard or a script asks for them: one point's history (raw, or bucketed with
min, max, avg, last and count), the newest reading of every point, and an overview per substation.

Routes in :mod:`hub.readings.routes` (``ROUTES``), answers in :mod:`hub.readings.schemas`, the work in
:mod:`hub.readings.service`; every aggregate is computed by the database (SQLite or PostgreSQL, the
same answer from either). Users' guide: ``docs/readings-api.md``."""

from __future__ import annotations

from hub.readings.routes import ROUTES

__all__ = ["ROUTES"]
