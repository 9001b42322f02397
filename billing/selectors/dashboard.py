"""What needs a person today: the reads behind the console's front page.

Each function returns a ``Queue``: how many rows there are and the first few, with the related rows
the page shows already joined (two queries per queue, whatever its size).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet

from billing.models import (
    PAID_STATUSES,
    PENDING_STATUSES,
    STUCK_STATUSES,
    AttemptStatus,
    BalanceAllocation,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    FindingStatus,
    LedgerEntry,
    LedgerKind,
    PaymentAttempt,
    ReconciliationFinding,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.selectors.estimates import clients_without_estimate
from billing.services.ledger import OWED_KINDS

FEE_KINDS = (ChargeKind.NO_SHOW_FEE, ChargeKind.LATE_CANCEL_FEE)

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


# Review items about a held charge or a Stripe link have their own queue on the page (on hold, Stripe
# links), where their fix is offered: "needs review" lists the rest, so nothing shows twice.
OWN_QUEUE_KINDS = (ReviewKind.CHARGE_CAP, ReviewKind.NO_CARD, ReviewKind.WAITING_CHOICE, ReviewKind.STRIPE_LINK,
                   ReviewKind.ESTIMATE_HOLD)


def needs_review(items: QuerySet[ReviewItem]) -> QuerySet[ReviewItem]:
    return items.filter(status=ReviewStatus.OPEN).exclude(kind__in=OWN_QUEUE_KINDS)


def open_review_items(*, limit: int = ROWS_SHOWN) -> Queue:
    """One row per client and cause: a client's sessions waiting for the same kind of reason (benefits
    missing week after week) are one row, the oldest item standing for them, with ``sessions`` (each
    item's session) and ``repeats`` (how many items) set on it. Three queries."""
    items = needs_review(ReviewItem.objects.all())
    oldest = items.order_by("kind", "client_id", "created_at", "id").distinct("kind", "client_id").values("id")
    count = items.values("kind", "client_id").distinct().count()
    rows: list[Any] = list(ReviewItem.objects.filter(pk__in=oldest).select_related("client", "appointment", "charge")
                           .order_by("created_at", "id")[:limit])
    if rows:
        same_cause = Q()
        for row in rows:
            same_cause |= Q(kind=row.kind, client_id=row.client_id)
        groups: dict[tuple[str, int], list[ReviewItem]] = {}
        for item in items.filter(same_cause).select_related("appointment").order_by("created_at", "id"):
            groups.setdefault((item.kind, item.client_id), []).append(item)
        for row in rows:
            group = groups.get((row.kind, row.client_id), [row])
            row.sessions = [item.appointment for item in group if item.appointment is not None]
            row.repeats = len(group)
    return Queue(count=count, rows=rows)


# A charge is in one queue only. In order: on hold (due, but held for staff or the client), fee review
# (a no-show or late-cancel fee still inside its review window), failed or waiting for the client
# (a status of its own), due today (everything else that runs before the practice's day ends).
def charges_on_hold(charges: QuerySet[Charge]) -> QuerySet[Charge]:
    """Due charges the portal will not take by itself (above the cap, no card, waiting for the client's
    choice, being paid on the portal): they wait for staff or the client."""
    return charges.filter(status=ChargeStatus.DUE).exclude(hold_reason="")


def fees_in_review(charges: QuerySet[Charge]) -> QuerySet[Charge]:
    """No-show and late-cancel fees inside their review window: staff may still waive them."""
    return charges.filter(kind__in=FEE_KINDS, status=ChargeStatus.SCHEDULED)


def charges_due_by_end_of_today(charges: QuerySet[Charge], *, now: dt.datetime,
                                zone: zoneinfo.ZoneInfo) -> QuerySet[Charge]:
    """Charges the portal takes by itself before the practice's day ends (or should have already)."""
    return (charges.filter(status__in=PENDING_STATUSES, scheduled_for__lt=end_of_today(now=now, zone=zone),
                           hold_reason="")
            .exclude(kind__in=FEE_KINDS, status=ChargeStatus.SCHEDULED))


def charges_due_today(*, now: dt.datetime, zone: zoneinfo.ZoneInfo, limit: int = ROWS_SHOWN) -> Queue:
    charges = (charges_due_by_end_of_today(Charge.objects.all(), now=now, zone=zone)
               .select_related("client").order_by("scheduled_for", "id"))
    return _queue(charges, limit)


def stuck_charges(*, limit: int = ROWS_SHOWN) -> Queue:
    """Declined cards and cards waiting for the client to authenticate: the front desk may call."""
    charges = (Charge.objects.filter(status__in=STUCK_STATUSES)
               .select_related("client").order_by("-updated_at", "-id"))
    return _queue(charges, limit)


def held_charges(*, limit: int = ROWS_SHOWN) -> Queue:
    charges = charges_on_hold(Charge.objects.all()).select_related("client").order_by("scheduled_for", "id")
    return _queue(charges, limit)


def fee_review(*, limit: int = ROWS_SHOWN) -> Queue:
    charges = (fees_in_review(Charge.objects.all()).select_related("client", "appointment")
               .order_by("scheduled_for", "id"))
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


def findings_to_settle(*, limit: int = ROWS_SHOWN) -> Queue:
    """Open reconciliation findings the last run still found, oldest week first."""
    findings = (ReconciliationFinding.objects.filter(status=FindingStatus.OPEN, gone_at__isnull=True)
                .select_related("client").order_by("week", "id"))
    return _queue(findings, limit)


def estimates_missing(*, today: dt.date, limit: int = ROWS_SHOWN) -> Queue:
    """Self-pay clients with no good faith estimate in force today: the law wants one for each."""
    return _queue(clients_without_estimate(today=today), limit)


def today(*, now: dt.datetime, zone: zoneinfo.ZoneInfo) -> dict[str, Queue]:
    return {
        "review_items": open_review_items(),
        "fee_review": fee_review(),
        "charges_due": charges_due_today(now=now, zone=zone),
        "stuck_charges": stuck_charges(),
        "flagged_clients": flagged_clients(),
        "held_charges": held_charges(),
        "unknown_attempts": unknown_attempts(now=now),
        "stripe_links": stripe_link_items(),
        "findings": findings_to_settle(),
        "estimates_missing": estimates_missing(today=now.astimezone(zone).date()),
    }


@dataclass(frozen=True)
class Money:
    """The collection rate of a period: of what its sessions and fees came to (by date of service, net of
    re-pricing, cancellations and waivers), the share paid so far (card payments less refunds, and portal
    balance payments toward them), whenever it was paid. Cash received is what came in during the period,
    whatever it paid for: a different figure, shown apart."""

    charged_week: int
    collected_week: int
    charged_month: int
    collected_month: int
    received_week: int = 0
    received_month: int = 0

    @staticmethod
    def rate(collected: int, charged: int) -> str:
        return f"{100 * collected / charged:.0f}%" if charged > 0 else "-"

    @property
    def rate_week(self) -> str:
        return self.rate(self.collected_week, self.charged_week)

    @property
    def rate_month(self) -> str:
        return self.rate(self.collected_month, self.charged_month)


_MONEY_SQL = f"""
WITH cohort AS (
    -- The period's charges: a session charge or fee entry dated (date of service) in the period.
    SELECT charge_id, MIN(occurred_on) AS served_on FROM {LedgerEntry._meta.db_table}
    WHERE kind = ANY(%(first_kinds)s) AND occurred_on >= %(start)s AND occurred_on <= %(today)s
      AND charge_id IS NOT NULL
    GROUP BY charge_id
), per_charge AS (
    -- What each of them came to, and what was paid toward it (a card payment on it, less refunds).
    SELECT cohort.charge_id, MIN(cohort.served_on) AS served_on,
           COALESCE(SUM(e.amount_cents) FILTER (WHERE e.kind = ANY(%(owed_kinds)s)), 0) AS owed,
           COALESCE(-SUM(e.amount_cents) FILTER (WHERE e.kind = ANY(%(paid_kinds)s)), 0) AS paid
    FROM cohort JOIN {LedgerEntry._meta.db_table} e ON e.charge_id = cohort.charge_id
    GROUP BY cohort.charge_id
), portal_paid AS (
    -- Portal balance payments that went through, toward them.
    SELECT cohort.served_on, a.amount_cents FROM cohort
    JOIN {BalanceAllocation._meta.db_table} a ON a.charge_id = cohort.charge_id
    JOIN {Charge._meta.db_table} p ON p.id = a.payment_id AND p.status = ANY(%(paid_statuses)s)
), received AS (
    -- Cash received in the period, whatever it paid for.
    SELECT COALESCE(-SUM(amount_cents) FILTER (WHERE occurred_on >= %(week)s), 0) AS week,
           COALESCE(-SUM(amount_cents) FILTER (WHERE occurred_on >= %(month)s), 0) AS month
    FROM {LedgerEntry._meta.db_table}
    WHERE kind = ANY(%(paid_kinds)s) AND occurred_on >= %(start)s AND occurred_on <= %(today)s
)
SELECT COALESCE((SELECT SUM(owed) FROM per_charge WHERE served_on >= %(week)s), 0),
       COALESCE((SELECT SUM(paid) FROM per_charge WHERE served_on >= %(week)s), 0)
       + COALESCE((SELECT SUM(amount_cents) FROM portal_paid WHERE served_on >= %(week)s), 0),
       COALESCE((SELECT SUM(owed) FROM per_charge WHERE served_on >= %(month)s), 0),
       COALESCE((SELECT SUM(paid) FROM per_charge WHERE served_on >= %(month)s), 0)
       + COALESCE((SELECT SUM(amount_cents) FROM portal_paid WHERE served_on >= %(month)s), 0),
       received.week, received.month
FROM received
"""


def money_in_and_out(*, today: dt.date) -> Money:
    """This week's (from Monday) and this month's collection rate (see ``Money``), and the cash received in
    each: one query."""
    week, month = today - dt.timedelta(days=today.weekday()), today.replace(day=1)
    params: dict[str, Any] = {
        "first_kinds": [LedgerKind.SESSION_CHARGE, LedgerKind.FEE], "owed_kinds": list(OWED_KINDS),
        "paid_kinds": [LedgerKind.PAYMENT, LedgerKind.REFUND], "paid_statuses": list(PAID_STATUSES),
        "start": min(week, month), "today": today, "week": week, "month": month}
    with connection.cursor() as cursor:
        cursor.execute(_MONEY_SQL, params)
        row = cursor.fetchone()
    return Money(*(int(value) for value in row))
