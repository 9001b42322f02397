"""Balances and AR aging from the ledger, in SQL: one query for many clients."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from billing.models import Client, LedgerEntry, LedgerKind
from billing.selectors import (
    Aging,
    ar_aging,
    client_aging,
    client_balance,
    client_balances,
    clients_aging,
    clients_with_balance,
)

pytestmark = pytest.mark.django_db
TODAY = dt.date(2026, 11, 27)


def client(name: str = "Ana") -> Client:
    return Client.objects.create(first_name=name, last_name="Example")


def post(who: Client, amount: int, days_ago: int, kind: str = LedgerKind.SESSION_CHARGE) -> None:
    LedgerEntry.objects.create(client=who, kind=kind, amount_cents=amount,
                               occurred_on=TODAY - dt.timedelta(days=days_ago), actor="test",
                               created_at=timezone.now())


def test_balance_is_the_sum_of_the_ledger() -> None:
    ana, bo = client(), client("Bo")
    post(ana, 15000, 3)
    post(ana, -5000, 1, LedgerKind.PAYMENT)
    assert client_balance(ana) == 10000
    assert client_balance(bo) == 0
    assert client_balances([ana.pk, bo.pk]) == {ana.pk: 10000, bo.pk: 0}


def test_many_balances_take_one_query(django_assert_num_queries: Any) -> None:
    people = [client(f"N{i}") for i in range(5)]
    for i, who in enumerate(people):
        post(who, 1000 * (i + 1), i)
    with django_assert_num_queries(1):
        rows = {c.pk: c.balance_cents for c in clients_with_balance(Client.objects.all())}  # type: ignore[attr-defined]
    assert rows == {who.pk: 1000 * (i + 1) for i, who in enumerate(people)}
    with django_assert_num_queries(1):
        assert len(clients_aging([c.pk for c in people], TODAY)) == 5


@pytest.mark.parametrize(("days_ago", "bucket"), [
    (-3, "current"), (0, "current"), (30, "current"), (31, "days_31_60"), (60, "days_31_60"),
    (61, "days_61_90"), (90, "days_61_90"), (91, "days_over_90"), (400, "days_over_90")])
def test_aging_buckets_by_days_since_the_date_of_service(days_ago: int, bucket: str) -> None:
    ana = client()
    post(ana, 5000, days_ago)
    assert client_aging(ana, TODAY).as_dict() == {**Aging().as_dict(), bucket: 5000}


def test_a_payment_against_a_session_clears_that_session_where_it_sits() -> None:
    ana = client()
    post(ana, 9000, 100)
    post(ana, 4000, 10)
    post(ana, -4000, 10, LedgerKind.PAYMENT)  # dated like the charge it paid
    assert client_aging(ana, TODAY) == Aging(days_over_90=9000)


def test_an_unallocated_credit_pays_the_oldest_debt_first() -> None:
    ana = client()
    post(ana, 9000, 100)
    post(ana, 4000, 45)
    post(ana, -10000, 0, LedgerKind.PAYMENT)  # a balance payment today
    aging = client_aging(ana, TODAY)
    assert aging == Aging(days_31_60=3000)
    assert aging.total == client_balance(ana)


def test_a_client_in_credit_shows_it_as_current() -> None:
    ana = client()
    post(ana, 2000, 70)
    post(ana, -5000, 2, LedgerKind.PAYMENT)
    assert client_aging(ana, TODAY) == Aging(current=-3000)


def test_practice_aging_adds_up_clients_without_mixing_their_credits() -> None:
    ana, bo = client(), client("Bo")
    post(ana, 9000, 100)
    post(bo, -1000, 5, LedgerKind.PAYMENT)
    assert ar_aging(TODAY) == Aging(current=-1000, days_over_90=9000)
