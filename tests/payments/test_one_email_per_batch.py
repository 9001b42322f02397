"""One pre-charge notice and one receipt per client per batch, listing the sessions; every charge still
told first, re-priced charges told again, and no notice written twice."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable

from billing.models import Appointment, Charge, ChargeStatus, Client, OutboundEmail, Practice
from billing.services.schedule import appointment_sync_charges, notices_enqueue
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, outbox, save_card, tick

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
MONDAY_NOON = dt.datetime(2026, 11, 23, 12, 0, tzinfo=NEW_YORK)
WEDNESDAY_EVENING = dt.datetime(2026, 11, 25, 21, 30, tzinfo=NEW_YORK)  # already Thursday in UTC
BATCH = dt.datetime(2026, 11, 27, 9, 0, tzinfo=NEW_YORK)  # Friday 09:00, the weekly batch
NOTICE_AT = BATCH - dt.timedelta(hours=24)
HOUR = dt.timedelta(hours=1)


def weekly(practice: Practice) -> Practice:
    practice.charge_timing = "weekly"
    practice.weekly_batch_weekday = 4
    practice.weekly_batch_hour = 9
    practice.pre_charge_notice_hours = 24
    practice.save()
    return practice


def test_a_weeks_sessions_are_one_notice_and_one_receipt_listing_each(
        practice: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    weekly(practice)
    two_sessions = make_client(billing_type="self_pay", session_rate_cents=14000)
    one_session = make_client(billing_type="self_pay", session_rate_cents=9000)
    for client in (two_sessions, one_session):
        save_card(client, CARD_OK, stripe_server, now=MONDAY_NOON - HOUR)
    completed_session(two_sessions, at=MONDAY_NOON)
    completed_session(two_sessions, at=WEDNESDAY_EVENING, fee_cents=16000)
    completed_session(one_session, at=MONDAY_NOON)

    tick(NOTICE_AT - HOUR)
    assert outbox("pre_charge_notice") == []
    tick(NOTICE_AT)
    tick(NOTICE_AT + HOUR)
    notices = {m.to[0]: m.body for m in outbox("pre_charge_notice")}
    assert set(notices) == {two_sessions.email, one_session.email}
    both = notices[two_sessions.email]
    assert "on Friday, November 27 at 9:00 AM we will charge $300.00 to your Visa ending 4242" in both
    assert "for these 2 sessions:" in both
    # Each session on its local date of service (the Wednesday evening session is Wednesday's), with its amount.
    assert "November 23: Individual therapy, 60 minutes with Dana Reyes, LCSW: $140.00" in both
    assert "November 25: Individual therapy, 60 minutes with Dana Reyes, LCSW: $160.00" in both
    assert "Total: $300.00" in both
    assert "we will charge $90.00" in notices[one_session.email]
    assert "for your session on November 23 with Dana Reyes" in notices[one_session.email]

    tick(BATCH)
    charges = list(Charge.objects.filter(client=two_sessions).order_by("appointment__starts_at"))
    assert [(c.status, c.amount_cents) for c in charges] == [(ChargeStatus.SUCCEEDED, 14000),
                                                            (ChargeStatus.SUCCEEDED, 16000)]
    assert all(c.notice_sent_at is not None and BATCH - c.notice_sent_at >= 24 * HOUR for c in charges)
    receipts = {m.to[0]: m.body for m in outbox("receipt")}
    assert len(outbox("receipt")) == 2
    paid = receipts[two_sessions.email]
    assert "We charged $300.00 to your Visa ending 4242" in paid and "for 2 sessions." in paid
    assert "Date of service: November 23, 2026" in paid and "Date of service: November 25, 2026" in paid
    assert "Amount charged:  $140.00" in paid and "Amount charged:  $160.00" in paid
    assert all(c.payment_reference in paid for c in charges)  # each session's own payment
    assert "Total charged: $300.00" in paid
    assert "Amount charged:  $90.00" in receipts[one_session.email]


def test_a_session_re_priced_after_the_batch_notice_is_told_again_alone_and_waits_its_lead(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    weekly(practice)
    save_card(self_pay_client, CARD_OK, stripe_server, now=MONDAY_NOON - HOUR)
    monday = completed_session(self_pay_client, at=MONDAY_NOON)
    completed_session(self_pay_client, at=WEDNESDAY_EVENING)
    tick(NOTICE_AT)
    [batch_notice] = outbox("pre_charge_notice")
    assert "$280.00" in batch_notice.body

    monday.fee_cents = 9000
    monday.save()
    appointment_sync_charges(appointment=monday, now=BATCH - 2 * HOUR, actor="test")
    tick(BATCH - 2 * HOUR)
    tick(BATCH)  # the Wednesday session goes as announced; the re-priced one waits a full lead from its notice
    _, again = outbox("pre_charge_notice")
    assert "we will charge $90.00" in again.body and "for your session on November 23" in again.body
    assert "November 25" not in again.body
    repriced = Charge.objects.get(appointment=monday)
    assert repriced.status == ChargeStatus.SCHEDULED
    assert [c["amount"] for c in stripe_server.charges()] == [14000]
    tick(BATCH + 22 * HOUR)
    repriced.refresh_from_db()
    assert repriced.status == ChargeStatus.SUCCEEDED
    assert sorted(c["amount"] for c in stripe_server.charges()) == [9000, 14000]
    assert len(outbox("receipt")) == 2  # two charge moments: two receipts


def test_a_batch_notice_is_written_once_however_often_it_is_asked_for(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    weekly(practice)
    save_card(self_pay_client, CARD_OK, stripe_server, now=MONDAY_NOON - HOUR)
    completed_session(self_pay_client, at=MONDAY_NOON)
    completed_session(self_pay_client, at=WEDNESDAY_EVENING)
    tick(NOTICE_AT)
    tick(NOTICE_AT)  # the same moment again
    charges = list(Charge.objects.filter(client=self_pay_client).select_related("client", "appointment__clinician"))
    assert notices_enqueue(charges=charges, now=NOTICE_AT + HOUR, practice=practice) == 0  # same charges, amounts
    [notice] = OutboundEmail.objects.filter(template="pre_charge_notice")
    assert sorted(notice.charge_amounts) == sorted([c.pk, 14000] for c in charges)
    assert len(outbox("pre_charge_notice")) == 1


def test_a_new_card_re_announces_every_declined_charge_in_one_notice(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    weekly(practice)
    save_card(self_pay_client, CARD_DECLINES_WHEN_CHARGED, stripe_server, now=MONDAY_NOON - HOUR)
    completed_session(self_pay_client, at=MONDAY_NOON)
    completed_session(self_pay_client, at=WEDNESDAY_EVENING)
    tick(NOTICE_AT)
    tick(BATCH)
    assert {c.status for c in Charge.objects.filter(client=self_pay_client)} == {ChargeStatus.FAILED}

    saved_at = BATCH + 2 * HOUR
    save_card(self_pay_client, CARD_OK, stripe_server, now=saved_at)
    tick(saved_at)
    _, again = outbox("pre_charge_notice")
    assert "we will charge $280.00" in again.body and "these 2 sessions" in again.body
    tick(saved_at + 23 * HOUR)
    assert sorted(c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded") == []
    tick(saved_at + 24 * HOUR)
    assert sorted(c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded") == [14000, 14000]
    [receipt] = outbox("receipt")
    assert "We charged $280.00" in receipt.body
