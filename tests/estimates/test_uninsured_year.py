"""An uninsured client's year, against the real parts (PostgreSQL, the fake Stripe server, the billing tick):
an estimate issued, emailed and acknowledged on the portal; sessions charged until staff are warned, then a
charge held instead of taken; a revised estimate; the held charge told first, then charged once."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import time_machine
from django.test import Client as HttpClient

from billing.models import (
    Appointment,
    BillingType,
    Charge,
    ChargeStatus,
    Client,
    EstimateStatus,
    GoodFaithEstimate,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.services.estimates import LineIn, estimate_create, estimate_revise, estimate_send, is_estimate_hold
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, outbox, save_card, tick

WEEK = dt.timedelta(days=7)
# Tuesday 2 June 2026, 10:00 in New York: the year of care starts.
JUNE_2 = dt.datetime(2026, 6, 2, 14, 0, tzinfo=dt.UTC)


def link_path(body: str) -> str:
    return re.search(r"http://127\.0\.0\.1:8000(/p/[^\s]+/)", body).group(1)  # type: ignore[union-attr]


def paid(stripe_server: FakeStripe) -> list[int]:
    return [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"]


def test_an_uninsured_clients_year(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    immediate.npi, immediate.tax_id = "1245319599", "12-3456789"
    immediate.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15_000)
    save_card(person, CARD_OK, stripe_server, now=JUNE_2)

    # Issued and emailed: 4 sessions at the client's $150 rate, for a year.
    estimate = estimate_create(client=person, period_start=dt.date(2026, 6, 1), period_end=dt.date(2027, 5, 31),
                               lines=[LineIn("90837", 4)], frequency="Weekly", diagnosis_codes=["F41.1"],
                               now=JUNE_2, actor="staff:desk")
    estimate_send(estimate=estimate, now=JUNE_2, actor="staff:desk")
    tick(JUNE_2)
    [email] = outbox("good_faith_estimate")
    assert "comes to $600.00" in email.body and "$400 or more above" in email.body
    estimate.refresh_from_db()
    assert (estimate.delivered_to, estimate.delivered_by) == (person.email, "staff:desk")

    # The client reads it on the portal the next day and acknowledges receipt.
    browser = HttpClient()
    with time_machine.travel(JUNE_2 + dt.timedelta(days=1), tick=False):
        page = browser.get(link_path(email.body))
        text = page.content.decode()
        assert page.status_code == 200
        assert "Total estimated cost" in text and "$600.00" in text and "NPI: 1245319599" in text
        assert "you have the right to dispute the bill" in text
        acknowledged = browser.post(f"{link_path(email.body)}estimates/{estimate.pk}/acknowledge/")
        assert "recorded that you received this estimate" in acknowledged.content.decode()
    estimate.refresh_from_db()
    assert estimate.acknowledged_at == JUNE_2 + dt.timedelta(days=1)
    assert estimate.acknowledged_by == "client (portal)"

    # Weekly sessions, each charged at once: the sixth is $300 above the estimate, and staff are warned.
    for week in range(1, 7):
        completed_session(person, at=JUNE_2 + week * WEEK)
        tick(JUNE_2 + week * WEEK)
    assert paid(stripe_server) == [15_000] * 6
    [warning] = ReviewItem.objects.filter(kind=ReviewKind.ESTIMATE_WARNING, status=ReviewStatus.OPEN)
    assert "$900.00 is billed" in warning.reason and "$300.00 above good faith estimate" in warning.reason

    # The seventh would make it $450 above: held, not charged, not announced.
    seventh = completed_session(person, at=JUNE_2 + 7 * WEEK)
    for minutes in (0, 60 * 24):
        tick(JUNE_2 + 7 * WEEK + dt.timedelta(minutes=minutes))
    held = Charge.objects.get(appointment=seventh)
    assert held.status == ChargeStatus.DUE and is_estimate_hold(held)
    assert paid(stripe_server) == [15_000] * 6
    assert ReviewItem.objects.get(kind=ReviewKind.ESTIMATE_HOLD, status=ReviewStatus.OPEN).charge == held
    notices_before = len(outbox("pre_charge_notice"))

    # Staff revise the estimate: 8 sessions. The old one is superseded for the rest of the period; the held
    # charge fits now ($1,050 of $1,200) and goes ahead after a notice.
    revised_at = JUNE_2 + 8 * WEEK
    revised = estimate_revise(estimate=estimate, lines=[LineIn("90837", 8)], now=revised_at, actor="staff:manager",
                              why="Weekly sessions continue through the summer.")
    estimate.refresh_from_db()
    assert estimate.status == EstimateStatus.SUPERSEDED and estimate.superseded_at == revised_at
    assert revised.supersedes == estimate and revised.total_cents == 120_000
    held.refresh_from_db()
    assert held.status == ChargeStatus.SCHEDULED and held.hold_reason == ""
    assert not ReviewItem.objects.filter(kind__in=[ReviewKind.ESTIMATE_HOLD, ReviewKind.ESTIMATE_WARNING],
                                         status=ReviewStatus.OPEN).exists()
    tick(revised_at + dt.timedelta(minutes=1))
    assert len(outbox("pre_charge_notice")) == notices_before + 1  # told first
    assert paid(stripe_server) == [15_000] * 6
    tick(revised_at + dt.timedelta(hours=2))
    tick(revised_at + dt.timedelta(hours=2, minutes=1))
    held.refresh_from_db()
    assert held.status == ChargeStatus.SUCCEEDED
    assert paid(stripe_server) == [15_000] * 7  # charged once
    [attempt] = held.payment_attempts.all()
    assert held.notice_sent_at is not None and attempt.started_at - held.notice_sent_at >= dt.timedelta(hours=2)
    [_, revised_email] = outbox("good_faith_estimate")
    assert "revised your Good Faith Estimate" in revised_email.body
    assert GoodFaithEstimate.objects.filter(client=person, status=EstimateStatus.ISSUED).get() == revised
