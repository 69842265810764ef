"""Data in: edges' sync batches, telemetry over HTTP and MQTT, OT log entries.

- :mod:`hub.ingest.routes`: ``POST /edge/sync``, ``POST /sensors/process``, ``POST /ot-logs`` (``ROUTES``);
- :mod:`hub.ingest.schemas`: what they answer;
- :mod:`hub.ingest.telemetry`: storing telemetry with its grid-code check, and what each boundary
  does with impossible readings (shared by HTTP and MQTT);
- :mod:`hub.ingest.mqtt`: the task that takes telemetry straight from a utility's MQTT broker.
"""

from __future__ import annotations

from hub.ingest.routes import ROUTES

__all__ = ["ROUTES"]
