"""The figures on the console's front page, beside today's queues: money in and out, AR aging, and what
the weekly reconciliation still has open. A fixed number of queries, whatever the size of the data."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from billing.admin.charts import Chart, bar_chart
from billing.models import FindingKind
from billing.money import format_cents
from billing.selectors import ar_aging_summary, open_findings_by_kind
from billing.selectors.dashboard import money_in_and_out

AGING_LABELS = {"current": "0-30 days", "days_31_60": "31-60 days", "days_61_90": "61-90 days",
                "days_over_90": "Over 90 days"}


def front_page(*, now: dt.datetime, zone: zoneinfo.ZoneInfo, queues: dict[str, Any]) -> dict[str, Any]:
    """Three queries (money, AR aging, open findings); the failure and flag counts come from the queues."""
    today = now.astimezone(zone).date()
    money = money_in_and_out(today=today)
    debtors, aging = ar_aging_summary(today)
    findings = open_findings_by_kind()
    flags = [("Failed or waiting", queues["stuck_charges"].count), ("On hold", queues["held_charges"].count),
             ("Fees in review", queues["fee_review"].count), ("Clients to call", queues["flagged_clients"].count),
             ("Needs review", queues["review_items"].count)]
    charts: dict[str, Chart] = {
        "money": bar_chart(title="Charged and collected", bars=[
            ("This week's sessions and fees", money.charged_week), ("Paid of them so far", money.collected_week),
            ("This month's sessions and fees", money.charged_month),
            ("Paid of them so far (month)", money.collected_month)]),
        "aging": bar_chart(title="AR aging", bars=[(AGING_LABELS[k], v) for k, v in aging.as_dict().items()]),
        "flags": bar_chart(title="Open failures and flags", unit="count", bars=flags),
        "findings": bar_chart(title="Open reconciliation findings", unit="count",
                              bars=[(label, findings.get(kind, 0)) for kind, label in FindingKind.choices]),
    }
    dollars = {name: format_cents(getattr(money, name)) for name in (
        "charged_week", "collected_week", "charged_month", "collected_month", "received_week", "received_month")}
    return {"money": money, "dollars": dollars, "aging": aging, "aging_total": aging.total,
            "debtors": debtors, "findings_open": sum(findings.values()), "charts": charts, "today": today}
