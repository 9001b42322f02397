"""A client saves a card from the emailed link, in a real browser, and the next session is charged to it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from billing.models import Appointment, CardConsent, Charge, ChargeStatus, Client
from billing.services.cards import authorization_text, enrollment_link_send
from billing.services.notify import emails_send
from tests.browser.conftest import CARD_OK, Portal, emails, enroll_card, link_in, open_link, tick, type_card

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_card_saved_from_the_emailed_link_pays_the_next_session_with_a_receipt(
        portal: Portal, page: Page, self_pay_client: Client,
        complete_session: Callable[..., Appointment]) -> None:
    now = timezone.now()
    enrollment_link_send(client=self_pay_client, now=now, actor="staff:test", send_email=True)
    emails_send(now=now)
    [invitation] = emails("card_enrollment")
    assert invitation.to == [self_pay_client.email]
    link = link_in(invitation)
    assert link.startswith(portal.url + "/p/")

    open_link(page, link)
    expect(page.get_by_role("heading", name="Save a card for your sessions")).to_be_visible()
    expect(page.get_by_text(f"Hi {self_pay_client.first_name}.")).to_be_visible()
    expect(page.locator("#authorization")).to_contain_text("Cancellation policy (version 1)")
    enroll_card(page, link, CARD_OK)

    self_pay_client.refresh_from_db()
    assert (self_pay_client.card_last4, self_pay_client.card_exp_month, self_pay_client.card_exp_year) == (
        "4242", 12, 2030)
    [consent] = CardConsent.objects.filter(client=self_pay_client)
    assert consent.text == authorization_text(portal.practice)
    assert consent.payment_method_id == self_pay_client.card_payment_method_id
    assert "Chrome" in consent.user_agent
    assert len(emails("card_saved")) == 1

    session = complete_session(self_pay_client, at=now + dt.timedelta(minutes=5))
    tick(now + dt.timedelta(minutes=5))

    charge = Charge.objects.get(appointment=session)
    assert charge.status == ChargeStatus.SUCCEEDED
    paid = [c for c in portal.stripe.charges() if c["status"] == "succeeded"]
    assert [(c["amount"], c["payment_intent"], c["payment_method"]) for c in paid] == [
        (14000, charge.payment_reference, self_pay_client.card_payment_method_id)]
    assert portal.stripe.payment_intent(charge.payment_reference)["status"] == "succeeded"

    [receipt] = emails("receipt")
    assert receipt.to == [self_pay_client.email]
    service_date = timezone.localtime(session.starts_at, portal.practice.zone).date()
    assert f"Date of service: {service_date:%B} {service_date.day}, {service_date.year}" in receipt.body
    assert "Therapist:       Dana Reyes, LCSW" in receipt.body
    assert "Service:         Individual therapy, 60 minutes" in receipt.body
    assert "Amount charged:  $140.00" in receipt.body
    assert charge.payment_reference in receipt.body

    # The link did its job: opening it again explains how to get a new one.
    open_link(page, link, status=410)
    expect(page.get_by_role("heading", name="This link has already been used")).to_be_visible()


def test_not_ticking_the_authorization_box_saves_nothing(
        portal: Portal, page: Page, self_pay_client: Client) -> None:
    issued = enrollment_link_send(client=self_pay_client, now=timezone.now(), actor="staff:test", send_email=False)
    open_link(page, issued.url)
    type_card(page, CARD_OK)
    page.get_by_role("button", name="Save card").click()

    message = page.locator("#message")
    expect(message).to_have_text("Please read the authorization and tick the box to agree.")
    expect(message).to_have_class("message error")
    expect(page.get_by_role("button", name="Save card")).to_be_enabled()

    # The server refuses too, should a script skip the box.
    answer = page.evaluate("""async () => {
        const csrf = document.querySelector("[name=csrfmiddlewaretoken]").value;
        const response = await fetch(location.pathname + "card/start/", {method: "POST",
          headers: {"X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded"}, body: ""});
        return {status: response.status, body: await response.json()};
    }""")
    assert answer == {"status": 400, "body": {"error": "Please read the authorization and tick the box to agree."}}

    self_pay_client.refresh_from_db()
    assert not self_pay_client.has_card
    assert not CardConsent.objects.exists()
    assert not any("/setup_intents" in r["path"] or "/payment_methods" in r["path"]
                   for r in portal.stripe.requests())
    assert emails("card_saved") == []


def test_a_card_saved_after_charges_waited_asks_the_client_and_pays_them_only_when_told(
        portal: Portal, page: Page, self_pay_client: Client,
        complete_session: Callable[..., Appointment]) -> None:
    """Two sessions waited for a card: the card page says so, leads to the choice, and paying them there
    is one on-session payment of their total. Nothing is taken by the billing run on its own."""
    now = timezone.now()
    for minutes in (10, 5):
        complete_session(self_pay_client, at=now - dt.timedelta(minutes=minutes))
    tick(now)
    assert Charge.objects.filter(client=self_pay_client, hold_reason="no card on file").count() == 2

    issued = enrollment_link_send(client=self_pay_client, now=now, actor="staff:test", send_email=False)
    enroll_card(page, issued.url, CARD_OK)
    expect(page.locator("#message")).to_contain_text("$280.00 from earlier sessions waited for a card")
    tick(now + dt.timedelta(minutes=1))
    assert portal.stripe.charges() == []

    page.locator("#choose-waiting").click()
    expect(page.get_by_role("heading", name="Waiting since before you saved your card")).to_be_visible()
    expect(page.locator("#waiting-total")).to_have_text("$280.00")
    page.get_by_role("button", name="Pay $280.00 now").click()
    expect(page.locator("#waiting-pay-form .message")).to_contain_text("We received your payment of $280.00")
    assert [c["amount"] for c in portal.stripe.charges() if c["status"] == "succeeded"] == [28000]
    assert set(Charge.objects.filter(client=self_pay_client).exclude(kind="balance_payment")
               .values_list("status", flat=True)) == {ChargeStatus.SUCCEEDED}
