"""Charging the card on file: once, with a receipt; declines retried on schedule; authentication on-session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from billing.models import (
    Appointment,
    AttemptStatus,
    Charge,
    ChargeStatus,
    Client,
    LedgerEntry,
    PaymentAttempt,
    Practice,
    ReviewItem,
    ReviewKind,
)
from billing.services.schedule import appointment_sync_charges
from billing.services.waiting import CHOICE_HOLD
from tests.conftest import FakeStripe
from tests.payment_fixtures import (
    CARD_DECLINES_WHEN_CHARGED,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    outbox,
    save_card,
    tick,
)
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)


def balance(client: Client) -> int:
    return sum(LedgerEntry.objects.filter(client=client).values_list("amount_cents", flat=True))


def test_due_charge_is_paid_once_with_a_receipt(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM)
    tick(FRIDAY_10AM + dt.timedelta(minutes=1))  # a second tick charges nothing more

    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.SUCCEEDED
    paid = [c for c in stripe_server.charges() if c["status"] == "succeeded"]
    assert [(c["amount"], c["payment_intent"]) for c in paid] == [(14000, charge.payment_reference)]
    assert balance(self_pay_client) == 0

    [receipt] = outbox("receipt")
    assert receipt.to == [self_pay_client.email]
    assert "Date of service: November 27, 2026" in receipt.body
    assert "Therapist:       Dana Reyes, LCSW" in receipt.body
    assert "Service:         Individual therapy, 60 minutes" in receipt.body
    assert "Amount charged:  $140.00" in receipt.body
    assert charge.payment_reference in receipt.body


def test_insurance_share_receipt_shows_what_insurance_pays(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    client = make_client(benefits={"copay_cents": 3000})
    save_card(client, CARD_OK, stripe_server)
    completed_session(client)
    tick(FRIDAY_10AM)
    [receipt] = outbox("receipt")
    assert "Amount charged:  $30.00" in receipt.body
    assert "Insurance is expected to pay: $90.00" in receipt.body


def test_pre_charge_notice_goes_out_before_a_delayed_charge(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    save_card(self_pay_client, CARD_OK, stripe_server)
    completed_session(self_pay_client)
    tick(FRIDAY_10AM + dt.timedelta(hours=21))
    assert outbox("pre_charge_notice") == []
    tick(FRIDAY_10AM + dt.timedelta(hours=22))
    tick(FRIDAY_10AM + dt.timedelta(hours=23))
    [notice] = outbox("pre_charge_notice")
    assert "we will charge $140.00" in notice.body
    assert outbox("receipt") == []
    tick(FRIDAY_10AM + dt.timedelta(hours=24))
    assert len(outbox("receipt")) == 1


@pytest.mark.parametrize("timing", ["delayed", "weekly"])
def test_no_charge_is_taken_sooner_than_the_notice_lead_time(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment], timing: str) -> None:
    """A 1-hour delay (or a weekly batch an hour away) with 6 hours' notice: the notice still gets its 6 hours."""
    practice.charge_timing = timing
    practice.charge_delay_hours = 1
    practice.weekly_batch_hour = 11  # Friday 11:00 New York: an hour after the session is completed
    practice.pre_charge_notice_hours = 6
    practice.save()
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    for hours in range(0, 6):
        tick(FRIDAY_10AM + dt.timedelta(hours=hours))
    assert stripe_server.charges() == []
    for hours in range(6, 8 * 24, 3):
        tick(FRIDAY_10AM + dt.timedelta(hours=hours))
    assert len(outbox("pre_charge_notice")) == 1
    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.SUCCEEDED
    [attempt] = charge.payment_attempts.all()
    assert charge.notice_sent_at is not None
    assert attempt.started_at - charge.notice_sent_at >= dt.timedelta(hours=6)


def test_a_re_priced_charge_is_told_again_with_its_full_lead_time(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM + dt.timedelta(hours=22))  # told: $140.00 in 2 hours
    appointment.fee_cents = 9000
    appointment.save()
    almost = FRIDAY_10AM + dt.timedelta(hours=23, minutes=30)
    appointment_sync_charges(appointment=appointment, now=almost, actor="test")
    tick(FRIDAY_10AM + dt.timedelta(hours=24))  # the old time: the new notice is only 30 minutes old
    assert [n.body.count("$90.00") > 0 for n in outbox("pre_charge_notice")] == [False, True]
    assert stripe_server.charges() == []
    tick(almost + dt.timedelta(hours=2))
    assert [c["amount"] for c in stripe_server.charges()] == [9000]


def test_declined_card_is_retried_on_days_3_and_7_then_flagged_and_a_new_card_pays_once(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    save_card(self_pay_client, CARD_DECLINES_WHEN_CHARGED, stripe_server)
    appointment = completed_session(self_pay_client)
    for day in (0, 1, 3, 4, 7, 8, 14):
        tick(FRIDAY_10AM + day * DAY)

    charge = Charge.objects.get(appointment=appointment)
    assert (charge.status, charge.attempts, charge.last_failure_code) == (ChargeStatus.FAILED, 3, "generic_decline")
    assert [a.started_at for a in charge.payment_attempts.all()] == [FRIDAY_10AM + d * DAY for d in (0, 3, 7)]
    notices = outbox("payment_failed")
    assert len(notices) == 3
    assert "try your card again on November 30" in notices[0].body
    assert "won't try this card again" in notices[2].body
    self_pay_client.refresh_from_db()
    assert self_pay_client.flagged_for_outreach

    save_card(self_pay_client, CARD_OK, stripe_server, now=FRIDAY_10AM + 15 * DAY)
    tick(FRIDAY_10AM + 15 * DAY)
    tick(FRIDAY_10AM + 16 * DAY)
    charge.refresh_from_db()
    assert (charge.status, charge.attempts) == (ChargeStatus.SUCCEEDED, 4)
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [14000]
    self_pay_client.refresh_from_db()
    assert not self_pay_client.flagged_for_outreach
    assert balance(self_pay_client) == 0


def test_card_needing_authentication_is_not_retried_and_is_paid_on_session(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment], client: object,
        django_capture_on_commit_callbacks: Callable[..., Any]) -> None:
    save_card(self_pay_client, CARD_NEEDS_AUTHENTICATION, stripe_server)
    appointment = completed_session(self_pay_client)
    for day in (0, 3, 7):
        tick(FRIDAY_10AM + day * DAY)

    charge = Charge.objects.get(appointment=appointment)
    assert (charge.status, charge.attempts) == (ChargeStatus.REQUIRES_ACTION, 1)
    [email] = outbox("authentication_required")
    link = next(line for line in email.body.splitlines() if "/p/" in line).strip()
    page = client.get(link.split("127.0.0.1:8000", 1)[1])  # type: ignore[attr-defined]
    assert page.status_code == 200
    assert b"Confirm payment of $140.00" in page.content
    secret = page.context["client_secret"]

    stripe_server.authenticate(charge.payment_reference, secret)
    with django_capture_on_commit_callbacks(execute=True):  # the receipt goes out once the payment commits
        confirmed = client.post(link.split("127.0.0.1:8000", 1)[1] + "payment/confirmed/")  # type: ignore[attr-defined]
    assert confirmed.json() == {"paid": True, "amount": "$140.00"}
    charge.refresh_from_db()
    assert charge.status == ChargeStatus.SUCCEEDED
    assert len(outbox("receipt")) == 1
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [14000]


def test_charge_without_a_card_waits_and_asks_the_client_for_one(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM)
    tick(FRIDAY_10AM + DAY)
    charge = Charge.objects.get(appointment=appointment)
    assert (charge.status, charge.hold_reason, charge.attempts) == (ChargeStatus.DUE, "no card on file", 0)
    assert ReviewItem.objects.filter(kind=ReviewKind.NO_CARD, status="open").count() == 1
    assert len(outbox("card_needed")) == 1

    save_card(self_pay_client, CARD_OK, stripe_server, now=FRIDAY_10AM + 2 * DAY)
    tick(FRIDAY_10AM + 2 * DAY)
    charge.refresh_from_db()
    # Saving the card does not take what waited for it: the client chooses (tests/payments/test_waiting_for_card.py).
    assert (charge.status, charge.hold_reason) == (ChargeStatus.DUE, CHOICE_HOLD)
    assert stripe_server.charges() == []
    assert not ReviewItem.objects.filter(kind=ReviewKind.NO_CARD, status="open").exists()
    assert ReviewItem.objects.filter(kind=ReviewKind.WAITING_CHOICE, status="open").count() == 1


def test_charge_above_the_cap_goes_to_review_instead(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    immediate.max_charge_cents = 10000
    immediate.save()
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM)
    charge = Charge.objects.get(appointment=appointment)
    assert (charge.status, charge.attempts) == (ChargeStatus.DUE, 0)
    assert "above the practice's cap of $100.00" in ReviewItem.objects.get(kind=ReviewKind.CHARGE_CAP).reason
    assert stripe_server.charges() == []


def test_unknown_outcome_is_settled_by_the_janitor_without_a_second_payment(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    from billing.services.payments import _claim_batch
    from integrations.stripe.gateway import get_gateway

    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM - dt.timedelta(minutes=1))  # nothing due yet
    from billing.services.tick import charges_mark_due

    charges_mark_due(now=FRIDAY_10AM)
    _, [attempt] = _claim_batch(FRIDAY_10AM, None)
    # Stripe charged the card, but the worker died before recording it.
    get_gateway().payment_off_session(amount_cents=attempt.amount_cents, customer_id=attempt.customer_id,
                                      payment_method_id=attempt.payment_method_id,
                                      idempotency_key=attempt.idempotency_key, reference=str(attempt.charge_id))
    tick(FRIDAY_10AM + dt.timedelta(minutes=1))  # too soon to call it unknown: nothing is retried
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == AttemptStatus.STARTED

    tick(FRIDAY_10AM + dt.timedelta(minutes=5))
    charge = Charge.objects.get(appointment=appointment)
    assert (charge.status, charge.attempts) == (ChargeStatus.SUCCEEDED, 1)
    assert len([c for c in stripe_server.charges() if c["status"] == "succeeded"]) == 1
    assert len(outbox("receipt")) == 1


def test_a_failed_payment_completed_later_at_the_bank_is_recorded_and_never_charged_again(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    from billing.services.payments import attempt_settle
    from integrations.stripe.gateway import Payment

    save_card(self_pay_client, CARD_DECLINES_WHEN_CHARGED, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM)
    attempt = PaymentAttempt.objects.get()
    assert attempt.status == AttemptStatus.FAILED
    # Real Stripe lets the client finish that PaymentIntent on the bank's page; Stripe then reports it paid.
    late = Payment("succeeded", attempt.payment_intent_id, attempt.amount_cents)
    attempt_settle(attempt=attempt, payment=late, now=FRIDAY_10AM + DAY)
    attempt_settle(attempt=attempt, payment=late, now=FRIDAY_10AM + DAY)  # the webhook repeats it
    charge = Charge.objects.get(appointment=appointment)
    assert (charge.status, charge.payment_reference) == (ChargeStatus.SUCCEEDED, attempt.payment_intent_id)
    assert balance(self_pay_client) == 0
    tick(FRIDAY_10AM + 3 * DAY)  # the day-3 retry no longer applies
    assert PaymentAttempt.objects.count() == 1
