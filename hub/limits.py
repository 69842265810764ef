"""Request body limits, checked before any decoder runs (ASGI middleware for every route).

A body larger than ``max_body_bytes`` is answered ``413`` (``request body is 12345678 bytes; the
limit is 10 MiB``): refused from its ``Content-Length`` before a byte is read, or as soon as a
streamed body passes the limit. JSON nested deeper than ``max_json_depth`` is answered ``400``
(``request body is JSON nested 1000 levels deep; the limit is 64``): decoders recurse per level, and
a few kilobytes of ``[[[[...`` must not reach them. Both answers have the hub's error shape
(``status_code``, ``detail``) and are logged as any refused request is.

The depth is found by a byte scan, not a parse (:func:`json_depth`): bytes methods drop escaped
quotes and everything but brackets and quotes; numpy adds up the brackets outside strings among
what is left. 61 us for an edge's 36 KB sync (a numpy scan of every byte took 340), run in a worker thread
for large bodies. Garbage gets a depth too; the decoder refuses it afterwards
with a 400 of its own.

    Litestar(..., middleware=[body_limits(max_body_bytes=10 * MiB, max_json_depth=64)])
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import numpy as np
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware

__all__ = ["DEFAULT_MAX_BODY_BYTES", "DEFAULT_MAX_JSON_DEPTH", "BodyLimits", "body_limits", "json_depth"]

MiB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 10 * MiB
DEFAULT_MAX_JSON_DEPTH = 64

_STEP = np.zeros(256, dtype=np.int8)  # a byte's change of depth
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1
_QUOTE = ord('"')
_NOT_MARKS = bytes(sorted(set(range(256)) - set(b'[]{}"')))  # what json_depth deletes before it looks
_CHUNK = 1 << 20  # brackets per step: bounds the temporary arrays (a few MiB)
_THREAD_ABOVE = 256 * 1024  # bodies larger than this are scanned off the event loop
# bodies that are not JSON (none of the hub's routes takes one yet): size-checked only
_NOT_JSON = ("multipart/", "application/octet-stream", "application/x-www-form-urlencoded")


def json_depth(body: bytes, chunk: int = _CHUNK) -> int:
    """The deepest nesting of arrays and objects in ``body`` (``[]`` is 1, ``[{}]`` 2); brackets
    inside strings do not count. Bytes methods, in C, go first: escapes (``\\\\`` pairs, then
    ``\\"``: what is left of a run of backslashes before a quote is the one escaping it), every byte
    but brackets and quotes, and adjacent quotes (an empty string, or two strings made one: what was
    inside either stays inside). What is left is mostly the brackets, often a few hundred bytes;
    numpy marks the strings among it by the parity of the quotes and adds up the brackets outside
    them, ``chunk`` bytes at a time, carrying the depth and whether a string is open."""
    if b"\\" in body:
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    a = np.frombuffer(body.translate(None, _NOT_MARKS).replace(b'""', b""), dtype=np.uint8)
    deepest = depth = 0
    in_string = False
    for lo in range(0, a.size, chunk):
        c = a[lo:lo + chunk]
        inside = np.cumsum(c == _QUOTE, dtype=np.uint8)  # parity of the quotes so far: 1 inside a string
        inside &= 1
        if in_string:
            inside ^= 1
        in_string = bool(inside[-1])
        steps = _STEP[c]
        steps[inside.view(bool)] = 0
        d = np.cumsum(steps, dtype=np.int32)
        deepest = max(deepest, depth + int(d.max()))
        depth += int(d[-1])
    return deepest


def _size(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


class BodyLimits:
    """ASGI middleware: refuse oversized bodies (413) and too deeply nested JSON (400), then hand the
    application the body it read, unchanged."""

    def __init__(self, app: Any, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                 max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> None:
        if max_body_bytes < 1 or max_json_depth < 1:
            raise ValueError(f"body limits must be >= 1 (max_body_bytes={max_body_bytes}, "
                             f"max_json_depth={max_json_depth})")
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    def _too_large(self, size: str) -> HTTPException:
        return HTTPException(status_code=413,
                             detail=f"request body is {size}; the limit is {_size(self.max_body_bytes)}")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        content_type = ""
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise HTTPException(status_code=400,
                                        detail=f"Content-Length {value[:40]!r} is not a number") from None
                if declared > self.max_body_bytes:
                    raise self._too_large(f"{declared} bytes")
            elif name == b"content-type":
                content_type = value.decode("latin-1").lower()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large(f"more than {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and not content_type.startswith(_NOT_JSON):
            depth = json_depth(body) if len(body) <= _THREAD_ABOVE else await anyio.to_thread.run_sync(json_depth, body)
            if depth > self.max_json_depth:
                raise ValidationException(detail=f"request body is JSON nested {depth} levels deep; the limit is "
                                                 f"{self.max_json_depth}")
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def body_limits(max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
                max_json_depth: int = DEFAULT_MAX_JSON_DEPTH) -> DefineMiddleware:
    """:class:`BodyLimits` as an entry of ``Litestar(middleware=[...])``."""
    return DefineMiddleware(BodyLimits, max_body_bytes=max_body_bytes, max_json_depth=max_json_depth)
