"""OPC-UA device and point configuration (part of the firmware config)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from protocols.points import EnvName, Name, Nominal, Seconds, Unit, check_limits, check_unique_metrics


class OpcUaPoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One variable node. Give ``node_id`` (``ns=2;s=Feeder.F12.VoltageL1``) or ``browse_path``
    (``0:Objects/2:Feeder/2:VoltageL1``, resolved once per session)."""

    metric: Name
    node_id: str = ""
    browse_path: str = ""
    unit: Unit = ""
    scale: float = 1.0
    offset: float = 0.0
    nominal: Nominal | None = None
    limit_low: float | None = None
    limit_high: float | None = None
    deadband: Annotated[float, msgspec.Meta(ge=0.0)] = 0.0  # absolute, for subscriptions

    def __post_init__(self) -> None:
        if bool(self.node_id) == bool(self.browse_path):
            raise ValueError("give exactly one of node_id and browse_path")
        check_limits(self.limit_low, self.limit_high)


class OpcUaSecurity(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate: str = ""  # this client's certificate (PEM or DER), for Sign / SignAndEncrypt
    private_key: str = ""  # its private key (PEM)
    server_certificate: str = ""  # trust this server certificate (optional)

    def __post_init__(self) -> None:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None; Basic256Sha256 with Sign or SignAndEncrypt")
        if self.policy != "None" and not (self.certificate and self.private_key):
            raise ValueError(f"policy {self.policy} needs certificate and private_key")


class OpcUaDevice(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="protocol", tag="opcua"):
    """An OPC-UA server (or the part of one that is this device)."""

    id: Name
    url: Annotated[str, msgspec.Meta(pattern=r"^opc\.tcp://\S+$")]
    mode: Literal["subscribe", "poll"] = "subscribe"
    poll_interval_s: Seconds = 1.0  # mode poll
    publishing_interval_s: Seconds = 0.5  # mode subscribe
    timeout_s: Seconds = 2.0
    security: OpcUaSecurity = OpcUaSecurity()
    username: str = ""  # with password_env: username identity; with a certificate identity: leave empty
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
        if bool(self.identity_certificate) != bool(self.identity_private_key):
            raise ValueError("identity_certificate and identity_private_key go together")
        check_unique_metrics([p.metric for p in self.points])
