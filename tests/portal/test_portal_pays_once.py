"""A portal payment is taken once: two tabs, a double click or a retry pay once, and money already on its
way (a charge being taken, or waiting for the client's bank) is never offered again."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as HttpClient

from billing.models import (
    AttemptStatus,
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    PaymentAttempt,
    Practice,
)
from billing.services.balance import client_balance_cents
from billing.services.holds import charge_cancel
from billing.services.payments import _claim_batch
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_NEEDS_AUTHENTICATION, CARD_OK, outbox, pay_link, post_at_once, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)



def succeeded(stripe_server: FakeStripe) -> list[int]:
    return sorted(c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded")


@pytest.fixture
def owes_280(practice: Practice, make_client: Callable[..., Client],
             completed_session: Callable[..., Any]) -> Client:
    """Two sessions, $140 each, waiting for the practice's weekly batch; a card on file."""
    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    completed_session(person, at=FRIDAY_10AM - 2 * DAY)
    completed_session(person, at=FRIDAY_10AM - DAY)
    return person


def _post_at_once(path: str, forms: list[dict[str, Any]]) -> list[tuple[int, dict[str, Any]]]:
    return [(response.status_code, response.json()) for response in post_at_once(path, forms)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("form", [{"mode": "all"}, {"mode": "amount", "amount": "280.00"},
                                  {"mode": "all", "pay_key": "the-same-form-twice-0001"}])
def test_three_pay_requests_at_once_pay_the_balance_once(
        owes_280: Client, stripe_server: FakeStripe, form: dict[str, str]) -> None:
    save_card(owes_280, CARD_OK, stripe_server)
    answers = _post_at_once(pay_link(owes_280) + "balance/pay/", [form] * 3)

    paid = [body for status, body in answers if status == 200]
    assert [body["status"] for body in paid] == ["succeeded"]
    refused = [(status, body) for status, body in answers if status != 200]
    assert len(refused) == 2
    for status, body in refused:  # already being taken, or (if the first finished) nothing left to pay
        assert status in (400, 409)
        assert "already being taken" in body["error"] or "nothing to pay" in body["error"].lower()
    assert succeeded(stripe_server) == [28000]
    assert client_balance_cents(owes_280) == 0
    assert LedgerEntry.objects.filter(client=owes_280, kind=LedgerKind.PAYMENT).count() == 1


def test_the_same_form_sent_again_after_it_paid_is_refused(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Any],
        stripe_server: FakeStripe, client: HttpClient) -> None:
    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    for days in (3, 2, 1):
        completed_session(person, at=FRIDAY_10AM - days * DAY)
    save_card(person, CARD_OK, stripe_server)
    path = pay_link(person)
    form = {"mode": "amount", "amount": "50.00", "pay_key": "a-key-from-the-page-0001"}
    assert client.post(path + "balance/pay/", form).json()["status"] == "succeeded"
    again = client.post(path + "balance/pay/", form)  # the browser's retry, or Back and submit again
    assert again.status_code == 409
    assert "already being taken" in again.json()["error"]
    assert succeeded(stripe_server) == [5000]
    # A new page (a new key) may pay again: that is a second decision of the client's.
    form["pay_key"] = "a-key-from-the-page-0002"
    assert client.post(path + "balance/pay/", form).json()["status"] == "succeeded"
    assert succeeded(stripe_server) == [5000, 5000]


def test_a_charge_being_taken_by_a_billing_run_is_not_offered_again(
        owes_280: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    save_card(owes_280, CARD_OK, stripe_server)
    first, second = Charge.objects.filter(client=owes_280).order_by("created_at")
    Charge.objects.filter(pk=first.pk).update(status=ChargeStatus.DUE)
    # A billing run claimed the first charge and died before Stripe answered: its attempt is committed.
    _, claimed = _claim_batch(FRIDAY_10AM, owes_280)
    assert [a.charge_id for a in claimed] == [first.pk]

    path = pay_link(owes_280)
    page = client.get(path)
    assert b"$140.00 of it is already being paid" in page.content
    assert b"Everything payable now: $140.00" in page.content
    too_much = client.post(path + "balance/pay/", {"mode": "amount", "amount": "280.00"})
    assert too_much.status_code == 400
    assert "at most $140.00 now ($140.00 of your balance is already being paid)" in too_much.json()["error"]
    answer = client.post(path + "balance/pay/", {"mode": "all"}).json()
    assert (answer["status"], answer["amount"]) == ("succeeded", "$140.00")
    assert Charge.objects.get(pk=second.pk).status == ChargeStatus.SUCCEEDED

    tick(FRIDAY_10AM + dt.timedelta(minutes=5))  # the janitor asks Stripe about the dead run's attempt: charged now
    assert Charge.objects.get(pk=first.pk).status == ChargeStatus.SUCCEEDED
    assert succeeded(stripe_server) == [14000, 14000]
    assert client_balance_cents(owes_280) == 0


def _needs_authentication(person: Client, stripe_server: FakeStripe) -> Charge:
    """The first session's charge was tried off-session and waits for the client's bank."""
    save_card(person, CARD_NEEDS_AUTHENTICATION, stripe_server)
    first = Charge.objects.filter(client=person).order_by("created_at").first()
    assert first is not None
    Charge.objects.filter(pk=first.pk).update(status=ChargeStatus.DUE)
    Charge.objects.filter(client=person).exclude(pk=first.pk).update(scheduled_for=FRIDAY_10AM + 30 * DAY)
    tick(FRIDAY_10AM)
    first.refresh_from_db()
    assert first.status == ChargeStatus.REQUIRES_ACTION
    return first


def test_paying_everything_leaves_a_charge_waiting_for_the_bank_alone(
        owes_280: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    waiting = _needs_authentication(owes_280, stripe_server)
    save_card(owes_280, CARD_OK, stripe_server)  # the client then saves a card that needs no check
    path = pay_link(owes_280)
    page = client.get(path)
    assert b"Everything payable now: $140.00" in page.content
    assert b"waiting for your bank's confirmation: paying it here withdraws that request" in page.content
    assert client.post(path + "balance/pay/", {"mode": "all"}).json()["amount"] == "$140.00"
    waiting.refresh_from_db()
    assert waiting.status == ChargeStatus.REQUIRES_ACTION  # still the client's to confirm, once
    assert succeeded(stripe_server) == [14000]


def test_a_charge_waiting_for_the_bank_paid_on_the_balance_page_is_withdrawn_at_stripe(
        owes_280: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    waiting = _needs_authentication(owes_280, stripe_server)
    old_intent = waiting.payment_reference
    save_card(owes_280, CARD_OK, stripe_server)
    path = pay_link(owes_280)
    answer = client.post(path + "balance/pay/", {"mode": "items", "items": [waiting.pk]}).json()
    assert (answer["status"], answer["amount"]) == ("succeeded", "$140.00")
    waiting.refresh_from_db()
    assert waiting.status == ChargeStatus.SUCCEEDED
    assert stripe_server.payment_intent(old_intent)["status"] == "canceled"

    [email] = outbox("authentication_required")
    confirm_link = next(line for line in email.body.splitlines() if "/p/" in line).strip()
    page = client.get(confirm_link.split("127.0.0.1:8000", 1)[1])
    assert b"already complete" in page.content
    assert succeeded(stripe_server) == [14000]
    # Paid through the portal payment, which carries the ledger entry.
    assert LedgerEntry.objects.filter(charge=waiting, kind=LedgerKind.PAYMENT).count() == 0
    assert client_balance_cents(owes_280) == 14000


@pytest.mark.django_db(transaction=True)
def test_a_charge_waiting_for_the_bank_canceled_by_staff_is_withdrawn_at_stripe(
        owes_280: Client, stripe_server: FakeStripe, admin_user: Any) -> None:
    waiting = _needs_authentication(owes_280, stripe_server)
    charge_cancel(charge=waiting, now=FRIDAY_10AM + DAY, actor="staff:admin", user=admin_user,
                  why="settled at the front desk")
    assert stripe_server.payment_intent(waiting.payment_reference)["status"] == "canceled"
    attempt = PaymentAttempt.objects.get(charge=waiting)
    assert (attempt.status, attempt.failure_code) == (AttemptStatus.FAILED, "canceled")
    waiting.refresh_from_db()
    assert waiting.status == ChargeStatus.CANCELED


def test_a_second_tab_replaces_a_payment_left_at_the_banks_check(
        owes_280: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    save_card(owes_280, CARD_NEEDS_AUTHENTICATION, stripe_server)
    path = pay_link(owes_280)
    first = client.post(path + "balance/pay/", {"mode": "all"}).json()
    assert first["status"] == "requires_action"  # the client closes the bank's window instead
    second = client.post(path + "balance/pay/", {"mode": "all"}).json()
    assert second["status"] == "requires_action"
    left = Charge.objects.get(pk=first["payment"])
    assert left.status == ChargeStatus.FAILED
    assert stripe_server.payment_intent(left.payment_reference)["status"] == "canceled"
    assert Charge.objects.filter(client=owes_280, kind=ChargeKind.BALANCE_PAYMENT,
                                 status=ChargeStatus.REQUIRES_ACTION).count() == 1
