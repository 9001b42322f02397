"""Kept client balances (ClientBalance): equal to the ledger's own sums whichever way entries are written,
AR aging from them equal to the definition, and ``manage.py verify_balances`` catching any drift."""

from __future__ import annotations

import datetime as dt
import random
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from billing.models import Client, ClientBalance, LedgerEntry, LedgerKind
from billing.selectors import (
    Aging,
    aging_mismatches,
    ar_aging_by_client,
    ar_aging_summary,
    balance_mismatches,
    client_aging,
    client_balances,
    clients_aging,
)
from billing.services.ledger import aging_roll, ledger_post, ledger_post_many
from tests.ledger_reference import aging_from_ledger, balances_from_ledger

pytestmark = pytest.mark.django_db
TODAY = dt.date(2026, 11, 27)


def people(n: int) -> list[Client]:
    return [Client.objects.create(first_name=f"N{i}", last_name="Example") for i in range(n)]


def entry(who: Client, amount: int, day: dt.date, kind: str = LedgerKind.SESSION_CHARGE) -> LedgerEntry:
    return LedgerEntry(client=who, kind=kind, amount_cents=amount, occurred_on=day, actor="test",
                       created_at=timezone.now())


def kept() -> dict[int, int]:
    return {row.client_id: row.balance_cents for row in ClientBalance.objects.exclude(balance_cents=0)}


def test_kept_balances_follow_every_way_the_ledger_is_written() -> None:
    ana, bo, cy = people(3)
    now = timezone.now()
    ledger_post(client=ana, kind=LedgerKind.SESSION_CHARGE, amount_cents=15_000, occurred_on=TODAY, now=now,
                actor="test")
    # The tick's bulk insert, several clients in one statement.
    ledger_post_many([entry(ana, -15_000, TODAY, LedgerKind.PAYMENT), entry(bo, 9_000, TODAY),
                      entry(bo, 4_000, TODAY), entry(cy, -2_500, TODAY, LedgerKind.PAYMENT)])
    LedgerEntry.objects.create(client=cy, kind=LedgerKind.FEE, amount_cents=7_000, occurred_on=TODAY, actor="t",
                               created_at=now)
    LedgerEntry.objects.bulk_create([entry(ana, 1_200, TODAY - dt.timedelta(days=200))])
    assert client_balances([ana.pk, bo.pk, cy.pk]) == {ana.pk: 1_200, bo.pk: 13_000, cy.pk: 4_500}

    # The application never changes or deletes an entry; were it done by hand, the balance still follows.
    LedgerEntry.objects.filter(client=bo, amount_cents=4_000).update(amount_cents=5_000, client=cy)
    LedgerEntry.objects.filter(client=ana, amount_cents=1_200).delete()
    assert kept() == {k: v for k, v in balances_from_ledger().items() if v} == {bo.pk: 9_000, cy.pk: 9_500}
    assert balance_mismatches() == []
    out = StringIO()
    call_command("verify_balances", stdout=out)
    assert "equal their ledger" in out.getvalue()


def test_verify_balances_names_a_client_whose_kept_balance_drifted() -> None:
    ana, bo = people(2)
    LedgerEntry.objects.bulk_create([entry(ana, 5_000, TODAY), entry(bo, 3_000, TODAY - dt.timedelta(days=45))])
    aging_roll(today=TODAY)
    call_command("verify_balances", stdout=StringIO())
    ClientBalance.objects.filter(client=bo).update(balance_cents=2_999)
    ClientBalance.objects.filter(client=ana).update(aged_31_60_cents=5_000, aged_0_30_cents=0)
    assert balance_mismatches() == [(bo.pk, 2_999, 3_000)]
    assert aging_mismatches() == [(ana.pk, (0, 5_000, 0), (5_000, 0, 0))]
    with pytest.raises(CommandError, match=f"client {bo.pk}: kept 2999 cents, ledger 3000 cents"):
        call_command("verify_balances", stdout=StringIO())


def test_aging_from_kept_balances_is_the_definition_whatever_the_day() -> None:
    rng = random.Random(7)
    clients = people(12)
    entries = []
    for who in clients:
        for _ in range(rng.randint(0, 12)):
            day = TODAY - dt.timedelta(days=rng.randint(-5, 200))
            amount = rng.choice([12_000, 2_500, 16_000, -12_000, -2_500, -30_000, -500])
            entries.append(entry(who, amount, day, LedgerKind.SESSION_CHARGE if amount > 0 else LedgerKind.PAYMENT))
    LedgerEntry.objects.bulk_create(entries)

    def aging_is_the_definition(today: dt.date) -> None:
        expected = aging_from_ledger(today)
        assert {k: v for k, v in clients_aging(None, today).items() if v != Aging()} == expected
        assert {r.client_id: r.aging for r in ar_aging_by_client(today, limit=None)} == expected
        count, total = ar_aging_summary(today)
        assert count == len(expected)
        assert total == sum(expected.values(), Aging())
        for who in clients:
            assert client_aging(who, today) == expected.get(who.pk, Aging())

    for today in (TODAY - dt.timedelta(days=40), TODAY, TODAY + dt.timedelta(days=29), TODAY + dt.timedelta(days=75)):
        aging_is_the_definition(today)  # from the balances and the last 90 days' entries
        assert aging_roll(today=today) == 1
        assert aging_roll(today=today) == 0  # once a day
        aging_is_the_definition(today)  # from the kept amounts by age only
        # Entries written after the roll are aged by the triggers against the same day.
        ledger_post_many([entry(who, rng.choice([9_000, -4_000]), today - dt.timedelta(days=rng.randint(-3, 120)))
                          for who in clients[:4]])
        aging_is_the_definition(today)
        assert aging_mismatches() == []
