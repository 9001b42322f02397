from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from billing.models import (
    CLIENT_REVIEW_KINDS,
    NO_CARD_HOLD,
    Appointment,
    Charge,
    ChargeStatus,
    Client,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)


def _open_items(kind: str, client: Client, appointment: Appointment | None) -> QuerySet[ReviewItem]:
    """The open items for this cause: one per client for a cause about the client (no card, Stripe
    customer, charges waiting for a choice), else one per client and session."""
    items = ReviewItem.objects.filter(kind=kind, client=client, status=ReviewStatus.OPEN)
    return items if kind in CLIENT_REVIEW_KINDS else items.filter(appointment=appointment)


def review_open(*, kind: str, client: Client, reason: str, now: dt.datetime,
                appointment: Appointment | None = None, charge: Charge | None = None) -> ReviewItem:
    """Put something in front of staff; an open item for the same cause and record is updated, not
    repeated (a client without a card and a session every week has one item, not one a week)."""
    reason = reason[:500]
    item = _open_items(kind, client, appointment).order_by("created_at", "id").first()
    if item is None:
        try:
            with transaction.atomic():
                return ReviewItem.objects.create(kind=kind, client=client, appointment=appointment, charge=charge,
                                                 reason=reason, created_at=now)
        except IntegrityError:  # opened at the same moment by another worker: that one stands
            item = _open_items(kind, client, appointment).get()
    if kind in CLIENT_REVIEW_KINDS:
        # The client's one item names the latest session and charge, so closing it for that session
        # (review_close_stale) finds it.
        if (item.reason, item.charge_id, item.appointment_id) != (
                reason, charge.pk if charge else None, appointment.pk if appointment else None):
            item.reason, item.charge, item.appointment = reason, charge, appointment
            item.save(update_fields=["reason", "charge", "appointment"])
    elif item.reason != reason or item.charge_id != (charge.pk if charge else None):
        item.reason = reason
        item.charge = charge
        item.save(update_fields=["reason", "charge"])
    return item


def review_resolve(*, item: ReviewItem, now: dt.datetime, user: User | None = None,
                   note: str = "") -> ReviewItem:
    if item.status == ReviewStatus.RESOLVED:
        return item
    item.status = ReviewStatus.RESOLVED
    item.resolved_at = now
    item.resolved_by = user
    item.resolution_note = note[:300]
    item.save(update_fields=["status", "resolved_at", "resolved_by", "resolution_note"])
    return item


def review_close_stale(*, kind: str, client: Client, appointment: Appointment | None, now: dt.datetime,
                       note: str) -> None:
    """Close an open item whose cause went away (e.g. benefits were completed and the charge priced).

    A client's one "no card" item stays open while another of their charges still waits for a card
    (one of them canceled or paid is not the end of it); it then names that charge."""
    for item in ReviewItem.objects.filter(kind=kind, client=client, appointment=appointment,
                                          status=ReviewStatus.OPEN):
        if kind == ReviewKind.NO_CARD and appointment is not None:
            still_held = (Charge.objects.filter(client=client, status=ChargeStatus.DUE, hold_reason=NO_CARD_HOLD)
                          .exclude(appointment=appointment).order_by("scheduled_for", "id").first())
            if still_held is not None:
                item.appointment, item.charge = still_held.appointment, still_held
                item.save(update_fields=["appointment", "charge"])
                continue
        review_resolve(item=item, now=now, note=note)
