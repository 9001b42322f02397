"""The dispute guard's arithmetic: $399.99 over goes ahead (with a warning), $400 over is held; refunds and
cancellations lower what is billed; the period is the practice's days."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeStatus,
    Client,
    GoodFaithEstimate,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.services.estimates import (
    HOLD,
    OK,
    WARN,
    EstimateInvalid,
    EstimateRefused,
    LineIn,
    estimate_billed_cents,
    estimate_create,
    estimate_guard_check,
    guard_outcome,
    is_estimate_hold,
    period_end_for,
)
from billing.services.schedule import appointment_set_status

NY = dt.timezone(dt.timedelta(hours=-5))  # New York in late November and December (EST)
NOW = dt.datetime(2026, 12, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("billed", "amount", "outcome"), [
    (0, 10_000, OK),
    (50_000, 39_999, WARN),      # $399.99 over: goes ahead, staff warned
    (50_000, 40_000, HOLD),      # exactly $400 over: held
    (50_000, 29_999, OK),        # a cent under the $300 warning
    (50_000, 30_000, WARN),      # at the warning threshold
    (89_999, 0, WARN),
    (90_000, 0, HOLD),
])
def test_outcome_at_the_edges(billed: int, amount: int, outcome: str) -> None:
    assert guard_outcome(estimated_cents=50_000, billed_cents=billed, amount_cents=amount,
                         warn_cents=30_000) == outcome


def test_period_is_at_most_twelve_months() -> None:
    assert period_end_for(dt.date(2026, 1, 15)) == dt.date(2027, 1, 14)
    assert period_end_for(dt.date(2028, 2, 29)) == dt.date(2029, 2, 27)  # no Feb 29 in 2029: the 28th, less a day


@pytest.fixture
def person(make_client: Callable[..., Client], aetna: object, practice: Practice) -> Client:
    return make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=10_000)


def session(make_appointment: Callable[..., Appointment], client: Client, starts_at: dt.datetime,
            fee: int | None = None) -> Charge:
    appointment = make_appointment(client, starts_at=starts_at, **({"fee_cents": fee} if fee else {}))
    appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=NOW, actor="test")
    return Charge.objects.get(appointment=appointment)


def estimate_of(client: Client, total_sessions: int, start: dt.date = dt.date(2026, 11, 1),
                end: dt.date = dt.date(2026, 11, 30)) -> GoodFaithEstimate:
    return estimate_create(client=client, period_start=start, period_end=end,
                           lines=[LineIn("90837", total_sessions)], now=NOW - dt.timedelta(days=60), actor="test")


def test_exactly_399_99_over_is_charged_and_400_over_is_held(
        person: Client, make_appointment: Callable[..., Appointment]) -> None:
    estimate_of(person, 2)  # $200.00
    first = session(make_appointment, person, dt.datetime(2026, 11, 2, 15, tzinfo=dt.UTC), fee=None)
    assert first.status == ChargeStatus.SCHEDULED
    # $100 + $499.99 = $599.99: $399.99 above the $200 estimate.
    person.session_rate_cents = 49_999
    person.save()
    second = session(make_appointment, person, dt.datetime(2026, 11, 3, 15, tzinfo=dt.UTC))
    assert second.hold_reason == "" and second.status == ChargeStatus.SCHEDULED
    warning = ReviewItem.objects.get(kind=ReviewKind.ESTIMATE_WARNING, status=ReviewStatus.OPEN)
    assert "$399.99 above good faith estimate" in warning.reason
    # One cent more would be $400.00 over: the next charge of a cent is held.
    person.session_rate_cents = 1
    person.save()
    third = session(make_appointment, person, dt.datetime(2026, 11, 4, 15, tzinfo=dt.UTC))
    assert third.status == ChargeStatus.DUE and is_estimate_hold(third)
    assert third.notice_due_at is None  # nothing is announced that is not going to be charged
    held = ReviewItem.objects.get(kind=ReviewKind.ESTIMATE_HOLD, status=ReviewStatus.OPEN)
    assert held.charge == third and "$400.00 above" in held.reason


def test_a_refund_or_a_cancellation_lowers_what_is_billed(
        person: Client, make_appointment: Callable[..., Appointment], practice: Practice) -> None:
    estimate = estimate_of(person, 1)  # $100.00
    first = session(make_appointment, person, dt.datetime(2026, 11, 2, 15, tzinfo=dt.UTC))
    second = session(make_appointment, person, dt.datetime(2026, 11, 3, 15, tzinfo=dt.UTC))
    assert estimate_billed_cents(estimate=estimate, practice=practice) == 20_000
    Charge.objects.filter(pk=first.pk).update(status=ChargeStatus.PARTIALLY_REFUNDED, refunded_cents=6_000)
    assert estimate_billed_cents(estimate=estimate, practice=practice) == 14_000
    Charge.objects.filter(pk=second.pk).update(status=ChargeStatus.CANCELED)
    assert estimate_billed_cents(estimate=estimate, practice=practice) == 4_000
    # A $500 session: $40 billed + $500 is $440 above the $100 estimate: held.
    person.session_rate_cents = 50_000
    person.save()
    third = session(make_appointment, person, dt.datetime(2026, 11, 5, 15, tzinfo=dt.UTC))
    assert is_estimate_hold(third)
    # The first session refunded in full: $0 + $500 is exactly $400.00 over, still held; a cent less fits.
    Charge.objects.filter(pk=first.pk).update(refunded_cents=10_000)
    assert estimate_guard_check(charge=third).outcome == HOLD
    third.amount_cents = 49_999
    assert estimate_guard_check(charge=third).outcome == WARN


def test_the_period_is_counted_in_the_practice_time_zone(
        person: Client, make_appointment: Callable[..., Appointment], practice: Practice) -> None:
    estimate = estimate_of(person, 1)  # November 1 to 30, New York days
    inside = [dt.datetime(2026, 11, 1, 0, 15, tzinfo=dt.timezone(dt.timedelta(hours=-4))),  # Nov 1, 00:15 EDT
              dt.datetime(2026, 11, 30, 23, 30, tzinfo=NY)]  # Dec 1 04:30 UTC, still Nov 30 in New York
    outside = [dt.datetime(2026, 10, 31, 23, 45, tzinfo=dt.timezone(dt.timedelta(hours=-4))),  # Nov 1 03:45 UTC
               dt.datetime(2026, 12, 1, 0, 30, tzinfo=NY)]
    for starts_at in inside + outside:
        session(make_appointment, person, starts_at)
    assert estimate_billed_cents(estimate=estimate, practice=practice) == 20_000
    # A session outside the period is not guarded by it: never held, however much is billed inside.
    person.session_rate_cents = 90_000
    person.save()
    late = session(make_appointment, person, dt.datetime(2026, 12, 2, 15, tzinfo=dt.UTC))
    assert not is_estimate_hold(late)
    last_minute = session(make_appointment, person, dt.datetime(2026, 11, 30, 23, 59, tzinfo=NY))
    assert is_estimate_hold(last_minute)


def test_no_estimate_no_guard_and_fees_are_not_guarded(
        person: Client, make_appointment: Callable[..., Appointment]) -> None:
    person.session_rate_cents = 90_000
    person.save()
    charge = session(make_appointment, person, dt.datetime(2026, 11, 2, 15, tzinfo=dt.UTC))
    assert not is_estimate_hold(charge)
    assert estimate_guard_check(charge=charge).outcome == "no_estimate"


def test_an_estimate_is_checked_before_it_is_issued(person: Client) -> None:
    with pytest.raises(EstimateInvalid, match="at most 12 months"):
        estimate_of(person, 1, start=dt.date(2026, 1, 15), end=dt.date(2027, 1, 15))
    with pytest.raises(EstimateInvalid, match="not one of the practice's services"):
        estimate_create(client=person, period_start=dt.date(2026, 1, 1), period_end=dt.date(2026, 2, 1),
                        lines=[LineIn("99999", 1)], now=NOW, actor="test")
    with pytest.raises(EstimateInvalid, match="Not ICD-10"):
        estimate_create(client=person, period_start=dt.date(2026, 1, 1), period_end=dt.date(2026, 2, 1),
                        lines=[LineIn("90837", 1)], now=NOW, actor="test", diagnosis_codes=["=cmd"])
    estimate_of(person, 1, start=dt.date(2026, 1, 15), end=dt.date(2027, 1, 14))
    with pytest.raises(EstimateRefused, match="revise it instead"):
        estimate_of(person, 1, start=dt.date(2026, 6, 1), end=dt.date(2026, 7, 1))
