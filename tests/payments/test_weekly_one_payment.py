"""One card payment a week per client (``Practice.weekly_one_payment``): one PaymentIntent for the client's
charges of the batch, while each session keeps its own record, ledger line and refunds; declines, retries,
authentication and unknown outcomes work for the combined payment as for one charge."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from billing.models import (
    Appointment,
    AttemptStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    PaymentAttempt,
    Practice,
)
from billing.services.payments import _ask_stripe, _claim_batch
from billing.services.refunds import RefundNotAllowed, charge_refund
from billing.services.tick import charges_mark_due
from tests.conftest import FakeStripe
from tests.payment_fixtures import (
    CARD_DECLINES_WHEN_CHARGED,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    outbox,
    save_card,
    tick,
)

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
MONDAY_NOON = dt.datetime(2026, 11, 23, 12, 0, tzinfo=NEW_YORK)
WEDNESDAY_NOON = dt.datetime(2026, 11, 25, 12, 0, tzinfo=NEW_YORK)
BATCH = dt.datetime(2026, 11, 27, 9, 0, tzinfo=NEW_YORK)  # Friday 09:00
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@pytest.fixture
def one_payment(practice: Practice) -> Practice:
    practice.charge_timing = "weekly"
    practice.weekly_batch_weekday = 4
    practice.weekly_batch_hour = 9
    practice.pre_charge_notice_hours = 24
    practice.weekly_one_payment = True
    practice.save()
    return practice


def week_of_sessions(client: Client, card: str, stripe_server: FakeStripe,
                     completed_session: Callable[..., Appointment]) -> list[Charge]:
    save_card(client, card, stripe_server, now=MONDAY_NOON - HOUR)
    completed_session(client, at=MONDAY_NOON)
    completed_session(client, at=WEDNESDAY_NOON, fee_cents=16000)
    tick(BATCH - 24 * HOUR)  # the batch's notice
    return list(Charge.objects.filter(client=client).order_by("pk"))


def succeeded_intents(stripe_server: FakeStripe) -> dict[str, int]:
    return {c["payment_intent"]: c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"}


def session_charges(client: Client) -> list[Charge]:
    return list(Charge.objects.filter(client=client).exclude(kind=ChargeKind.WEEKLY_PAYMENT).order_by("pk"))


def payments_of(charge: Charge) -> list[int]:
    return list(LedgerEntry.objects.filter(charge=charge, kind=LedgerKind.PAYMENT).values_list("amount_cents",
                                                                                              flat=True))


def test_the_weeks_sessions_are_one_card_payment_each_with_its_own_record_and_ledger_line(
        one_payment: Practice, stripe_server: FakeStripe, self_pay_client: Client, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    week_of_sessions(self_pay_client, CARD_OK, stripe_server, completed_session)
    alone = make_client(billing_type="self_pay", session_rate_cents=9000)
    save_card(alone, CARD_OK, stripe_server, now=MONDAY_NOON - HOUR)
    completed_session(alone, at=MONDAY_NOON)
    tick(BATCH - 24 * HOUR + HOUR)
    tick(BATCH)

    monday, wednesday = session_charges(self_pay_client)
    assert (monday.status, wednesday.status) == (ChargeStatus.SUCCEEDED, ChargeStatus.SUCCEEDED)
    assert monday.payment_reference == wednesday.payment_reference
    [alone_charge] = Charge.objects.filter(client=alone)
    assert succeeded_intents(stripe_server) == {monday.payment_reference: 30000, alone_charge.payment_reference: 9000}
    assert (payments_of(monday), payments_of(wednesday)) == ([-14000], [-16000])
    assert sum(LedgerEntry.objects.filter(client=self_pay_client).values_list("amount_cents", flat=True)) == 0
    [payment] = Charge.objects.filter(kind=ChargeKind.WEEKLY_PAYMENT)
    assert (payment.client, payment.amount_cents, payment.status) == (self_pay_client, 30000, ChargeStatus.SUCCEEDED)
    assert payments_of(payment) == []  # the ledger lines are the sessions'
    receipts = {m.to[0]: m.body for m in outbox("receipt")}
    assert len(outbox("receipt")) == 2
    assert "We charged $300.00" in receipts[self_pay_client.email]
    assert receipts[self_pay_client.email].count(monday.payment_reference) == 2


def test_one_session_of_a_weekly_payment_is_refunded_on_its_own(
        one_payment: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment], billing_manager: User) -> None:
    week_of_sessions(self_pay_client, CARD_OK, stripe_server, completed_session)
    tick(BATCH)
    monday, wednesday = session_charges(self_pay_client)
    charge_refund(charge=wednesday, amount_cents=16000, reason="session canceled by the therapist",
                  user=billing_manager, now=BATCH + DAY)
    wednesday.refresh_from_db()
    monday.refresh_from_db()
    assert (wednesday.status, wednesday.refunded_cents) == (ChargeStatus.REFUNDED, 16000)
    assert (monday.status, monday.refunded_cents) == (ChargeStatus.SUCCEEDED, 0)
    [stripe_charge] = stripe_server.charges()
    assert stripe_charge["amount_refunded"] == 16000
    with pytest.raises(RefundNotAllowed, match=r"At most \$0\.00"):
        charge_refund(charge=wednesday, amount_cents=1, reason="again", user=billing_manager, now=BATCH + DAY)
    with pytest.raises(RefundNotAllowed, match="refund the sessions"):
        charge_refund(charge=Charge.objects.get(kind=ChargeKind.WEEKLY_PAYMENT), amount_cents=100, reason="all",
                      user=billing_manager, now=BATCH + DAY)


def test_a_declined_weekly_payment_is_told_once_retried_together_and_paid_by_a_new_card(
        one_payment: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    week_of_sessions(self_pay_client, CARD_DECLINES_WHEN_CHARGED, stripe_server, completed_session)
    tick(BATCH)
    sessions = session_charges(self_pay_client)
    assert {(c.status, c.next_retry_at) for c in sessions} == {(ChargeStatus.FAILED, BATCH + 3 * DAY)}
    [declined] = outbox("payment_failed")
    assert "$300.00" in declined.body and "try your card again on November 30" in declined.body

    tick(BATCH + 3 * DAY)  # retried as one payment again, declined again
    assert [p.status for p in Charge.objects.filter(kind=ChargeKind.WEEKLY_PAYMENT).order_by("pk")] == [
        ChargeStatus.FAILED, ChargeStatus.FAILED]
    assert {c.next_retry_at for c in session_charges(self_pay_client)} == {BATCH + 7 * DAY}
    assert len(outbox("payment_failed")) == 2

    saved_at = BATCH + 4 * DAY
    save_card(self_pay_client, CARD_OK, stripe_server, now=saved_at)
    tick(saved_at)
    [_, again] = outbox("pre_charge_notice")
    assert "we will charge $300.00" in again.body
    tick(saved_at + 24 * HOUR)
    monday, wednesday = session_charges(self_pay_client)
    assert (monday.status, wednesday.status) == (ChargeStatus.SUCCEEDED, ChargeStatus.SUCCEEDED)
    assert list(succeeded_intents(stripe_server).values()) == [30000]
    assert (monday.attempts, len(payments_of(monday)), len(payments_of(wednesday))) == (3, 1, 1)
    self_pay_client.refresh_from_db()
    assert not self_pay_client.flagged_for_outreach


def test_a_weekly_payment_the_bank_asks_to_confirm_is_one_link_for_all_its_sessions(
        one_payment: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment], client: HttpClient,
        django_capture_on_commit_callbacks: Callable[..., Any]) -> None:
    week_of_sessions(self_pay_client, CARD_NEEDS_AUTHENTICATION, stripe_server, completed_session)
    tick(BATCH)
    tick(BATCH + 3 * DAY)  # never retried off-session
    sessions = session_charges(self_pay_client)
    assert {c.status for c in sessions} == {ChargeStatus.REQUIRES_ACTION}
    [email] = outbox("authentication_required")
    assert "$300.00" in email.body
    link = next(line for line in email.body.splitlines() if "/p/" in line).strip().split("127.0.0.1:8000", 1)[1]
    page = client.get(link)
    assert page.status_code == 200
    stripe_server.authenticate(sessions[0].payment_reference, page.context["client_secret"])
    with django_capture_on_commit_callbacks(execute=True):
        confirmed = client.post(link + "payment/confirmed/")
    assert confirmed.json() == {"paid": True, "amount": "$300.00"}
    assert {c.status for c in session_charges(self_pay_client)} == {ChargeStatus.SUCCEEDED}
    assert list(succeeded_intents(stripe_server).values()) == [30000]
    [receipt] = outbox("receipt")
    assert "We charged $300.00" in receipt.body


def test_the_janitor_settles_a_weekly_payment_whose_tick_died(
        one_payment: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    week_of_sessions(self_pay_client, CARD_OK, stripe_server, completed_session)
    with Practice.pinned():
        charges_mark_due(now=BATCH)
        _, [attempt] = _claim_batch(BATCH, None)
    _ask_stripe(attempt)  # Stripe took the money; the tick died before writing it down
    assert {c.status for c in session_charges(self_pay_client)} == {ChargeStatus.PROCESSING}
    tick(BATCH + HOUR / 60)  # too soon for the janitor: nothing is charged again
    tick(BATCH + 3 * HOUR / 60)
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == AttemptStatus.SUCCEEDED
    assert {c.status for c in session_charges(self_pay_client)} == {ChargeStatus.SUCCEEDED}
    assert list(succeeded_intents(stripe_server).values()) == [30000]
    assert len(outbox("receipt")) == 1
