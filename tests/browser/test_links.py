"""Links that no longer work explain, kindly, how to get a new one; nothing about the client is shown."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from billing.models import Client
from billing.services.cards import enrollment_link_send
from billing.services.links import link_mark_used
from tests.browser.conftest import Portal, open_link

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
NEW_LINK_HELP = "To get a new link, reply to our email or call us at 555-0100. We're happy to help."


def test_expired_link(portal: Portal, page: Page, self_pay_client: Client) -> None:
    issued = enrollment_link_send(client=self_pay_client, now=timezone.now() - dt.timedelta(days=7, minutes=1),
                                  actor="staff:test", send_email=False)
    open_link(page, issued.url, status=410)
    expect(page.get_by_role("heading", name="This link has expired")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(NEW_LINK_HELP)
    expect(page.get_by_role("link", name="555-0100").first).to_have_attribute("href", "tel:555-0100")
    expect(page.locator("body")).not_to_contain_text(self_pay_client.first_name)


def test_used_link(portal: Portal, page: Page, self_pay_client: Client) -> None:
    issued = enrollment_link_send(client=self_pay_client, now=timezone.now(), actor="staff:test", send_email=False)
    link_mark_used(link=issued.link, now=timezone.now())
    open_link(page, issued.url, status=410)
    expect(page.get_by_role("heading", name="This link has already been used")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(NEW_LINK_HELP)
    expect(page.locator("body")).not_to_contain_text(self_pay_client.first_name)


@pytest.mark.parametrize("tamper", ["change a letter", "cut short", "drop the signature"])
def test_tampered_link_is_not_found(portal: Portal, page: Page, self_pay_client: Client, tamper: str) -> None:
    issued = enrollment_link_send(client=self_pay_client, now=timezone.now(), actor="staff:test", send_email=False)
    base, token = issued.url.rstrip("/").rsplit("/", 1)
    bad = {"change a letter": ("B" if token[0] != "B" else "C") + token[1:],
           "cut short": token[:-3],
           "drop the signature": token.split(":")[0]}[tamper]
    open_link(page, f"{base}/{bad}/", status=404)
    expect(page.get_by_role("heading", name="This link doesn't work")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text(NEW_LINK_HELP)
    expect(page.locator("body")).not_to_contain_text(self_pay_client.first_name)
