"""Reconciliation, AR aging, insurance payments, superbills from the admin, and the dashboard (issue 6)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zipfile
import zoneinfo
from collections.abc import Callable
from typing import Any

import pypdfium2
import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import (
    Appointment,
    BalanceAllocation,
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    Clinician,
    FindingKind,
    FindingStatus,
    LedgerEntry,
    LedgerKind,
    Practice,
    ReconciliationFinding,
    ReconciliationRun,
)
from billing.selectors import Aging, ar_aging, ar_aging_by_client, client_aging
from billing.services.insurance import insurance_payment_record
from billing.services.reconciliation import reconciliation_run, reconciliation_weekly, week_monday
from integrations.ehr.keys import api_key_create
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, save_card, tick

NY = zoneinfo.ZoneInfo("America/New_York")
DAY = dt.timedelta(days=1)


# --- A seeded month with four known gaps -----------------------------------------------------------------

def _stripe_payment_with_no_appointment(stripe_server: FakeStripe) -> str:
    """Someone took a payment in the Stripe dashboard: a customer and a PaymentIntent the portal never made."""
    http = stripe_server.http
    customer = http.post("/v1/customers", data={"email": "walk-in@example.com", "name": "Walk In"}).json()
    method = http.post("/v1/payment_methods", data={"type": "card", "card[number]": CARD_OK, "card[exp_month]": "12",
                                                    "card[exp_year]": "2030", "card[cvc]": "123"}).json()
    http.post(f"/v1/payment_methods/{method['id']}/attach", data={"customer": customer["id"]}).raise_for_status()
    intent = http.post("/v1/payment_intents", data={"amount": "4500", "currency": "usd", "customer": customer["id"],
                                                    "payment_method": method["id"], "confirm": "true"}).json()
    assert intent["status"] == "succeeded", intent
    return str(intent["id"])


@pytest.fixture
def seeded_month(immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
                 completed_session: Callable[..., Appointment]) -> dict[str, Any]:
    """Four weeks of paid sessions up to this week (the fake Stripe dates its charges with the real clock),
    with exactly four gaps."""
    this_monday = week_monday(timezone.now().astimezone(NY).date())
    first_monday = this_monday - 3 * 7 * DAY
    paying = [save_card(make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000), CARD_OK,
                        stripe_server) for _ in range(3)]
    insured = save_card(make_client(benefits={"copay_cents": 2500}), CARD_OK, stripe_server)
    no_card = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=12000)
    sessions = []
    for week in range(4):
        monday = first_monday + 7 * week * DAY
        for n, person in enumerate(paying):
            at = dt.datetime.combine(monday + n * DAY, dt.time(11), tzinfo=NY)
            sessions.append(completed_session(person, at=at))
            tick(at)
    at = dt.datetime.combine(first_monday + 8 * DAY, dt.time(15), tzinfo=NY)
    insured_session = completed_session(insured, at=at)
    tick(at)
    # Gap 1: a completed session that was never paid (no card: the charge waits for staff).
    unpaid = completed_session(no_card, at=dt.datetime.combine(first_monday + 2 * DAY, dt.time(16), tzinfo=NY))
    tick(dt.datetime.combine(first_monday + 2 * DAY, dt.time(17), tzinfo=NY))
    # Gap 2: the session's fee was corrected after the charge was taken (and nothing re-priced it).
    wrong = sessions[4]
    Appointment.objects.filter(pk=wrong.pk).update(fee_cents=15000)
    # Gap 3: the insurer paid below its fee schedule ($120 allowed - $25 copay = $95 expected, $80 paid).
    insurance_payment_record(appointment=insured_session, client=insured, reference="EFT-1", payer_name="Aetna",
                             allowed_cents=12000, paid_cents=8000, patient_responsibility_cents=2500,
                             paid_on=first_monday + 9 * DAY, source="test", now=timezone.now())
    # Gap 4: a Stripe payment that matches no appointment.
    intent = _stripe_payment_with_no_appointment(stripe_server)
    return {"weeks": [first_monday + 7 * n * DAY for n in range(4)], "unpaid": unpaid, "wrong": wrong,
            "insured_session": insured_session, "intent": intent, "no_card": no_card}


def _run_month(weeks: list[dt.date]) -> None:
    for monday in weeks:
        result = reconciliation_run(week=monday, now=timezone.now())
        assert result.stripe_error == ""


def _found() -> list[ReconciliationFinding]:
    return list(ReconciliationFinding.objects.filter(gone_at__isnull=True).order_by("kind"))


def test_a_seeded_month_with_four_gaps_produces_exactly_four_findings(seeded_month: dict[str, Any]) -> None:
    _run_month(seeded_month["weeks"])
    found = {f.kind: f for f in _found()}
    assert sorted(found) == sorted(FindingKind.values)
    assert len(_found()) == 4
    unpaid = found[FindingKind.UNPAID_SESSION]
    assert (unpaid.appointment_id, unpaid.client_id) == (seeded_month["unpaid"].pk, seeded_month["no_card"].pk)
    assert (unpaid.expected_cents, unpaid.actual_cents) == (12000, 0)
    mismatch = found[FindingKind.AMOUNT_MISMATCH]
    assert (mismatch.appointment_id, mismatch.expected_cents, mismatch.actual_cents) == (
        seeded_month["wrong"].pk, 15000, 14000)
    under = found[FindingKind.INSURANCE_UNDERPAYMENT]
    assert (under.appointment_id, under.expected_cents, under.actual_cents) == (
        seeded_month["insured_session"].pk, 9500, 8000)
    stray = found[FindingKind.UNMATCHED_PAYMENT]
    assert seeded_month["intent"] in stray.stripe_reference
    assert (stray.client_id, stray.expected_cents, stray.actual_cents) == (None, 0, 4500)
    assert stray.week == seeded_month["weeks"][-1]


def test_the_four_findings_in_the_api_as_json_and_csv(seeded_month: dict[str, Any]) -> None:
    Client.objects.update(source="ehr-one")
    Appointment.objects.update(source="ehr-one")
    for person in Client.objects.all():
        Client.objects.filter(pk=person.pk).update(external_id=f"c-{person.pk}")
    for appointment in Appointment.objects.all():
        Appointment.objects.filter(pk=appointment.pk).update(external_id=f"a-{appointment.pk}")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(source='ehr-one', now=timezone.now()).key}")
    kinds: list[str] = []
    csv_kinds: list[str] = []
    for monday in seeded_month["weeks"]:
        week = f"{monday:%G-W%V}"
        body = api.get("/api/v1/reconciliation/", {"week": week}).json()
        assert body["stripe_checked"] is True
        kinds += [row["kind"] for row in body["findings"]]
        for row in body["findings"]:
            if row["kind"] == "unpaid_session":
                assert row["appointment"] == f"a-{seeded_month['unpaid'].pk}"
                assert row["client"] == f"c-{seeded_month['no_card'].pk}"
                assert row["status"] == "open"
        response = api.get("/api/v1/reconciliation/", {"week": week, "format": "csv"})
        assert response["Content-Type"].startswith("text/csv")
        csv_kinds += [row["kind"] for row in csv.DictReader(io.StringIO(response.content.decode()))]
    assert sorted(kinds) == sorted(csv_kinds) == sorted(FindingKind.values)


def test_the_four_findings_in_the_admin_and_its_csv_export_and_staff_status_survives_a_rerun(
        seeded_month: dict[str, Any], admin_client: HttpClient) -> None:
    url = reverse("admin:billing_reconciliationfinding_changelist")
    # On demand from the admin, for any week.
    for monday in seeded_month["weeks"]:
        response = admin_client.post(reverse("admin:billing_reconciliation_run"), {"week": f"{monday:%G-W%V}"})
        assert response.status_code == 302
    page = admin_client.get(url, {"found": "yes"}).text
    for label in ("Session with no payment", "Amount differs", "Insurance paid below the fee schedule",
                  "Stripe payment matching no session"):
        assert label in page
    export = admin_client.get(url, {"found": "yes", "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(export.content.decode())))
    assert sorted(r["kind"] for r in rows) == sorted(FindingKind.values)
    assert {r["status"] for r in rows} == {"open"}
    # Money in dollars: the $120.00 session never paid, the $45.00 Stripe payment no session matches.
    by_kind = {r["kind"]: (r["expected_dollars"], r["actual_dollars"]) for r in rows}
    assert by_kind[FindingKind.UNPAID_SESSION] == ("120.00", "0.00")
    assert by_kind[FindingKind.UNMATCHED_PAYMENT] == ("0.00", "45.00")

    stray = ReconciliationFinding.objects.get(kind=FindingKind.UNMATCHED_PAYMENT)
    wrong = ReconciliationFinding.objects.get(kind=FindingKind.AMOUNT_MISMATCH)
    # Ignoring needs a reason: without one the confirmation page asks again.
    asked = admin_client.post(url, {"action": "mark_ignored", ACTION_CHECKBOX_NAME: [stray.pk], "apply": "1",
                                    "reason": ""})
    assert asked.status_code == 200 and b"This field is required" in asked.content
    admin_client.post(url, {"action": "mark_ignored", ACTION_CHECKBOX_NAME: [stray.pk], "apply": "1",
                            "reason": "Paid in person at the desk"})
    admin_client.post(url, {"action": "mark_resolved", ACTION_CHECKBOX_NAME: [wrong.pk], "apply": "1",
                            "reason": "Refunded the difference"})

    _run_month(seeded_month["weeks"])  # the report again: same findings, staff status kept
    stray.refresh_from_db()
    wrong.refresh_from_db()
    assert (stray.status, stray.status_reason, stray.status_by is not None) == (
        FindingStatus.IGNORED, "Paid in person at the desk", True)
    assert (wrong.status, wrong.status_reason) == (FindingStatus.RESOLVED, "Refunded the difference")
    assert len(_found()) == 4
    assert ReconciliationFinding.objects.count() == 4


def test_the_week_filter_offers_this_week_and_finds_its_findings(practice: Practice,
                                                                  admin_client: HttpClient) -> None:
    this_monday = week_monday(timezone.now().astimezone(NY).date())
    for monday, reference in ((this_monday, "pi_this_week"), (this_monday - 7 * DAY, "pi_last_week")):
        ReconciliationFinding.objects.create(
            kind=FindingKind.UNMATCHED_PAYMENT, key=f"stripe:{reference}", week=monday, stripe_reference=reference,
            expected_cents=0, actual_cents=4500, detail=f"Payment {reference}", first_found_at=timezone.now(),
            last_found_at=timezone.now())
    url = reverse("admin:billing_reconciliationfinding_changelist")
    page = admin_client.get(url).text
    assert f"?week={this_monday:%G-W%V}" in page and f"{this_monday:%G-W%V} ({this_monday:%b %-d}, this week)" in page
    this_week = admin_client.get(url, {"week": f"{this_monday:%G-W%V}"}).text
    assert "Payment pi_this_week" in this_week and "Payment pi_last_week" not in this_week


def test_a_session_waiting_for_the_clients_bank_is_told_in_a_sentence(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    from tests.payment_fixtures import CARD_NEEDS_AUTHENTICATION

    person = save_card(make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000),
                       CARD_NEEDS_AUTHENTICATION, stripe_server)
    at = dt.datetime(2026, 11, 24, 11, tzinfo=NY)
    completed_session(person, at=at)
    tick(at)
    assert Charge.objects.get(client=person).status == ChargeStatus.REQUIRES_ACTION
    reconciliation_run(week=week_monday(at.date()), now=at + 7 * DAY)
    finding = ReconciliationFinding.objects.get(kind=FindingKind.UNPAID_SESSION, client=person)
    assert finding.detail == "The charge is waiting for the client to authenticate."


def test_a_finding_that_goes_away_is_closed_by_the_system_and_reopens_if_it_comes_back(
        seeded_month: dict[str, Any]) -> None:
    _run_month(seeded_month["weeks"])
    wrong = Appointment.objects.filter(pk=seeded_month["wrong"].pk)
    wrong.update(fee_cents=None)
    _run_month(seeded_month["weeks"])
    finding = ReconciliationFinding.objects.get(kind=FindingKind.AMOUNT_MISMATCH)
    assert finding.status == FindingStatus.RESOLVED and finding.gone_at is not None and finding.status_by is None
    wrong.update(fee_cents=15000)
    _run_month(seeded_month["weeks"])
    finding.refresh_from_db()
    assert finding.status == FindingStatus.OPEN and finding.gone_at is None


def test_the_schedule_reconciles_the_week_before_once_from_monday_six(practice: Practice,
                                                                     stripe_server: FakeStripe) -> None:
    sunday = dt.datetime(2026, 11, 29, 23, 0, tzinfo=NY)
    monday_early = dt.datetime(2026, 11, 30, 5, 59, tzinfo=NY)
    monday_six = dt.datetime(2026, 11, 30, 6, 0, tzinfo=NY)
    assert reconciliation_weekly(now=sunday) == 1  # nothing ran yet: the week before last is caught up
    assert ReconciliationRun.objects.get().week == dt.date(2026, 11, 16)
    assert reconciliation_weekly(now=monday_early) == 0
    assert reconciliation_weekly(now=monday_six) == 1
    assert reconciliation_weekly(now=monday_six + dt.timedelta(hours=3)) == 0
    assert sorted(ReconciliationRun.objects.values_list("week", flat=True)) == [dt.date(2026, 11, 16),
                                                                                dt.date(2026, 11, 23)]
    assert "weeks_reconciled: 0" in tick(monday_six + dt.timedelta(minutes=1))


def test_an_eob_is_recorded_once_through_the_admin_with_the_api_service(
        practice: Practice, make_client: Callable[..., Client], make_appointment: Callable[..., Appointment],
        admin_client: HttpClient) -> None:
    person = make_client(benefits={"copay_cents": 2500})
    session = make_appointment(person, status="completed")
    body = {"appointment": session.pk, "client": person.pk, "payer_name": "Aetna", "allowed_cents": "120.00",
            "paid_cents": "80.00", "patient_responsibility_cents": "25.00", "paid_on": "2026-12-01",
            "reference": "EFT-77"}
    url = reverse("admin:billing_insurancepayment_add")
    first = admin_client.post(url, body)
    assert first.status_code == 302, first.context["adminform"].form.errors
    assert admin_client.post(url, body).status_code == 302  # the same line again changes nothing
    payment = session.insurance_payments.get()
    assert (payment.allowed_cents, payment.paid_cents, payment.source) == (12000, 8000, "staff:admin")
    assert ReconciliationFinding.objects.filter(kind=FindingKind.INSURANCE_UNDERPAYMENT,
                                                insurance_payment=payment).exists()
    assert not LedgerEntry.objects.filter(client=person).exclude(kind=LedgerKind.SESSION_CHARGE).exists()
    stranger = make_client(benefits={"copay_cents": 2500})
    refused = admin_client.post(url, {**body, "client": stranger.pk, "reference": "EFT-78"})
    assert refused.status_code == 200 and b"did not attend this appointment" in refused.content


# --- AR aging --------------------------------------------------------------------------------------------

TODAY = dt.date(2026, 11, 27)


def _post(who: Client, amount: int, days_ago: int, kind: str = LedgerKind.SESSION_CHARGE,
          appointment: Appointment | None = None, charge: Charge | None = None) -> None:
    LedgerEntry.objects.create(client=who, kind=kind, amount_cents=amount, appointment=appointment, charge=charge,
                               occurred_on=TODAY - dt.timedelta(days=days_ago), actor="test", created_at=timezone.now())


@pytest.mark.django_db
def test_ar_aging_matches_a_hand_computed_example_to_the_cent(make_appointment: Callable[..., Appointment],
                                                              clinician: Clinician) -> None:
    other = Clinician.objects.create(name="Sam Lee", npi="1245319599", credentials="PsyD")
    ana = Client.objects.create(first_name="Ana", last_name="A", billing_type=BillingType.INSURANCE)
    bo = Client.objects.create(first_name="Bo", last_name="B", billing_type=BillingType.SELF_PAY)
    cy = Client.objects.create(first_name="Cy", last_name="C", billing_type=BillingType.INSURANCE)
    a1, a2 = make_appointment(ana), make_appointment(ana)
    a3 = make_appointment(ana)
    Appointment.objects.filter(pk=a2.pk).update(clinician=other)
    # Ana: $100.01 at 100 days (Reyes), $50.00 at 45 (Lee), $20.00 at 10 (Reyes), a $60.00 card payment today.
    _post(ana, 10001, 100, appointment=a1)
    _post(ana, 5000, 45, appointment=a2)
    _post(ana, 2000, 10, appointment=a3)
    _post(ana, -6000, 0, LedgerKind.PAYMENT)
    # Bo: $70.00 at 75 days paid in the same bucket, then $30.00 at 5 days.
    _post(bo, 7000, 75)
    _post(bo, -7000, 75, LedgerKind.PAYMENT)
    _post(bo, 3000, 5)
    # Cy: a $25.00 credit and $10.00 owed at 65 days: $15.00 in credit.
    _post(cy, -2500, 3, LedgerKind.PAYMENT)
    _post(cy, 1000, 65)

    # By hand. Ana: netted current 2000-6000 = -4000 credit; 31-60 5000; over 90 10001. The $40.00 credit pays
    # the oldest first: over 90 becomes 6001. Bo: current 3000. Cy: the credit pays the 61-90 $10.00; -1500 left.
    assert client_aging(ana, TODAY) == Aging(current=0, days_31_60=5000, days_61_90=0, days_over_90=6001)
    assert client_aging(bo, TODAY) == Aging(current=3000)
    assert client_aging(cy, TODAY) == Aging(current=-1500)
    assert ar_aging(TODAY) == Aging(current=1500, days_31_60=5000, days_61_90=0, days_over_90=6001)
    assert ar_aging(TODAY).total == sum(LedgerEntry.objects.values_list("amount_cents", flat=True))
    rows = ar_aging_by_client(TODAY)
    assert [(r.name, r.aging.total) for r in rows] == [("A, Ana", 11001), ("B, Bo", 3000), ("C, Cy", -1500)]
    assert ar_aging(TODAY, billing_type=BillingType.SELF_PAY) == Aging(current=3000)
    # By clinician: only the ledger behind that clinician's sessions (the unallocated payment is no one's).
    assert ar_aging(TODAY, clinician_id=clinician.pk) == Aging(current=2000, days_over_90=10001)
    assert ar_aging(TODAY, clinician_id=other.pk) == Aging(days_31_60=5000)


@pytest.mark.django_db
def test_a_portal_balance_payment_counts_for_the_clinicians_whose_sessions_it_paid(
        make_appointment: Callable[..., Appointment], clinician: Clinician) -> None:
    ana = Client.objects.create(first_name="Ana", last_name="A")
    session = make_appointment(ana)
    charge = Charge.objects.create(client=ana, appointment=session, kind=ChargeKind.SESSION_FEE, amount_cents=9000,
                                   status=ChargeStatus.SUCCEEDED, scheduled_for=timezone.now())
    payment = Charge.objects.create(client=ana, kind=ChargeKind.BALANCE_PAYMENT, amount_cents=4000,
                                    status=ChargeStatus.SUCCEEDED, scheduled_for=timezone.now())
    BalanceAllocation.objects.create(payment=payment, charge=charge, amount_cents=4000)
    _post(ana, 9000, 40, appointment=session, charge=charge)
    _post(ana, -4000, 1, LedgerKind.PAYMENT, charge=payment)
    assert ar_aging(TODAY, clinician_id=clinician.pk) == ar_aging(TODAY) == Aging(days_31_60=5000)


def test_the_aging_report_page_and_its_csv(admin_client: HttpClient) -> None:
    ana = Client.objects.create(first_name="Ana", last_name="Able")
    LedgerEntry.objects.create(client=ana, kind=LedgerKind.SESSION_CHARGE, amount_cents=12345, actor="test",
                               occurred_on=timezone.now().date() - dt.timedelta(days=40), created_at=timezone.now())
    url = reverse("admin:billing_ar_aging")
    page = admin_client.get(url).text
    assert "Able, Ana" in page and "$123.45" in page and "<svg" in page and "31-60 days" in page
    # Labels, not the stored values: the billing type as staff know it.
    assert "<td>Self-pay</td>" in page and "self_pay" not in page.split('id="aging-table"')[1]
    rows = list(csv.DictReader(io.StringIO(admin_client.get(url, {"format": "csv"}).content.decode())))
    assert rows == [{"Client ID": str(ana.pk), "Client": "Able, Ana", "Billing type": "Self-pay",
                     "0-30 days ($)": "0.00", "31-60 days ($)": "123.45", "61-90 days ($)": "0.00",
                     "Over 90 days ($)": "0.00", "Total ($)": "123.45"}]
    assert admin_client.get(url, {"billing_type": "insurance"}).text.count("Able, Ana") == 0


# --- Superbills from the admin ---------------------------------------------------------------------------

def test_superbill_action_gives_a_pdf_for_one_client_and_a_zip_for_several(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Appointment],
        admin_client: HttpClient) -> None:
    ana = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000)
    bo = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=12000)
    completed_session(ana)
    completed_session(bo)
    url = reverse("admin:billing_client_changelist")
    form = admin_client.post(url, {"action": "superbill_pdf", ACTION_CHECKBOX_NAME: [ana.pk]})
    assert form.status_code == 200 and b"Superbills" in form.content
    period = {"apply": "1", "start": "2026-11-01", "end": "2026-11-30"}
    one = admin_client.post(url, {"action": "superbill_pdf", ACTION_CHECKBOX_NAME: [ana.pk], **period})
    assert one["Content-Type"] == "application/pdf"
    page = pypdfium2.PdfDocument(io.BytesIO(one.content))[0]
    text = page.get_textpage().get_text_range()
    assert "90837" in text and "$150.00" in text and "F41.1" in text  # the client's rate, as billed
    many = admin_client.post(url, {"action": "superbill_pdf", ACTION_CHECKBOX_NAME: [ana.pk, bo.pk], **period})
    assert many["Content-Type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(many.content)).namelist()
    assert len(names) == 2 and all(name.endswith(".pdf") for name in names)


# --- The dashboard ---------------------------------------------------------------------------------------

def _index_queries(admin_client: HttpClient) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse("admin:index"))
    assert response.status_code == 200
    return len(queries), response.text


def test_the_dashboard_shows_the_figures_in_a_fixed_number_of_queries(admin_client: HttpClient) -> None:
    admin_client.get(reverse("admin:index"))  # warm the session and the practice row
    before, page = _index_queries(admin_client)
    for figure in ("Charged and collected", "Collection rate", "AR aging", "Open failures and flags",
                   "open finding", "<svg", 'class="chart-table"'):
        assert figure in page
    today = timezone.now().astimezone(NY).date()
    for n in range(25):
        person = Client.objects.create(first_name=f"N{n}", last_name="Example")
        LedgerEntry.objects.create(client=person, kind=LedgerKind.SESSION_CHARGE, amount_cents=10000, actor="t",
                                   occurred_on=today - dt.timedelta(days=n * 5), created_at=timezone.now())
        LedgerEntry.objects.create(client=person, kind=LedgerKind.PAYMENT, amount_cents=-4000, actor="t",
                                   occurred_on=today, created_at=timezone.now())
        ReconciliationFinding.objects.create(kind=FindingKind.UNPAID_SESSION, key=f"k{n}", week=today, client=person,
                                             first_found_at=timezone.now(), last_found_at=timezone.now())
    after, page = _index_queries(admin_client)
    assert after == before
    assert "25 open findings" in page
    assert "$1,000.00" in page  # collected this week and month
