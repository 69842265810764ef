"""The operator's dashboard (``/dashboard``, ``hub/dashboard``): behind the login, offline, and doing
what an operator needs in a real browser.

The fast tests hold the hub's side: the page and its assets need a login (a browser that has none is
sent to ``/login``), every answer carries a strict Content-Security-Policy, the page loads only what
the hub serves (no inline script), and the vendored uPlot is served with its licence.

The browser tests drive Debian's Chromium through Playwright (its executable path: nothing
downloads a browser) against a real hub on loopback, fed by two real edge daemons polling a
simulated Nairobi and Mombasa substation over Modbus TCP, with every request off 127.0.0.1 refused
and every Content-Security-Policy violation or script error failing the test. They log in through
the login page, see the substations, watch a live value change, acknowledge an incident, check a
viewer has no button and is refused by the hub if it calls the API anyway, and stop an edge to see
its substation turn stale and an ``edge_offline`` incident appear. Each saves screenshots into its
output folder (pytest's ``tmp_path``) and into ``test-results/dashboard/`` at the repository's root.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import msgspec
import pytest
from litestar.testing import TestClient

from edge.daemon import EdgeDaemon
from hub.app import create_app
from hub.dashboard import DASHBOARD_DIR, UPLOT_DIR, UPLOT_VERSION
from hub.dashboard.routes import content_security_policy
from hub.fleet import LivenessSettings
from hub.insights.orchestrator import OrchestratorSettings
from hub.settings import Settings
from hub.storage import open_storage
from protocols.config import FirmwareConfig, load_config
from protocols.modbus.config import ModbusTcpDevice
from simulator.history import history_readings
from simulator.runner import Simulation
from tests.conftest import CONFIGS, REPO, free_port
from tests.support.hub_auth import ADMIN, ADMIN_KEY, edge_headers, provision_edge, role_headers
from tests.support.live_hub import LiveHub

RESULTS = REPO / "test-results" / "dashboard"
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}  # as a browser navigates


class _Page(HTMLParser):
    """What a page loads (scripts, stylesheets, icons) and whatever would need an inline policy."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "script" and not found.get("src"):
            self.inline.append("<script> without src")
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"<{tag} {name}=...>" for name, _ in attrs if name == "style" or name.startswith("on")]
        if tag != "a":
            self.loads += [url for name in ("src", "href") if (url := found.get(name))]


def _page(html: str) -> _Page:
    parser = _Page()
    parser.feed(html)
    return parser


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'hub.db'}", admin_key=ADMIN_KEY, agents=None)
    with TestClient(create_app(settings)) as c:
        yield c


def test_the_page_and_its_assets_need_a_login(client: TestClient) -> None:
    for path in ("/dashboard", "/"):  # a browser is sent to the login page, which brings it back
        r = client.get(path, headers=HTML, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/login?next={path}", (path, r.status_code)
        r = client.get(path, follow_redirects=False)  # a script gets the hub's 401, as everywhere
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert "a credential is required" in r.json()["detail"]
    client.cookies.set("sentinel_session", "sgs_an-ended-session")  # an ended session: log in again
    ended = client.get("/dashboard", headers=HTML, follow_redirects=False)
    assert ended.headers["location"] == "/login?next=/dashboard"
    client.cookies.clear()
    viewer = role_headers(client, "viewer")
    assert client.get("/", headers=viewer, follow_redirects=False).headers["location"] == "/dashboard"
    page = client.get("/dashboard", headers=viewer)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    loads = _page(page.text).loads
    assert {"/dashboard/assets/app.js", "/dashboard/assets/app.css", "/dashboard/assets/vendor/uplot/uPlot.iife.min.js",
            "/dashboard/assets/vendor/uplot/uPlot.min.css", "/dashboard/assets/favicon.svg"} == set(loads)
    for url in loads:
        assert client.get(url).status_code == 401, url  # like the page itself
        assert client.get(url, headers=edge_headers(client, "EDGE-A")).status_code == 403, url  # edges: no
        r = client.get(url, headers=viewer)
        assert r.status_code == 200 and r.content, url
    assert client.get("/dashboard", headers={**HTML, **edge_headers(client, "EDGE-A")}).status_code == 403
    # the login page and what it loads are all anyone gets without a credential
    login = client.get("/login")
    assert login.status_code == 200 and 'id="login"' in login.text
    assert set(_page(login.text).loads) == {"/login/assets/login.js", "/login/assets/app.css",
                                            "/login/assets/favicon.svg"}
    for url in _page(login.text).loads:
        assert client.get(url).status_code == 200, url
    assert client.get("/login/assets/app.js").status_code == 404  # the dashboard's script is not public


def test_every_answer_carries_a_strict_content_security_policy(client: TestClient) -> None:
    viewer = role_headers(client, "viewer")
    answers = [client.get("/dashboard", headers=viewer), client.get("/dashboard/assets/app.js", headers=viewer),
               client.get("/login"), client.get("/login/assets/login.js"),
               client.get("/dashboard", headers=HTML, follow_redirects=False)]
    for r in answers:
        policy = dict(p.strip().split(" ", 1) for p in r.headers["content-security-policy"].split(";"))
        assert policy["default-src"] == "'none'" and policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
        assert policy["connect-src"] == "'self' ws://testserver.local wss://testserver.local"  # the API and the stream
        assert "unsafe" not in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    for name in ("index.html", "login.html"):  # nothing the policy would have to allow inline
        html = (DASHBOARD_DIR / name).read_text()
        assert _page(html).inline == [], name
        assert "http://" not in html and "https://" not in html, name
    for name in ("app.js", "login.js"):
        js = (DASHBOARD_DIR / name).read_text()
        for forbidden in ("eval(", "new Function", "innerHTML", ".setAttribute(\"style\"", "http://", "https://"):
            assert forbidden not in js, f"{name}: {forbidden}"
    # a Host that is not a host is never copied into the header
    assert content_security_policy("hub.example:8000").count("hub.example:8000") == 2
    evil = content_security_policy("x; script-src *")
    assert "script-src *" not in evil and "connect-src 'self';" in evil


def test_the_vendored_uplot_is_served_with_its_licence(client: TestClient) -> None:
    viewer = role_headers(client, "viewer")
    js = client.get("/dashboard/assets/vendor/uplot/uPlot.iife.min.js", headers=viewer)
    assert js.headers["content-type"].startswith("text/javascript")
    assert js.content == (UPLOT_DIR / "uPlot.iife.min.js").read_bytes() and len(js.content) < 80_000
    licence = client.get("/dashboard/assets/vendor/uplot/LICENSE", headers=viewer)
    assert licence.status_code == 200 and licence.text.startswith("The MIT License")
    assert "Leon Sorokin" in licence.text
    readme = client.get("/dashboard/assets/vendor/uplot/README.md", headers=viewer).text
    assert f"uPlot **{UPLOT_VERSION}**" in readme and f"uplot-{UPLOT_VERSION}.tgz" in readme
    # revalidated, not served blind from a cache; nothing outside the list is reachable
    etag = js.headers["etag"]
    again = client.get("/dashboard/assets/vendor/uplot/uPlot.iife.min.js", headers={**viewer, "If-None-Match": etag})
    assert again.status_code == 304 and not again.content
    for path in ("/dashboard/assets/nothing.js", "/dashboard/assets/%2e%2e/%2e%2e/dashboard/routes.py",
                 "/dashboard/assets/vendor/uplot/", "/dashboard/assets/index.html"):
        assert client.get(path, headers=ADMIN).status_code == 404, path


# -- in a browser ------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PASSWORD = "a long enough password"
OPERATOR, VIEWER = "oona", "victor"
NAIROBI, MOMBASA = "NAIROBI-S1", "MOMBASA-S1"


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _modbus_only(cfg: FirmwareConfig, modbus_port: int, hub_url: str) -> FirmwareConfig:
    """A sample config on free loopback ports, its Modbus TCP devices only, syncing twice a second."""
    devices = [msgspec.structs.replace(d, port=modbus_port) for d in cfg.devices if isinstance(d, ModbusTcpDevice)]
    hub = msgspec.structs.replace(cfg.hub, url=hub_url, sync_interval_s=0.5, backoff_initial_s=0.2, backoff_max_s=1.0)
    return msgspec.structs.replace(cfg, devices=devices, hub=hub)


class Field:
    """The simulated substations and their edge daemons, in a thread with its own event loop; an
    edge can be stopped on its own (its task cancelled: the box is switched off)."""

    def __init__(self, configs: list[FirmwareConfig], tokens: dict[str, str], buffers: Path) -> None:
        self.configs, self.tokens, self.buffers = configs, tokens, buffers
        self.loop: asyncio.AbstractEventLoop | None = None
        self.edges: dict[str, asyncio.Task[None]] = {}
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._failed: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="dashboard.field", daemon=True)

    def _run_edge(self, cfg: FirmwareConfig) -> None:
        daemon = EdgeDaemon(cfg, buffer_path=self.buffers / f"{cfg.identity.edge_id}.db",
                            token=self.tokens[cfg.identity.edge_id])
        self.edges[cfg.identity.edge_id] = asyncio.create_task(daemon.run(), name=cfg.identity.edge_id)

    async def _main(self) -> None:
        self.loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with Simulation(self.configs, None) as sim:
                sim_task = asyncio.create_task(sim.run(), name="sim")
                for cfg in self.configs:
                    self._run_edge(cfg)
                self._started.set()
                try:
                    await self._stop.wait()
                finally:
                    tasks = [sim_task, *self.edges.values()]
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException as exc:  # noqa: BLE001  (raised in the test's thread)
            self._failed = exc
            self._started.set()

    def __enter__(self) -> Field:
        self._thread.start()
        if not self._started.wait(30) or self._failed is not None:
            raise RuntimeError(f"the simulated substations did not start: {self._failed!r}")
        return self

    def stop_edge(self, edge_id: str) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self.edges[edge_id].cancel)

    def start_edge(self, edge_id: str) -> None:
        """Switch a stopped edge on again (its buffer as it left it)."""
        assert self.loop is not None and self.edges[edge_id].done()
        (cfg,) = [c for c in self.configs if c.identity.edge_id == edge_id]
        self.loop.call_soon_threadsafe(self._run_edge, cfg)

    def __exit__(self, *_: object) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


class Grid:
    """What the browser tests share: the hub's URL, an admin client, the field, the browser."""

    def __init__(self, url: str, http: httpx.Client, field: Field, browser: Any, playwright: Any) -> None:
        self.url, self.http, self.field, self.browser, self.playwright = url, http, field, browser, playwright

    def sag(self, device_id: str, substation: str = NAIROBI) -> dict[str, Any]:
        """A voltage sag on a device of ``substation`` sent as telemetry (as an operator's key): a real
        incident, its own (one per test)."""
        reading = {"device_id": device_id, "sensor_type": "voltage", "value": 190.0, "nominal": 220.0,
                   "substation": substation, "timestamp": datetime.now(UTC).isoformat(), "quality": 0.98}
        r = self.http.post("/sensors/process", json={"sensor_readings": [reading]},
                           headers=role_headers(self.http, "operator"))
        assert r.status_code == 200 and r.json()["incidents_detected"] == 1, r.text
        (inc,) = [i for i in self.http.get("/incidents", params={"status": "OPEN"}).json()["incidents"]
                  if i["device_id"] == device_id]
        return inc


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        if _under_ci():
            pytest.fail("no chromium on this machine: scripts/system-deps.sh installs it (apt-get install chromium)")
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    tmp = tmp_path_factory.mktemp("dashboard")
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'hub.db'}", admin_key=ADMIN_KEY,
        agents=OrchestratorSettings(interval_s=20.0, min_gap_s=3.0),
        # an edge is offline after 4 s of silence (they sync twice a second)
        liveness=LivenessSettings(sync_interval_s=1.0, offline_multiple=4.0, check_interval_s=0.25),
    )
    storage = open_storage(settings.database_url)
    hub = LiveHub(storage, settings)
    configs = [_modbus_only(load_config(CONFIGS / name), free_port(), hub.url)
               for name in ("nairobi-s1.toml", "mombasa-s1.toml")]
    # three weeks of the same points before now: charts have a past, the agents forecast and assess
    storage.insert_readings(history_readings(configs, days=21, end=datetime.now(UTC)), "history")
    # rolled up once, as the demo does after storing history: else the agents' first questions fold
    # three weeks of hours, a chunk at a time under the database's lock, and every request the
    # browser makes in the first minute waits seconds behind them (charts not drawn in 20 s on CI)
    while storage.refresh_rollups(limit=2_000):
        pass
    tokens = {c.identity.edge_id: provision_edge(storage, c.identity.edge_id, c.identity.substation) for c in configs}
    try:
        with hub, httpx.Client(base_url=hub.url, headers=ADMIN, timeout=30) as http:
            for name, role in ((OPERATOR, "operator"), (VIEWER, "viewer")):  # people, made through the API
                r = http.post("/auth/users", json={"name": name, "role": role, "password": PASSWORD})
                assert r.status_code == 201, r.text
            with Field(configs, tokens, tmp) as field:
                _wait(lambda: all(e["online"] for e in http.get("/fleet").json()["edges"]) and
                      len(http.get("/fleet").json()["edges"]) == 2, 30, "both edges syncing")
                with playwright.sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=CHROMIUM,
                                                args=["--no-sandbox", "--disable-dev-shm-usage"])
                    try:
                        yield Grid(hub.url, http, field, browser, playwright)
                    finally:
                        browser.close()
    finally:
        storage.close()


def _wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.2)


class Browser:
    """One person's browser: a context of its own, requests off 127.0.0.1 refused, and every script
    error, Content-Security-Policy violation or failed request of the hub's noted."""

    def __init__(self, grid: Grid, out: Path, width: int = 1440, height: int = 1000) -> None:
        self.grid, self.out = grid, out
        self.context = grid.browser.new_context(viewport={"width": width, "height": height})
        self.problems: list[str] = []
        self.blocked: list[str] = []

        def only_the_hub(route: Any) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                self.blocked.append(route.request.url)
                route.abort()

        self.context.route("**/*", only_the_hub)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"script error: {e}"))

    def login(self, user: str) -> None:
        page = self.page
        page.goto(f"{self.grid.url}/dashboard")
        assert urlsplit(page.url).path == "/login"  # not logged in: sent to the login page
        page.fill("#username", user)
        page.fill("#password", PASSWORD)
        page.click("#login button[type=submit]")
        page.wait_for_url(f"{self.grid.url}/dashboard*")
        self.expect(page.locator("#who")).to_contain_text(user)

    @property
    def expect(self) -> Any:
        return self.grid.playwright.expect

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.out / f"{name}.png"), full_page=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.out / f"{name}.png", RESULTS / f"{name}.png")

    def close(self) -> None:
        self.context.close()
        assert not self.blocked, f"the page tried to reach {self.blocked}"
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
def operator(grid: Grid, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(grid, tmp_path)
    b.login(OPERATOR)
    yield b
    b.close()


@pytest.fixture
def viewer(grid: Grid, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(grid, tmp_path, width=820, height=1180)  # a tablet, upright
    b.login(VIEWER)
    yield b
    b.close()


@pytest.mark.timeout(300)
def test_log_in_and_see_the_substations(grid: Grid, operator: Browser) -> None:
    page, expect = operator.page, operator.expect
    for name in (NAIROBI, MOMBASA):
        card = page.locator(f'.card[data-substation="{name}"]')
        expect(card).to_be_visible(timeout=20_000)
        expect(card).to_have_attribute("data-stale", "false", timeout=20_000)
        expect(card.locator(".status")).to_have_text(re.compile(r"^(OK|WARNING|CRITICAL|UNKNOWN)$"))  # not colour alone
    expect(page.locator("#link")).to_have_text("live")  # the stream is open
    expect(page.locator("#who")).to_have_text(f"{OPERATOR} (operator)")
    expect(page.locator('#edges tr[data-edge="edge-nairobi-01"]')).to_contain_text("online")
    # what the edge reports of itself with its syncs: the model it runs (none: its detectors) and its version
    expect(page.locator('#edges tr[data-edge="edge-nairobi-01"] td.model')).to_contain_text("detectors only · ",
                                                                                          timeout=60_000)
    # the grid monitor judges the substations' readings: a status, not UNKNOWN, once it has
    expect(page.locator(f'.card[data-substation="{NAIROBI}"]')).not_to_have_attribute("data-status", "UNKNOWN",
                                                                                     timeout=60_000)
    operator.shot("substations")


@pytest.mark.timeout(300)
def test_watch_a_live_value_change(grid: Grid, operator: Browser) -> None:
    page, expect = operator.page, operator.expect
    page.locator(f'.card[data-substation="{NAIROBI}"]').click()
    expect(page.locator("#detail-name")).to_have_text(NAIROBI)
    for kind in ("Voltage · BUS-220 (kV)", "Frequency · BUS-220 (Hz)", "Load · FEEDER-F12 (MW)",
                 "Temperature · TR-04 (degC)"):  # voltage, frequency, load, transformer temperatures
        expect(page.locator(f'figure.chart[data-chart="{kind}"] canvas')).to_be_visible(timeout=20_000)
    chart = page.locator('figure.chart[data-chart="Voltage · BUS-220 (kV)"]')
    expect(chart).not_to_have_attribute("data-points", "0")  # its history, from the readings API
    cell = page.locator('#latest tr[data-point="BUS-220/voltage_l1"] td.value')
    expect(cell).not_to_have_text("—", timeout=20_000)
    before, points = cell.inner_text(), int(chart.get_attribute("data-points") or 0)
    operator.shot("live-before")
    page.wait_for_function(
        "([sel, before]) => { const c = document.querySelector(sel); return c && c.textContent !== before }",
        arg=['#latest tr[data-point="BUS-220/voltage_l1"] td.value', before], timeout=30_000)
    after = cell.inner_text()
    assert after != before and float(after.replace(",", "")) == pytest.approx(220, rel=0.05)
    page.wait_for_function(  # and the chart grew with the value
        "([sel, n]) => Number(document.querySelector(sel).dataset.points) > n",
        arg=['figure.chart[data-chart="Voltage · BUS-220 (kV)"]', points], timeout=30_000)
    operator.shot("live-after")


@pytest.mark.timeout(300)
def test_an_operator_acknowledges_an_incident(grid: Grid, operator: Browser) -> None:
    page, expect = operator.page, operator.expect
    inc = grid.sag("FEEDER-ACK")
    row = page.locator(f'#incidents tbody tr[data-id="{inc["id"]}"]')
    expect(row).to_be_visible(timeout=20_000)  # it came by the stream
    expect(row.locator(".incident-status")).to_have_text("OPEN")
    row.click()
    detail = page.locator("#incident")
    expect(detail).to_have_attribute("data-id", inc["id"])
    expect(detail).to_contain_text("Voltage sag")
    expect(detail.locator("dl.facts")).to_contain_text("deviation_pct")  # its facts
    operator.shot("incident-open")
    note = detail.locator('input[name="note"]')
    note.fill("crew informed")
    # the stream draws the panel again as incidents change (another sag here): what the operator is
    # typing, and where, survive it
    note.evaluate("(e) => { e.dataset.drawn = 'before'; }")
    kept = page.locator('#filters select[name="substation"] option[data-drawn="before"]')
    page.locator(f'#filters select[name="substation"] option:text-is("{NAIROBI}")').evaluate(
        "(e) => { e.dataset.drawn = 'before'; }")
    grid.sag("FEEDER-ACK-2")
    expect(detail.locator('input[name="note"][data-drawn="before"]')).to_have_count(0, timeout=20_000)
    expect(note).to_have_value("crew informed")
    expect(note).to_be_focused()
    expect(kept).to_have_count(1)  # the same substations: the filter's list was not rebuilt under the user
    detail.locator('button[data-action="ACKNOWLEDGED"]').click()
    expect(detail).to_have_attribute("data-status", "ACKNOWLEDGED")
    expect(detail.locator(".history")).to_contain_text(f"ACKNOWLEDGED by user:{OPERATOR}: crew informed")
    expect(row.locator(".incident-status")).to_have_text("ACKNOWLEDGED")
    expect(detail.locator('button[data-action="ACKNOWLEDGED"]')).to_have_count(0)  # forward only
    expect(detail.locator('button[data-action="RESOLVED"]')).to_be_visible()
    held = grid.http.get(f"/incidents/{inc['id']}").json()
    assert held["status"] == "ACKNOWLEDGED" and held["history"][-1]["actor"] == f"user:{OPERATOR}"
    operator.shot("incident-acknowledged")


@pytest.mark.timeout(300)
def test_a_viewer_has_no_button_and_the_hub_refuses_it_anyway(grid: Grid, viewer: Browser) -> None:
    page, expect = viewer.page, viewer.expect
    inc = grid.sag("FEEDER-VIEW")
    expect(page.locator("#who")).to_have_text(f"{VIEWER} (viewer)")
    row = page.locator(f'#incidents tbody tr[data-id="{inc["id"]}"]')
    row.click(timeout=20_000)
    detail = page.locator("#incident")
    expect(detail).to_have_attribute("data-id", inc["id"])
    expect(detail).to_contain_text("operators acknowledge and resolve them")
    expect(detail.locator("button")).to_have_count(0)
    viewer.shot("viewer-incident")
    answer = page.evaluate("""async (id) => {
        const r = await fetch(`/incidents/${id}/status`, {method: "POST", credentials: "same-origin",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify({status: "ACKNOWLEDGED"})});
        return {status: r.status, body: await r.json()};
    }""", inc["id"])
    assert answer["status"] == 403, answer
    assert f"user:{VIEWER} (role viewer)" in answer["body"]["detail"]
    assert grid.http.get(f"/incidents/{inc['id']}").json()["status"] == "OPEN"  # unchanged
    viewer.problems = [p for p in viewer.problems if "403" not in p]  # the browser logs the refusal we asked for


@pytest.mark.timeout(300)
def test_stop_an_edge_and_its_substation_turns_stale(grid: Grid, operator: Browser) -> None:
    page, expect = operator.page, operator.expect
    card = page.locator(f'.card[data-substation="{MOMBASA}"]')
    expect(card).to_have_attribute("data-stale", "false", timeout=20_000)
    grid.field.stop_edge("edge-mombasa-01")
    try:
        expect(card).to_have_attribute("data-stale", "true", timeout=30_000)
        expect(card).to_have_attribute("data-status", "UNKNOWN")
        expect(card.locator(".status")).to_have_text("UNKNOWN · STALE")
        expect(page.locator(f'.card[data-substation="{NAIROBI}"]')).to_have_attribute("data-stale", "false")
        offline = page.locator("#incidents tbody tr", has_text="edge_offline")
        expect(offline).to_be_visible(timeout=30_000)
        expect(offline).to_contain_text(MOMBASA)
        expect(page.locator('#edges tr[data-edge="edge-mombasa-01"]')).to_contain_text("offline", timeout=20_000)
        operator.shot("edge-stopped")
    finally:
        grid.field.start_edge("edge-mombasa-01")  # the other tests see both substations live, in any order
    # switched on again: live, and its edge_offline incident resolved by the liveness check
    expect(card).to_have_attribute("data-stale", "false", timeout=30_000)
    expect(offline).to_have_count(0, timeout=30_000)
    operator.shot("edge-restarted")
