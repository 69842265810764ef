"""Auth and audit over HTTP: login, users, API keys, edge credentials, the audit log.

- ``POST /auth/login`` (public, rate-limited): ``{"username", "password"}`` -> a session token that
  expires, also set as an HttpOnly, SameSite=Strict cookie for the browser. ``POST /auth/logout``,
  ``GET /auth/whoami``.
- Admins: ``GET/POST /auth/users``, ``DELETE /auth/users/{name}``; ``GET/POST /auth/keys``,
  ``DELETE /auth/keys/{id}``; ``GET/POST /edges/credentials``, ``DELETE /edges/{edge_id}/credentials``;
  ``GET /audit`` (filterable) and ``GET /audit/verify``; ``GET/POST /edges/enrolments``: one-time
  enrolment tokens for new boxes.
- ``POST /edges/enrol`` (public, rate-limited): a box exchanges its enrolment token, once, for its
  own edge credential.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import Cookie, State
from litestar.exceptions import NotAuthorizedException, NotFoundException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from hub.auth.audit import record
from hub.auth.guards import SESSION_COOKIE, TooManyRequests, allow, principal, source_of
from hub.auth.model import ADMIN, PUBLIC, VIEWER
from hub.auth.store import (AuditEntry, AuthError, AuthStore, CredentialInfo, EnrolmentInfo, IssuedCredential,
                             IssuedEnrolment, UserInfo)
from hub.openapi import error, query_time

__all__ = ["ROUTES"]

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")]
PersonRole = Annotated[str, msgspec.Meta(pattern="^(viewer|operator|admin)$")]


class LoginRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]


class LoginResult(msgspec.Struct, frozen=True):
    token: str
    token_type: str
    expires_at: datetime
    user: str
    role: str


class WhoAmI(msgspec.Struct, frozen=True):
    principal: str
    kind: str
    name: str
    role: str
    substation: str


class UserCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    role: PersonRole
    password: Annotated[str, msgspec.Meta(min_length=12, max_length=1024)]


class UserList(msgspec.Struct, frozen=True):
    users: list[UserInfo]


class KeyCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Name
    role: PersonRole
    expires_in_days: Annotated[float, msgspec.Meta(gt=0, le=3650)] | None = None


class EdgeCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    edge_id: Name
    substation: Annotated[str, msgspec.Meta(max_length=128, pattern=r"^([A-Za-z0-9][A-Za-z0-9_.@-]*)?$")] = ""


class EnrolmentCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    edge_id: Annotated[str, msgspec.Meta(max_length=128, pattern=r"^([A-Za-z0-9][A-Za-z0-9_.@-]*)?$")] = ""
    substation: Annotated[str, msgspec.Meta(max_length=128, pattern=r"^([A-Za-z0-9][A-Za-z0-9_.@-]*)?$")] = ""
    expires_in_hours: Annotated[float, msgspec.Meta(ge=0.02, le=720)] = 24.0


class EnrolmentList(msgspec.Struct, frozen=True):
    enrolments: list[EnrolmentInfo]


class EnrolRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    edge_id: Name


class Enrolled(msgspec.Struct, frozen=True):
    edge_id: str
    substation: str
    credential_id: str
    token: str  # the edge's own credential: sent as Authorization: Bearer, in this answer only


class CredentialList(msgspec.Struct, frozen=True):
    credentials: list[CredentialInfo]


class AuditList(msgspec.Struct, frozen=True):
    entries: list[AuditEntry]


class AuditVerification(msgspec.Struct, frozen=True):
    ok: bool
    entries: int
    first_bad_seq: int | None


def _store(state: State) -> AuthStore:
    return state.auth


def _bad(field: str, exc: AuthError) -> ValidationException:
    return ValidationException(detail=str(exc), extra=[{"key": field, "source": "body", "message": str(exc)}])


@post("/auth/login", guards=[allow(PUBLIC)], sync_to_thread=True, status_code=200,
      summary="Log in: a session token (and cookie) that expires",
      raises=[NotAuthorizedException, TooManyRequests])
def login(data: JSONBody[LoginRequest], request: Request, state: State) -> Response[LoginResult]:
    host = request.client.host if request.client else "unknown"
    source = source_of(request)
    keys = (f"user:{data.username}", f"ip:{host}")
    wait = state.login_failures.blocked_for(*keys)
    if wait > 0:
        raise TooManyRequests(f"too many failed logins; retry in {wait:.0f} s", wait)
    issued = _store(state).login(data.username, data.password, state.settings.session_ttl_s)
    if issued is None:
        state.login_failures.fail(*keys)
        _store(state).audit(f"user:{data.username}", source, "auth.login_failed", data.username)
        raise NotAuthorizedException(detail="wrong user name or password")
    state.login_failures.clear(keys[0])
    _store(state).audit(f"user:{data.username}", source, "auth.login", data.username, session=issued.id)
    assert issued.expires_at is not None
    body = LoginResult(token=issued.secret, token_type="bearer", expires_at=issued.expires_at, user=data.username,
                       role=issued.role)
    cookie = Cookie(key=SESSION_COOKIE, value=issued.secret, httponly=True, samesite="strict", path="/",
                    secure=request.url.scheme == "https", max_age=int(state.settings.session_ttl_s))
    return Response(body, cookies=[cookie])


@post("/auth/logout", guards=[allow(VIEWER)], sync_to_thread=True, status_code=200,
      summary="End this session (API keys are revoked by an admin instead)")
def logout(request: Request, state: State) -> Response[dict[str, bool]]:
    who = principal(request)
    if who.kind == "user":
        _store(state).logout(who.credential_id)
        record(request, "auth.logout", who.name)
    return Response({"logged_out": who.kind == "user"}, cookies=[Cookie(key=SESSION_COOKIE, value="", max_age=0,
                                                                        path="/")])


@get("/auth/whoami", guards=[allow(VIEWER)], sync_to_thread=False, summary="The caller: name, kind and role")
def whoami(request: Request) -> WhoAmI:
    who = principal(request)
    return WhoAmI(principal=who.label, kind=who.kind, name=who.name, role=who.role.value, substation=who.substation)


@get("/auth/users", guards=[allow(ADMIN)], sync_to_thread=True, summary="Users and their roles")
def list_users(state: State) -> UserList:
    return UserList(users=_store(state).users())


@post("/auth/users", guards=[allow(ADMIN)], sync_to_thread=True, status_code=201,
      summary="Create a user, or set an existing user's role and password (ends its sessions)")
def add_user(data: JSONBody[UserCreate], request: Request, state: State) -> UserInfo:
    try:
        user = _store(state).add_user(data.name, data.role, data.password)
    except AuthError as exc:
        raise _bad("password" if "password" in str(exc) else "name", exc) from exc
    record(request, "user.set", data.name, role=data.role)
    return user


@delete("/auth/users/{name:str}", guards=[allow(ADMIN)], sync_to_thread=True, status_code=200,
        summary="Disable a user and end its sessions", responses={404: error("no enabled user of that name")})
def disable_user(name: FromPath[str], request: Request, state: State) -> UserInfo:
    try:
        user = _store(state).disable_user(name)
    except AuthError as exc:
        raise NotFoundException(str(exc)) from exc
    record(request, "user.disable", name)
    return user


@get("/auth/keys", guards=[allow(ADMIN)], sync_to_thread=True, summary="Live API keys (never their secrets)")
def list_keys(state: State) -> CredentialList:
    return CredentialList(credentials=_store(state).credentials("key"))


@post("/auth/keys", guards=[allow(ADMIN)], sync_to_thread=True, status_code=201,
      summary="Create an API key: its secret is in this answer only")
def create_key(data: JSONBody[KeyCreate], request: Request, state: State) -> IssuedCredential:
    who = principal(request)
    try:
        issued = _store(state).create_key(data.name, data.role, created_by=who.label,
                                          expires_in_s=data.expires_in_days * 86400 if data.expires_in_days else None)
    except AuthError as exc:
        raise _bad("name", exc) from exc
    record(request, "key.create", issued.id, name=data.name, role=data.role)
    return issued


@delete("/auth/keys/{credential_id:str}", guards=[allow(ADMIN)], sync_to_thread=True, status_code=200,
        summary="Revoke an API key (or any credential) by its id", responses={404: error("no live credential with that id")})
def revoke_key(credential_id: FromPath[str], request: Request, state: State) -> CredentialInfo:
    try:
        info = _store(state).revoke(credential_id)
    except AuthError as exc:
        raise NotFoundException(str(exc)) from exc
    record(request, "credential.revoke", credential_id, kind=info.kind, owner=info.principal)
    return info


@get("/edges/credentials", guards=[allow(ADMIN)], sync_to_thread=True,
     summary="Registered edges' live credentials (never their secrets)")
def list_edge_credentials(state: State) -> CredentialList:
    return CredentialList(credentials=_store(state).credentials("edge"))


@post("/edges/credentials", guards=[allow(ADMIN)], sync_to_thread=True, status_code=201,
      summary="Register an edge (or give it another credential, to rotate): the secret is in this answer only")
def add_edge(data: JSONBody[EdgeCreate], request: Request, state: State) -> IssuedCredential:
    who = principal(request)
    try:
        issued = _store(state).add_edge(data.edge_id, data.substation, created_by=who.label)
    except AuthError as exc:
        raise _bad("edge_id", exc) from exc
    record(request, "edge.add", data.edge_id, credential=issued.id, substation=data.substation)
    return issued


@delete("/edges/{edge_id:str}/credentials", guards=[allow(ADMIN)], sync_to_thread=True, status_code=200,
        summary="Revoke every credential of an edge: it can no longer sync",
        responses={404: error("the edge has no live credential")})
def revoke_edge(edge_id: FromPath[str], request: Request, state: State) -> dict[str, Any]:
    try:
        n = _store(state).revoke_edge(edge_id)
    except AuthError as exc:
        raise NotFoundException(str(exc)) from exc
    record(request, "edge.revoke", edge_id, credentials=n)
    return {"edge_id": edge_id, "revoked": n}


@post("/edges/enrolments", guards=[allow(ADMIN)], sync_to_thread=True, status_code=201,
      summary="A one-time enrolment token for a new edge box: the token is in this answer only")
def create_enrolment(data: JSONBody[EnrolmentCreate], request: Request, state: State) -> IssuedEnrolment:
    try:
        issued = _store(state).create_enrolment(data.edge_id, data.substation,
                                                expires_in_s=data.expires_in_hours * 3600,
                                                created_by=principal(request).label)
    except AuthError as exc:
        raise _bad("edge_id", exc) from exc
    record(request, "edge.enrolment", data.edge_id or "*", enrolment=issued.id, substation=data.substation)
    return issued


@get("/edges/enrolments", guards=[allow(ADMIN)], sync_to_thread=True,
     summary="Enrolment tokens waiting to be used (all, with used and expired ones: all=true)")
def list_enrolments(state: State, all: Annotated[bool, QueryParameter(description="with used and expired ones")]
                    = False) -> EnrolmentList:  # noqa: A002 - the query parameter's name
    return EnrolmentList(enrolments=_store(state).enrolments(include_used=all))


@post("/edges/enrol", guards=[allow(PUBLIC)], sync_to_thread=True, status_code=201,
      summary="An edge box exchanges its one-time enrolment token for its own credential (rate-limited)",
      raises=[NotAuthorizedException, TooManyRequests])
def enrol(data: JSONBody[EnrolRequest], request: Request, state: State) -> Enrolled:
    host = request.client.host if request.client else "unknown"
    keys = (f"enrol-ip:{host}",)
    wait = state.login_failures.blocked_for(*keys)
    if wait > 0:
        raise TooManyRequests(f"too many failed enrolments; retry in {wait:.0f} s", wait)
    try:
        issued, eid = _store(state).enrol(data.token, data.edge_id)
    except AuthError as exc:
        state.login_failures.fail(*keys)
        _store(state).audit(f"edge:{data.edge_id}", source_of(request), "edge.enrol_failed", data.edge_id)
        raise NotAuthorizedException(detail=str(exc)) from exc
    _store(state).audit(f"edge:{data.edge_id}", source_of(request), "edge.enrol", data.edge_id, enrolment=eid,
                        credential=issued.id, substation=issued.substation)
    return Enrolled(edge_id=issued.principal, substation=issued.substation, credential_id=issued.id,
                    token=issued.secret)


@get("/audit", guards=[allow(ADMIN)], sync_to_thread=True, summary="The audit log, newest first, filtered")
def list_audit(
    state: State,
    action: FromQuery[str | None] = None,
    principal_: Annotated[str | None, QueryParameter(name="principal")] = None,
    target: FromQuery[str | None] = None,
    since: Annotated[str | None, QueryParameter(format="date-time")] = None,
    until: Annotated[str | None, QueryParameter(format="date-time")] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
) -> AuditList:
    """``action`` matches a prefix (``edge.`` for every edge action); times need a zone."""
    return AuditList(entries=_store(state).audit_entries(
        action=action, principal=principal_, target=target, since=query_time("since", since),
        until=query_time("until", until), limit=limit))


@get("/audit/verify", guards=[allow(ADMIN)], sync_to_thread=True,
     summary="Recompute the audit log's hash chain: ok, or the first entry that was altered")
def verify_audit(state: State) -> AuditVerification:
    v = _store(state).verify_audit()
    return AuditVerification(ok=v.ok, entries=v.entries, first_bad_seq=v.first_bad_seq)


ROUTES = [login, logout, whoami, list_users, add_user, disable_user, list_keys, create_key, revoke_key,
          list_edge_credentials, add_edge, revoke_edge, create_enrolment, list_enrolments, enrol, list_audit,
          verify_audit]
