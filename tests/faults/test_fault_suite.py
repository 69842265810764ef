"""The fault suite, short form: each fault injected several times into a real simulator, a real
edge and a real hub on PostgreSQL (separate processes, SIGKILLed for real), then every reading
counted from the edge's buffer to the hub's database (sentinel_cli/faults/rig.py explains how).

After each test: every reading the edge stored is at the hub exactly once and unaltered (or still
pending: none, after the drain), every reading dropped is counted with its reason, no process
exited by itself, the edge polled again and new data reached the hub within seconds of each fault
ending, and the edge stopped within seconds when asked. The long form interleaves all six for as
long as you like: ``sentinel sim faults --duration 30m`` (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from sentinel_cli.faults import Ledger, Rig, inject, small_filesystem
from sentinel_cli.pgserver import PostgresServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.postgres]

RECOVERY_BOUND_S = 20.0  # heal -> the edge polls again and the hub holds newer data (a loaded 2-core box)
STOP_BOUND_S = 10.0


@pytest.fixture(scope="module")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A PostgreSQL server of this module's own: the tests crash and restart it."""
    with PostgresServer(tmp_path_factory.mktemp("faults-pg")) as server:
        yield server


@pytest.fixture
def buffer_fs(tmp_path: Path) -> Iterator[Path]:
    """A 32 MB file system of its own for the edge's buffer, so it can be filled."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system for the buffer needs root")
    with small_filesystem(tmp_path / "buffer-fs", 32) as path:
        if path is None:
            pytest.fail("could not mount a tmpfs for the edge's buffer (root without CAP_SYS_ADMIN?)")
        yield path


def run(rig: Rig, plan: list[tuple[str, dict[str, str]]], calm_s: tuple[float, float] = (1.0, 3.0),
        seed: int = 1) -> tuple[Ledger, float]:
    """Start the rig, inject ``plan`` (fault kind, variant) with calm between, finish, count."""
    rng = random.Random(seed)

    async def main() -> tuple[Ledger, float]:
        await rig.start()
        try:
            await asyncio.sleep(3)  # data flowing before the first fault
            for kind, variant in plan:
                await inject(rig, kind, rng, **variant)
                await asyncio.sleep(rng.uniform(*calm_s))
            return await rig.finish()
        finally:
            await rig.close()

    ledger, stop_s = asyncio.run(main())
    report = f"ledger {ledger.as_dict()}\nfaults {rig.records}\nedge log:\n{rig.edge.tail(3000)}"
    assert rig.crashes() == [], report
    assert ledger.problems() == [], report
    assert ledger.produced > 50, report
    assert ledger.pending == 0, report
    assert ledger.at_hub_distinct == ledger.produced - ledger.dropped_buffer_full, report
    slow = [r for r in rig.records if r.recovered_s is None or r.recovered_s > RECOVERY_BOUND_S]
    assert not slow, f"no recovery within {RECOVERY_BOUND_S} s after: {slow}\n{report}"
    assert stop_s < STOP_BOUND_S, report
    return ledger, stop_s


def test_hub_killed_again_and_again_during_sync(tmp_path: Path, pg: PostgresServer) -> None:
    rig = Rig(tmp_path / "rig", pg)
    run(rig, [("hub_kill", {})] * 4)
    assert rig.hub.kills == 4


def test_edge_killed_every_few_seconds(tmp_path: Path, pg: PostgresServer) -> None:
    rig = Rig(tmp_path / "rig", pg)
    run(rig, [("edge_kill", {})] * 6, calm_s=(0.5, 2.5))
    assert rig.edge.kills == 6 and rig.edge.starts == 7


@pytest.mark.parametrize("mode", ["refuse", "stall", "truncate"])
def test_link_cut_mid_request(tmp_path: Path, pg: PostgresServer, mode: str) -> None:
    rig = Rig(tmp_path / "rig", pg)
    run(rig, [("link", {"mode": mode})] * 2)
    assert rig.link.resets > 0 or mode == "stall"
    assert "hub fault" in rig.edge.tail(100_000)  # the edge saw the cut, and still lost nothing


def test_postgres_restarted_under_the_hub(tmp_path: Path, pg: PostgresServer) -> None:
    """An immediate stop is a crash: the hub must have acked only what PostgreSQL had made durable
    (before synchronous_commit was forced on, this lost the last acked batches)."""
    rig = Rig(tmp_path / "rig", pg)
    run(rig, [("pg_restart", {})] * 3)
    assert "hub holds readings through" not in rig.edge.tail(100_000)  # no acked data went missing


def test_disk_full_then_freed(tmp_path: Path, pg: PostgresServer, buffer_fs: Path) -> None:
    """The buffer's file system full for several seconds: readings are held in memory (here up to
    50), the excess is dropped and counted, everything committed arrives, polling never stops."""
    rig = Rig(tmp_path / "rig", pg, buffer_dir=buffer_fs, hold_rows=50)
    ledger, _ = run(rig, [("disk_full", {})] * 2)
    log = rig.edge.tail(100_000)
    assert "cannot write the buffer" in log and "database or disk is full" in log
    assert "buffer writable again" in log
    assert ledger.dropped_unwritable > 0  # 3-8 s full at ~13 readings/s is more than 50 held


def test_devices_restart_stall_and_answer_garbage(tmp_path: Path, pg: PostgresServer) -> None:
    rig = Rig(tmp_path / "rig", pg)
    run(rig, [("device", {"mode": k}) for k in ("restart", "stall", "noise", "modbus_absurd")])
    assert rig.sim.kills == 1
    log = rig.edge.tail(100_000)
    assert "device BUS-220 down" in log and "device BUS-220 answers again" in log


def test_the_edge_stops_within_seconds_while_its_devices_hang_mid_read(tmp_path: Path, pg: PostgresServer) -> None:
    """Ctrl-C (systemd's stop) while every device connection hangs in the middle of a read: the
    edge still stops within a few seconds, and what it had polled reaches the hub."""
    rig = Rig(tmp_path / "rig", pg)

    async def main():  # noqa: ANN202
        await rig.start()
        try:
            await asyncio.sleep(3)  # data flowing
            rig.device_link.set_mode("stall")  # requests reach the proxy; no answer ever comes back
            await asyncio.sleep(2.5)  # the edge is now waiting on reads that will not finish
            stop_s = await rig.edge.interrupt()
            rig.device_link.set_mode("pass")
            await rig.drain()
            return stop_s, await asyncio.to_thread(rig.ledger)
        finally:
            await rig.close()

    stop_s, ledger = asyncio.run(main())
    print(f"stopped in {stop_s:.2f} s; {ledger.produced} readings, {ledger.at_hub_distinct} at the hub")
    assert stop_s < 6.0, f"the edge took {stop_s:.1f} s to stop with its devices hung"
    assert ledger.missing == 0 and ledger.duplicates == 0 and ledger.produced > 20, ledger
    assert ledger.at_hub_distinct == ledger.produced - ledger.pending, ledger
