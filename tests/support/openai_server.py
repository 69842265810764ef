"""A small OpenAI-compatible chat server for tests: a real HTTP server on 127.0.0.1 and a free port.

    with OpenAIServer(reply="Voltage sag explained ...") as server:
        server.base_url      # http://127.0.0.1:PORT/v1
        server.requests      # every request it got, in order (RecordedRequest)
        server.behaviour = "sleep"   # or "answer", "error", "malformed"; changeable at any time

It serves ``POST /v1/chat/completions`` and ``GET /v1/models``. What a completion request gets:

- ``"answer"``: a chat completion whose message is ``reply`` (a string, or a function of the
  request body for clients that make several calls, such as a CrewAI crew);
- ``"sleep"``: nothing for ``delay_s`` seconds (past the client's timeout), then the answer;
  leaving the context wakes a sleeping handler, so a test never waits for it;
- ``"error"``: HTTP ``status`` (500) with an OpenAI-style error body;
- ``"malformed"``: HTTP 200 with a body that is not JSON.

A thread running :class:`http.server.ThreadingHTTPServer`; nothing here is mocked.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

__all__ = ["Behaviour", "OpenAIServer", "RecordedRequest"]

Behaviour = Literal["answer", "sleep", "error", "malformed"]


class RecordedRequest:
    """One request as the server got it: method, path, headers (lower-case names), raw body and,
    when the body was JSON, its parsed form in ``json``."""

    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        self.method = method
        self.path = path
        self.headers = headers
        self.body = body
        try:
            self.json: Any = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def message(self, role: str) -> str:
        """The content of the first chat message with this role ("" when there is none)."""
        for m in (self.json or {}).get("messages", []):
            if m.get("role") == role:
                content = m.get("content")
                if isinstance(content, list):  # content parts
                    return "".join(p.get("text", "") for p in content if isinstance(p, dict))
                return content or ""
        return ""

    def __repr__(self) -> str:
        return f"RecordedRequest({self.method} {self.path}, {len(self.body)} bytes)"


class OpenAIServer:
    """An OpenAI-compatible chat completions endpoint on 127.0.0.1 and a free port (see the module)."""

    def __init__(self, reply: str | Callable[[dict[str, Any]], str] = "OK", *, model: str = "test-granite",
                 behaviour: Behaviour = "answer", delay_s: float = 30.0, status: int = 500) -> None:
        self.reply = reply
        self.model = model
        self.behaviour: Behaviour = behaviour
        self.delay_s = delay_s
        self.status = status
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, what an OpenAI client takes as its base URL."""
        if self._httpd is None:
            raise RuntimeError("the server is not running; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def completions(self) -> list[RecordedRequest]:
        """The chat completion requests recorded so far."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.endswith("/chat/completions")]

    def __enter__(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _record(self) -> RecordedRequest:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                req = RecordedRequest(self.command, self.path.split("?")[0],
                                      {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.requests.append(req)
                return req

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            def do_GET(self) -> None:
                req = self._record()
                if req.path == "/v1/models":
                    data = {"object": "list",
                            "data": [{"id": server.model, "object": "model", "created": 0, "owned_by": "tests"}]}
                    self._send(200, json.dumps(data).encode())
                else:
                    self._send(404, _error(f"no route GET {req.path}", "not_found"))

            def do_POST(self) -> None:
                req = self._record()
                if req.path != "/v1/chat/completions":
                    self._send(404, _error(f"no route POST {req.path}", "not_found"))
                    return
                if not isinstance(req.json, dict) or not isinstance(req.json.get("messages"), list):
                    self._send(400, _error("the body must be JSON with a list of messages", "invalid_request_error"))
                    return
                behaviour = server.behaviour
                if behaviour == "sleep":
                    server._closing.wait(server.delay_s)
                elif behaviour == "error":
                    self._send(server.status, _error("the test server was told to fail", "server_error"))
                    return
                elif behaviour == "malformed":
                    self._send(200, b'{"choices": [ this is not JSON')
                    return
                text = server.reply(req.json) if callable(server.reply) else server.reply
                self._send(200, json.dumps(_completion(text, req.json.get("model") or server.model)).encode())

        self._closing.clear()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="tests.openai_server", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._closing.set()  # wakes sleeping handlers
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None


def _completion(text: str, model: str) -> dict[str, Any]:
    words = len(text.split())
    return {
        "id": "chatcmpl-sentinel-test", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": words, "total_tokens": words + 1},
    }


def _error(message: str, kind: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": None}}).encode()
