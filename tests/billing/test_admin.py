"""The staff console, as a front-desk person meets it: pages load, money is read-only, lists stay fast."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.apps import apps
from django.contrib import admin
from django.db import connection
from django.db.models import Model
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from billing.models import (
    AgingDay,
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeStatus,
    ClientBalance,
    EstimateLine,
    Installment,
    LedgerEntry,
    Participant,
    PlanConsent,
    Practice,
    Remittance,
    RemittanceLine,
    RemittanceLineStatus,
    ReviewItem,
    ReviewStatus,
    Service,
    StaffAction,
    StaffActionKind,
    Statement,
    StatementRun,
    TickHeartbeat,
)
from billing.services.estimates import LineIn, estimate_create
from tests import factories

pytestmark = pytest.mark.django_db


def admin_url(model: type[Model], view: str, *args: object) -> str:
    return reverse(f"admin:billing_{model._meta.model_name}_{view}", args=args)


def one_of_everything() -> list[Model]:
    """A row of every billing model staff look at, related the way the portal relates them."""
    client = factories.ClientFactory.create(with_card=True, flagged_for_outreach=True,
                                            flagged_reason="3 failed cards")
    coverage = factories.CoverageFactory.create(client=client)
    charge = factories.ChargeFactory.create(client=client, status=ChargeStatus.FAILED,
                                            last_failure_code="card_declined")
    appointment = charge.appointment
    assert appointment is not None
    remittance = Remittance.objects.create(payer_name="AETNA", payer_key="1066033492", trace_number="EFT1",
                                           method="ACH", paid_cents=9500, paid_on=dt.date(2026, 11, 20),
                                           created_at=timezone.now())
    service = factories.ServiceFactory.create()
    return [
        Practice.load(), client, coverage, appointment, appointment.clinician, charge, service,
        factories.FeeScheduleEntryFactory.create(payer=coverage.payer),
        factories.CategoryRateFactory.create(),
        factories.PolicyAcknowledgmentFactory.create(client=client),
        factories.LedgerEntryFactory.create(client=client, charge=charge, appointment=appointment),
        factories.AppointmentEventFactory.create(appointment=appointment),
        factories.ChargeEventFactory.create(charge=charge),
        factories.PaymentAttemptFactory.create(charge=charge),
        factories.ReviewItemFactory.create(client=client, appointment=appointment),
        StaffAction.objects.create(client=client, kind=StaffActionKind.OUTSIDE_PAYMENT, form_key="k" * 24,
                                   amount_cents=-1000, method="cash", created_at=timezone.now()),
        remittance,
        RemittanceLine.objects.create(remittance=remittance, claim_id="RB1", claim_status="1", line_number=1,
                                      patient_name="JORDAN DOE", charge_cents=20000, allowed_cents=12000,
                                      paid_cents=9500, patient_responsibility_cents=2500, copay_cents=2500,
                                      status=RemittanceLineStatus.UNMATCHED, detail="No client has member id X.",
                                      created_at=timezone.now()),
        Statement.objects.create(client=client, month=dt.date(2026, 11, 1), opening_cents=0, charges_cents=2500,
                                 payments_cents=0, refunds_cents=0, adjustments_cents=0, closing_cents=2500,
                                 trigger="staff", issued_at=timezone.now()),
        StatementRun.objects.create(month=dt.date(2026, 11, 1), started_at=timezone.now()),
        estimate_create(client=client, period_start=dt.date(2026, 11, 1), period_end=dt.date(2027, 10, 31),
                        lines=[LineIn(service.cpt_code, 4)], now=timezone.now(), actor="staff:test"),
    ]


def test_every_billing_model_has_an_admin_whose_pages_load(admin_client: HttpClient) -> None:
    registered = {model for model in admin.site._registry if model._meta.app_label == "billing"}
    # Participant, EstimateLine, Installment and PlanConsent are inlines; ClientBalance and AgingDay are kept by the
    # database (each client's balance); TickHeartbeat is read by /healthz and `doctor`.
    assert registered == set(apps.get_app_config("billing").get_models()) - {
        Participant, ClientBalance, AgingDay, EstimateLine, Installment, PlanConsent, TickHeartbeat}

    for row in one_of_everything():
        model = type(row)
        change_url = admin_url(model, "change", row.pk)
        response = admin_client.get(admin_url(model, "changelist"), follow=True)
        assert response.status_code == 200, model
        assert change_url in response.text or response.redirect_chain, model  # Practice: one row, no list.
        response = admin_client.get(change_url)
        assert response.status_code == 200, model
        with timezone.override(Practice.current_zone()):  # names with a time read in the practice's zone
            assert escape(str(row)) in response.text, model


def test_header_names_the_practice(admin_client: HttpClient) -> None:
    Practice.objects.create(name="Riverbend Counseling", phone="555-0100", sender_email="b@riverbend.example")
    response = admin_client.get(reverse("admin:index"))
    assert "Practice billing · Riverbend Counseling" in response.text


def test_today_shows_what_needs_a_person(admin_client: HttpClient) -> None:
    practice = Practice.load()
    review = factories.ReviewItemFactory.create(reason="Benefits missing for the 3 Nov session")
    flagged = factories.ClientFactory.create(last_name="Okafor", flagged_for_outreach=True,
                                             flagged_reason="Card declined")
    due = factories.ChargeFactory.create(amount_cents=4_250, status=ChargeStatus.DUE,
                                  scheduled_for=timezone.now() - dt.timedelta(minutes=5))
    declined = factories.ChargeFactory.create(amount_cents=9_900, status=ChargeStatus.FAILED)
    end_of_day = dt.datetime.combine(timezone.now().astimezone(practice.zone).date() + dt.timedelta(days=1),
                                     dt.time.min, tzinfo=practice.zone)
    tomorrow = factories.ChargeFactory.create(amount_cents=1_111, scheduled_for=end_of_day + dt.timedelta(minutes=1))
    factories.ReviewItemFactory.create(reason="Already dealt with", status=ReviewStatus.RESOLVED)

    page = admin_client.get(reverse("admin:index")).text

    assert "Benefits missing for the 3 Nov session" in page
    assert admin_url(ReviewItem, "change", review.pk) in page
    assert "Already dealt with" not in page
    assert str(flagged) in page and "Card declined" in page
    assert "$42.50" in page and admin_url(Charge, "change", due.pk) in page
    assert "$99.00" in page and admin_url(Charge, "change", declined.pk) in page
    assert "$11.11" not in page and admin_url(Charge, "change", tomorrow.pk) not in page
    # "See all" lands on the same rows.
    due_list = admin_client.get(admin_url(Charge, "changelist") + "?queue=due_today").text
    assert admin_url(Charge, "change", due.pk) in due_list
    assert admin_url(Charge, "change", tomorrow.pk) not in due_list


def count_queries(admin_client: HttpClient, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(url)
    assert response.status_code == 200
    return len(queries)


def add_clients(n: int) -> None:
    for _ in range(n):
        client = factories.ClientFactory.create(with_card=True)
        factories.LedgerEntryFactory.create_batch(2, client=client)


def add_appointments(n: int) -> None:
    for _ in range(n):
        factories.AppointmentFactory.create(clients=factories.ClientFactory.create_batch(2))


def add_charges(n: int) -> None:
    factories.ChargeFactory.create_batch(n)


def add_everything(n: int) -> None:
    add_clients(n)
    add_appointments(n)
    add_charges(n)
    factories.ReviewItemFactory.create_batch(n)
    factories.ChargeFactory.create_batch(n, status=ChargeStatus.FAILED)
    factories.ClientFactory.create_batch(n, flagged_for_outreach=True)


@pytest.mark.parametrize(("url", "add_rows"), [
    ("/admin/billing/client/", add_clients),
    ("/admin/billing/client/?q=Jordan&balance=owes", add_clients),
    ("/admin/billing/appointment/", add_appointments),
    ("/admin/billing/appointment/?q=Jordan", add_appointments),
    ("/admin/billing/charge/", add_charges),
    ("/admin/billing/charge/?q=Jordan&status__exact=scheduled", add_charges),
    ("/admin/", add_everything),
])
def test_list_pages_use_as_many_queries_for_30_rows_as_for_3(
        admin_client: HttpClient, url: str, add_rows: Callable[[int], None]) -> None:
    add_rows(3)
    admin_client.get(url)  # Warm up: the first request also loads content types and the like.
    few = count_queries(admin_client, url)
    add_rows(27)
    assert count_queries(admin_client, url) == few


def test_client_list_shows_balance_card_and_billing_type(admin_client: HttpClient) -> None:
    client = factories.ClientFactory.create(with_card=True, billing_type="sliding_scale")
    factories.LedgerEntryFactory.create(client=client, amount_cents=12_000)
    factories.LedgerEntryFactory.create(client=client, amount_cents=-2_000, kind="payment")
    factories.ClientFactory.create(last_name="Nobalance")

    page = admin_client.get(admin_url(type(client), "changelist")).text
    assert "$100.00" in page
    assert "Visa ending 4242, exp 12/2035" in page
    assert "Sliding scale" in page

    owing = admin_client.get(admin_url(type(client), "changelist") + "?balance=owes").text
    assert str(client.last_name) in owing and "Nobalance" not in owing


def test_charge_page_shows_breakdown_and_never_saves_money_fields(admin_client: HttpClient) -> None:
    charge = factories.ChargeFactory.create(amount_cents=3_000, breakdown=[
        {"label": "Allowed amount", "amount_cents": 12_000}, {"label": "Coinsurance 25%", "amount_cents": 3_000}])
    url = admin_url(Charge, "change", charge.pk)

    page = admin_client.get(url).text
    assert "Coinsurance 25%" in page and "$120.00" in page and "$30.00" in page
    assert 'name="amount_cents"' not in page and 'name="status"' not in page

    response = admin_client.post(url, {"amount_cents": "1", "status": ChargeStatus.SUCCEEDED})
    assert response.status_code == 403
    charge.refresh_from_db()
    assert (charge.amount_cents, charge.status) == (3_000, ChargeStatus.SCHEDULED)
    assert admin_client.get(admin_url(Charge, "delete", charge.pk)).status_code == 403
    assert admin_client.get(admin_url(Charge, "add")).status_code == 403


def test_ledger_is_view_only(admin_client: HttpClient) -> None:
    entry = factories.LedgerEntryFactory.create(amount_cents=5_000)

    changelist = admin_client.get(admin_url(LedgerEntry, "changelist")).text
    assert admin_url(LedgerEntry, "add") not in changelist
    assert "$50.00" in changelist
    assert admin_client.get(admin_url(LedgerEntry, "add")).status_code == 403
    assert admin_client.get(admin_url(LedgerEntry, "delete", entry.pk)).status_code == 403
    assert admin_client.post(admin_url(LedgerEntry, "delete", entry.pk), {"post": "yes"}).status_code == 403
    assert admin_client.post(admin_url(LedgerEntry, "change", entry.pk), {"amount_cents": "1"}).status_code == 403
    assert admin_client.post(admin_url(LedgerEntry, "changelist"), {
        "action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"}).status_code == 200
    assert LedgerEntry.objects.filter(pk=entry.pk, amount_cents=5_000).exists()


def test_practice_is_a_single_page(admin_client: HttpClient) -> None:
    practice = Practice.load()
    response = admin_client.get(admin_url(Practice, "changelist"))
    assert response.status_code == 302
    assert response["Location"] == admin_url(Practice, "change", practice.pk)
    page = admin_client.get(response["Location"]).text
    for section in ("When to charge", "Notices and retries", "No-show and late-cancel fees", "Balance reminders"):
        assert section in page
    assert 'value="75.00"' in page  # The no-show fee, in dollars.
    assert admin_client.get(admin_url(Practice, "add")).status_code == 403
    assert admin_client.get(admin_url(Practice, "delete", practice.pk)).status_code == 403


def test_amounts_are_typed_in_dollars(admin_client: HttpClient) -> None:
    service = factories.ServiceFactory.create(fee_cents=15_000)
    url = admin_url(Service, "change", service.pk)
    assert 'value="150.00"' in admin_client.get(url).text

    response = admin_client.post(url, {"cpt_code": "90837", "description": "Psychotherapy", "fee_cents": "175.50"})
    assert response.status_code == 302
    service.refresh_from_db()
    assert service.fee_cents == 17_550


def test_mark_resolved_asks_for_a_note_then_resolves(admin_client: HttpClient) -> None:
    item = factories.ReviewItemFactory.create()
    url = admin_url(ReviewItem, "changelist")
    selected = {"action": "mark_resolved", "_selected_action": [item.pk]}

    confirm = admin_client.post(url, selected)
    assert confirm.status_code == 200 and "Resolve review items" in confirm.text
    item.refresh_from_db()
    assert item.status == ReviewStatus.OPEN

    done = admin_client.post(url, {**selected, "apply": "1", "note": "Called the client"}, follow=True)
    assert "Resolved 1 review item." in done.text
    item.refresh_from_db()
    assert (item.status, item.resolution_note, item.resolved_by) == (ReviewStatus.RESOLVED, "Called the client",
                                                                    done.wsgi_request.user)


def test_recheck_billing_reports_what_it_did(admin_client: HttpClient) -> None:
    appointments = factories.AppointmentFactory.create_batch(2, clients=[factories.ClientFactory.create()])
    response = admin_client.post(admin_url(Appointment, "changelist"), {
        "action": "recheck_billing", "_selected_action": [a.pk for a in appointments]}, follow=True)
    assert "Re-checked billing for 2 sessions." in response.text


def test_status_changed_in_the_admin_is_recorded(admin_client: HttpClient) -> None:
    client = factories.ClientFactory.create()
    appointment = factories.AppointmentFactory.create(clients=[client])
    starts = timezone.localtime(appointment.starts_at, Practice.load().zone)
    participant = appointment.participants.get()
    data = {
        "clinician": appointment.clinician_id, "starts_at_0": starts.strftime("%Y-%m-%d"),
        "starts_at_1": starts.strftime("%H:%M:%S"), "duration_minutes": "50", "service_code": "90837",
        "diagnosis_codes": "[]", "status": AppointmentStatus.NO_SHOW, "fee_cents": "",
        "participants-TOTAL_FORMS": "1", "participants-INITIAL_FORMS": "1",
        "participants-0-id": participant.pk, "participants-0-appointment": appointment.pk,
        "participants-0-client": client.pk,
        "charges-TOTAL_FORMS": "0", "charges-INITIAL_FORMS": "0",
        "events-TOTAL_FORMS": "0", "events-INITIAL_FORMS": "0",
    }
    response = admin_client.post(admin_url(Appointment, "change", appointment.pk), data)
    assert response.status_code == 302, response.context and response.context["errors"]
    appointment.refresh_from_db()
    assert appointment.status == AppointmentStatus.NO_SHOW
    event = appointment.events.get()
    assert (event.from_status, event.to_status, event.actor) == (
        AppointmentStatus.SCHEDULED, AppointmentStatus.NO_SHOW, f"staff:{response.wsgi_request.user.get_username()}")
