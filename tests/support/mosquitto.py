"""A throwaway Mosquitto broker for tests and benchmarks: ``mosquitto -c CONF`` in a temporary directory.

    with MosquittoBroker(tmp_dir, tls=True, users={"edge": "s3cret"}) as broker:
        broker.port, broker.tls_port     # 127.0.0.1, free ports
        broker.ca_file                   # the test CA that signed the broker's certificate
        broker.client_cert, broker.client_key
        broker.kill(); broker.start()    # a broker crash and its restart, on the same ports

The broker listens on 127.0.0.1 only: a plain listener, and with ``tls=True`` a TLS listener whose
certificates the fixture makes with ``cryptography`` (a CA, a server certificate for 127.0.0.1 and
localhost, a client certificate). ``users`` turns anonymous access off and writes a password file
(with ``mosquitto_passwd`` when installed, otherwise the same ``$6$`` hash Mosquitto reads).

When no ``mosquitto`` binary is installed, entering the context skips the calling test outside CI
and fails under CI (``CI`` set), where a skipped MQTT suite would hide a missing install step
(``scripts/system-deps.sh`` installs it).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

__all__ = ["MosquittoBroker", "MosquittoNotFound", "find_mosquitto", "make_certificates"]


class MosquittoNotFound(RuntimeError):
    """No mosquitto broker binary on this machine."""


def _under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def find_mosquitto() -> Path:
    """The broker binary: ``$SENTINEL_MOSQUITTO``, ``mosquitto`` on ``$PATH``, Debian's /usr/sbin/mosquitto."""
    candidates = [os.environ.get("SENTINEL_MOSQUITTO", ""), shutil.which("mosquitto") or "", "/usr/sbin/mosquitto",
                  "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return Path(c)
    raise MosquittoNotFound("no mosquitto broker found (looked at $SENTINEL_MOSQUITTO, $PATH, /usr/sbin); install "
                            "it: apt-get install mosquitto (scripts/system-deps.sh does)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    """A Mosquitto broker of its own in a temporary directory under ``base_dir``; stopped and removed on exit."""

    host = "127.0.0.1"

    def __init__(self, base_dir: str | Path | None = None, *, tls: bool = False, require_certificate: bool = False,
                 users: dict[str, str] | None = None, persistence: bool = False, max_queued_messages: int = 100_000,
                 extra: str = "") -> None:
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.tls = tls
        self.require_certificate = require_certificate
        self.users = dict(users or {})
        self.persistence = persistence
        self.max_queued_messages = max_queued_messages
        self.extra = extra
        self.port = 0
        self.tls_port = 0
        self.root: Path | None = None
        self.certs: dict[str, Path] = {}
        self.binary: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> MosquittoBroker:
        try:
            self.binary = find_mosquitto()
        except MosquittoNotFound as exc:
            if not _under_ci() and "pytest" in sys.modules:
                import pytest

                pytest.skip(f"Mosquitto not installed: {exc}")
            raise
        try:
            self.root = Path(tempfile.mkdtemp(prefix="sentinel-mqtt-", dir=self.base_dir))
            if self.tls:
                self.certs = make_certificates(self.root / "certs")
            if self.users:
                self._write_passwords()
            self.start()
        except BaseException:
            self._cleanup()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._cleanup()

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
        """Start the broker (again, on the same ports once they are chosen); returns once it accepts."""
        assert self.root is not None and self.binary is not None, "use `with MosquittoBroker(...)`"
        if self.running:
            return
        fixed = self.port != 0
        last = ""
        for _ in range(1 if fixed else 5):
            if not fixed:
                self.port = _free_port()
                self.tls_port = _free_port() if self.tls else 0
            conf = self.root / "mosquitto.conf"
            conf.write_text(self._config())
            with (self.root / "stderr.log").open("wb") as err:  # a file: a pipe nobody reads could fill up
                self._proc = subprocess.Popen([str(self.binary), "-c", str(conf)], cwd=self.root,
                                              stdout=subprocess.DEVNULL, stderr=err)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if self._proc.poll() is not None:
                    break
                if all(self._accepts(p) for p in (self.port, self.tls_port) if p):
                    return
                time.sleep(0.02)
            last = self._stop_process() or self.log[-2000:]
            if "in use" not in last:
                break
            time.sleep(0.2 if fixed else 0)
        raise RuntimeError(f"mosquitto did not start on 127.0.0.1:{self.port}: {last.strip()}")

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

    def _accepts(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=0.2):
                return True
        except OSError:
            return False

    def _config(self) -> str:
        assert self.root is not None
        user = pwd.getpwuid(os.getuid()).pw_name  # as root: do not drop privileges to 'mosquitto'
        lines = [
            f"user {user}",
            "per_listener_settings false",
            f"allow_anonymous {'false' if self.users else 'true'}",
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

    def _cleanup(self) -> None:
        self._stop_process()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
