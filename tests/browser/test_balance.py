"""A client pays their balance on the portal in a real browser: reminders stop, receipts download."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from billing.models import Appointment, BillingType, Charge, ChargeStatus, Client, LinkPurpose
from billing.services.balance import client_balance_cents
from billing.services.links import link_create
from tests.browser.conftest import CARD_OK, Portal, emails, enroll_card, link_in, open_link, screenshot, tick
from tests.payment_fixtures import save_card

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
DAY = dt.timedelta(days=1)


def test_paying_on_day_22_stops_the_reminders_and_sends_the_acknowledgment(
        portal: Portal, page: Page, make_client: Callable[..., Client],
        complete_session: Callable[..., Appointment]) -> None:
    now = timezone.now()
    start = now - 22 * DAY  # the session was 22 days ago; the client has no card, so it is still owed
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=20000)
    complete_session(person, at=start)
    for day in range(22):
        tick(start + day * DAY + dt.timedelta(minutes=1))
    assert len(emails("balance_reminder")) == 1 and len(emails("balance_second_reminder")) == 1

    link = link_in(emails("balance_second_reminder")[0])
    open_link(page, link)
    expect(page.locator("#balance")).to_have_text("Your balance is $200.00.")
    screenshot(page, "balance-no-card")
    page.get_by_role("button", name="Add a card").click()
    enroll_card(page, page.url, CARD_OK)

    open_link(page, link)
    expect(page.get_by_text("We'll charge your Visa ending 4242")).to_be_visible()
    page.get_by_role("button", name="Pay now").click()
    expect(page.locator("#message")).to_contain_text("We received your payment of $200.00")

    for day in range(22, 36):
        tick(start + day * DAY + dt.timedelta(minutes=2))
    person.refresh_from_db()
    assert not person.flagged_for_outreach
    assert (len(emails("balance_reminder")), len(emails("balance_second_reminder"))) == (1, 1)
    [thanks] = emails("balance_paid")
    assert "Your balance is now $0.00" in thanks.body
    assert [c["amount"] for c in portal.stripe.charges() if c["status"] == "succeeded"] == [20000]


def test_pay_part_of_the_balance_and_download_a_receipt(
        portal: Portal, page: Page, make_client: Callable[..., Client],
        complete_session: Callable[..., Appointment]) -> None:
    portal.practice.charge_timing = "weekly"
    portal.practice.save()
    now = timezone.now()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=12000)
    save_card(person, CARD_OK, portal.stripe, now=now)
    for days_ago in (9, 2):
        complete_session(person, at=now - days_ago * DAY)
    link = link_create(client=person, purpose=LinkPurpose.PAY_BALANCE, now=now, actor="test").url

    open_link(page, link)
    expect(page.locator("#balance")).to_have_text("Your balance is $240.00.")
    screenshot(page, "balance-to-pay")
    page.get_by_label("Amount in dollars").fill("50.00")
    page.get_by_role("button", name="Pay now").click()
    expect(page.locator("#message")).to_contain_text("We received your payment of $50.00")
    assert client_balance_cents(person) == 19000
    older = Charge.objects.filter(client=person, kind="session_fee").order_by("created_at").first()
    assert older is not None and (older.amount_cents, older.prepaid_cents) == (7000, 5000)

    open_link(page, link)
    expect(page.locator("#balance")).to_have_text("Your balance is $190.00.")
    page.get_by_label("The sessions I choose").check()
    page.locator("input[name=items]").first.check()
    page.get_by_role("button", name="Pay now").click()
    expect(page.locator("#message")).to_contain_text("We received your payment of $70.00")
    older.refresh_from_db()
    assert older.status == ChargeStatus.SUCCEEDED

    open_link(page, link)
    screenshot(page, "balance-with-receipts")
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download receipt").first.click()
    download = download_info.value
    assert download.suggested_filename.startswith("receipt-")
    receipt = download.path().read_text(encoding="utf-8")
    # The older session, paid in two parts ($50 then $70), has one receipt for the whole $120.
    assert "Individual therapy, 60 minutes" in receipt
    assert "<strong>$120.00</strong>" in receipt
