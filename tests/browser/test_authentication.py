"""A card whose bank wants 3-D Secure: saved with the bank's check, then the payment confirmed by the client."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from billing.models import Appointment, AttemptStatus, Charge, ChargeStatus, Client, LedgerEntry
from billing.services.cards import enrollment_link_send
from billing.services.notify import emails_send
from tests.browser.conftest import (
    CARD_NEEDS_AUTHENTICATION,
    Portal,
    emails,
    enroll_card,
    link_in,
    open_link,
    pass_three_d_secure,
    tick,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DAY = dt.timedelta(days=1)


def test_payment_needing_authentication_waits_for_the_client_and_is_paid_once(
        portal: Portal, page: Page, self_pay_client: Client,
        complete_session: Callable[..., Appointment]) -> None:
    now = timezone.now()
    enrollment_link_send(client=self_pay_client, now=now, actor="staff:test", send_email=True)
    emails_send(now=now)
    enroll_card(page, link_in(emails("card_enrollment")[0]), CARD_NEEDS_AUTHENTICATION, three_d_secure=True)
    self_pay_client.refresh_from_db()
    assert self_pay_client.card_last4 == "3184"

    session = complete_session(self_pay_client, at=now)
    for day in (0, 3, 7):  # the failed-payment retry days: a payment waiting for the client is not retried
        tick(now + day * DAY)
    charge = Charge.objects.get(appointment=session)
    assert (charge.status, charge.attempts) == (ChargeStatus.REQUIRES_ACTION, 1)
    assert [a.status for a in charge.payment_attempts.all()] == [AttemptStatus.REQUIRES_ACTION]
    assert [r["path"] for r in portal.stripe.requests()
            if r["method"] == "POST" and r["path"] == "/v1/payment_intents"] == ["/v1/payment_intents"]
    assert not [c for c in portal.stripe.charges() if c["status"] == "succeeded"]
    [ask] = emails("authentication_required")
    assert "$140.00" in ask.body
    assert emails("receipt") == []

    link = link_in(ask)
    open_link(page, link)
    expect(page.get_by_role("heading", name="Your bank asks you to confirm this payment")).to_be_visible()
    expect(page.locator("table.lines")).to_contain_text("Dana Reyes, LCSW")
    page.get_by_role("button", name="Confirm payment of $140.00").click()
    expect(page.get_by_text("3D Secure")).to_be_visible()
    pass_three_d_secure(page)
    expect(page.locator("#message")).to_have_text(
        "Thank you. Your payment of $140.00 is complete. A receipt is on its way by email.")
    expect(page.get_by_role("button", name="Paid")).to_be_disabled()

    charge.refresh_from_db()
    assert (charge.status, charge.attempts) == (ChargeStatus.SUCCEEDED, 1)
    paid = [c for c in portal.stripe.charges() if c["status"] == "succeeded"]
    assert [(c["amount"], c["payment_intent"]) for c in paid] == [(14000, charge.payment_reference)]
    [receipt] = emails("receipt")
    assert "Amount charged:  $140.00" in receipt.body
    assert "Therapist:       Dana Reyes, LCSW" in receipt.body
    assert sum(LedgerEntry.objects.filter(client=self_pay_client).values_list("amount_cents", flat=True)) == 0

    # Nothing more happens on later ticks, and the link cannot pay twice.
    tick(now + 8 * DAY)
    assert len([c for c in portal.stripe.charges() if c["status"] == "succeeded"]) == 1
    assert len(emails("receipt")) == 1
    open_link(page, link, status=410)
    expect(page.get_by_role("heading", name="This link has already been used")).to_be_visible()


def test_failed_authentication_charges_nothing_and_says_so(
        portal: Portal, page: Page, payment_waiting: str) -> None:
    open_link(page, payment_waiting)
    page.get_by_role("button", name="Confirm payment of $140.00").click()
    page.get_by_role("button", name="Fail authentication").click()

    message = page.locator("#message")
    expect(message).to_have_class("message error")
    charge = Charge.objects.get()
    assert charge.status == ChargeStatus.FAILED
    # The bank asked for the client and did not get a yes: the card is never tried again off-session.
    assert charge.next_retry_at is None
    expect(message).to_have_text("Your bank did not confirm the payment, so nothing was charged. To use a different "
                                 "card, use the link in the email we just sent you.")
    assert not [c for c in portal.stripe.charges() if c["status"] == "succeeded"]
    assert emails("receipt") == []
