"""Saving a card never charges anything the client was not told about.

Charges that waited for a card are listed to the client (one "card needed" email a day, then the card page
and the card-saved email) and wait for the client's choice: pay them now on the page, let them be charged
after a notice, or leave them to the practice; staff release them from the admin, a notice first.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client as HttpClient

from billing.models import (
    Appointment,
    BillingType,
    Charge,
    ChargeStatus,
    Client,
    OutboundEmail,
    PaymentAttempt,
    Practice,
    ReviewItem,
    ReviewKind,
)
from billing.services.balance import client_balance_cents
from billing.services.cards import enrollment_link_send
from billing.services.waiting import CHOICE_HOLD, NO_CARD_HOLD
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, outbox, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def eight_waiting(practice: Practice, make_client: Callable[..., Client],
                  completed_session: Callable[..., Appointment], stripe_server: FakeStripe) -> Client:
    """Eight weekly sessions over two months, each charged a day later (2 hours' notice), no card on file."""
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    start = FRIDAY_10AM - 56 * DAY
    for week in range(8):
        completed_session(person, at=start + week * 7 * DAY)
        tick(start + week * 7 * DAY + DAY + HOUR)
    assert Charge.objects.filter(client=person, status=ChargeStatus.DUE, hold_reason=NO_CARD_HOLD).count() == 8
    return person


def written(template: str) -> list[OutboundEmail]:
    """Emails in the outbox (sent after the request's commit, which a test transaction never reaches)."""
    return list(OutboundEmail.objects.filter(template=template).order_by("pk"))


def _local(url: str) -> str:
    return url.split("127.0.0.1:8000", 1)[1]


def _save_card_in_the_browser(person: Client, stripe_server: FakeStripe, client: HttpClient,
                              now: dt.datetime) -> dict[str, Any]:
    """The card page's own calls, as enroll.js makes them."""
    issued = enrollment_link_send(client=person, now=now, actor="test", send_email=False)
    path = _local(issued.url)
    secret = client.post(path + "card/start/", {"agree": "yes"}).json()["client_secret"]
    confirmed = stripe_server.confirm_setup(secret, CARD_OK)
    answer: dict[str, Any] = client.post(path + "card/finish/", {"setup_intent": confirmed["id"]}).json()
    return answer


def test_card_needed_is_one_email_a_day_listing_what_waits(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Appointment]) -> None:
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    for hour in range(3):  # three sessions that day, all due the next day
        completed_session(person, at=FRIDAY_10AM + hour * HOUR)
    tick(FRIDAY_10AM + DAY + 3 * HOUR)
    tick(FRIDAY_10AM + DAY + 4 * HOUR)
    [email] = outbox("card_needed")
    assert email.body.count("$140.00") == 3
    assert "Total: $420.00" in email.body
    assert "Nothing from before your card is charged without your say" in email.body

    completed_session(person, at=FRIDAY_10AM + 2 * DAY)
    tick(FRIDAY_10AM + 3 * DAY + HOUR)  # a new day, a new charge waiting: one more email, listing all four
    assert len(outbox("card_needed")) == 2
    assert "Total: $560.00" in outbox("card_needed")[1].body


def test_saving_a_card_charges_nothing_that_waited_and_lists_it(
        eight_waiting: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    now = FRIDAY_10AM + 2 * DAY
    answer = _save_card_in_the_browser(eight_waiting, stripe_server, client, now)
    assert (answer["saved"], answer["waiting_count"], answer["waiting_total"]) == (True, 8, "$1,120.00")

    for hours in (1, 3, 30, 24 * 7):
        tick(now + hours * HOUR)
    assert stripe_server.charges() == []
    assert Charge.objects.filter(client=eight_waiting, hold_reason=CHOICE_HOLD).count() == 8

    [saved] = written("card_saved")
    assert saved.body_text.count("$140.00") == 8
    assert "Total: $1,120.00" in saved.body_text
    assert "We won't charge them without your say" in saved.body_text
    [item] = ReviewItem.objects.filter(kind=ReviewKind.WAITING_CHOICE, status="open")
    assert "$1,120.00" in item.reason

    page = client.get(answer["choose_url"])
    assert b"Waiting since before you saved your card" in page.content
    assert b"Pay $1,120.00 now" in page.content


def test_the_client_pays_what_waited_now_on_the_page(
        eight_waiting: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    answer = _save_card_in_the_browser(eight_waiting, stripe_server, client, FRIDAY_10AM)
    page = client.get(answer["choose_url"])
    form = {"mode": "items", "items": re.findall(r'name="items" value="(\d+)"', page.content.decode()),
            "pay_key": "waiting-form-key-0001"}
    paid = client.post(answer["choose_url"] + "balance/pay/", form).json()
    assert (paid["status"], paid["amount"]) == ("succeeded", "$1,120.00")
    assert [c["amount"] for c in stripe_server.charges()] == [112000]  # one on-session payment
    assert client_balance_cents(eight_waiting) == 0
    assert not ReviewItem.objects.filter(kind=ReviewKind.WAITING_CHOICE, status="open").exists()
    tick(FRIDAY_10AM + DAY)
    assert len(stripe_server.charges()) == 1


def test_the_client_lets_what_waited_be_charged_after_a_notice(
        eight_waiting: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    now = dt.datetime.now(dt.UTC)
    answer = _save_card_in_the_browser(eight_waiting, stripe_server, client, now)
    chosen = client.post(answer["choose_url"] + "balance/waiting/", {"choice": "automatic"})
    assert chosen.status_code == 200
    assert b"charge $1,120.00 to your card" in chosen.content
    [notice] = written("waiting_charges_notice")
    assert "we will charge $1,120.00" in notice.body_text
    assert notice.body_text.count("$140.00") == 8

    tick(now + HOUR)  # inside the 2 hours' notice: nothing yet
    assert stripe_server.charges() == []
    tick(now + 2 * HOUR + dt.timedelta(minutes=1))
    assert sorted(c["amount"] for c in stripe_server.charges()) == [14000] * 8
    for attempt in PaymentAttempt.objects.filter(charge__client=eight_waiting):
        assert attempt.charge.notice_sent_at is not None
        assert attempt.charge.notice_sent_at <= attempt.started_at - 2 * HOUR


def test_left_to_the_practice_then_released_by_staff_with_a_notice_first(
        eight_waiting: Client, stripe_server: FakeStripe, client: HttpClient, admin_client: HttpClient) -> None:
    now = dt.datetime.now(dt.UTC)
    answer = _save_card_in_the_browser(eight_waiting, stripe_server, client, now)
    left = client.post(answer["choose_url"] + "balance/waiting/", {"choice": "practice"})
    assert b"nothing is charged until then" in left.content
    [item] = ReviewItem.objects.filter(kind=ReviewKind.WAITING_CHOICE, status="open")
    assert "chose to leave them to the practice" in item.reason
    tick(now + 7 * DAY)
    assert stripe_server.charges() == []

    ids = [str(pk) for pk in Charge.objects.filter(client=eight_waiting).values_list("pk", flat=True)]
    released = admin_client.post("/admin/billing/charge/", {"action": "release_waiting", "_selected_action": ids,
                                                            "apply": "1"}, follow=True)
    assert b"notice sent for 8 charges" in released.content
    assert len(written("waiting_charges_notice")) == 1
    tick(now + 90 * dt.timedelta(minutes=1))  # the notice just went: the card waits its 2 hours
    assert stripe_server.charges() == []
    tick(now + 2 * HOUR + dt.timedelta(minutes=5))
    assert len(stripe_server.charges()) == 8
    assert not ReviewItem.objects.filter(kind=ReviewKind.WAITING_CHOICE, status="open").exists()


def test_a_bad_choice_is_refused_and_changes_nothing(
        eight_waiting: Client, stripe_server: FakeStripe, client: HttpClient) -> None:
    answer = _save_card_in_the_browser(eight_waiting, stripe_server, client, FRIDAY_10AM)
    refused = client.post(answer["choose_url"] + "balance/waiting/", {"choice": "everything-please"})
    assert refused.status_code == 400
    assert Charge.objects.filter(client=eight_waiting, hold_reason=CHOICE_HOLD).count() == 8
    assert written("waiting_charges_notice") == []
