"""What the webhook routes take and answer (msgspec Structs), and what a receiver is sent.

A webhook's ``secret`` is in the answer to ``POST /webhooks`` only; listings never carry it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from protocols.incident import Incident
from protocols.wire import Severity

__all__ = ["Delivery", "DeliveryAttempt", "DeliveryList", "EVENTS", "Event", "Payload", "Webhook", "WebhookCreate",
           "WebhookCreated", "WebhookList"]

Event = Literal["incident.created", "incident.escalated"]
EVENTS: tuple[str, ...] = ("incident.created", "incident.escalated")
DeliveryStatus = Literal["pending", "delivered", "failed"]

MIN_SECRET = 16
# the schema states the scheme and printable ASCII (an international domain name in its xn-- form);
# that the rest is a URL one can send to (a host, a port in range, no credentials) the handler checks
# (a 400 naming `url`)
Url = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern=r'^[Hh][Tt][Tt][Pp][Ss]?://[!-"$-.0->@-~]+[!-~]*$',
                                  description="where to POST: an http:// or https:// URL, in printable ASCII")]
Secret = Annotated[str, msgspec.Meta(min_length=MIN_SECRET, max_length=512,
                                     description="the HMAC-SHA256 key the receiver verifies with; "
                                                 "omit it and the hub makes one (in this answer only)")]


class WebhookCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /webhooks``: where to send, the signing secret, the least severity sent."""

    url: Url
    secret: Secret | None = None
    min_severity: Severity = "WARNING"


class Webhook(msgspec.Struct, frozen=True, kw_only=True):
    """A webhook as listed: never its secret."""

    id: str
    url: str
    min_severity: Severity
    created_at: datetime
    created_by: str


class WebhookCreated(Webhook, frozen=True, kw_only=True):
    """A new webhook: ``secret`` is shown this once (the hub keeps it to sign with, and never lists it)."""

    secret: str


class WebhookList(msgspec.Struct, frozen=True):
    webhooks: list[Webhook]


class DeliveryAttempt(msgspec.Struct, frozen=True, kw_only=True):
    """One POST of a delivery: the receiver's status code, or why there was none."""

    attempt: int  # 1, 2, ...
    at: datetime
    duration_ms: float
    status_code: int | None  # None: no answer (refused, reset, timed out)
    error: str  # "" for a 2xx
    next_retry_at: datetime | None  # None: delivered, or the last attempt


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event for one webhook, with every attempt made to deliver it, oldest first."""

    id: str  # also the X-Sentinel-Delivery header of every attempt
    webhook_id: str
    event: Event
    incident_id: str
    severity: Severity  # the incident's severity this event is about
    status: DeliveryStatus
    created_at: datetime
    next_attempt_at: datetime | None  # pending: when the next attempt is due (while one is in flight: when it is given up as lost)
    delivered_at: datetime | None
    attempts: list[DeliveryAttempt]


class DeliveryList(msgspec.Struct, frozen=True):
    deliveries: list[Delivery]


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """The body POSTed to a receiver (signed as sent: ``X-Sentinel-Signature``)."""

    event: Event
    incident: Incident
