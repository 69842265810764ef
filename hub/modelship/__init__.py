"""Model shipping: the hub's signed model registry served to edges, and training at the hub.

- :mod:`hub.modelship.routes`: ``GET /models``, ``GET /models/{name}/latest``,
  ``GET /models/{name}/{version}/files/{kind}``, ``POST /retrain`` (``ROUTES``);
- :mod:`hub.modelship.schemas`: what they take and answer;
- :mod:`hub.modelship.training`: training from stored readings and experts' verdicts, signing and
  publishing the next version (``sentinel models train --from-database`` uses it too).

Not ``hub.models``: that would read as the top-level ``models`` package (features, training, ONNX,
the registry) that this one serves.
"""

from __future__ import annotations

from hub.modelship.routes import ROUTES

__all__ = ["ROUTES"]
