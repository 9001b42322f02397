from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Sum

from billing.models import AgingDay, Appointment, Charge, Client, ClientBalance, LedgerEntry, LedgerKind

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


_ROLL_ZERO = (f"UPDATE {ClientBalance._meta.db_table} SET aged_0_30_cents = 0, aged_31_60_cents = 0, "
              "aged_61_90_cents = 0 WHERE aged_0_30_cents <> 0 OR aged_31_60_cents <> 0 OR aged_61_90_cents <> 0")
_ROLL_SET = f"""
UPDATE {ClientBalance._meta.db_table} b SET aged_0_30_cents = r.n0, aged_31_60_cents = r.n1, aged_61_90_cents = r.n2
FROM (
    SELECT client_id,
           COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on >= %(d30)s), 0) AS n0,
           COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(d30)s AND occurred_on >= %(d60)s), 0) AS n1,
           COALESCE(SUM(amount_cents) FILTER (WHERE occurred_on < %(d60)s), 0) AS n2
    FROM {LedgerEntry._meta.db_table} WHERE occurred_on >= %(d90)s GROUP BY client_id
) r
WHERE b.client_id = r.client_id
"""


def aging_roll(*, today: dt.date) -> int:
    """Make every client's kept aged amounts (ClientBalance) as of ``today``, the practice's date, once a day:
    the ledger's last 90 days, netted by age, in two statements. The ledger's triggers then keep them as
    entries are written. Returns 1 when it rolled, 0 when they already were."""
    with transaction.atomic():
        # Locked for update: waits for the transactions writing entries now (their triggers hold it shared)
        # and makes the next ones wait, so none is aged against the day being replaced.
        day = AgingDay.objects.select_for_update().get_or_create(pk=1)[0]
        if day.as_of == today:
            return 0
        with connection.cursor() as cursor:
            cursor.execute(_ROLL_ZERO)
            cursor.execute(_ROLL_SET, {"d30": today - dt.timedelta(days=30), "d60": today - dt.timedelta(days=60),
                                       "d90": today - dt.timedelta(days=90)})
        day.as_of = today
        day.save(update_fields=["as_of"])
    return 1
