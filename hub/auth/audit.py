"""Recording a change of state made through the API in the audit log."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection

from hub.auth.guards import source_of
from hub.auth.model import Principal
from hub.auth.store import AuditEntry

__all__ = ["record"]


def record(connection: ASGIConnection[Any, Any, Any, Any], action: str, target: str = "",
           **detail: Any) -> AuditEntry:
    """Append ``action`` on ``target`` by the request's principal, from its address. Blocking (a
    database write): call it from a handler running in a worker thread, or through to_thread."""
    who = connection.scope.get("user")
    label = who.label if isinstance(who, Principal) else "anonymous"
    return connection.app.state.auth.audit(label, source_of(connection), action, target, **detail)
