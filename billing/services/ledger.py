from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User
from django.db.models import Sum

from billing.models import Appointment, Charge, Client, LedgerEntry, LedgerKind

# The entries that record what a charge's session or fee is worth (payments and refunds excluded).
OWED_KINDS = (LedgerKind.SESSION_CHARGE, LedgerKind.FEE, LedgerKind.ADJUSTMENT, LedgerKind.CHARGE_CANCELED,
              LedgerKind.WAIVER)


def ledger_post(*, client: Client, kind: str, amount_cents: int, occurred_on: dt.date, now: dt.datetime,
                actor: str, user: User | None = None, appointment: Appointment | None = None,
                charge: Charge | None = None, memo: str = "") -> LedgerEntry:
    entry = ledger_entry_build(client=client, kind=kind, amount_cents=amount_cents, occurred_on=occurred_on,
                               now=now, actor=actor, user=user, appointment=appointment, charge=charge, memo=memo)
    entry.save(force_insert=True)
    return entry


def ledger_entry_build(*, client: Client, kind: str, amount_cents: int, occurred_on: dt.date, now: dt.datetime,
                       actor: str, user: User | None = None, appointment: Appointment | None = None,
                       charge: Charge | None = None, memo: str = "") -> LedgerEntry:
    """The entry ``ledger_post`` writes, not saved yet (for entries written in bulk)."""
    return LedgerEntry(client=client, kind=kind, amount_cents=amount_cents, occurred_on=occurred_on,
                       appointment=appointment, charge=charge, memo=memo[:300], actor=actor, user=user,
                       created_at=now)


def ledger_post_many(entries: list[LedgerEntry]) -> list[LedgerEntry]:
    """``ledger_post`` for many entries in one insert (the tick's payments): each one built as ``ledger_post``
    would write it, with its memo cut to size."""
    for entry in entries:
        entry.memo = entry.memo[:300]
    return LedgerEntry.objects.bulk_create(entries)


def ledger_owed_for_charge(charge: Charge, *, with_write_offs: bool = False) -> int:
    """What the ledger says the client owes for the thing ``charge`` collects (before payments).

    Write-offs (a refund of an amount that was not owed) are kept apart: re-pricing a session keeps
    them, but a session that stops being billable takes them back to zero with the rest.
    """
    kinds = (*OWED_KINDS, LedgerKind.WRITE_OFF) if with_write_offs else OWED_KINDS
    total = LedgerEntry.objects.filter(charge=charge, kind__in=kinds).aggregate(t=Sum("amount_cents"))["t"]
    return total or 0
