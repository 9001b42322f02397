"""Every date and time a person reads is in the practice's zone, wherever it is rendered: emails written by
the tick, admin pages, the superbill PDF, CSV exports and the front page's figures.

The sessions are in the evening on the west coast (8:30 PM in Los Angeles is 04:30 the next day in UTC) or
in the morning far east (8:30 AM in Tokyo is 23:30 the day before in UTC), so a date taken in UTC is a day off.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
import time_machine
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Charge,
    Client,
    Coverage,
    FindingKind,
    LedgerEntry,
    LedgerKind,
    LinkPurpose,
    OutboundEmail,
    Practice,
    ReconciliationFinding,
    ReviewItem,
)
from billing.services.documents import superbill_pdf
from billing.services.links import link_create
from billing.services.reconciliation import reconciliation_run
from billing.services.schedule import appointment_set_status
from integrations.ehr.keys import api_key_create
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, outbox, save_card, tick
from tests.portal.test_superbill import pdf_text_and_image

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
LOS_ANGELES = zoneinfo.ZoneInfo("America/Los_Angeles")
TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)

# Friday 27 November 2026, 8:30 PM in Los Angeles: Saturday 28 November, 04:30 in UTC.
LA_FRIDAY_EVENING = dt.datetime(2026, 11, 27, 20, 30, tzinfo=LOS_ANGELES)


def html_of(message: Any) -> str:
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    return str(html)


def in_zone(practice: Practice, name: str, **policy: Any) -> Practice:
    practice.time_zone = name
    for field, value in policy.items():
        setattr(practice, field, value)
    practice.save()
    return practice


def session(client: Client, starts_at: dt.datetime, make_appointment: Callable[..., Appointment],
            completed_at: dt.datetime | None = None, **fields: Any) -> Appointment:
    """A 50-minute session at ``starts_at``, marked complete ten minutes after it ends."""
    appointment = make_appointment(client, starts_at=starts_at, duration_minutes=50, **fields)
    appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED,
                           now=completed_at or starts_at + HOUR, actor="test")
    return appointment


@pytest.fixture
def pacific(practice: Practice) -> Practice:
    return in_zone(practice, "America/Los_Angeles", charge_timing="immediate")


# --- Emails rendered by the tick ---------------------------------------------------------------------------

def test_pre_charge_notice_shows_the_local_charge_time_and_date_of_service(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    # New York; charged 7 hours after the session is marked complete, with the notice 2 hours before.
    in_zone(practice, "America/New_York", charge_timing="delayed", charge_delay_hours=7, pre_charge_notice_hours=2)
    wednesday_evening = dt.datetime(2026, 11, 25, 20, 30, tzinfo=NEW_YORK)  # 01:30 Thursday in UTC
    save_card(self_pay_client, CARD_OK, stripe_server, now=wednesday_evening - DAY)
    appointment = session(self_pay_client, wednesday_evening, make_appointment)
    charge = Charge.objects.get(appointment=appointment)
    assert charge.scheduled_for == dt.datetime(2026, 11, 26, 4, 30, tzinfo=NEW_YORK)  # 09:30 in UTC

    tick(dt.datetime(2026, 11, 26, 2, 30, tzinfo=NEW_YORK))  # the tick runs outside any request
    [notice] = outbox("pre_charge_notice")
    expected = "on Thursday, November 26 at 4:30 AM we will charge $140.00 to your Visa ending 4242"
    for body in (notice.body, html_of(notice)):
        assert expected in body
        assert "for your session on November 25 with Dana Reyes" in body
        assert "9:30 AM" not in body and "November 26 with" not in body


@pytest.mark.parametrize(("zone", "starts_at", "date_of_service"), [
    ("America/Los_Angeles", LA_FRIDAY_EVENING, "November 27, 2026"),  # Saturday in UTC
    ("Asia/Tokyo", dt.datetime(2026, 11, 28, 8, 30, tzinfo=TOKYO), "November 28, 2026"),  # Friday in UTC
])
def test_receipt_shows_the_local_date_of_service(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        make_appointment: Callable[..., Appointment], zone: str, starts_at: dt.datetime,
        date_of_service: str) -> None:
    in_zone(practice, zone, charge_timing="immediate")
    save_card(self_pay_client, CARD_OK, stripe_server, now=starts_at - DAY)
    session(self_pay_client, starts_at, make_appointment)
    tick(starts_at + HOUR)
    [receipt] = outbox("receipt")
    assert f"Date of service: {date_of_service}" in receipt.body
    assert f"<td>Date of service</td><td style=\"text-align:right\">{date_of_service}</td>" in html_of(receipt)


def test_decline_email_names_the_local_day_of_the_next_try(
        pacific: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    save_card(self_pay_client, CARD_DECLINES_WHEN_CHARGED, stripe_server, now=LA_FRIDAY_EVENING - DAY)
    session(self_pay_client, LA_FRIDAY_EVENING, make_appointment)
    tick(LA_FRIDAY_EVENING + HOUR)  # declined at 9:30 PM Friday; tried again 3 days later, Monday evening
    [declined] = outbox("payment_failed")
    assert "we will try your card again on November 30." in declined.body
    assert "December 1" not in declined.body


def test_an_email_rendered_in_a_request_for_another_zone_still_uses_the_practices(
        pacific: Practice, self_pay_client: Client) -> None:
    from billing.services.cards import enrollment_link_send

    sent_at = dt.datetime(2026, 11, 27, 21, 0, tzinfo=LOS_ANGELES)  # 05:00 Saturday in UTC
    with timezone.override(TOKYO):  # whatever zone happens to be active, the email is the practice's
        issued = enrollment_link_send(client=self_pay_client, now=sent_at, actor="test", send_email=True)
    email = OutboundEmail.objects.get(template="card_enrollment")  # sent after the test's transaction commits
    local_expiry = timezone.localtime(issued.expires_at, LOS_ANGELES)
    assert local_expiry.date() != timezone.localtime(issued.expires_at, TOKYO).date()
    assert f"the link works until {local_expiry:%B} {local_expiry.day})" in email.body_text


# --- Client portal pages -----------------------------------------------------------------------------------

def test_the_portal_receipt_shows_the_local_date_of_service_and_payment(
        pacific: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        make_appointment: Callable[..., Appointment], client: HttpClient) -> None:
    save_card(self_pay_client, CARD_OK, stripe_server, now=LA_FRIDAY_EVENING - DAY)
    session(self_pay_client, LA_FRIDAY_EVENING, make_appointment)
    with time_machine.travel(LA_FRIDAY_EVENING + HOUR, tick=False):  # paid at 9:30 PM Friday: Saturday in UTC
        tick(LA_FRIDAY_EVENING + HOUR)
    charge = Charge.objects.get(client=self_pay_client)
    issued = link_create(client=self_pay_client, purpose=LinkPurpose.RECEIPTS, now=timezone.now(), actor="test")
    path = issued.url.split("127.0.0.1:8000", 1)[1]
    receipt = client.get(f"{path}receipts/{charge.pk}/").content.decode()
    assert '<td>Date of service</td><td class="r">November 27, 2026</td>' in receipt
    assert '<td>Paid on</td><td class="r">November 27, 2026</td>' in receipt
    assert "Nov 27, 2026" in client.get(path).content.decode()  # the receipts listed on the page


# --- Admin pages ---------------------------------------------------------------------------------------------

def test_admin_lists_and_pages_of_sessions_and_charges_show_local_times(
        pacific: Practice, admin_client: HttpClient, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    appointment = session(self_pay_client, LA_FRIDAY_EVENING, make_appointment)
    tick(LA_FRIDAY_EVENING + HOUR)  # no card: the charge waits for staff, in the review queue
    charge = Charge.objects.get(appointment=appointment)

    sessions = admin_client.get(reverse("admin:billing_appointment_changelist")).text
    assert "Nov. 27, 2026, 8:30 p.m." in sessions
    assert "4:30 a.m." not in sessions
    # The date drill-down puts the session on its local day.
    friday = admin_client.get(reverse("admin:billing_appointment_changelist"),
                              {"starts_at__year": 2026, "starts_at__month": 11, "starts_at__day": 27}).text
    assert f"/admin/billing/appointment/{appointment.pk}/change/" in friday
    saturday = admin_client.get(reverse("admin:billing_appointment_changelist"),
                                {"starts_at__year": 2026, "starts_at__month": 11, "starts_at__day": 28}).text
    assert f"/admin/billing/appointment/{appointment.pk}/change/" not in saturday

    page = admin_client.get(reverse("admin:billing_appointment_change", args=[appointment.pk])).text
    assert 'value="2026-11-27"' in page and 'value="20:30:00"' in page

    charges = admin_client.get(reverse("admin:billing_charge_changelist")).text
    assert "Nov 27, 2026" in charges  # the session's date
    assert "Nov. 27, 2026, 9:30 p.m." in charges  # scheduled for: when it was marked complete
    charge_page = admin_client.get(reverse("admin:billing_charge_change", args=[charge.pk])).text
    assert "90837 on 2026-11-27 20:30" in charge_page  # the session, as a person reads it
    assert "2026-11-28 04:30" not in charge_page
    assert "Nov. 27, 2026, 9:30 p.m." in charge_page

    review = admin_client.get(reverse("admin:billing_reviewitem_changelist")).text
    assert ReviewItem.objects.filter(appointment=appointment).exists()
    assert "90837 on 2026-11-27 20:30" in review


def test_the_front_page_counts_an_evening_session_on_its_local_day(
        pacific: Practice, admin_client: HttpClient, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    sunday_evening = dt.datetime(2026, 11, 29, 20, 30, tzinfo=LOS_ANGELES)  # Monday 04:30 in UTC: next week
    session(self_pay_client, sunday_evening, make_appointment)
    later = make_appointment(self_pay_client, starts_at=sunday_evening + HOUR)
    Charge.objects.filter(appointment__isnull=False).update(scheduled_for=sunday_evening + 2 * HOUR)
    assert LedgerEntry.objects.get(kind=LedgerKind.SESSION_CHARGE).occurred_on == dt.date(2026, 11, 29)

    with time_machine.travel(sunday_evening + 30 * dt.timedelta(minutes=1), tick=False):
        page = admin_client.get(reverse("admin:index")).text
    # This week's sessions (Monday 23 to Sunday 29 November, Los Angeles): the Sunday evening session.
    assert "<tr><th scope=\"row\">This week&#x27;s sessions and fees</th><td class=\"money\">$140.00</td></tr>" in page
    # Due today: the charge at 10:30 PM Sunday is today's, though it is Monday in UTC.
    assert "Charges due today <span class=\"count\">1</span>" in page
    assert "Nov 29, 10:30 p.m." in page
    assert later.pk  # an unbilled session changes nothing


# --- The superbill PDF --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("zone", "starts_at", "printed"), [
    ("America/Los_Angeles", dt.datetime(2026, 11, 30, 20, 30, tzinfo=LOS_ANGELES), "11/30/2026"),  # Dec 1 in UTC
    ("Asia/Tokyo", dt.datetime(2026, 11, 1, 8, 30, tzinfo=TOKYO), "11/01/2026"),  # Oct 31 in UTC
])
def test_superbill_prints_the_local_date_of_service(
        practice: Practice, self_pay_client: Client, make_appointment: Callable[..., Appointment],
        zone: str, starts_at: dt.datetime, printed: str) -> None:
    in_zone(practice, zone)
    session(self_pay_client, starts_at, make_appointment)
    pdf = superbill_pdf(client=self_pay_client, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30),
                        today=dt.date(2026, 12, 1))
    text, _ = pdf_text_and_image(pdf)
    assert printed in text
    assert "No billable sessions" not in text


# --- CSV exports --------------------------------------------------------------------------------------------

def test_findings_csv_from_the_admin_and_the_api_use_local_dates_and_offsets(
        pacific: Practice, admin_client: HttpClient, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    sunday_evening = dt.datetime(2026, 11, 29, 20, 30, tzinfo=LOS_ANGELES)  # Monday in UTC: ISO week 49
    no_card = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=12000, source="ehr-one",
                          external_id="c-1")
    session(no_card, sunday_evening, make_appointment, source="ehr-one", external_id="a-1")
    reconciliation_run(week=dt.date(2026, 11, 23), now=sunday_evening + DAY, check_stripe=False)
    finding = ReconciliationFinding.objects.get(kind=FindingKind.UNPAID_SESSION)
    assert finding.service_date == dt.date(2026, 11, 29)

    url = reverse("admin:billing_reconciliationfinding_changelist")
    resolved_at = dt.datetime(2026, 12, 1, 1, 15, tzinfo=dt.UTC)  # Monday 30 November, 5:15 PM in Los Angeles
    with time_machine.travel(resolved_at, tick=False):  # staff sessions time out: the whole visit is then
        admin_client.post(url, {"action": "mark_resolved", ACTION_CHECKBOX_NAME: [finding.pk], "apply": "1",
                                "reason": "Paid at the desk"})
        exported = admin_client.get(url, {"format": "csv"}).content.decode()
    [row] = list(csv.DictReader(io.StringIO(exported)))
    assert (row["week"], row["service_date"]) == ("2026-W48", "2026-11-29")
    assert row["status_at"] == "2026-11-30T17:15:00-08:00"

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(source='ehr-one', now=timezone.now()).key}")
    answer = api.get("/api/v1/reconciliation/", {"week": "2026-W48"})
    assert (answer.json()["starts"], answer.json()["ends"]) == ("2026-11-23T00:00:00-08:00",
                                                               "2026-11-30T00:00:00-08:00")
    [api_row] = [r for r in answer.json()["findings"] if r["kind"] == "unpaid_session"]
    assert api_row["service_date"] == "2026-11-29"
    api_csv = api.get("/api/v1/reconciliation/", {"week": "2026-W48", "format": "csv"}).content.decode()
    [csv_row] = [r for r in csv.DictReader(io.StringIO(api_csv)) if r["kind"] == "unpaid_session"]
    assert csv_row["service_date"] == "2026-11-29"


def test_audit_trail_csv_writes_local_times_with_their_offset(
        pacific: Practice, admin_client: HttpClient, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    with time_machine.travel(dt.datetime(2026, 11, 28, 4, 40, tzinfo=dt.UTC), tick=False):  # 8:40 PM Friday, LA
        admin_client.get(reverse("admin:billing_client_change", args=[self_pay_client.pk]))
        appointment = make_appointment(self_pay_client, starts_at=LA_FRIDAY_EVENING)
        saved = admin_client.post(reverse("admin:billing_appointment_change", args=[appointment.pk]), {
            "clinician": appointment.clinician_id, "starts_at_0": "2026-11-27", "starts_at_1": "21:30:00",
            "duration_minutes": 50, "service_code": "90837", "diagnosis_codes": "[\"F41.1\"]", "status": "scheduled",
            "note_signed_at_0": "", "note_signed_at_1": "", "fee_cents": "",
            "participants-TOTAL_FORMS": "1", "participants-INITIAL_FORMS": "1", "participants-MIN_NUM_FORMS": "0",
            "participants-MAX_NUM_FORMS": "1000",
            "participants-0-id": appointment.participants.get().pk, "participants-0-appointment": appointment.pk,
            "participants-0-client": self_pay_client.pk,
            **{f"{inline}-{count}": "0" for inline in ("charges", "events")
               for count in ("TOTAL_FORMS", "INITIAL_FORMS")},
        })
        assert saved.status_code == 302
        export = admin_client.get(reverse("admin:audit_trail_csv"), {"client": self_pay_client.email})
        rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))  # type: ignore[attr-defined]
    appointment.refresh_from_db()
    assert appointment.starts_at == LA_FRIDAY_EVENING + HOUR  # the time typed is the practice's
    viewed = [r for r in rows if r["action"] == "access" and r["what"] == "client"]
    assert viewed and viewed[-1]["when"] == "2026-11-27T20:40:00-08:00"
    [created] = [r for r in rows if r["what"] == "appointment" and r["action"] == "create"]
    assert "starts_at: None → 2026-11-27T20:30:00-08:00" in created["changes"]
    [moved] = [r for r in rows if r["what"] == "appointment" and r["action"] == "update"]
    assert "starts_at: 2026-11-27T20:30:00-08:00 → 2026-11-27T21:30:00-08:00" in moved["changes"]
    assert "on 2026-11-27 21:30" in moved["record"]


# --- Pricing and the day a session is on ----------------------------------------------------------------------

def test_coverage_is_checked_on_the_sessions_local_day(
        pacific: Practice, make_client: Callable[..., Client], make_appointment: Callable[..., Appointment]) -> None:
    # Coverage ends on 30 November; a session at 8:30 PM that evening is Dec 1 in UTC but still covered.
    insured = make_client(benefits={"copay_cents": 2500})
    Coverage.objects.filter(client=insured).update(effective_to=dt.date(2026, 11, 30))
    appointment = session(insured, dt.datetime(2026, 11, 30, 20, 30, tzinfo=LOS_ANGELES), make_appointment)
    charge = Charge.objects.get(appointment=appointment)
    assert charge.amount_cents == 2500
    assert not ReviewItem.objects.filter(appointment=appointment).exists()
