"""The MQTT driver: one device's topics on a broker, as a pushed source (paho-mqtt 2.x).

``stream()`` connects (TLS, user name and password if configured; a persistent session unless
``clean_session``), subscribes to the device's topic filter at its QoS, and yields
:class:`~protocols.sources.Update` s: what arrived within ``batch_window_s`` (50 ms), or up to
``batch_max_messages``, decoded together. When the connection drops it yields what had arrived and
raises :class:`~protocols.sources.SourceConnectError`; the edge's scheduler, the one owner of
reconnects, calls ``stream()`` again after its backoff (paho's own reconnect is off). With a
persistent session and the same client id, QoS 1/2 messages published meanwhile arrive then.

Threads: paho's network loop runs in its own thread (``loop_start``) and only hands each message
over (topic, payload, time of receipt) to a deque; the first message after a quiet spell wakes the
event loop with ``call_soon_threadsafe``, so a burst costs one wake-up, not one per message.
Decoding (:mod:`protocols.mqtt.codec`) runs on the event loop, a batch at a time. paho
acknowledges a QoS 1 message once ``on_message`` has handed it over, so the broker's guarantee
ends at this process: what sits in the deque or in the edge's queue when the process dies is lost
(at most one batch window plus the buffer writer's latency).

Malformed payloads never stop the stream and never hold up good messages: each becomes a
:class:`~protocols.mqtt.codec.DeadLetter`, counted in :attr:`MqttSource.stats` and handed to
:attr:`MqttSource.on_reject` (a quick callable the daemon sets; without one they are logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from protocols.mqtt.codec import Columns, DeadLetter, DeviceDecoder, dead_letters
from protocols.mqtt.config import MqttDevice, MqttTls
from protocols.sources import PointInfo, SourceConnectError, SourceReadError, Update

__all__ = ["BrokerOptions", "BrokerSession", "Message", "MqttSource", "MqttStats", "RejectSink", "make_client",
           "tls_context"]

log = logging.getLogger(__name__)

T = TypeVar("T")
RejectSink = Callable[[list[DeadLetter]], object]

_WATCH_S = 1.0  # how often an idle stream checks that paho's thread is alive


@dataclass
class MqttStats:
    """Counters of one source, over all its connections."""

    connected: bool = False
    connects: int = 0
    session_resumed: int = 0  # connections where the broker still had our session
    disconnects: int = 0
    messages: int = 0
    readings: int = 0
    updates: int = 0
    rejected: int = 0  # dead letters: rejected messages, or rejected readings of a batch
    rejected_messages: int = 0  # messages with at least one rejected part
    dead_letters_dropped: int = 0  # on_reject raised: these are only in the log
    last_message_at: float | None = None
    last_reject: str = ""


class _Inbox:
    """Messages from paho's network thread to the event loop.

    ``put`` runs in paho's thread: a deque append, and a wake-up only when the deque was empty or
    just reached ``full`` messages (and none is pending), so a burst costs one wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, full: int) -> None:
        self._loop = loop
        self.full = full
        self.items: deque[tuple[str, bytes, float]] = deque()
        self.event = asyncio.Event()
        self._wake_pending = False
        self.closed: str | None = None  # why the connection ended, once it has

    # -- paho's thread
    def put(self, topic: str, payload: bytes, received: float) -> None:
        items = self.items
        items.append((topic, payload, received))
        n = len(items)
        if (n == 1 or n == self.full) and not self._wake_pending:
            self._wake_pending = True
            self._call(self._wake)

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
        self._call(self._wake)

    def _call(self, fn: Callable[[], None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is listening any more
            self._loop.call_soon_threadsafe(fn)

    # -- the event loop
    def _wake(self) -> None:
        self._wake_pending = False
        self.event.set()

    async def _wait_event(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                await self.event.wait()
        except TimeoutError:
            return False
        return True

    async def wait(self, timeout_s: float) -> bool:
        """Wait for a message or the end of the connection; False on timeout."""
        self.event.clear()
        if self.items or self.closed is not None:
            return True
        return await self._wait_event(timeout_s)

    async def wait_full(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for ``full`` messages or the end of the connection."""
        self.event.clear()
        if len(self.items) >= self.full or self.closed is not None:
            return
        await self._wait_event(timeout_s)

    def take(self, n: int) -> list[tuple[str, bytes, float]]:
        items, popleft = self.items, self.items.popleft
        count = min(n, len(items))  # popleft, not clear(): paho's thread may be appending
        return [popleft() for _ in range(count)]


def tls_context(tls: MqttTls) -> ssl.SSLContext:
    """A client TLS context: verify the broker against ``ca_file`` (else the system's CAs), present
    ``cert_file`` if given; ``insecure`` skips the host name check (the chain is still verified)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls.ca_file or None)
    if tls.cert_file:
        ctx.load_cert_chain(tls.cert_file, tls.key_file or None)
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


@dataclass(frozen=True, kw_only=True)
class BrokerOptions:
    """How to reach a broker and which session to keep there (a device's, or the hub's)."""

    host: str
    port: int = 1883
    client_id: str
    qos: int = 1
    mqtt_version: str = "3.1.1"  # or "5"
    clean_session: bool = False
    session_expiry_s: int = 86_400  # MQTT 5, persistent sessions
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    tls: MqttTls | None = None
    username: str = ""
    password_env: str = ""

    @classmethod
    def of_device(cls, device: MqttDevice, client_id: str) -> BrokerOptions:
        return cls(host=device.host, port=device.port, client_id=client_id, qos=device.qos,
                   mqtt_version=device.mqtt_version, clean_session=device.clean_session,
                   session_expiry_s=device.session_expiry_s, keepalive_s=device.keepalive_s,
                   connect_timeout_s=device.connect_timeout_s, tls=device.tls, username=device.username,
                   password_env=device.password_env)

    @property
    def endpoint(self) -> str:
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"


def make_client(options: BrokerOptions) -> mqtt.Client:
    """A paho client: callback API 2, no automatic reconnects, TLS and credentials as configured.

    Raises ValueError (a missing password variable) and OSError/ssl.SSLError (unreadable TLS files).
    """
    v5 = options.mqtt_version == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=options.client_id,
        clean_session=None if v5 else options.clean_session,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        reconnect_on_failure=False,
    )
    client.connect_timeout = options.connect_timeout_s
    if options.tls is not None:
        client.tls_set_context(tls_context(options.tls))
    if options.username:
        password = os.environ.get(options.password_env) if options.password_env else None
        if password is None:
            raise ValueError(f"the password variable {options.password_env or '(none named)'} is not set")
        client.username_pw_set(options.username, password)
    return client


def _connect_properties(options: BrokerOptions) -> Properties | None:
    if options.mqtt_version != "5" or options.clean_session:
        return None
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = options.session_expiry_s
    return props


def describe_error(exc: BaseException) -> str:
    """One line for a connection failure, naming TLS problems as such."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was refused: {exc.verify_message or exc.reason}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):  # socket.timeout too
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _lost(reason: Any) -> str:
    text = str(reason)
    if text in ("Unspecified error", "Success", ""):
        return "connection lost (the broker closed it, or the network dropped it)"
    return f"connection lost: {text}"


Message = tuple[str, bytes, float]
"""A message as received: topic, payload, time of receipt (epoch seconds)."""


class BrokerSession:
    """One client id's session on a broker: connect, subscribe, receive batches of raw messages.

    ``batches()`` may be called again after it raised (a new connection, the same client id, so a
    persistent session resumes). ``name`` and ``endpoint`` go into the errors it raises.
    """

    def __init__(self, options: BrokerOptions, filters: list[str], *, name: str, stats: MqttStats | None = None,
                 batch_window_s: float = 0.05, batch_max_messages: int = 1000,
                 stale_after_s: float | None = None) -> None:
        if not filters:
            raise ValueError("nothing to subscribe to")
        self.options = options
        self.filters = list(filters)
        self.name = name
        self.endpoint = options.endpoint
        self.stats = stats if stats is not None else MqttStats()
        self.batch_window_s = batch_window_s
        self.batch_max_messages = batch_max_messages
        self.stale_after_s = stale_after_s
        self._client: mqtt.Client | None = None

    def _error(self, reason: str) -> SourceConnectError:
        return SourceConnectError(self.name, self.endpoint, reason)

    async def batches(self) -> AsyncIterator[list[Message]]:
        """Connect, subscribe, and yield what arrives, a batch at a time, until the connection ends
        (:class:`SourceConnectError`; :class:`SourceReadError` after ``stale_after_s`` of silence)."""
        loop = asyncio.get_running_loop()
        inbox = _Inbox(loop, self.batch_max_messages)
        client = self._new_client(inbox)
        self._client = client
        try:
            await self._connect(client, inbox, loop)
            suback = self._subscribe(client, inbox, loop)
            async for batch in self._receive(client, inbox, loop, suback):
                yield batch
        finally:
            self.stats.connected = False
            await self._shutdown(client)

    def _new_client(self, inbox: _Inbox) -> mqtt.Client:
        try:
            client = make_client(self.options)
        except (ValueError, OSError) as exc:
            raise self._error(describe_error(exc)) from exc
        received = time.time

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            inbox.put(msg.topic, msg.payload, received())

        def on_disconnect(_c: mqtt.Client, _u: Any, _flags: Any, reason: Any, _props: Any) -> None:
            inbox.close(_lost(reason))

        client.on_message = on_message
        client.on_disconnect = on_disconnect
        return client

    async def _answer(self, fut: asyncio.Future[T], inbox: _Inbox) -> T:
        """The broker's answer (CONNACK, SUBACK), or SourceConnectError if the connection ends first."""
        while not fut.done():
            if inbox.closed is not None:
                # paho calls on_connect (a refusal) before on_disconnect: let that answer land first.
                await asyncio.sleep(0)
                if fut.done():
                    break
                raise self._error(inbox.closed)
            inbox.event.clear()  # messages are not lost: _Inbox.wait() looks at the deque first
            closing = asyncio.ensure_future(inbox.event.wait())
            try:
                await asyncio.wait([fut, closing], return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
        return fut.result()

    async def _connect(self, client: mqtt.Client, inbox: _Inbox, loop: asyncio.AbstractEventLoop) -> None:
        o = self.options
        connack: asyncio.Future[tuple[Any, Any]] = loop.create_future()

        def on_connect(_c: mqtt.Client, _u: Any, flags: Any, reason: Any, _props: Any) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, connack, (flags, reason))

        client.on_connect = on_connect
        clean_start: Any = o.clean_session if o.mqtt_version == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY
        try:
            async with asyncio.timeout(o.connect_timeout_s):
                # connect() blocks (TCP, TLS handshake, CONNECT): off the loop. paho's own
                # connect_timeout bounds that thread even if we stop waiting for it.
                await asyncio.to_thread(client.connect, o.host, o.port, o.keepalive_s, clean_start=clean_start,
                                        properties=_connect_properties(o))
                client.loop_start()
                flags, reason = await self._answer(connack, inbox)
        except TimeoutError as exc:
            raise self._error(f"no answer from the broker within {o.connect_timeout_s:g} s") from exc
        except (OSError, ValueError) as exc:
            raise self._error(describe_error(exc)) from exc
        if reason.is_failure:
            raise self._error(f"the broker refused the connection: {reason}")
        self.stats.connects += 1
        self.stats.connected = True
        if flags.session_present:
            self.stats.session_resumed += 1
        log.debug("%s connected to %s as %s (session %s)", self.name, self.endpoint, o.client_id,
                  "resumed" if flags.session_present else "new")

    def _subscribe(self, client: mqtt.Client, inbox: _Inbox,
                   loop: asyncio.AbstractEventLoop) -> asyncio.Future[list[Any]]:
        """Send SUBSCRIBE; the SUBACK is checked by _receive. Not waited for here: after an outage a
        persistent session's backlog arrives first, and the SUBACK queues behind it."""
        suback: asyncio.Future[list[Any]] = loop.create_future()

        def answered(reasons: list[Any]) -> None:
            _resolve(suback, reasons)
            inbox.event.set()

        def on_subscribe(_c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _props: Any) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(answered, reasons)

        client.on_subscribe = on_subscribe
        rc, _mid = client.subscribe([(f, self.options.qos) for f in self.filters])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise self._error(f"subscribe failed: {mqtt.error_string(rc)}")
        return suback

    def _check_suback(self, suback: asyncio.Future[list[Any]]) -> None:
        refused = [f for f, r in zip(self.filters, suback.result()) if r.is_failure]
        if refused:
            raise self._error(f"the broker refused the subscription to {', '.join(refused)}")

    async def _receive(self, client: mqtt.Client, inbox: _Inbox, loop: asyncio.AbstractEventLoop,
                       suback: asyncio.Future[list[Any]] | None) -> AsyncIterator[list[Message]]:
        stale_s = self.stale_after_s
        last_heard = loop.time()
        suback_due = last_heard + self.options.connect_timeout_s  # moves on while messages flow
        while True:
            if suback is not None and suback.done():
                self._check_suback(suback)
                suback = None
            if not await inbox.wait(_WATCH_S if suback is None else 0.1):
                if not client.is_connected() and inbox.closed is None:
                    inbox.close("paho's network thread stopped")
                elif suback is not None and not suback.done() and loop.time() > suback_due:
                    raise self._error(f"no answer to the subscription to {', '.join(self.filters)}")
                elif stale_s is not None and loop.time() - last_heard > stale_s:
                    raise SourceReadError(self.name, self.endpoint, f"no message for {stale_s:g} s")
                continue
            if self.batch_window_s > 0 and inbox.items:
                await inbox.wait_full(self.batch_window_s)
            while inbox.items:
                batch = inbox.take(self.batch_max_messages)
                last_heard = loop.time()
                suback_due = last_heard + self.options.connect_timeout_s
                self.stats.messages += len(batch)
                self.stats.last_message_at = batch[-1][2]
                yield batch
            if inbox.closed is not None:
                if suback is not None and suback.done():
                    self._check_suback(suback)  # a refusal, then the broker hung up: say why
                self.stats.disconnects += 1
                raise self._error(inbox.closed)

    async def _shutdown(self, client: mqtt.Client) -> None:
        """Disconnect (the broker keeps a persistent session) and let paho's thread end."""
        if self._client is client:
            self._client = None
        with contextlib.suppress(Exception):
            client.disconnect()
        if getattr(client, "_thread", None) is None:  # the loop never started: close the socket ourselves
            with contextlib.suppress(Exception):
                sock = client.socket()
                if sock is not None:
                    sock.close()
            return
        # loop_stop() joins the thread: off the event loop, and never for long. Shielded, so that a
        # cancellation (which propagates) does not interrupt it half-way.
        try:
            async with asyncio.timeout(2.0):  # not wait_for: on 3.11 it can swallow a cancellation
                await asyncio.shield(asyncio.to_thread(client.loop_stop))
        except TimeoutError:
            log.warning("%s: paho's network thread did not stop within 2 s", self.name)

    async def close(self) -> None:
        client = self._client
        if client is not None:
            await self._shutdown(client)


class MqttSource:
    """An MQTT device as a :class:`~protocols.sources.PushedSource`."""

    def __init__(self, device: MqttDevice, client_id: str, *, batch_window_s: float = 0.05,
                 batch_max_messages: int = 1000) -> None:
        self.device = device
        self.device_id = device.id
        self.client_id = client_id
        self.points = [PointInfo(p.metric, p.unit, p.nominal, p.limit_low, p.limit_high) for p in device.points]
        self.subscription = device.subscription()
        self.stats = MqttStats()
        self.on_reject: RejectSink | None = None
        self.session = BrokerSession(BrokerOptions.of_device(device, client_id), [self.subscription],
                                     name=device.id, stats=self.stats, batch_window_s=batch_window_s,
                                     batch_max_messages=batch_max_messages, stale_after_s=device.stale_after_s)
        self.endpoint = self.session.endpoint
        self._decoder = DeviceDecoder(device)
        self._dead_source = f"{device.id}@{device.host}:{device.port}"
        self._last_reject_log = 0.0

    def __repr__(self) -> str:
        return f"MqttSource({self.device_id!r}, {self.endpoint}, {self.subscription!r})"

    async def __aenter__(self) -> MqttSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def stream(self) -> AsyncIterator[Update]:
        """Connect, subscribe, and yield updates until the connection ends (SourceConnectError)."""
        cols = Columns()
        async for batch in self.session.batches():
            update = self._decode(batch, cols)
            if update is not None:
                yield update

    def _decode(self, messages: list[Message], cols: Columns) -> Update | None:
        decode = self._decoder.decode
        rejected: list[DeadLetter] = []
        bad_messages = 0
        for topic, payload, received in messages:
            rejects = decode(topic, payload, received, cols)
            if rejects:
                bad_messages += 1
                rejected.extend(dead_letters(self._dead_source, topic, rejects, received))
        stats = self.stats
        if rejected:
            stats.rejected += len(rejected)
            stats.rejected_messages += bad_messages
            stats.last_reject = rejected[-1].reason
            self._reject(rejected)
        if not cols:
            return None
        update = cols.update()
        cols.clear()
        stats.readings += len(update.ts)
        stats.updates += 1
        return update

    def _reject(self, letters: list[DeadLetter]) -> None:
        sink = self.on_reject
        if sink is not None:
            try:
                sink(letters)
                return
            except Exception:
                self.stats.dead_letters_dropped += len(letters)
                log.exception("%s: the dead-letter sink failed; %d rejected message(s) only logged", self.device_id,
                              len(letters))
        now = time.monotonic()
        if now - self._last_reject_log >= 60.0:  # one line a minute, not one per bad message
            self._last_reject_log = now
            first = letters[0]
            log.warning("%s: rejected a message on %s: %s (%d rejected so far)", self.device_id, first.topic,
                        first.reason, self.stats.rejected)

    async def close(self) -> None:
        await self.session.close()


def _resolve(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)
