"""The edge's HTTP client to the hub, one way for everything that talks to it (sync, model pulls).

Built from ``[hub]`` of the firmware config: ``https://`` connections are verified against
``ca_file`` (or the system's CAs) with the host name checked; ``cert_sha256`` pins the hub's own
certificate on top of that. The pin is checked on every new connection right after the TLS
handshake, before a byte of the request (or the edge's token) is sent, through httpcore's ``trace``
extension (``*.start_tls.complete`` hands over the new stream); a mismatch closes the connection
and raises :class:`HubCertificateMismatch` (an ``httpx.ConnectError``). Redirects are never
followed. A plain ``http://`` hub that is not on this machine gets one warning: readings and the
token would cross the network in clear.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import os
import ssl
from typing import Any
from urllib.parse import urlsplit

import httpx

from protocols.config import ConfigError, HubSettings

__all__ = ["HubCertificateMismatch", "ResponseTooLarge", "hub_client", "read_capped", "ssl_context"]

log = logging.getLogger(__name__)


class HubCertificateMismatch(httpx.ConnectError):
    """The hub's certificate is not the one ``cert_sha256`` pins."""


class ResponseTooLarge(Exception):
    """The hub's answer is longer than the edge reads."""


def ssl_context(hub: HubSettings) -> ssl.SSLContext:
    """Verification for an https:// hub: ``ca_file`` as the trust anchors (any certificate in it,
    a self-signed hub certificate or a leaf included), else the system's; host names checked.
    Raises :class:`ConfigError` naming ``hub.ca_file`` if the file cannot be used.

    The hub's clients (sync, model and config pulls) share one context while ``ca_file`` is unchanged:
    each loaded its own CA certificates, 0.8 MB each with the system's (a changed file is loaded again)."""
    stamp = None
    if hub.ca_file:
        try:
            st = os.stat(hub.ca_file)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            pass  # loading it says why
    return _shared_context(hub.ca_file or None, stamp)


@functools.lru_cache(maxsize=4)
def _shared_context(ca_file: str | None, stamp: tuple[int, int, int] | None) -> ssl.SSLContext:
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError("firmware config", "hub.ca_file", f"cannot load {ca_file!r}: {reason}") from exc
    if ca_file:
        # the certificates given are anchors even if they are not self-signed roots (as Python 3.13
        # does by default): pinning a CA-issued hub certificate by giving just it works too
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return ctx


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pin_check(expected: bytes, where: str):
    """A ``trace`` callback comparing each new TLS connection's certificate with ``expected``."""

    async def trace(event: str, info: dict[str, Any]) -> None:
        if not event.endswith("start_tls.complete"):
            return
        stream = info.get("return_value")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        got = hashlib.sha256(der).digest() if der else b""
        if got != expected:
            if stream is not None:
                await stream.aclose()
            raise HubCertificateMismatch(
                f"the certificate of {where} has SHA-256 {got.hex(':') if got else '(none)'}, "
                f"but hub.cert_sha256 pins {expected.hex(':')}")

    return trace


def hub_client(hub: HubSettings, token: str | None = None, headers: dict[str, str] | None = None,
               **kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for the hub: base URL, timeout, ``Authorization: Bearer`` (``token``
    if given, else the one in ``$<hub.token_env>``), TLS as configured, redirects not followed."""
    url = hub.url.rstrip("/")
    parts = urlsplit(url)
    h = dict(headers or {})
    secret = token or hub.token()
    if secret:
        h["authorization"] = f"Bearer {secret}"
    hooks: dict[str, list] = {"request": [], "response": []}
    # no TLS to a plain http:// hub, so no CA bundle loaded (httpx loads certifi's for verify=True:
    # 0.8-2 MB per client); a context that trusts nothing, should an https:// URL be asked through it
    verify: ssl.SSLContext = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if parts.scheme == "https":
        verify = ssl_context(hub)
        pin = hub.fingerprint()
        if pin is not None:
            trace = _pin_check(pin, f"hub {parts.netloc}")

            async def attach(request: httpx.Request) -> None:
                request.extensions = {**request.extensions, "trace": trace}

            hooks["request"].append(attach)
    elif not _is_loopback(parts.hostname or ""):
        log.warning("hub %s is plain http://: readings and the edge's token cross the network unencrypted "
                    "(use https://, see docs/tls.md)", url)
    return httpx.AsyncClient(base_url=url, timeout=hub.timeout_s, headers=h, verify=verify, follow_redirects=False,
                             event_hooks=hooks, **kwargs)


async def read_capped(response: httpx.Response, limit: int) -> bytes:
    """The body of a streamed response, refusing (:class:`ResponseTooLarge`) past ``limit`` bytes,
    before reading more than that: a declared length is checked first, then the bytes as they come."""
    declared = response.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ResponseTooLarge(f"the hub's answer is {int(declared)} bytes long; the edge reads at most {limit}")
    if response.is_stream_consumed:  # made with its body in memory (a test's MockTransport)
        if len(response.content) > limit:
            raise ResponseTooLarge(f"the hub's answer is longer than {limit} bytes, which is all the edge reads")
        return response.content
    body = bytearray()
    async for chunk in response.aiter_raw():
        body += chunk
        if len(body) > limit:
            raise ResponseTooLarge(f"the hub's answer is longer than {limit} bytes, which is all the edge reads")
    return bytes(body)
