"""The agents and their products: forecasts, maintenance predictions, grid status, explanations.

- :mod:`hub.insights.routes`: ``GET /agents``, ``POST /agents/run``, ``GET /forecast/next-24h``,
  ``GET /maintenance``, ``GET /grid-status`` (``ROUTES``); answers in :mod:`hub.insights.schemas`;
- :mod:`hub.insights.orchestrator`: runs the five agents (``agents/``) concurrently, on new data and
  on a schedule, each with a time budget;
- :mod:`hub.insights.elsewhere`: the agents in a process of their own (``sentinel hub agents``), woken
  from the database, and what a hub serving with ``--agents off`` shows of them;
- :mod:`hub.insights.agent_inputs`: storage reads shaped into the agents' inputs, and their
  products shaped back into incidents and documents;
- :mod:`hub.insights.explanations`: feature contributions behind a model-driven anomaly;
- :mod:`hub.insights.products`: the products as served (a forecast's window).
"""

from __future__ import annotations

from hub.insights.routes import ROUTES

__all__ = ["ROUTES"]
