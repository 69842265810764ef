"""A TCP proxy on loopback that misbehaves on command: the faulty link between two of our processes.

    proxy = ChaosProxy(target_port=hub_port)
    await proxy.start()                 # proxy.port: point the client here
    proxy.set_mode("refuse")            # every open connection reset, new ones reset on accept
    proxy.set_mode("stall")             # connections accepted, nothing forwarded either way
    proxy.set_mode("truncate")          # requests forwarded, answers cut after a few bytes, then reset
    proxy.set_mode("noise")             # no upstream: each request answered with random bytes
    proxy.set_mode("modbus_absurd")     # no upstream: well-framed Modbus answers full of random registers
    proxy.set_mode("pass")              # an honest pipe again

Switching to any mode but ``pass`` resets the connections open at that moment, so a fault lands in
the middle of whatever request is in flight. Every byte goes through asyncio streams; nothing here
knows the protocol except ``modbus_absurd``, which answers Modbus/TCP read requests (function codes
1-4) with the right framing and random content.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["pass", "refuse", "stall", "truncate", "noise", "modbus_absurd"]
MODES: tuple[Mode, ...] = ("pass", "refuse", "stall", "truncate", "noise", "modbus_absurd")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dropped link or a dead peer's kernel does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class ChaosProxy:
    """Listens on 127.0.0.1 (``port``; 0 picks a free one) and forwards to ``target_host:target_port``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1", port: int = 0, *,
                 truncate_after: int = 7, seed: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self.mode: Mode = "pass"
        self.truncate_after = truncate_after
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.resets = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._open):
            _reset(w)
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    def set_mode(self, mode: Mode) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        if mode != "pass":  # the fault lands mid-request: whatever is open now is cut
            self.resets += len(self._open)
            for w in list(self._open):
                _reset(w)
            self._open.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._open.add(writer)
        self.connections += 1
        try:
            await self._serve(self.mode, reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a reset, a peer gone, or the proxy stopping: the connection's end either way
        finally:
            self._open.discard(writer)
            self._tasks.discard(task)
            if not writer.transport.is_closing():
                writer.transport.abort()

    async def _serve(self, mode: Mode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if mode == "refuse":
            self.resets += 1
            _reset(writer)
        elif mode == "stall":
            while await reader.read(65536):  # swallow, answer nothing, until the client gives up
                pass
        elif mode == "noise":
            while await reader.read(65536):
                writer.write(self._rng.randbytes(self._rng.randint(1, 64)))
                await writer.drain()
        elif mode == "modbus_absurd":
            await self._modbus_absurd(reader, writer)
        else:
            await self._forward(mode, reader, writer)

    async def _forward(self, mode: Mode, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # the far side is down: the client sees what it would see, a reset
            _reset(writer)
            return
        self._open.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, limit: int | None) -> None:
            sent = 0
            try:
                while data := await src.read(65536):
                    if limit is not None and sent + len(data) > limit:
                        dst.write(data[: max(0, limit - sent)])
                        with contextlib.suppress(ConnectionError):
                            await dst.drain()
                        _reset(dst)
                        _reset(writer)
                        _reset(up_writer)
                        return
                    dst.write(data)
                    await dst.drain()
                    sent += len(data)
            finally:
                if dst.can_write_eof() and not dst.transport.is_closing():
                    with contextlib.suppress(OSError):
                        dst.write_eof()

        try:
            await asyncio.gather(pipe(reader, up_writer, None),
                                 pipe(up_reader, writer, self.truncate_after if mode == "truncate" else None))
        finally:
            self._open.discard(up_writer)
            up_writer.transport.abort()

    async def _modbus_absurd(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readexactly(7)  # MBAP: transaction, protocol, length, unit
            tid, _proto, length, unit = struct.unpack(">HHHB", head)
            pdu = await reader.readexactly(max(0, length - 1))
            if not pdu:
                return
            fc = pdu[0]
            if fc in (3, 4) and len(pdu) >= 5:
                (qty,) = struct.unpack(">H", pdu[3:5])
                body = bytes([fc, 2 * qty]) + self._rng.randbytes(2 * qty)
            elif fc in (1, 2) and len(pdu) >= 5:
                (qty,) = struct.unpack(">H", pdu[3:5])
                n = (qty + 7) // 8
                body = bytes([fc, n]) + self._rng.randbytes(n)
            else:
                body = bytes([fc | 0x80, 1])  # illegal function
            writer.write(struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body)
            await writer.drain()
