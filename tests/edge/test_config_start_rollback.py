"""A config from the hub that stops the daemon from starting is rolled back by the edge itself: the
run on it fails, the next start (as systemd's Restart=on-failure makes it) puts the previous config
back, runs on it and tells the hub why. A failing config of the box's own (not on probation) is left
alone. Hub and edge are `sentinel` processes; the device is a Modbus server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from edge.remote_config import MAX_UNEXPLAINED_ENDS, StartGuard
from models.signing import generate_keypair
from protocols.modbus.codec import encode_values
from tests.conftest import free_port
from tests.support.hub_auth import ADMIN, ADMIN_KEY
from tests.support.procs import sentinel_process

pytestmark = pytest.mark.timeout(120)

EDGE = "edge-startfail-01"


@contextlib.contextmanager
def meter(port: int) -> Iterator[None]:
    """A Modbus TCP meter serving 11.05 kV at holding register 100, in a thread of its own."""
    regs, _ = encode_values(np.array([11.05]), "float32", "big", "big")
    holding = [SimData(100, values=[int(x) for x in regs[0]], datatype=DataType.REGISTERS)]
    bits = [SimData(0, datatype=DataType.BITS, values=False)]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test.meter", daemon=True)
    thread.start()

    async def start() -> ModbusTcpServer:
        server = ModbusTcpServer([SimDevice(id=1, simdata=(bits, list(bits), holding, list(holding)))],
                                 address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        return server

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def edge_toml(hub_url: str, modbus_port: int, extra: str = "") -> str:
    return f"""[identity]
edge_id = "{EDGE}"
substation = "SUB-T"

[hub]
url = "{hub_url}"
sync_interval_s = 0.5
config_pull_interval_s = 0.3
config_probation_s = 60

[[devices]]
id = "METER-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
unit_id = 1
timeout_s = 0.5
points = [{{ metric = "voltage_l1", unit = "kV", address = 100, data_type = "float32", nominal = 11.0 }}]
{extra}"""


def _until(what, timeout_s: float = 30.0, every_s: float = 0.2):  # noqa: ANN001, ANN202
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            last = what()
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s} s (last: {last!r})")


def _latest_ts(hub_db: Path, device_id: str) -> float:
    with contextlib.closing(sqlite3.connect(hub_db)) as db:
        (ts,) = db.execute("SELECT max(ts) FROM readings WHERE device_id = ? AND value IS NOT NULL",
                           (device_id,)).fetchone()
    return ts or 0.0


def _finish(proc, timeout_s: float = 30.0) -> tuple[str, str]:  # noqa: ANN001
    """Stop a running edge as systemd does (SIGINT) and return what it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=timeout_s)


def test_a_remote_config_that_cannot_start_is_rolled_back_at_the_next_start(tmp_path: Path) -> None:
    private, public = generate_keypair()
    (tmp_path / "edge-models.pub").write_bytes(public)
    hub_port, modbus_port = free_port(), free_port()
    hub_url = f"http://127.0.0.1:{hub_port}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SENTINEL_")}
    hub_env = {**base, "SENTINEL_ADMIN_KEY": ADMIN_KEY, "SENTINEL_MODEL_SIGNING_KEY": private.decode(),
               "SENTINEL_MODEL_REGISTRY": str(tmp_path / "models")}
    with sentinel_process("hub", "edges", "add", EDGE, "--substation", "SUB-T", "--database", "sqlite:///hub.db",
                          cwd=tmp_path, env=base) as added:
        out, err = added.communicate(timeout=60)
    assert added.returncode == 0, err
    edge_env = {**base, "SENTINEL_EDGE_TOKEN": out.strip().splitlines()[-1],
                "SENTINEL_MODEL_PUBLIC_KEY": str(tmp_path / "edge-models.pub")}
    good = edge_toml(hub_url, modbus_port)
    (tmp_path / "blocked").write_text("a file, not a directory: no buffer can be made under it\n")
    bad = edge_toml(hub_url, modbus_port, f'\n[buffer]\npath = "{tmp_path / "blocked" / "buffer.db"}"\n')
    config = tmp_path / "edge.toml"
    config.write_text(good)
    run = ("edge", "run", "--config", str(config))

    def version(v: int) -> dict | None:
        versions = httpx.get(f"{hub_url}/edges/{EDGE}/config", headers=ADMIN, timeout=5).json()["versions"]
        return next((x for x in versions if x["version"] == v), None)

    hub_cmd = ("hub", "serve", "--port", str(hub_port), "--database", "sqlite:///hub.db")
    with meter(modbus_port):
        with sentinel_process(*hub_cmd, cwd=tmp_path, env=hub_env) as hub:
            _until(lambda: httpx.get(f"{hub_url}/healthz", timeout=2).status_code == 200)
            with sentinel_process(*run, cwd=tmp_path, env=edge_env) as first:
                put = httpx.put(f"{hub_url}/edges/{EDGE}/config", json={"toml": bad}, headers=ADMIN, timeout=10)
                assert put.status_code == 201, put.text
                # the device reads with it, so it is applied; the daemon restarts on it and cannot make its buffer
                out, err = first.communicate(timeout=60)
            assert first.returncode != 0, (out, err)
            assert "config version 1 applied; restarting" in out, (out, err)
            failed = [line for line in err.splitlines() if "remote config version 1 failed on probation" in line]
            assert len(failed) == 1 and "the next start goes back to version 0" in failed[0], err
            assert "blocked" in failed[0], failed  # the error names the path it could not use
            assert config.read_text() == bad and version(1)["status"] == "applied"
            hub.send_signal(signal.SIGINT)  # and the hub is away when the box starts again
            hub.communicate(timeout=30)

        # systemd starts it again: it goes back to the previous config and runs on it ...
        with sentinel_process(*run, cwd=tmp_path, env=edge_env) as second:
            _until(lambda: (tmp_path / "edge.toml.reports").exists() and config.read_text() == good)
            assert (tmp_path / "edge.toml.rolled_back").read_text() == bad
            with sentinel_process(*hub_cmd, cwd=tmp_path, env=hub_env) as hub:
                # ... and tells the hub why once it answers; readings of its device arrive
                rolled = _until(lambda: (v := version(1)) and v["status"] == "rolled_back" and v)
                assert second.poll() is None, second.communicate()
                back_at = time.time()
                _until(lambda: _latest_ts(tmp_path / "hub.db", "METER-1") > back_at)
                time.sleep(1.0)  # a few config pulls: version 1 is not taken again
                out, err = _finish(second)
                hub.send_signal(signal.SIGINT)
                hub.communicate(timeout=30)
        assert second.returncode == 0, (out, err)

    assert rolled["reason"].startswith("rolled back to version 0 at start: version 1 failed to start or run: "), rolled
    assert "blocked" in rolled["reason"], rolled
    rollback = [line for line in err.splitlines() if "remote config rolled back to version 0 at start" in line]
    assert len(rollback) == 1 and "version 1 failed to start or run" in rollback[0], err
    assert out.count(f"edge {EDGE} (SUB-T): polling 1 devices") == 1 and "restarting" not in out, out
    assert config.read_text() == good  # not taken again
    assert not (tmp_path / "edge.toml.probation").exists() and not (tmp_path / "edge.toml.reports").exists()
    with contextlib.closing(sqlite3.connect(tmp_path / "var" / f"{EDGE}.db")) as db:
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE 'config_%'").fetchall())
    assert float(meta["config_version"]) == 0 and float(meta["config_tried"]) == 1, meta
    assert float(meta["config_probation_version"]) == 0, meta
    assert "Traceback" not in err, err


def test_a_config_of_the_box_own_that_cannot_start_is_not_rolled_back(tmp_path: Path) -> None:
    """Not on probation (the technician's file, or a remote config already confirmed): the start
    fails each time, as it says, and nothing is put back, even with a <file>.previous beside it."""
    (tmp_path / "blocked").write_text("a file\n")
    config = tmp_path / "edge.toml"
    own = edge_toml(f"http://127.0.0.1:{free_port()}", free_port(),
                    f'\n[buffer]\npath = "{tmp_path / "blocked" / "buffer.db"}"\n')
    config.write_text(own)
    (tmp_path / "edge.toml.previous").write_text("# an older config, confirmed long ago\n")
    for _ in range(2):
        with sentinel_process("edge", "run", "--config", str(config), cwd=tmp_path) as proc:
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (out, err)
        assert "sentinel: error:" in err and "blocked" in err, err
        assert "remote config" not in err, err
    assert config.read_text() == own and not (tmp_path / "edge.toml.rolled_back").exists()


def _on_probation(tmp_path: Path, text: str) -> Path:
    """A config applied from the hub as version 2 over version 1, its starts watched."""
    config = tmp_path / "edge.toml"
    config.write_text(text)
    (tmp_path / "edge.toml.previous").write_text("# version 1\n")
    marker = {"version": 2, "previous": 1, "sha256": hashlib.sha256(text.encode()).hexdigest()}
    (tmp_path / "edge.toml.probation").write_text(json.dumps(marker))
    return config


def test_runs_that_end_without_a_word_roll_back_after_a_few(tmp_path: Path) -> None:
    """A run killed (or the box losing power) says nothing about how it ended: a few such ends in a
    row before the probation is confirmed, and the next start goes back; a clean stop is no failure."""
    config = _on_probation(tmp_path, "# version 2\n")
    with StartGuard(config):  # stopped cleanly (Ctrl-C, systemd's stop): not held against it
        pass
    for _ in range(MAX_UNEXPLAINED_ENDS):  # started, then killed: no __exit__
        guard = StartGuard(config).__enter__()
        assert guard.version == 2 and guard.rolled_back is None
        assert config.read_text() == "# version 2\n"
    guard = StartGuard(config).__enter__()
    assert guard.rolled_back == 2 and guard.version is None
    assert config.read_text() == "# version 1\n" and (tmp_path / "edge.toml.rolled_back").read_text() == "# version 2\n"
    (report,) = msgspec.json.decode((tmp_path / "edge.toml.reports").read_bytes())
    assert report["version"] == 2 and report["status"] == "rolled_back", report
    assert f"ended {MAX_UNEXPLAINED_ENDS} runs without stopping" in report["reason"], report
    assert not (tmp_path / "edge.toml.probation").exists()
    with StartGuard(config) as again:  # the previous config is not watched
        assert again.version is None and again.rolled_back is None


def test_a_config_edited_by_hand_on_probation_is_not_rolled_back(tmp_path: Path) -> None:
    config = _on_probation(tmp_path, "# version 2\n")
    with pytest.raises(OSError), StartGuard(config):
        raise OSError("cannot start")
    assert "cannot start" in json.loads((tmp_path / "edge.toml.probation").read_text())["error"]
    config.write_text("# version 2, fixed by hand on site\n")
    with StartGuard(config) as guard:
        assert guard.version is None and guard.rolled_back is None
    assert config.read_text() == "# version 2, fixed by hand on site\n"
    assert not (tmp_path / "edge.toml.probation").exists() and not (tmp_path / "edge.toml.reports").exists()
