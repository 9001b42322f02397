"""Edges the money state machine found (tests/payments/test_money_state_machine.py), each pinned down here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django.test import Client as HttpClient

from billing.models import (
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeStatus,
    Client,
    Practice,
    ReviewItem,
    ReviewKind,
)
from billing.services.balance import client_balance_cents
from billing.services.schedule import appointment_set_status, appointment_sync_charges
from tests.conftest import FakeStripe
from tests.payment_fixtures import (
    CARD_DECLINES_WHEN_CHARGED,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    outbox,
    pay_link,
    save_card,
    tick,
)
from tests.practice_fixtures import FRIDAY_10AM

HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def _local(url: str) -> str:
    return url.split("127.0.0.1:8000", 1)[1]


def test_a_portal_payment_confirmed_after_its_session_was_canceled_is_kept_as_credit(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Any],
        stripe_server: FakeStripe, client: HttpClient) -> None:
    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    appointment = completed_session(person)
    save_card(person, CARD_NEEDS_AUTHENTICATION, stripe_server)
    path = pay_link(person)
    started = client.post(path + "balance/pay/", {"mode": "all"}).json()
    assert started["status"] == "requires_action"
    # The EHR corrects the session while the client is at their bank's check.
    appointment_set_status(appointment=appointment, status=AppointmentStatus.SCHEDULED, now=FRIDAY_10AM + HOUR,
                           actor="test")
    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.CANCELED
    payment = Charge.objects.get(pk=started["payment"])
    stripe_server.authenticate(payment.payment_reference, started["client_secret"])
    confirmed = client.post(path + "balance/confirmed/", {"payment": payment.pk})
    assert confirmed.json()["status"] == "succeeded"

    charge.refresh_from_db()
    assert charge.status == ChargeStatus.CANCELED
    assert client_balance_cents(person) == -14000  # the money is the client's credit
    [item] = ReviewItem.objects.filter(kind=ReviewKind.PAID_SESSION_CHANGED, status="open")
    assert "has that much credit" in item.reason
    tick(FRIDAY_10AM + 2 * HOUR)  # billing goes on
    tick(FRIDAY_10AM + 7 * DAY)


def test_a_payment_whose_authentication_failed_is_never_retried_off_session(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Any], client: HttpClient) -> None:
    save_card(self_pay_client, CARD_NEEDS_AUTHENTICATION, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM)
    [email] = outbox("authentication_required")
    link = _local(next(line for line in email.body.splitlines() if "/p/" in line).strip())
    page = client.get(link)
    charge = Charge.objects.get(appointment=appointment)
    stripe_server.authenticate(charge.payment_reference, page.context["client_secret"], success=False)
    assert client.post(link + "payment/confirmed/").status_code == 402

    charge.refresh_from_db()
    assert (charge.status, charge.next_retry_at) == (ChargeStatus.FAILED, None)
    for days in (0, 1, 3, 4, 7, 8, 14):
        tick(FRIDAY_10AM + days * DAY + HOUR)
    assert charge.payment_attempts.count() == 1


def test_a_declined_charge_re_priced_is_told_the_new_amount_before_it_is_retried(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Any]) -> None:
    save_card(self_pay_client, CARD_DECLINES_WHEN_CHARGED, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM + 22 * HOUR)  # the notice: $140.00
    tick(FRIDAY_10AM + 24 * HOUR)  # declined; retried in 3 days
    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.FAILED

    appointment.fee_cents = 20000
    appointment.save()
    changed = FRIDAY_10AM + 4 * DAY - HOUR  # an hour before the planned retry
    appointment_sync_charges(appointment=appointment, now=changed, actor="test")
    save_card(self_pay_client, CARD_OK, stripe_server, now=changed)
    tick(changed + HOUR)  # the retry's old time, and the new card: but the new amount was told an hour ago
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == []
    assert any("$200.00" in notice.body for notice in outbox("pre_charge_notice"))
    tick(changed + 2 * HOUR)
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [20000]


def test_a_portal_payment_that_failed_at_the_bank_is_closed_at_stripe(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Any],
        stripe_server: FakeStripe, client: HttpClient, django_capture_on_commit_callbacks: Any) -> None:
    """Otherwise the client could still complete it on the bank's page after the charges it was for were
    paid another way, and pay twice."""
    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    completed_session(person)
    save_card(person, CARD_NEEDS_AUTHENTICATION, stripe_server)
    path = pay_link(person)
    started = client.post(path + "balance/pay/", {"mode": "all"}).json()
    payment = Charge.objects.get(pk=started["payment"])
    stripe_server.authenticate(payment.payment_reference, started["client_secret"], success=False)
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(path + "balance/confirmed/", {"payment": payment.pk})
    assert answer.status_code == 402
    assert stripe_server.payment_intent(payment.payment_reference)["status"] == "canceled"
    assert Charge.objects.get(appointment__isnull=False, client=person).hold_reason == ""


def test_a_portal_payment_whose_answer_was_lost_is_settled_by_the_janitor_once(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Any],
        stripe_server: FakeStripe) -> None:
    """The page's request reached Stripe and the answer was lost (a timeout, a crash): the janitor asks again
    with the very same on-session request and key, and records the one payment Stripe made."""
    from django.db import transaction

    from billing.services.balance import _payment_claim
    from integrations.stripe.gateway import get_gateway

    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    appointment = completed_session(person)
    save_card(person, CARD_OK, stripe_server)
    with transaction.atomic():
        payment, attempt = _payment_claim(person, None, None, FRIDAY_10AM, "")
    get_gateway().payment_on_session(amount_cents=attempt.amount_cents, customer_id=attempt.customer_id,
                                     payment_method_id=attempt.payment_method_id,
                                     idempotency_key=attempt.idempotency_key, reference=str(payment.pk))
    tick(FRIDAY_10AM + 5 * dt.timedelta(minutes=1))
    payment.refresh_from_db()
    assert payment.status == ChargeStatus.SUCCEEDED
    assert Charge.objects.get(appointment=appointment).status == ChargeStatus.SUCCEEDED
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [14000]
    assert client_balance_cents(person) == 0


def test_a_portal_payment_that_failed_is_not_tried_again_when_a_new_card_is_saved(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Any],
        stripe_server: FakeStripe, client: HttpClient) -> None:
    """A declined session charge; the client saves a card that needs their bank's check, starts paying
    everything on the portal and fails the check; later they save a card that works. The session is then
    charged once, and the failed portal payment (whose charge went back to its own schedule) is never
    taken as well."""
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    appointment = completed_session(person)
    save_card(person, CARD_DECLINES_WHEN_CHARGED, stripe_server)
    tick(FRIDAY_10AM + 22 * HOUR)
    tick(FRIDAY_10AM + 24 * HOUR)
    session_charge = Charge.objects.get(appointment=appointment)
    assert session_charge.status == ChargeStatus.FAILED

    save_card(person, CARD_NEEDS_AUTHENTICATION, stripe_server, now=FRIDAY_10AM + 25 * HOUR)
    path = pay_link(person)
    started = client.post(path + "balance/pay/", {"mode": "all"}).json()
    assert started["status"] == "requires_action"
    portal_payment = Charge.objects.get(pk=started["payment"])
    stripe_server.authenticate(portal_payment.payment_reference, started["client_secret"], success=False)
    assert client.post(path + "balance/confirmed/", {"payment": portal_payment.pk}).status_code == 402

    saved = FRIDAY_10AM + 26 * HOUR
    save_card(person, CARD_OK, stripe_server, now=saved)
    for hours in (1, 3, 25, 72, 24 * 8):
        tick(saved + hours * HOUR)
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [14000]
    assert Charge.objects.get(pk=session_charge.pk).status == ChargeStatus.SUCCEEDED
    assert Charge.objects.get(pk=portal_payment.pk).payment_attempts.count() == 1
    assert client_balance_cents(person) == 0


def test_a_portal_payment_the_card_declined_is_never_charged_again_off_session_after_a_new_card(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Any],
        stripe_server: FakeStripe, client: HttpClient) -> None:
    """The client saw the decline on the page and the charges went back to their schedule; a new card must
    not take the portal payment as well (the charges' own payments would then pay for the same sessions)."""
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    save_card(person, CARD_DECLINES_WHEN_CHARGED, stripe_server)
    session = completed_session(person)
    declined = client.post(pay_link(person) + "balance/pay/", {"mode": "all"})
    assert declined.status_code == 402
    payment = Charge.objects.get(pk=declined.json()["payment"])
    assert payment.status == ChargeStatus.FAILED

    save_card(person, CARD_OK, stripe_server, now=FRIDAY_10AM + HOUR)
    for hours in range(1, 30):
        tick(FRIDAY_10AM + hours * HOUR)
    payment.refresh_from_db()
    assert (payment.status, payment.payment_attempts.count()) == (ChargeStatus.FAILED, 1)
    charge = Charge.objects.get(appointment=session)
    assert charge.status == ChargeStatus.SUCCEEDED
    paid = [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"]
    assert paid == [14000]
    assert client_balance_cents(person) == 0
