"""``sentinel demo``'s ergonomics: the login it prints works, its final summary says what happened,
and progress output never garbles what a pipe or a log receives (``sentinel_cli/demo.py``,
``sentinel_cli/progress.py``, ``simulator/history.py``'s progress callback)."""

from __future__ import annotations

import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from hub.auth import AuthStore
from hub.storage import open_storage
from protocols.config import load_config
from sentinel_cli.demo import final_summary_lines, make_admin_login
from sentinel_cli.progress import Progress
from simulator.history import history_readings
from tests.conftest import CONFIGS, free_port
from tests.support.procs import sentinel_process

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[")


def _demo_configs(tmp_path: Path) -> list[str]:
    """The demo's two configs, moved to free loopback ports."""
    args = []
    for name in ("nairobi-s1.toml", "mombasa-s1.toml"):
        text = (CONFIGS / name).read_text()
        text = text.replace("port = 15020", f"port = {free_port()}").replace("port = 15021", f"port = {free_port()}")
        text = text.replace(":15041", f":{free_port()}")
        (tmp_path / name).write_text(text)
        args += ["--config", str(tmp_path / name)]
    return args


def _pump(pipe, lines: queue.Queue[str | None]) -> None:
    for line in pipe:
        lines.put(line)
    lines.put(None)


def _line_matching(lines: queue.Queue[str | None], seen: list[str], pattern: str, timeout_s: float) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if m := re.search(pattern, line):
            return m
    raise AssertionError(f"no line matching {pattern!r} in:\n{''.join(seen)}")


@pytest.mark.timeout(150)
def test_demo_prints_a_login_that_works_and_a_summary_of_what_happened(tmp_path: Path) -> None:
    """Run `sentinel demo` as a user does (stdout a pipe), log in with what it printed while it runs,
    stop it with Ctrl-C (SIGINT): the summary names incidents by agent with their first lines, the
    forecasts, the transformers' health and each substation's status, in plain text."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "SENTINEL_ADMIN_KEY"} | {"PYTHONUNBUFFERED": "1"}
    lines: queue.Queue[str | None] = queue.Queue()
    seen: list[str] = []
    database = f"sqlite:///{tmp_path / 'hub.db'}"  # read after the demo stops: what the summary should list
    with sentinel_process("demo", "--port", str(port), "--duration", "120", "--database", database,
                          *_demo_configs(tmp_path), env=env, cwd=tmp_path) as proc:
        reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
        reader.start()
        err: list[str] = []
        err_reader = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
        err_reader.start()
        url = _line_matching(lines, seen, r"^demo: dashboard (\S+)$", 60)[1]
        user, password = _line_matching(lines, seen, r"^demo: log in as (\S+), password (\S+) ", 5).groups()
        key = _line_matching(lines, seen, r"^demo: admin key (\S+)", 5)[1]
        assert url == f"http://127.0.0.1:{port}/dashboard" and user == "admin"
        assert len(password) >= 12 and password not in key

        hub = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{hub}/auth/login", json={"username": "admin", "password": password + "x"},
                          timeout=10).status_code == 401
        with httpx.Client(base_url=hub, timeout=10) as browser:
            login = browser.post("/auth/login", json={"username": user, "password": password})
            assert login.status_code == 200, login.text
            assert login.json()["role"] == "admin"
            page = browser.get("/dashboard")  # the cookie the login set opens the printed URL
            assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.status_code
            me = browser.get("/auth/whoami", headers={"Authorization": f"Bearer {login.json()['token']}"}).json()
            assert me["name"] == "admin" and me["role"] == "admin" and me["kind"] == "user"

        # wait for the agents' work (forecasts from the stored history, incidents from the scenario)
        api = httpx.Client(base_url=hub, headers={"Authorization": f"Bearer {key}"}, timeout=10)
        incidents: list[dict] = []
        forecasts: list[dict] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (incidents and forecasts):
            time.sleep(1.0)
            forecasts = api.get("/forecast/next-24h").json()["forecasts"]
            incidents = api.get("/incidents", params={"limit": 1000}).json()["incidents"]
        api.close()
        assert incidents and forecasts, "no incident or forecast within 60 s"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        reader.join(10)
        err_reader.join(10)
    while (line := lines.get_nowait()) is not None:
        seen.append(line)
    out = "".join(seen)
    assert "Traceback" not in "".join(err), "".join(err)
    assert not ANSI.search(out) and "\r" not in out, "control characters in a pipe's output"
    summary = out[out.index("demo: final summary"):].splitlines()
    # one block: no periodic line or progress line in the middle of it
    assert not [s for s in summary[1:] if s.startswith(("demo:", "["))], summary
    text = "\n".join(summary)
    assert re.search(r"^readings synced: MOMBASA-S1 [\d,]+, NAIROBI-S1 [\d,]+$", text, re.M), text
    assert re.search(r"^  NAIROBI-S1: (OK|WARNING|CRITICAL|UNKNOWN)", text, re.M), text
    # incidents by agent, each with id, severity, type, device and its description's first line
    agents = {i["agent"] for i in incidents}
    for agent in agents:
        assert re.search(rf"^  {agent}: \d+$", text, re.M), (agent, text)
    listed = dict(re.findall(r"^    (INC-\S+)  \S+\s+\S+ on \S+: (.*)$", text, re.M))
    assert listed, text
    # every incident listed is one the hub holds, as it was when the demo stopped (the agents may
    # have raised more after the API was last asked above, so the database is the reference)
    storage = open_storage(database)
    try:
        held = {i.id: i for i in storage.list_incidents(limit=10_000)}
    finally:
        storage.close()
    assert {i["id"] for i in incidents} <= set(held)
    for inc_id, summary_line in listed.items():
        inc = held[inc_id]
        first = inc.description.splitlines()[0]
        assert first.startswith(summary_line.removesuffix(" ...")), (summary_line, first)
        assert f"{inc_id}  {inc.severity}" in text and f"{inc.type} on {inc.device_id}:" in text
    # the forecasts (peak, its time, the margin) and the transformers' health
    for f in forecasts:
        assert re.search(rf"^  {f['device_id']} \({f['substation']}\): peak [\d.]+ MW at \d{{4}}-\d\d-\d\d "
                         rf"\d\d:\d\d UTC, capacity [\d.]+ MW, margin", text, re.M), text
    assert re.search(r"^  TR-04 \(NAIROBI-S1\): health \d+/100, failure risk", text, re.M), text


def test_admin_login_is_a_fresh_argon2_password_each_run(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        auth = AuthStore(storage)
        first = make_admin_login(auth)
        assert auth.login("admin", first, 60) is not None
        second = make_admin_login(auth)  # the next run
        assert second != first and len(second) >= 12
        assert auth.login("admin", first, 60) is None and auth.login("admin", second, 60) is not None
        with storage.transaction() as tx:
            role, digest = tx.execute("SELECT role, password_hash FROM auth_users WHERE name = 'admin'").fetchone()
        assert role == "admin" and digest.startswith("$argon2id$") and second not in digest
        assert [e.target for e in auth.audit_entries(action="user.set")] == ["admin", "admin"]
    finally:
        storage.close()


def test_history_progress_counts_every_step_and_changes_nothing() -> None:
    configs = [load_config(CONFIGS / "nairobi-s1.toml")]
    end = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    calls: list[tuple[int, int]] = []
    with_progress = history_readings(configs, days=2, end=end, progress=lambda d, t: calls.append((d, t)))
    plain = history_readings(configs, days=2, end=end)
    assert [(r.ts, r.device_id, r.metric, r.value) for r in with_progress] == \
           [(r.ts, r.device_id, r.metric, r.value) for r in plain]  # chunked physics: the same values
    n = 2 * 86400 // 600
    assert calls[-1] == (n, n) and len(calls) > 10
    assert all(t == n for _, t in calls) and [d for d, _ in calls] == sorted({d for d, _ in calls})


def test_progress_without_a_terminal_writes_plain_lines_or_nothing(tmp_path: Path) -> None:
    got: list[str] = []
    with (tmp_path / "log").open("w") as not_a_tty:
        with Progress("demo: storing history", total=200, unit="readings", plain=got.append, plain_every_s=0,
                      stream=not_a_tty) as progress:
            assert not progress.drawing
            progress(50)
            progress(200, detail="done")
        with Progress("quiet", total=10, stream=not_a_tty) as progress:  # plain=None: nothing at all
            progress(10)
        with Progress("off", total=10, plain=got.append, enabled=False, stream=not_a_tty) as progress:
            progress(10)
        with Progress("slow", total=10, plain=got.append, plain_every_s=60, stream=not_a_tty) as progress:
            progress(5)  # within a minute of the start: no line
    assert got == ["demo: storing history 50/200 readings (25 %)",
                   "demo: storing history 200/200 readings (100 %): done"]
    assert (tmp_path / "log").read_text() == ""


def test_progress_on_a_terminal_draws_a_bar_on_it_and_leaves_stdout_clean() -> None:
    """stderr a terminal, stdout a pipe (``sentinel models score in.csv > out.csv``): the bar goes to
    the terminal; every line printed meanwhile reaches stdout whole and plain."""
    code = ("from sentinel_cli.progress import Progress\n"
            "import time\n"
            "with Progress('work', total=20, unit='items') as p:\n"
            "    assert p.drawing\n"
            "    for i in range(21):\n"
            "        p(i)\n"
            "        print(f'line {i}', flush=True)\n"
            "        time.sleep(0.01)\n")
    main, sub = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=sub, text=True,
                                cwd=REPO, env={**os.environ, "TERM": "xterm", "COLUMNS": "100"})
        os.close(sub)
        sub = -1
        terminal = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed its end
                break
            if not chunk:
                break
            terminal += chunk
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(main)
        if sub >= 0:
            os.close(sub)
    assert proc.returncode == 0, terminal.decode(errors="replace")
    assert out.splitlines() == [f"line {i}" for i in range(21)]
    assert b"work" in terminal and b"items" in terminal and b"\x1b[" in terminal  # a bar, drawn on the terminal


def _incident(n: int, agent: str, severity: str = "WARNING", description: str = "first line\nsecond line") -> dict:
    return {"id": f"INC-2026-{n:06d}", "agent": agent, "severity": severity, "type": "voltage_sag",
            "device_id": "FEEDER-F12", "description": description, "status": "OPEN"}


def test_final_summary_lists_five_per_agent_first_lines_and_stale_substations() -> None:
    incidents = [_incident(n, "grid_monitor") for n in range(7, 0, -1)]  # as the API lists them: newest first
    incidents.insert(3, _incident(8, "grid_monitor", "CRITICAL", "the worst\nsecond"))
    incidents.append(_incident(9, "cyber_sentinel", "EMERGENCY", "x " * 200))
    snapshot = {
        "stats": {"readings_by_substation": {"NAIROBI-S1": 1500, "MOMBASA-S1": 900},
                  "incidents": [{"type": "voltage_sag", "severity": "WARNING", "count": 9}]},
        "incidents": incidents,
        "forecasts": [],
        "predictions": [{"device_id": "TR-04", "substation": "NAIROBI-S1", "health": 61.5,
                         "failure_probability": {"24h": 0.02, "48h": 0.04, "168h": 0.15},
                         "recommended_action": "inspect within 7 days"}],
        "grid": {"NAIROBI-S1": {"status": "WARNING", "stale": False, "devices": {"FEEDER-F12": "WARNING",
                                                                                  "TR-04": "OK"}},
                 "MOMBASA-S1": {"status": "UNKNOWN", "stale": True, "last_seen": "2026-03-02T10:15:00Z",
                                "reason": "edge edge-mombasa-01 offline"}},
    }
    lines = final_summary_lines(snapshot, 42.0, before={"NAIROBI-S1": 1000})
    text = "\n".join(lines)
    assert lines[0] == "demo: final summary after 42.0 s"
    assert "readings synced: MOMBASA-S1 900, NAIROBI-S1 500" in lines
    assert "  MOMBASA-S1: UNKNOWN (edge edge-mombasa-01 offline; last seen 2026-03-02 10:15 UTC)" in lines
    assert "  NAIROBI-S1: WARNING (FEEDER-F12 WARNING)" in lines
    grid = lines.index("  grid_monitor: 8")
    assert lines[grid + 1] == "    INC-2026-000008  CRITICAL voltage_sag on FEEDER-F12: the worst"  # most severe first
    assert lines[grid + 2] == "    INC-2026-000007  WARNING  voltage_sag on FEEDER-F12: first line"  # then newest
    assert lines[grid + 6] == "    and 3 more"
    assert "second" not in text
    cyber = next(s for s in lines if "INC-2026-000009" in s)
    assert cyber.endswith(" ...") and len(cyber) < 220
    assert lines.index("  cyber_sentinel: 1") < grid  # agents in name order
    assert "forecasts: none yet" in text
    assert "  TR-04 (NAIROBI-S1): health 62/100, failure risk 2 % in 24 h, 15 % in 7 days; action: inspect within " \
           "7 days" in lines


def test_when_the_hub_cannot_be_asked_the_summary_says_so_and_counts_from_its_database(tmp_path: Path) -> None:
    from protocols.reading import Reading
    from sentinel_cli.demo import _fallback_summary

    storage = open_storage(f"sqlite:///{tmp_path / 'hub.db'}")
    try:
        t0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
        storage.insert_readings([Reading(ts=t0.replace(second=s), substation="NAIROBI-S1", device_id="TR-04",
                                         metric="oil_temperature", value=60.0 + s, unit="degC") for s in range(30)],
                                "test")
        lines = _fallback_summary(storage, 12.5, {"NAIROBI-S1": 10}, "connection refused")
    finally:
        storage.close()
    assert lines[0].startswith("demo: final summary after 12.5 s (the hub did not answer: connection refused")
    assert "readings synced: NAIROBI-S1 20" in lines[1] and "incidents: none yet" in lines[2]
