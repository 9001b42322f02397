"""Stripe webhooks: stored once by event id, applied by re-reading the object from Stripe.

Re-reading means the order of delivery does not matter and a stale event cannot walk a final state
back; storing by id means a repeated delivery does nothing. An event about a PaymentIntent the portal
did not make is acknowledged and kept (its outcome says so), so staff can look at it in the admin's
Stripe events; Stripe would otherwise send it again for days.
"""

from __future__ import annotations

import datetime as dt

from billing.models import StripeEvent
from billing.services.cards import card_save_from_setup_intent
from billing.services.payments import payment_refresh
from integrations.stripe.gateway import GatewayRefused, WebhookEvent, get_gateway

UNKNOWN_PAYMENT = "unknown payment intent: kept for reconciliation"


def stripe_event_verify(*, body: bytes, signature: str) -> WebhookEvent:
    """The event a webhook request carries, if its signature and time are good and it is an event;
    raises ValueError with the reason otherwise."""
    return get_gateway().webhook_event(body, signature)


def stripe_event_receive(*, event: WebhookEvent, now: dt.datetime) -> str:
    """Apply a verified event once. Raises OutcomeUnknown if Stripe cannot be asked (Stripe retries)."""
    stored, created = StripeEvent.objects.get_or_create(
        event_id=event.id, defaults={"type": event.type[:100], "object_id": event.object_id[:100], "received_at": now})
    if not created and stored.processed_at is not None:
        return "duplicate"
    outcome = _apply(event, now)
    StripeEvent.objects.filter(pk=stored.pk).update(processed_at=now, outcome=outcome[:300])
    return outcome


def _apply(event: WebhookEvent, now: dt.datetime) -> str:
    if event.object_type == "payment_intent" and event.object_id:
        try:
            found = payment_refresh(payment_intent_id=event.object_id, now=now)
        except GatewayRefused as refused:
            if refused.missing:  # Stripe itself has no such PaymentIntent: asking again will not help
                return UNKNOWN_PAYMENT
            raise
        # Not one of ours (or an attempt whose worker died before learning the id: the janitor settles those).
        return "settled" if found else UNKNOWN_PAYMENT
    if event.type == "setup_intent.succeeded" and event.object_id:
        client = card_save_from_setup_intent(setup_intent_id=event.object_id, now=now)
        return "card saved" if client else "no enrollment link for this SetupIntent"
    return "ignored"
