"""Every receipt links to the client's history: sessions, charges, payments and refunds in the practice's days,
with its name and phone, and nothing clinical beyond what a receipt shows. The link views; it never pays."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from billing.models import Appointment, BillingType, Charge, Client, ClientLink, LinkPurpose, Practice
from billing.services.refunds import charge_refund
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, outbox, pay_link, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

# Thursday 26 November 2026, 8:30 PM in New York: already Friday in UTC.
THURSDAY_EVENING = dt.datetime(2026, 11, 27, 1, 30, tzinfo=dt.UTC)


@pytest.fixture
def paid_and_refunded(practice: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
                      completed_session: Callable[..., Appointment], billing_manager: User) -> Client:
    """A self-pay client charged at once for an evening session, then refunded $40 of it."""
    practice.charge_timing, practice.pre_charge_notice_hours = "immediate", 0
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000)
    save_card(person, CARD_OK, stripe_server, now=THURSDAY_EVENING - dt.timedelta(days=1))
    completed_session(person, at=THURSDAY_EVENING + dt.timedelta(hours=1))
    tick(THURSDAY_EVENING + dt.timedelta(hours=1, minutes=1))
    charge_refund(charge=Charge.objects.get(client=person), amount_cents=4000, reason="sliding scale agreed",
                  user=billing_manager, now=FRIDAY_10AM)
    return person


def _receipts_path(person: Client) -> str:
    [receipt] = [m for m in outbox("receipt") if m.to == [person.email]]
    html = receipt.alternatives[0][0]
    found = re.findall(r"https?://\S+/p/[^/\s]+/", receipt.body)
    assert len(found) == 1 and f'href="{found[0]}"' in html, receipt.body
    return found[0].split("127.0.0.1:8000", 1)[1]


def test_the_receipt_links_to_the_history_in_the_practices_days(paid_and_refunded: Client,
                                                                client: HttpClient) -> None:
    path = _receipts_path(paid_and_refunded)
    assert ClientLink.objects.get(client=paid_and_refunded, purpose=LinkPurpose.RECEIPTS).used_at is None

    page = client.get(path)
    assert page.status_code == 200
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page.content.decode()))
    assert "Riverbend Counseling" in text and "555-0100" in text
    # The 8:30 PM session is on Thursday in New York (Friday in UTC); so are its charge and payment.
    assert "Nov 26, 2026 8:30 PM Individual therapy, 60 minutes Attended $150.00 Partly refunded" in text
    assert "Nov 26, 2026 Session: Individual therapy, 60 minutes $150.00" in text
    assert "Nov 26, 2026 Card payment: Individual therapy, 60 minutes · Receipt" in text
    assert "Nov 27, 2026 Refunded to your card: Individual therapy, 60 minutes $40.00" in text  # Friday's refund
    assert "Nov 27, 2026 No longer owed: Individual therapy, 60 minutes -$40.00" in text
    assert text.count("Nov 27") == 2  # the refund's two lines, nothing of Thursday's session
    for clinical in ("F41.1", "90837", "sliding scale agreed"):  # diagnosis, CPT code, a staff reason
        assert clinical not in text
    receipt = Charge.objects.get(client=paid_and_refunded, kind="session_fee")
    assert client.get(f"{path}receipts/{receipt.pk}/").status_code == 200


def test_the_receipts_link_pays_nothing_and_saves_no_card(paid_and_refunded: Client, client: HttpClient) -> None:
    path = _receipts_path(paid_and_refunded)
    assert b"Pay now" not in client.get(path).content
    assert client.post(path + "balance/pay/", {"mode": "all"}).status_code == 404
    assert client.post(path + "balance/pay/", {"mode": "all", "card": "once"}).status_code == 404
    assert client.post(path + "card/new/").status_code == 404
    assert client.post(path + "card/start/", {"agree": "yes"}).status_code == 404


def test_the_balance_page_links_to_the_same_history(paid_and_refunded: Client, client: HttpClient) -> None:
    path = pay_link(paid_and_refunded)
    assert f'href="{path}history/"' in client.get(path).content.decode()
    history = client.get(path + "history/").content.decode()
    assert "Partly refunded" in history and f'href="{path}"' in history  # back to paying


def test_a_forged_history_link_gets_the_friendly_page(practice: Practice, client: HttpClient) -> None:
    response = client.get("/p/not-a-link/history/")
    assert response.status_code == 404 and b"This link" in response.content
