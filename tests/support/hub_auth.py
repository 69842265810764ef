"""Credentials for tests that talk to a hub: the bootstrap admin key, edge credentials, users.

The hub refuses anonymous callers; tests present credentials the way real clients do
(``Authorization: Bearer ...``), made through the hub's own API or its credential store."""

from __future__ import annotations

from typing import Any

from hub.auth.store import AuthStore
from hub.storage.base import Storage

ADMIN_KEY = "test-admin-key-0123456789abcdef"  # long enough for SENTINEL_ADMIN_KEY's minimum
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def as_admin(client: Any) -> Any:
    """A client (TestClient or httpx) that sends the bootstrap admin key by default."""
    client.headers.update(ADMIN)
    return client


def edge_headers(client: Any, edge_id: str, substation: str = "") -> dict[str, str]:
    """Register ``edge_id`` through the API (as admin) and return its credential's headers; cached
    per client, so calling it again is cheap."""
    cache: dict[tuple[str, str], dict[str, str]] = client.__dict__.setdefault("_edge_creds", {})
    if (edge_id, substation) not in cache:
        r = client.post("/edges/credentials", json={"edge_id": edge_id, "substation": substation}, headers=ADMIN)
        assert r.status_code == 201, r.text
        cache[(edge_id, substation)] = bearer(r.json()["secret"])
    return cache[(edge_id, substation)]


def role_headers(client: Any, role: str) -> dict[str, str]:
    """An API key with ``role`` (viewer, operator, admin), made through the API; cached per client."""
    cache: dict[str, dict[str, str]] = client.__dict__.setdefault("_role_keys", {})
    if role not in cache:
        r = client.post("/auth/keys", json={"name": f"test-{role}", "role": role}, headers=ADMIN)
        assert r.status_code == 201, r.text
        cache[role] = bearer(r.json()["secret"])
    return cache[role]


def provision_edge(storage: Storage, edge_id: str, substation: str = "") -> str:
    """Register an edge straight in a hub's storage (before its server starts); returns the secret."""
    return AuthStore(storage).add_edge(edge_id, substation, created_by="test").secret
