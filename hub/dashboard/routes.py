"""The dashboard's routes: the page, the login page, and their assets, with a strict
Content-Security-Policy.

Policies follow ``/docs`` (:mod:`hub.openapi`): the page and its assets are for viewers and above
(by the session cookie a login sets, or a bearer key); only the login page and the two files it
loads (its script and the stylesheet) are public, since nobody could log in otherwise.

- ``GET /`` redirects to ``/dashboard``; ``GET /dashboard`` is the page. A browser that is not
  logged in (or whose session ended) is sent to ``/login?next=...`` (a 303, for a request that
  accepts HTML); anything else gets the hub's 401.
- ``GET /dashboard/assets/{path}``: ``app.js``, ``app.css``, the icon and the vendored uPlot with
  its licence (``vendor/uplot/...``); nothing else (404).
- ``GET /login`` and ``GET /login/assets/{name}`` (``login.js``, ``app.css``, ``favicon.svg``).

Every answer here carries the policy: scripts and styles only from the hub itself (no inline
script or style), connections only to the hub (its API, and its WebSocket at ``ws(s)://`` the same
host), no frames, no plug-ins. Assets are revalidated (ETag) rather than cached blind, so an
upgraded hub serves its new script at once.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get
from litestar.exceptions import NotAuthorizedException, NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect

from hub.auth import PUBLIC, VIEWER
from hub.auth.guards import allow

__all__ = ["ASSETS_PATH", "DASHBOARD_DIR", "LOGIN_PATH", "PAGE_PATH", "ROUTES", "UPLOT_DIR", "UPLOT_VERSION",
           "content_security_policy"]

PAGE_PATH = "/dashboard"
ASSETS_PATH = f"{PAGE_PATH}/assets"
LOGIN_PATH = "/login"
STATIC_DIR = Path(__file__).parent.parent / "static"
DASHBOARD_DIR = STATIC_DIR / "dashboard"
UPLOT_DIR = STATIC_DIR / "vendor" / "uplot"
UPLOT_VERSION = "1.6.32"

# what each URL under the assets path serves: a fixed list, so no path leads anywhere else
_ASSETS: dict[str, Path] = {
    "app.js": DASHBOARD_DIR / "app.js",
    "app.css": DASHBOARD_DIR / "app.css",
    "favicon.svg": DASHBOARD_DIR / "favicon.svg",
    "vendor/uplot/uPlot.iife.min.js": UPLOT_DIR / "uPlot.iife.min.js",
    "vendor/uplot/uPlot.min.css": UPLOT_DIR / "uPlot.min.css",
    "vendor/uplot/LICENSE": UPLOT_DIR / "LICENSE",
    "vendor/uplot/README.md": UPLOT_DIR / "README.md",
}
_LOGIN_ASSETS: dict[str, Path] = {
    "login.js": DASHBOARD_DIR / "login.js",
    "app.css": DASHBOARD_DIR / "app.css",
    "favicon.svg": DASHBOARD_DIR / "favicon.svg",
}
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml",
          ".md": "text/markdown"}  # Litestar adds "; charset=utf-8" to the text types
_HOST = re.compile(r"[A-Za-z0-9.\-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def content_security_policy(host: str) -> str:
    """The policy for a page served to ``host`` (the request's Host): everything from the hub itself,
    the stream by ``ws://`` or ``wss://`` to the same host (named as well as ``'self'``, for browsers
    that do not count a WebSocket to the page's host as 'self'). A Host that is not a plain host and
    port is left out, never copied into the header."""
    stream = f" ws://{host} wss://{host}" if _HOST.fullmatch(host) else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; font-src 'self'; "
            f"connect-src 'self'{stream}; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")


def _headers(request: Request[Any, Any, Any], **more: str) -> dict[str, str]:
    return {"Content-Security-Policy": content_security_policy(request.headers.get("host", "")),
            "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            **more}


@lru_cache(maxsize=32)
def _file(path: Path) -> tuple[bytes, str]:
    """A static file's bytes and its ETag (read once: a few files of a few KB, and uPlot's 50)."""
    body = path.read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _serve(request: Request[Any, Any, Any], path: Path, *, page: bool = False) -> Response[bytes]:
    body, etag = _file(path)
    media_type = _TYPES.get(path.suffix, "text/plain")
    if page:  # the page itself: never from a cache (it is behind a login)
        return Response(body, media_type=media_type, headers=_headers(request, **{"Cache-Control": "no-store"}))
    headers = _headers(request, ETag=etag, **{"Cache-Control": "private, no-cache"})
    if etag in (t.strip() for t in request.headers.get("if-none-match", "").split(",")):
        return Response(b"", status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


def _to_login(request: Request[Any, Any, Any], exc: NotAuthorizedException) -> Response[Any]:
    """A browser that is not logged in goes to the login page, which brings it back; any other
    client gets the hub's 401 (its one error shape, as ``hub.app`` writes it)."""
    if "text/html" in request.headers.get("accept", ""):
        target = f"{LOGIN_PATH}?next={quote(request.url.path, safe='/')}"
        return Response(b"", status_code=303,
                        headers=_headers(request, Location=target, **{"Cache-Control": "no-store"}))
    return Response({"status_code": exc.status_code, "detail": exc.detail}, status_code=exc.status_code,
                    headers=exc.headers)


_PAGE = {"guards": [allow(VIEWER)], "include_in_schema": False, "sync_to_thread": False,
         "exception_handlers": {NotAuthorizedException: _to_login}}


@get("/", name="dashboard.root", **_PAGE)
def root() -> Redirect:
    """The hub's front door is the dashboard."""
    return Redirect(path=PAGE_PATH, status_code=303)


@get(PAGE_PATH, name="dashboard.page", **_PAGE)
def page(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The dashboard (a viewer's or above)."""
    return _serve(request, DASHBOARD_DIR / "index.html", page=True)


@get(f"{ASSETS_PATH}/{{asset:path}}", name="dashboard.assets", guards=[allow(VIEWER)], include_in_schema=False,
     sync_to_thread=False)
def assets(asset: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    """The dashboard's script, stylesheet, icon and the vendored uPlot (with its licence)."""
    path = _ASSETS.get(asset.lstrip("/"))
    if path is None:
        raise NotFoundException(detail=f"no dashboard asset {asset[:200]!r}")
    return _serve(request, path)


@get(LOGIN_PATH, name="dashboard.login", guards=[allow(PUBLIC)], include_in_schema=False, sync_to_thread=False)
def login_page(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The login form: it posts to ``POST /auth/login`` and goes on to the dashboard."""
    return _serve(request, DASHBOARD_DIR / "login.html", page=True)


@get(f"{LOGIN_PATH}/assets/{{name:str}}", name="dashboard.login_assets", guards=[allow(PUBLIC)],
     include_in_schema=False, sync_to_thread=False)
def login_assets(name: FromPath[str], request: Request[Any, Any, Any]) -> Response[bytes]:
    """What the login page loads before anyone is logged in: its script, the stylesheet, the icon."""
    path = _LOGIN_ASSETS.get(name)
    if path is None:
        raise NotFoundException(detail=f"no login asset {name[:200]!r}")
    return _serve(request, path)


ROUTES = [root, page, assets, login_page, login_assets]
