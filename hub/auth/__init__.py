"""Who may call the hub, and what they changed: roles and policies, credentials, guards, audit."""

from __future__ import annotations

from hub.auth.model import ADMIN, EDGE, MODEL_READ, OPERATOR, PUBLIC, VIEWER, Policy, Principal, Role
from hub.auth.store import AuthError, AuthStore, IssuedCredential

__all__ = ["ADMIN", "EDGE", "MODEL_READ", "OPERATOR", "PUBLIC", "VIEWER", "AuthError", "AuthStore",
           "IssuedCredential", "Policy", "Principal", "Role"]
