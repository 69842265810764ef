"""The operator's dashboard: ``/dashboard`` (and ``/``), behind the login (``/login``).

A page, a few KB of our own JavaScript and stylesheet (``hub/static/dashboard``) and uPlot
(``hub/static/vendor/uplot``, vendored: no CDN, no build step), all served by the hub, so it works
on a control-room network that reaches nothing else. It reads the hub's own API as the logged-in
user (the session cookie): ``WS /ws/grid-status`` for the grid status, alerts, forecasts and
maintenance predictions as they change, the readings API for charts and live values, ``/incidents``
and ``POST /incidents/{id}/status`` (operators) for the incident list and its actions, ``/fleet``
and ``/models`` for the edges. Users' guide: ``docs/dashboard.md``.
"""

from __future__ import annotations

from hub.dashboard.routes import ASSETS_PATH, DASHBOARD_DIR, LOGIN_PATH, PAGE_PATH, ROUTES, UPLOT_DIR, UPLOT_VERSION

__all__ = ["ASSETS_PATH", "DASHBOARD_DIR", "LOGIN_PATH", "PAGE_PATH", "ROUTES", "UPLOT_DIR", "UPLOT_VERSION"]
