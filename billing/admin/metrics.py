"""The figures on the console's front page, beside today's queues: money in and out, AR aging, and what
the weekly reconciliation still has open. A fixed number of queries, whatever the size of the data."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass
from typing import Any

from django.db.models import Q, Sum

from billing.admin.charts import Chart, bar_chart
from billing.models import FindingKind, LedgerEntry, LedgerKind
from billing.selectors import ar_aging_summary, open_findings_by_kind
from billing.services.ledger import OWED_KINDS

COLLECTED_KINDS = (LedgerKind.PAYMENT, LedgerKind.REFUND)
AGING_LABELS = {"current": "0-30 days", "days_31_60": "31-60 days", "days_61_90": "61-90 days",
                "days_over_90": "Over 90 days"}


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


def front_page(*, now: dt.datetime, zone: zoneinfo.ZoneInfo, queues: dict[str, Any]) -> dict[str, Any]:
    """Three queries (money, AR aging, open findings); the failure and flag counts come from the queues."""
    today = now.astimezone(zone).date()
    money = money_in_and_out(today=today)
    debtors, aging = ar_aging_summary(today)
    findings = open_findings_by_kind()
    flags = [("Failed or waiting", queues["stuck_charges"].count), ("On hold", queues["held_charges"].count),
             ("Clients to call", queues["flagged_clients"].count), ("Needs review", queues["review_items"].count)]
    charts: dict[str, Chart] = {
        "money": bar_chart(title="Charged and collected", bars=[
            ("Charged this week", money.charged_week), ("Collected this week", money.collected_week),
            ("Charged this month", money.charged_month), ("Collected this month", money.collected_month)]),
        "aging": bar_chart(title="AR aging", bars=[(AGING_LABELS[k], v) for k, v in aging.as_dict().items()]),
        "flags": bar_chart(title="Open failures and flags", unit="count", bars=flags),
        "findings": bar_chart(title="Open reconciliation findings", unit="count",
                              bars=[(label, findings.get(kind, 0)) for kind, label in FindingKind.choices]),
    }
    return {"money": money, "aging": aging, "aging_total": aging.total,
            "debtors": debtors, "findings_open": sum(findings.values()), "charts": charts, "today": today}
