"""``WS /ws/grid-status``: the grid status, alerts, forecasts and maintenance predictions as they
change (the seed's ``{grid_status, alerts, forecasts, maintenance_predictions}``).

- **Who**: a viewer or above, by ``Authorization: Bearer KEY`` or, from a browser, the login's
  session cookie (then only from the hub's own origin: a page elsewhere cannot ride the cookie).
  Refused before the connection is accepted: an HTTP 401 / 403 (400 for a bad filter) with the
  hub's JSON error body when the server can send one (uvicorn can); else closed before accepting
  with code 4000 + status (4401, 4403, 4400) and the reason.
- **What**: ``{"type": "snapshot"}`` on connect, then ``{"type": "update"}`` whenever the client's
  part of the state changes (each carries the whole of it: a client that missed one misses nothing),
  and ``{"type": "heartbeat"}`` after ``heartbeat_s`` without a message. Each has a ``timestamp`` and
  the ``substations`` asked (null: all).
- **Filter**: ``?substation=NAIROBI-S1`` (repeatable): only those substations' grid status, alerts,
  forecasts and predictions.
- **Slow clients**: see :mod:`hub.stream.broadcaster`: each gets the latest state, never a backlog;
  one that takes no message for ``send_timeout_s`` is disconnected (code 1008).

What a client sends is not read (the filter is the URL's); closing is how it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from litestar import WebSocket, websocket
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, PermissionDeniedException, ValidationException
from litestar.handlers.base import BaseRouteHandler

from hub.auth import VIEWER
from hub.auth.guards import SESSION_COOKIE, allow
from hub.auth.model import Policy
from hub.stream.broadcaster import Broadcaster, Client, Filter, StreamSettings, encode_message

__all__ = ["PATH", "ROUTES"]

log = logging.getLogger(__name__)

PATH = "/ws/grid-status"
MAX_FILTER = 100  # substations in one filter
_REFUSED = "sentinel.ws_refused"  # the scope key the guard leaves its refusal under


def _refuse_in_handler(policy: Policy) -> Any:
    """The hub's guard (:func:`hub.auth.guards.allow`) for a WebSocket route: it declares the same
    policy, but leaves its refusal in the scope for the handler, which answers it with a status and
    a reason; a guard's exception would close the handshake with no word of why."""
    check = allow(policy)

    def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        try:
            check(connection, handler)
        except HTTPException as exc:
            connection.scope[_REFUSED] = exc  # type: ignore[literal-required]

    guard.__dict__.update(check.__dict__)  # the policy it declares, for hub.auth.guards.policy_of
    guard.__name__ = check.__name__
    return guard


def _filter(socket: WebSocket[Any, Any, Any]) -> Filter:
    names = socket.query_params.getall("substation", [])
    if not names:
        return None
    if len(names) > MAX_FILTER:
        raise ValidationException(detail=f"substation: at most {MAX_FILTER} substations in one filter, not {len(names)}")
    for i, name in enumerate(names):
        if not 1 <= len(name) <= 128 or not name.isprintable():
            raise ValidationException(detail=f"substation[{i}]: a substation's name is 1 to 128 printable characters, "
                                             f"not {name[:140]!r}")
    return frozenset(names)


def _check_origin(socket: WebSocket[Any, Any, Any]) -> None:
    """A browser that presents the session cookie must be on the hub's own page: a WebSocket is not
    bound by the same-origin rule, so a page elsewhere could otherwise read the stream as its user."""
    if socket.headers.get("authorization") or SESSION_COOKIE not in socket.cookies:
        return
    origin = socket.headers.get("origin")
    if origin and urlsplit(origin).netloc.lower() != socket.headers.get("host", "").lower():
        raise PermissionDeniedException(detail=f"origin {origin} is not this hub's: the session cookie is accepted "
                                               "only from the hub's own pages (send Authorization: Bearer instead)")


async def _refuse(socket: WebSocket[Any, Any, Any], exc: HTTPException) -> None:
    status = exc.status_code
    if "websocket.http.response" in (socket.scope.get("extensions") or {}):
        headers = [(b"content-type", b"application/json")]
        headers += [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in (exc.headers or {}).items()]
        await socket.send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await socket.send({"type": "websocket.http.response.body",
                           "body": msgspec.json.encode({"status_code": status, "detail": exc.detail})})
    else:  # no denial response: close before accepting, the status in the code
        await socket.close(code=4000 + status, reason=exc.detail.encode()[:123].decode(errors="ignore"))


@websocket(PATH, guards=[_refuse_in_handler(VIEWER)])
async def grid_status_stream(socket: WebSocket[Any, Any, Any]) -> None:
    """The grid status as it changes (hub.stream.routes)."""
    state = socket.app.state
    try:
        refusal = socket.scope.get(_REFUSED)  # type: ignore[misc]
        if refusal is not None:
            raise refusal
        _check_origin(socket)
        substations = _filter(socket)
    except HTTPException as exc:
        state.metrics.ws_connection("refused")
        await _refuse(socket, exc)
        return
    broadcaster: Broadcaster = state.broadcaster
    await socket.accept()
    state.metrics.ws_connection("accepted")
    client, snapshot = await broadcaster.connect(substations)
    try:
        await _serve(socket, client, snapshot, broadcaster.settings, state.metrics)
    finally:
        broadcaster.disconnect(client)


class _TooSlow(Exception):
    pass


async def _serve(socket: WebSocket[Any, Any, Any], client: Client, snapshot: bytes, settings: StreamSettings,
                 metrics: Any) -> None:
    """Send until the client leaves (or is too slow); read only to see it leave."""
    loop = asyncio.get_running_loop()

    async def send(message: bytes, kind: str) -> None:
        try:
            async with asyncio.timeout(settings.send_timeout_s):
                await socket.send_text(message.decode())
        except TimeoutError:
            raise _TooSlow from None
        metrics.ws_sent(kind)

    async def sender() -> None:
        await send(snapshot, "snapshot")
        last = loop.time()
        while True:
            message, kind = None, "update"
            try:
                async with asyncio.timeout(max(0.0, settings.heartbeat_s - (loop.time() - last))):
                    await client.ready.wait()
                message = client.take()
            except TimeoutError:
                message, kind = encode_message("heartbeat", datetime.now(UTC), client.substations), "heartbeat"
            if message is not None:
                await send(message, kind)
                last = loop.time()

    async def receiver() -> None:
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass

    tasks = [asyncio.create_task(sender(), name="hub.stream.send"),
             asyncio.create_task(receiver(), name="hub.stream.receive")]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    too_slow = any(isinstance(r, _TooSlow) for r in results)
    if too_slow:
        log.info("%s: a client took no message for %g s: disconnected", PATH, settings.send_timeout_s)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):  # its connection may not even take the close frame
                await socket.close(code=1008, reason="too slow: took no message for "
                                                     f"{settings.send_timeout_s:g} s")
    for r in results:
        if isinstance(r, Exception) and not isinstance(r, _TooSlow | asyncio.CancelledError):
            log.debug("%s: connection ended: %s", PATH, r)  # the client went away mid-send


ROUTES = [grid_status_stream]
