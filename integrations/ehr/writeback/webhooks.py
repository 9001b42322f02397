"""Write-back webhooks (docs/product.md, workflow 6): the portal tells the EHR side what happened to a charge.

``events_enqueue`` is called by billing (through ``billing.services.outbound``) inside the transaction that
moves the charge, so the event exists exactly when the change does. ``events_deliver`` (a billing_tick
step) POSTs what is due with httpx, holding no transaction during the call, and records the answer:
2xx delivers; anything else is retried with exponential backoff (30 s, 1 min, 2 min, ... at most 6 h
apart) until ``MAX_ATTEMPTS``, after which it waits for staff ("retry now" in the admin). Delivery is at
least once (a receiver dedupes on the event id) and in order per charge: an event waits while an earlier
one for the same charge and endpoint is undelivered.

Each request carries ``Portal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``
plus ``Portal-Event-Id`` and ``Portal-Event-Type``. The body names the charge and the EHR's own ids, the
amount and status: nothing clinical (no diagnosis, service code, clinician or time).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from collections.abc import Sequence

import httpx
from django.db import transaction
from django.db.models import Exists, OuterRef, Q

from billing.models import Charge
from integrations.ehr.models import WebhookEndpoint, WebhookEvent, WebhookEventStatus

log = logging.getLogger(__name__)

EVENT_TYPES = ("charge.succeeded", "charge.failed", "charge.refunded", "charge.fee_waived")
FIRST_RETRY = dt.timedelta(seconds=30)
MAX_DELAY = dt.timedelta(hours=6)
MAX_ATTEMPTS = 20  # about three days of retries
STALE_CLAIM = dt.timedelta(minutes=5)
TIMEOUT_SECONDS = 10.0
BATCH = 200
SIGNATURE_HEADER = "Portal-Signature"


def secret_create() -> str:
    return f"pws_{secrets.token_urlsafe(32)}"


def sign(*, secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(*, secret: str, header: str, body: bytes, now: float | None = None, tolerance: int = 300) -> bool:
    """What a receiver does (a copy is in the README): check the MAC and that the timestamp is recent."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = sign(secret=secret, timestamp=timestamp, body=body).split("v1=")[1]
    fresh = abs((now if now is not None else time.time()) - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempts: int) -> dt.timedelta:
    """Delay after the ``attempts``-th failed delivery: 30 s doubling, at most 6 hours."""
    return min(FIRST_RETRY * (2 ** max(attempts - 1, 0)), MAX_DELAY)


def events_enqueue(*, charges: Sequence[Charge], type: str, now: dt.datetime) -> int:
    """Write the event for each charge whose source has an active endpoint (one query for the
    endpoints, one insert); returns how many. Call inside the transaction that changes the charges."""
    if type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type!r}")
    sources = {charge.client.source for charge in charges} - {""}
    if not sources:
        return 0
    endpoints = {endpoint.source: endpoint for endpoint in
                 WebhookEndpoint.objects.filter(source__in=sources, active=True).order_by("-pk")}
    events = []
    for charge in charges:
        endpoint = endpoints.get(charge.client.source)
        if endpoint is not None:
            event_id = f"evt_{uuid.uuid4().hex}"
            events.append(WebhookEvent(event_id=event_id, endpoint=endpoint, charge=charge, type=type,
                                       payload=_payload(event_id, charge, type, now), occurred_at=now,
                                       next_attempt_at=now))
    WebhookEvent.objects.bulk_create(events)
    return len(events)


def _payload(event_id: str, charge: Charge, type: str, now: dt.datetime) -> dict[str, object]:
    appointment = charge.appointment
    return {
        "id": event_id,
        "type": type,
        "occurred_at": now.isoformat(),
        "data": {
            "charge": charge.pk,
            "kind": charge.kind,
            "client": charge.client.external_id,
            "appointment": (appointment.external_id or None) if appointment is not None else None,
            "amount_cents": charge.amount_cents,
            "refunded_cents": charge.refunded_cents,
            "status": charge.status,
            "payment_reference": charge.payment_reference,
        },
    }


def _earlier_undelivered() -> Exists:
    return Exists(WebhookEvent.objects.filter(endpoint_id=OuterRef("endpoint_id"), charge_id=OuterRef("charge_id"),
                                              pk__lt=OuterRef("pk")).exclude(status=WebhookEventStatus.DELIVERED))


def events_deliver(*, now: dt.datetime, only: list[int] | None = None) -> int:
    """Deliver what is due; returns deliveries. Each event is claimed in its own short transaction, then
    POSTed with no transaction open. A charge's next event becomes due once the one before it is delivered,
    so a few rounds run while rounds deliver something."""
    delivered = 0
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False) as http:
        for _ in range(10):
            due = (WebhookEvent.objects.filter(
                Q(status=WebhookEventStatus.PENDING, next_attempt_at__lte=now)
                & (Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - STALE_CLAIM)))
                .filter(~_earlier_undelivered(), endpoint__active=True).order_by("pk"))
            if only is not None:
                due = due.filter(pk__in=only)
            round_delivered = 0
            for pk in list(due.values_list("pk", flat=True)[:BATCH]):
                event = _claim(pk, now)
                if event is not None and _send(http, event, now):
                    round_delivered += 1
            delivered += round_delivered
            if not round_delivered:
                break
    return delivered


def _claim(pk: int, now: dt.datetime) -> WebhookEvent | None:
    with transaction.atomic():
        event = (WebhookEvent.objects.select_for_update(skip_locked=True).select_related("endpoint")
                 .filter(pk=pk, status=WebhookEventStatus.PENDING, next_attempt_at__lte=now)
                 .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - STALE_CLAIM)).first())
        if event is None:
            return None
        event.claimed_at = now
        event.attempts += 1
        event.save(update_fields=["claimed_at", "attempts"])
    return event


def _send(http: httpx.Client, event: WebhookEvent, now: dt.datetime) -> bool:
    body = json.dumps(event.payload, separators=(",", ":"), sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "practice-billing-portal/1",
               SIGNATURE_HEADER: sign(secret=event.endpoint.secret, timestamp=int(time.time()), body=body),
               "Portal-Event-Id": event.event_id, "Portal-Event-Type": event.type}
    status_code: int | None = None
    try:
        response = http.post(event.endpoint.url, content=body, headers=headers)
        status_code = response.status_code
        ok = 200 <= status_code < 300
        error = "" if ok else f"HTTP {status_code}: {response.text[:200]}"
    except httpx.HTTPError as exc:
        ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
    if ok:
        WebhookEvent.objects.filter(pk=event.pk).update(
            status=WebhookEventStatus.DELIVERED, delivered_at=now, claimed_at=None, last_status_code=status_code,
            last_error="")
        return True
    log.warning("webhook %s to %s not delivered (attempt %s): %s", event.event_id, event.endpoint.source,
                event.attempts, error.split(":")[0])
    gave_up = event.attempts >= MAX_ATTEMPTS
    WebhookEvent.objects.filter(pk=event.pk).update(
        status=WebhookEventStatus.FAILED if gave_up else WebhookEventStatus.PENDING,
        next_attempt_at=now + backoff(event.attempts), claimed_at=None, last_status_code=status_code,
        last_error=error[:300])
    return False


def event_retry_now(*, event: WebhookEvent, now: dt.datetime) -> None:
    """Staff: try this event again at the next delivery run (a failed one gets a fresh round of attempts)."""
    WebhookEvent.objects.filter(pk=event.pk).exclude(status=WebhookEventStatus.DELIVERED).update(
        status=WebhookEventStatus.PENDING, next_attempt_at=now, claimed_at=None,
        attempts=0 if event.status == WebhookEventStatus.FAILED else event.attempts)

