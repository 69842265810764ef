"""The hub about itself: ``GET /healthz`` (:mod:`hub.system.routes`). Its metrics are
:mod:`hub.metrics` (``GET /metrics``)."""

from __future__ import annotations

from hub.system.routes import ROUTES

__all__ = ["ROUTES"]
