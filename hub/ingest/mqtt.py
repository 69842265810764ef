"""The hub taking telemetry straight from a utility's MQTT broker.

    ingest = MqttIngest(storage, settings_from_env())      # None when SENTINEL_MQTT_URL is unset
    await ingest.run()                                      # until cancelled; reconnects by itself

Same schema and validation as ``POST /sensors/process`` and the edge's MQTT driver (the parsing is
:mod:`protocols.mqtt.codec`): each topic must fit one of the configured templates
(``substations/{substation}/{device}/{metric}`` by default), each payload is one reading, a bare
number (when the topic names device and metric) or a batch ``{"sensor_readings": [...]}``.
Good readings are stored in batches (``storage.insert_readings(..., source="mqtt")``) and checked
against the grid code (:func:`agents.grid_monitor.check_readings`, findings become incidents);
malformed messages, and the bad readings of a batch, go to the dead-letter table with the reason;
so does a reading with an impossible value or timestamp (:mod:`protocols.validation`:
``sensor_readings[3].value: -5.0 kV is not a possible voltage (must be >= 0)``). Readings are
de-duplicated on (device_id, metric, ts): a message the broker delivers twice is stored once.
A bad message never stops the loop and never holds up the good ones around it.

Here the hub owns its reconnects: after a failure it waits (capped, jittered backoff) and connects
again with the same client id, so with QoS 1 and a persistent session nothing published meanwhile
is lost at the broker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from hub.storage import Storage
from hub.ingest.telemetry import incident_from_finding, store_telemetry  # noqa: F401 - re-exported
from protocols.config import Limits
from paho.mqtt.client import topic_matches_sub

from protocols import otlog
from protocols.mqtt.codec import DeadLetter, dead_letters, parse_message, to_readings
from protocols.mqtt.config import MqttTls, TopicTemplate
from protocols.mqtt.source import BrokerOptions, BrokerSession, Message, MqttStats
from protocols.otlog import OtLogEvent
from protocols.reading import Reading
from protocols.sources import SourceError
from protocols.validation import DEFAULT_MAX_FUTURE_SKEW_S, DEFAULT_TIMESTAMP_FLOOR, impossible_readings

__all__ = [
    "IngestStats",
    "MqttIngest",
    "MqttIngestSettings",
    "incident_from_finding",
    "settings_from_env",
    "store_telemetry",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TOPIC = "substations/{substation}/{device}/{metric}"


@dataclass(frozen=True, kw_only=True)
class MqttIngestSettings:
    """Where the utility's broker is, what to subscribe to, and how to store what comes."""

    host: str
    port: int = 1883
    topics: tuple[str, ...] = (DEFAULT_TOPIC,)  # topic templates (protocols.mqtt.config.TopicTemplate)
    qos: Literal[0, 1, 2] = 1
    client_id: str = "sentinel-hub"  # fixed, so the broker keeps the hub's session
    # several hub replicas: subscribe as members of this shared subscription group ($share/<group>/...)
    # so the broker splits the messages between them, each with a client id of its own (the default
    # one gets the host name appended)
    share_group: str = ""
    clean_session: bool = False
    mqtt_version: Literal["3.1.1", "5"] = "3.1.1"
    session_expiry_s: int = 86_400
    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    tls: MqttTls | None = None
    username: str = ""
    password_env: str = "SENTINEL_MQTT_PASSWORD"  # the variable holding the password, never the password
    default_substation: str = "UNASSIGNED"  # for readings whose payload and topic name none
    limits: Limits = field(default_factory=Limits)
    batch_window_s: float = 0.25  # collect this long (or batch_max_messages) per storage transaction
    batch_max_messages: int = 5000
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    # MQTT topic filters (``ot-logs/#``) whose messages are OT log entries
    # (protocols/schemas/ot_log.schema.json: one, a list, or {"events": [...]}), for the cyber sentinel
    ot_log_topics: tuple[str, ...] = ()
    # readings timestamped more than this after the hub's clock, or before the floor, are dead letters
    max_future_skew_s: float = DEFAULT_MAX_FUTURE_SKEW_S
    timestamp_floor: datetime = DEFAULT_TIMESTAMP_FLOOR

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("topics: give at least one topic template")
        for t in self.ot_log_topics:
            if not t or "#" in t[:-1] or any(("+" in level or "#" in level) and len(level) > 1
                                              for level in t.split("/")):
                raise ValueError(f"ot_log_topics: {t!r} is not an MQTT topic filter")
        for t in self.topics:
            TopicTemplate(t)  # raises ValueError naming what is wrong
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos}")
        if self.mqtt_version not in ("3.1.1", "5"):
            raise ValueError(f"mqtt_version must be 3.1.1 or 5, not {self.mqtt_version}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is not a TCP port")
        if self.share_group and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.share_group):
            raise ValueError(f"share_group {self.share_group!r}: letters, digits, '_', '.', '-' only (no '/', '+', '#')")

    @property
    def session_client_id(self) -> str:
        """The client id used: with a share group and the default id, one per host (a replica's own)."""
        if self.share_group and self.client_id == "sentinel-hub":
            return f"sentinel-hub-{socket.gethostname()}"[:128]
        return self.client_id

    def subscriptions(self, filters: list[str]) -> list[str]:
        """``filters`` as subscribed: in the share group when there is one."""
        return [f"$share/{self.share_group}/{f}" for f in filters] if self.share_group else filters

    @property
    def endpoint(self) -> str:
        return f"{'mqtts' if self.tls is not None else 'mqtt'}://{self.host}:{self.port}"

    def broker_options(self) -> BrokerOptions:
        return BrokerOptions(host=self.host, port=self.port, client_id=self.session_client_id, qos=self.qos,
                             mqtt_version=self.mqtt_version, clean_session=self.clean_session,
                             session_expiry_s=self.session_expiry_s, keepalive_s=self.keepalive_s,
                             connect_timeout_s=self.connect_timeout_s, tls=self.tls,
                             username=self.username, password_env=self.password_env if self.username else "")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _flag(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"SENTINEL_MQTT_URL: {name}={value!r} is not a yes/no value")


def parse_mqtt_url(url: str, **overrides: object) -> MqttIngestSettings:
    """``mqtt://[user@]host[:port][/topic/template][?option=value&...]`` (``mqtts://`` for TLS).

    The path, if any, is one topic template (``mqtt://broker/substations/{substation}/{device}/{metric}``).
    Options: ``qos``, ``client_id``, ``clean_session``, ``mqtt_version``, ``keepalive_s``,
    ``share_group`` (hub replicas split the messages: ``$share/<group>/...``),
    ``ca_file``, ``cert_file``, ``key_file``, ``insecure`` (TLS). A password in the URL is refused:
    it belongs in ``SENTINEL_MQTT_PASSWORD``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"SENTINEL_MQTT_URL {url!r}: use mqtt://host[:port]/topic or mqtts://...")
    if not parts.hostname:
        raise ValueError(f"SENTINEL_MQTT_URL {url!r} names no host")
    if parts.password is not None:
        raise ValueError("SENTINEL_MQTT_URL carries a password: put it in SENTINEL_MQTT_PASSWORD instead")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError as exc:
        raise ValueError(f"SENTINEL_MQTT_URL {url!r}: {exc}") from None
    opts = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"qos", "client_id", "clean_session", "mqtt_version", "keepalive_s", "ca_file", "cert_file", "key_file",
             "insecure", "share_group"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"SENTINEL_MQTT_URL: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    kwargs: dict[str, object] = {"host": parts.hostname, "port": port}
    topic = unquote(parts.path.lstrip("/"))
    if topic:
        kwargs["topics"] = (topic,)
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if "qos" in opts:
        if opts["qos"] not in ("0", "1", "2"):
            raise ValueError(f"SENTINEL_MQTT_URL: qos={opts['qos']!r}: use 0, 1 or 2")
        kwargs["qos"] = int(opts["qos"])
    if "client_id" in opts:
        kwargs["client_id"] = opts["client_id"]
    if "share_group" in opts:
        kwargs["share_group"] = opts["share_group"]
    if "clean_session" in opts:
        kwargs["clean_session"] = _flag("clean_session", opts["clean_session"])
    if "mqtt_version" in opts:
        kwargs["mqtt_version"] = opts["mqtt_version"]
    if "keepalive_s" in opts:
        kwargs["keepalive_s"] = int(opts["keepalive_s"])
    tls_keys = {"ca_file", "cert_file", "key_file", "insecure"} & set(opts)
    if parts.scheme == "mqtts":
        kwargs["tls"] = MqttTls(ca_file=opts.get("ca_file", ""), cert_file=opts.get("cert_file", ""),
                                key_file=opts.get("key_file", ""),
                                insecure=_flag("insecure", opts["insecure"]) if "insecure" in opts else False)
    elif tls_keys:
        raise ValueError(f"SENTINEL_MQTT_URL: {sorted(tls_keys)[0]} needs mqtts://")
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return MqttIngestSettings(**kwargs)  # type: ignore[arg-type]


def settings_from_env(environ: dict[str, str] | None = None, **overrides: object) -> MqttIngestSettings | None:
    """The hub's MQTT ingest settings from the environment; None when ``SENTINEL_MQTT_URL`` is unset.

    ``SENTINEL_MQTT_URL``   ``mqtt://user@host:1883/topic/template`` or ``mqtts://...`` (see parse_mqtt_url)
    ``SENTINEL_MQTT_TOPICS`` comma-separated topic templates (instead of the URL's path)
    ``SENTINEL_MQTT_PASSWORD`` the broker password for the URL's user
    ``SENTINEL_DEFAULT_SUBSTATION`` the substation of readings that name none
    ``SENTINEL_MQTT_OT_LOG_TOPICS`` comma-separated topic filters of OT log entries (``ot-logs/#``)

    Keyword overrides win (e.g. ``default_substation=settings.default_substation, limits=settings.limits``).
    Raises ValueError naming the variable when a value is unusable.
    """
    env = os.environ if environ is None else environ
    url = env.get("SENTINEL_MQTT_URL", "").strip()
    if not url:
        return None
    extra: dict[str, object] = {}
    if topics := env.get("SENTINEL_MQTT_TOPICS", "").strip():
        extra["topics"] = tuple(t.strip() for t in topics.split(",") if t.strip())
    if sub := env.get("SENTINEL_DEFAULT_SUBSTATION", "").strip():
        extra["default_substation"] = sub
    if ot := env.get("SENTINEL_MQTT_OT_LOG_TOPICS", "").strip():
        extra["ot_log_topics"] = tuple(t.strip() for t in ot.split(",") if t.strip())
    extra.update(overrides)
    try:
        settings = parse_mqtt_url(url, **extra)
    except ValueError as exc:
        msg = str(exc)
        raise ValueError(msg if msg.startswith("SENTINEL_MQTT") else f"SENTINEL_MQTT_URL / SENTINEL_MQTT_TOPICS: {msg}") from None
    if settings.username and settings.password_env not in env:
        raise ValueError(f"SENTINEL_MQTT_URL names user {settings.username!r}: set {settings.password_env} to the "
                         "password")
    return settings


# -- the subscriber -----------------------------------------------------------------------------

@dataclass
class IngestStats:
    connection: MqttStats = field(default_factory=MqttStats)
    readings_stored: int = 0
    ot_logs_stored: int = 0
    incidents: int = 0
    dead_letters: int = 0
    batches: int = 0
    store_failures: int = 0  # batches that could not be stored (the storage was down)
    last_error: str = ""


class MqttIngest:
    """Subscribe to a utility's broker and store what it sends. ``await run()`` until cancelled."""

    def __init__(self, storage: Storage, settings: MqttIngestSettings,
                 on_data: Callable[[], object] | None = None) -> None:
        self.storage = storage
        self.settings = settings
        self.on_data = on_data  # called on the loop after something was stored (the orchestrator's notify)
        self.templates = [TopicTemplate(t) for t in settings.topics]
        self.stats = IngestStats()
        filters = settings.subscriptions([t.filter() for t in self.templates] + list(settings.ot_log_topics))
        self.session = BrokerSession(settings.broker_options(), filters, name="hub",
                                     stats=self.stats.connection, batch_window_s=settings.batch_window_s,
                                     batch_max_messages=settings.batch_max_messages)
        self._source = f"hub@{settings.host}:{settings.port}"
        self._rng = random.Random()

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    async def run(self) -> None:
        """Receive and store until cancelled; on a broker failure, back off and connect again."""
        failures = 0
        down = False
        while True:
            try:
                async for batch in self.session.batches():
                    if down:
                        log.info("MQTT ingest: %s answers again", self.endpoint)
                        down = False
                    failures = 0
                    await self._store(batch)
            except SourceError as exc:
                self.stats.last_error = exc.reason
                if not down:  # log on change of state, not once per attempt
                    log.error("MQTT ingest: %s", exc)
                    down = True
            cap = min(self.settings.backoff_max_s, self.settings.backoff_initial_s * 2 ** min(failures, 30))
            failures += 1
            await asyncio.sleep(self._rng.uniform(cap / 2, cap))

    async def close(self) -> None:
        await self.session.close()

    def process(self, batch: Sequence[Message]) -> tuple[list[Reading], list[float | None], list[DeadLetter]]:
        """Parse a batch of messages: (readings, their nominals, dead letters). Pure; no storage."""
        readings: list[Reading] = []
        nominals: list[float | None] = []
        dead: list[DeadLetter] = []
        origin: list[tuple[int, int]] = []  # per reading: (its message, its index in the message's readings)
        messages = []
        default_substation = self.settings.default_substation
        templates = self.templates
        for m, (topic, payload, received) in enumerate(batch):
            template = next((t for t in templates if t.match(topic) is not None), templates[0])
            parsed = parse_message(template, topic, payload, received)
            messages.append(parsed)
            if parsed.readings:
                r, n = to_readings(parsed, default_substation)
                readings.extend(r)
                nominals.extend(n)
                origin.extend((m, i) for i in range(len(r)))
            if parsed.rejects:
                if len(templates) > 1 and not parsed.fields and not parsed.readings:
                    reason = f"topic {topic} matches none of the templates {', '.join(t.text for t in templates)}"
                    parsed.rejects[0] = parsed.rejects[0]._replace(reason=reason)
                dead.extend(dead_letters(self._source, topic, parsed.rejects, received))
        impossible = impossible_readings(readings, max_future_skew_s=self.settings.max_future_skew_s,
                                         floor=self.settings.timestamp_floor)
        if impossible:  # one dead letter per reading, naming the fields as the schema's own rejects do
            reasons: dict[int, list[str]] = {}
            for p in impossible:
                item = messages[origin[p.index][0]].items[origin[p.index][1]]
                where = f"sensor_readings[{item}].{p.field}" if item >= 0 else p.field
                reasons.setdefault(p.index, []).append(f"{where}: {p.message}")
            for k, why in reasons.items():
                m, i = origin[k]
                topic, _, received = batch[m]
                dead.append(DeadLetter.make(self._source, topic, messages[m].raw(i), "; ".join(why), received))
            drop = set(reasons)
            keep = [k for k in range(len(readings)) if k not in drop]
            readings, nominals = [readings[k] for k in keep], [nominals[k] for k in keep]
        return readings, nominals, dead

    def process_ot_logs(self, batch: Sequence[Message]) -> tuple[list[OtLogEvent], list[DeadLetter]]:
        """OT log messages: (good entries, dead letters naming each bad entry). Pure; no storage."""
        events: list[OtLogEvent] = []
        dead: list[DeadLetter] = []
        for topic, payload, received in batch:
            decoded = otlog.decode(payload)
            events.extend(decoded.events)
            dead.extend(DeadLetter.make(self._source, topic, payload, f"OT log: {e}", received) for e in decoded.errors)
        return events, dead

    def _is_ot_log(self, topic: str) -> bool:
        return any(topic_matches_sub(f, topic) for f in self.settings.ot_log_topics)

    async def _store(self, batch: list[Message]) -> None:
        ot: list[Message] = []
        if self.settings.ot_log_topics:
            ot = [m for m in batch if self._is_ot_log(m[0])]
            if ot:
                batch = [m for m in batch if not self._is_ot_log(m[0])]
        readings, nominals, dead = self.process(batch)
        self.stats.batches += 1
        if ot:
            events, ot_dead = self.process_ot_logs(ot)
            dead += ot_dead
            if events and await self._retry(self.storage.add_ot_logs, events, "mqtt",
                                            what=f"{len(events)} OT log entries") is not None:
                self.stats.ot_logs_stored += len(events)
        if readings:
            result = await self._retry(store_telemetry, self.storage, readings, nominals, self.settings.limits,
                                       "mqtt", what=f"{len(readings)} readings")
            if result is not None:
                stored, incidents = result
                self.stats.readings_stored += stored
                self.stats.incidents += len(incidents)
        if dead:
            if await self._retry(self.storage.add_dead_letters, dead, what=f"{len(dead)} dead letters") is not None:
                self.stats.dead_letters += len(dead)
        if self.on_data is not None and (readings or ot):
            self.on_data()

    async def _retry(self, fn: Callable[..., T], *args: object, what: str) -> T | None:
        """``fn(*args)`` in a thread; when the storage fails, twice more, then give up (logged, counted)."""
        for attempt in range(3):
            try:
                return await asyncio.to_thread(fn, *args)
            except Exception as exc:  # the storage is down or refused the rows
                self.stats.last_error = f"storage: {exc}"
                if attempt == 2:
                    self.stats.store_failures += 1
                    log.error("MQTT ingest: could not store %s: %s", what, exc)
                    return None
                await asyncio.sleep(0.5 * (attempt + 1))
        return None  # pragma: no cover
