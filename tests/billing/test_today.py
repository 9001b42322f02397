"""The Today page tells the truth and leads to the fix: the collection rate of the period's own charges,
each charge in one queue, one review row per cause, fixes in place for the roles allowed them, and the
list of pages grouped by task with the technical ones for administrators only."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    Appointment,
    AppointmentStatus,
    BalanceAllocation,
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.selectors import dashboard
from billing.services.holds import charge_cancel
from billing.services.review import review_open
from billing.services.waiting import NO_CARD_HOLD
from tests import factories
from tests.conftest import FakeStripe
from tests.payment_fixtures import tick
from tests.practice_fixtures import FRIDAY_10AM

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
WEDNESDAY = dt.date(2026, 11, 25)  # the week from Monday 23 November; the month from 1 November


def signed_in(user: Any) -> HttpClient:
    http = HttpClient()
    http.force_login(user)
    return http


def fix(http: HttpClient, name: str, target: int, why: str = "") -> Any:
    return http.post(reverse("admin:today_fix"), {"fix": name, "target": target, "why": why, "next": "/admin/"},
                     follow=True)


# --- the collection rate ------------------------------------------------------------------------------------

def _charge(person: Client, cents: int, served_on: dt.date, status: str = ChargeStatus.SUCCEEDED) -> Charge:
    charge = factories.ChargeFactory.create(client=person, amount_cents=cents, status=status)
    factories.LedgerEntryFactory.create(client=person, charge=charge, amount_cents=cents, occurred_on=served_on)
    return charge


def _entry(charge: Charge, kind: str, cents: int, on: dt.date) -> None:
    factories.LedgerEntryFactory.create(client=charge.client, charge=charge, kind=kind, amount_cents=cents,
                                        occurred_on=on)


def test_collection_rate_is_what_the_periods_own_charges_have_collected(practice: Practice) -> None:
    person = factories.ClientFactory.create()
    paid = _charge(person, 10_000, WEDNESDAY - 2 * DAY)  # Monday's session, paid
    _entry(paid, LedgerKind.PAYMENT, -10_000, WEDNESDAY)
    part_paid = _charge(person, 20_000, WEDNESDAY - DAY, status=ChargeStatus.DUE)  # half paid on the portal
    portal = factories.ChargeFactory.create(client=person, appointment=None, kind=ChargeKind.BALANCE_PAYMENT,
                                            amount_cents=5_000, status=ChargeStatus.SUCCEEDED)
    BalanceAllocation.objects.create(payment=portal, charge=part_paid, amount_cents=5_000)
    _entry(portal, LedgerKind.PAYMENT, -5_000, WEDNESDAY)
    canceled = _charge(person, 7_000, WEDNESDAY, status=ChargeStatus.CANCELED)  # canceled: worth nothing
    _entry(canceled, LedgerKind.CHARGE_CANCELED, -7_000, WEDNESDAY)
    last_week = _charge(person, 30_000, WEDNESDAY - 9 * DAY)  # last week's session, paid this week
    _entry(last_week, LedgerKind.PAYMENT, -30_000, WEDNESDAY)
    october = _charge(person, 40_000, dt.date(2026, 10, 30))  # last month's, partly refunded this week
    _entry(october, LedgerKind.PAYMENT, -40_000, dt.date(2026, 10, 30))
    _entry(october, LedgerKind.REFUND, 4_000, WEDNESDAY)

    money = dashboard.money_in_and_out(today=WEDNESDAY)

    # The week: $100 + $200 (+ $70 canceled back to $0) came to $300; $100 + $50 of it is paid: 50%.
    assert (money.charged_week, money.collected_week, money.rate_week) == (30_000, 15_000, "50%")
    # The month adds last week's $300, paid: $450 of $600.
    assert (money.charged_month, money.collected_month, money.rate_month) == (60_000, 45_000, "75%")
    # Cash received this week, whatever it paid for: $100 + $50 + $300 - $40 refunded. Shown apart; as a
    # "rate" over this week's charges it would have read 137%.
    assert money.received_week == 41_000


def test_the_page_defines_the_rate_and_shows_it(admin_client: HttpClient, practice: Practice) -> None:
    today = timezone.now().astimezone(practice.zone).date()
    person = factories.ClientFactory.create()
    paid = _charge(person, 8_000, today)
    _entry(paid, LedgerKind.PAYMENT, -2_000, today)
    older = _charge(person, 50_000, today - 40 * DAY)
    _entry(older, LedgerKind.PAYMENT, -50_000, today)
    page = admin_client.get(reverse("admin:index")).text
    assert "Collection rate: <strong>25%</strong> this week" in page
    assert "Of the $80.00 this week's" in page and "$20.00 has been paid so far" in page
    assert "Cash received, for any session: $520.00" in page


# --- one queue per charge -----------------------------------------------------------------------------------

def test_each_charge_is_in_one_queue_only(admin_client: HttpClient, practice: Practice) -> None:
    now = timezone.now()
    soon = now + dt.timedelta(minutes=1)
    late = dashboard.end_of_today(now=now, zone=practice.zone) - dt.timedelta(minutes=1)
    held = factories.ChargeFactory.create(status=ChargeStatus.DUE, hold_reason=NO_CARD_HOLD,
                                          scheduled_for=now - HOUR)
    due = factories.ChargeFactory.create(status=ChargeStatus.DUE, scheduled_for=now - HOUR)
    scheduled = factories.ChargeFactory.create(scheduled_for=soon)
    fee = factories.ChargeFactory.create(kind=ChargeKind.NO_SHOW_FEE, scheduled_for=late,
                                         appointment__status=AppointmentStatus.NO_SHOW)
    failed = factories.ChargeFactory.create(status=ChargeStatus.FAILED, scheduled_for=now - DAY)

    queues = dashboard.today(now=now, zone=practice.zone)
    shown = {name: {row.pk for row in queues[name].rows}
             for name in ("charges_due", "held_charges", "fee_review", "stuck_charges")}
    assert shown == {"charges_due": {due.pk, scheduled.pk}, "held_charges": {held.pk},
                     "fee_review": {fee.pk}, "stuck_charges": {failed.pk}}

    page = admin_client.get(reverse("admin:index")).text
    for charge in (held, due, scheduled, fee, failed):
        assert page.count(reverse("admin:billing_charge_change", args=[charge.pk])) == 1, charge
    # Each queue's "see all" list is the same rows.
    for queue, charge in (("due_today", due), ("on_hold", held), ("fee_review", fee)):
        listed = admin_client.get(reverse("admin:billing_charge_changelist") + f"?queue={queue}").text
        assert reverse("admin:billing_charge_change", args=[charge.pk]) in listed, queue
        assert reverse("admin:billing_charge_change", args=[failed.pk]) not in listed, queue
    listed = admin_client.get(reverse("admin:billing_charge_changelist") + "?queue=due_today").text
    assert reverse("admin:billing_charge_change", args=[held.pk]) not in listed
    assert reverse("admin:billing_charge_change", args=[fee.pk]) not in listed


# --- one open review item per cause -------------------------------------------------------------------------

@pytest.fixture
def weekly_without_a_card(practice: Practice, make_client: Callable[..., Client],
                          completed_session: Callable[..., Appointment], stripe_server: FakeStripe) -> Client:
    """Four weekly sessions, each due a day later, and no card on file."""
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    start = FRIDAY_10AM - 28 * DAY
    for week in range(4):
        completed_session(person, at=start + week * 7 * DAY)
        tick(start + week * 7 * DAY + DAY + HOUR)
    assert Charge.objects.filter(client=person, hold_reason=NO_CARD_HOLD).count() == 4
    return person


def test_a_client_without_a_card_has_one_open_item_not_one_a_week(weekly_without_a_card: Client) -> None:
    items = ReviewItem.objects.filter(client=weekly_without_a_card, kind=ReviewKind.NO_CARD)
    assert items.filter(status=ReviewStatus.OPEN).count() == 1
    assert items.count() == 1


def test_the_item_stays_open_while_another_charge_still_waits_for_a_card(weekly_without_a_card: Client) -> None:
    item = ReviewItem.objects.get(client=weekly_without_a_card, kind=ReviewKind.NO_CARD)
    charges = list(Charge.objects.filter(client=weekly_without_a_card, hold_reason=NO_CARD_HOLD).order_by("pk"))
    pointed = next(c for c in charges if c.pk == item.charge_id)
    charge_cancel(charge=pointed, now=FRIDAY_10AM, actor="staff:test", user=None, why="Not billable")
    item.refresh_from_db()
    assert item.status == ReviewStatus.OPEN and item.charge_id != pointed.pk
    for charge in charges:
        if charge.pk != pointed.pk:
            charge_cancel(charge=charge, now=FRIDAY_10AM, actor="staff:test", user=None, why="Not billable")
    item.refresh_from_db()
    assert item.status == ReviewStatus.RESOLVED


def test_sessions_waiting_for_the_same_reason_are_one_row_and_one_fix(
        admin_client: HttpClient, practice: Practice, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment], aetna: Any) -> None:
    person = make_client(billing_type=BillingType.INSURANCE)  # no coverage on file: cannot be priced
    sessions = [completed_session(person, at=FRIDAY_10AM - week * 7 * DAY) for week in range(3)]
    items = ReviewItem.objects.filter(client=person, kind=ReviewKind.PRICING, status=ReviewStatus.OPEN)
    assert items.count() == 3  # one per session: each is priced (and closed) on its own
    queue = dashboard.open_review_items()
    assert queue.count == 1 and len(queue.rows) == 1 and queue.rows[0].repeats == 3
    page = admin_client.get(reverse("admin:index")).text
    assert "3 sessions" in page and page.count("Cannot work out what the client owes</a>") == 1
    for session in sessions:
        assert reverse("admin:billing_appointment_change", args=[session.pk]) in page

    factories.CoverageFactory.create(client=person, payer=aetna, payer_name="Aetna", copay_cents=2500,
                                     coinsurance_percent=None, effective_from=dt.date(2026, 1, 1))
    done = fix(admin_client, "recheck", queue.rows[0].pk)
    assert "Re-checked billing for 3 sessions." in done.text and "Priced and closed." in done.text
    assert not items.exists()
    assert Charge.objects.filter(appointment__in=sessions, amount_cents=2500).count() == 3


def test_review_open_again_updates_the_open_item(practice: Practice) -> None:
    person = factories.ClientFactory.create()
    first = review_open(kind=ReviewKind.WAITING_CHOICE, client=person, reason="2 charges wait", now=FRIDAY_10AM)
    again = review_open(kind=ReviewKind.WAITING_CHOICE, client=person, reason="3 charges wait", now=FRIDAY_10AM,
                        appointment=factories.AppointmentFactory.create(clients=[person]))
    assert again.pk == first.pk and again.reason == "3 charges wait"


def test_the_migration_closes_the_duplicates_already_open(practice: Practice) -> None:
    executor = MigrationExecutor(connection)
    before = [("billing", "0016_outbound_email_charge_amounts_and_weekly_payment")]
    after = [("billing", "0017_review_items_once_per_cause")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldItem, OldClient = old.get_model("billing", "ReviewItem"), old.get_model("billing", "Client")
    person = OldClient.objects.create(first_name="Ana", last_name="Weekly")
    sessions = [factories.AppointmentFactory.create().pk for _ in range(3)]
    for week in range(3):
        OldItem.objects.create(kind="no_card", client=person, reason=f"week {week}", appointment_id=sessions[week],
                               created_at=FRIDAY_10AM + week * 7 * DAY)
    OldItem.objects.create(kind="payment_refused", client=person, reason="a", created_at=FRIDAY_10AM)
    OldItem.objects.create(kind="payment_refused", client=person, reason="b", created_at=FRIDAY_10AM + DAY)
    with connection.cursor() as cursor:  # the rows' foreign keys checked now, before the index is built
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    MigrationExecutor(connection).migrate(after)

    still_open = ReviewItem.objects.filter(client_id=person.pk, status=ReviewStatus.OPEN)
    # The oldest stays open, naming what the newest named (the charge most likely still waiting).
    assert sorted(still_open.values_list("kind", "reason", "created_at")) == [
        ("no_card", "week 2", FRIDAY_10AM), ("payment_refused", "b", FRIDAY_10AM)]
    assert still_open.get(kind="no_card").appointment_id == sessions[2]
    closed = ReviewItem.objects.filter(client_id=person.pk, status=ReviewStatus.RESOLVED)
    assert closed.count() == 3 and all("repeat of review item" in i.resolution_note for i in closed)


# --- fixes in place, each for the roles allowed it ----------------------------------------------------------

@pytest.fixture
def fee(practice: Practice) -> Charge:
    charge = factories.ChargeFactory.create(kind=ChargeKind.NO_SHOW_FEE, amount_cents=7_500,
                                            scheduled_for=timezone.now() + DAY,
                                            appointment__status=AppointmentStatus.NO_SHOW)
    factories.LedgerEntryFactory.create(client=charge.client, charge=charge, appointment=charge.appointment,
                                        kind=LedgerKind.FEE, amount_cents=7_500)
    return charge


def test_fee_review_queue_offers_waive_to_a_billing_manager_only(
        fee: Charge, front_desk: Any, billing_manager: Any) -> None:
    desk, manager = signed_in(front_desk), signed_in(billing_manager)
    assert "Waive fee" not in desk.get(reverse("admin:index")).text
    page = manager.get(reverse("admin:index")).text
    assert "No-show and late-cancel fees waiting for review" in page and "Waive fee" in page and "$75.00" in page

    assert desk.post(reverse("admin:today_fix"), {"fix": "waive", "target": fee.pk, "why": "x"}).status_code == 403
    fee.refresh_from_db()
    assert fee.status == ChargeStatus.SCHEDULED

    refused = fix(manager, "waive", fee.pk, why="")
    assert "Say why first" in refused.text
    fee.refresh_from_db()
    assert fee.status == ChargeStatus.SCHEDULED

    done = fix(manager, "waive", fee.pk, why="First no-show, courtesy")
    assert "Waived no-show fee" in done.text
    fee.refresh_from_db()
    assert fee.status == ChargeStatus.CANCELED
    assert LedgerEntry.objects.filter(charge=fee, kind=LedgerKind.WAIVER, amount_cents=-7_500).exists()


def test_a_held_charge_offers_a_card_link_to_the_front_desk_not_to_an_auditor(
        practice: Practice, front_desk: Any, auditor: Any) -> None:
    held = factories.ChargeFactory.create(status=ChargeStatus.DUE, hold_reason=NO_CARD_HOLD,
                                          client__email="ana@example.com", scheduled_for=timezone.now())
    desk = signed_in(front_desk)
    assert "Email a card link" in desk.get(reverse("admin:index")).text
    assert "Email a card link" not in signed_in(auditor).get(reverse("admin:index")).text
    assert signed_in(auditor).post(reverse("admin:today_fix"),
                                   {"fix": "card_link", "target": held.client_id}).status_code == 403
    assert not mail.outbox

    done = fix(desk, "card_link", held.client_id)
    assert f"Emailed a card link to {held.client} at ana@example.com." in done.text
    assert done.redirect_chain[-1][0] == "/admin/"


def test_a_charge_above_the_cap_is_released_in_place(practice: Practice, billing_manager: Any,
                                                     front_desk: Any) -> None:
    held = factories.ChargeFactory.create(status=ChargeStatus.DUE, amount_cents=90_000,
                                          hold_reason="above the practice's cap of $500.00",
                                          scheduled_for=timezone.now())
    assert "Charge anyway" not in signed_in(front_desk).get(reverse("admin:index")).text
    manager = signed_in(billing_manager)
    assert "Charge anyway" in manager.get(reverse("admin:index")).text
    done = fix(manager, "release", held.pk, why="Intake and two sessions, agreed by phone")
    assert "will be charged on the next billing run" in done.text
    held.refresh_from_db()
    assert held.hold_reason == "" and held.cap_approved_cents == 90_000


def test_resolving_in_place_resolves_the_row(practice: Practice, front_desk: Any) -> None:
    item = factories.ReviewItemFactory.create(kind=ReviewKind.PAYMENT_REFUSED, reason="Stripe refused")
    done = fix(signed_in(front_desk), "resolve", item.pk, why="Called the client")
    assert "Resolved 1 review item." in done.text
    item.refresh_from_db()
    assert (item.status, item.resolution_note) == (ReviewStatus.RESOLVED, "Called the client")


def test_an_unknown_fix_or_target_changes_nothing(admin_client: HttpClient) -> None:
    for body in ({"fix": "explode", "target": "1"}, {"fix": "waive", "target": "x"}, {}):
        response = admin_client.post(reverse("admin:today_fix"), body, follow=True)
        assert response.status_code == 200 and "That fix is not known" in response.text
    assert admin_client.get(reverse("admin:today_fix")).status_code == 405
    assert admin_client.post(reverse("admin:today_fix"), {"fix": "waive", "target": "999999", "why": "x"}
                             ).status_code == 404
    # A "next" off the site goes back to the Today page instead.
    away = admin_client.post(reverse("admin:today_fix"), {"fix": "nope", "target": "1",
                                                          "next": "https://evil.example/"})
    assert away["Location"] == "/admin/"


def test_a_review_items_page_shows_the_session_and_what_to_do(
        admin_client: HttpClient, practice: Practice, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    person = make_client(billing_type=BillingType.INSURANCE)
    session = completed_session(person)
    item = ReviewItem.objects.get(client=person, kind=ReviewKind.PRICING)
    page = admin_client.get(reverse("admin:billing_reviewitem_change", args=[item.pk])).text
    assert "What this is about" in page and "What to do" in page
    assert reverse("admin:billing_appointment_change", args=[session.pk]) in page
    assert "Dana Reyes" in page and "Re-check billing" in page and "Mark resolved" in page


def test_a_stripe_link_row_opens_the_linking_page(admin_client: HttpClient, practice: Practice) -> None:
    item = factories.ReviewItemFactory.create(kind=ReviewKind.STRIPE_LINK, reason="Two customers share the email")
    page = admin_client.get(reverse("admin:index")).text
    assert "Link a Stripe customer" in page
    chooser = admin_client.post(reverse("admin:billing_reviewitem_changelist"),
                                {"action": "stripe_link_chosen", "_selected_action": item.pk})
    assert chooser.status_code == 200 and "cus_" in chooser.text


# --- the list of pages, by task -----------------------------------------------------------------------------

def test_pages_are_grouped_by_task_and_system_is_for_administrators(
        front_desk: Any, billing_manager: Any, auditor: Any, administrator: Any) -> None:
    for user in (front_desk, billing_manager, auditor):
        page = signed_in(user).get(reverse("admin:index")).text
        for section in ("Today&#x27;s work", "Clients &amp; sessions", "Money", "Reports", "Settings"):
            assert section in page, (user, section)
        for technical in (">System<", "TOTP devices", "Scheduled tasks", "Access attempts", "Audit seals"):
            assert technical not in page, (user, technical)
    page = signed_in(administrator).get(reverse("admin:index")).text
    for technical in (">System<", "TOTP devices", "Scheduled tasks", "Access attempts", "Audit seals",
                      "Log entries"):
        assert technical in page, technical
    # The sections come in the order of the work.
    order = [page.index(name) for name in ("Today&#x27;s work", "Clients &amp; sessions", "Money", "Reports",
                                           "Integrations", "Settings", ">System<")]
    assert order == sorted(order)
    # An app's own page keeps Django's list.
    assert signed_in(administrator).get("/admin/billing/").status_code == 200
