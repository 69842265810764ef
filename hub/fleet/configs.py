"""Remote config: an operator gives an edge a new firmware config at the hub; the edge fetches it,
checks it, tries it against its devices, applies it or rolls back, and says which and why.

- ``PUT /edges/{edge_id}/config`` (admin): the TOML, validated as the edge reads it (its identity
  must be this edge), signed with the hub's signing key (``SENTINEL_MODEL_SIGNING_KEY``, the one
  models are signed with: edges already trust its public key), stored as the edge's next version.
- ``GET /edges/{edge_id}/config`` (viewer): every version, newest first, with what the edge made of
  it: ``pending``, ``applied``, ``rolled_back`` or ``refused``, and why.
- ``GET /edge/config`` (the edge itself): its newest version and signature (404: none yet).
- ``POST /edge/config/status`` (the edge itself): what it made of a version.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from litestar import Request, get, post, put
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, JSONBody

from hub.auth import ADMIN, EDGE, VIEWER
from hub.auth.audit import record
from hub.auth.guards import allow, principal
from hub.openapi import error
from hub.storage import Storage

__all__ = ["ConfigStore", "ROUTES"]

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS edge_configs (
        edge_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        body TEXT NOT NULL,               -- the firmware config, TOML
        signature TEXT NOT NULL,          -- hex Ed25519 signature of the body's UTF-8 bytes
        created_at DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL,
        status TEXT NOT NULL,             -- pending | applied | rolled_back | refused
        reason TEXT NOT NULL DEFAULT '',
        reported_at DOUBLE PRECISION,
        PRIMARY KEY (edge_id, version)
    )""",
)
_LOCK = 0x5E47_0006  # two hub processes creating the table at once
MAX_CONFIG_BYTES = 512 * 1024

Status = Literal["pending", "applied", "rolled_back", "refused"]


class ConfigVersion(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    status: str
    reason: str
    created_at: datetime
    created_by: str
    reported_at: datetime | None


class ConfigHistory(msgspec.Struct, frozen=True, kw_only=True):
    edge_id: str
    versions: list[ConfigVersion]  # newest first


class ConfigPut(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    toml: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CONFIG_BYTES)]


class ConfigForEdge(msgspec.Struct, frozen=True):
    version: int
    toml: str
    signature: str


class ConfigReport(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: Annotated[int, msgspec.Meta(ge=1)]
    status: Literal["applied", "rolled_back", "refused"]
    reason: Annotated[str, msgspec.Meta(max_length=2000)] = ""


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


class ConfigStore:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        with storage.transaction() as tx:
            tx.lock(_LOCK)
            for ddl in SCHEMA:
                tx.execute(ddl)

    def put(self, edge_id: str, body: str, signature: str, created_by: str) -> int:
        with self.storage.transaction() as tx:
            tx.lock(_LOCK)
            (latest,) = tx.execute("SELECT coalesce(max(version), 0) FROM edge_configs WHERE edge_id = ?",
                                   (edge_id,)).fetchone()
            version = int(latest) + 1
            tx.execute("INSERT INTO edge_configs (edge_id, version, body, signature, created_at, created_by, status)"
                       " VALUES (?,?,?,?,?,?,'pending')", (edge_id, version, body, signature, time.time(), created_by))
        return version

    def history(self, edge_id: str) -> list[ConfigVersion]:
        with self.storage.transaction() as tx:
            rows = tx.execute("SELECT version, status, reason, created_at, created_by, reported_at FROM edge_configs"
                              " WHERE edge_id = ? ORDER BY version DESC", (edge_id,)).fetchall()
        return [ConfigVersion(version=r[0], status=r[1], reason=r[2], created_at=_utc(r[3]), created_by=r[4],
                              reported_at=_utc(r[5])) for r in rows]

    def latest(self, edge_id: str) -> ConfigForEdge | None:
        with self.storage.transaction() as tx:
            row = tx.execute("SELECT version, body, signature FROM edge_configs WHERE edge_id = ?"
                             " ORDER BY version DESC LIMIT 1", (edge_id,)).fetchone()
        return None if row is None else ConfigForEdge(version=row[0], toml=row[1], signature=row[2])

    def report(self, edge_id: str, version: int, status: str, reason: str) -> bool:
        with self.storage.transaction() as tx:
            n = tx.execute("UPDATE edge_configs SET status = ?, reason = ?, reported_at = ? WHERE edge_id = ?"
                           " AND version = ?", (status, reason, time.time(), edge_id, version)).rowcount
        return n == 1


def _store(state: State) -> ConfigStore:
    store = getattr(state, "edge_configs", None)
    if store is None:
        store = state.edge_configs = ConfigStore(state.storage)
    return store


def _bad(key: str, message: str) -> ValidationException:
    return ValidationException(detail=message, extra=[{"key": key, "source": "body", "message": message}])


@put("/edges/{edge_id:str}/config", guards=[allow(ADMIN)], sync_to_thread=True, status_code=201,
     summary="Give an edge a new firmware config: validated, signed, fetched and tried by the edge",
     responses={400: error("the config is not one the edge can use, or the hub has no signing key")})
def put_config(edge_id: FromPath[str], data: JSONBody[ConfigPut], request: Request, state: State) -> ConfigVersion:
    from models.signing import PRIVATE_KEY_ENV, load_private_key
    from protocols.config import ConfigError, parse_config

    try:
        config = parse_config(data.toml, f"the config for {edge_id}")
    except ConfigError as exc:
        raise _bad("toml", str(exc)) from exc
    if config.identity.edge_id != edge_id:
        raise _bad("toml", f"[identity] edge_id is {config.identity.edge_id!r}, not {edge_id!r}: a config "
                           "names the edge it is for")
    if not os.environ.get(PRIVATE_KEY_ENV, "").strip():
        raise _bad("toml", f"the hub has no signing key (${PRIVATE_KEY_ENV}): edges take only signed configs")
    signature = load_private_key().sign(data.toml.encode()).hex()
    who = principal(request).label
    version = _store(state).put(edge_id, data.toml, signature, who)
    record(request, "edge.config", edge_id, version=version)
    return _store(state).history(edge_id)[0]


@get("/edges/{edge_id:str}/config", guards=[allow(VIEWER)], sync_to_thread=True,
     summary="An edge's config versions, newest first, and what the edge made of each")
def config_history(edge_id: FromPath[str], state: State) -> ConfigHistory:
    return ConfigHistory(edge_id=edge_id, versions=_store(state).history(edge_id))


@get("/edge/config", guards=[allow(EDGE)], sync_to_thread=True,
     summary="The calling edge's newest config and its signature",
     responses={404: error("no config was given to this edge at the hub")})
def config_for_edge(request: Request, state: State) -> ConfigForEdge:
    latest = _store(state).latest(principal(request).name)
    if latest is None:
        raise NotFoundException("no config was given to this edge at the hub")
    return latest


@post("/edge/config/status", guards=[allow(EDGE)], sync_to_thread=True, status_code=200,
      summary="The calling edge says what it made of a config version: applied, rolled back or refused",
      responses={404: error("no such config version for this edge")})
def config_status(data: JSONBody[ConfigReport], request: Request, state: State) -> dict[str, object]:
    edge_id = principal(request).name
    if not _store(state).report(edge_id, data.version, data.status, data.reason):
        raise NotFoundException(f"no config version {data.version} for edge {edge_id}")
    record(request, f"edge.config_{data.status}", edge_id, version=data.version, reason=data.reason[:200])
    return {"edge_id": edge_id, "version": data.version, "status": data.status}


ROUTES = [put_config, config_history, config_for_edge, config_status]
