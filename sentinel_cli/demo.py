"""``sentinel demo``: a hub on SQLite, the simulated substations, one edge each, a scenario.

Everything runs in one process and one event loop, on 127.0.0.1: the hub (uvicorn) on ``port``,
the simulator's Modbus servers at the addresses the firmware configs name, and an edge daemon per
config whose hub URL is pointed at the demo's hub.

Before the hub starts, its storage gets ``history_days`` of simulated history of the same points
(:func:`simulator.history.history_readings`, one sample per 10 minutes), so the demand forecaster,
the maintenance predictor and the anomaly detector's baselines have something to work on from the
first minute. The demo also makes its own credentials: an admin user ``admin`` with a password
generated for this run (argon2-hashed like any user's), an admin API key (``SENTINEL_ADMIN_KEY``
if set, else a fresh one) and one credential per edge; it prints the dashboard's URL and both.

While it runs it prints the readings synced and the incidents every two seconds; at the end
(``--duration``, Ctrl-C or SIGTERM) it stops the edges, asks the hub's API what happened
(incidents by agent, forecasts, maintenance predictions, grid status) and prints that before
stopping the hub. Long start-up steps show progress bars on a terminal (:mod:`sentinel_cli.progress`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec

from edge.daemon import EdgeDaemon
from hub.auth import AuthStore
from hub.server import HubServer
from hub.settings import Settings
from hub.storage import Storage, open_storage
from protocols.config import FirmwareConfig
from protocols.reading import Reading
from protocols.severity import severity_rank
from sentinel_cli.progress import Progress, draws_bars

__all__ = ["ADMIN_USER", "final_summary_lines", "make_admin_login", "run_demo", "summary_lines"]

SUMMARY_EVERY_S = 2.0
HISTORY_STEP_S = 600.0
ADMIN_USER = "admin"
INCIDENTS_PER_AGENT = 5  # listed per agent in the final summary; the rest are counted
INCIDENT_LIMIT = 1000  # incidents the final summary asks the hub for
LINE_WIDTH = 150  # an incident's first line is cut to about this many characters
STORE_CHUNK = 20_000  # history readings per insert (each one batch)
ROLLUP_CHUNK = 2_000  # marked hours folded per transaction when the history is rolled up
FIRST_SYNC_WAIT_S = 15.0  # how long start-up waits for every edge's first sync
API_TIMEOUT_S = 10.0


def _print(line: str) -> None:
    print(line, flush=True)


# -- credentials ------------------------------------------------------------------------------------

def make_admin_login(auth: AuthStore, name: str = ADMIN_USER) -> str:
    """Create (or reset) the admin user ``name`` with a password made for this run; return the
    password. Never a fixed one: anyone who can reach the port could use it."""
    password = secrets.token_urlsafe(12)  # 16 characters, 96 bits
    user = auth.add_user(name, "admin", password)
    auth.audit("demo", "local", "user.set", user.name, role=user.role)
    return password


def banner_lines(hub_url: str, user: str, password: str, admin_key: str) -> list[str]:
    rule = "demo: " + "-" * 72
    return [
        rule,
        f"demo: dashboard {hub_url}/dashboard",
        f"demo: log in as {user}, password {password} (made for this run)",
        f"demo: admin key {admin_key} (for scripts and curl)",
        f"demo: try: curl -H 'Authorization: Bearer {admin_key}' {hub_url}/incidents (also /grid-status, "
        "/forecast/next-24h, /maintenance)",
        rule,
    ]


def _print_banner(lines: list[str], out: Callable[[str], object]) -> None:
    """The banner through ``out``; on a terminal (and with rich) as a panel that stands out."""
    if out is _print and draws_bars(sys.stdout):
        from rich.console import Console
        from rich.panel import Panel

        body = "\n".join(line.removeprefix("demo: ") for line in lines[1:-1])
        Console().print(Panel(body, title="SmartGrid Sentinel demo", border_style="bold green", expand=False))
        return
    for line in lines:
        out(line)


# -- what the hub says ------------------------------------------------------------------------------

def summary_lines(stats: dict[str, Any], elapsed_s: float, before: dict[str, int] | None = None) -> list[str]:
    """From ``GET /stats``: readings synced per substation (beyond ``before``, the counts before the
    edges started) and incidents by type and severity."""
    before = before or {}
    counts = {sub: n - before.get(sub, 0) for sub, n in stats.get("readings_by_substation", {}).items()}
    incidents = stats.get("incidents", [])
    total = sum(i["count"] for i in incidents)
    lines = [f"[{elapsed_s:6.1f}s] readings synced: "
             + (", ".join(f"{sub} {n:,}" for sub, n in sorted(counts.items())) or "none yet")]
    if incidents:
        by = ", ".join(f"{i['type']}/{i['severity']} {i['count']}" for i in incidents)
        lines.append(f"          incidents: {total} ({by})")
    else:
        lines.append("          incidents: none yet")
    return lines


async def _get(client: httpx.AsyncClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params or None)
    response.raise_for_status()
    return response.json()


async def hub_snapshot(client: httpx.AsyncClient) -> dict[str, Any]:
    """What the final summary reports, from the hub's API (the product's contract)."""
    stats, incidents, forecasts, maintenance, grid = await asyncio.gather(
        _get(client, "/stats"), _get(client, "/incidents", limit=INCIDENT_LIMIT),
        _get(client, "/forecast/next-24h"), _get(client, "/maintenance"), _get(client, "/grid-status"))
    return {"stats": stats, "incidents": incidents["incidents"], "forecasts": forecasts["forecasts"],
            "predictions": maintenance["predictions"], "grid": grid["substations"]}


def _first_line(text: str | None, width: int = LINE_WIDTH) -> str:
    line = (text or "").strip().splitlines()[0].strip() if (text or "").strip() else "(no description)"
    if len(line) > width:
        line = line[:width].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return line


def _when(iso: str | None) -> str:
    if not iso:
        return "?"
    try:
        t = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return iso
    return t.strftime("%Y-%m-%d %H:%M UTC")


def _num(value: Any, unit: str = "", fmt: str = ".2f") -> str:
    if value is None:
        return "?"
    return f"{value:{fmt}} {unit}".rstrip()


def _percent(p: Any) -> str:
    if p is None:
        return "?"
    return f"{100.0 * p:.2g} %"


def _rank(severity: str) -> int:
    try:
        return severity_rank(severity)
    except ValueError:
        return -1


def incident_lines(incidents: Sequence[dict[str, Any]], total: int | None = None,
                   per_agent: int = INCIDENTS_PER_AGENT) -> list[str]:
    """Incidents grouped by agent, the most severe (then newest) first: id, severity, type, device
    and the first line of the description; past ``per_agent``, ``and N more``."""
    if not incidents:
        return ["incidents: none"]
    total = max(total or 0, len(incidents))
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for inc in incidents:  # the API lists newest first; a stable sort keeps that within a severity
        by_agent.setdefault(inc.get("agent") or "unknown", []).append(inc)
    severities: dict[str, int] = {}
    for inc in incidents:
        severities[inc["severity"]] = severities.get(inc["severity"], 0) + 1
    open_n = sum(1 for inc in incidents if inc.get("status") == "OPEN")
    by_severity = ", ".join(f"{n} {s}" for s, n in sorted(severities.items(), key=lambda kv: -_rank(kv[0])))
    lines = [f"incidents: {total} from {len(by_agent)} agent{'s' * (len(by_agent) != 1)} "
             f"({by_severity}; {open_n} open)"]
    for agent in sorted(by_agent):
        found = sorted(by_agent[agent], key=lambda i: -_rank(i["severity"]))
        lines.append(f"  {agent}: {len(found)}")
        for inc in found[:per_agent]:
            lines.append(f"    {inc['id']}  {inc['severity']:<8} {inc['type']} on {inc.get('device_id') or '?'}: "
                         f"{_first_line(inc.get('description'))}")
        if len(found) > per_agent:
            lines.append(f"    and {len(found) - per_agent} more")
    if total > len(incidents):
        lines.append(f"  and {total - len(incidents)} more, older (GET /incidents lists them)")
    return lines


def forecast_lines(forecasts: Sequence[dict[str, Any]]) -> list[str]:
    if not forecasts:
        return ["forecasts: none yet (the demand forecaster needs history: --history-days)"]
    lines = ["forecasts (latest per feeder, next 24 h):"]
    for f in sorted(forecasts, key=lambda f: (f.get("substation", ""), f.get("device_id", ""))):
        unit = f.get("unit", "")
        text = (f"  {f.get('device_id')} ({f.get('substation', '?')}): peak {_num(f.get('peak_value'), unit)} "
                f"at {_when(f.get('peak_time'))}, capacity {_num(f.get('capacity'), unit)}")
        if f.get("margin") is not None:
            text += f", margin {_num(f.get('margin'), unit)}"
            if f.get("margin_pct") is not None:
                text += f" ({f['margin_pct']:.1f} %)"
        if f.get("status"):
            text += f", {f['status']}"
        lines.append(text)
    return lines


def maintenance_lines(predictions: Sequence[dict[str, Any]]) -> list[str]:
    if not predictions:
        return ["maintenance: no prediction yet (the maintenance predictor needs history: --history-days)"]
    lines = ["maintenance (latest per transformer):"]
    for p in sorted(predictions, key=lambda p: (p.get("substation", ""), p.get("device_id", ""))):
        fp = p.get("failure_probability") or {}
        text = (f"  {p.get('device_id')} ({p.get('substation', '?')}): health {_num(p.get('health'), fmt='.0f')}/100, "
                f"failure risk {_percent(fp.get('24h'))} in 24 h, {_percent(fp.get('168h'))} in 7 days; "
                f"action: {p.get('recommended_action') or 'none'}")
        window = p.get("maintenance_window")
        if isinstance(window, dict) and window.get("start"):
            text += f" (window from {_when(window.get('start'))})"
        lines.append(text)
    return lines


def grid_lines(grid: dict[str, dict[str, Any]]) -> list[str]:
    if not grid:
        return ["grid status: no substation heard from"]
    lines = ["grid status:"]
    for sub, st in sorted(grid.items()):
        status = st.get("status", "?")
        text = f"  {sub}: {status}"
        if status == "UNKNOWN" or st.get("stale"):
            detail = [st.get("reason") or "stale", f"last seen {_when(st.get('last_seen'))}"]
            text += f" ({'; '.join(d for d in detail if d)})"
        else:
            bad = [f"{dev} {s}" for dev, s in sorted((st.get("devices") or {}).items()) if s != "OK"]
            if bad:
                text += f" ({', '.join(bad)})"
        lines.append(text)
    return lines


def final_summary_lines(snapshot: dict[str, Any], elapsed_s: float, before: dict[str, int] | None = None) -> list[str]:
    """What happened, from :func:`hub_snapshot`: readings synced per substation, grid status,
    incidents by agent, forecasts, maintenance predictions."""
    before = before or {}
    stats = snapshot.get("stats") or {}
    counts = {sub: n - before.get(sub, 0) for sub, n in stats.get("readings_by_substation", {}).items()}
    total_incidents = sum(i["count"] for i in stats.get("incidents", []))
    lines = [f"demo: final summary after {elapsed_s:.1f} s",
             "readings synced: " + (", ".join(f"{sub} {n:,}" for sub, n in sorted(counts.items())) or "none")]
    lines += grid_lines(snapshot.get("grid") or {})
    lines += incident_lines(snapshot.get("incidents") or [], total_incidents)
    lines += forecast_lines(snapshot.get("forecasts") or [])
    lines += maintenance_lines(snapshot.get("predictions") or [])
    return lines


def _fallback_summary(storage: Storage, elapsed_s: float, before: dict[str, int], why: str) -> list[str]:
    """When the hub cannot be asked: the counters, from its database."""
    incidents = [{"type": t, "severity": s, "count": n} for (t, s), n in sorted(storage.incident_counts().items())]
    stats = {"readings_by_substation": storage.reading_counts(), "incidents": incidents}
    return [f"demo: final summary after {elapsed_s:.1f} s (the hub did not answer: {why}; counts from its database)",
            *summary_lines(stats, elapsed_s, before)]


# -- start-up ---------------------------------------------------------------------------------------

def _store_history(storage: Storage, rows: Sequence[Reading], progress: Callable[..., None]) -> None:
    for lo in range(0, len(rows), STORE_CHUNK):
        storage.insert_readings(rows[lo:lo + STORE_CHUNK], "demo-history")
        progress(min(lo + STORE_CHUNK, len(rows)), len(rows))


async def _load_history(storage: Storage, configs: list[FirmwareConfig], days: float,
                        out: Callable[[str], object]) -> None:
    from simulator.history import history_readings

    out(f"demo: storing {days:g} days of simulated history ({HISTORY_STEP_S / 60:g}-minute samples) ...")
    t0 = time.monotonic()
    with Progress("demo: simulating history", unit="steps", plain=out) as progress:
        rows = await asyncio.to_thread(history_readings, configs, days=days, end=datetime.now(UTC),
                                       step_s=HISTORY_STEP_S, progress=progress)
    with Progress("demo: storing history", total=len(rows), unit="readings", plain=out) as progress:
        await asyncio.to_thread(_store_history, storage, rows, progress)
    # rolled up now, once: else the agents' first cycle folds the whole history (a question folds
    # its range first) and on a slow machine ran past its budget
    with Progress("demo: rolling the history up", unit="hours", plain=out) as progress:
        folded = 0
        while n := await asyncio.to_thread(storage.refresh_rollups, limit=ROLLUP_CHUNK):
            folded += n
            progress(folded)
    out(f"demo: {len(rows):,} history readings stored in {time.monotonic() - t0:.1f} s: forecasts and "
        "maintenance predictions come with the agents' first cycle")


async def _first_syncs(daemons: list[EdgeDaemon], stop: asyncio.Event, wait_s: float,
                       out: Callable[[str], object]) -> None:
    """Wait (at most ``wait_s``) until every edge has synced once, showing how many have."""
    def synced() -> list[EdgeDaemon]:
        return [d for d in daemons if d.sync.stats.last_sync is not None]

    deadline = time.monotonic() + wait_s
    with Progress("demo: edges connecting", total=len(daemons), unit="edges", plain=out) as progress:
        while len(synced()) < len(daemons) and time.monotonic() < deadline and not stop.is_set():
            progress(len(synced()))
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except TimeoutError:
                pass
        progress(len(synced()))
    late = [d for d in daemons if d not in synced()]
    if not late:
        out(f"demo: {len(daemons)} edge{'s' * (len(daemons) != 1)} syncing to the hub")
    for d in late:
        why = d.sync.stats.last_error or "no answer yet"
        out(f"demo: edge {d.config.identity.edge_id} has not synced yet ({why})")


def _catch_stop_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Ctrl-C (and SIGTERM) end the run as ``--duration`` does: set ``stop``, so the demo asks the
    hub for its summary before stopping it. (The hub's server took these signals to shut itself
    down first.) A second Ctrl-C aborts. Returns what puts the previous handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        loop.call_soon_threadsafe(stop.set)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, h in previous.items():
            signal.signal(sig, h)

    return restore


# -- the demo ---------------------------------------------------------------------------------------

async def run_demo(
    configs: list[FirmwareConfig],
    *,
    scenario: str | None,
    port: int = 8000,
    duration_s: float | None = None,
    database_url: str | None = None,
    speed: float = 1.0,
    history_days: float = 28.0,
    out: Callable[[str], object] = _print,
) -> dict[str, int]:
    """Run the demo; returns readings synced per substation by the end (history not counted)."""
    from simulator.runner import Simulation
    from simulator.scenario import load_scenario

    with tempfile.TemporaryDirectory(prefix="sentinel-demo-") as tmp:
        url = database_url or f"sqlite:///{Path(tmp) / 'hub.db'}"
        storage = open_storage(url)
        hub_url = f"http://127.0.0.1:{port}"
        edge_configs = [
            msgspec.structs.replace(c, hub=msgspec.structs.replace(c.hub, url=hub_url)) for c in configs
        ]
        scen = load_scenario(scenario, configs) if scenario else None
        if history_days > 0:
            await _load_history(storage, configs, history_days, out)
        before = storage.reading_counts()
        # the demo's own credentials, made before the hub starts: an admin user with a password for
        # this run, an admin key (SENTINEL_ADMIN_KEY if set, else a fresh one), one per edge
        admin_key = os.environ.get("SENTINEL_ADMIN_KEY", "").strip() or secrets.token_urlsafe(32)
        auth = AuthStore(storage)
        password = await asyncio.to_thread(make_admin_login, auth)
        tokens = {c.identity.edge_id: auth.add_edge(c.identity.edge_id, c.identity.substation, created_by="demo").secret
                  for c in configs}
        hub = HubServer(storage, port, settings=Settings(admin_key=admin_key))
        await hub.start()
        stop = asyncio.Event()
        restore_signals = _catch_stop_signals(stop)
        client = httpx.AsyncClient(base_url=hub_url, headers={"Authorization": f"Bearer {admin_key}"},
                                   timeout=API_TIMEOUT_S)
        out(f"demo: hub on {hub_url} (database {url}); API docs at {hub_url}/docs")
        _print_banner(banner_lines(hub_url, ADMIN_USER, password, admin_key), out)
        started = time.monotonic()
        try:
            async with Simulation(configs, scen, speed=speed) as sim:
                for line in sim.endpoints:
                    out(f"demo: simulator serves {line}")
                if scen is not None:
                    out(f"demo: scenario {scen.scenario_name!r}: {scen.description}")
                daemons = [EdgeDaemon(c, buffer_path=Path(tmp) / f"{c.identity.edge_id}.db",
                                      token=tokens[c.identity.edge_id]) for c in edge_configs]
                for c in edge_configs:
                    out(f"demo: edge {c.identity.edge_id} polls {len(c.devices)} devices of {c.identity.substation}")

                def remaining() -> float:
                    return float("inf") if duration_s is None else duration_s - (time.monotonic() - started)

                async with asyncio.TaskGroup() as tg:
                    tasks = [tg.create_task(sim.run(), name="demo.sim")]
                    tasks += [tg.create_task(d.run(), name=f"demo.edge.{d.config.identity.edge_id}") for d in daemons]
                    try:
                        await _first_syncs(daemons, stop, min(FIRST_SYNC_WAIT_S, max(0.0, remaining())), out)
                        while remaining() > 0 and not stop.is_set():
                            try:
                                await asyncio.wait_for(stop.wait(), min(SUMMARY_EVERY_S, remaining()))
                            except TimeoutError:
                                pass
                            try:
                                stats = await _get(client, "/stats")
                            except httpx.HTTPError as exc:
                                out(f"[{time.monotonic() - started:6.1f}s] the hub does not answer: {exc!r}")
                                continue
                            for line in summary_lines(stats, time.monotonic() - started, before):
                                out(line)
                        if stop.is_set():
                            out("demo: stopping: the edges send what they hold, then the summary "
                                "(Ctrl-C again to abort)")
                        # let the edges send what they hold before stopping
                        for d in daemons:
                            d.sync.wake.set()
                        await asyncio.sleep(min(3.0, max(c.hub.sync_interval_s for c in edge_configs) + 0.5))
                    finally:
                        for t in tasks:
                            t.cancel()
        finally:
            elapsed = time.monotonic() - started
            me = asyncio.current_task()
            try:
                if me is not None and me.cancelling():  # aborted (a second Ctrl-C): no waiting on the hub
                    raise TimeoutError("the demo was aborted")
                async with asyncio.timeout(2 * API_TIMEOUT_S):
                    lines = final_summary_lines(await hub_snapshot(client), elapsed, before)
            except (httpx.HTTPError, TimeoutError, KeyError) as exc:
                lines = _fallback_summary(storage, elapsed, before, str(exc) or repr(exc))
            finally:
                await client.aclose()
                restore_signals()
                await hub.stop()
            final = {sub: n - before.get(sub, 0) for sub, n in storage.reading_counts().items()}
            for line in lines:
                out(line)
            storage.close()
        return final
