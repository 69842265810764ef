"""A virtual RS-485 line: a pseudo-terminal pair made by socat.

The edge opens the path its firmware config names (``port = "/tmp/sentinel/nairobi-rs485"``); the
simulator serves Modbus RTU on the other end, the same path with ``.sim`` appended. Both are
symbolic links socat makes to the /dev/pts devices it allocates, and removes when it stops.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path


class SerialLineError(OSError):
    pass


class PtyPair:
    def __init__(self, edge_path: str) -> None:
        self.edge_path = Path(edge_path)
        self.sim_path = Path(f"{edge_path}.sim")
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self, timeout_s: float = 5.0) -> None:
        socat = shutil.which("socat")
        if socat is None:
            raise SerialLineError(f"cannot make the virtual serial line {self.edge_path}: socat is not installed "
                                  "(apt-get install socat)")
        self.edge_path.parent.mkdir(parents=True, exist_ok=True)
        for p in (self.edge_path, self.sim_path):
            if p.is_symlink() or p.exists():
                p.unlink()
        self._proc = await asyncio.create_subprocess_exec(
            socat, f"pty,raw,echo=0,link={self.edge_path}", f"pty,raw,echo=0,link={self.sim_path}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not (self.edge_path.exists() and self.sim_path.exists()):
            if self._proc.returncode is not None or loop.time() > deadline:
                err = (await self._proc.stderr.read()).decode(errors="replace") if self._proc.stderr else ""
                await self.stop()
                raise SerialLineError(f"socat could not make {self.edge_path}: {err.strip() or 'timed out'}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):  # not wait_for: on 3.11 it can swallow a cancellation
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
