"""Serving the hub inside an existing event loop (the demo, end-to-end tests)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

import httpx
import uvicorn

from hub.app import create_app
from hub.settings import Settings
from hub.storage import Storage

log = logging.getLogger(__name__)
STOP_GRACE_S = 5.0
# Unsent bytes the kernel holds per connection before the hub's socket takes no more (Linux, macOS:
# TCP_NOTSENT_LOWAT). Without it, for a client that stops reading (a dashboard in a background tab),
# the kernel buffers up to tcp_wmem's 4 MiB of stale WebSocket messages; with it the hub feels the
# back-pressure at once and hands that client only the latest state (hub.stream). The kernel still
# sends as fast as the peer takes: a fast client's throughput is unaffected.
NOTSENT_LOWAT = 128 * 1024


def listening_socket(host: str, port: int) -> socket.socket:
    """The hub's listening socket, bound (accepted connections inherit its options). OSError if
    the address cannot be had.

    Made with ``proto=IPPROTO_TCP``, and ``TCP_NODELAY`` set: asyncio turns Nagle's algorithm off
    only on sockets whose ``proto`` says TCP, and a socket made with the default 0 (as this one was)
    left it on for every connection. A response leaves in two writes (head, body); the second waited
    for the ACK of the first, which the client delays by 40 ms: every request on a kept-alive
    connection took 40-50 ms more (an edge's sync of 200 readings 52 ms instead of 8, ``/healthz``
    47 ms instead of 1.5)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_NOTSENT_LOWAT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


MAX_REQUEST_HEAD_BYTES = 1 << 20
"""A request line and headers up to 1 MiB are read and answered (a long repeatable query, say,
gets the 400 naming what is wrong); h11's default of 16 KiB cut such a request off with a reset."""

KEEP_ALIVE_S = 75
"""How long the hub keeps an idle HTTP connection open. It must outlast every client's own idle
limit (httpx, the edges' and the CLI's client: 5 s; nginx's upstream keepalive_timeout: 60 s) so the
client always closes first. With uvicorn's default of 5 s, equal to httpx's, a request sent on a
connection idle for about 5 s raced the hub's close and failed with "Server disconnected without
sending a response": an edge syncing every 5 s would lose one sync in so many to that race."""


def uvicorn_config(app: Any, host: str, port: int, *, ssl_certfile: str | None = None,
                   ssl_keyfile: str | None = None, **extra: Any) -> uvicorn.Config:
    """How the hub is served, by ``sentinel hub serve`` and :class:`HubServer` alike. Logs go to
    the process's handlers (``log_config=None``: uvicorn's dictConfig would replace them)."""
    return uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on", log_config=None,
                          ssl_certfile=ssl_certfile or None, ssl_keyfile=ssl_keyfile or None,
                          h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
                          timeout_keep_alive=KEEP_ALIVE_S, **extra)


class HubServer:
    """The hub on ``host:port`` as a task of the running loop. ``await start()``, ``await stop()``.

    With ``ssl_certfile`` (PEM: the hub's certificate, then any intermediates) and ``ssl_keyfile``
    it serves HTTPS (uvicorn's TLS) and :attr:`url` is ``https://``."""

    def __init__(self, storage: Storage, port: int, host: str = "127.0.0.1", settings: Settings | None = None,
                 *, ssl_certfile: str | None = None, ssl_keyfile: str | None = None) -> None:
        if bool(ssl_certfile) != bool(ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        self.host, self.port = host, port
        self.tls = bool(ssl_certfile)
        self.url = f"{'https' if self.tls else 'http'}://{host}:{port}"
        app = create_app(settings or Settings(), storage=storage)
        # a client that keeps a request open gets STOP_GRACE_S to finish it when the hub stops
        self._server = uvicorn.Server(uvicorn_config(app, host, port, ssl_certfile=ssl_certfile,
                                                     ssl_keyfile=ssl_keyfile, timeout_graceful_shutdown=STOP_GRACE_S))
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; returns once /healthz answers. Raises OSError if it cannot."""
        sock = listening_socket(self.host, self.port)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"hub.{self.port}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # the readiness probe only asks our own server whether it is up, sending nothing: it need not
        # verify the certificate (whoever connects for real does)
        async with httpx.AsyncClient(verify=not self.tls) as client:
            while loop.time() < deadline:
                if self._task.done():
                    self._task.result()  # raises what stopped it
                    raise OSError(f"hub on {self.host}:{self.port} stopped during start-up (is the port in use?)")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.url}/healthz")).status_code == 200:
                        return
                await asyncio.sleep(0.05)
        await self.stop()
        raise OSError(f"hub on {self.host}:{self.port} did not answer within {timeout_s:g} s")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._server.should_exit = True
        try:
            async with asyncio.timeout(2 * STOP_GRACE_S + 5.0):  # grace, then the lifespan's shutdown
                await asyncio.shield(self._task)
        except TimeoutError:
            log.warning("hub on %s:%s did not stop within %g s; cancelling it", self.host, self.port,
                        2 * STOP_GRACE_S + 5.0)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except asyncio.CancelledError:  # the server task was cancelled (fine) or we were (propagate)
            me = asyncio.current_task()
            if not self._task.done() or (me is not None and me.cancelling()):
                raise
        self._task = None
