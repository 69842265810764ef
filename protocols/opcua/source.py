"""OPC-UA sources (asyncua): a polled one (mode ``poll``) and a pushed one (mode ``subscribe``).

``OpcUaSource(device)`` gives the kind the device's mode asks for:

- :class:`OpcUaPollSource` (a :class:`~protocols.sources.PolledSource`): ``read()`` reads every
  node in one Read request, within ``timeout_s``; the session stays open between polls and is
  opened again on the next ``read()`` after it was lost;
- :class:`OpcUaSubscribeSource` (a :class:`~protocols.sources.PushedSource`): ``stream()`` opens
  a session, creates one subscription (``publishing_interval_s``) with a data-change monitored
  item per point (an absolute deadband where the point sets one), and yields
  :class:`~protocols.sources.Update` batches: server timestamps (source, else server, else now),
  values scaled (``raw * scale + offset``), flags from the status codes (:mod:`.status`).

Reconnects belong to the edge: asyncua's own auto-reconnect is off. Its watchdog (a ServerStatus
read every ``max(1, timeout_s)`` seconds) and the transport report a lost session; the
subscription's keep-alives are checked too (no publish response for about two keep-alive periods
means a dead subscription). Either way ``stream()`` raises :class:`SourceConnectError`; the
daemon backs off and calls ``stream()`` again, which opens a new session and subscription. Every
await is bounded: connecting by ``CONNECT_REQUESTS * timeout_s``, each request by ``timeout_s``.

A node that does not exist (or a browse path that leads nowhere) marks only its point (INVALID,
NaN) with one log line; the others go on. Such points are tried again every ``RETRY_DEAD_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np
from asyncua import Client, ua
from asyncua.common.subscription import DataChangeNotif, Subscription
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from protocols.opcua.config import OpcUaDevice, parse_browse_path
from protocols.opcua.status import is_bad, is_good, status_name, status_quality
from protocols.reading import QualityFlag
from protocols.sources import PointInfo, SourceConnectError, SourceReadError, Update

__all__ = ["OpcUaPollSource", "OpcUaSource", "OpcUaSubscribeSource"]

log = logging.getLogger(__name__)

CONNECT_REQUESTS = 4  # connecting bound: this many request timeouts (hello, channel, session, activate, ...)
RETRY_DEAD_S = 10.0  # how often points whose node is unknown are resolved / subscribed again
SESSION_TIMEOUT_S = 60.0  # what we ask the server for; the watchdog keeps the session busy far more often
CLOCK_TOLERANCE_S = 5.0  # a server timestamp further ahead of ours than this: clock not synchronised
QUEUE_MAX = 50_000  # notifications buffered between the publish loop and the consumer
MONITOR_QUEUE_SIZE = 16  # values a monitored item keeps between two publishes
DEFAULT_APPLICATION_URI = "urn:smartgrid-sentinel:edge"

# A node that is not there: resolved again / subscribed again every RETRY_DEAD_S.
_NODE_GONE = frozenset({
    ua.StatusCodes.BadNodeIdUnknown, ua.StatusCodes.BadNodeIdInvalid, ua.StatusCodes.BadNoMatch,
    ua.StatusCodes.BadBrowseNameInvalid, ua.StatusCodes.BadNotFound,
})
# Subscription status changes after which nothing more will come on this session.
_SUBSCRIPTION_OVER = frozenset({
    ua.StatusCodes.BadShutdown, ua.StatusCodes.BadTimeout, ua.StatusCodes.BadSessionClosed,
    ua.StatusCodes.BadSessionIdInvalid, ua.StatusCodes.BadSubscriptionIdInvalid, ua.StatusCodes.BadNoSubscription,
    ua.StatusCodes.BadServerHalted, ua.StatusCodes.BadCommunicationError, ua.StatusCodes.BadConnectionClosed,
    ua.StatusCodes.BadSecureChannelClosed, ua.StatusCodes.BadNotConnected, ua.StatusCodes.BadServerNotConnected,
    ua.StatusCodes.GoodSubscriptionTransferred,
})
_SESSION_GONE = frozenset({
    ua.StatusCodes.BadSessionClosed, ua.StatusCodes.BadSessionIdInvalid, ua.StatusCodes.BadSessionNotActivated,
    ua.StatusCodes.BadSecureChannelClosed, ua.StatusCodes.BadSecureChannelIdInvalid, ua.StatusCodes.BadShutdown,
    ua.StatusCodes.BadServerHalted, ua.StatusCodes.BadConnectionClosed, ua.StatusCodes.BadCommunicationError,
    ua.StatusCodes.BadNotConnected, ua.StatusCodes.BadTimeout, ua.StatusCodes.BadRequestTimeout,
})
_REASONS = {
    ua.StatusCodes.BadUserAccessDenied: "the server rejected the user identity",
    ua.StatusCodes.BadIdentityTokenRejected: "the server does not accept this kind of user identity",
    ua.StatusCodes.BadIdentityTokenInvalid: "the server found the user identity token invalid",
    ua.StatusCodes.BadCertificateUntrusted: "the server does not trust this client's certificate",
    ua.StatusCodes.BadCertificateInvalid: "the server found this client's certificate invalid",
    ua.StatusCodes.BadCertificateUriInvalid: "the client certificate's application URI does not match",
    ua.StatusCodes.BadSecurityChecksFailed: "security checks failed (certificate not trusted, or wrong keys)",
    ua.StatusCodes.BadSecurityPolicyRejected: "the server rejected the security policy",
    ua.StatusCodes.BadSecurityModeRejected: "the server rejected the security mode",
    ua.StatusCodes.BadTooManySessions: "the server has too many sessions",
    ua.StatusCodes.BadMaxConnectionsReached: "the server has too many connections",
}


_UNTRUSTED = frozenset({ua.StatusCodes.BadCertificateUntrusted, ua.StatusCodes.BadSecurityChecksFailed})


def _status_value(code: Any) -> int:
    if code is None:
        return 0
    return int(getattr(code, "value", code)) & 0xFFFFFFFF


def _epoch(t: dt.datetime | None) -> float | None:
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    ts = t.timestamp()
    return ts if ts > 0 else None  # the OPC-UA "no time" (1601) and the epoch itself: no timestamp


def _number(value: Any) -> float | None:
    """A scalar number (bools as 0/1), or None for anything else (strings, arrays, null)."""
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    return None


def _certificate_uri(path: str) -> str | None:
    """The application URI in a certificate's subjectAltName (what the client must announce)."""
    from cryptography import x509

    data = Path(path).read_bytes()
    cert = (x509.load_pem_x509_certificate(data) if data.lstrip().startswith(b"-----BEGIN")
            else x509.load_der_x509_certificate(data))
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def certificate_thumbprint(path_or_der: str | Path | bytes) -> str:
    """The SHA-1 thumbprint OPC-UA uses for a certificate (file PEM or DER, or DER bytes), in hex."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = path_or_der if isinstance(path_or_der, bytes) else Path(path_or_der).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        data = x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return hashlib.sha1(data).hexdigest().upper()  # noqa: S324 - the thumbprint OPC-UA defines


async def pinned_certificate_mismatch(url: str, pinned: str, timeout_s: float) -> str | None:
    """Why the pinned server certificate ``pinned`` is not the one the endpoint at ``url`` offers
    (both thumbprints), or None when it is (or the endpoints cannot be fetched)."""
    want = certificate_thumbprint(pinned)
    try:
        async with asyncio.timeout(timeout_s):
            endpoints = await Client(url, timeout=timeout_s).connect_and_get_server_endpoints()
    except Exception:  # noqa: BLE001 - only a better message is at stake
        return None
    offered = {certificate_thumbprint(e.ServerCertificate) for e in endpoints
               if e.ServerCertificate and e.SecurityPolicyUri == SecurityPolicyBasic256Sha256.URI}
    if not offered or want in offered:
        return None
    return (f"the pinned server certificate {pinned} (SHA-1 {want}) does not match the one the endpoint {url} "
            f"offers (SHA-1 {', '.join(sorted(offered))}): the server's certificate changed, or the pin is wrong")


class _Handler:
    """Subscription callbacks -> one bounded queue: ``(client handle, DataValue)`` or ``("status", code)``."""

    def __init__(self, queue: asyncio.Queue[tuple[Any, Any]]) -> None:
        self.queue = queue
        self.dropped = 0

    def _put(self, item: tuple[Any, Any]) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.dropped += 1
            self.queue.put_nowait(item)

    def datachange_notification(self, node: Any, val: Any, data: DataChangeNotif) -> None:
        item = data.monitored_item
        self._put((item.ClientHandle, item.Value))

    def status_change_notification(self, status: ua.StatusChangeNotification) -> None:
        self._put(("status", _status_value(status.Status)))


class _Session:
    """One connected client, and the node of every point (resolved once per session)."""

    def __init__(self, client: Client, n_points: int) -> None:
        self.client = client
        self.nodes: list[ua.NodeId | None] = [None] * n_points
        self.unresolved: dict[int, int] = {}  # point -> status code (why it has no node)
        self.lost: str | None = None  # why the session is gone, once it is
        self.lost_event = asyncio.Event()
        self.namespaces: list[str] | None = None
        self.retry_at = 0.0
        self.closed = False

    async def on_lost(self, exc: Exception) -> None:
        self.mark_lost(f"connection lost ({type(exc).__name__}: {exc})" if str(exc) else "connection lost")

    def mark_lost(self, reason: str) -> None:
        if self.lost is None:
            self.lost = reason
        self.lost_event.set()

    @property
    def alive(self) -> bool:
        return self.lost is None and self.client.uaclient.state.value == "connected"

    async def close(self, timeout_s: float) -> None:
        """Close once (a stream's ``finally`` and the source's ``close()`` may both ask)."""
        if self.closed:
            return
        self.closed = True
        self.mark_lost("closed")
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout_s):
                await self.client.disconnect()
        with contextlib.suppress(Exception):
            self.client.disconnect_socket()


class OpcUaSource:
    """What both OPC-UA sources share: connecting (security, identity), node resolution, decoding.

    ``OpcUaSource(device)`` returns an :class:`OpcUaPollSource` or an :class:`OpcUaSubscribeSource`
    according to ``device.mode``, so that the edge sees exactly one of the two source protocols.
    """

    def __new__(cls, device: OpcUaDevice) -> Self:
        kind: type[OpcUaSource] = cls
        if cls is OpcUaSource:
            kind = OpcUaPollSource if device.mode == "poll" else OpcUaSubscribeSource
        return super().__new__(kind)  # type: ignore[return-value]

    def __init__(self, device: OpcUaDevice) -> None:
        self.device = device
        self.device_id = device.id
        self.endpoint = device.url
        self.points = [PointInfo(p.metric, p.unit, p.nominal, p.limit_low, p.limit_high) for p in device.points]
        self._scale = np.array([p.scale for p in device.points], dtype=np.float64)
        self._offset = np.array([p.offset for p in device.points], dtype=np.float64)
        self._reported: dict[int, int] = {}  # point -> status code last logged (non-good ones)
        self._connect_timeout_s = CONNECT_REQUESTS * device.timeout_s

    # -- connecting -----------------------------------------------------------------------------

    def _error(self, cls: type[SourceConnectError | SourceReadError], reason: str) -> Exception:
        return cls(self.device_id, self.endpoint, reason)

    async def _open(self) -> _Session:
        """Connect, open and activate a session, resolve the nodes. Raises SourceConnectError."""
        dev = self.device
        client = Client(dev.url, timeout=dev.timeout_s, watchdog_intervall=max(1.0, dev.timeout_s),
                        auto_reconnect=False)
        client.session_timeout = int(SESSION_TIMEOUT_S * 1000)
        client.name = client.description = f"SmartGrid Sentinel edge ({dev.id})"
        client.application_uri = DEFAULT_APPLICATION_URI
        client.product_uri = "urn:smartgrid-sentinel"
        session = _Session(client, len(dev.points))
        client.connection_lost_callback = session.on_lost
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                await self._configure(client)
                await client.connect()
                await self._resolve(session, range(len(dev.points)))
            session.retry_at = asyncio.get_running_loop().time() + RETRY_DEAD_S
        except SourceConnectError:
            await session.close(dev.timeout_s)
            raise
        except TimeoutError as exc:
            await session.close(dev.timeout_s)
            pin = dev.security.server_certificate
            mismatch = await pinned_certificate_mismatch(dev.url, pin, self._connect_timeout_s) if pin else None
            raise self._error(SourceConnectError, mismatch or f"no answer while connecting (timeout "
                              f"{dev.timeout_s:g} s a request, {self._connect_timeout_s:g} s in all)") from exc
        except asyncio.CancelledError:
            await session.close(dev.timeout_s)
            raise
        except Exception as exc:
            await session.close(dev.timeout_s)
            pin = dev.security.server_certificate
            mismatch = await pinned_certificate_mismatch(dev.url, pin, self._connect_timeout_s) if pin else None
            raise self._error(SourceConnectError, mismatch or self._connect_reason(exc)) from exc
        return session

    async def _configure(self, client: Client) -> None:
        dev, sec = self.device, self.device.security
        if sec.policy != "None":
            for what, path in (("certificate", sec.certificate), ("private_key", sec.private_key),
                               ("server_certificate", sec.server_certificate)):
                if path and not Path(path).is_file():
                    raise self._error(SourceConnectError, f"security.{what}: no such file {path}")
            try:
                client.application_uri = _certificate_uri(sec.certificate) or DEFAULT_APPLICATION_URI
            except ValueError as exc:
                raise self._error(SourceConnectError, f"security.certificate {sec.certificate}: not a certificate "
                                  f"({exc})") from exc
            await client.set_security(
                SecurityPolicyBasic256Sha256, certificate=sec.certificate, private_key=sec.private_key,
                server_certificate=sec.server_certificate or None,
                mode=getattr(ua.MessageSecurityMode, sec.mode),
            )
        if dev.username:
            password = os.environ.get(dev.password_env)
            if password is None:
                raise self._error(SourceConnectError, f"environment variable {dev.password_env} (the password of "
                                  f"user {dev.username!r}) is not set")
            client.set_user(dev.username)
            client.set_password(password)
        elif dev.identity_certificate:
            for what, path in (("identity_certificate", dev.identity_certificate),
                               ("identity_private_key", dev.identity_private_key)):
                if not Path(path).is_file():
                    raise self._error(SourceConnectError, f"{what}: no such file {path}")
            await client.load_client_certificate(dev.identity_certificate)
            await client.load_private_key(Path(dev.identity_private_key))

    def _connect_reason(self, exc: BaseException) -> str:
        dev = self.device
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, ua.UaStatusCodeError):
            code = _status_value(exc.code)
            name = status_name(code)
            what = _REASONS.get(code)
            if code in _UNTRUSTED and dev.security.policy != "None":
                return self._untrusted(name)
            if code == ua.StatusCodes.BadUserAccessDenied and dev.username:
                what = f"the server rejected user {dev.username!r} (wrong password, or unknown user)"
            elif code == ua.StatusCodes.BadUserAccessDenied and dev.identity_certificate:
                what = "the server rejected the user certificate"
            return f"{what}: {name}" if what else f"{name} while connecting"
        if isinstance(exc, ConnectionError | AssertionError) and dev.security.policy != "None":
            # some servers (node-opcua) close the connection on a client certificate they do not trust
            return self._untrusted(f"the server closed the connection while the secure channel was being opened "
                                   f"({str(exc) or type(exc).__name__})", certain=False)
        if isinstance(exc, OSError):
            return exc.strerror or str(exc) or type(exc).__name__
        text = str(exc)
        if "No matching endpoints" in text or "no matching endpoint" in text.lower():
            return (f"the server offers no endpoint with security {dev.security.policy}/{dev.security.mode}")
        if isinstance(exc, ConnectionError):
            return f"connection lost while connecting ({text or type(exc).__name__})"
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def _untrusted(self, evidence: str, certain: bool = True) -> str:
        cert = self.device.security.certificate
        try:
            thumb = f"SHA-1 thumbprint {certificate_thumbprint(cert)}"
        except (OSError, ValueError):
            thumb = "its thumbprint unreadable"
        return (f"the server at {self.device.url} {'does' if certain else 'most likely does'} not trust this "
                f"client's certificate {cert} ({thumb}): "
                f"add it to the server's trusted certificates [{evidence}]")

    async def _resolve(self, session: _Session, indices: Iterable[int]) -> None:
        """Find the node of each point: parse node ids (``nsu=`` through the namespace array), and
        translate browse paths in one request. Points that have no node get ``session.unresolved``."""
        client = session.client
        paths: list[tuple[int, ua.BrowsePath]] = []
        for i in indices:
            p = self.device.points[i]
            session.unresolved.pop(i, None)
            session.nodes[i] = None
            if p.node_id:
                nodeid = ua.NodeId.from_string(p.node_id)
                uri = getattr(nodeid, "NamespaceUri", None)
                if uri:
                    if session.namespaces is None:
                        session.namespaces = await client.get_namespace_array()
                    if uri not in session.namespaces:
                        session.unresolved[i] = ua.StatusCodes.BadNodeIdUnknown
                        self._note(i, ua.StatusCodes.BadNodeIdUnknown, f"namespace {uri!r} is not on the server")
                        continue
                    nodeid = ua.NodeId(nodeid.Identifier, session.namespaces.index(uri), nodeid.NodeIdType)
                session.nodes[i] = ua.NodeId(nodeid.Identifier, nodeid.NamespaceIndex, nodeid.NodeIdType)
            else:
                elements = [
                    ua.RelativePathElement(
                        ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences), IsInverse=False,
                        IncludeSubtypes=True, TargetName=ua.QualifiedName(name, ns))
                    for ns, name in parse_browse_path(p.browse_path)
                ]
                bp = ua.BrowsePath(StartingNode=ua.NodeId(ua.ObjectIds.RootFolder),
                                   RelativePath=ua.RelativePath(Elements=elements))
                paths.append((i, bp))
        if paths:
            results = await client.uaclient.translate_browsepaths_to_nodeids([bp for _, bp in paths])
            for (i, _), res in zip(paths, results):
                code = _status_value(res.StatusCode)
                if is_good(code) and res.Targets:
                    t = res.Targets[0].TargetId
                    session.nodes[i] = ua.NodeId(t.Identifier, t.NamespaceIndex, t.NodeIdType)
                else:
                    code = code if is_bad(code) else ua.StatusCodes.BadNoMatch
                    session.unresolved[i] = code
                    self._note(i, code, "browse path not found")

    # -- values ---------------------------------------------------------------------------------

    def _note(self, i: int, code: int, detail: str = "") -> None:
        """Log a point's status on change: one WARNING when it goes bad, one INFO when it recovers."""
        last = self._reported.get(i)
        p = self.device.points[i]
        if is_good(code):
            if last is not None:
                del self._reported[i]
                log.info("%s: point %s (%s) is good again", self.device_id, p.metric, p.address)
            return
        if last == code:
            return
        self._reported[i] = code
        level = logging.WARNING if is_bad(code) else logging.INFO
        log.log(level, "%s: point %s (%s): %s%s", self.device_id, p.metric, p.address, status_name(code),
                f" ({detail})" if detail else "")

    def _decode(self, i: int, dv: ua.DataValue | None) -> tuple[float, int]:
        """One DataValue -> (scaled value or NaN, flags)."""
        if dv is None:
            self._note(i, ua.StatusCodes.BadNoData)
            return math.nan, int(QualityFlag.INVALID)
        code = _status_value(dv.StatusCode)
        self._note(i, code)
        sq = status_quality(code)
        if not sq.usable:
            return math.nan, sq.flags
        raw = _number(dv.Value.Value if dv.Value is not None else None)
        if raw is None:
            kind = dv.Value.VariantType.name if dv.Value is not None else "no value"
            if self._reported.get(i) != ua.StatusCodes.BadTypeMismatch:
                self._reported[i] = ua.StatusCodes.BadTypeMismatch
                log.warning("%s: point %s (%s) gives %s, not a number", self.device_id, self.device.points[i].metric,
                            self.device.points[i].address, kind)
            return math.nan, sq.flags | int(QualityFlag.INVALID)
        return raw * self._scale[i] + self._offset[i], sq.flags

    def _retry_due(self, session: _Session) -> list[int]:
        """Points to resolve / subscribe again now: those whose node was not there."""
        now = asyncio.get_running_loop().time()
        if now < session.retry_at:
            return []
        session.retry_at = now + RETRY_DEAD_S
        return sorted(set(session.unresolved) | {i for i, c in self._reported.items() if c in _NODE_GONE})


class OpcUaPollSource(OpcUaSource):
    """Mode ``poll``: ``read()`` every ``poll_interval_s``, all nodes in one Read request."""

    def __init__(self, device: OpcUaDevice) -> None:
        super().__init__(device)
        self.poll_interval_s = device.poll_interval_s
        self._session: _Session | None = None

    async def read(self) -> tuple[np.ndarray, np.ndarray]:
        """Poll once: (values, flags) in point order. Raises SourceConnectError / SourceReadError."""
        dev = self.device
        session = self._session
        if session is not None and not session.alive:
            self._session = None
            await session.close(dev.timeout_s)
            session = None
        if session is None:
            session = self._session = await self._open()
        n = len(dev.points)
        values = np.full(n, np.nan)
        flags = np.zeros(n, dtype=np.int64)
        retry = self._retry_due(session)
        try:
            if retry:
                async with asyncio.timeout(dev.timeout_s):
                    await self._resolve(session, [i for i in retry if dev.points[i].browse_path or
                                                  i in session.unresolved])
            live = [i for i in range(n) if session.nodes[i] is not None]
            params = ua.ReadParameters(MaxAge=0, TimestampsToReturn=ua.TimestampsToReturn.Neither)
            for i in live:
                params.NodesToRead.append(ua.ReadValueId(NodeId=session.nodes[i], AttributeId=ua.AttributeIds.Value))
            results: Sequence[ua.DataValue] = []
            if live:
                async with asyncio.timeout(dev.timeout_s):
                    results = await session.client.uaclient.read(params)
        except TimeoutError as exc:
            await self._drop(session)  # a late answer must not be taken for the next request's
            raise self._error(SourceReadError, f"no answer within {dev.timeout_s:g} s (reading {n} nodes)") from exc
        except ua.UaStatusCodeError as exc:
            code = _status_value(exc.code)
            await self._drop(session)
            cls = SourceConnectError if code in _SESSION_GONE else SourceReadError
            raise self._error(cls, f"read failed: {status_name(code)}") from exc
        except (ConnectionError, OSError) as exc:
            await self._drop(session)
            raise self._error(SourceConnectError, session.lost or f"connection lost ({exc or type(exc).__name__})") from exc
        for i, code in session.unresolved.items():
            flags[i] = status_quality(code).flags
        for i, dv in zip(live, results):
            values[i], flags[i] = self._decode(i, dv)
        return values, flags

    async def _drop(self, session: _Session) -> None:
        if self._session is session:
            self._session = None
        await session.close(self.device.timeout_s)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close(self.device.timeout_s)


class OpcUaSubscribeSource(OpcUaSource):
    """Mode ``subscribe``: one subscription; ``stream()`` yields what the server publishes."""

    def __init__(self, device: OpcUaDevice) -> None:
        super().__init__(device)
        self._sessions: set[_Session] = set()  # open by a stream() (closed by close() too)
        interval = device.publishing_interval_s
        self.keepalive_s = max(1.0, 2 * device.timeout_s, interval)
        self.keepalive_count = max(1, math.ceil(self.keepalive_s / interval))
        # No publish response (data or keep-alive) for this long: the subscription is dead.
        self.stale_after_s = 2 * self.keepalive_count * interval + device.timeout_s

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.close(self.device.timeout_s)
        self._sessions.clear()

    async def stream(self) -> AsyncIterator[Update]:
        """Connect, subscribe, and yield updates until the session or subscription is lost
        (raises SourceConnectError; the caller backs off and calls again)."""
        dev = self.device
        session = await self._open()
        self._sessions.add(session)
        try:
            queue: asyncio.Queue[tuple[Any, Any]] = asyncio.Queue(maxsize=QUEUE_MAX)
            handler = _Handler(queue)
            handles: dict[int, int] = {}  # client handle -> point
            by_point: dict[int, int] = {}  # point -> its current monitored item (server handle)
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    sub = await session.client.create_subscription(self._subscription_params(), handler)
                    failed = await self._monitor(sub, session, range(len(dev.points)), handles, by_point)
            except TimeoutError as exc:
                raise self._error(SourceConnectError, f"no answer within {self._connect_timeout_s:g} s while "
                                  "subscribing") from exc
            except ua.UaStatusCodeError as exc:
                raise self._error(SourceConnectError, f"subscribing failed: {status_name(_status_value(exc.code))}"
                                  ) from exc
            except (ConnectionError, OSError) as exc:
                raise self._error(SourceConnectError, session.lost or f"connection lost while subscribing ({exc})"
                                  ) from exc
            log.info("%s: subscribed to %d of %d points at %s (publishing every %g s)", dev.id,
                     len(dev.points) - len(failed), len(dev.points), dev.url, dev.publishing_interval_s)
            if failed:
                yield self._bad_update(failed)
            loop = asyncio.get_running_loop()
            started = loop.time()
            wait_s = min(1.0, dev.publishing_interval_s)
            while True:
                if session.lost is not None:
                    raise self._error(SourceConnectError, session.lost)
                item = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        item = await queue.get()
                if item is not None:
                    await asyncio.sleep(0)  # let the rest of this publish response's callbacks land
                    items = [item]
                    while not queue.empty():
                        items.append(queue.get_nowait())
                    statuses = [code for h, code in items if h == "status"]
                    for code in statuses:
                        if code in _SUBSCRIPTION_OVER:
                            session.mark_lost(f"subscription ended: {status_name(code)}")
                            raise self._error(SourceConnectError, session.lost or "subscription ended")
                    update = self._update([(handles.get(h), dv) for h, dv in items if h != "status"])
                    if update is not None:
                        yield update
                    if statuses:  # e.g. a node deleted: which one? (the status does not say)
                        log.info("%s: subscription status %s; reading every point to see which changed", dev.id,
                                 ", ".join(status_name(c) for c in statuses))
                        update = await self._probe(session)
                        if update is not None:
                            yield update
                    if handler.dropped:
                        log.warning("%s: consumer too slow, %d notifications dropped", dev.id, handler.dropped)
                        handler.dropped = 0
                else:
                    last = sub.last_publish_at
                    silent = time.monotonic() - last if last is not None else loop.time() - started
                    if silent > self.stale_after_s:
                        raise self._error(SourceConnectError, f"subscription silent for {silent:.1f} s (no data and "
                                          f"no keep-alive; expected one every {self.keepalive_s:g} s)")
                if loop.time() >= session.retry_at:
                    # Every RETRY_DEAD_S: subscribe again to points whose node was not there, and read
                    # every point once, for nodes that vanished without a notification.
                    retry = self._retry_due(session)
                    if retry:
                        update = await self._retry(sub, session, retry, handles, by_point)
                        if update is not None:
                            yield update
                    update = await self._probe(session)
                    if update is not None:
                        yield update
        finally:
            self._sessions.discard(session)
            await session.close(dev.timeout_s)

    def _subscription_params(self) -> ua.CreateSubscriptionParameters:
        return ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=self.device.publishing_interval_s * 1000.0,
            RequestedLifetimeCount=self.keepalive_count * 10,
            RequestedMaxKeepAliveCount=self.keepalive_count,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )

    async def _monitor(self, sub: Subscription, session: _Session, indices: Iterable[int],
                       handles: dict[int, int], by_point: dict[int, int]) -> list[tuple[int, int]]:
        """Create a monitored item per point with a node; returns the points that failed (point, status)."""
        indices = list(indices)
        wanted = set(indices)
        failed = [(i, c) for i, c in session.unresolved.items() if i in wanted]
        requests: list[tuple[int, ua.MonitoredItemCreateRequest]] = []
        for i in indices:
            node = session.nodes[i]
            if node is None:
                continue
            p = self.device.points[i]
            handle = max(handles, default=0) + 1
            handles[handle] = i
            mparams = ua.MonitoringParameters(
                ClientHandle=handle, SamplingInterval=self.device.publishing_interval_s * 1000.0,
                QueueSize=MONITOR_QUEUE_SIZE, DiscardOldest=True)
            if p.deadband > 0:
                mparams.Filter = ua.DataChangeFilter(
                    Trigger=ua.DataChangeTrigger.StatusValue, DeadbandType=ua.DeadbandType.Absolute,
                    DeadbandValue=p.deadband / abs(p.scale))
            requests.append((i, ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=node, AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting, RequestedParameters=mparams)))
        if not requests:
            return failed
        results = await sub.create_monitored_items([r for _, r in requests])
        for (i, _), res in zip(requests, results):
            if isinstance(res, ua.StatusCode):
                code = _status_value(res)
                failed.append((i, code))
                self._note(i, code, "cannot monitor the node")
            else:
                old = by_point.get(i)
                by_point[i] = res
                if old is not None:  # a replaced item (the node was gone and is back)
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe(old)
        return failed

    async def _retry(self, sub: Subscription, session: _Session, retry: list[int],
                     handles: dict[int, int], by_point: dict[int, int]) -> Update | None:
        """Resolve and subscribe again the points whose node was not there; bounded by timeout_s."""
        try:
            async with asyncio.timeout(self.device.timeout_s * 2):
                await self._resolve(session, [i for i in retry if self.device.points[i].browse_path
                                              or i in session.unresolved])
                failed = await self._monitor(sub, session, retry, handles, by_point)
        except (TimeoutError, ConnectionError, OSError, ua.UaError) as exc:
            log.debug("%s: retrying points %s failed: %r", self.device_id, retry, exc)
            return None
        return self._bad_update(failed) if failed else None

    async def _probe(self, session: _Session) -> Update | None:
        """Read every point once (within timeout_s); an update with those that are not good."""
        n = len(self.device.points)
        live = [i for i in range(n) if session.nodes[i] is not None]
        if not live:
            return None
        try:
            async with asyncio.timeout(self.device.timeout_s):
                results = await session.client.read_attributes([session.client.get_node(session.nodes[i])
                                                                for i in live])
        except (TimeoutError, ConnectionError, OSError, ua.UaError) as exc:
            log.debug("%s: probe read failed: %r", self.device_id, exc)
            return None
        bad = [(i, dv) for i, dv in zip(live, results)
               if not is_good(code := _status_value(dv.StatusCode)) and self._reported.get(i) != code]
        return self._update(bad) if bad else None

    def _bad_update(self, failed: Sequence[tuple[int, int]]) -> Update:
        now = time.time()
        return Update(
            ts=np.full(len(failed), now),
            index=np.array([i for i, _ in failed], dtype=np.int64),
            values=np.full(len(failed), np.nan),
            flags=np.array([status_quality(c).flags for _, c in failed], dtype=np.int64),
        )

    def _update(self, items: Sequence[tuple[int | None, ua.DataValue]]) -> Update | None:
        now = time.time()
        ts: list[float] = []
        index: list[int] = []
        values: list[float] = []
        flags: list[int] = []
        for i, dv in items:
            if i is None:
                continue
            v, f = self._decode(i, dv)
            t = _epoch(dv.SourceTimestamp) or _epoch(dv.ServerTimestamp) or now
            if t - now > CLOCK_TOLERANCE_S:
                t, f = now, f | int(QualityFlag.CLOCK_UNSYNC)
            ts.append(t)
            index.append(i)
            values.append(v)
            flags.append(f)
        if not index:
            return None
        return Update(np.array(ts, dtype=np.float64), np.array(index, dtype=np.int64),
                      np.array(values, dtype=np.float64), np.array(flags, dtype=np.int64))
