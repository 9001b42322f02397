"""The billing schedule: when charges are created, when they fall due, and how they follow their session."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum

from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeStatus,
    ChargeTiming,
    ChargeTrigger,
    Client,
    LedgerEntry,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    Weekday,
)
from billing.services.charges import charge_transition
from billing.services.schedule import appointment_set_status, appointment_sync_charges
from tests.practice_fixtures import FRIDAY_10AM

HOUR = dt.timedelta(hours=1)
STAFF = "staff:frontdesk"


def tick(at: dt.datetime) -> None:
    call_command("billing_tick", "--at", at.isoformat(), stdout=StringIO())


def balance(client: Client) -> int:
    return LedgerEntry.objects.filter(client=client).aggregate(t=Sum("amount_cents"))["t"] or 0


def complete(appointment: Appointment, at: dt.datetime) -> None:
    appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=at, actor=STAFF)


@pytest.fixture
def self_pay(make_client: Callable[..., Client]) -> Client:
    return make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000)


def test_immediate_timing_makes_the_charge_due_at_completion(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    practice.charge_timing = ChargeTiming.IMMEDIATE
    practice.save()
    appointment = make_appointment(self_pay)
    complete(appointment, FRIDAY_10AM)

    charge = Charge.objects.get(appointment=appointment)
    assert (charge.amount_cents, charge.scheduled_for, charge.notice_due_at) == (15000, FRIDAY_10AM, None)
    tick(FRIDAY_10AM)
    charge.refresh_from_db()
    assert charge.status == ChargeStatus.DUE


def test_delayed_charge_falls_due_24_hours_after_completion_once(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    appointment = make_appointment(self_pay)
    complete(appointment, FRIDAY_10AM)
    charge = Charge.objects.get(appointment=appointment)
    assert charge.scheduled_for == FRIDAY_10AM + 24 * HOUR
    assert charge.notice_due_at == FRIDAY_10AM + 22 * HOUR  # the default 2-hour pre-charge notice

    tick(FRIDAY_10AM + 23 * HOUR)
    charge.refresh_from_db()
    assert charge.status == ChargeStatus.SCHEDULED
    tick(FRIDAY_10AM + 24 * HOUR)
    tick(FRIDAY_10AM + 25 * HOUR)
    charge.refresh_from_db()
    assert charge.status == ChargeStatus.DUE
    assert list(charge.events.values_list("from_status", "to_status")) == [("", "scheduled"), ("scheduled", "due")]
    assert Charge.objects.filter(appointment=appointment).count() == 1
    assert balance(self_pay) == 15000


@pytest.mark.parametrize(("completed_local", "due_local"), [
    ("2026-11-25T15:00", "2026-11-27T09:00"),  # Wednesday -> this Friday
    ("2026-11-27T06:59", "2026-11-27T09:00"),  # Friday, more than the 2 hours' notice before -> the same morning
    ("2026-11-27T08:59", "2026-12-04T09:00"),  # Friday, too close for the notice -> next week's batch
    ("2026-11-27T09:00", "2026-12-04T09:00"),  # Friday at the batch hour -> next week's batch
    ("2026-11-28T12:00", "2026-12-04T09:00"),  # Saturday -> next Friday
])
def test_weekly_batch_charges_on_the_next_friday_9am_practice_time(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment],
        completed_local: str, due_local: str) -> None:
    practice.charge_timing = ChargeTiming.WEEKLY
    practice.weekly_batch_weekday = Weekday.FRIDAY
    practice.weekly_batch_hour = 9
    practice.save()
    zone = practice.zone
    completed_at = dt.datetime.fromisoformat(completed_local).replace(tzinfo=zone)
    due = dt.datetime.fromisoformat(due_local).replace(tzinfo=zone)
    appointment = make_appointment(self_pay, starts_at=completed_at - HOUR)
    complete(appointment, completed_at)

    charge = Charge.objects.get(appointment=appointment)
    assert charge.scheduled_for == due
    tick(due - dt.timedelta(minutes=1))
    assert Charge.objects.get(pk=charge.pk).status == ChargeStatus.SCHEDULED
    tick(due)
    assert Charge.objects.get(pk=charge.pk).status == ChargeStatus.DUE


def test_weekly_batch_keeps_local_hour_across_daylight_saving_change(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    practice.charge_timing = ChargeTiming.WEEKLY
    practice.save()
    # Completed Thursday 29 October 2026 (EDT); the batch is Friday 6 November 09:00 (EST, UTC-5)
    # when completed after the 30 October batch.
    completed = dt.datetime(2026, 10, 30, 14, 0, tzinfo=dt.UTC)  # Friday 10:00 EDT
    appointment = make_appointment(self_pay, starts_at=completed - HOUR)
    complete(appointment, completed)
    assert Charge.objects.get(appointment=appointment).scheduled_for == dt.datetime(2026, 11, 6, 14, 0,
                                                                                    tzinfo=dt.UTC)


def test_canceling_before_the_charge_runs_cancels_it(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    appointment = make_appointment(self_pay)
    complete(appointment, FRIDAY_10AM)
    appointment_set_status(appointment=appointment, status=AppointmentStatus.CANCELED,
                           now=FRIDAY_10AM + 2 * HOUR, actor=STAFF, reason="entered by mistake")
    tick(FRIDAY_10AM + 48 * HOUR)

    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.CANCELED
    assert charge.events.last().reason == "session is now canceled"  # type: ignore[union-attr]
    assert balance(self_pay) == 0
    assert list(appointment.events.values_list("to_status", flat=True)) == ["completed", "canceled"]


def test_correcting_back_to_completed_revives_the_same_charge(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    appointment = make_appointment(self_pay)
    complete(appointment, FRIDAY_10AM)
    appointment_set_status(appointment=appointment, status=AppointmentStatus.CANCELED, now=FRIDAY_10AM + HOUR,
                           actor=STAFF)
    complete(appointment, FRIDAY_10AM + 2 * HOUR)

    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.SCHEDULED
    assert charge.scheduled_for == FRIDAY_10AM + 26 * HOUR
    assert balance(self_pay) == 15000


def test_signed_note_trigger_waits_for_the_signature_and_skips_no_shows(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    practice.charge_trigger = ChargeTrigger.NOTE_SIGNED
    practice.save()
    appointment = make_appointment(self_pay)
    complete(appointment, FRIDAY_10AM)
    assert not Charge.objects.exists()

    appointment.note_signed_at = FRIDAY_10AM + 3 * HOUR
    appointment.save()
    appointment_sync_charges(appointment=appointment, now=FRIDAY_10AM + 3 * HOUR, actor="api:simplepractice")
    charge = Charge.objects.get(appointment=appointment)
    assert charge.scheduled_for == FRIDAY_10AM + 27 * HOUR

    no_show = make_appointment(self_pay, note_signed_at=FRIDAY_10AM, status=AppointmentStatus.NO_SHOW)
    appointment_sync_charges(appointment=no_show, now=FRIDAY_10AM, actor="api:simplepractice")
    assert not Charge.objects.filter(appointment=no_show).exists()


def test_fee_change_before_charging_reprices_and_the_ledger_follows(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    appointment = make_appointment(self_pay)
    complete(appointment, FRIDAY_10AM)
    appointment.fee_cents = 9000
    appointment.save()
    appointment_sync_charges(appointment=appointment, now=FRIDAY_10AM + HOUR, actor=STAFF)
    appointment_sync_charges(appointment=appointment, now=FRIDAY_10AM + 2 * HOUR, actor=STAFF)  # no-op

    charge = Charge.objects.get(appointment=appointment)
    assert charge.amount_cents == 9000
    assert charge.events.last().reason == "re-priced from $150.00"  # type: ignore[union-attr]
    assert charge.events.count() == 2
    assert list(LedgerEntry.objects.filter(client=self_pay).values_list("kind", "amount_cents")) == [
        ("session_charge", 15000), ("adjustment", -6000)]


def test_removed_group_participant_is_not_charged(
        practice: Practice, self_pay: Client, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    other = make_client(billing_type=BillingType.SELF_PAY)
    group = make_appointment(self_pay, other, service_code="90853")
    complete(group, FRIDAY_10AM)
    assert Charge.objects.filter(appointment=group, status=ChargeStatus.SCHEDULED).count() == 2

    group.participants.filter(client=other).delete()
    appointment_sync_charges(appointment=group, now=FRIDAY_10AM + HOUR, actor="api:simplepractice")
    assert Charge.objects.get(appointment=group, client=other).status == ChargeStatus.CANCELED
    assert Charge.objects.get(appointment=group, client=self_pay).status == ChargeStatus.SCHEDULED
    assert balance(other) == 0


def test_change_after_payment_is_an_adjustment_not_an_edit(
        practice: Practice, self_pay: Client, make_appointment: Callable[..., Appointment]) -> None:
    appointment = make_appointment(self_pay)
    complete(appointment, FRIDAY_10AM)
    charge = Charge.objects.get(appointment=appointment)
    charge_transition(charge=charge, to_status=ChargeStatus.PROCESSING, now=FRIDAY_10AM, actor="system")
    charge_transition(charge=charge, to_status=ChargeStatus.SUCCEEDED, now=FRIDAY_10AM, actor="system")
    LedgerEntry.objects.create(client=self_pay, kind="payment", amount_cents=-15000, occurred_on=FRIDAY_10AM.date(),
                               charge=charge, actor="system", created_at=FRIDAY_10AM)

    for hour in (1, 2):  # a repeated push changes nothing more
        appointment_set_status(appointment=appointment, status=AppointmentStatus.CANCELED,
                               now=FRIDAY_10AM + hour * HOUR, actor="api:simplepractice")

    charge.refresh_from_db()
    assert (charge.status, charge.amount_cents) == (ChargeStatus.SUCCEEDED, 15000)
    assert balance(self_pay) == -15000  # a credit the practice can refund
    review = ReviewItem.objects.get(kind=ReviewKind.PAID_SESSION_CHANGED)
    assert "Session fee of $150.00 is paid, but the session is now canceled." in review.reason


def test_missing_benefits_go_to_review_then_charge_once_fixed(
        practice: Practice, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    client = make_client(benefits={"plan_category": "PPO"})
    appointment = make_appointment(client)
    complete(appointment, FRIDAY_10AM)
    complete(appointment, FRIDAY_10AM)  # the same push again opens no second item

    assert not Charge.objects.exists()
    item = ReviewItem.objects.get(status=ReviewStatus.OPEN)
    assert (item.kind, item.appointment, item.reason) == (
        ReviewKind.PRICING, appointment, "Benefits give no copay, coinsurance or plan category.")

    client.coverages.update(copay_cents=2500)
    appointment_sync_charges(appointment=appointment, now=FRIDAY_10AM + HOUR, actor=STAFF)
    assert Charge.objects.get(appointment=appointment).amount_cents == 2500
    item.refresh_from_db()
    assert item.status == ReviewStatus.RESOLVED


def test_deductible_charged_by_the_portal_counts_for_the_next_session(
        practice: Practice, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    client = make_client(benefits={"coinsurance_percent": Decimal(20), "deductible_cents": 100000,
                                   "deductible_met_cents": 95000})
    first = make_appointment(client)
    second = make_appointment(client, starts_at=FRIDAY_10AM + 24 * 7 * HOUR)
    complete(first, FRIDAY_10AM + HOUR)
    complete(second, FRIDAY_10AM + 24 * 7 * HOUR)

    assert Charge.objects.get(appointment=first).amount_cents == 5000 + 1400
    assert Charge.objects.get(appointment=second).amount_cents == 2400  # deductible now met
