"""The six faults, each injected into a running :class:`~sentinel_cli.faults.rig.Rig` and healed.

Each injector returns a :class:`FaultRecord` (what was done, when it started, when it was healed);
:func:`inject` also waits for recovery (the edge polls again and new data reaches the hub) and
records how long it took. :func:`run_schedule` interleaves them at random for a given time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sentinel_cli.faults.rig import FaultRecord, Rig

FAULTS = ("hub_kill", "edge_kill", "link", "pg_restart", "disk_full", "device")


async def hub_kill(rig: Rig, rng: random.Random) -> FaultRecord:
    """SIGKILL the hub (mid-sync: the edge syncs every half second), restart it after a while."""
    started = time.time()
    rig.hub.kill()
    down = rng.uniform(0.3, 3.0)
    await asyncio.sleep(down)
    await rig.start_hub()
    return FaultRecord("hub_kill", f"hub SIGKILLed, restarted after {down:.1f} s", started, time.time())


async def edge_kill(rig: Rig, rng: random.Random) -> FaultRecord:
    """SIGKILL the edge while it polls and syncs; restart it as systemd would."""
    await asyncio.sleep(rng.uniform(0.0, 1.0))  # a random instant of its cycle
    started = time.time()
    rig.edge.kill()
    down = rng.uniform(0.1, 1.0)
    await asyncio.sleep(down)
    rig.edge.start()
    return FaultRecord("edge_kill", f"edge SIGKILLed, restarted after {down:.1f} s", started, time.time())


async def link(rig: Rig, rng: random.Random, mode: str | None = None) -> FaultRecord:
    """Cut the edge-hub link mid-request: connections reset, stalled, or answers truncated."""
    mode = mode or rng.choice(("refuse", "stall", "truncate"))
    started = time.time()
    rig.link.set_mode(mode)  # type: ignore[arg-type]
    held = rng.uniform(1.0, 6.0)
    await asyncio.sleep(held)
    rig.link.set_mode("pass")
    return FaultRecord("link", f"link {mode} for {held:.1f} s", started, time.time())


async def pg_restart(rig: Rig, rng: random.Random) -> FaultRecord:
    """PostgreSQL stopped as a crash would (immediate) under the hub, down a while, started again."""
    started = time.time()
    down = rng.uniform(0.2, 3.0)
    await asyncio.to_thread(rig.pg.restart, "immediate", down)
    return FaultRecord("pg_restart", f"PostgreSQL crashed and restarted after {down:.1f} s", started, time.time())


async def disk_full(rig: Rig, rng: random.Random) -> FaultRecord:
    """Fill the file system holding the edge's buffer, keep it full a while, free it."""
    if rig.buffer_dir is None:
        raise RuntimeError("the disk-full fault needs the edge's buffer on a file system of its own (buffer_dir)")
    filler = rig.buffer_dir / "filler"
    started = time.time()
    await asyncio.to_thread(fill, filler)
    held = rng.uniform(3.0, 8.0)
    await asyncio.sleep(held)
    filler.unlink()
    return FaultRecord("disk_full", f"buffer's file system full for {held:.1f} s", started, time.time())


async def device(rig: Rig, rng: random.Random, mode: str | None = None) -> FaultRecord:
    """The substation's Modbus devices: restarted (the simulator killed), stalled mid-read, or
    answering garbage (random bytes, or well-framed answers full of random registers)."""
    kind = mode or rng.choice(("restart", "stall", "noise", "modbus_absurd"))
    started = time.time()
    held = rng.uniform(1.0, 5.0)
    if kind == "restart":
        rig.sim.kill()
        await asyncio.sleep(held)
        await rig.start_sim()
    else:
        rig.device_link.set_mode(kind)  # type: ignore[arg-type]
        await asyncio.sleep(held)
        rig.device_link.set_mode("pass")
    return FaultRecord("device", f"devices {kind} for {held:.1f} s", started, time.time())


INJECTORS: dict[str, Callable[..., Awaitable[FaultRecord]]] = {
    "hub_kill": hub_kill, "edge_kill": edge_kill, "link": link, "pg_restart": pg_restart,
    "disk_full": disk_full, "device": device,
}


def fill(path: Path) -> int:
    """Write ``path`` until its file system is full; returns the bytes written."""
    chunk = b"\0" * (1 << 20)
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):  # big chunks, then the last scraps
            while True:
                try:
                    written += os.write(fd, chunk[:size])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return written


async def inject(rig: Rig, kind: str, rng: random.Random, recovery_timeout_s: float = 60.0,
                 **variant: str) -> FaultRecord:
    """Inject one fault (``variant``: e.g. ``mode="stall"`` for the link), heal it, wait for
    recovery; the record is kept on the rig."""
    record = await INJECTORS[kind](rig, rng, **variant)  # type: ignore[call-arg]
    record.recovered_s = await rig.recovery(record.healed, recovery_timeout_s)
    rig.records.append(record)
    return record


async def run_schedule(rig: Rig, duration_s: float, rng: random.Random, kinds: tuple[str, ...] = FAULTS,
                       gap_s: tuple[float, float] = (2.0, 10.0),
                       on_fault: Callable[[FaultRecord], None] | None = None) -> None:
    """Inject faults of ``kinds`` in random order for ``duration_s``, with a random calm between."""
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(*gap_s))
        rig.watch()
        record = await inject(rig, rng.choice(kinds), rng)
        if on_fault is not None:
            on_fault(record)


@contextlib.contextmanager
def small_filesystem(path: Path, size_mb: int):  # type: ignore[no-untyped-def]
    """A tmpfs of ``size_mb`` mounted at ``path`` (root only); yields None where it cannot be mounted."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)
