from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User

from billing.models import Appointment, Charge, Client, ReviewItem, ReviewStatus


def review_open(*, kind: str, client: Client, reason: str, now: dt.datetime,
                appointment: Appointment | None = None, charge: Charge | None = None) -> ReviewItem:
    """Put something in front of staff; an open item for the same thing is updated, not repeated."""
    item, created = ReviewItem.objects.get_or_create(
        kind=kind, client=client, appointment=appointment, status=ReviewStatus.OPEN,
        defaults={"reason": reason[:500], "charge": charge, "created_at": now})
    if not created and (item.reason != reason[:500] or item.charge_id != (charge.pk if charge else None)):
        item.reason = reason[:500]
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
    """Close an open item whose cause went away (e.g. benefits were completed and the charge priced)."""
    for item in ReviewItem.objects.filter(kind=kind, client=client, appointment=appointment,
                                          status=ReviewStatus.OPEN):
        review_resolve(item=item, now=now, note=note)
