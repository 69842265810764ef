"""Incidents: one per ongoing condition, raised by ingest and the agents, moved forward by operators.

- :mod:`hub.incidents.routes`: ``GET /incidents``, ``GET /incidents/{id}``,
  ``POST /incidents/{id}/status``, ``GET /stats`` (``ROUTES``);
- :mod:`hub.incidents.schemas`: what they take and answer (an incident is the shared
  :class:`protocols.incident.Incident`);
- :mod:`hub.incidents.service`: findings into incidents to record; the counts of ``/stats``.

Stored by :meth:`hub.storage.base.Storage.add_incidents` (the one upsert both backends share,
:func:`hub.storage.base.upsert_incidents`).
"""

from __future__ import annotations

from hub.incidents.routes import ROUTES

__all__ = ["ROUTES"]
