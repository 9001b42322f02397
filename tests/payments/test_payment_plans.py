"""Payment plans: a balance in installments the client agreed to on the portal, each told first, charged once,
retried when declined, and the balance reminders quiet while the plan is current."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import time_machine
from django.test import Client as HttpClient

from billing.models import (
    Appointment,
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    LedgerEntry,
    OutboundEmail,
    PaymentPlan,
    PlanConsent,
    PlanStatus,
    Practice,
    ReviewItem,
    ReviewKind,
)
from billing.services.links import IssuedLink
from billing.services.plans import plan_cancel, plan_offer
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, outbox, post_at_once, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
OFFERED_AT = FRIDAY_10AM + HOUR
# 10:00 in New York on each installment's day (EST: 15:00 UTC).
DEC_15, JAN_15, FEB_15 = (dt.datetime(y, m, 15, 15, 0, tzinfo=dt.UTC) for y, m in ((2026, 12), (2027, 1), (2027, 2)))


def balance(client: Client) -> int:
    return sum(LedgerEntry.objects.filter(client=client).values_list("amount_cents", flat=True))


def _path(issued: IssuedLink) -> str:
    return issued.url.split("127.0.0.1:8000", 1)[1]


@pytest.fixture
def owes_900(immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
             completed_session: Callable[..., Appointment]) -> Client:
    """Three $300 sessions before the client had a card: a $900 balance; then a card is saved."""
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=30000)
    for days_before in (3, 2, 1):
        completed_session(person, at=FRIDAY_10AM - days_before * DAY)
    tick(FRIDAY_10AM)
    assert balance(person) == 90000
    return save_card(person, CARD_OK, stripe_server, now=FRIDAY_10AM + HOUR / 2)


def _offer(person: Client, **fields: object) -> tuple[PaymentPlan, IssuedLink]:
    return plan_offer(client=person, total_cents=90000, count=3, first_due_on=dt.date(2026, 12, 15), now=OFFERED_AT,
                      user=None, form_key=f"offer-{person.pk}-" + "k" * 20, **fields)  # type: ignore[arg-type]


def _agree(http: HttpClient, issued: IssuedLink, plan: PaymentPlan) -> int:
    with time_machine.travel(OFFERED_AT + HOUR, tick=False):
        return http.post(_path(issued) + "plan/agree/", {"plan": plan.pk, "agree": "yes"}).status_code


def test_900_in_three_installments_told_charged_retried_reminders_quiet_until_it_lapses(
        owes_900: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    person = owes_900
    good_card = person.card_payment_method_id
    plan, issued = _offer(person)
    offer = OutboundEmail.objects.get(template="payment_plan_offer", client=person)
    assert "$300.00" in offer.body_text and "December 15, 2026" in offer.body_text and issued.url in offer.body_text

    with time_machine.travel(OFFERED_AT + HOUR, tick=False):
        page = client.get(_path(issued))
    assert page.status_code == 200
    assert "I agree to pay Riverbend Counseling $900.00 of my balance in 3 installments" in page.content.decode()
    assert _agree(client, issued, plan) == 302
    plan.refresh_from_db()
    assert plan.status == PlanStatus.CURRENT
    consent = PlanConsent.objects.get(plan=plan)
    assert "$300.00 on December 15, 2026, $300.00 on January 15, 2027 and $300.00 on February 15, 2027" in consent.text
    assert consent.ip_address == "127.0.0.1"

    # Dec 14: a reminder would be due by now (over $150 since Nov 27), but the plan is current.
    tick(DEC_15 - DAY)
    # Two hours before the first installment: told first, nothing charged yet.
    tick(DEC_15 - 2 * HOUR)
    [notice] = outbox("pre_charge_notice")
    assert "we will charge $300.00 to your Visa ending 4242, exp 12/2030 as agreed in your payment plan" in notice.body
    assert stripe_server.charges() == []
    tick(DEC_15)
    first = Charge.objects.get(client=person, kind=ChargeKind.INSTALLMENT, scheduled_for=DEC_15)
    assert first.status == ChargeStatus.SUCCEEDED
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [30000]
    assert balance(person) == 60000
    assert len(outbox("receipt")) == 1
    # The oldest session charge is what it paid.
    assert sorted(Charge.objects.filter(client=person, kind=ChargeKind.SESSION_FEE)
                  .values_list("status", flat=True)) == ["due", "due", "succeeded"]

    # The second installment is declined (the card has no funds that day), retried on day 3, and paid.
    save_card(person, CARD_DECLINES_WHEN_CHARGED, stripe_server, now=JAN_15 - DAY)
    tick(JAN_15 - 2 * HOUR)
    tick(JAN_15)
    second = Charge.objects.get(client=person, kind=ChargeKind.INSTALLMENT, scheduled_for=JAN_15)
    assert (second.status, second.next_retry_at) == (ChargeStatus.FAILED, JAN_15 + 3 * DAY)
    assert "try your card again on January 18" in outbox("payment_failed")[-1].body
    assert balance(person) == 60000
    # The fake server declines by card number: the bank now accepting is the first card's payment method again.
    Client.objects.filter(pk=person.pk).update(card_payment_method_id=good_card)
    tick(JAN_15 + DAY)  # not yet the retry day: nothing
    second.refresh_from_db()
    assert second.attempts == 1
    tick(JAN_15 + 3 * DAY)
    second.refresh_from_db()
    assert (second.status, second.attempts) == (ChargeStatus.SUCCEEDED, 2)
    assert balance(person) == 30000
    plan.refresh_from_db()
    assert plan.status == PlanStatus.CURRENT
    assert outbox("balance_reminder") == []

    # The third is declined through its retries (days 3 and 7): the plan lapses and the reminders start again.
    save_card(person, CARD_DECLINES_WHEN_CHARGED, stripe_server, now=FEB_15 - DAY)
    for moment in (FEB_15 - 2 * HOUR, FEB_15, FEB_15 + 3 * DAY):
        tick(moment)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.CURRENT
    assert outbox("balance_reminder") == []
    tick(FEB_15 + 7 * DAY)
    plan.refresh_from_db()
    assert plan.status == PlanStatus.LAPSED
    assert "installment 3 ($300.00) was declined and its retries ended" in plan.end_reason
    item = ReviewItem.objects.get(client=person, kind=ReviewKind.PLAN_LAPSED)
    assert item.status == "open"
    [lapsed] = outbox("payment_plan_lapsed")
    assert "your balance is now $300.00" in lapsed.body
    [reminder] = outbox("balance_reminder")
    assert "$300.00" in reminder.body
    third = Charge.objects.get(client=person, kind=ChargeKind.INSTALLMENT, scheduled_for=FEB_15)
    assert third.status == ChargeStatus.CANCELED
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [30000, 30000]
    # The client sees it lapsed, with what was paid.
    with time_machine.travel(FEB_15 + 8 * DAY, tick=False):
        lapsed_page = client.get(_path(issued)).content.decode()
        history = client.get(_path(issued) + "history/").content.decode()
    assert "This plan has lapsed" in lapsed_page and "$600.00" in lapsed_page
    assert "Your payment plans" in history and "Lapsed" in history and "Payment plan installment" in history


@pytest.mark.django_db(transaction=True)
def test_the_agree_form_sent_twice_at_once_makes_one_consent(owes_900: Client) -> None:
    plan, issued = _offer(owes_900)
    with time_machine.travel(OFFERED_AT + HOUR, tick=False):
        answers = post_at_once(_path(issued) + "plan/agree/", [{"plan": plan.pk, "agree": "yes"}] * 2)
    assert sorted(a.status_code for a in answers) == [302, 302]
    assert PlanConsent.objects.filter(plan=plan).count() == 1
    assert Charge.objects.filter(client=owes_900, kind=ChargeKind.INSTALLMENT).count() == 3


def test_a_plan_link_for_another_client_or_after_cancellation_is_refused(
        owes_900: Client, stripe_server: FakeStripe, make_client: Callable[..., Client], client: HttpClient) -> None:
    plan, issued = _offer(owes_900)
    other = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=30000)
    from billing.services.links import link_create
    theirs = link_create(client=other, purpose="payment_plan", now=OFFERED_AT, actor="test")
    with time_machine.travel(OFFERED_AT + HOUR, tick=False):
        posted = client.post(_path(theirs) + "plan/agree/", {"plan": plan.pk, "agree": "yes"})
        shown = client.get(_path(theirs))
    assert posted.status_code == 404
    assert "This payment plan is not part of your account." in posted.content.decode()
    assert shown.status_code == 404
    assert not PlanConsent.objects.exists()

    plan_cancel(plan=plan, reason="the client will pay at the next session", user=None, now=OFFERED_AT)
    with time_machine.travel(OFFERED_AT + HOUR, tick=False):
        refused = client.post(_path(issued) + "plan/agree/", {"plan": plan.pk, "agree": "yes"})
        page = client.get(_path(issued)).content.decode()
    assert refused.status_code == 410
    assert "canceled by the practice" in refused.content.decode()
    assert "This plan was canceled by Riverbend Counseling" in page
    assert not PlanConsent.objects.exists()
    assert not Charge.objects.filter(kind=ChargeKind.INSTALLMENT).exists()


def test_paid_another_way_the_next_installment_shrinks_then_none_is_charged(
        owes_900: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    plan, issued = _offer(owes_900)
    assert _agree(client, issued, plan) == 302
    tick(DEC_15 - 2 * HOUR)
    tick(DEC_15)
    # The client pays $450 of the $600 left on the portal: the second installment takes only the $150 left.
    from tests.payment_fixtures import pay_link
    with time_machine.travel(DEC_15 + DAY, tick=False):
        paid = client.post(pay_link(owes_900) + "balance/pay/", {"mode": "amount", "amount": "450"})
    assert paid.json()["status"] == "succeeded", paid.json()
    tick(JAN_15 - 2 * HOUR)
    tick(JAN_15)
    amounts = dict(Charge.objects.filter(kind=ChargeKind.INSTALLMENT).values_list("scheduled_for", "amount_cents"))
    assert amounts[JAN_15] == 15000
    assert balance(owes_900) == 0
    tick(FEB_15)
    third = Charge.objects.get(kind=ChargeKind.INSTALLMENT, scheduled_for=FEB_15)
    assert third.status == ChargeStatus.CANCELED
    assert sorted(c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded") == [15000, 30000, 45000]
    plan.refresh_from_db()
    assert plan.status == PlanStatus.COMPLETED
