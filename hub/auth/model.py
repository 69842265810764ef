"""Who may call the hub: roles, principals and the policies routes declare.

Roles nest for people and their keys: a *viewer* reads; an *operator* also acknowledges and
resolves incidents and posts telemetry and OT logs; an *admin* also manages edges, users, keys,
models and retraining, and runs the agents as of a past time. An *edge* is a machine, not a rung
of that ladder: it may sync its own batches and pull models, nothing else.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["ADMIN", "EDGE", "MODEL_READ", "OPERATOR", "PUBLIC", "VIEWER", "Policy", "Principal", "Role"]


class Role(enum.StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"
    EDGE = "edge"


PERSON_ROLES = (Role.VIEWER, Role.OPERATOR, Role.ADMIN)  # in rising order


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``name`` is what the audit log and incident history record:
    ``user:alice``, ``key:grafana`` or ``edge:NRB-EDGE-01``."""

    kind: str  # "user" (logged in), "key" (an API key), "edge"
    name: str  # the user's or key's name, or the edge id
    role: Role
    credential_id: str
    substation: str = ""  # edges: the substation they are bound to ("" = any)

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"

    @property
    def edge_id(self) -> str | None:
        return self.name if self.role is Role.EDGE else None


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may call a route: ``roles`` (None: anyone, no credential needed). ``rate``: the route is
    ingest, rate-limited per principal."""

    name: str
    roles: frozenset[Role] | None
    rate: bool = False

    def allows(self, role: Role) -> bool:
        return self.roles is None or role in self.roles

    def with_rate_limit(self) -> Policy:
        return Policy(self.name, self.roles, rate=True)


PUBLIC = Policy("public", None)
VIEWER = Policy("viewer", frozenset(PERSON_ROLES))
OPERATOR = Policy("operator", frozenset({Role.OPERATOR, Role.ADMIN}))
ADMIN = Policy("admin", frozenset({Role.ADMIN}))
EDGE = Policy("edge", frozenset({Role.EDGE}), rate=True)
MODEL_READ = Policy("viewer or edge", frozenset({*PERSON_ROLES, Role.EDGE}))  # edges pull models
