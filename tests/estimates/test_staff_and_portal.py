"""Estimates for staff (a queue until each self-pay client has one, a batch, the Today page's fixes for what the
guard holds) and for the client (their page and PDF, a hostile name shown as text, links kept to their own)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pypdfium2
import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeStatus,
    Client,
    EstimateStatus,
    GoodFaithEstimate,
    LinkPurpose,
    OutboundEmail,
    Practice,
)
from billing.services.estimates import LineIn, estimate_create, is_estimate_hold
from billing.services.links import link_create
from billing.services.schedule import appointment_set_status

pytestmark = pytest.mark.django_db
NOW = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.UTC)


def signed_in(user: Any) -> HttpClient:
    http = HttpClient()
    http.force_login(user)
    return http


def fix(http: HttpClient, name: str, target: int, why: str = "") -> str:
    page = http.post(reverse("admin:today_fix"), {"fix": name, "target": target, "why": why, "next": "/admin/"},
                     follow=True)
    return page.content.decode()


def today_section(http: HttpClient, section: str) -> str:
    page = http.get(reverse("admin:index")).content.decode()
    start = page.index(f'id="{section}"')
    ends = [page.find(marker, start + 1) for marker in ('<div class="module"', 'id="today-')]
    return page[start:min(end for end in ends if end > 0)]


def test_a_self_pay_client_waits_in_the_queue_until_the_batch_issues_their_estimate(
        practice: Practice, aetna: object, make_client: Callable[..., Client], front_desk: Any) -> None:
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14_000)
    insured = make_client(benefits={"copay_cents": 3000})
    http = signed_in(front_desk)
    queue = today_section(http, "today-estimates")
    assert str(person) in queue and str(insured) not in queue
    assert "Issue and email an estimate to all 1" in queue

    message = fix(http, "estimates_all", 0)
    assert "Issued 1 good faith estimate ($7,280.00 in all" in message
    estimate = GoodFaithEstimate.objects.get(client=person)
    today = timezone.localdate(timezone=practice.zone)  # the practice's day: from 7 PM in New York, UTC's is the next
    assert (estimate.period_start, estimate.total_cents, estimate.frequency) == (today, 52 * 14_000, "Weekly")
    assert estimate.period_end < today.replace(year=today.year + 1)
    assert estimate.delivered_to == person.email and estimate.delivered_by == "staff:desk"
    assert OutboundEmail.objects.filter(template="good_faith_estimate", client=person).count() == 1
    assert "Every self-pay client has an estimate in force." in today_section(http, "today-estimates")


@pytest.fixture
def held(practice: Practice, aetna: object, make_client: Callable[..., Client],
         make_appointment: Callable[..., Appointment]) -> Charge:
    """A $150 client with a $100 estimate: the third session ($350 over) is charged, the fourth ($500 over) held."""
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15_000)
    estimate_create(client=person, period_start=dt.date(2026, 11, 1), period_end=dt.date(2027, 10, 31),
                    lines=[LineIn("90837", 1, 10_000)], now=NOW, actor="staff:desk")
    charges = []
    for day in (2, 9, 16, 23):
        appointment = make_appointment(person, starts_at=dt.datetime(2026, 11, day, 15, tzinfo=dt.UTC))
        appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=NOW, actor="test")
        charges.append(Charge.objects.get(appointment=appointment))
    assert [is_estimate_hold(c) for c in charges] == [False, False, False, True]
    return charges[-1]


def test_staff_charge_a_held_charge_anyway_saying_why(held: Charge, billing_manager: Any, front_desk: Any) -> None:
    desk = signed_in(front_desk)
    row = today_section(desk, "today-held")
    assert f"#{held.pk}" in row and "Charge anyway" not in row  # front desk may not release holds
    assert desk.post(reverse("admin:today_fix"), {"fix": "release", "target": held.pk, "why": "x"}).status_code == 403

    manager = signed_in(billing_manager)
    warned = today_section(manager, "today-review")  # the third session, $350 over: warned, and charged
    assert "Billed nearing $400 above the good faith estimate" in warned and "Issue a revised estimate" in warned
    row = today_section(manager, "today-held")
    assert "Issue a revised estimate" in row and "Charge anyway" in row
    assert "Say why first" in fix(manager, "release", held.pk)
    message = fix(manager, "release", held.pk, why="Client asked to keep weekly sessions; new estimate next week")
    assert f"Charge #{held.pk}" in message
    held.refresh_from_db()
    assert held.status == ChargeStatus.SCHEDULED and held.hold_reason == ""
    event = held.events.order_by("-at", "-pk").first()
    assert event is not None and event.user == billing_manager and event.actor == "staff:manager"
    assert "released by staff above the good faith estimate" in event.reason
    assert "keep weekly sessions" in event.reason
    # Told first: the notice goes out with the release, the card is charged the notice's lead time later.
    assert held.notice_sent_at is not None and held.scheduled_for - held.notice_sent_at == dt.timedelta(hours=2)
    assert OutboundEmail.objects.filter(template="pre_charge_notice", client=held.client).exists()


def test_the_revise_page_issues_a_revision_that_releases_what_fits(held: Charge, billing_manager: Any) -> None:
    http = signed_in(billing_manager)
    estimate = GoodFaithEstimate.objects.get(client=held.client)
    url = reverse("admin:billing_goodfaithestimate_revise", args=[estimate.pk])
    form = http.get(url).content.decode()
    assert 'name="quantity_1" value="1"' in form and 'name="price_1" value="100.00"' in form
    refused = http.post(url, {"frequency": "Weekly", "cpt_1": "90837", "quantity_1": "4", "why": ""})
    assert "This field is required" in refused.content.decode()
    http.post(url, {"frequency": "Weekly", "cpt_1": "90837", "quantity_1": "4", "price_1": "",
                    "why": "Sessions weekly, not monthly", "send": "on"})
    revised = GoodFaithEstimate.objects.get(client=held.client, status=EstimateStatus.ISSUED)
    assert revised.supersedes == estimate and revised.total_cents == 4 * 15_000
    held.refresh_from_db()
    assert held.status == ChargeStatus.SCHEDULED and not is_estimate_hold(held)


def test_a_hostile_name_is_shown_as_text_on_the_page_and_the_pdf(
        practice: Practice, aetna: object, make_client: Callable[..., Client]) -> None:
    person = make_client(billing_type=BillingType.SELF_PAY)
    person.first_name, person.last_name = "<script>alert(1)</script>", "=cmd|' /C calc'!A0"
    person.save()
    other = make_client(billing_type=BillingType.SELF_PAY)
    estimate = estimate_create(client=person, period_start=dt.date(2026, 11, 1), period_end=dt.date(2027, 10, 31),
                               lines=[LineIn("90837", 10)], now=NOW, actor="staff:desk", diagnosis_codes=["F41.1"])
    theirs = estimate_create(client=other, period_start=dt.date(2026, 11, 1), period_end=dt.date(2027, 10, 31),
                             lines=[LineIn("90837", 10)], now=NOW, actor="staff:desk")
    path = link_create(client=person, purpose=LinkPurpose.ESTIMATE, now=timezone.now(),
                       actor="test").url.split("127.0.0.1:8000", 1)[1]
    page = HttpClient().get(path).content.decode()
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; =cmd|&#x27; /C calc&#x27;!A0" in page
    assert "$2,000.00" in page and "F41.1" in page

    pdf = HttpClient().get(f"{path}estimates/{estimate.pk}/pdf/")
    text = " ".join(pypdfium2.PdfDocument(io.BytesIO(pdf.content))[0].get_textpage().get_text_range().split())
    assert "<script>alert(1)</script>=cmd|'/Ccalc'!A0" in "".join(text.split())  # as text (the box wraps it)
    assert "you have the right to dispute the bill" in text and "Total estimated cost $2,000.00" in text

    # Another client's estimate is not reachable through this link.
    assert HttpClient().get(f"{path}estimates/{theirs.pk}/pdf/").status_code == 404
    assert HttpClient().post(f"{path}estimates/{theirs.pk}/acknowledge/").status_code == 404
    theirs.refresh_from_db()
    assert theirs.acknowledged_at is None


def test_the_issue_page_proposes_the_lines_and_refuses_what_the_law_does_not_allow(
        practice: Practice, aetna: object, make_client: Callable[..., Client], front_desk: Any) -> None:
    person = make_client(billing_type=BillingType.SLIDING_SCALE, session_rate_cents=25_000)
    http = signed_in(front_desk)
    url = reverse("admin:billing_goodfaithestimate_issue", args=[person.pk])
    form = http.get(url).content.decode()
    # Weekly 60-minute sessions (nothing booked yet), at the sliding-scale rate never above the full fee ($200).
    assert '<option value="90837" selected>' in form and 'name="price_1" value="200.00"' in form
    body = {"frequency": "Every other week", "period_start": "2026-12-01", "months": "13", "cpt_1": "90837",
            "quantity_1": "26", "diagnosis_codes": "F41.1, =cmd"}
    refused = http.post(url, body).content.decode()
    assert "less than or equal to 12" in refused
    assert http.post(url, {**body, "months": "12"}).status_code == 200  # =cmd is no ICD-10 code
    assert not GoodFaithEstimate.objects.filter(client=person).exists()
    done = http.post(url, {**body, "months": "12", "diagnosis_codes": "F41.1", "send": "on"}, follow=True)
    assert "Issued good faith estimate" in done.content.decode()
    estimate = GoodFaithEstimate.objects.get(client=person)
    assert (estimate.period_start, estimate.period_end, estimate.total_cents, estimate.diagnosis_codes) == (
        dt.date(2026, 12, 1), dt.date(2027, 11, 30), 26 * 20_000, ["F41.1"])
    assert estimate.issued_by == "staff:desk" and estimate.delivered_to == person.email
    assert http.get(url).status_code == 200
    assert "revise it instead" in http.post(url, {**body, "months": "1", "diagnosis_codes": ""}).content.decode()
