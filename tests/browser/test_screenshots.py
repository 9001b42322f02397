"""Every client-facing page, photographed at phone (390x844) and desktop (1280x800) width.

The pictures land in test-artifacts/screenshots/ (gitignored; CI keeps them as artefacts) for a person
to look at. The test itself checks what a picture cannot: nothing is wider than a phone's screen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from billing.models import Appointment, Charge, Client, LinkPurpose
from billing.services.cards import enrollment_link_send
from billing.services.links import link_create
from integrations.stripe.gateway import get_gateway
from tests.browser.conftest import (
    CARD_NEEDS_AUTHENTICATION,
    VIEWPORTS,
    Portal,
    emails,
    enroll_card,
    link_in,
    open_link,
    pass_three_d_secure,
    screenshot,
    tick,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def fits_a_phone(page: Page) -> None:
    page.set_viewport_size(VIEWPORTS["phone"])  # type: ignore[arg-type]
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    page.set_viewport_size(VIEWPORTS["desktop"])  # type: ignore[arg-type]
    assert overflow <= 0, f"{page.url}: the page is {overflow}px wider than a phone's screen"


def test_every_portal_page_at_phone_and_desktop_width(
        portal: Portal, page: Page, self_pay_client: Client, settings: object,
        complete_session: Callable[..., Appointment]) -> None:
    now = timezone.now()

    def shoot(name: str) -> None:
        screenshot(page, name)

    # Saving a card: the form, the unticked-box error, the bank's check, the thank-you.
    enroll_link = enrollment_link_send(client=self_pay_client, now=now, actor="staff:test", send_email=False).url
    open_link(page, enroll_link)
    shoot("enroll")
    fits_a_phone(page)
    page.get_by_role("button", name="Save card").click()
    expect(page.locator("#message")).to_contain_text("tick the box")
    shoot("enroll-not-agreed")
    enroll_card(page, enroll_link, CARD_NEEDS_AUTHENTICATION, three_d_secure=True, shoot=shoot)
    shoot("enroll-saved")

    # Replacing the card on file.
    open_link(page, enrollment_link_send(client=self_pay_client, now=now, actor="staff:test", send_email=False).url)
    expect(page.get_by_role("heading", name="Update the card we keep on file")).to_be_visible()
    shoot("enroll-replace")

    # Confirming a payment the bank held back: the page, the bank's check, the thank-you.
    session = complete_session(self_pay_client, at=now)
    tick(now)
    pay_link = link_in(emails("authentication_required")[0])
    open_link(page, pay_link)
    shoot("authenticate")
    fits_a_phone(page)
    page.get_by_role("button", name="Confirm payment of $140.00").click()
    expect(page.get_by_text("3D Secure")).to_be_visible()
    shoot("authenticate-3ds-dialog")
    pass_three_d_secure(page)
    expect(page.locator("#message")).to_contain_text("is complete")
    shoot("authenticate-paid")

    # A fresh link to a payment that is already complete.
    charge = Charge.objects.get(appointment=session)
    done = link_create(client=self_pay_client, purpose=LinkPurpose.AUTHENTICATE_PAYMENT, now=now, actor="test",
                       charge=charge)
    open_link(page, done.url)
    expect(page.get_by_role("heading", name="Nothing to pay here")).to_be_visible()
    shoot("payment-done")

    # Links that no longer work.
    open_link(page, pay_link, status=410)
    shoot("link-used")
    expired = enrollment_link_send(client=self_pay_client, now=now - dt.timedelta(days=8), actor="staff:test",
                                   send_email=False)
    open_link(page, expired.url, status=410)
    shoot("link-expired")
    open_link(page, expired.url.rstrip("/")[:-4] + "/", status=404)
    shoot("link-unknown")
    fits_a_phone(page)

    # Stripe unreachable while a payment waits for the client.
    second = complete_session(self_pay_client, at=now + dt.timedelta(minutes=1))
    tick(now + dt.timedelta(minutes=1))
    second_link = link_in(emails("authentication_required")[-1])
    assert Charge.objects.get(appointment=second).status == "requires_action"
    settings.STRIPE_API_BASE = "http://127.0.0.1:9"  # type: ignore[attr-defined]  # nothing listens there
    get_gateway.cache_clear()
    open_link(page, second_link, status=503)
    expect(page.get_by_role("heading", name="Please try again in a minute")).to_be_visible()
    shoot("try-again")


# --- layout at phone width: what the pictures showed, checked so a fix is noticed ----------------------------

def content_overflowing_the_card(page: Page) -> list[str]:
    """Elements inside the page's card whose right edge passes the card's padding edge."""
    return list(page.evaluate("""() => {
        const card = document.querySelector("main .card");
        const style = getComputedStyle(card);
        const edge = card.getBoundingClientRect().right - parseFloat(style.borderRightWidth)
                     - parseFloat(style.paddingRight) + 1;
        return [...card.querySelectorAll("*")]
          .filter(el => el.getBoundingClientRect().right > edge)
          .map(el => el.tagName.toLowerCase() + (el.className ? "." + el.className : "") + ": "
                     + (el.textContent || "").trim().slice(0, 40));
    }"""))


def test_payment_details_stay_inside_the_card_on_a_phone(page: Page, payment_waiting: str) -> None:
    page.set_viewport_size(VIEWPORTS["phone"])  # type: ignore[arg-type]
    open_link(page, payment_waiting)
    assert content_overflowing_the_card(page) == []


def test_agree_checkbox_is_a_comfortable_tap_target(portal: Portal, page: Page, self_pay_client: Client) -> None:
    page.set_viewport_size(VIEWPORTS["phone"])  # type: ignore[arg-type]
    open_link(page, enrollment_link_send(client=self_pay_client, now=timezone.now(), actor="staff:test",
                                         send_email=False).url)
    box = page.get_by_label("I have read this and authorize").bounding_box()
    assert box is not None
    assert min(box["width"], box["height"]) >= 20, box
