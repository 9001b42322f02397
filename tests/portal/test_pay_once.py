"""Paying a balance once with a card typed on the page, which is not saved: the PaymentIntent has no card and no
setup_future_usage, the page confirms it with Stripe.js, and the money rules of every portal payment hold (one
payment at a time, the form's key, charges held while it is taken and let go if it fails)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as HttpClient

from billing.errors import OutcomeUnknown
from billing.models import (
    Appointment,
    AttemptStatus,
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    OutboundEmail,
    PaymentAttempt,
    Practice,
)
from billing.services.balance import client_balance_cents
from billing.services.payments import PORTAL_HOLD, attempts_settle_unknown
from integrations.stripe.gateway import get_gateway
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, pay_link, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)
PAY_KEY = "form-key-0123456789"


@pytest.fixture
def owing(practice: Practice, make_client: Callable[..., Client],
          completed_session: Callable[..., Appointment]) -> Client:
    """$100 and $120 not yet charged (a weekly batch), and no card on file."""
    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY)
    for days_ago, fee in ((2, 10000), (1, 12000)):
        completed_session(person, at=FRIDAY_10AM - days_ago * DAY, fee_cents=fee)
    return person


def _created_intents(stripe_server: FakeStripe) -> list[dict[str, Any]]:
    return [r for r in stripe_server.requests() if r["method"] == "POST" and r["path"] == "/v1/payment_intents"]


def test_a_client_without_a_card_pays_once_and_no_card_is_kept(
        owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    path = pay_link(owing)
    page = client.get(path).content.decode()
    assert "Pay once, don&#x27;t save my card" in page or "Pay once, don't save my card" in page

    started = client.post(path + "balance/pay/", {"mode": "all", "card": "once", "pay_key": PAY_KEY}).json()
    assert (started["status"], started["amount"]) == ("requires_action", "$220.00")
    [created] = _created_intents(stripe_server)
    assert "setup_future_usage" not in created["body"] and "payment_method=" not in created["body"]
    assert "off_session" not in created["body"] and "confirm" not in created["body"]
    # While the client types the card, what it pays is held from the scheduler and not offered again.
    assert set(Charge.objects.filter(kind=ChargeKind.SESSION_FEE).values_list("hold_reason", flat=True)) == {
        PORTAL_HOLD}

    confirmed = stripe_server.confirm_payment(started["client_secret"], CARD_OK)
    assert confirmed.json()["status"] == "succeeded", confirmed.text
    answer = client.post(path + "balance/confirmed/", {"payment": started["payment"]}).json()
    assert answer == {"status": "succeeded", "amount": "$220.00"}

    assert client_balance_cents(owing) == 0
    assert set(Charge.objects.filter(kind=ChargeKind.SESSION_FEE).values_list("status", flat=True)) == {
        ChargeStatus.SUCCEEDED}
    owing.refresh_from_db()
    assert (owing.card_payment_method_id, owing.card_last4) == ("", "")  # nothing saved at the portal...
    method = stripe_server.http.get(f"/v1/payment_methods/{confirmed.json()['payment_method']}").json()
    assert method.get("customer") is None  # ...nor at Stripe
    assert OutboundEmail.objects.filter(client=owing, template="receipt").exists()


def test_the_same_form_sent_twice_pays_once_and_a_new_payment_withdraws_the_one_left_open(
        owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    path = pay_link(owing)
    first = client.post(path + "balance/pay/", {"mode": "all", "card": "once", "pay_key": PAY_KEY})
    assert first.status_code == 200
    again = client.post(path + "balance/pay/", {"mode": "all", "card": "once", "pay_key": PAY_KEY})
    assert (again.status_code, again.json()["status"]) == (409, "in_progress")
    assert len(_created_intents(stripe_server)) == 1

    # The client closed the card form and starts over: the first request is withdrawn at Stripe first.
    second = client.post(path + "balance/pay/", {"mode": "amount", "amount": "50", "card": "once",
                                                 "pay_key": PAY_KEY + "b"}).json()
    assert second["status"] == "requires_action"
    first_intent = Charge.objects.get(pk=first.json()["payment"]).payment_reference
    assert stripe_server.payment_intent(first_intent)["status"] == "canceled"
    refused = stripe_server.confirm_payment(first.json()["client_secret"], CARD_OK)
    assert refused.status_code == 400  # the withdrawn one can no longer take money
    assert stripe_server.confirm_payment(second["client_secret"], CARD_OK).json()["status"] == "succeeded"
    client.post(path + "balance/confirmed/", {"payment": second["payment"]})
    assert client_balance_cents(owing) == 17000
    assert sum(c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded") == 5000


def test_a_declined_card_lets_the_charges_go_and_the_form_gets_a_new_key(
        owing: Client, stripe_server: FakeStripe, client: HttpClient,
        django_capture_on_commit_callbacks: Any) -> None:
    path = pay_link(owing)
    started = client.post(path + "balance/pay/", {"mode": "all", "card": "once", "pay_key": PAY_KEY}).json()
    declined = stripe_server.confirm_payment(started["client_secret"], CARD_DECLINES_WHEN_CHARGED)
    assert (declined.status_code, declined.json()["error"]["type"]) == (402, "card_error")
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(path + "balance/confirmed/", {"payment": started["payment"]})
    assert answer.status_code == 402 and answer.json()["pay_key"]
    assert set(Charge.objects.filter(kind=ChargeKind.SESSION_FEE).values_list("hold_reason", flat=True)) == {""}
    intent = Charge.objects.get(pk=started["payment"]).payment_reference
    assert stripe_server.payment_intent(intent)["status"] == "canceled"
    assert client_balance_cents(owing) == 22000

    retry = client.post(path + "balance/pay/", {"mode": "all", "card": "once",
                                                "pay_key": answer.json()["pay_key"]}).json()
    assert retry["status"] == "requires_action"


def test_a_client_with_a_saved_card_may_still_pay_once_with_another(
        owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    save_card(owing, CARD_OK, stripe_server)
    path = pay_link(owing)
    started = client.post(path + "balance/pay/", {"mode": "items", "card": "once", "pay_key": PAY_KEY,
                                                  "items": [Charge.objects.order_by("pk").first().pk]}).json()  # type: ignore[union-attr]
    assert started["status"] == "requires_action"
    assert stripe_server.confirm_payment(started["client_secret"], "5555555555554444").json()["status"] == "succeeded"
    client.post(path + "balance/confirmed/", {"payment": started["payment"]})
    owing.refresh_from_db()
    assert owing.card_last4 == "4242"  # the card on file is still the saved one
    assert client_balance_cents(owing) == 12000


def test_a_lost_answer_is_asked_again_with_the_same_request(
        owing: Client, stripe_server: FakeStripe, client: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stripe made the PaymentIntent but the answer was lost: the janitor repeats the very same request and key,
    and Stripe answers from its idempotency store (one PaymentIntent)."""
    gateway = get_gateway()
    real = gateway.payment_once

    def made_then_lost(**kwargs: Any) -> Any:
        real(**kwargs)
        raise OutcomeUnknown("timeout")

    monkeypatch.setattr(gateway, "payment_once", made_then_lost)
    path = pay_link(owing)
    answer = client.post(path + "balance/pay/", {"mode": "all", "card": "once", "pay_key": PAY_KEY}).json()
    assert answer["status"] == "unknown"
    monkeypatch.setattr(gateway, "payment_once", real)
    attempt = PaymentAttempt.objects.get(charge_id=answer["payment"])
    assert attempt.status == AttemptStatus.STARTED and attempt.payment_method_id == ""

    assert attempts_settle_unknown(now=attempt.started_at + dt.timedelta(minutes=3)) == 1
    attempt.refresh_from_db()
    assert attempt.status == AttemptStatus.REQUIRES_ACTION
    created = _created_intents(stripe_server)
    assert len(created) == 2 and created[0]["idempotency_key"] == created[1]["idempotency_key"] != ""
    assert [pi["id"] for pi in stripe_server.http.get("/v1/payment_intents").json()["data"]] == [
        attempt.payment_intent_id]  # one PaymentIntent: the repeat was answered from Stripe's idempotency store


def test_only_saved_or_once(owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    response = client.post(pay_link(owing) + "balance/pay/", {"mode": "all", "card": "mine"})
    assert (response.status_code, response.json()) == (400, {"error": "Choose how to pay."})
    saved = client.post(pay_link(owing) + "balance/pay/", {"mode": "all"})
    assert (saved.status_code, saved.json()["error"]) == (400, "Please add a card first.")
    assert not Charge.objects.filter(kind=ChargeKind.BALANCE_PAYMENT).exists()


def test_a_card_the_page_did_not_accept_leaves_the_payment_open_and_the_next_try_withdraws_it(
        owing: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    path = pay_link(owing)
    started = client.post(path + "balance/pay/", {"mode": "all", "card": "once", "pay_key": PAY_KEY}).json()
    # Stripe.js refused the card before sending it (an incomplete number): the page reports back anyway.
    waiting = client.post(path + "balance/confirmed/", {"payment": started["payment"]})
    assert (waiting.status_code, waiting.json()["status"]) == (402, "requires_action")
    assert Charge.objects.get(pk=started["payment"]).status == ChargeStatus.REQUIRES_ACTION

    retry = client.post(path + "balance/pay/", {"mode": "all", "card": "once",
                                                "pay_key": waiting.json()["pay_key"]}).json()
    assert retry["status"] == "requires_action"
    assert Charge.objects.get(pk=started["payment"]).status == ChargeStatus.FAILED
    assert stripe_server.payment_intent(Charge.objects.get(pk=started["payment"]).payment_reference)[
        "status"] == "canceled"


def test_the_payment_is_kept_under_the_clients_stripe_customer_or_made_without_one(
        owing: Client, stripe_server: FakeStripe, client: HttpClient, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = get_gateway()

    def not_answering(email: str) -> Any:
        raise OutcomeUnknown("timeout")

    monkeypatch.setattr(gateway, "customers_by_email", not_answering)
    path = pay_link(owing)
    started = client.post(path + "balance/pay/", {"mode": "amount", "amount": "10", "card": "once",
                                                  "pay_key": PAY_KEY}).json()
    assert started["status"] == "requires_action"  # Stripe's customer lookup did not answer: paid without one
    assert stripe_server.payment_intent(Charge.objects.get(pk=started["payment"]).payment_reference)["customer"] is None

    monkeypatch.undo()
    again = client.post(path + "balance/pay/", {"mode": "amount", "amount": "10", "card": "once",
                                                "pay_key": PAY_KEY + "b"}).json()
    owing.refresh_from_db()
    assert owing.stripe_customer_id.startswith("cus_") and not owing.card_payment_method_id
    assert stripe_server.payment_intent(Charge.objects.get(pk=again["payment"]).payment_reference)[
        "customer"] == owing.stripe_customer_id


def test_a_declined_payment_made_once_is_not_retried_when_a_card_is_saved_later(
        owing: Client, stripe_server: FakeStripe, client: HttpClient,
        django_capture_on_commit_callbacks: Any) -> None:
    """Found by the money state machine: the portal payment the client saw declined was retried off-session with
    the card saved later, and the charges it would have paid were charged as well: twice the money."""
    path = pay_link(owing)
    started = client.post(path + "balance/pay/", {"mode": "all", "card": "once", "pay_key": PAY_KEY}).json()
    stripe_server.confirm_payment(started["client_secret"], CARD_DECLINES_WHEN_CHARGED)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(path + "balance/confirmed/", {"payment": started["payment"]})
    save_card(owing, CARD_OK, stripe_server, now=FRIDAY_10AM + DAY)
    tick(FRIDAY_10AM + 8 * DAY)

    assert Charge.objects.get(pk=started["payment"]).status == ChargeStatus.FAILED
    taken = sum(c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded")
    assert taken == 22000 and client_balance_cents(owing) == 0
