"""The ledger's balances and AR aging worked out in Python, entry by entry, straight from the definition
(billing/selectors/__init__.py's docstring): what the kept balances and the aging query must equal."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from billing.models import LedgerEntry
from billing.selectors import Aging


def balances_from_ledger() -> dict[int, int]:
    totals: dict[int, int] = defaultdict(int)
    for client_id, amount in LedgerEntry.objects.values_list("client_id", "amount_cents"):
        totals[client_id] += amount
    return dict(totals)


def aging_from_ledger(today: dt.date) -> dict[int, Aging]:
    """Each client with anything in a bucket: entries netted in their bucket, then the credit pays the
    oldest debt first, what is left of it a current credit."""
    netted: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for client_id, day, amount in LedgerEntry.objects.values_list("client_id", "occurred_on", "amount_cents"):
        age = (today - day).days
        netted[client_id][0 if age <= 30 else 1 if age <= 60 else 2 if age <= 90 else 3] += amount
    aging = {}
    for client_id, buckets in netted.items():
        owed = [max(n, 0) for n in buckets]
        credit = sum(max(-n, 0) for n in buckets)
        for bucket in (3, 2, 1, 0):
            paid = min(credit, owed[bucket]) if bucket else credit
            owed[bucket] -= paid
            credit -= paid
        if any(owed):
            aging[client_id] = Aging(*owed)
    return aging
