"""No-show and late-cancel fees: only with a current policy acknowledgment, waivable in the review window."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum

from billing.models import (
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    PolicyAcknowledgment,
    Practice,
    ReviewItem,
    ReviewKind,
)
from billing.services.schedule import WaiveNotAllowed, appointment_set_status, fee_waive
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, outbox, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def policy(practice: Practice) -> Practice:
    practice.cancellation_policy_version = "2026-01"
    practice.no_show_fee_cents = 7500
    practice.late_cancel_fee_cents = 5000
    practice.save()
    return practice


def acknowledge(client: Client, version: str) -> None:
    PolicyAcknowledgment.objects.create(client=client, policy_version=version,
                                        acknowledged_at=dt.datetime(2026, 1, 5, 15, tzinfo=dt.UTC), source="portal")


def mark(appointment: Appointment, status: str, at: dt.datetime) -> None:
    appointment_set_status(appointment=appointment, status=status, now=at, actor="api:ehr")


def balance(client: Client) -> int:
    return LedgerEntry.objects.filter(client=client).aggregate(t=Sum("amount_cents"))["t"] or 0


def test_no_show_fee_with_current_acknowledgment_is_charged_after_the_review_window(
        policy: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    acknowledge(self_pay_client, "2026-01")
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = make_appointment(self_pay_client)
    mark(appointment, AppointmentStatus.NO_SHOW, FRIDAY_10AM)

    fee = Charge.objects.get(appointment=appointment)
    assert (fee.kind, fee.amount_cents, fee.scheduled_for) == (ChargeKind.NO_SHOW_FEE, 7500, FRIDAY_10AM + 24 * HOUR)
    tick(FRIDAY_10AM + 23 * HOUR)
    assert Charge.objects.get(pk=fee.pk).status == ChargeStatus.SCHEDULED
    [notice] = outbox("fee_notice")
    assert "cancellation policy (version 2026-01) that you acknowledged on January 5, 2026" in notice.body
    assert "$75.00" in notice.body

    tick(FRIDAY_10AM + 24 * HOUR)
    tick(FRIDAY_10AM + 25 * HOUR)
    fee.refresh_from_db()
    assert (fee.status, fee.attempts) == (ChargeStatus.SUCCEEDED, 1)
    assert [c["amount"] for c in stripe_server.charges()] == [7500]
    assert Charge.objects.filter(appointment=appointment).count() == 1  # no session charge for a no-show


def test_fee_with_an_old_policy_version_is_not_charged_and_is_listed(
        policy: Practice, self_pay_client: Client, make_appointment: Callable[..., Appointment]) -> None:
    acknowledge(self_pay_client, "2025-06")
    appointment = make_appointment(self_pay_client)
    mark(appointment, AppointmentStatus.LATE_CANCEL, FRIDAY_10AM)
    mark(appointment, AppointmentStatus.LATE_CANCEL, FRIDAY_10AM + HOUR)  # a repeated push lists it once

    assert not Charge.objects.exists()
    item = ReviewItem.objects.get(kind=ReviewKind.FEE_NO_ACK)
    assert item.appointment == appointment
    assert item.reason == ("Late-cancel fee not charged: the client has not acknowledged the current cancellation "
                           "policy (version 2026-01).")


def test_fee_waived_in_the_window_is_never_charged_and_the_ledger_shows_why(
        policy: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    acknowledge(self_pay_client, "2026-01")
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = make_appointment(self_pay_client)
    mark(appointment, AppointmentStatus.NO_SHOW, FRIDAY_10AM)
    fee = Charge.objects.get(appointment=appointment)
    manager = User.objects.create_user("manager")
    fee_waive(charge=fee, reason="car accident on the way", now=FRIDAY_10AM + 2 * HOUR, user=manager)
    mark(appointment, AppointmentStatus.NO_SHOW, FRIDAY_10AM + 3 * HOUR)  # the EHR pushes again: still waived
    tick(FRIDAY_10AM + 48 * HOUR)

    fee.refresh_from_db()
    assert fee.status == ChargeStatus.CANCELED
    assert stripe_server.charges() == []
    waiver = LedgerEntry.objects.get(charge=fee, kind=LedgerKind.WAIVER)
    assert (waiver.amount_cents, waiver.memo, waiver.user) == (-7500, "waived: car accident on the way", manager)
    assert balance(self_pay_client) == 0
    assert fee.events.last().actor == "staff:manager"  # type: ignore[union-attr]


def test_status_corrected_back_to_completed_cancels_the_fee(
        policy: Practice, self_pay_client: Client, make_appointment: Callable[..., Appointment]) -> None:
    acknowledge(self_pay_client, "2026-01")
    appointment = make_appointment(self_pay_client)
    mark(appointment, AppointmentStatus.NO_SHOW, FRIDAY_10AM)
    mark(appointment, AppointmentStatus.COMPLETED, FRIDAY_10AM + HOUR)

    fee = Charge.objects.get(appointment=appointment, kind=ChargeKind.NO_SHOW_FEE)
    assert fee.status == ChargeStatus.CANCELED
    session = Charge.objects.get(appointment=appointment, kind=ChargeKind.SESSION_FEE)
    assert session.status == ChargeStatus.SCHEDULED
    assert balance(self_pay_client) == 14000


def test_a_charged_fee_cannot_be_waived_only_refunded(
        policy: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        make_appointment: Callable[..., Appointment]) -> None:
    policy.fee_review_hours = 0
    policy.save()
    acknowledge(self_pay_client, "2026-01")
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = make_appointment(self_pay_client)
    mark(appointment, AppointmentStatus.LATE_CANCEL, FRIDAY_10AM)
    tick(FRIDAY_10AM)  # no review window, but the fee notice still has its 2 hours' lead
    assert Charge.objects.get(appointment=appointment).status == ChargeStatus.SCHEDULED
    tick(FRIDAY_10AM + dt.timedelta(hours=2))
    fee = Charge.objects.get(appointment=appointment)
    assert fee.status == ChargeStatus.SUCCEEDED
    with pytest.raises(WaiveNotAllowed, match="refund it instead"):
        fee_waive(charge=fee, reason="goodwill", now=FRIDAY_10AM, user=User.objects.create_user("m"))


def test_staff_waive_a_fee_from_the_admin_with_a_reason(
        policy: Practice, self_pay_client: Client, make_appointment: Callable[..., Appointment],
        admin_client: object) -> None:
    acknowledge(self_pay_client, "2026-01")
    appointment = make_appointment(self_pay_client)
    mark(appointment, AppointmentStatus.NO_SHOW, dt.datetime.now(dt.UTC))
    fee = Charge.objects.get(appointment=appointment)
    form = {"action": "waive_fee", "_selected_action": [fee.pk]}
    page = admin_client.post("/admin/billing/charge/", form)  # type: ignore[attr-defined]
    assert b"These fees will not be charged" in page.content
    done = admin_client.post("/admin/billing/charge/", {**form, "apply": "1", "why": "first no-show"},  # type: ignore[attr-defined]
                             follow=True)
    assert f"Waived fee #{fee.pk}.".encode() in done.content
    fee.refresh_from_db()
    assert fee.status == ChargeStatus.CANCELED
    assert LedgerEntry.objects.get(charge=fee, kind=LedgerKind.WAIVER).memo == "waived: first no-show"
