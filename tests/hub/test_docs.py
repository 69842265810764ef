"""``/docs`` works offline: every page under it loads only what the hub itself serves.

A substation or control-room network reaches no CDN. The Swagger UI page names its scripts,
stylesheet and icon by paths of this hub, each served (to a viewer) with 200; and in a real
browser (Debian's Chromium driven by Playwright, when both are installed) with every request to
anywhere but 127.0.0.1 refused, the page renders the hub's operations and asks nothing of the
outside world.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from hub.app import create_app
from hub.openapi import SWAGGER_UI_DIR, SWAGGER_UI_VERSION
from hub.settings import Settings
from hub.storage import open_storage
from tests.support.hub_auth import ADMIN, ADMIN_KEY, edge_headers, role_headers
from tests.support.live_hub import LiveHub


class _Loads(HTMLParser):
    """What a page makes the browser fetch: scripts, stylesheets, icons, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":  # a link the reader may follow is not a load
            return
        found = dict(attrs)
        self.urls += [url for name in ("src", "href") if (url := found.get(name))]


def _loads(html: str) -> list[str]:
    parser = _Loads()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", admin_key=ADMIN_KEY, agents=None)
    with TestClient(create_app(settings)) as c:
        yield c


def _docs_pages(client: TestClient) -> list[str]:
    """Every page the docs router serves, with its path parameters filled in."""
    pages = []
    for route in client.app.routes:
        if isinstance(route, HTTPRoute) and route.path.startswith("/docs") and "GET" in route.methods:
            if "/assets" not in route.path:
                pages.append(re.sub(r"\{\w+:\w+\}", "missing", route.path))
    return pages


def test_the_docs_load_only_what_the_hub_serves(client: TestClient) -> None:
    viewer = role_headers(client, "viewer")
    page = client.get("/docs", headers=viewer)
    assert page.status_code == 200 and "SwaggerUIBundle" in page.text
    loads = _loads(page.text)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css",
            "/docs/assets/favicon-32x32.png"} <= set(loads)
    pages = _docs_pages(client)
    assert {"/docs", "/docs/swagger", "/docs/openapi.json"} <= set(pages)
    for path in pages:  # the Swagger page, its OAuth redirect page, the document, the not-found page
        r = client.get(path, headers=viewer)
        assert r.status_code in (200, 404), (path, r.status_code)
        for url in _loads(r.text) if "html" in r.headers["content-type"] else []:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc, f"{path} loads {url} from elsewhere"
            asset = client.get(parts.path, headers=viewer)
            assert asset.status_code == 200 and asset.content, f"{path} loads {url}: {asset.status_code}"
    assert "cdn" not in page.text.lower() and "https://" not in "".join(loads)


def test_the_assets_are_the_vendored_swagger_ui_for_viewers_only(client: TestClient) -> None:
    js = client.get("/docs/assets/swagger-ui-bundle.js", headers=role_headers(client, "viewer"))
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.content == (SWAGGER_UI_DIR / "swagger-ui-bundle.js").read_bytes()
    assert f"**{SWAGGER_UI_VERSION}**" in (SWAGGER_UI_DIR / "README.md").read_text()
    assert (SWAGGER_UI_DIR / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert client.get("/docs/assets/swagger-ui.css").status_code == 401  # like the docs themselves
    assert client.get("/docs/assets/swagger-ui.css", headers=edge_headers(client, "EDGE-A")).status_code == 403
    assert client.get("/docs/assets/%2e%2e%2f%2e%2e%2fopenapi.py", headers=ADMIN).status_code == 404  # no way out
    assert client.get("/docs/assets/nothing.js", headers=ADMIN).status_code == 404


# -- in a browser, offline ---------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_swagger_ui_renders_the_operations_with_the_outside_world_cut_off(tmp_path: Path) -> None:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", admin_key=ADMIN_KEY, agents=None)
    storage = open_storage(settings.database_url)
    try:
        with LiveHub(storage, settings) as hub:
            with httpx.Client(base_url=hub.url, timeout=30) as http:  # a viewer logs in, as on the dashboard
                made = http.post("/auth/users", headers=ADMIN,
                                 json={"name": "olga", "role": "viewer", "password": "a long enough password"})
                assert made.status_code == 201, made.text
                login = http.post("/auth/login", json={"username": "olga", "password": "a long enough password"})
                assert login.status_code == 200, login.text
                session = login.cookies["sentinel_session"]
                operations = sum(len([m for m in item if m in ("get", "post", "put", "patch", "delete")])
                                 for item in http.get("/docs/openapi.json", headers=ADMIN).json()["paths"].values())
            outside, failed = _render(playwright, hub.url, session)
    finally:
        storage.close()
    rendered, page_text = outside.pop("rendered"), outside.pop("text")
    assert not outside["blocked"], f"the page tried to reach {outside['blocked']}"
    assert not failed, f"requests to the hub failed: {failed}"
    assert rendered == operations >= 28
    assert "SmartGrid Sentinel hub" in page_text and "/edge/sync" in page_text


def _render(playwright: Any, url: str, session: str) -> tuple[dict[str, Any], list[str]]:
    """Open /docs with the session cookie and every request off 127.0.0.1 aborted; what the page
    rendered, what it tried to reach, and which of the hub's answers were errors."""
    seen: dict[str, Any] = {"blocked": []}
    failed: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context()
            context.add_cookies([{"name": "sentinel_session", "value": session, "url": url}])

            def only_the_hub(route: Any) -> None:
                if urlsplit(route.request.url).hostname == "127.0.0.1":
                    route.continue_()
                else:
                    seen["blocked"].append(route.request.url)
                    route.abort()

            context.route("**/*", only_the_hub)
            page = context.new_page()
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("requestfailed", lambda r: None if r.url in seen["blocked"] else failed.append(f"failed {r.url}"))
            page.goto(f"{url}/docs", wait_until="networkidle")
            try:
                page.wait_for_selector(".opblock", timeout=20_000)
            except playwright.TimeoutError:  # a blank page: the asserts below say why
                pass
            seen["rendered"] = page.locator(".opblock").count()
            seen["text"] = page.inner_text("body")
        finally:
            browser.close()
    return seen, failed
