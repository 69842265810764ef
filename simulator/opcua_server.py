"""OPC-UA servers (asyncua) for the simulated substations' OPC-UA devices, with faults on demand.

One :class:`OpcUaEndpoint` per (host, port) serves every OPC-UA device configured there:

- the address space follows the configs: a point with a ``node_id`` is a Double variable with that
  node id, in an object named after its device under the Objects folder; a point with a
  ``browse_path`` is created along that path (missing objects are made on the way);
  ``nsu=`` namespace URIs and ``ns=`` indexes beyond the server's own are registered as needed;
- security: the policies and modes the devices ask for (None, Basic256Sha256 Sign and
  SignAndEncrypt), with a self-signed server certificate made at start-up
  (:func:`make_certificate`, kept across restarts); optionally only listed client certificates
  are trusted;
- identities: anonymous, username/password and X.509 user certificates, as the devices use them;
- faults: :meth:`~OpcUaEndpoint.set_status` (serve a Bad or Uncertain status code),
  :meth:`~OpcUaEndpoint.delete_node` / :meth:`~OpcUaEndpoint.restore_node`, :meth:`~OpcUaEndpoint.stop`
  / :meth:`~OpcUaEndpoint.start` / :meth:`~OpcUaEndpoint.restart`.

Values: :meth:`~OpcUaEndpoint.write` sets a device's values (metric -> value; NaN serves
``BadSensorFailure``, the OPC-UA counterpart of the Modbus "not available" marker). Until a
point's first value, it serves ``BadWaitingForInitialData``. asyncua publishes data changes only
when the writer yields to the event loop, so write, then await.

:class:`OpcUaSimulator` is the hook for the simulation runner: every OPC-UA device of a set of
firmware configs, served at the URLs they name, refreshed every tick from ``values_for(device_id)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hmac
import ipaddress
import logging
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlparse

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.config import FirmwareConfig
from protocols.opcua.config import OpcUaDevice, OpcUaPoint, parse_browse_path
from simulator.modbus_server import EndpointError

__all__ = [
    "CertificatePair",
    "OpcUaEndpoint",
    "OpcUaEndpointError",
    "OpcUaSimulator",
    "make_certificate",
]

log = logging.getLogger(__name__)

SIM_NAMESPACE = "urn:smartgrid-sentinel:simulator"
SERVER_APPLICATION_URI = "urn:smartgrid-sentinel:simulator:opcua"
MISSING_STATUS = ua.StatusCodes.BadSensorFailure  # served for a NaN (missing sample)
_POLICY_TYPES = {
    ("None", "None"): ua.SecurityPolicyType.NoSecurity,
    ("Basic256Sha256", "Sign"): ua.SecurityPolicyType.Basic256Sha256_Sign,
    ("Basic256Sha256", "SignAndEncrypt"): ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
}


class OpcUaEndpointError(EndpointError):
    """A server could not listen on its endpoint (the simulator's EndpointError, so the runner's
    handling of Modbus endpoints covers OPC-UA ones too)."""


# -- certificates ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CertificatePair:
    certificate: Path  # DER
    private_key: Path  # PEM (PKCS#8, unencrypted)
    application_uri: str

    def der(self) -> bytes:
        return self.certificate.read_bytes()


def make_certificate(
    directory: str | Path,
    name: str,
    application_uri: str,
    *,
    hostnames: Iterable[str] = ("localhost", "127.0.0.1"),
    days: int = 30,
    key_size: int = 2048,
) -> CertificatePair:
    """A self-signed OPC-UA application instance (or user) certificate and its key, written to
    ``directory/<name>.der`` and ``directory/<name>.pem``.

    The subjectAltName carries ``application_uri`` (OPC 10000-6 6.2.2: peers check it against the
    ApplicationUri they are told) and the host names / IP addresses; usable for client and server
    authentication, signing and key encipherment.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SmartGrid Sentinel"),
    ])
    alt: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    for host in hostnames:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True, data_encipherment=True,
                key_agreement=False, key_cert_sign=True, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pair = CertificatePair(directory / f"{name}.der", directory / f"{name}.pem", application_uri)
    pair.certificate.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    pair.private_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    pair.private_key.chmod(0o600)
    return pair


def _der_of(path: str | Path) -> bytes:
    """A certificate file (PEM or DER) as DER bytes."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    return data


# -- users ----------------------------------------------------------------------------------------


class _Users(UserManager):
    """Who may open a session: anonymous (if allowed), username/password, X.509 user certificates."""

    def __init__(self, passwords: Mapping[str, str], certificates: Iterable[bytes], anonymous: bool) -> None:
        self.passwords = dict(passwords)
        self.certificates = set(certificates)
        self.anonymous = anonymous

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is not None:
            expected = self.passwords.get(username)
            if expected is not None and password is not None and hmac.compare_digest(expected, password):
                return User(role=UserRole.User, name=username)
            log.info("opcua simulator: rejected user %r (wrong password or unknown user)", username)
            return None
        # asyncua passes the X.509 user token's certificate, or else the secure channel's client
        # certificate (empty bytes with security None): either way a listed one is that user, and
        # anything else is an anonymous session.
        if certificate:
            der = certificate if isinstance(certificate, bytes) else certificate.public_bytes(serialization.Encoding.DER)
            if der in self.certificates:
                return User(role=UserRole.User, name="certificate")
        if self.anonymous:
            return User(role=UserRole.User, name="anonymous")
        log.info("opcua simulator: rejected a session: no valid user identity")
        return None


# -- one server -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Served:
    """One served point."""

    device_id: str
    point: OpcUaPoint
    nodeid: ua.NodeId | None = None  # known once the address space is built
    parent: ua.NodeId | None = None
    browse_name: ua.QualifiedName | None = None
    value: float = 0.0
    has_value: bool = False
    forced: int | None = None  # a status code forced by set_status
    deleted: bool = False


@dataclass(slots=True)
class _Identity:
    passwords: dict[str, str] = field(default_factory=dict)
    certificates: list[bytes] = field(default_factory=list)
    anonymous: bool = False


class OpcUaEndpoint:
    """An asyncua server at one (host, port) for the OPC-UA devices configured there.

    ``security``: (policy, mode) pairs to offer; default: what the devices use. ``users``: username
    -> password; default: each device's ``username`` with the password from its ``password_env``
    (when set in this process's environment). ``trusted_clients``: client application
    certificates (paths) to accept; None accepts any (the default, as asyncua's); default from the
    devices: their ``security.certificate`` when every secured device names one.
    """

    def __init__(
        self,
        url: str,
        devices: Sequence[OpcUaDevice],
        *,
        security: Iterable[tuple[str, str]] | None = None,
        users: Mapping[str, str] | None = None,
        user_certificates: Iterable[str | Path] | None = None,
        anonymous: bool | None = None,
        trusted_clients: Iterable[str | Path] | None = None,
        certificate: CertificatePair | None = None,
        cert_dir: str | Path | None = None,
    ) -> None:
        parsed = urlparse(url)
        if parsed.scheme != "opc.tcp" or not parsed.hostname or not parsed.port:
            raise ValueError(f"not an opc.tcp://host:port URL: {url!r}")
        self.url = url
        self.host, self.port = parsed.hostname, parsed.port
        self.devices = tuple(devices)
        self.security = sorted(set(security) if security is not None else
                               {(d.security.policy, d.security.mode) for d in self.devices})
        for pm in self.security:
            if pm not in _POLICY_TYPES:
                raise ValueError(f"unsupported security policy/mode {pm}")
        ident = _Identity()
        if users is None:
            import os

            for d in self.devices:
                if d.username and os.environ.get(d.password_env) is not None:
                    ident.passwords[d.username] = os.environ[d.password_env]
        else:
            ident.passwords.update(users)
        paths = list(user_certificates) if user_certificates is not None else [
            d.identity_certificate for d in self.devices if d.identity_certificate]
        ident.certificates = [_der_of(p) for p in paths]
        ident.anonymous = anonymous if anonymous is not None else any(
            not d.username and not d.identity_certificate for d in self.devices)
        self._identity = ident
        if trusted_clients is None and self.devices and all(
                d.security.certificate for d in self.devices if d.security.policy != "None") and any(
                d.security.policy != "None" for d in self.devices):
            trusted_clients = [d.security.certificate for d in self.devices if d.security.certificate]
        self._trusted = None if trusted_clients is None else {_der_of(p) for p in trusted_clients}
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if certificate is None and any(p != "None" for p, _ in self.security):
            if cert_dir is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="sentinel-opcua-")
                cert_dir = self._tmp.name
            certificate = make_certificate(cert_dir, f"simulator-{self.port}", SERVER_APPLICATION_URI,
                                           hostnames=("localhost", self.host))
        self.certificate = certificate
        self._points: list[_Served] = [_Served(d.id, p) for d in self.devices for p in d.points]
        self._by_key = {(s.device_id, s.point.metric): s for s in self._points}
        self._built: Server | None = None  # built once (asyncua takes ~2 s), started and stopped at will
        self._server: Server | None = None  # while listening
        self._lock = asyncio.Lock()

    @property
    def endpoint(self) -> str:
        return f"opcua {self.url}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def describe(self) -> str:
        """One line: ``opcua opc.tcp://127.0.0.1:4840 (None; Basic256Sha256/Sign) devices RTU-7, TR-04``."""
        sec = "; ".join(p if p == "None" else f"{p}/{m}" for p, m in self.security)
        ids = ", ".join(d.id for d in self.devices)
        return f"{self.endpoint} ({sec}) devices {ids}"

    def nodeid(self, device_id: str, metric: str) -> ua.NodeId:
        """The node serving one point (after start)."""
        s = self._served(device_id, metric)
        if s.nodeid is None:
            raise OpcUaEndpointError(self.url, "not started")
        return s.nodeid

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def start(self) -> None:
        """Listen (building the server and its address space the first time). A restart keeps the
        address space, as a device keeps its configuration; sessions and subscriptions are gone."""
        async with self._lock:
            if self._server is not None:
                return
            if self._built is None:
                self._built = await self._build()
            server = self._built
            try:
                await server.start()
            except OSError as exc:
                with contextlib.suppress(Exception):
                    await server.stop()
                reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
                raise OpcUaEndpointError(self.url, reason) from exc
            self._server = server
            for s in self._points:
                if not s.deleted:
                    await self._publish(s)
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop listening; sessions and subscriptions are gone (as at a real server's restart)."""
        async with self._lock:
            server, self._server = self._server, None
            if server is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):  # not wait_for: on 3.11 it can swallow a cancellation
                        await server.stop()

    async def restart(self, downtime_s: float = 0.0) -> None:
        await self.stop()
        if downtime_s > 0:
            await asyncio.sleep(downtime_s)
        await self.start()

    async def _build(self) -> Server:
        server = Server(user_manager=_Users(self._identity.passwords, self._identity.certificates,
                                            self._identity.anonymous))
        await server.init()
        server.disable_clock()  # its 1 s clock task would make every stop() take a second
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}/")
        server.set_server_name("SmartGrid Sentinel simulator")
        await server.set_application_uri(SERVER_APPLICATION_URI)
        server.set_security_policy([_POLICY_TYPES[pm] for pm in self.security])
        tokens: list[type] = []
        if self._identity.anonymous:
            tokens.append(ua.AnonymousIdentityToken)
        if self._identity.passwords or any(d.username for d in self.devices):
            tokens.append(ua.UserNameIdentityToken)
        if self._identity.certificates:
            tokens.append(ua.X509IdentityToken)
        server.set_identity_tokens(tokens or [ua.AnonymousIdentityToken])
        if self.certificate is not None:
            await server.load_certificate(str(self.certificate.certificate))
            await server.load_private_key(str(self.certificate.private_key))
        if self._trusted is not None:
            trusted = self._trusted

            async def validate(cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
                if cert.public_bytes(serialization.Encoding.DER) not in trusted:
                    log.info("opcua simulator: rejected client certificate of %s", app.ApplicationUri)
                    raise ua.uaerrors.BadCertificateUntrusted()

            server.set_certificate_validator(validate)
        await server.register_namespace(SIM_NAMESPACE)  # ns=2
        for s in self._points:
            await self._add_node(server, s)
        return server

    # -- address space ------------------------------------------------------------------------

    async def _namespace(self, server: Server, index: int | None = None, uri: str | None = None) -> int:
        if uri is not None:
            array = await server.get_namespace_array()
            return array.index(uri) if uri in array else await server.register_namespace(uri)
        assert index is not None
        while len(await server.get_namespace_array()) <= index:
            n = len(await server.get_namespace_array())
            await server.register_namespace(f"{SIM_NAMESPACE}:ns{n}")
        return index

    async def _device_object(self, server: Server, device_id: str) -> Node:
        objects = server.nodes.objects
        name = ua.QualifiedName(device_id, 2)
        for child in await objects.get_children():
            if (await child.read_browse_name()) == name:
                return child
        return await objects.add_object(ua.NodeId(f"Devices.{device_id}", 2), name)

    async def _add_node(self, server: Server, s: _Served) -> None:
        p = s.point
        if p.node_id:
            nodeid = ua.NodeId.from_string(p.node_id)
            uri = getattr(nodeid, "NamespaceUri", None)
            ns = await self._namespace(server, uri=uri) if uri else await self._namespace(server, index=nodeid.NamespaceIndex)
            nodeid = ua.NodeId(nodeid.Identifier, ns, nodeid.NodeIdType)
            parent = await self._device_object(server, s.device_id)
            s.nodeid, s.parent, s.browse_name = nodeid, parent.nodeid, ua.QualifiedName(p.metric, ns)
        else:
            elements = parse_browse_path(p.browse_path)
            node = server.nodes.root
            for ns, name in elements[:-1]:
                await self._namespace(server, index=ns)
                found = None
                for child in await node.get_children(refs=ua.ObjectIds.HierarchicalReferences):
                    if (await child.read_browse_name()) == ua.QualifiedName(name, ns):
                        found = child
                        break
                node = found if found is not None else await node.add_folder(
                    ua.NodeId(f"{s.device_id}.{name}", ns), ua.QualifiedName(name, ns))
            ns, name = elements[-1]
            await self._namespace(server, index=ns)
            s.nodeid = ua.NodeId(f"{s.device_id}." + ".".join(n for _, n in elements[1:]), ns)
            s.parent, s.browse_name = node.nodeid, ua.QualifiedName(name, ns)
        if not s.deleted:
            await self._create_variable(server, s)

    async def _create_variable(self, server: Server, s: _Served) -> None:
        assert s.parent is not None and s.nodeid is not None and s.browse_name is not None
        parent = server.get_node(s.parent)
        await parent.add_variable(s.nodeid, s.browse_name, ua.Variant(0.0, ua.VariantType.Double))

    def _served(self, device_id: str, metric: str) -> _Served:
        s = self._by_key.get((device_id, metric))
        if s is None:
            raise KeyError(f"{self.url} serves no point {metric!r} of device {device_id!r}")
        return s

    # -- values and faults ----------------------------------------------------------------------

    async def _publish(self, s: _Served) -> None:
        server = self._built  # stopped or not: a restarted server serves what was written meanwhile
        if server is None or s.deleted or s.nodeid is None:
            return
        if s.forced is not None:
            status = s.forced
        elif not s.has_value:
            status = ua.StatusCodes.BadWaitingForInitialData
        elif math.isnan(s.value):
            status = MISSING_STATUS
        else:
            status = ua.StatusCodes.Good
        # A Bad value keeps a number: asyncua's deadband filter subtracts old from new values.
        value = s.value if s.has_value and math.isfinite(s.value) else 0.0
        now = dt.datetime.now(dt.UTC)
        dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double), StatusCode=ua.StatusCode(status),
                          SourceTimestamp=now, ServerTimestamp=now)
        await server.write_attribute_value(s.nodeid, dv)

    async def write(self, device_id: str, values: Mapping[str, float]) -> None:
        """Serve new values of one device's points (metric -> value; others keep theirs)."""
        for metric, value in values.items():
            s = self._by_key.get((device_id, metric))
            if s is None:
                continue
            value = float(value)
            if s.has_value and (value == s.value or (math.isnan(value) and math.isnan(s.value))):
                continue
            s.value, s.has_value = value, True
            await self._publish(s)

    async def set_status(self, device_id: str, metric: str, status: int | str | None) -> None:
        """Serve ``status`` (a code or a name such as ``"BadSensorFailure"``) for a point, keeping its
        value; None goes back to serving its values as Good."""
        s = self._served(device_id, metric)
        s.forced = getattr(ua.StatusCodes, status) if isinstance(status, str) else status
        await self._publish(s)

    async def delete_node(self, device_id: str, metric: str) -> None:
        """Delete a point's node from the address space (monitored items on it go Bad)."""
        s = self._served(device_id, metric)
        if self._built is not None and s.nodeid is not None and not s.deleted:
            # Tell monitored items first, as a server should (asyncua's delete_nodes does not: it
            # drops the data-change callbacks without calling them).
            s.forced, forced = ua.StatusCodes.BadNodeIdUnknown, s.forced
            await self._publish(s)
            s.forced = forced
            await asyncio.sleep(0)
            await self._built.delete_nodes([self._built.get_node(s.nodeid)])
        s.deleted = True

    async def restore_node(self, device_id: str, metric: str) -> None:
        """Put a deleted node back, with the same node id and its last value."""
        s = self._served(device_id, metric)
        if not s.deleted:
            return
        s.deleted = False
        if self._built is not None:
            await self._create_variable(self._built, s)
            await self._publish(s)


# -- every OPC-UA device of a set of configs: the runner's hook ----------------------------------


class OpcUaSimulator:
    """Serve every OPC-UA device of ``configs`` at the URL it names (one server per host:port) and
    refresh their values every ``tick_s`` from ``values_for(device_id) -> {metric: value}``.

    An async context manager (or :meth:`start` / :meth:`stop`); :attr:`endpoints` describes what is
    served. With no OPC-UA device in the configs it serves nothing and costs nothing.
    """

    def __init__(
        self,
        configs: Sequence[FirmwareConfig],
        values_for: Callable[[str], Mapping[str, float]],
        *,
        tick_s: float = 0.1,
        cert_dir: str | Path | None = None,
    ) -> None:
        groups: dict[tuple[str, int], list[OpcUaDevice]] = {}
        urls: dict[tuple[str, int], str] = {}
        for config in configs:
            for d in config.devices:
                if isinstance(d, OpcUaDevice):
                    u = urlparse(d.url)
                    key = (u.hostname or "", u.port or 4840)
                    groups.setdefault(key, []).append(d)
                    urls.setdefault(key, d.url if u.port else f"opc.tcp://{key[0]}:4840{u.path}")
        self.servers = [OpcUaEndpoint(urls[k], devs, cert_dir=cert_dir) for k, devs in groups.items()]
        self.values_for = values_for
        self.tick_s = tick_s
        self._task: asyncio.Task[None] | None = None

    @property
    def endpoints(self) -> list[str]:
        return [s.describe() for s in self.servers]

    def endpoint_of(self, device_id: str) -> OpcUaEndpoint:
        for s in self.servers:
            if any(d.id == device_id for d in s.devices):
                return s
        raise KeyError(f"no OPC-UA device {device_id!r}")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start every server (raises :class:`OpcUaEndpointError`, having stopped the others), then tick."""
        started: list[OpcUaEndpoint] = []
        try:
            for s in self.servers:
                await s.start()
                started.append(s)
        except BaseException:
            for s in started:
                await s.stop()
            raise
        if self.servers:
            await self.tick()
            self._task = asyncio.create_task(self._run(), name="simulator.opcua")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for s in self.servers:
            await s.stop()

    async def tick(self) -> None:
        """Serve the current values once."""
        for s in self.servers:
            for d in s.devices:
                await s.write(d.id, self.values_for(d.id))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except Exception:
                log.debug("opcua simulator tick failed", exc_info=True)
