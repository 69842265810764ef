"""`sentinel edge check` and `sentinel edge status` against a real simulator."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import CONFIGS, free_port

pytestmark = pytest.mark.timeout(120)


def _config(tmp_path: Path, modbus: int) -> Path:
    path = tmp_path / "site.toml"
    text = (CONFIGS / "nairobi-s1.toml").read_text().replace("port = 15020", f"port = {modbus}")
    text = text.replace('url = "http://127.0.0.1:8000"', f'url = "http://127.0.0.1:{free_port()}"')
    path.write_text(text)
    return path


def _sentinel(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sentinel_cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=90)


def test_check_reads_every_point_and_fails_clearly_when_a_device_is_missing(tmp_path: Path) -> None:
    from protocols.config import load_config
    from simulator.runner import Simulation

    modbus = free_port()
    cfg_path = _config(tmp_path, modbus)
    cfg = load_config(cfg_path)

    async def with_sim() -> subprocess.CompletedProcess:
        async with Simulation([cfg]):
            return await asyncio.to_thread(_sentinel, "edge", "check", "--config", str(cfg_path), cwd=tmp_path)

    ok = asyncio.run(with_sim())
    assert ok.returncode == 0, ok.stdout + ok.stderr
    lines = ok.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "POINT", "VALUE", "QUALITY", "LATENCY", "PROBLEM"]
    assert lines[-1] == "16/16 points read"
    row = next(line for line in lines if line.startswith("FEEDER-F12") and " current_l1 " in line)
    assert " A " in row and " good " in row and " ms" in row

    down = _sentinel("edge", "check", "--config", str(cfg_path), cwd=tmp_path)
    assert down.returncode == 1
    assert down.stdout.splitlines()[-1] == "0/16 points read; 16 failed"
    assert "connection refused" in down.stdout
    assert "Traceback" not in down.stderr and down.stderr.strip() == ""


def test_status_shows_health_depth_and_last_sync(tmp_path: Path) -> None:
    from edge.daemon import EdgeDaemon
    from protocols.config import load_config
    from simulator.runner import Simulation

    cfg_path = _config(tmp_path, free_port())
    cfg = load_config(cfg_path)
    buffer = tmp_path / "edge.db"

    never = _sentinel("edge", "status", "--config", str(cfg_path), "--buffer", str(buffer), cwd=tmp_path)
    assert never.returncode == 2 and "no buffer at" in never.stderr

    async def run() -> None:
        async with Simulation([cfg]) as sim:
            sim_task = asyncio.create_task(sim.run())
            daemon = EdgeDaemon(cfg, buffer_path=buffer)
            task = asyncio.create_task(daemon.run())
            await asyncio.sleep(3)
            task.cancel()
            sim_task.cancel()
            await asyncio.gather(task, sim_task, return_exceptions=True)

    asyncio.run(run())  # the hub URL points at a closed port: everything stays buffered
    out = _sentinel("edge", "status", "--config", str(cfg_path), "--buffer", str(buffer), "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    assert st["readings_pending"] > 20 and st["last_sync"] is None
    assert st["oldest_pending_age_s"] >= 2.5
    assert st["hub"]["up"] is False
    assert {d["device_id"]: d["online"] for d in st["devices"]} == {"BUS-220": True, "FEEDER-F12": True, "TR-04": True}
    text = _sentinel("edge", "status", "--config", str(cfg_path), "--buffer", str(buffer), cwd=tmp_path).stdout
    assert "hub http://127.0.0.1:" in text and "UNREACHABLE" in text and "last sync: never" in text
    assert st["scoring"]["model"] is None and st["scoring"]["readings_scored"] == st["readings_pending"]
    assert "model: none (detectors only)" in text


def test_status_lists_the_dead_letters_with_their_reasons_newest_first(tmp_path: Path) -> None:
    from edge.buffer import Buffer
    from protocols.config import load_config
    from protocols.mqtt.codec import DeadLetter

    cfg_path = _config(tmp_path, free_port())
    buffer = tmp_path / "edge.db"
    buf = Buffer(buffer, load_config(cfg_path).identity.substation)
    buf.add_dead_letters([
        DeadLetter.make("MET-7@broker", "site/met7", b'{"value": "hot"}', "value: Expected `float`, got `str`",
                        ts=1_790_000_000.0),
        DeadLetter.make("MET-7@broker", "site/met7", b"x" * 500, "not JSON: Expecting value at byte 0",
                        ts=1_790_000_060.0),
    ])
    buf.close()

    text = _sentinel("edge", "status", "--config", str(cfg_path), "--buffer", str(buffer), "--dead-letters",
                     cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    listing = text.stdout[text.stdout.index("dead letters: the newest 2 of 2"):]
    assert listing.index("not JSON") < listing.index("Expected `float`")  # newest first
    assert "topic site/met7" in listing and "MET-7@broker" in listing
    assert "x" * 160 + "... (500 characters)" in listing and "x" * 161 not in listing
    one = _sentinel("edge", "status", "--config", str(cfg_path), "--buffer", str(buffer), "--dead-letters", "1",
                    "--json", cwd=tmp_path)
    letters = json.loads(one.stdout)["dead_letter_list"]
    assert [d["reason"] for d in letters] == ["not JSON: Expecting value at byte 0"]
    assert letters[0]["payload"] == "x" * 500 and letters[0]["received"].startswith("2026-09-21T")
    plain = _sentinel("edge", "status", "--config", str(cfg_path), "--buffer", str(buffer), cwd=tmp_path).stdout
    assert "dead letters:" not in plain and "malformed messages 2" in plain
    bad = _sentinel("edge", "status", "--config", str(cfg_path), "--buffer", str(buffer), "--dead-letters", "-3",
                    cwd=tmp_path)
    assert bad.returncode == 2 and "--dead-letters" in bad.stderr
