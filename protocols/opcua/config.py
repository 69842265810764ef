"""OPC-UA device and point configuration (part of the firmware config).

Checked once, before any I/O: node ids and browse paths are parsed here (so a typo is a config
error naming the point, not a Bad quality at run time), points may not name one node twice,
and the identity and security settings must fit together. No asyncua import: the hub and the
CLI load configs without the driver's dependencies.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from protocols.points import (
    EnvName,
    Name,
    Nominal,
    Seconds,
    Unit,
    check_finite,
    check_limits,
    check_unique_metrics,
)

__all__ = ["OpcUaDevice", "OpcUaPoint", "OpcUaSecurity", "parse_browse_path"]

# OPC 10000-6 5.3.1.10 string form of a NodeId: [ns=<index>;|nsu=<uri>;]<i|s|g|b>=<identifier>
_NODE_ID = re.compile(
    r"^(?:(?:ns=\d{1,5}|nsu=[^;]+);)?"
    r"(?:i=\d{1,10}|s=.+|g=[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    r"|b=[A-Za-z0-9+/]+={0,2})$",
    re.DOTALL,
)
_PATH_ELEMENT = re.compile(r"^(\d{1,5}):(.+)$")


def parse_browse_path(path: str) -> list[tuple[int, str]]:
    """``0:Objects/2:Feeder/2:VoltageL1`` -> ``[(0, "Objects"), (2, "Feeder"), (2, "VoltageL1")]``.

    A browse path starts at the Root folder and follows hierarchical references; each element is
    ``<namespace index>:<browse name>`` (names may contain dots, not slashes). Raises ValueError.
    """
    elements: list[tuple[int, str]] = []
    parts = path[1:].split("/") if path.startswith("/") else path.split("/")
    for i, part in enumerate(parts):
        m = _PATH_ELEMENT.match(part)
        if m is None:
            raise ValueError(
                f"browse_path {path!r}: element {i} ({part!r}) is not <namespace index>:<browse name>, "
                "e.g. 0:Objects/2:Feeder/2:VoltageL1"
            )
        elements.append((int(m[1]), m[2]))
    return elements


class OpcUaPoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One variable node. Give ``node_id`` (``ns=2;s=Feeder.F12.VoltageL1``, or with the namespace
    URI: ``nsu=urn:vendor:rtu;s=...``) or ``browse_path`` (``0:Objects/2:Feeder/2:VoltageL1``,
    from the Root folder, resolved once per session).

    The value read is ``raw * scale + offset``; ``deadband`` (mode subscribe) is absolute and in the
    point's unit, after scaling: the server is asked for ``deadband / |scale|`` in its own unit.
    """

    metric: Name
    node_id: str = ""
    browse_path: str = ""
    unit: Unit = ""
    scale: float = 1.0
    offset: float = 0.0
    nominal: Nominal | None = None
    limit_low: float | None = None
    limit_high: float | None = None
    deadband: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0  # absolute, in the point's unit (subscriptions)

    def __post_init__(self) -> None:
        if bool(self.node_id) == bool(self.browse_path):
            raise ValueError("give exactly one of node_id and browse_path")
        if self.node_id and not _NODE_ID.match(self.node_id):
            raise ValueError(
                f"node_id {self.node_id!r} is not an OPC-UA node id: expected [ns=<index>;|nsu=<uri>;] then "
                "i=<number>, s=<string>, g=<guid> or b=<base64>, e.g. ns=2;s=Feeder.F12.VoltageL1"
            )
        if self.browse_path:
            parse_browse_path(self.browse_path)
        check_finite(self, "scale", "offset", "nominal", "limit_low", "limit_high", "deadband")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        check_limits(self.limit_low, self.limit_high)

    @property
    def address(self) -> str:
        """The node as configured (for messages)."""
        return self.node_id or self.browse_path


class OpcUaSecurity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The secure channel. Certificates and keys are file paths (PEM or DER); the application URI
    the client announces is taken from its certificate's subjectAltName URI."""

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str = ""  # this client's application instance certificate, for Sign / SignAndEncrypt
    private_key: str = ""  # its private key (PEM or DER, unencrypted)
    server_certificate: str = ""  # pin the server's certificate; empty: take the one its endpoint offers

    def __post_init__(self) -> None:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None; Basic256Sha256 with Sign or SignAndEncrypt")
        if self.policy != "None" and not (self.certificate and self.private_key):
            raise ValueError(f"policy {self.policy} needs certificate and private_key")
        if self.policy == "None" and (self.certificate or self.private_key or self.server_certificate):
            raise ValueError("certificate, private_key and server_certificate are for policy Basic256Sha256")


class OpcUaDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="protocol", tag="opcua"):
    """An OPC-UA server (or the part of one that is this device).

    Identity: anonymous (default), ``username`` + ``password_env`` (the environment variable holding
    the password), or ``identity_certificate`` + ``identity_private_key`` (an X.509 user).
    """

    id: Name
    url: Annotated[str, msgspec.Meta(pattern=r"^opc\.tcp://[^\s/:]+(:\d{1,5})?(/\S*)?$")]
    mode: Literal["subscribe", "poll"] = "subscribe"
    poll_interval_s: Seconds = 2.0  # mode poll
    publishing_interval_s: Seconds = 0.5  # mode subscribe
    timeout_s: Seconds = 1.0  # each request; connecting may take a few requests
    security: OpcUaSecurity = OpcUaSecurity()
    username: str = ""  # with password_env: username identity
    password_env: EnvName = ""  # environment variable holding the password
    identity_certificate: str = ""  # X.509 user identity (PEM/DER) ...
    identity_private_key: str = ""  # ... and its key
    description: str = ""
    points: Annotated[list[OpcUaPoint], msgspec.Meta(min_length=1)]

    def __post_init__(self) -> None:
        if self.mode == "poll" and self.timeout_s >= self.poll_interval_s:
            raise ValueError(
                f"timeout_s ({self.timeout_s}) must be shorter than poll_interval_s ({self.poll_interval_s})"
            )
        if self.username and not self.password_env:
            raise ValueError("username needs password_env (the environment variable holding the password)")
        if self.password_env and not self.username:
            raise ValueError("password_env needs username")
        if bool(self.identity_certificate) != bool(self.identity_private_key):
            raise ValueError("identity_certificate and identity_private_key go together")
        if self.username and self.identity_certificate:
            raise ValueError("give one user identity: username or identity_certificate, not both")
        check_unique_metrics([p.metric for p in self.points])
        nodes: dict[str, int] = {}
        for i, p in enumerate(self.points):
            if p.address in nodes:
                raise ValueError(f"points[{i}] ({p.metric}) reads the same node as points[{nodes[p.address]}]: "
                                 f"{p.address}")
            nodes[p.address] = i
            if self.mode == "poll" and p.deadband:
                raise ValueError(f"points[{i}].deadband is for mode subscribe (the server applies it); "
                                 "this device polls")
