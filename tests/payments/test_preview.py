"""Preview: a practice runs with charging off and sees what the portal would have collected.

The report replays a period through the tick itself, inside a transaction rolled back at its end, so its
figures are what a real run charges: a month of sessions is previewed, then really run against the fake
Stripe server, and each session's amount and moment must match."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django.urls import reverse

from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeEvent,
    ChargeKind,
    ChargeStatus,
    Client,
    EmailStatus,
    InsurancePayment,
    OutboundEmail,
    PaymentAttempt,
    PolicyAcknowledgment,
    Practice,
)
from billing.services.preview import (
    PREVIEW_HOLD,
    NothingFromPreview,
    PeriodInvalid,
    charging_preview_set,
    preview_charges_release,
    preview_report,
)
from billing.services.schedule import appointment_set_status
from billing.services.tick import tick_run
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, save_card

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")
SEPTEMBER_30 = dt.datetime(2026, 9, 30, 12, 0, tzinfo=NEW_YORK)
NOVEMBER_20 = dt.datetime(2026, 11, 20, 12, 0, tzinfo=NEW_YORK)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


def month_of_sessions(practice: Practice, make_client: Callable[..., Client],
                      make_appointment: Callable[..., Appointment], stripe_server: FakeStripe) -> list[Client]:
    """October 2026: seven clients (self-pay at three rates, a copay, coinsurance, a client without a card),
    about a session a week each; the first half charged at once, the second in Friday's weekly batch (one card
    payment a week, notices a day before), and one no-show fee."""
    clients = [
        make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000),
        make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=9000),
        make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=12500),
        make_client(benefits={"copay_cents": 2500}),
        make_client(benefits={"copay_cents": 4000}),
        make_client(benefits={"coinsurance_percent": 20, "deductible_cents": 0}),
        make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=11000),  # never saves a card
    ]
    for client in clients[:-1]:
        save_card(client, CARD_OK, stripe_server, now=SEPTEMBER_30)
    PolicyAcknowledgment.objects.create(client=clients[1], policy_version=practice.cancellation_policy_version,
                                        acknowledged_at=SEPTEMBER_30, source="portal")
    practice.charge_timing = "immediate"
    practice.save()
    for day in range(1, 32):
        if day == 15:
            practice.charge_timing = "weekly"
            practice.weekly_batch_weekday = 4
            practice.weekly_batch_hour = 9
            practice.pre_charge_notice_hours = 24
            practice.weekly_one_payment = True
            practice.save()
        for n, client in enumerate(clients):
            if (day + n) % 7 != 0:
                continue
            starts = dt.datetime(2026, 10, day, 9 + n, 0, tzinfo=NEW_YORK)
            appointment = make_appointment(client, starts_at=starts)
            status = AppointmentStatus.NO_SHOW if (day, n) == (20, 1) else AppointmentStatus.COMPLETED
            appointment_set_status(appointment=appointment, status=status, now=starts + HOUR, actor="api:ehr")
    return clients


def moments() -> list[dt.datetime]:
    """Every moment a charge of the month falls due (its notice, its charge), as a tick each minute meets them."""
    found: set[dt.datetime] = set()
    for notice, charge in Charge.objects.values_list("notice_due_at", "scheduled_for"):
        found.update(m for m in (notice, charge) if m is not None)
    return sorted(found)


def paid(charge: Charge) -> tuple[int, dt.datetime | None]:
    if charge.status != ChargeStatus.SUCCEEDED:
        return 0, None
    event = ChargeEvent.objects.filter(charge=charge, to_status=ChargeStatus.SUCCEEDED).order_by("at").first()
    return charge.amount_cents + charge.prepaid_cents, event.at if event else None


def test_a_months_preview_is_what_a_real_run_of_the_month_charges(
        practice: Practice, make_client: Callable[..., Client], make_appointment: Callable[..., Appointment],
        stripe_server: FakeStripe) -> None:
    month_of_sessions(practice, make_client, make_appointment, stripe_server)
    charges = list(Charge.objects.order_by("pk"))
    assert len(charges) >= 25
    assert {c.kind for c in charges} == {ChargeKind.COPAY, ChargeKind.SESSION_FEE, ChargeKind.NO_SHOW_FEE}
    requests_before, emails_before = len(stripe_server.requests()), len(mail.outbox)

    report = preview_report(start=dt.date(2026, 10, 1), end=dt.date(2026, 10, 31), now=NOVEMBER_20)

    # The replay left nothing behind and reached no one.
    assert len(stripe_server.requests()) == requests_before
    assert len(mail.outbox) == emails_before
    assert not PaymentAttempt.objects.exists()
    assert [(c.pk, c.status) for c in Charge.objects.order_by("pk")] == [(c.pk, c.status) for c in charges]
    assert {line.charge_id for line in report.lines} == {c.pk for c in charges}

    for moment in moments():
        if moment <= NOVEMBER_20:
            tick_run(now=moment)

    real = {c.pk: paid(c) for c in Charge.objects.exclude(kind=ChargeKind.WEEKLY_PAYMENT)}
    previewed = {line.charge_id: (line.would_cents, line.would_at) for line in report.lines}
    assert previewed == real
    assert report.totals["would"] == sum(cents for cents, _ in real.values()) > 0
    # The client without a card is held, in the preview as for real; all else was collected.
    held = [line for line in report.lines if "Client7" in line.client]
    assert held and all(line.would_cents == 0 and line.would_status == "due (no card on file)" for line in held)
    assert report.totals["collected"] == 0
    assert report.totals["unpaid_would_collect"] == report.totals["would"]
    # Weekly sessions name the notice that went before; sessions charged at once had none.
    weekly = [line for line in report.lines if line.session_at >= dt.datetime(2026, 10, 15, tzinfo=NEW_YORK)
              and line.would_cents and line.kind != "No-show fee"]
    assert weekly and all(line.notice and line.notice_at < line.would_at for line in weekly)  # type: ignore[operator]
    early = [line for line in report.lines if line.session_at < dt.datetime(2026, 10, 15, tzinfo=NEW_YORK)]
    assert early and not any(line.notice for line in early)
    [fee] = [line for line in report.lines if line.kind == "No-show fee"]
    assert fee.notice and fee.notice_at < fee.would_at  # type: ignore[operator]
    median, average = report.days("would")
    assert median is not None and average is not None and 0 < median < 14

    # Previewed again once really charged: what was collected is what the portal would have collected.
    again = preview_report(start=dt.date(2026, 10, 1), end=dt.date(2026, 10, 31), now=NOVEMBER_20)
    assert {line.charge_id: (line.collected_cents, line.collected_at) for line in again.lines} == real
    assert again.totals["collected"] == again.totals["would"] == report.totals["would"]
    assert again.totals["unpaid_would_collect"] == 0 and again.days("collected") == report.days("would")


def test_a_preview_tick_reaches_neither_stripe_nor_a_client(
        practice: Practice, self_pay_client: Client, make_appointment: Callable[..., Appointment],
        stripe_server: FakeStripe) -> None:
    practice.charge_timing, practice.charge_delay_hours, practice.pre_charge_notice_hours = "delayed", 24, 2
    practice.charging_preview = True
    practice.save()
    save_card(self_pay_client, CARD_OK, stripe_server, now=SEPTEMBER_30)
    stripe_server.wipe()
    mail.outbox.clear()
    starts = dt.datetime(2026, 10, 5, 10, tzinfo=NEW_YORK)
    appointment = make_appointment(self_pay_client, starts_at=starts)
    appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=starts + HOUR,
                           actor="api:ehr")
    [charge] = Charge.objects.all()

    for at in (charge.notice_due_at, charge.scheduled_for, charge.scheduled_for + DAY):
        done = tick_run(now=at)  # type: ignore[arg-type]
        assert "payment_attempts" not in done and "emails_sent" not in done

    assert stripe_server.requests() == []
    assert mail.outbox == []
    charge.refresh_from_db()
    assert (charge.status, charge.hold_reason, charge.attempts) == (ChargeStatus.DUE, "", 0)
    assert not PaymentAttempt.objects.exists()
    [notice] = OutboundEmail.objects.filter(template="pre_charge_notice")
    assert notice.status == EmailStatus.PREVIEW  # drafted, to read in the admin
    assert not OutboundEmail.objects.exclude(status=EmailStatus.PREVIEW).exists()


def test_switching_preview_off_charges_only_later_sessions_and_staff_may_charge_earlier_ones(
        practice: Practice, self_pay_client: Client, make_appointment: Callable[..., Appointment],
        stripe_server: FakeStripe) -> None:
    practice.charge_timing, practice.charge_delay_hours, practice.pre_charge_notice_hours = "delayed", 24, 2
    practice.charging_preview = True
    practice.save()
    save_card(self_pay_client, CARD_OK, stripe_server, now=SEPTEMBER_30)
    mail.outbox.clear()

    def session(starts: dt.datetime) -> Charge:
        appointment = make_appointment(self_pay_client, starts_at=starts)
        appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=starts + HOUR,
                               actor="api:ehr")
        return Charge.objects.get(appointment=appointment)

    monday = dt.datetime(2026, 10, 5, 10, tzinfo=NEW_YORK)
    due_already = session(monday)
    tick_run(now=monday + 2 * DAY)  # due, not charged: preview
    not_due_yet = session(monday + 2 * DAY)
    switch = monday + 2 * DAY + 3 * HOUR

    assert charging_preview_set(on=False, now=switch, actor="staff:ana") == 2
    later = session(monday + 3 * DAY)
    assert later.notice_due_at is not None
    for at in sorted({later.notice_due_at, later.scheduled_for, not_due_yet.scheduled_for, switch + 5 * DAY}):
        tick_run(now=at)

    for charge in (due_already, not_due_yet, later):
        charge.refresh_from_db()
    assert (due_already.status, due_already.hold_reason) == (ChargeStatus.DUE, PREVIEW_HOLD)
    assert (not_due_yet.status, not_due_yet.hold_reason) == (ChargeStatus.DUE, PREVIEW_HOLD)
    assert later.status == ChargeStatus.SUCCEEDED
    # The later session was told first; nothing drafted in preview went out afterwards.
    assert [m.extra_headers["X-Portal-Email"] for m in mail.outbox] == ["pre_charge_notice", "receipt"]
    assert OutboundEmail.objects.filter(status=EmailStatus.PREVIEW).count() == 1
    assert len(stripe_server.charges()) == 1

    released_at = switch + 6 * DAY
    preview_charges_release(charges=[due_already], now=released_at, actor="staff:ana")
    with pytest.raises(NothingFromPreview):
        preview_charges_release(charges=[later], now=released_at, actor="staff:ana")
    due_already.refresh_from_db()
    assert due_already.status == ChargeStatus.SCHEDULED and due_already.scheduled_for == released_at + 2 * HOUR
    tick_run(now=released_at)
    assert mail.outbox[-1].extra_headers["X-Portal-Email"] == "pre_charge_notice"
    tick_run(now=released_at + 2 * HOUR)
    due_already.refresh_from_db()
    not_due_yet.refresh_from_db()
    assert due_already.status == ChargeStatus.SUCCEEDED
    assert not_due_yet.status == ChargeStatus.DUE  # still waits for staff


def test_the_command_prints_the_report_and_refuses_a_bad_period(
        practice: Practice, make_client: Callable[..., Client], make_appointment: Callable[..., Appointment]) -> None:
    # The replay never reaches Stripe: card ids it could not know are charged just the same.
    with_card = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000,
                            stripe_customer_id="cus_unknown", card_payment_method_id="pm_unknown",
                            card_brand="visa", card_last4="4242", card_exp_month=12, card_exp_year=2030)
    without_card = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=9000)
    starts = dt.datetime(2026, 10, 5, 10, tzinfo=NEW_YORK)
    for client in (with_card, without_card):
        appointment_set_status(appointment=make_appointment(client, starts_at=starts),
                               status=AppointmentStatus.COMPLETED, now=starts + HOUR, actor="api:ehr")
    InsurancePayment.objects.create(client=without_card, appointment=Appointment.objects.get(clients=without_card),
                                    allowed_cents=9000, paid_cents=8000, patient_responsibility_cents=1000,
                                    paid_on=dt.date(2026, 10, 20), reference="EOB-1")
    out = StringIO()
    call_command("billing_preview", "--from", "2026-10-01", "--to", "2026-10-31", stdout=out)
    text = out.getvalue()
    assert "would have collected $140.00" in text and "due (no card on file)" in text
    assert "insurers paid (EOB lines): $80.00" in text
    assert "1 charge(s), $140.00" in text
    assert not PaymentAttempt.objects.exists()
    assert set(Charge.objects.values_list("status", flat=True)) == {ChargeStatus.SCHEDULED}
    for bad in (["--from", "2026-10-31", "--to", "2026-10-01"], ["--from", "October", "--to", "2026-10-31"]):
        with pytest.raises(CommandError):
            call_command("billing_preview", *bad, stdout=StringIO())
    with pytest.raises(PeriodInvalid):
        preview_report(start=dt.date(2026, 10, 1), end=dt.date(2026, 10, 31), now=starts)
    with pytest.raises(RuntimeError):  # a replay outside a transaction to roll back would be real
        tick_run(now=starts, replay=True)


def practice_form(http: HttpClient) -> dict[str, Any]:
    """The practice settings form as the page shows it."""
    form = http.get(reverse("admin:billing_practice_change", args=[Practice.SINGLETON_ID])).context["adminform"].form
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is None or value is False:
            continue
        data[name] = "on" if value is True else value
    return data


def test_staff_switch_preview_and_read_the_report_on_the_practice_page(
        practice: Practice, billing_manager: Any, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    http = HttpClient()
    http.force_login(billing_manager)
    page = reverse("admin:billing_practice_change", args=[Practice.SINGLETON_ID])
    assert http.post(page, {**practice_form(http), "charging_preview": "on"}).status_code == 302
    assert Practice.load().charging_preview is True
    client = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000,
                         stripe_customer_id="cus_unknown", card_payment_method_id="pm_unknown", card_brand="visa",
                         card_last4="4242", card_exp_month=12, card_exp_year=2030)
    starts = dt.datetime(2026, 10, 5, 10, tzinfo=NEW_YORK)
    appointment_set_status(appointment=make_appointment(client, starts_at=starts),
                           status=AppointmentStatus.COMPLETED, now=starts + HOUR, actor="api:ehr")

    report = http.get(reverse("admin:billing_practice_preview"), {"start": "2026-10-01", "end": "2026-10-31"})
    assert report.status_code == 200
    text = report.content.decode()
    assert "The portal would have collected</th><td>$140.00" in text and "preview: charging is off" in text
    for start, end, error in (("2026-10-31", "2026-10-01", "The period ends before it starts."),
                              ("2026-01-01", "2026-10-31", "at most 92 days"),
                              ("2099-01-01", "2099-01-31", "must end before today"),
                              ("October", "2026-10-31", "Enter a valid date.")):
        answer = http.get(reverse("admin:billing_practice_preview"), {"start": start, "end": end})
        assert answer.status_code == 200 and error in answer.content.decode()

    data = practice_form(http)
    data.pop("charging_preview")
    answer = http.post(page, data, follow=True)
    assert "1 charge of earlier sessions wait" in answer.content.decode()
    [charge] = Charge.objects.all()
    assert (charge.status, charge.hold_reason) == (ChargeStatus.DUE, PREVIEW_HOLD)
    listing = reverse("admin:billing_charge_changelist")
    form = {"action": "release_preview", "_selected_action": [charge.pk]}
    assert "Charge sessions from preview" in http.post(listing, form).content.decode()
    http.post(listing, {**form, "apply": "yes"})
    charge.refresh_from_db()
    assert (charge.status, charge.hold_reason, charge.notice_sent_at) == (ChargeStatus.SCHEDULED, "", None)
