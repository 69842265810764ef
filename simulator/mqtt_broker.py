"""MQTT for the simulated substations: a Mosquitto broker of our own, and the devices publishing to it.

:class:`MosquittoBroker` runs ``mosquitto -c CONF`` from a temporary directory::

    with MosquittoBroker(host="127.0.0.1", port=15883) as broker:   # port 0: a free port
        broker.stop(); broker.start()      # a restart, on the same port
        broker.kill()                      # a crash (SIGKILL)

It listens on ``host`` only: a plain listener, and with ``tls=True`` a TLS listener whose
certificates are made at run time (:func:`make_certificates`: a CA, a server certificate for
127.0.0.1 and localhost, a client certificate). ``users`` turns anonymous access off and writes
a password file (``mosquitto_passwd`` when installed, otherwise the same ``$6$`` hash Mosquitto
reads). Without a ``mosquitto`` binary it raises :class:`MosquittoNotFound`, which says what to
install. The tests' broker (``tests/support/mosquitto.py``) is this class.

:class:`MqttSimulator` is the simulation runner's hook: for every MQTT device of the configs it
makes sure a broker listens at the device's ``host:port`` (it starts one when nothing listens
there, one per ``host:port``; otherwise it publishes to whatever broker is there) and runs a
:class:`~simulator.mqtt_publisher.MqttPublisher` per device, fed by the simulation's values once
per ``publish_interval_s`` of scenario time. Faults: a paused device publishes nothing, a device
may send corrupt payloads for a while, and a broker the simulator started can be stopped and
started again on the same port.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import logging
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Self

from protocols.mqtt.config import MqttDevice
from simulator.modbus_server import EndpointError
from simulator.mqtt_publisher import CORRUPTIONS, CorruptionKind, MqttPublisher
from simulator.plant import DeviceInfo

__all__ = [
    "MosquittoBroker",
    "MosquittoNotFound",
    "MqttBrokerError",
    "MqttEndpoint",
    "MqttSimulator",
    "find_mosquitto",
    "make_certificates",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "install it: apt-get install mosquitto (scripts/system-deps.sh does)"


class MqttBrokerError(EndpointError):
    """A broker could not be started, or a simulated device could not publish to its broker (the
    simulator's EndpointError, so the runner's handling of Modbus endpoints covers it)."""


class MosquittoNotFound(MqttBrokerError):
    """No mosquitto broker binary on this machine."""


MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")
"""Where packages put the broker, which is often not on a user's $PATH (Debian's is in /usr/sbin)."""


def find_mosquitto(endpoint: str = "mqtt broker") -> Path:
    """The broker binary: ``$SENTINEL_MOSQUITTO``, ``mosquitto`` on ``$PATH``, then :data:`MOSQUITTO_PATHS`."""
    candidates = [os.environ.get("SENTINEL_MOSQUITTO", ""), shutil.which("mosquitto") or "", *MOSQUITTO_PATHS]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return Path(c)
    raise MosquittoNotFound(endpoint, "no mosquitto broker found (looked at $SENTINEL_MOSQUITTO, $PATH, /usr/sbin); "
                                      + INSTALL_HINT)


@cache
def _die_with_parent() -> tuple[str, ...]:
    """A command prefix that has the broker sent SIGTERM when the process that started it dies
    (even by SIGKILL), so that no broker is left holding the port: util-linux's ``setpriv
    --pdeathsig`` on Linux (a preexec_fn would do the same, but is unsafe with threads); empty
    where there is none."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or not sys.platform.startswith("linux"):
        return ()
    try:
        help_text = subprocess.run([setpriv, "--help"], capture_output=True, text=True, timeout=10,
                                   check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return (setpriv, "--pdeathsig", "TERM", "--") if "--pdeathsig" in help_text else ()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def listening(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True if something accepts TCP connections at host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# -- certificates ---------------------------------------------------------------------------------

def make_certificates(directory: Path, common_name: str = "Sentinel test CA") -> dict[str, Path]:
    """A CA, a server certificate (127.0.0.1, localhost) and a client certificate, as PEM files.

    Returns paths: ca, server_cert, server_key, client_cert, client_key.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name(common_name)).issuer_name(name(common_name))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))

    def leaf(cn: str, usage: x509.ObjectIdentifier, san: list[x509.GeneralName] | None) -> tuple:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca.subject)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now).not_valid_after(now + timedelta(days=2))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False))
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(ca_key, hashes.SHA256()), key

    server, server_key = leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH,
                              [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client, client_key = leaf("sentinel-edge", ExtendedKeyUsageOID.CLIENT_AUTH, None)
    paths = {k: directory / f"{k}.pem" for k in ("ca", "server_cert", "server_key", "client_cert", "client_key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["server_cert"].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    write_key(server_key, paths["server_key"])
    paths["client_cert"].write_bytes(client.public_bytes(serialization.Encoding.PEM))
    write_key(client_key, paths["client_key"])
    return paths


def _sha512_entry(user: str, password: str) -> str:
    """A password file line as ``mosquitto_passwd -H sha512`` writes it: ``user:$6$<salt>$<hash>``."""
    salt = os.urandom(12)
    digest = hashlib.sha512(password.encode() + salt).digest()
    return f"{user}:$6${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


# -- the broker -----------------------------------------------------------------------------------

class MosquittoBroker:
    """A Mosquitto broker of its own in a temporary directory under ``base_dir``; a context manager
    (or :meth:`open` / :meth:`close`) that removes the directory on exit.

    ``port`` 0 picks a free port at the first start (and ``tls_port`` 0 one for TLS); a restart
    reuses the ports chosen. Blocking: from async code, call it in a thread.
    """

    def __init__(self, base_dir: str | Path | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 tls: bool = False, tls_port: int = 0, require_certificate: bool = False,
                 users: Mapping[str, str] | None = None, allow_anonymous: bool | None = None,
                 persistence: bool = False, max_queued_messages: int = 100_000, extra: str = "") -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.host = host
        self.port = port
        self.tls = tls
        self.tls_port = tls_port
        self.require_certificate = require_certificate
        self.users = dict(users or {})
        self.allow_anonymous = not self.users if allow_anonymous is None else allow_anonymous
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.extra = extra
        self.root: Path | None = None
        self.certs: dict[str, Path] = {}
        self.binary: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Find the binary, make the directory (certificates, password file) and start the broker.
        Raises :class:`MosquittoNotFound` or :class:`MqttBrokerError`."""
        self.binary = find_mosquitto(self.endpoint)
        try:
            self.root = Path(tempfile.mkdtemp(prefix="sentinel-mqtt-", dir=self.base_dir))
            if self.tls:
                self.certs = make_certificates(self.root / "certs")
            if self.users:
                self._write_passwords()
            self.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the broker and remove its directory."""
        self._stop_process()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    @property
    def endpoint(self) -> str:
        return f"mqtt {self.host}:{self.port or '(free port)'}"

    @property
    def ca_file(self) -> str:
        return str(self.certs["ca"])

    @property
    def client_cert(self) -> str:
        return str(self.certs["client_cert"])

    @property
    def client_key(self) -> str:
        return str(self.certs["client_key"])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log(self) -> str:
        path = self.root / "mosquitto.log" if self.root else None
        return path.read_text(errors="replace") if path and path.exists() else ""

    def start(self, timeout_s: float = 10.0) -> None:
        """Start the broker (again, on the same ports once they are chosen); returns once it accepts.
        Raises :class:`MqttBrokerError` naming the endpoint and what mosquitto said."""
        if self.root is None or self.binary is None:
            raise RuntimeError("open the broker first: `with MosquittoBroker(...)` or broker.open()")
        if self.running:
            return
        fixed = self.port != 0
        last = ""
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = _free_port(self.host)
                self.tls_port = _free_port(self.host) if self.tls else 0
            elif self.tls and not self.tls_port:
                self.tls_port = _free_port(self.host)
            conf = self.root / "mosquitto.conf"
            conf.write_text(self._config())
            with (self.root / "stderr.log").open("wb") as err:  # a file: a pipe nobody reads could fill up
                command = [*_die_with_parent(), str(self.binary), "-c", str(conf)]
                self._proc = subprocess.Popen(command, cwd=self.root, stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if all(listening(self.host, p, 0.2) for p in (self.port, self.tls_port) if p):
                    return
                time.sleep(0.02)
            last = (self._stop_process() + self.log[-2000:]).strip()
            if "in use" not in last:
                break
        if "in use" in last:
            reason = "address already in use (is another broker running there?)"
        else:
            reason = f"mosquitto did not start: {last.splitlines()[-1] if last else 'no output'}"
        raise MqttBrokerError(f"mqtt {self.host}:{self.port}", reason)

    def stop(self) -> None:
        """Stop the broker cleanly (SIGTERM); persistent sessions survive if ``persistence`` is on."""
        self._stop_process()

    def kill(self) -> None:
        """Kill the broker (SIGKILL): what a crash or a power cut looks like to its clients."""
        if self.running:
            assert self._proc is not None
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=10)
        self._proc = None

    def restart(self) -> None:
        """Stop, then start on the same ports."""
        self.stop()
        self.start()

    def publish(self, messages: Iterable[tuple[str, bytes]], *, qos: int = 1, user: str | None = None,
                client_id: str = "test-publisher", timeout_s: float = 30.0) -> int:
        """Publish ``messages`` (topic, payload) on the plain listener and wait until the broker has
        them all (QoS 1: acknowledged). Blocking; returns how many. ``user`` logs in as one of ``users``."""
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        client.max_inflight_messages_set(1000)
        if user is not None:
            client.username_pw_set(user, self.users[user])
        client.connect(self.host, self.port)
        client.loop_start()
        try:
            infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
            deadline = time.monotonic() + timeout_s
            for info in infos:
                info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
                if not info.is_published():
                    raise TimeoutError(f"the broker did not take all {len(infos)} messages within {timeout_s:g} s")
            return len(infos)
        finally:
            client.disconnect()
            client.loop_stop()

    # -- pieces ----------------------------------------------------------------------------------

    def _config(self) -> str:
        assert self.root is not None
        user = pwd.getpwuid(os.getuid()).pw_name  # as root: do not drop privileges to 'mosquitto'
        lines = [
            f"user {user}",
            "per_listener_settings false",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.root}/",
            f"max_queued_messages {self.max_queued_messages}",
            f"log_dest file {self.root / 'mosquitto.log'}",
            "log_type error", "log_type warning", "log_type notice",
            "connection_messages true",
        ]
        if self.users:
            lines.append(f"password_file {self.root / 'passwords'}")
        if self.extra:
            lines.append(self.extra)
        lines.append(f"listener {self.port} {self.host}")
        if self.tls:
            lines += [
                f"listener {self.tls_port} {self.host}",
                f"cafile {self.certs['ca']}",
                f"certfile {self.certs['server_cert']}",
                f"keyfile {self.certs['server_key']}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        return "\n".join(lines) + "\n"

    def _write_passwords(self) -> None:
        assert self.root is not None
        path = self.root / "passwords"
        tool = shutil.which("mosquitto_passwd")
        if tool:
            path.touch(mode=0o600)
            for user, password in self.users.items():
                subprocess.run([tool, "-b", str(path), user, password], check=True, capture_output=True, timeout=30)
        else:
            path.write_text("".join(_sha512_entry(u, p) + "\n" for u, p in self.users.items()))
            path.chmod(0o600)

    def _stop_process(self) -> str:
        """Stop the process if there is one; returns what it wrote to stderr."""
        proc, self._proc = self._proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        path = self.root / "stderr.log" if self.root else None
        return path.read_text(errors="replace") if path and path.exists() else ""


# -- the simulation's MQTT devices ----------------------------------------------------------------

@dataclass
class _Corruption:
    """Corrupt payloads due over [start_s, end_s) of scenario time, ``per_s`` a second."""

    start_s: float
    end_s: float
    per_s: float
    kind: CorruptionKind | None  # None: the kinds in turn
    sent: int = 0

    @property
    def total(self) -> int:
        return max(1, math.ceil((self.end_s - self.start_s) * self.per_s - 1e-9))

    def due(self, t_s: float) -> int:
        """How many more are due by scenario time t (one at the start, then ``per_s`` a second)."""
        if t_s < self.start_s:
            return 0
        upto = min(self.total, math.floor((min(t_s, self.end_s) - self.start_s) * self.per_s + 1e-9) + 1)
        return max(0, upto - self.sent)


class MqttEndpoint:
    """One broker address (host:port) and the simulated devices publishing there.

    :meth:`start` starts a Mosquitto broker there when nothing listens yet (``own_broker``), then
    connects every device's publisher; :meth:`stop` disconnects them and stops the broker.
    """

    def __init__(self, host: str, port: int, devices: Sequence[DeviceInfo],
                 values_for: Callable[[DeviceInfo], Mapping[str, float]], *,
                 base_dir: str | Path | None = None) -> None:
        self.host, self.port = host, port
        self.devices = tuple(devices)
        self.base_dir = base_dir
        self.broker: MosquittoBroker | None = None
        self.own_broker = False
        self.publishers: dict[int, MqttPublisher] = {}  # by DeviceInfo.index
        for d in self.devices:
            dev = d.device
            assert isinstance(dev, MqttDevice)
            template = dev.template
            form = "batch" if "metric" not in template.fields or template.optional_metric else "single"
            self.publishers[d.index] = MqttPublisher(
                dev, substation=d.substation, values=lambda _t, d=d: _present(values_for(d)), form=form,
                client_id=f"sim-{d.substation}-{dev.id}")

    @property
    def name(self) -> str:
        return f"mqtt {self.host}:{self.port}"

    def describe(self) -> str:
        topics = ", ".join(p.topic() if p.form == "batch" else p.topic("{metric}") for p in self.publishers.values())
        subs = sorted({d.substation for d in self.devices})
        devices = ", ".join(d.id for d in self.devices)
        where = "" if self.own_broker else "; publishing to the broker already running there"
        return (f"{self.name} topic{'s' if len(self.devices) > 1 else ''} {topics} "
                f"devices {devices} ({', '.join(subs)}){where}")

    async def start(self) -> None:
        """Make sure a broker listens, then connect the publishers. Raises :class:`MqttBrokerError`."""
        if not await asyncio.to_thread(listening, self.host, self.port):
            self._check_servable()
            broker = MosquittoBroker(self.base_dir, host=self.host, port=self.port, users=self._users(),
                                     allow_anonymous=any(not d.device.username for d in self.devices))
            await asyncio.to_thread(broker.open)
            self.broker, self.own_broker = broker, True
            log.info("started mosquitto (%s) for %s", broker.binary, self.name)
        else:
            log.info("%s: a broker already listens there; publishing to it", self.name)
        connected: list[MqttPublisher] = []
        try:
            for d in self.devices:
                publisher = self.publishers[d.index]
                try:
                    await publisher.connect()
                except (OSError, ValueError) as exc:
                    what = "the broker" if self.own_broker else "what listens there"
                    raise MqttBrokerError(self.name, f"{d.id} cannot publish to {what}: {exc}") from exc
                connected.append(publisher)
        except BaseException:
            for p in connected:
                await p.close()
            await self._stop_broker()
            raise

    async def stop(self) -> None:
        for p in self.publishers.values():
            await p.close()
        await self._stop_broker()

    async def stop_broker(self) -> bool:
        """Stop the broker (a restart's first half); False if it is not ours to stop."""
        if self.broker is None:
            return False
        await asyncio.to_thread(self.broker.stop)
        return True

    async def start_broker(self) -> bool:
        """Start the broker again on the same port; False if it is not ours."""
        if self.broker is None:
            return False
        await asyncio.to_thread(self.broker.start)
        return True

    async def _stop_broker(self) -> None:
        broker, self.broker = self.broker, None
        self.own_broker = False
        if broker is not None:
            await asyncio.to_thread(broker.close)

    def _check_servable(self) -> None:
        tls = [d.id for d in self.devices if d.device.tls is not None]
        if tls:
            raise MqttBrokerError(self.name, f"{', '.join(tls)} expect{'s' if len(tls) == 1 else ''} TLS and nothing "
                                             "listens there; the simulator starts plain brokers only: run a TLS "
                                             "broker there, or leave [devices.tls] out for the simulation")

    def _users(self) -> dict[str, str]:
        users: dict[str, str] = {}
        for d in self.devices:
            dev = d.device
            if not dev.username:
                continue
            password = os.environ.get(dev.password_env)
            if password is None:
                raise MqttBrokerError(self.name, f"{dev.id} logs in as {dev.username!r}: set ${dev.password_env} "
                                                 "to its password, for the simulated broker and the edge alike")
            users[dev.username] = password
        return users


def _present(values: Mapping[str, float]) -> dict[str, float]:
    """The values that are there: a missing sample (NaN) is left out, so its reading is not sent."""
    return {m: v for m, v in values.items() if v is not None and math.isfinite(v)}


class MqttSimulator:
    """Every MQTT device of the simulated plant, publishing its points from ``values_for(device)``
    (metric -> value, NaN for a missing sample, which is then not sent) once per
    ``publish_interval_s`` of scenario time, driven by :meth:`tick`.

    An async context manager (or :meth:`start` / :meth:`stop`). With no MQTT device it does nothing.
    """

    def __init__(self, devices: Sequence[DeviceInfo], values_for: Callable[[DeviceInfo], Mapping[str, float]], *,
                 publish_interval_s: float = 1.0, base_dir: str | Path | None = None) -> None:
        if not publish_interval_s > 0:
            raise ValueError(f"publish_interval_s must be positive, not {publish_interval_s}")
        groups: dict[tuple[str, int], list[DeviceInfo]] = {}
        for d in devices:
            if isinstance(d.device, MqttDevice):
                groups.setdefault((d.device.host, d.device.port), []).append(d)
        self.servers = [MqttEndpoint(h, p, devs, values_for, base_dir=base_dir) for (h, p), devs in groups.items()]
        self.publish_interval_s = float(publish_interval_s)
        self.paused: set[int] = set()  # DeviceInfo.index of stopped devices
        self._corruptions: dict[tuple[int, object], _Corruption] = {}  # (device index, fault key)
        self._last_slot: dict[int, int] = {}

    @property
    def endpoints(self) -> list[str]:
        return [s.describe() for s in self.servers]

    def endpoint_of(self, device: DeviceInfo) -> MqttEndpoint:
        for s in self.servers:
            if device.index in s.publishers:
                return s
        raise KeyError(f"no MQTT device {device.id!r}")

    def publisher_of(self, device: DeviceInfo) -> MqttPublisher:
        return self.endpoint_of(device).publishers[device.index]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the brokers that are needed and connect every publisher (raises
        :class:`MqttBrokerError`, having stopped what it started)."""
        started: list[MqttEndpoint] = []
        try:
            for s in self.servers:
                await s.start()
                started.append(s)
        except BaseException:
            for s in started:
                await s.stop()
            raise

    async def stop(self) -> None:
        for s in self.servers:
            await s.stop()

    # -- publishing ------------------------------------------------------------------------------

    def tick(self, t_s: float) -> None:
        """Publish what is due at scenario time ``t_s``: each running device's values once per
        ``publish_interval_s`` (at most once a call), and the corrupt payloads of its faults."""
        slot = math.floor(t_s / self.publish_interval_s + 1e-9)
        for s in self.servers:
            for d in s.devices:
                index = d.index
                publisher = s.publishers[index]
                for (dev, _), c in self._corruptions.items():
                    if dev == index:
                        self._send_corrupt(publisher, c, c.due(t_s), paused=index in self.paused)
                if index in self.paused or self._last_slot.get(index, -1) >= slot:
                    continue
                self._last_slot[index] = slot
                publisher.publish_tick(t_s)

    def _send_corrupt(self, publisher: MqttPublisher, c: _Corruption, n: int, *, paused: bool) -> None:
        for _ in range(n):
            kind = c.kind or CORRUPTIONS[c.sent % len(CORRUPTIONS)]
            c.sent += 1
            if not paused:  # a stopped device sends nothing, bad or good
                publisher.inject(kind)

    # -- faults ----------------------------------------------------------------------------------

    def set_paused(self, device: DeviceInfo, paused: bool) -> None:
        """A stopped device publishes nothing until it is resumed."""
        self.endpoint_of(device)  # raises KeyError for a device that is not ours
        (self.paused.add if paused else self.paused.discard)(device.index)

    def start_corruption(self, device: DeviceInfo, key: object, start_s: float, end_s: float,
                         per_s: float = 1.0, kind: CorruptionKind | None = None) -> None:
        """Send ``per_s`` corrupt payloads a second (of ``kind``, or every kind in turn) over
        [start_s, end_s) of scenario time; ``key`` names this stream for :meth:`end_corruption`."""
        self.endpoint_of(device)
        if kind is not None and kind not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {kind!r} (known: {', '.join(CORRUPTIONS)})")
        self._corruptions[(device.index, key)] = _Corruption(start_s, end_s, per_s, kind)

    def end_corruption(self, device: DeviceInfo, key: object) -> None:
        """Send what was still due up to the stream's end, then stop it."""
        c = self._corruptions.pop((device.index, key), None)
        if c is not None:
            self._send_corrupt(self.publisher_of(device), c, c.due(c.end_s), paused=device.index in self.paused)
