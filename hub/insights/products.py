"""The agents' products as served: forecasts cut to a window (``GET /forecast/next-24h`` and the
grid-status stream, :mod:`hub.stream`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

__all__ = ["forecast_window"]


def forecast_window(body: dict[str, Any], hours: int, now: datetime) -> dict[str, Any]:
    """A stored forecast with its points from the past hour on, at most ``hours`` of them."""
    out = {k: v for k, v in body.items() if k != "points"}
    points = body.get("points") or []
    out["points"] = [p for p in points if datetime.fromisoformat(p[0]) >= now - timedelta(hours=1)][:hours] or points[:hours]
    out["points_columns"] = ["timestamp", "value", "lower", "upper"]
    return out
