"""Remote config, end to end as people run it: a new box enrolled with a one-time token; the operator
gives it a config that adds a device, and readings of that device reach the hub; then a bad config
(a device at an address nothing answers on): the edge tries it, keeps the running one by itself,
and the hub shows why; then a config whose device answers when tried and stops right after it is
applied: the edge rolls back by itself on probation, the hub shows why, the other devices' readings
keep flowing and nothing buffered is lost. Hub, simulators and edge are `sentinel` processes."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from models.signing import generate_keypair
from tests.conftest import CONFIGS, SCENARIOS, free_port
from tests.support.hub_auth import ADMIN, ADMIN_KEY

EDGE = "edge-nairobi-01"


def _sentinel(*args: str, cwd: Path, env: dict[str, str], stdin: str | None = None,
              wait: bool = False) -> subprocess.Popen[str] | subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sentinel_cli.main", *args]
    if wait:
        return subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=120)
    return subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _until(what, timeout_s: float = 60.0, every_s: float = 0.5):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            last = what()
        except httpx.HTTPError:
            last = None
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s} s (last: {last!r})")


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_an_edge_takes_a_new_config_from_the_hub_and_keeps_its_own_when_the_new_one_cannot_read(
        tmp_path: Path) -> None:
    private, public = generate_keypair()
    (tmp_path / "edge-models.pub").write_bytes(public)
    modbus, hub_port, nobody, spare = free_port(), free_port(), free_port(), free_port()
    hub_url = f"http://127.0.0.1:{hub_port}"
    full = (CONFIGS / "nairobi-s1.toml").read_text().replace("port = 15020", f"port = {modbus}").replace(
        "sync_interval_s = 2.0", "sync_interval_s = 0.5\nconfig_pull_interval_s = 0.5\nconfig_probation_s = 20")
    two = full[:full.index("[[devices]]\nid = \"TR-04\"")]  # the box starts with two of the three devices
    assert "id = \"TR-04\"" not in two and "id = \"TR-04\"" in full
    config = tmp_path / "edge.toml"
    config.write_text(two)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    hub_env = {**base, "SENTINEL_ADMIN_KEY": ADMIN_KEY, "SENTINEL_MODEL_SIGNING_KEY": private.decode(),
               "SENTINEL_MODEL_REGISTRY": str(tmp_path / "models")}
    made = _sentinel("hub", "edges", "enrolment", "--edge-id", EDGE, "--substation", "NAIROBI-S1", "--database",
                     "sqlite:///hub.db", cwd=tmp_path, env=base, wait=True)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    procs: list[subprocess.Popen[str]] = []
    spare_sim: subprocess.Popen[str] | None = None
    outs: dict[str, str] = {}
    try:
        procs.append(_sentinel("hub", "serve", "--port", str(hub_port), "--database", "sqlite:///hub.db",
                               cwd=tmp_path, env=hub_env))
        sim_config = tmp_path / "sim.toml"
        sim_config.write_text(full)  # the simulator serves all three devices
        procs.append(_sentinel("sim", "run", str(SCENARIOS / "medium_risk_voltage_fluctuation.json"), "--config",
                               str(sim_config), cwd=tmp_path, env=base))
        _until(lambda: httpx.get(f"{hub_url}/healthz", timeout=2).status_code == 200)
        enrol = _sentinel("edge", "enrol", "--config", str(config), "--hub-url", hub_url, "--token-stdin",
                          "--env-file", str(tmp_path / "edge.env"), cwd=tmp_path, env=base, stdin=token + "\n",
                          wait=True)
        assert enrol.returncode == 0, enrol.stderr
        credential = (tmp_path / "edge.env").read_text().split("SENTINEL_EDGE_TOKEN=", 1)[1].strip()
        edge_env = {**base, "SENTINEL_EDGE_TOKEN": credential,
                    "SENTINEL_MODEL_PUBLIC_KEY": str(tmp_path / "edge-models.pub")}
        procs.append(_sentinel("edge", "run", "--config", str(config), "--hub-url", hub_url, cwd=tmp_path,
                               env=edge_env))

        def devices() -> set[str]:
            latest = httpx.get(f"{hub_url}/readings/latest", headers=ADMIN, timeout=5).json()["readings"]
            return {r["device_id"] for r in latest if r["value"] is not None}

        def latest_ts(device_id: str) -> float:
            with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
                (ts,) = db.execute("SELECT max(ts) FROM readings WHERE device_id = ? AND value IS NOT NULL",
                                   (device_id,)).fetchone()
            return ts or 0.0

        assert _until(lambda: devices() >= {"BUS-220", "FEEDER-F12"} and devices())
        assert "TR-04" not in devices()

        def status(version: int) -> dict | None:
            versions = httpx.get(f"{hub_url}/edges/{EDGE}/config", headers=ADMIN, timeout=5).json()["versions"]
            v = next((v for v in versions if v["version"] == version), None)
            return v if v and v["status"] != "pending" else None

        # the operator adds the transformer: the edge tries it, applies it, restarts on it
        put = httpx.put(f"{hub_url}/edges/{EDGE}/config", json={"toml": full}, headers=ADMIN, timeout=10)
        assert put.status_code == 201, put.text
        assert put.json()["version"] == 1 and put.json()["status"] == "pending"
        applied = _until(lambda: status(1), timeout_s=60)
        assert applied["status"] == "applied", applied
        assert _until(lambda: "TR-04" in devices() and devices(), timeout_s=60)
        assert config.read_text() == full and (tmp_path / "edge.toml.previous").read_text() == two
        # which version the edge runs: in the health report it sends after the restart
        report = _until(lambda: httpx.get(f"{hub_url}/fleet", headers=ADMIN, timeout=5).json()["reports"].get(EDGE))
        assert _until(lambda: httpx.get(f"{hub_url}/fleet", headers=ADMIN, timeout=5).json()["reports"][EDGE][
            "config_version"] == 1), report

        # a config whose transformer is at an address nothing answers on: tried, kept out, said why
        bad = full.replace(f"port = {modbus}\nunit_id = 3", f"port = {nobody}\nunit_id = 3")
        assert bad != full, "the test's edit did not apply"
        put = httpx.put(f"{hub_url}/edges/{EDGE}/config", json={"toml": bad}, headers=ADMIN, timeout=10)
        assert put.status_code == 201 and put.json()["version"] == 2
        rolled = _until(lambda: status(2), timeout_s=60)
        assert rolled["status"] == "rolled_back", rolled
        assert "device TR-04 could not be read" in rolled["reason"] and str(nobody) in rolled["reason"]
        assert config.read_text() == full  # the running config stayed
        time.sleep(2)
        assert devices() >= {"BUS-220", "FEEDER-F12", "TR-04"}  # and so did its devices

        # refused before any try: not for this edge, or not signed by the hub
        other = httpx.put(f"{hub_url}/edges/edge-mombasa-01/config", json={"toml": full}, headers=ADMIN, timeout=10)
        assert other.status_code == 400 and "not 'edge-mombasa-01'" in other.text

        # version 1 passed its probation (version 2 was only taken after it): the hub says so
        confirmed = status(1)
        assert confirmed["status"] == "applied" and confirmed["reason"].startswith("confirmed: "), confirmed
        assert "(BUS-220, FEEDER-F12) answered through the 20 s probation" in confirmed["reason"], confirmed

        # a config moving the transformer to a second simulator that answers when tried and stops
        # right after the apply: on probation the edge finds it down, reads it with the previous
        # config, and goes back to that by itself
        spare_sim_config = tmp_path / "spare-sim.toml"
        spare_sim_config.write_text(full.replace(f"port = {modbus}", f"port = {spare}"))
        spare_sim = _sentinel("sim", "run", str(SCENARIOS / "medium_risk_voltage_fluctuation.json"), "--config",
                              str(spare_sim_config), cwd=tmp_path, env=base)
        _until(lambda: _listening(spare), timeout_s=30)
        moved = full.replace(f"port = {modbus}\nunit_id = 3", f"port = {spare}\nunit_id = 3")
        put = httpx.put(f"{hub_url}/edges/{EDGE}/config", json={"toml": moved}, headers=ADMIN, timeout=10)
        assert put.status_code == 201 and put.json()["version"] == 3
        assert _until(lambda: status(3), timeout_s=60)["status"] == "applied", status(3)
        outs["spare-sim"] = _stop(spare_sim)
        stopped_at = time.time()
        rolled = _until(lambda: (v := status(3)) and v["status"] == "rolled_back" and v, timeout_s=60)
        rolled_at = time.time()
        assert "rolled back to version 1 on probation" in rolled["reason"], rolled
        assert "device TR-04 did not answer" in rolled["reason"] and f"127.0.0.1:{spare}" in rolled["reason"], rolled
        assert config.read_text() == full and (tmp_path / "edge.toml.rolled_back").read_text() == moved
        assert _until(lambda: httpx.get(f"{hub_url}/fleet", headers=ADMIN, timeout=5).json()["reports"][EDGE][
            "config_version"] == 1)
        assert _until(lambda: latest_ts("TR-04") > rolled_at, timeout_s=30)  # read again, at its old address
    finally:
        if spare_sim is not None and spare_sim.poll() is None:
            outs["spare-sim"] = _stop(spare_sim)
        for name, proc in reversed(list(zip(("hub", "sim", "edge"), procs, strict=False))):
            outs[name] = _stop(proc)
        if sys.exc_info()[0] is not None:  # failing: show what the edge and the hub said
            print({k: v[-4000:] for k, v in outs.items()})
    edge_out = outs.get("edge", "")
    assert "config version 1 applied; restarting" in edge_out, edge_out[-3000:]
    assert "config version 3 applied; restarting" in edge_out, edge_out[-3000:]
    assert "config version 3 rolled back to version 1; restarting" in edge_out, edge_out[-3000:]
    assert edge_out.count(f"edge {EDGE} (NAIROBI-S1): polling") == 4  # at start and after each restart

    # the other devices' readings kept flowing through the probation and the rollback (a gap of
    # the restarts' few seconds at most) ...
    with contextlib.closing(sqlite3.connect(tmp_path / "hub.db")) as db:
        bus = [t for (t,) in db.execute("SELECT ts FROM readings WHERE device_id = 'BUS-220' AND metric ="
                                        " 'voltage_l1' AND ts > ? ORDER BY ts", (stopped_at - 5,))]
        at_hub = {s for (s,) in db.execute("SELECT seq FROM readings WHERE source = ?", (EDGE,))}
    assert bus and bus[0] < stopped_at and bus[-1] > rolled_at, (stopped_at, rolled_at, bus[:3], bus[-3:])
    assert max(b - a for a, b in zip(bus, bus[1:])) < 8, bus
    # ... and nothing buffered was lost: every reading the edge made is at the hub or still buffered
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / f"{EDGE}.db")) as db:
        (made,) = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'readings'").fetchone()
        buffered = {s for (s,) in db.execute("SELECT seq FROM readings")}
    assert made > 200 and at_hub | buffered == set(range(1, made + 1)), (made, len(at_hub), len(buffered))
    assert "Traceback" not in "".join(outs.values()), {k: v[-2000:] for k, v in outs.items()}

