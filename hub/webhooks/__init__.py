"""Webhooks: new and escalated incidents pushed to receivers admins register, signed, retried,
every attempt recorded (``docs/webhooks.md``).

- :mod:`hub.webhooks.schemas`: the Structs the routes take and answer, and the body sent;
- :mod:`hub.webhooks.store`: webhooks, the delivery queue and log, in the hub's database;
- :mod:`hub.webhooks.dispatcher`: the task that reads incidents, queues and delivers (never
  called by ingest);
- :mod:`hub.webhooks.routes`: ``POST/GET /webhooks``, ``DELETE /webhooks/{id}``,
  ``GET /webhooks/{id}/deliveries`` (admins).
"""

from __future__ import annotations

from hub.webhooks.dispatcher import WebhookDispatcher, WebhookSettings, sign, webhook_settings_from_env
from hub.webhooks.routes import ROUTES
from hub.webhooks.store import WebhookStore

__all__ = ["ROUTES", "WebhookDispatcher", "WebhookSettings", "WebhookStore", "sign", "webhook_settings_from_env"]
