"""How the hub holds its HTTP connections. An idle one outlives the clients' own idle limit, so a
client never sends a request on a connection the hub is closing at that moment (the race an edge
syncing every 5 s would hit with uvicorn's default of 5 s, and CI hit in a browser test: "Server
disconnected without sending a response"); and Nagle's algorithm is off on every connection."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from hub.server import KEEP_ALIVE_S, listening_socket
from hub.settings import OrchestratorSettings, Settings
from hub.storage.sqlite import SQLiteStorage
from tests.support.hub_auth import ADMIN_KEY
from tests.support.live_hub import LiveHub

HTTPX_KEEPALIVE_EXPIRY_S = 5.0  # httpx.Limits' default: the edges', the CLI's and the tests' clients


def _get(sock: socket.socket, port: int) -> bytes:
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_connection_idle_longer_than_a_clients_expiry_is_still_served(tmp_path: Path) -> None:
    assert KEEP_ALIVE_S > 60 > HTTPX_KEEPALIVE_EXPIRY_S  # beyond httpx's and nginx's upstream idle limits
    storage = SQLiteStorage(tmp_path / "hub.db")
    settings = Settings(admin_key=ADMIN_KEY, model_registry=str(tmp_path / "models"),
                        agents=OrchestratorSettings(interval_s=3600, min_gap_s=3600))
    try:
        with LiveHub(storage, settings) as hub, socket.create_connection(("127.0.0.1", hub.port), timeout=10) as s:
            first = _get(s, hub.port)
            assert first.startswith(b"HTTP/1.1 200"), first[:200]
            time.sleep(HTTPX_KEEPALIVE_EXPIRY_S + 1.5)  # uvicorn's default (5 s) had closed it by now
            again = _get(s, hub.port)
            assert again.startswith(b"HTTP/1.1 200"), f"the idle connection was closed: {again[:200]!r}"
    finally:
        storage.close()


def test_connections_the_hub_accepts_have_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto says TCP; the hub's own listening socket
    (made for TCP_NOTSENT_LOWAT) had proto 0, so Nagle stayed on and every response on a kept-alive
    connection waited 40 ms for the client's delayed ACK between its head and its body."""
    listener = listening_socket("127.0.0.1", 0)
    try:
        listener.listen()
        with socket.create_connection(listener.getsockname()[:2], timeout=5):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.proto == socket.IPPROTO_TCP  # what asyncio's _set_nodelay looks for
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()
