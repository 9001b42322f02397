"""Balance reminders: day 14, day 21 with the phone, flag on day 28; a payment stops them and is thanked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import time_machine
from django.test import Client as HttpClient

from billing.models import Appointment, BillingType, Charge, ChargeStatus, Client, Practice
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, outbox, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)


def _unpaid_200(make_client: Callable[..., Client], completed_session: Callable[..., Appointment]) -> Client:
    client = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=20000)
    completed_session(client)  # no card on file: the charge waits, the balance is $200
    return client


def test_reminders_on_days_14_and_21_flag_on_28_none_repeated(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    immediate.phone = "555-0100"
    immediate.save()
    client = _unpaid_200(make_client, completed_session)
    happened: dict[int, str] = {}
    for day in range(36):
        before = len(outbox("balance_reminder")), len(outbox("balance_second_reminder"))
        tick(FRIDAY_10AM + day * DAY)
        after = len(outbox("balance_reminder")), len(outbox("balance_second_reminder"))
        if after != before:
            happened[day] = "first" if after[0] > before[0] else "second"
        client.refresh_from_db()
        if client.flagged_for_outreach and "flag" not in happened.values():
            happened[day] = "flag"
    assert happened == {14: "first", 21: "second", 28: "flag"}
    [first] = outbox("balance_reminder")
    assert "your balance with Riverbend Counseling is $200.00" in first.body
    assert "/p/" in first.body
    [second] = outbox("balance_second_reminder")
    assert "call us at 555-0100" in second.body
    assert client.flagged_reason == "Balance of $200.00 unpaid after two reminders"


def test_paying_on_day_22_on_the_portal_stops_the_reminders_and_thanks_the_client(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment], client: HttpClient) -> None:
    person = _unpaid_200(make_client, completed_session)
    for day in range(22):
        tick(FRIDAY_10AM + day * DAY)
    assert len(outbox("balance_second_reminder")) == 1
    link = next(line for line in outbox("balance_second_reminder")[0].body.splitlines() if "/p/" in line).strip()
    path = link.split("127.0.0.1:8000", 1)[1]
    page = client.get(path)
    assert page.status_code == 200
    assert b"Your balance is <strong>$200.00</strong>" in page.content
    assert b"Add a card" in page.content

    save_card(person, CARD_OK, stripe_server, now=FRIDAY_10AM + 22 * DAY)
    with time_machine.travel(FRIDAY_10AM + 22 * DAY + dt.timedelta(hours=2), tick=False):
        paid = client.post(path + "balance/pay/", {"mode": "all"})
    assert paid.json()["status"] == "succeeded", paid.json()
    charge = Charge.objects.get(client=person, kind="session_fee")
    assert charge.status == ChargeStatus.SUCCEEDED

    for day in range(22, 36):
        tick(FRIDAY_10AM + day * DAY)
    person.refresh_from_db()
    assert not person.flagged_for_outreach
    assert len(outbox("balance_reminder")) == 1
    assert len(outbox("balance_second_reminder")) == 1
    [thanks] = outbox("balance_paid")
    assert "Your balance is now $0.00" in thanks.body
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [20000]
