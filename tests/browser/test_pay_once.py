"""A client pays their balance once with a card typed on the page, in a real browser, and the card is not kept:
the plain case, a decline then another card, and a card whose bank asks for its check."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from billing.models import Appointment, BillingType, Charge, ChargeKind, ChargeStatus, Client, LinkPurpose
from billing.services.balance import client_balance_cents
from billing.services.links import link_create
from tests.browser.conftest import (
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    Portal,
    open_link,
    pass_three_d_secure,
    screenshot,
    type_card,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
CARD_DECLINED = "4000000000000341"


@pytest.fixture
def owing(portal: Portal, make_client: Callable[..., Client], complete_session: Callable[..., Appointment]) -> Client:
    """$180 owed for yesterday's session, no card on file (the practice charges in a weekly batch)."""
    portal.practice.charge_timing = "weekly"
    portal.practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=18000)
    complete_session(person, at=timezone.now() - dt.timedelta(days=1))
    return person


def _pay_once(page: Page, number: str) -> None:
    type_card(page, number)
    page.get_by_role("button", name="Pay once, don't save my card").click()


def test_pay_once_without_saving_the_card(portal: Portal, page: Page, owing: Client) -> None:
    open_link(page, link_create(client=owing, purpose=LinkPurpose.PAY_BALANCE, now=timezone.now(), actor="test").url)
    expect(page.locator("#balance")).to_have_text("Your balance is $180.00.")
    expect(page.get_by_role("heading", name="Pay once with a card")).to_be_visible()
    screenshot(page, "balance-pay-once")
    _pay_once(page, CARD_OK)
    expect(page.locator("#message")).to_contain_text("We received your payment of $180.00. Your card was not saved.")

    assert client_balance_cents(owing) == 0
    assert Charge.objects.get(client=owing, kind=ChargeKind.SESSION_FEE).status == ChargeStatus.SUCCEEDED
    owing.refresh_from_db()
    assert not owing.has_card
    [paid] = [c for c in portal.stripe.charges() if c["status"] == "succeeded"]
    assert paid["amount"] == 18000
    method = portal.stripe.http.get(f"/v1/payment_methods/{paid['payment_method']}").json()
    assert method.get("customer") is None  # Stripe keeps no card for the client either
    # The page reloads with nothing left to pay.
    expect(page.locator("#balance")).to_have_text("You have nothing to pay right now. Thank you.")
    page.get_by_role("link", name="Your sessions, charges, payments and refunds").click()
    expect(page.locator("#account")).to_contain_text("Payment on the portal")
    expect(page.locator("#sessions")).to_contain_text("Individual therapy, 60 minutes")
    expect(page.locator("#sessions")).to_contain_text("Paid")
    screenshot(page, "history")


def test_a_declined_card_then_another_pays_once(portal: Portal, page: Page, owing: Client) -> None:
    open_link(page, link_create(client=owing, purpose=LinkPurpose.PAY_BALANCE, now=timezone.now(), actor="test").url)
    page.get_by_label("An amount I choose").check()
    page.get_by_label("Amount in dollars").fill("60")
    _pay_once(page, CARD_DECLINED)
    expect(page.locator("#message")).to_have_class("message error")
    expect(page.locator("#message")).to_contain_text("declined")
    assert client_balance_cents(owing) == 18000
    assert Charge.objects.get(client=owing, kind=ChargeKind.SESSION_FEE).hold_reason == ""

    _pay_once(page, CARD_OK)  # the same form, a new key: a new payment
    expect(page.locator("#message")).to_contain_text("We received your payment of $60.00")
    assert client_balance_cents(owing) == 12000
    assert sum(c["amount"] for c in portal.stripe.charges() if c["status"] == "succeeded") == 6000


def test_a_card_whose_bank_asks_for_its_check_pays_once(portal: Portal, page: Page, owing: Client) -> None:
    open_link(page, link_create(client=owing, purpose=LinkPurpose.PAY_BALANCE, now=timezone.now(), actor="test").url)
    _pay_once(page, CARD_NEEDS_AUTHENTICATION)
    expect(page.get_by_text("3D Secure")).to_be_visible()
    pass_three_d_secure(page)
    expect(page.locator("#message")).to_contain_text("We received your payment of $180.00. Your card was not saved.")
    assert client_balance_cents(owing) == 0
