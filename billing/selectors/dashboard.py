"""What needs a person today: the reads behind the console's front page.

Each function returns a ``Queue``: how many rows there are and the first few, with the related rows
the page shows already joined (two queries per queue, whatever its size).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, QuerySet, Sum

from billing.models import (
    PENDING_STATUSES,
    STUCK_STATUSES,
    AttemptStatus,
    Charge,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    PaymentAttempt,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.services.ledger import OWED_KINDS

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


COLLECTED_KINDS = (LedgerKind.PAYMENT, LedgerKind.REFUND)


@dataclass(frozen=True)
class Money:
    charged_week: int
    collected_week: int
    charged_month: int
    collected_month: int

    @staticmethod
    def rate(collected: int, charged: int) -> str:
        return f"{100 * collected / charged:.0f}%" if charged > 0 else "-"

    @property
    def rate_week(self) -> str:
        return self.rate(self.collected_week, self.charged_week)

    @property
    def rate_month(self) -> str:
        return self.rate(self.collected_month, self.charged_month)


def money_in_and_out(*, today: dt.date) -> Money:
    """Charged (what sessions and fees came to, net of re-pricing and cancellations, by date of service) and
    collected (card payments less refunds, by the day they happened), this week (from Monday) and this
    month: one query."""
    week, month = today - dt.timedelta(days=today.weekday()), today.replace(day=1)
    owed, paid = Q(kind__in=OWED_KINDS), Q(kind__in=COLLECTED_KINDS)
    row = LedgerEntry.objects.filter(occurred_on__gte=min(week, month), occurred_on__lte=today).aggregate(
        charged_week=Sum("amount_cents", filter=owed & Q(occurred_on__gte=week), default=0),
        collected_week=Sum("amount_cents", filter=paid & Q(occurred_on__gte=week), default=0),
        charged_month=Sum("amount_cents", filter=owed & Q(occurred_on__gte=month), default=0),
        collected_month=Sum("amount_cents", filter=paid & Q(occurred_on__gte=month), default=0))
    return Money(int(row["charged_week"]), -int(row["collected_week"]), int(row["charged_month"]),
                 -int(row["collected_month"]))
