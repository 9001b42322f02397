"""The client pages work under the Content-Security-Policy: no inline script, Stripe.js from its own origin.

Chromium enforces the header the portal sends; a script or frame it refuses shows as a console error
("Refused to ... because it violates the following Content Security Policy directive"), which fails here.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import ConsoleMessage, Page, expect

from billing.models import Client
from billing.services.cards import enrollment_link_send
from tests.browser.conftest import CARD_OK, Portal, enroll_card, open_link, pass_three_d_secure

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def csp_violations(page: Page) -> list[str]:
    seen: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            seen.append(message.text)

    page.on("console", note)
    return seen


def test_enrollment_runs_under_the_policy(portal: Portal, page: Page, self_pay_client: Client) -> None:
    violations = csp_violations(page)
    issued = enrollment_link_send(client=self_pay_client, now=timezone.now(), actor="staff:test", send_email=False)
    response = page.goto(issued.url)
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self' " in policy and "'unsafe-inline'" not in policy.split("script-src", 1)[1].split(";")[0]
    assert "frame-ancestors 'none'" in policy
    enroll_card(page, issued.url, CARD_OK)
    assert violations == []


def test_payment_authentication_runs_under_the_policy(portal: Portal, page: Page, payment_waiting: str,
                                                      self_pay_client: Client) -> None:
    violations = csp_violations(page)
    open_link(page, payment_waiting)
    page.get_by_role("button", name="Confirm payment").click()
    pass_three_d_secure(page)
    expect(page.locator("#message")).to_contain_text("is complete")
    assert violations == []


def test_an_inline_script_would_be_refused(portal: Portal, page: Page, self_pay_client: Client) -> None:
    """The policy is really enforced: a script injected into a portal page does not run."""
    violations = csp_violations(page)
    issued = enrollment_link_send(client=self_pay_client, now=timezone.now(), actor="staff:test", send_email=False)
    open_link(page, issued.url)
    ran: Any = page.evaluate("""() => { const s = document.createElement('script');
        s.textContent = 'window.__injected = true'; document.body.appendChild(s);
        return window.__injected === true; }""")
    assert ran is False
    assert violations, "Chromium reported no CSP violation for the injected script"


