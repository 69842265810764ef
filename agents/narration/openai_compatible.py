"""Narration by any OpenAI-compatible chat completions endpoint (vLLM, Ollama, LM Studio, OpenAI,
watsonx through a gateway...): one ``POST {base_url}/chat/completions`` per call, with httpx.

The request carries a system prompt in the roles of the agents that reported and the findings'
facts as JSON (:mod:`.prompt`). On a timeout, an HTTP error or an answer that is not a chat
completion, the narrator logs one WARNING and returns the template narrative with
``fallback_reason`` saying what went wrong; it never raises for an LLM failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from agents.findings import Finding
from agents.narration.base import Narrative, log
from agents.narration.prompt import system_prompt, user_message
from agents.narration.template import template_text

__all__ = ["LLMFailure", "OpenAICompatibleNarrator", "check_base_url"]


class LLMFailure(Exception):
    """The LLM did not give a usable answer; the message is the narrative's ``fallback_reason``."""


class OpenAICompatibleNarrator:
    """Narrates findings with the chat model ``model`` at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``).

    ``timeout_s`` bounds the whole call: connecting, sending, and reading the answer. ``api_key``,
    when given, is sent as a bearer token (local servers usually need none)."""

    source = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 20.0, *,
                 temperature: float | None = 0.2) -> None:
        self.base_url = check_base_url(base_url)
        if not model.strip():
            raise ValueError("model: expected the name of a chat model, got an empty string")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s: expected a positive number of seconds, got {timeout_s!r}")
        self.model = model.strip()
        self.timeout_s = float(timeout_s)
        self.temperature = temperature
        self._api_key = api_key or None

    def __repr__(self) -> str:  # never the key
        return f"OpenAICompatibleNarrator(base_url={self.base_url!r}, model={self.model!r}, timeout_s={self.timeout_s:g})"

    def narrate(self, findings: Sequence[Finding], context: dict[str, Any] | None = None) -> Narrative:
        t0 = time.perf_counter()
        if not findings:  # nothing to explain: no call
            return Narrative(text=template_text(findings), source="template", elapsed_ms=_ms(t0))
        try:
            text, model = self.complete(system_prompt(findings), user_message(findings, context))
        except LLMFailure as exc:
            log.warning("LLM narration failed, using the template: %s", exc)
            return Narrative(text=template_text(findings), source="template", fallback_reason=str(exc),
                             elapsed_ms=_ms(t0))
        return Narrative(text=text, source="openai", model=model, elapsed_ms=_ms(t0))

    def complete(self, system: str, user: str) -> tuple[str, str]:
        """The assistant's answer to one system + user message, and the model that wrote it.
        Raises :class:`LLMFailure` (naming the endpoint and what went wrong) for any failure."""
        url = f"{self.base_url}/chat/completions"
        body: dict[str, Any] = {"model": self.model,
                                "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}]}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        headers = {"Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        deadline = time.monotonic() + self.timeout_s
        try:
            with httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client, \
                    client.stream("POST", url, json=body, headers=headers) as resp:
                raw = bytearray()
                for chunk in resp.iter_bytes():
                    raw += chunk
                    if time.monotonic() > deadline:  # a server that trickles its answer
                        raise httpx.ReadTimeout("deadline passed while reading the answer")
        except httpx.TimeoutException:
            raise LLMFailure(f"LLM timed out after {self.timeout_s:g} s at {self.base_url}") from None
        except httpx.HTTPError as exc:
            raise LLMFailure(f"LLM request to {self.base_url} failed: {type(exc).__name__}: {exc}") from None
        if resp.status_code >= 400:
            raise LLMFailure(f"LLM at {self.base_url} answered HTTP {resp.status_code}{_error_detail(bytes(raw))}")
        return _parse(bytes(raw), self.base_url, self.model)


def check_base_url(base_url: str) -> str:
    """``base_url`` without its trailing slash; an error unless it is an http(s) URL with a host."""
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"base_url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
    return url


def _parse(raw: bytes, base_url: str, model: str) -> tuple[str, str]:
    try:
        answer = json.loads(raw)
    except ValueError as exc:
        raise LLMFailure(f"LLM at {base_url} answered malformed JSON ({exc}): {_clip(raw)}") from None
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise LLMFailure(f"LLM at {base_url} answered no choices[0].message.content: {_clip(raw)}") from None
    if isinstance(content, list):  # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise LLMFailure(f"LLM at {base_url} answered an empty message")
    answered = answer.get("model")
    return content.strip(), answered if isinstance(answered, str) and answered else model


def _error_detail(raw: bytes) -> str:
    try:
        message = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f": {_clip(raw)}" if raw.strip() else ""
    return f": {message}" if isinstance(message, str) else f": {_clip(raw)}"


def _clip(raw: bytes, limit: int = 200) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 3)
