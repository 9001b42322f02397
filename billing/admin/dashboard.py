"""What needs a person today: the reads behind the console's front page.

Each function returns a ``Queue``: how many rows there are and the first few, with the related rows
the page shows already joined (two queries per queue, whatever its size).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet

from billing.models import (
    PENDING_STATUSES,
    STUCK_STATUSES,
    AttemptStatus,
    Charge,
    ChargeStatus,
    Client,
    PaymentAttempt,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)

ROWS_SHOWN = 10

# As billing.services.payments.UNKNOWN_AFTER: an attempt open this long is waiting for the janitor.
UNKNOWN_AFTER = dt.timedelta(minutes=2)


@dataclass(frozen=True)
class Queue:
    count: int
    rows: list[Any]


def _queue(queryset: QuerySet[Any], limit: int) -> Queue:
    return Queue(count=queryset.count(), rows=list(queryset[:limit]))


def end_of_today(*, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """Midnight at the end of the practice's current day (the practice's day, not UTC's)."""
    tomorrow = now.astimezone(zone).date() + dt.timedelta(days=1)
    return dt.datetime.combine(tomorrow, dt.time.min, tzinfo=zone)


def open_review_items(*, limit: int = ROWS_SHOWN) -> Queue:
    items = (ReviewItem.objects.filter(status=ReviewStatus.OPEN)
             .select_related("client", "appointment").order_by("created_at", "id"))
    return _queue(items, limit)


def charges_due_today(*, now: dt.datetime, zone: zoneinfo.ZoneInfo, limit: int = ROWS_SHOWN) -> Queue:
    """Charges that run before the practice's day ends, including any that should already have run."""
    charges = (charges_due_by_end_of_today(Charge.objects.all(), now=now, zone=zone)
               .select_related("client").order_by("scheduled_for", "id"))
    return _queue(charges, limit)


def charges_due_by_end_of_today(charges: QuerySet[Charge], *, now: dt.datetime,
                                zone: zoneinfo.ZoneInfo) -> QuerySet[Charge]:
    return charges.filter(status__in=PENDING_STATUSES, scheduled_for__lt=end_of_today(now=now, zone=zone))


def stuck_charges(*, limit: int = ROWS_SHOWN) -> Queue:
    """Declined cards and cards waiting for the client to authenticate: the front desk may call."""
    charges = (Charge.objects.filter(status__in=STUCK_STATUSES)
               .select_related("client").order_by("-updated_at", "-id"))
    return _queue(charges, limit)


def charges_on_hold(charges: QuerySet[Charge]) -> QuerySet[Charge]:
    """Due charges the portal will not take by itself (above the cap, or no card): they wait for staff."""
    return charges.filter(status=ChargeStatus.DUE).exclude(hold_reason="")


def held_charges(*, limit: int = ROWS_SHOWN) -> Queue:
    charges = charges_on_hold(Charge.objects.all()).select_related("client").order_by("scheduled_for", "id")
    return _queue(charges, limit)


def unknown_attempts(*, now: dt.datetime, limit: int = ROWS_SHOWN) -> Queue:
    """Calls to Stripe with no answer yet: the janitor asks again; a person checks if it lasts."""
    attempts = (PaymentAttempt.objects.filter(status=AttemptStatus.STARTED, started_at__lt=now - UNKNOWN_AFTER)
                .select_related("charge__client").order_by("started_at", "id"))
    return _queue(attempts, limit)


def stripe_link_items(*, limit: int = ROWS_SHOWN) -> Queue:
    items = (ReviewItem.objects.filter(status=ReviewStatus.OPEN, kind=ReviewKind.STRIPE_LINK)
             .select_related("client").order_by("created_at", "id"))
    return _queue(items, limit)


def flagged_clients(*, limit: int = ROWS_SHOWN) -> Queue:
    clients = Client.objects.filter(flagged_for_outreach=True).order_by("flagged_at", "id")
    return _queue(clients, limit)


def today(*, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> dict[str, Queue]:
    return {
        "review_items": open_review_items(),
        "charges_due": charges_due_today(now=now, zone=zone),
        "stuck_charges": stuck_charges(),
        "flagged_clients": flagged_clients(),
        "held_charges": held_charges(),
        "unknown_attempts": unknown_attempts(now=now),
        "stripe_links": stripe_link_items(),
    }
