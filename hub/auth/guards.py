"""Every route declares who may call it, where it is defined: ``guards=[allow(VIEWER)]``.

:func:`allow` makes a Litestar guard that authenticates the caller (``Authorization: Bearer
KEY``, or the dashboard's session cookie) and checks its role against the route's
:class:`~hub.auth.model.Policy`; ingest routes are also rate-limited per principal. The app adds
:func:`require_policy` to every route, so a route defined without a policy is refused to everyone
(and the authorization-matrix test names it). The principal is left in ``request.user``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from hub.auth.model import Policy, Principal
from hub.auth.store import AuthStore

__all__ = ["SESSION_COOKIE", "RateLimiter", "TooManyRequests", "allow", "policy_of", "principal", "require_policy"]

log = logging.getLogger(__name__)
SESSION_COOKIE = "sentinel_session"
_POLICY_ATTR = "sentinel_policy"


class TooManyRequests(HTTPException):
    status_code = 429

    def __init__(self, detail: str, retry_after_s: float) -> None:
        super().__init__(detail=detail, headers={"Retry-After": str(max(1, round(retry_after_s)))})


class RateLimiter:
    """A token bucket per key: ``rate`` per second, bursts up to ``burst``. ``rate`` <= 0: no limit."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds until it may."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class FailureWindow:
    """Failed logins per key in a sliding window: at most ``limit`` per ``window_s``."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked_for(self, *keys: str) -> float:
        now = time.monotonic()
        worst = 0.0
        with self._lock:
            for key in keys:
                q = self._fails.get(key)
                while q and q[0] <= now - self.window_s:
                    q.popleft()
                if q and len(q) >= self.limit:
                    worst = max(worst, q[0] + self.window_s - now)
        return worst

    def fail(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._fails) > 100_000:
                self._fails.clear()
            for key in keys:
                self._fails.setdefault(key, deque()).append(now)

    def clear(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


def bearer_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The bearer string a request presents: the Authorization header, else the session cookie."""
    auth = connection.headers.get("authorization", "")
    if auth:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""
    return connection.cookies.get(SESSION_COOKIE, "")


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers={"WWW-Authenticate": 'Bearer realm="sentinel"'})


def allow(policy: Policy) -> Any:
    """A guard admitting callers whose role the policy allows."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        if policy.roles is None:
            return
        state = connection.app.state
        store: AuthStore | None = getattr(state, "auth", None)
        if store is None:
            raise HTTPException(status_code=503, detail="the hub is starting; try again")
        presented = bearer_of(connection)
        if not presented:
            if policy.name == "edge":
                _say_how_to_register(store)
            raise _unauthorized("a credential is required: send Authorization: Bearer <key>")
        who = store.authenticate(presented)
        if who is None:
            raise _unauthorized("unknown, revoked or expired credential")
        if not policy.allows(who.role):
            raise PermissionDeniedException(
                detail=f"{who.label} (role {who.role}) may not do this: it needs {policy.name}")
        if policy.rate:
            wait = state.ingest_limiter.take(who.label)
            if wait > 0:
                raise TooManyRequests(f"{who.label} is over its ingest rate limit "
                                      f"({state.ingest_limiter.rate:g} requests/s); retry in {wait:.1f} s", wait)
        connection.scope["user"] = who

    setattr(guard, _POLICY_ATTR, policy)
    guard.__name__ = f"allow_{policy.name.replace(' ', '_')}"
    return guard


_last_hint = 0.0


def _say_how_to_register(store: AuthStore) -> None:
    """An edge without a credential at a hub with no edge registered: say how to add one (once a minute)."""
    global _last_hint
    now = time.monotonic()
    if now - _last_hint < 60.0:
        return
    _last_hint = now
    if store.edge_count() == 0:
        log.warning("edge sync refused: no edge is registered at this hub. Add one with `sentinel hub edges add "
                    "EDGE_ID` (or POST /edges as an admin) and give the box the credential it prints")


def policy_of(handler: BaseRouteHandler) -> Policy | None:
    """The policy a route declares (through :func:`allow` in its own or an enclosing layer's guards)."""
    for layer in handler.ownership_layers:
        for guard in getattr(layer, "guards", None) or ():
            policy = getattr(guard, _POLICY_ATTR, None)
            if policy is not None:
                return policy
    return None


def require_policy(_: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """App-wide: a route that declares no policy is refused to everyone (Litestar's automatic OPTIONS
    answers too: the hub serves no cross-origin callers, and its Allow lists only some methods)."""
    if policy_of(handler) is None:
        raise PermissionDeniedException(detail=f"route {handler.paths} declares no access policy")


def principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The authenticated caller of a guarded route."""
    who = connection.scope.get("user")
    if not isinstance(who, Principal):
        raise _unauthorized("a credential is required")
    return who


def source_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    client = connection.client
    return f"{client.host}:{client.port}" if client else "unknown"
