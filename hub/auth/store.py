"""Credentials and the audit log, kept in the hub's own database (SQLite or PostgreSQL).

- **Users** log in with a password (argon2id hash) and get a session token that expires.
- **API keys** (``sgk_...``) belong to a named client with a role; **edge credentials**
  (``sge_...``) to one edge id (and optionally one substation); **session tokens** (``sgs_...``)
  to a logged-in user. Every bearer string is 256 random bits and is stored only as its SHA-256:
  with that much entropy a slow hash adds nothing but latency on every request (as GitHub and
  Stripe store their tokens); passwords, which people choose, get argon2.
- **Audit log**: every change of state, appended with principal, time, source address, action,
  target and detail, under a SHA-256 hash chain (the cyber sentinel's evidence chain:
  :mod:`agents.cyber_sentinel.evidence`), so an edited, dropped or reordered entry is detected by
  :meth:`AuthStore.verify_audit`.

Lookups are cached for ``CACHE_S`` seconds per process: a revocation made through this process
takes effect at once, one made by another process (the CLI, another replica) within that time.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from agents.cyber_sentinel.evidence import GENESIS
from hub.auth.model import PERSON_ROLES, Principal, Role
from hub.storage.base import Storage

__all__ = ["AuditEntry", "AuthError", "AuthStore", "CredentialInfo", "IssuedCredential", "UserInfo"]

CACHE_S = 5.0
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")
MIN_PASSWORD = 12
MIN_BOOTSTRAP_KEY = 24
_SECRET_PREFIX = {"key": "sgk", "edge": "sge", "session": "sgs", "enrolment": "sgn"}  # what a secret scanner can look for
_ID_PREFIX = {"key": "key", "edge": "edge", "session": "ses"}
_AUDIT_LOCK = 0x5E_A0D1  # advisory lock key serialising audit appends on PostgreSQL

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS auth_users (
        name TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        disabled_at DOUBLE PRECISION
    )""",
    """CREATE TABLE IF NOT EXISTS auth_credentials (
        id TEXT PRIMARY KEY,              -- public id: key_..., edge_..., ses_...
        kind TEXT NOT NULL,               -- key | edge | session
        secret_hash TEXT NOT NULL UNIQUE, -- sha256 hex of the bearer string
        principal TEXT NOT NULL,          -- the key's or user's name, or the edge id
        role TEXT NOT NULL,
        substation TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION,
        revoked_at DOUBLE PRECISION,
        created_by TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS auth_credentials_principal ON auth_credentials (kind, principal)",
    """CREATE TABLE IF NOT EXISTS auth_enrolments (
        id TEXT PRIMARY KEY,              -- public id: enr_...
        secret_hash TEXT NOT NULL UNIQUE, -- sha256 hex of the one-time token
        edge_id TEXT NOT NULL DEFAULT '', -- the edge it is for ('': the edge names itself)
        substation TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        used_at DOUBLE PRECISION,
        used_by TEXT NOT NULL DEFAULT '',  -- the edge that used it
        credential_id TEXT NOT NULL DEFAULT '',  -- and the credential it got
        created_by TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS audit_log (
        seq BIGINT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        principal TEXT NOT NULL,
        source TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
)


class AuthError(ValueError):
    """A request to manage credentials that cannot be done (unknown user, bad name, weak password)."""


class UserInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    role: str
    created_at: datetime
    disabled: bool


class CredentialInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A credential as listed: never its secret."""

    id: str
    kind: str
    principal: str
    role: str
    substation: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by: str


class IssuedCredential(msgspec.Struct, frozen=True, kw_only=True):
    """A new credential: ``secret`` is shown this once and never stored."""

    id: str
    kind: str
    principal: str
    role: str
    secret: str
    expires_at: datetime | None = None
    substation: str = ""


class IssuedEnrolment(msgspec.Struct, frozen=True, kw_only=True):
    """A one-time enrolment token, as made: ``token`` is shown here only."""

    id: str
    token: str
    edge_id: str  # "": any edge id the box names
    substation: str
    expires_at: datetime


class EnrolmentInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An enrolment token as listed: never the token."""

    id: str
    edge_id: str
    substation: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    used_by: str
    credential_id: str
    created_by: str


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    ts: datetime
    principal: str
    source: str
    action: str
    target: str
    detail: dict[str, Any]
    hash: str


@dataclass(frozen=True, slots=True)
class AuditVerdict:
    ok: bool
    entries: int
    first_bad_seq: int | None = None


def _now() -> float:
    return time.time()


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _check_name(what: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise AuthError(f"{what} {name!r}: use 1-128 letters, digits, '_', '.', '@' or '-', starting with a "
                        "letter or digit")
    return name


def _role(role: str, allowed: tuple[Role, ...] = PERSON_ROLES) -> Role:
    try:
        r = Role(role)
    except ValueError:
        r = None
    if r not in allowed:
        raise AuthError(f"role {role!r}: expected one of {', '.join(allowed)}")
    return r


def check_bootstrap_key(secret: str) -> None:
    """:class:`AuthError` unless ``SENTINEL_ADMIN_KEY`` is long enough to be a key."""
    if len(secret) < MIN_BOOTSTRAP_KEY:
        raise AuthError(f"SENTINEL_ADMIN_KEY is {len(secret)} characters; use at least {MIN_BOOTSTRAP_KEY} "
                        "random ones (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")


class AuthStore:
    """Users, credentials and the audit log over a hub :class:`Storage`. Thread-safe."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._hasher = PasswordHasher()
        self._cache: dict[str, tuple[Principal | None, float]] = {}
        self._cache_lock = threading.Lock()
        with storage.transaction() as tx:
            tx.lock(_AUDIT_LOCK)  # two hub processes creating the tables at once
            for ddl in SCHEMA:
                tx.execute(ddl)

    # -- authentication ---------------------------------------------------------------------------

    def authenticate(self, bearer: str) -> Principal | None:
        """The principal a bearer string stands for, or None (unknown, revoked, expired, disabled)."""
        if not bearer or len(bearer) > 512:
            return None
        digest = secret_hash(bearer)
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(digest)
            if hit is not None and hit[1] > now:
                return hit[0]
        with self.storage.transaction() as tx:
            row = tx.execute(
                "SELECT c.id, c.kind, c.principal, c.role, c.substation, c.expires_at, u.disabled_at, u.role"
                " FROM auth_credentials c LEFT JOIN auth_users u ON c.kind = 'session' AND u.name = c.principal"
                " WHERE c.secret_hash = ? AND c.revoked_at IS NULL", (digest,)).fetchone()
        principal = None
        if row is not None:
            cid, kind, name, role, substation, expires_at, disabled_at, user_role = row
            if (expires_at is None or expires_at > _now()) and disabled_at is None:
                if kind == "session":  # a user's role is read at each lookup: a demotion holds at once
                    role = user_role or role
                principal = Principal(kind={"session": "user"}.get(kind, kind), name=name, role=Role(role),
                                      credential_id=cid, substation=substation)
        if principal is not None:
            with self._cache_lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (principal, now + CACHE_S)
        return principal

    def _forget(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def login(self, name: str, password: str, ttl_s: float) -> IssuedCredential | None:
        """A session token for a user whose password matches; None otherwise (same cost either way)."""
        with self.storage.transaction() as tx:
            row = tx.execute("SELECT password_hash, role, disabled_at FROM auth_users WHERE name = ?",
                             (name,)).fetchone()
        stored = row[0] if row else _DUMMY_HASH
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None or row[2] is not None:
            return None
        return self._issue("session", name, Role(row[1]), expires_at=_now() + ttl_s, created_by=f"user:{name}")

    def logout(self, credential_id: str) -> None:
        with self.storage.transaction() as tx:
            tx.execute("UPDATE auth_credentials SET revoked_at = ? WHERE id = ? AND kind = 'session'",
                       (_now(), credential_id))
        self._forget()

    # -- issuing ----------------------------------------------------------------------------------

    def _issue(self, kind: str, principal: str, role: Role, *, expires_at: float | None = None,
               substation: str = "", created_by: str = "", secret: str | None = None) -> IssuedCredential:
        secret = secret or f"{_SECRET_PREFIX[kind]}_{secrets.token_urlsafe(32)}"
        cid = f"{_ID_PREFIX[kind]}_{secrets.token_hex(6)}"
        with self.storage.transaction() as tx:
            tx.execute("INSERT INTO auth_credentials (id, kind, secret_hash, principal, role, substation, created_at,"
                       " expires_at, revoked_at, created_by) VALUES (?,?,?,?,?,?,?,?,NULL,?)",
                       (cid, kind, secret_hash(secret), principal, role.value, substation, _now(), expires_at,
                        created_by))
        return IssuedCredential(id=cid, kind=kind, principal=principal, role=role.value, secret=secret,
                                expires_at=_utc(expires_at), substation=substation)

    def create_key(self, name: str, role: str, *, expires_in_s: float | None = None,
                   created_by: str = "") -> IssuedCredential:
        """A new API key for the client ``name`` with ``role`` (viewer, operator or admin)."""
        _check_name("key name", name)
        if expires_in_s is not None and expires_in_s <= 0:
            raise AuthError("expiry: must be in the future")
        return self._issue("key", name, _role(role), created_by=created_by,
                           expires_at=_now() + expires_in_s if expires_in_s else None)

    def ensure_bootstrap_key(self, secret: str) -> bool:
        """Make ``SENTINEL_ADMIN_KEY`` an admin key (stored hashed like any other); True if it was new."""
        check_bootstrap_key(secret)
        # one statement that inserts unless the key is held: hubs starting together on a new database
        # all store it at once (a look first, then an insert, failed the second with a unique-key error)
        cid = f"{_ID_PREFIX['key']}_{secrets.token_hex(6)}"
        with self.storage.transaction() as tx:
            if tx.execute("INSERT INTO auth_credentials (id, kind, secret_hash, principal, role, substation,"
                          " created_at, expires_at, revoked_at, created_by) VALUES (?,?,?,?,?,?,?,NULL,NULL,?)"
                          " ON CONFLICT (secret_hash) DO NOTHING",
                          (cid, "key", secret_hash(secret), "bootstrap-admin", Role.ADMIN.value, "", _now(),
                           "env:SENTINEL_ADMIN_KEY")).rowcount == 1:
                return True
            row = tx.execute("SELECT id, revoked_at FROM auth_credentials WHERE secret_hash = ?",
                             (secret_hash(secret),)).fetchone()
        if row[1] is not None:
            raise AuthError(f"SENTINEL_ADMIN_KEY is the revoked key {row[0]}; set a new one")
        return False

    def add_edge(self, edge_id: str, substation: str = "", *, created_by: str = "") -> IssuedCredential:
        """A credential bound to ``edge_id`` (and ``substation`` if given). An edge may hold several
        at once: that is how one rotates (add, install on the box, revoke the old one)."""
        _check_name("edge id", edge_id)
        if substation:
            _check_name("substation", substation)
        return self._issue("edge", edge_id, Role.EDGE, substation=substation, created_by=created_by)

    # -- enrolment -------------------------------------------------------------------------------

    def create_enrolment(self, edge_id: str = "", substation: str = "", *, expires_in_s: float = 86_400.0,
                         created_by: str = "") -> IssuedEnrolment:
        """A one-time token a technician gives a new box: it exchanges it once (:meth:`enrol`) for the
        box's own edge credential. Bound to ``edge_id`` if given (else the box names itself) and to
        ``substation`` (the credential's too)."""
        if edge_id:
            _check_name("edge id", edge_id)
        if substation:
            _check_name("substation", substation)
        if not 60 <= expires_in_s <= 30 * 86_400:
            raise AuthError("expiry: between one minute and 30 days")
        token = f"{_SECRET_PREFIX['enrolment']}_{secrets.token_urlsafe(32)}"
        eid, now = f"enr_{secrets.token_hex(6)}", _now()
        with self.storage.transaction() as tx:
            tx.execute("INSERT INTO auth_enrolments (id, secret_hash, edge_id, substation, created_at, expires_at,"
                       " created_by) VALUES (?,?,?,?,?,?,?)",
                       (eid, secret_hash(token), edge_id, substation, now, now + expires_in_s, created_by))
        return IssuedEnrolment(id=eid, token=token, edge_id=edge_id, substation=substation,
                               expires_at=_utc(now + expires_in_s))

    def enrol(self, token: str, edge_id: str) -> tuple[IssuedCredential, str]:
        """Exchange a one-time token for a new credential of ``edge_id``: (the credential, the
        enrolment's id). :class:`AuthError` without saying which of unknown, used, expired or bound to
        another edge (whoever guesses learns nothing); the token is used up only by a success."""
        _check_name("edge id", edge_id)
        now = _now()
        secret = f"{_SECRET_PREFIX['edge']}_{secrets.token_urlsafe(32)}"
        cid = f"{_ID_PREFIX['edge']}_{secrets.token_hex(6)}"
        with self.storage.transaction() as tx:
            row = tx.execute("SELECT id, substation FROM auth_enrolments WHERE secret_hash = ? AND used_at IS NULL"
                             " AND expires_at > ? AND (edge_id = '' OR edge_id = ?)",
                             (secret_hash(token or "-"), now, edge_id)).fetchone()
            if row is None:
                raise AuthError("the enrolment token is unknown, used, expired or for another edge: ask the hub's "
                                "admin for a new one (`sentinel hub edges enrolment`)")
            eid, substation = row
            # used once: of two boxes racing with one token, one gets no row here
            if tx.execute("UPDATE auth_enrolments SET used_at = ?, used_by = ?, credential_id = ? WHERE id = ?"
                          " AND used_at IS NULL", (now, edge_id, cid, eid)).rowcount != 1:
                raise AuthError("the enrolment token is unknown, used, expired or for another edge")
            tx.execute("INSERT INTO auth_credentials (id, kind, secret_hash, principal, role, substation, created_at,"
                       " expires_at, revoked_at, created_by) VALUES (?,?,?,?,?,?,?,NULL,NULL,?)",
                       (cid, "edge", secret_hash(secret), edge_id, Role.EDGE.value, substation, now, f"enrolment:{eid}"))
        return IssuedCredential(id=cid, kind="edge", principal=edge_id, role=Role.EDGE.value, secret=secret,
                                expires_at=None, substation=substation), eid

    def enrolments(self, *, include_used: bool = False) -> list[EnrolmentInfo]:
        q = ("SELECT id, edge_id, substation, created_at, expires_at, used_at, used_by, credential_id, created_by"
             " FROM auth_enrolments")
        params: list[Any] = []
        if not include_used:
            q += " WHERE used_at IS NULL AND expires_at > ?"
            params.append(_now())
        with self.storage.transaction() as tx:
            rows = tx.execute(q + " ORDER BY created_at, id", params).fetchall()
        return [EnrolmentInfo(id=r[0], edge_id=r[1], substation=r[2], created_at=_utc(r[3]), expires_at=_utc(r[4]),
                              used_at=_utc(r[5]), used_by=r[6], credential_id=r[7], created_by=r[8]) for r in rows]

    def revoke(self, credential_id: str) -> CredentialInfo:
        """Revoke one credential by id; :class:`AuthError` if there is no such live credential."""
        with self.storage.transaction() as tx:
            n = tx.execute("UPDATE auth_credentials SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                           (_now(), credential_id)).rowcount
        self._forget()
        if not n:
            raise AuthError(f"no live credential {credential_id!r}")
        return next(c for c in self.credentials(include_revoked=True) if c.id == credential_id)

    def revoke_edge(self, edge_id: str) -> int:
        """Revoke every credential of an edge; returns how many."""
        with self.storage.transaction() as tx:
            n = tx.execute("UPDATE auth_credentials SET revoked_at = ? WHERE kind = 'edge' AND principal = ?"
                           " AND revoked_at IS NULL", (_now(), edge_id)).rowcount
        self._forget()
        if not n:
            raise AuthError(f"edge {edge_id!r} has no live credential")
        return n

    def credentials(self, kind: str | None = None, *, include_revoked: bool = False) -> list[CredentialInfo]:
        q = ("SELECT id, kind, principal, role, substation, created_at, expires_at, revoked_at, created_by"
             " FROM auth_credentials WHERE 1 = 1")
        params: list[Any] = []
        if kind:
            q += " AND kind = ?"
            params.append(kind)
        if not include_revoked:
            q += " AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?)"
            params.append(_now())
        with self.storage.transaction() as tx:
            rows = tx.execute(q + " ORDER BY created_at, id", params).fetchall()
        return [CredentialInfo(id=r[0], kind=r[1], principal=r[2], role=r[3], substation=r[4],
                               created_at=_utc(r[5]), expires_at=_utc(r[6]), revoked_at=_utc(r[7]),
                               created_by=r[8]) for r in rows]

    def edge_count(self) -> int:
        with self.storage.transaction() as tx:
            return tx.execute("SELECT count(*) FROM auth_credentials WHERE kind = 'edge' AND revoked_at IS NULL"
                              ).fetchone()[0]

    # -- users ------------------------------------------------------------------------------------

    def add_user(self, name: str, role: str, password: str) -> UserInfo:
        """Create a user, or set an existing one's role and password (and enable it again)."""
        _check_name("user name", name)
        r = _role(role)
        if len(password) < MIN_PASSWORD:
            raise AuthError(f"password: at least {MIN_PASSWORD} characters")
        digest = self._hasher.hash(password)
        now = _now()
        with self.storage.transaction() as tx:
            if tx.execute("SELECT 1 FROM auth_users WHERE name = ?", (name,)).fetchone():
                tx.execute("UPDATE auth_users SET role = ?, password_hash = ?, disabled_at = NULL WHERE name = ?",
                           (r.value, digest, name))
                # a changed password ends the user's sessions
                tx.execute("UPDATE auth_credentials SET revoked_at = ? WHERE kind = 'session' AND principal = ?"
                           " AND revoked_at IS NULL", (now, name))
            else:
                tx.execute("INSERT INTO auth_users VALUES (?,?,?,?,NULL)", (name, r.value, digest, now))
        self._forget()
        return next(u for u in self.users() if u.name == name)

    def disable_user(self, name: str) -> UserInfo:
        """Disable a user and end its sessions (its history stays)."""
        now = _now()
        with self.storage.transaction() as tx:
            n = tx.execute("UPDATE auth_users SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL",
                           (now, name)).rowcount
            tx.execute("UPDATE auth_credentials SET revoked_at = ? WHERE kind = 'session' AND principal = ?"
                       " AND revoked_at IS NULL", (now, name))
        self._forget()
        if not n:
            raise AuthError(f"no enabled user {name!r}")
        return next(u for u in self.users() if u.name == name)

    def users(self) -> list[UserInfo]:
        with self.storage.transaction() as tx:
            rows = tx.execute("SELECT name, role, created_at, disabled_at FROM auth_users ORDER BY name").fetchall()
        return [UserInfo(name=r[0], role=r[1], created_at=_utc(r[2]), disabled=r[3] is not None) for r in rows]

    # -- audit ------------------------------------------------------------------------------------

    def audit(self, principal: str, source: str, action: str, target: str = "", **detail: Any) -> AuditEntry:
        """Append one entry to the audit log (hash-chained to the one before)."""
        ts = _now()
        detail_json = msgspec.json.encode(detail, order="sorted").decode()
        with self.storage.transaction() as tx:
            tx.lock(_AUDIT_LOCK)
            last = tx.execute("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            fields = _audit_fields(seq, ts, principal, source, action, target, detail_json)
            link = _link(prev, fields)
            tx.execute("INSERT INTO audit_log VALUES (?,?,?,?,?,?,?,?)",
                       (seq, ts, principal, source, action, target, detail_json, link))
        return AuditEntry(seq=seq, ts=_utc(ts), principal=principal, source=source, action=action, target=target,
                          detail=detail, hash=link)

    def audit_entries(self, *, action: str | None = None, principal: str | None = None, target: str | None = None,
                      since: datetime | None = None, until: datetime | None = None,
                      limit: int = 100) -> list[AuditEntry]:
        """Newest first, filtered (``action`` matches a prefix: ``edge.`` gives every edge action)."""
        q = "SELECT seq, ts, principal, source, action, target, detail, hash FROM audit_log WHERE 1 = 1"
        params: list[Any] = []
        if action:
            q += " AND action LIKE ?"
            params.append(action.replace("%", "").replace("_", "\\_") + "%")
            q += " ESCAPE '\\'"
        if principal:
            q += " AND principal = ?"
            params.append(principal)
        if target:
            q += " AND target = ?"
            params.append(target)
        if since:
            q += " AND ts >= ?"
            params.append(since.timestamp())
        if until:
            q += " AND ts < ?"
            params.append(until.timestamp())
        q += " ORDER BY seq DESC LIMIT ?"
        params.append(limit)
        with self.storage.transaction() as tx:
            rows = tx.execute(q, params).fetchall()
        return [AuditEntry(seq=r[0], ts=_utc(r[1]), principal=r[2], source=r[3], action=r[4], target=r[5],
                           detail=msgspec.json.decode(r[6]), hash=r[7]) for r in rows]

    def verify_audit(self) -> AuditVerdict:
        """Recompute the chain from the first entry: the first entry whose stored hash differs (an
        entry edited, removed or inserted) is named."""
        with self.storage.transaction() as tx:
            rows = tx.execute("SELECT seq, ts, principal, source, action, target, detail, hash FROM audit_log"
                              " ORDER BY seq").fetchall()
        prev = GENESIS
        for i, (seq, ts, principal, source, action, target, detail, stored) in enumerate(rows, start=1):
            link = _link(prev, _audit_fields(seq, ts, principal, source, action, target, detail))
            if seq != i or link != stored:
                return AuditVerdict(ok=False, entries=len(rows), first_bad_seq=seq)
            prev = stored
        return AuditVerdict(ok=True, entries=len(rows))


def _audit_fields(seq: int, ts: float, principal: str, source: str, action: str, target: str,
                  detail_json: str) -> dict[str, Any]:
    return {"seq": seq, "ts": repr(float(ts)), "principal": principal, "source": source, "action": action,
            "target": target, "detail": detail_json}


def _link(prev: str, fields: dict[str, Any]) -> str:
    """One link of the chain, as :func:`agents.cyber_sentinel.evidence.chain` computes it (a test
    holds the two to the same formula)."""
    return hashlib.sha256(prev.encode() + msgspec.json.encode(fields, order="sorted")).hexdigest()

# verifying against a hash of a password nobody has keeps a login for an unknown user as slow as one
# for a known user, so timing tells nothing about which names exist
_DUMMY_HASH = PasswordHasher().hash(secrets.token_urlsafe(16))
