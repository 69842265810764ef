"""What an operator at the hub sees of an edge catching up after an outage (hub.fleet.catchup):
``GET /fleet``'s ``catch_up``, ``sentinel_hub_edge_backlog_readings`` and the dashboard's edge list.

A real edge buffer and sync loop, a real hub on loopback (SQLite and PostgreSQL): the hub is down
while 3,000 readings arrive; once it is back, the first batch opens the live range; the backlog
below it then shrinks batch by batch, as the API and the metric say, until the edge is in step."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.buffer import Buffer
from edge.sync import SyncLoop
from hub.settings import Settings
from hub.storage.base import Storage
from protocols.wire import EdgeHealth
from tests.edge.test_live_first import EDGE, SUB, T0, config, outage, rows
from tests.support.hub_auth import ADMIN, ADMIN_KEY, provision_edge
from tests.support.live_hub import LiveHub
from tests.support.metrics import Scrape

pytestmark = pytest.mark.timeout(120)

MADE = 3_000  # readings made while the hub is down: the first batch holds the oldest 200 and the newest 200


def _settings(tmp_path: Path) -> Settings:  # the storage is handed to the hub
    return Settings(admin_key=ADMIN_KEY, agents=None, model_registry=str(tmp_path / "models"))


def _sync_loop(hub_url: str, buf: Buffer, token: str) -> SyncLoop:
    def health() -> EdgeHealth:  # as the daemon reports it (edge.daemon.health_report), with every batch here
        pending, oldest, dropped = buf.backlog()
        return EdgeHealth(software="test", readings_pending=pending, oldest_pending=oldest, dropped=dropped)

    sync = SyncLoop(config(hub_url), buf, token=token, health=health)
    sync.HEALTH_EVERY_S = 0.0
    return sync


def _at(i: int) -> datetime:
    return datetime.fromtimestamp(T0 + i, UTC)


@pytest.fixture
def hub(storage: Storage, tmp_path: Path) -> Iterator[tuple[LiveHub, httpx.Client]]:
    with LiveHub(storage, _settings(tmp_path)) as live, \
            httpx.Client(base_url=live.url, headers=ADMIN, timeout=30) as http:
        yield live, http


def _view(http: httpx.Client) -> tuple[dict[str, Any] | None, float]:
    """The edge's ``catch_up`` in ``GET /fleet`` (None: not listed) and its backlog gauge."""
    r = http.get("/fleet")
    assert r.status_code == 200, r.text
    scrape = Scrape(http.get("/metrics").text)
    return r.json()["catch_up"].get(EDGE), scrape.value("sentinel_hub_edge_backlog_readings", edge_id=EDGE,
                                                        substation=SUB)


def test_the_edge_list_shows_the_live_range_and_the_backlog_shrinking_until_in_step(
        storage: Storage, hub: tuple[LiveHub, httpx.Client], tmp_path: Path) -> None:
    live, http = hub
    token = provision_edge(storage, EDGE)
    buf = Buffer(tmp_path / "edge.db", SUB)
    made = asyncio.run(outage(buf, config(""), 0, MADE))
    assert EDGE not in http.get("/fleet").json()["catch_up"]  # never synced: nothing to say

    async def back() -> list[tuple[dict[str, Any], float]]:
        nonlocal made
        sync = _sync_loop(live.url, buf, token)
        views = []
        try:
            while await sync.sync_once() is not None:
                views.append(await asyncio.to_thread(_view, http))
                if views[-1][0]["state"] == "catching_up":
                    buf.append(rows(20, made))  # live data goes on arriving
                    made += 20
        finally:
            await sync.aclose()
        return views

    try:
        views = asyncio.run(back())
    finally:
        buf.close()
    first, gauge = views[0]
    # the newest 200 are held as the live range past the mark (the oldest 200); 2,600 still to come below it,
    # the oldest of them reading #200; the edge's report, made before that batch went, says #0: "that or later"
    assert first["state"] == "catching_up" and (first["readings_acked_through"], first["live_lo"],
                                                first["live_hi"]) == (200, 2_801, 3_000)
    assert first["backlog"] == gauge == 2_600
    assert datetime.fromisoformat(first["oldest_missing"]) == _at(0) <= _at(200)
    assert datetime.fromisoformat(first["reported_at"]) > datetime.now(UTC) - timedelta(minutes=1)
    catching = [(v, g) for v, g in views if v["state"] == "catching_up"]
    backlogs = [v["backlog"] for v, _ in catching]
    assert backlogs == sorted(backlogs, reverse=True) and len(set(backlogs)) == len(backlogs) >= 5  # shrinking
    for (v, g), (prev, _) in zip(catching[1:], catching, strict=False):
        assert g == v["backlog"] == v["live_lo"] - 1 - v["readings_acked_through"]  # the metric says the same
        assert v["live_lo"] == 2_801 and v["live_hi"] > prev["live_hi"]  # the live lane keeps up
        # the edge reported its oldest unsent reading before the batch: the hub's previous mark, never later
        # than the oldest really missing (the one after the mark now)
        oldest = datetime.fromisoformat(v["oldest_missing"])
        assert oldest == _at(prev["readings_acked_through"]) <= _at(v["readings_acked_through"])
    # in step as soon as the backlog reached the range, and from then on
    assert [v["state"] for v, _ in views[len(catching):]] == ["in_step"] * (len(views) - len(catching)) != []
    last, gauge = views[-1]
    assert last == {"state": "in_step", "readings_acked_through": made, "live_lo": None, "live_hi": None,
                    "backlog": 0, "oldest_missing": None, "reported_at": None} and gauge == 0
    (state,) = storage.edge_states()
    assert (state.live_lo, state.live_hi) == (0, 0)


@pytest.mark.parametrize("storage", ["sqlite"], indirect=True)
def test_the_dashboard_says_catching_up_then_in_step(storage: Storage, hub: tuple[LiveHub, httpx.Client],
                                                     tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    from tests.hub.test_dashboard import CHROMIUM, OPERATOR, PASSWORD, Browser, Grid
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    live, http = hub
    token = provision_edge(storage, EDGE, SUB)
    r = http.post("/auth/users", json={"name": OPERATOR, "role": "operator", "password": PASSWORD})
    assert r.status_code == 201, r.text
    buf = Buffer(tmp_path / "edge.db", SUB)
    asyncio.run(outage(buf, config(""), 0, MADE))

    async def sync(until_done: bool) -> None:
        loop = _sync_loop(live.url, buf, token)
        try:
            while await loop.sync_once() is not None and until_done:
                pass
        finally:
            await loop.aclose()

    try:
        asyncio.run(sync(False))
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
            person = Browser(Grid(live.url, http, None, browser, sync_api), tmp_path)
            try:
                person.login(OPERATOR)
                cell = person.page.locator(f'#edges tr[data-edge="{EDGE}"] td.catchup')
                person.expect(cell).to_contain_text(re.compile(
                    r"catching up\s*live #2\D?801–#3\D?000 held; 2\D?600 readings of backlog to come; oldest missing "
                    r"from .+ or later"), timeout=20_000)
                with ThreadPoolExecutor(1) as pool:  # playwright's own loop runs in this thread
                    pool.submit(asyncio.run, sync(True)).result()
                person.page.reload()
                person.expect(cell).to_have_text("in step", timeout=20_000)
            finally:
                person.close()
                browser.close()
    finally:
        buf.close()
