"""Webhooks over HTTP, for admins: register, list, delete, and read a webhook's delivery log.

- ``POST /webhooks``: ``{"url", "secret"?, "min_severity"?}`` -> the webhook with its secret (made
  by the hub when none is given), in this answer only.
- ``GET /webhooks``: every webhook, never a secret.
- ``DELETE /webhooks/{id}``: stop delivering to it; its queue and log go with it.
- ``GET /webhooks/{id}/deliveries?status=&limit=``: newest first, each with every attempt.

Creating and deleting are recorded in the audit log (the URL and least severity, never the secret).
"""

from __future__ import annotations

from typing import Annotated, Literal

import httpx
from litestar import Request, delete, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from hub.auth.audit import record
from hub.auth.guards import allow, principal
from hub.auth.model import ADMIN
from hub.openapi import error
from hub.webhooks.schemas import DeliveryList, WebhookCreate, WebhookCreated, WebhookList, Webhook
from hub.webhooks.store import WebhookStore

__all__ = ["ROUTES"]

URL_RULE = "the url names a host (and a port from 1 to 65535), and no user name or password"


def _store(state: State) -> WebhookStore:
    return state.webhooks


def _bad_url(url: str, why: str) -> ValidationException:
    message = f"{url!r}: {why}"
    return ValidationException(detail=f"url: {message}", extra=[{"key": "url", "source": "body", "message": message}])


def check_url(url: str) -> str:
    """``url`` if the hub can POST to it: http or https, a host, a port in range; no credentials
    in it (they would be listed with the webhook: the secret is what authenticates the hub)."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise _bad_url(url, f"not a URL ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise _bad_url(url, "must start with http:// or https://")
    if not parsed.host:
        raise _bad_url(url, "names no host")
    if port is not None and not 1 <= port <= 65535:
        raise _bad_url(url, f"port {port} is not from 1 to 65535")
    if parsed.userinfo:
        raise _bad_url(url, "has a user name or password in it, which GET /webhooks would list; the receiver "
                            "authenticates the hub by the signature")
    return url


@post("/webhooks", guards=[allow(ADMIN)], sync_to_thread=True, status_code=201,
      summary="Register a webhook: new and escalated incidents at or above min_severity are POSTed to it, signed",
      responses={400: error(f"the body does not match this document, or not a URL the hub can send to: {URL_RULE}")})
def create_webhook(data: JSONBody[WebhookCreate], request: Request, state: State) -> WebhookCreated:
    """The secret (yours, or one the hub makes when none is given) is in this answer only: the
    receiver checks ``X-Sentinel-Signature`` with it (``docs/webhooks.md``)."""
    url = check_url(data.url)
    hook = _store(state).create(url, data.min_severity, secret=data.secret, created_by=principal(request).label)
    record(request, "webhook.create", hook.id, url=url, min_severity=hook.min_severity,
           secret="given" if data.secret else "generated")
    return hook


@get("/webhooks", guards=[allow(ADMIN)], sync_to_thread=True, summary="Webhooks (never their secrets)")
def list_webhooks(state: State) -> WebhookList:
    return WebhookList(webhooks=_store(state).webhooks())


@delete("/webhooks/{webhook_id:str}", guards=[allow(ADMIN)], sync_to_thread=True, status_code=200,
        summary="Delete a webhook: nothing more is sent to it; its queue and delivery log go with it",
        responses={404: error("no such webhook")})
def delete_webhook(webhook_id: FromPath[str], request: Request, state: State) -> Webhook:
    hook = _store(state).delete(webhook_id)
    if hook is None:
        raise NotFoundException(f"no webhook {webhook_id!r}")
    record(request, "webhook.delete", webhook_id, url=hook.url)
    return hook


@get("/webhooks/{webhook_id:str}/deliveries", guards=[allow(ADMIN)], sync_to_thread=True,
     summary="A webhook's deliveries, newest first, each with every attempt (status code or error, duration, "
             "next retry)",
     responses={404: error("no such webhook")})
def list_deliveries(
    webhook_id: FromPath[str],
    state: State,
    status: FromQuery[Literal["pending", "delivered", "failed"] | None] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=10_000)] = 100,
) -> DeliveryList:
    store = _store(state)
    if store.get(webhook_id) is None:
        raise NotFoundException(f"no webhook {webhook_id!r}")
    return DeliveryList(deliveries=store.deliveries(webhook_id, status=status, limit=limit))


ROUTES = [create_webhook, list_webhooks, delete_webhook, list_deliveries]
