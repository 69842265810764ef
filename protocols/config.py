"""The firmware config of one edge box: the one config loader, used by the edge and the simulator.

A config is a TOML file converted into frozen msgspec structs that forbid unknown keys. Every error
names the file and the key path, e.g.::

    firmware_configs/nairobi.toml: devices[0].points[2].address: Expected `int` <= 65535
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec

from protocols.modbus.config import ModbusRtuDevice, ModbusTcpDevice
from protocols.mqtt.config import MqttDevice, MqttTls, check_session
from protocols.opcua.config import OpcUaDevice
from protocols.points import EnvName, Name, Seconds, check_finite

Device = ModbusTcpDevice | ModbusRtuDevice | OpcUaDevice | MqttDevice  # a tagged union on `protocol`

__all__ = [
    "BufferSettings",
    "ConfigError",
    "Device",
    "FirmwareConfig",
    "HubSettings",
    "Identity",
    "Limits",
    "LocatedError",
    "Location",
    "MetricsSettings",
    "OtLogFile",
    "OtLogMqtt",
    "OtLogSettings",
    "QualitySettings",
    "ScoringSettings",
    "load_config",
    "load_toml",
    "parse_config",
    "parse_toml",
]


class LocatedError(ValueError):
    """Bad input in a file. ``str()`` is one line: the file, the key path in it, what is wrong."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source, self.path, self.message = source, path, message
        where = f"{source}: {path}" if path else source
        super().__init__(f"{where}: {message}")


class ConfigError(LocatedError):
    """A firmware config that cannot be used."""


class Location(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    latitude: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    longitude: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    description: str = ""


class Identity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    edge_id: Name
    substation: Name
    zone: str = ""
    location: Location | None = None


_SHA256 = re.compile(r"[0-9A-Fa-f]{64}|[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){31}")


class HubSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: Annotated[str, msgspec.Meta(pattern=r"^https?://[^\s/]+(/\S*)?$")]
    token_env: Annotated[str, msgspec.Meta(pattern=r"^[A-Z_][A-Z0-9_]*$")] = "SENTINEL_EDGE_TOKEN"
    sync_interval_s: Seconds = 2.0
    batch_max_readings: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 5_000
    timeout_s: Seconds = 10.0
    backoff_initial_s: Seconds = 1.0
    backoff_max_s: Seconds = 60.0
    # TLS (https:// urls). ca_file: PEM bundle of the certificates to trust for the hub instead of
    # the system's CAs; a self-signed hub certificate is pinned by giving it as the only one.
    # cert_sha256: the SHA-256 fingerprint of the hub's own (leaf) certificate, checked on every new
    # connection before anything is sent, on top of the usual verification (hex, colons allowed).
    ca_file: Annotated[str, msgspec.Meta(max_length=4096)] = ""
    cert_sha256: str = ""
    # how often the edge asks the hub for a new config given to it (edge/remote_config.py)
    config_pull_interval_s: Seconds = 60.0
    # after applying one, how long the edge watches that the devices the previous config read still
    # answer, and goes back to the previous config by itself if one does not (0: no probation)
    config_probation_s: Annotated[float, msgspec.Meta(ge=0, le=86_400)] = 300.0

    def __post_init__(self) -> None:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        if self.cert_sha256 and not _SHA256.fullmatch(self.cert_sha256):
            raise ValueError(f"cert_sha256 is not a SHA-256 fingerprint (64 hex digits, colons allowed): "
                             f"{self.cert_sha256!r}")
        for key in ("ca_file", "cert_sha256"):
            if getattr(self, key) and not self.url.lower().startswith("https://"):
                raise ValueError(f"{key} applies to an https:// hub, but url is {self.url!r}")

    def token(self) -> str | None:
        """The bearer token, read from the environment variable ``token_env`` (never from the file)."""
        return os.environ.get(self.token_env) or None

    def fingerprint(self) -> bytes | None:
        """``cert_sha256`` as 32 bytes (None when no certificate is pinned)."""
        return bytes.fromhex(self.cert_sha256.replace(":", "")) if self.cert_sha256 else None


class BufferSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The store-and-forward buffer and its limits (``docs/buffer.md``). Past a limit, ``policy``
    says what goes: ``drop_oldest`` drops the oldest unsent readings, keeping while it can those
    around anomalies (an edge event, or a reading scoring ``keep_score`` or more, within
    ``keep_window_s`` of it); ``drop_newest`` keeps the backlog whole and stops storing new
    readings until the hub has taken some (limits are still checked and events still stored).
    Events are never dropped by a limit. Everything dropped is counted by reason."""

    path: str = ""  # empty: var/<edge_id>.db under the working directory
    max_rows: Annotated[int, msgspec.Meta(ge=1_000)] = 10_000_000  # unsent readings kept at most
    # the buffer file's used pages at most (0: no limit); past it, rows go until 90 % of it is used
    max_bytes: Annotated[int, msgspec.Meta(ge=0)] = 2_000_000_000
    # unsent readings older than this are dropped whatever the policy (0: kept however old)
    max_age_s: Annotated[float, msgspec.Meta(ge=0)] = 30 * 86400.0
    policy: Literal["drop_oldest", "drop_newest"] = "drop_oldest"
    keep_window_s: Annotated[float, msgspec.Meta(ge=0, le=86400)] = 300.0
    keep_score: Annotated[float, msgspec.Meta(ge=0.5, le=1)] = 0.8

    def __post_init__(self) -> None:
        if 0 < self.max_bytes < 1_000_000:
            raise ValueError(f"max_bytes {self.max_bytes} is less than 1 MB: 0 for no limit, or at least 1000000")
    # Readings held in memory while the buffer cannot be written (disk full, I/O error), written
    # as soon as it can be; past this many, the oldest held are dropped and counted
    # (reason ``buffer_unwritable``). They are not durable: a kill meanwhile loses them.
    hold_rows: Annotated[int, msgspec.Meta(ge=0)] = 50_000


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Grid-code limits checked at the edge (and by the hub's grid monitor)."""

    voltage_tolerance_pct: Annotated[float, msgspec.Meta(gt=0, le=50)] = 5.0
    voltage_critical_pct: Annotated[float, msgspec.Meta(gt=0, le=90)] = 10.0
    frequency_nominal_hz: Annotated[float, msgspec.Meta(gt=0)] = 50.0
    frequency_min_hz: float = 49.5
    frequency_max_hz: float = 50.5
    frequency_critical_min_hz: float = 49.0
    frequency_critical_max_hz: float = 51.0

    def __post_init__(self) -> None:
        check_finite(self, "frequency_min_hz", "frequency_max_hz", "frequency_critical_min_hz",
                     "frequency_critical_max_hz")
        if self.voltage_critical_pct < self.voltage_tolerance_pct:
            raise ValueError("voltage_critical_pct must be at least voltage_tolerance_pct")
        if not (
            self.frequency_critical_min_hz
            <= self.frequency_min_hz
            < self.frequency_nominal_hz
            < self.frequency_max_hz
            <= self.frequency_critical_max_hz
        ):
            raise ValueError(
                "frequency bands must nest: critical_min <= min < nominal < max <= critical_max"
            )


class QualitySettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # A value identical for this long is flagged stale (a frozen sensor or a gateway serving its
    # cache). Off by default: breaker states and counters legitimately hold still.
    stale_after_s: Seconds | None = None


DETECTOR_NAMES = ("step", "drift", "spike", "oscillation", "dropout", "frozen")
"""The edge's streaming detectors (models.detectors.DETECTORS)."""
Score = Annotated[float, msgspec.Meta(gt=0, le=1)]


def _check_detectors(detectors: tuple[str, ...], where: str) -> None:
    unknown = [d for d in detectors if d not in DETECTOR_NAMES]
    if unknown:
        raise ValueError(f"{where}: unknown detector(s) {unknown}; known: {', '.join(DETECTOR_NAMES)}")


class PointScoring(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One point's scoring, overriding its substation's: which detectors score it, and the thresholds
    of its events. Keyed in ``ScoringSettings.points`` by ``"<device_id>/<metric>"`` or ``"<metric>"``
    (every device's point of that metric); the first form wins."""

    detectors: tuple[str, ...] | None = None
    threshold: Score | None = None
    critical_threshold: Score | None = None

    def __post_init__(self) -> None:
        if self.detectors is not None:
            _check_detectors(self.detectors, "detectors")
        if self.threshold is not None and self.critical_threshold is not None and \
                self.critical_threshold < self.threshold:
            raise ValueError("critical_threshold must be at least threshold")


class ScoringSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Anomaly scoring at the edge: streaming detectors always, plus a model pulled from the hub.

    A reading scoring ``threshold`` or more raises an ``anomaly_<type>`` event (WARNING; CRITICAL
    from ``critical_threshold``), once per device and metric until its score falls below
    ``clear_below`` for ``clear_after`` readings in a row (hysteresis: a step's onset scores as a
    spike, then the step detector takes over; that is one episode, not two). ``model`` names a model in the hub's registry (empty: detectors
    only); the edge checks for a new version every ``model_pull_interval_s`` and verifies it with the
    public key in the file the environment variable ``public_key_env`` names.
    """

    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    critical_threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.95
    clear_below: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.6
    clear_after: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 30
    model: str = ""
    model_pull_interval_s: Seconds = 300.0
    public_key_env: Annotated[str, msgspec.Meta(pattern=r"^[A-Z_][A-Z0-9_]*$")] = "SENTINEL_MODEL_PUBLIC_KEY"
    # detectors that score every point; how their scores (and a model's) combine: "fisher" (agreement
    # counts) or "max"; calibration of each detector per series; samples before any alarm; the tail
    # shape past the anchor of a series that has shown a heavy tail (0: exponential; docs/detection.md)
    detectors: tuple[str, ...] = DETECTOR_NAMES
    combine: Literal["fisher", "max"] = "fisher"
    calibrate: bool = True
    warmup: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 128
    tail_shape: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.25
    points: dict[str, PointScoring] = {}

    def __post_init__(self) -> None:
        if self.critical_threshold < self.threshold:
            raise ValueError("critical_threshold must be at least threshold")
        if self.clear_below > self.threshold:
            raise ValueError("clear_below must not exceed threshold")
        _check_detectors(self.detectors, "scoring.detectors")
        for key, point in self.points.items():
            if (point.threshold if point.threshold is not None else self.threshold) < self.clear_below:
                raise ValueError(f"scoring.points[{key!r}].threshold is below clear_below {self.clear_below}")
            crit = point.critical_threshold if point.critical_threshold is not None else self.critical_threshold
            if crit < (point.threshold if point.threshold is not None else self.threshold):
                raise ValueError(f"scoring.points[{key!r}]: critical_threshold must be at least threshold")

    def point(self, device_id: str, metric: str) -> PointScoring | None:
        """The override for a device's metric, if any (``device/metric`` before ``metric``)."""
        return self.points.get(f"{device_id}/{metric}") or self.points.get(metric)


def check_topic_filter(text: str) -> None:
    """Raise ValueError unless ``text`` is an MQTT topic filter: ``+`` and ``#`` only as whole
    levels, ``#`` only last, not a ``$`` topic (the broker's own)."""
    if not text:
        raise ValueError("topic filter is empty")
    if text.startswith("$"):
        raise ValueError(f"topic filter {text!r}: topics starting with $ are the broker's own")
    levels = text.split("/")
    for i, level in enumerate(levels):
        if ("+" in level or "#" in level) and len(level) > 1:
            raise ValueError(f"topic filter {text!r}: a wildcard must be a whole level, not part of {level!r}")
        if level == "#" and i != len(levels) - 1:
            raise ValueError(f"topic filter {text!r}: # must be the last level")


class OtLogMqtt(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """OT log entries published to a broker (a SCADA gateway's log forwarder), as JSON in the OT log
    schema (protocols/schemas/ot_log.schema.json): one entry, a list, or ``{"events": [...]}``.
    Connection settings mean what they mean for an MQTT device (protocols/mqtt/config.py)."""

    host: Annotated[str, msgspec.Meta(min_length=1, max_length=253)]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 1883
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]  # a topic filter: scada/logs/#
    qos: Literal[0, 1, 2] = 1
    mqtt_version: Literal["3.1.1", "5"] = "3.1.1"
    client_id: Annotated[str, msgspec.Meta(max_length=128)] = ""  # empty: <edge_id>-ot-logs
    clean_session: bool = False  # False: persistent session, QoS 1 entries wait while the edge is away
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=4_294_967_295)] = 86_400
    keepalive_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 30
    connect_timeout_s: Seconds = 10.0
    username: str = ""
    password_env: EnvName = ""
    tls: MqttTls | None = None

    def __post_init__(self) -> None:
        check_session(self)
        check_topic_filter(self.topic)


class OtLogFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A JSON-lines file of OT log entries (one entry, a list or ``{"events": [...]}`` per line),
    followed as it grows. The edge keeps its place in the buffer; a file truncated or rotated is read
    again from its start (a rotated file left beside it under another name is finished first)."""

    path: Annotated[str, msgspec.Meta(min_length=1, max_length=4096)]
    poll_interval_s: Seconds = 1.0


class OtLogSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the edge takes the substation's OT log entries from, to forward them to the hub's cyber
    sentinel: a broker's topic filter, a file, or both. Entries must name this edge's substation;
    malformed ones go to the dead-letter table with the reason."""

    mqtt: OtLogMqtt | None = None
    file: OtLogFile | None = None
    batch_max: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1_000  # entries per sync batch

    def __post_init__(self) -> None:
        if self.mqtt is None and self.file is None:
            raise ValueError("give [ot_logs.mqtt], [ot_logs.file] or both")


_LISTEN = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})$")


class MetricsSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The edge's Prometheus endpoint (``GET /metrics``), served only when the config has a
    ``[metrics]`` table. ``listen`` is ``host:port``: an IP address (IPv6 in brackets) or
    ``localhost``, and a port (0: any free one, logged). Loopback by default: only the box itself
    (a local Prometheus agent, an SSH tunnel) reads it; the endpoint has no authentication, so the
    edge warns when it is bound to anything else."""

    listen: str = "127.0.0.1:9108"

    def __post_init__(self) -> None:
        self.address()  # a ValueError naming the key

    def address(self) -> tuple[str, int]:
        """(host, port) to bind. Raises ValueError naming ``listen`` when it is not one."""
        m = _LISTEN.match(self.listen)
        host = (m["v6"] or m["host"]) if m else ""
        ok = m is not None and int(m["port"]) <= 65535 and (host == "localhost" or _is_ip(host, v6=bool(m["v6"])))
        if not ok:
            raise ValueError(f"listen must be host:port (an IP address, IPv6 in brackets, or localhost; a port "
                             f"0-65535), e.g. 127.0.0.1:9108, not {self.listen!r}")
        assert m is not None
        return host, int(m["port"])

    @property
    def loopback(self) -> bool:
        """Bound to the box itself only."""
        host = self.address()[0]
        return host == "localhost" or ipaddress.ip_address(host).is_loopback


def _is_ip(host: str, v6: bool) -> bool:
    try:
        return ipaddress.ip_address(host).version == (6 if v6 else 4)
    except ValueError:
        return False


class FirmwareConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    identity: Identity
    hub: HubSettings
    devices: Annotated[list[Device], msgspec.Meta(min_length=1)]
    limits: Limits = Limits()
    buffer: BufferSettings = BufferSettings()
    quality: QualitySettings = QualitySettings()
    scoring: ScoringSettings = ScoringSettings()
    ot_logs: OtLogSettings | None = None  # forward the substation's OT logs to the hub (off without it)
    metrics: MetricsSettings | None = None  # the edge's Prometheus endpoint (off without it)

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, device in enumerate(self.devices):
            if device.id in seen:
                raise ValueError(f"devices[{i}].id {device.id!r} appears twice")
            seen.add(device.id)

    def buffer_path(self) -> Path:
        return Path(self.buffer.path or f"var/{self.identity.edge_id}.db")


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<field>[^`]+)`$")


def _config_error(source: str, exc: msgspec.ValidationError) -> ConfigError:
    m = _AT.match(str(exc))
    assert m is not None
    msg, path = m["msg"], (m["path"] or "").lstrip(".")
    unknown = _UNKNOWN.match(msg)
    if unknown:
        path = f"{path}.{unknown['field']}" if path else unknown["field"]
        msg = "unknown key"
    return ConfigError(source, path, msg)


T = TypeVar("T")


def parse_toml(text: str, type_: type[T], source: str = "<config>") -> T:
    """TOML text converted to ``type_`` (frozen msgspec Structs that forbid unknown keys): the one
    config loader. Raises :class:`ConfigError` naming the source, the key path and what is wrong."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from exc
    except RecursionError as exc:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(source, "", "not valid TOML: arrays or inline tables nested too deeply") from exc
    try:
        return msgspec.convert(data, type_)
    except msgspec.ValidationError as exc:
        err = _config_error(source, exc)
        if "[...]" in err.path:
            err = ConfigError(source, _name_keys(data, type_, err), err.message)
        raise err from exc


def _name_keys(data: dict, type_: type, err: ConfigError) -> str:
    """msgspec writes a table's key as ``[...]`` in the path (``feeders[...].rating``); find which
    key it is by converting the table with one key at a time, and put its name in."""
    head, _, tail = err.path.partition("[...]")
    parents = [p for p in head.split(".") if p]
    table = data
    for p in parents:
        table = table.get(p) if isinstance(table, dict) else None
    if not isinstance(table, dict):
        return err.path
    for key in table:
        trial = copy.deepcopy(data)
        node = trial
        for p in parents[:-1]:
            node = node[p]
        node[parents[-1]] = {key: table[key]}
        try:
            msgspec.convert(trial, type_)
        except msgspec.ValidationError as exc:
            if _config_error("", exc).message == err.message:
                return f"{head}.{key}{tail}"
    return err.path


def load_toml(path: str | os.PathLike[str], type_: type[T]) -> T:
    """Read and convert one TOML file (see :func:`parse_toml`)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror}") from exc
    return parse_toml(text, type_, str(p))


# -- device templates ----------------------------------------------------------------------------
# A device model's register map is written once, as a template: ``templates/<name>.toml`` beside the
# config (or in a directory of $SENTINEL_TEMPLATE_DIRS, ':'-separated) holds every key of a device
# but its ``id``; a ``[[devices]]`` entry with ``template = "<name>"`` takes them, and its own keys
# (``id``, ``host``, ``unit_id``, even ``points``) win. 300 identical meters: one template, 300 short entries.

TEMPLATE_DIRS_ENV = "SENTINEL_TEMPLATE_DIRS"
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def template_dirs(config_path: str | os.PathLike[str] | None = None) -> list[Path]:
    """Where device templates are looked up: ``templates/`` beside the config, then $SENTINEL_TEMPLATE_DIRS."""
    dirs = [Path(config_path).parent / "templates"] if config_path is not None else []
    dirs += [Path(d) for d in os.environ.get(TEMPLATE_DIRS_ENV, "").split(":") if d.strip()]
    return dirs


def expand_templates(data: dict, source: str, dirs: list[Path]) -> dict[int, str]:
    """Replace each device entry naming a ``template`` by the template's keys under the entry's own
    (in place); which entries came from which template file. :class:`ConfigError` naming the entry
    for an unknown or bad template."""
    used: dict[int, str] = {}
    devices = data.get("devices")
    if not isinstance(devices, list):
        return used
    for i, entry in enumerate(devices):
        if not isinstance(entry, dict) or "template" not in entry:
            continue
        name, where = entry["template"], f"devices[{i}].template"
        if not isinstance(name, str) or not _TEMPLATE_NAME.match(name):
            raise ConfigError(source, where, f"not a template name: {name!r}")
        path = next((d / f"{name}.toml" for d in dirs if (d / f"{name}.toml").is_file()), None)
        if path is None:
            looked = ", ".join(str(d) for d in dirs) or "nowhere (no config file, no $SENTINEL_TEMPLATE_DIRS)"
            raise ConfigError(source, where, f"no template {name!r}: looked for {name}.toml in {looked}")
        try:
            template = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(str(path), "", f"template {name!r} cannot be read: {exc}") from exc
        if "id" in template or "template" in template:
            raise ConfigError(str(path), "id" if "id" in template else "template",
                              "a template describes a device model: its entries give the id")
        devices[i] = {**template, **{k: v for k, v in entry.items() if k != "template"}}
        used[i] = f"{path} (template {name!r} of devices[{i}])"
    return used


def parse_config(text: str, source: str = "<config>", *, templates: list[Path] | None = None) -> FirmwareConfig:
    """Parse and validate a firmware config from TOML text (device templates looked up in
    ``templates``, default $SENTINEL_TEMPLATE_DIRS)."""
    dirs = templates if templates is not None else template_dirs()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from exc
    except RecursionError as exc:
        raise ConfigError(source, "", "not valid TOML: arrays or inline tables nested too deeply") from exc
    entries = [dict(d) if isinstance(d, dict) else d for d in data.get("devices", [])] \
        if isinstance(data.get("devices"), list) else []
    used = expand_templates(data, source, dirs)
    if not used:
        return parse_toml(text, FirmwareConfig, source)
    try:
        return msgspec.convert(data, FirmwareConfig)
    except msgspec.ValidationError as exc:
        err = _config_error(source, exc)
        m = re.match(r"^devices\[(\d+)\]\.?([A-Za-z_]*)", err.path)
        if m and int(m[1]) in used and m[2] not in entries[int(m[1])]:  # the template's key, not the entry's
            raise ConfigError(used[int(m[1])], err.path, err.message) from exc
        raise err from exc


def load_config(path: str | os.PathLike[str]) -> FirmwareConfig:
    """Load and validate one firmware config file. Raises :class:`ConfigError` naming file and key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), "", f"cannot read: {exc.strerror}") from exc
    return parse_config(text, str(p), templates=template_dirs(p))
