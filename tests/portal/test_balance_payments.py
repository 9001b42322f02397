"""Paying on the portal: all, chosen sessions, or an amount, never more than the balance, never twice."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client as HttpClient

from billing.models import Appointment, BillingType, Charge, ChargeStatus, Client, Practice
from billing.services.balance import client_balance_cents
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, outbox, pay_link, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)


@pytest.fixture
def owing(practice: Practice, make_client: Callable[..., Client],
          completed_session: Callable[..., Appointment]) -> Client:
    """Three sessions of $100, $120 and $140 not yet charged (the practice charges in a weekly batch)."""
    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY)
    for days_ago, fee in ((3, 10000), (2, 12000), (1, 14000)):
        completed_session(person, at=FRIDAY_10AM - days_ago * DAY, fee_cents=fee)
    return person



def test_pay_chosen_sessions_then_the_rest_and_the_scheduler_charges_nothing_more(
        owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    save_card(owing, CARD_OK, stripe_server)
    path = pay_link(owing)
    first, second, third = Charge.objects.filter(client=owing).order_by("created_at")
    answer = client.post(path + "balance/pay/", {"mode": "items", "items": [first.pk, third.pk]}).json()
    assert (answer["status"], answer["amount"]) == ("succeeded", "$240.00")
    assert client_balance_cents(owing) == 12000
    assert [Charge.objects.get(pk=c.pk).status for c in (first, second, third)] == [
        ChargeStatus.SUCCEEDED, ChargeStatus.SCHEDULED, ChargeStatus.SUCCEEDED]

    tick(FRIDAY_10AM + 14 * DAY)  # the weekly batch charges only what is still open
    assert Charge.objects.get(pk=second.pk).status == ChargeStatus.SUCCEEDED
    assert sorted(c["amount"] for c in stripe_server.charges()) == [12000, 24000]
    assert client_balance_cents(owing) == 0


def test_pay_an_amount_covers_oldest_first_and_leaves_the_rest_to_collect(
        owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    save_card(owing, CARD_OK, stripe_server)
    path = pay_link(owing)
    assert client.post(path + "balance/pay/", {"mode": "amount", "amount": "150.00"}).json()["status"] == "succeeded"
    first, second, _ = Charge.objects.filter(client=owing, kind="session_fee").order_by("created_at")
    assert (first.status, second.amount_cents, second.prepaid_cents) == (ChargeStatus.SUCCEEDED, 7000, 5000)
    tick(FRIDAY_10AM + 14 * DAY)
    assert sorted(c["amount"] for c in stripe_server.charges()) == [7000, 14000, 15000]
    assert client_balance_cents(owing) == 0


@pytest.mark.parametrize(("form", "message"), [
    ({"mode": "amount", "amount": "360.01"}, "You can pay at most $360.00 now"),
    ({"mode": "amount", "amount": "ten"}, "Enter an amount in dollars and cents"),
    ({"mode": "amount", "amount": "-5"}, "Enter an amount in dollars and cents"),
    *(({"mode": "amount", "amount": odd}, "Enter an amount in dollars and cents")
      for odd in ("Infinity", "-Infinity", "NaN", "sNaN", "1e999999", "-0", "0", "1e2", "0.001", "10.5.0",
                  "99999999999", "\u0665\u0660")),
    ({"mode": "items", "items": ["999999"]}, "Choose the items to pay."),
    ({"mode": "everything"}, "Choose what to pay."),
])
def test_bad_payment_requests_are_refused_and_change_nothing(
        owing: Client, stripe_server: FakeStripe, client: HttpClient, form: dict[str, object], message: str) -> None:
    save_card(owing, CARD_OK, stripe_server)
    response = client.post(pay_link(owing) + "balance/pay/", form)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert stripe_server.charges() == []
    assert not Charge.objects.filter(kind="balance_payment").exists()


def test_declined_portal_payment_puts_the_sessions_back_on_their_schedule(
        owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    save_card(owing, CARD_DECLINES_WHEN_CHARGED, stripe_server)
    answer = client.post(pay_link(owing) + "balance/pay/", {"mode": "all"})
    assert answer.status_code == 402
    assert "declined" in answer.json()["error"]
    assert set(Charge.objects.filter(kind="session_fee").values_list("status", "hold_reason")) == {
        (ChargeStatus.SCHEDULED, "")}
    assert outbox("payment_failed") == []  # the client saw it on the page


def test_receipt_download_and_the_page_shows_it(owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    save_card(owing, CARD_OK, stripe_server)
    path = pay_link(owing)
    client.post(path + "balance/pay/", {"mode": "all"})
    first = Charge.objects.filter(client=owing, kind="session_fee").order_by("created_at").first()
    assert first is not None
    page = client.get(path)
    assert b"You have nothing to pay right now" in page.content
    download = client.get(f"{path}receipts/{first.pk}/")
    assert download["Content-Disposition"] == f'attachment; filename="receipt-{first.pk}.html"'
    assert b"Individual therapy, 60 minutes" in download.content
    assert b"$100.00" in download.content
    other = Charge.objects.create(client=Client.objects.create(first_name="O", last_name="P"), kind="session_fee",
                                  amount_cents=1, status="succeeded", scheduled_for=FRIDAY_10AM)
    assert client.get(f"{path}receipts/{other.pk}/").status_code == 404  # another client's receipt
