"""The billing schedule: charges follow their appointment until money moves (docs/product.md, workflows 4, 5).

``appointment_sync_charges`` is the one place that decides, for every participant, whether a
session charge should exist, for how much and when. Everything that changes an appointment (the
API, CSV imports, the admin) calls it afterwards; it is idempotent, so calling it twice is harmless.
Once money has moved, a change is posted as a ledger adjustment and shown to staff, never an edit.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from billing.audit.bulk import BulkAudit, audit_bulk_created
from billing.bulk import instances_insert, instances_send
from billing.errors import Refused
from billing.models import (
    CANCELABLE_STATUSES,
    OPEN_STATUSES,
    Appointment,
    AppointmentEvent,
    AppointmentStatus,
    Charge,
    ChargeEvent,
    ChargeKind,
    ChargeStatus,
    ChargeTiming,
    ChargeTrigger,
    Client,
    LedgerEntry,
    LedgerKind,
    Practice,
    ReviewKind,
)
from billing.money import format_cents
from billing.services.charges import charge_event_build, charge_event_record, charge_transition
from billing.services.estimates import estimate_guard_enforce
from billing.services.ledger import ledger_entry_build, ledger_owed_for_charge, ledger_post
from billing.services.notify import email_enqueue, emails_enqueue
from billing.services.outbound import FEE_WAIVED, charge_event_emit
from billing.services.payments import payment_withdraw_after_commit
from billing.services.pricing import NeedsReview, Share, pricing_lookups, pricing_preloaded, share_compute
from billing.services.receipts import charges_email, service_descriptions
from billing.services.review import review_close_stale, review_open
from billing.states import APPOINTMENT_TRANSITIONS, check_transition

SESSION_KINDS = (ChargeKind.COPAY, ChargeKind.SESSION_FEE)
FEE_FOR_STATUS = {AppointmentStatus.NO_SHOW: ChargeKind.NO_SHOW_FEE,
                  AppointmentStatus.LATE_CANCEL: ChargeKind.LATE_CANCEL_FEE}
# Statuses in which no money has moved and no payment is waiting on the client: the charge may be re-priced.
NOT_BILLED = (AppointmentStatus.NO_SHOW, AppointmentStatus.LATE_CANCEL, AppointmentStatus.CANCELED)


def session_is_billable(appointment: Appointment, practice: Practice) -> bool:
    """Has the appointment reached the practice's trigger for charging the session?"""
    return status_is_billable(appointment.status, appointment.note_signed_at, practice)


def status_is_billable(status: str, note_signed_at: dt.datetime | None, practice: Practice) -> bool:
    """``session_is_billable`` for an appointment known by its status and note time (one not built yet)."""
    if practice.charge_trigger == ChargeTrigger.NOTE_SIGNED:
        return note_signed_at is not None and status not in NOT_BILLED
    return status == AppointmentStatus.COMPLETED


def charge_due_at(practice: Practice, triggered_at: dt.datetime) -> dt.datetime:
    """When a charge triggered at ``triggered_at`` is taken, under the practice's timing policy."""
    if practice.charge_timing == ChargeTiming.IMMEDIATE:
        return triggered_at
    if practice.charge_timing == ChargeTiming.DELAYED:
        return triggered_at + dt.timedelta(hours=practice.charge_delay_hours)
    # Weekly batch: the next weekday/hour in the practice's own zone, strictly after the trigger.
    zone = practice.zone
    local = triggered_at.astimezone(zone)
    day = local.date() + dt.timedelta(days=(practice.weekly_batch_weekday - local.weekday()) % 7)
    due = dt.datetime.combine(day, dt.time(practice.weekly_batch_hour), tzinfo=zone)
    if due <= local:
        due = dt.datetime.combine(day + dt.timedelta(days=7), dt.time(practice.weekly_batch_hour), tzinfo=zone)
    return due.astimezone(dt.UTC)


def notice_due_at(practice: Practice, due: dt.datetime, now: dt.datetime) -> dt.datetime | None:
    """The pre-charge notice goes out the set hours before the charge, or at once if that moment passed."""
    if practice.pre_charge_notice_hours == 0 or practice.charge_timing == ChargeTiming.IMMEDIATE:
        return None
    return max(now, due - dt.timedelta(hours=practice.pre_charge_notice_hours))


def earliest_charge_at(practice: Practice, now: dt.datetime) -> dt.datetime:
    """A charge decided at ``now`` is never taken sooner than the notice's lead time (when the practice
    sends notices), whatever the timing policy says: the client is always told first."""
    if practice.pre_charge_notice_hours == 0 or practice.charge_timing == ChargeTiming.IMMEDIATE:
        return now
    return now + dt.timedelta(hours=practice.pre_charge_notice_hours)


def charge_at(practice: Practice, now: dt.datetime) -> dt.datetime:
    """When a charge triggered now is taken: the timing policy's moment, never before the notice's lead
    time. A weekly batch too close for the notice is the next one: the batch stays one card run a week."""
    due, earliest = charge_due_at(practice, now), earliest_charge_at(practice, now)
    if due >= earliest:
        return due
    if practice.charge_timing == ChargeTiming.WEEKLY:
        return charge_due_at(practice, earliest - dt.timedelta(microseconds=1))
    return earliest


def service_date(appointment: Appointment, practice: Practice) -> dt.date:
    return appointment.starts_at.astimezone(practice.zone).date()


def appointment_set_status(*, appointment: Appointment, status: str, now: dt.datetime, actor: str,
                           user: User | None = None, reason: str = "") -> Appointment:
    """Move an appointment to ``status``, record the move, and let its charges follow."""
    if status != appointment.status:
        check_transition(APPOINTMENT_TRANSITIONS, appointment.status, status)
        with transaction.atomic():
            from_status = appointment.status
            appointment.status = status
            appointment.save(update_fields=["status", "updated_at"])
            appointment_event_record(appointment=appointment, from_status=from_status, now=now, actor=actor,
                                     user=user, reason=reason)
    appointment_sync_charges(appointment=appointment, now=now, actor=actor, user=user)
    return appointment


def appointment_event_record(*, appointment: Appointment, from_status: str, now: dt.datetime, actor: str,
                             user: User | None = None, reason: str = "") -> AppointmentEvent:
    return AppointmentEvent.objects.create(appointment=appointment, from_status=from_status,
                                           to_status=appointment.status, at=now, actor=actor, user=user,
                                           reason=reason[:300])


def appointment_sync_charges(*, appointment: Appointment, now: dt.datetime, actor: str,
                             user: User | None = None) -> None:
    """Bring every participant's session charge in line with the appointment as it is now."""
    practice = Practice.load()
    with transaction.atomic():
        # Lock the appointment so two pushes about the same session are applied one after the other.
        appointment = Appointment.objects.select_for_update().get(pk=appointment.pk)
        participant_ids = set(appointment.participants.values_list("client_id", flat=True))
        charges = {c.client_id: c for c in Charge.objects.select_for_update().filter(
            appointment=appointment, kind__in=SESSION_KINDS)}
        billable = session_is_billable(appointment, practice)
        clients = Client.objects.filter(pk__in=participant_ids | set(charges)).order_by("pk")
        for client in clients:
            charge = charges.get(client.pk)
            if billable and client.pk in participant_ids:
                _charge_follow(appointment, client, charge, practice, now, actor, user)
            else:
                review_close_stale(kind=ReviewKind.PRICING, client=client, appointment=appointment, now=now,
                                   note="The session is no longer billable.")
                if charge is not None:
                    why = ("removed from the session" if client.pk not in participant_ids
                           else f"session is now {appointment.get_status_display().lower()}")
                    _charge_withdraw(charge, appointment, practice, now, actor, user, why)
        _fees_follow(appointment, participant_ids, practice, now, actor, user)


def _fees_follow(appointment: Appointment, participant_ids: set[int], practice: Practice, now: dt.datetime,
                 actor: str, user: User | None) -> None:
    """No-show and late-cancel fees (workflow 8): only where the client acknowledged the current policy.

    A fee waits ``fee_review_hours`` before it is charged, so staff can waive it; a status corrected
    before then cancels it.
    """
    fees = {(c.client_id, c.kind): c for c in Charge.objects.select_for_update().filter(
        appointment=appointment, kind__in=FEE_FOR_STATUS.values())}
    wanted = FEE_FOR_STATUS.get(AppointmentStatus(appointment.status))
    for (client_id, kind), charge in fees.items():
        if kind != wanted or client_id not in participant_ids:
            why = ("removed from the session" if client_id not in participant_ids
                   else f"session is now {appointment.get_status_display().lower()}")
            _charge_withdraw(charge, appointment, practice, now, actor, user, why)
    for client in Client.objects.filter(pk__in=participant_ids).order_by("pk"):
        if wanted is None:
            review_close_stale(kind=ReviewKind.FEE_NO_ACK, client=client, appointment=appointment, now=now,
                               note="The session no longer carries a fee.")
            continue
        fee = fees.get((client.pk, wanted))
        if fee is not None:
            if fee.status == ChargeStatus.CANCELED and not fee_was_waived(fee) and not fee.canceled_by_staff:
                _fee_revive(fee, appointment, practice, now, actor, user)
            continue
        _fee_create(appointment, client, wanted, practice, now, actor, user)


def fee_was_waived(charge: Charge) -> bool:
    return charge.ledger_entries.filter(kind=LedgerKind.WAIVER).exists()


def _fee_create(appointment: Appointment, client: Client, kind: str, practice: Practice, now: dt.datetime,
                actor: str, user: User | None) -> None:
    amount = practice.no_show_fee_cents if kind == ChargeKind.NO_SHOW_FEE else practice.late_cancel_fee_cents
    label = ChargeKind(kind).label
    if amount == 0:
        return
    version = practice.cancellation_policy_version
    acknowledgment = client.policy_acknowledgments.filter(policy_version=version).first()
    if acknowledgment is None:
        review_open(kind=ReviewKind.FEE_NO_ACK, client=client, appointment=appointment, now=now,
                    reason=f"{label} not charged: the client has not acknowledged the current cancellation "
                           f"policy (version {version}).")
        return
    review_close_stale(kind=ReviewKind.FEE_NO_ACK, client=client, appointment=appointment, now=now,
                       note="The client acknowledged the current policy.")
    acknowledged = acknowledgment.acknowledged_at.astimezone(practice.zone).date()
    due = max(now + dt.timedelta(hours=practice.fee_review_hours), earliest_charge_at(practice, now))
    charge = Charge.objects.create(
        client=client, appointment=appointment, kind=kind, amount_cents=amount, status=ChargeStatus.SCHEDULED,
        scheduled_for=due, notice_sent_at=now, breakdown=[
            {"label": f"{label} under the cancellation policy (version {version}) you acknowledged on "
                      f"{acknowledged:%B} {acknowledged.day}, {acknowledged.year}", "amount_cents": amount},
            {"label": "You owe", "amount_cents": amount}])
    charge_event_record(charge=charge, from_status="", now=now, actor=actor, user=user,
                        reason=f"session is {appointment.get_status_display().lower()}")
    ledger_post(client=client, kind=LedgerKind.FEE, amount_cents=amount,
                occurred_on=service_date(appointment, practice), now=now, actor=actor, user=user,
                appointment=appointment, charge=charge, memo=label)
    email_enqueue(key=f"fee:charge:{charge.pk}", client=client, template="fee_notice", now=now, context={
        "charge": charge, "amount": format_cents(amount), "label": label, "charge_at": due,
        "session_date": service_date(appointment, practice), "policy_version": version,
        "acknowledged_at": acknowledgment.acknowledged_at})


def _fee_revive(charge: Charge, appointment: Appointment, practice: Practice, now: dt.datetime, actor: str,
                user: User | None) -> None:
    charge_transition(charge=charge, to_status=ChargeStatus.SCHEDULED, now=now, actor=actor, user=user,
                      reason="fee applies again",
                      scheduled_for=max(now + dt.timedelta(hours=practice.fee_review_hours),
                                        earliest_charge_at(practice, now)))
    ledger_follow_charge(charge, appointment, charge.amount_cents, practice, now, actor, user, "fee applies again")


class WaiveNotAllowed(Refused):
    pass


def fee_waive(*, charge: Charge, reason: str, now: dt.datetime, user: User) -> Charge:
    """Staff waive a no-show or late-cancel fee before it is charged; after, it is a refund."""
    if not reason.strip():
        raise WaiveNotAllowed("Give a reason for waiving the fee.")
    with transaction.atomic():
        charge = Charge.objects.select_for_update(of=("self",)).select_related("appointment").get(pk=charge.pk)
        if charge.kind not in FEE_FOR_STATUS.values():
            raise WaiveNotAllowed("Only no-show and late-cancel fees can be waived.")
        if charge.status not in CANCELABLE_STATUSES:
            raise WaiveNotAllowed(f"This fee is {charge.status_phrase}: refund it instead.")
        actor = f"staff:{user.get_username()}"
        payment_withdraw_after_commit(charge)
        charge_transition(charge=charge, to_status=ChargeStatus.CANCELED, now=now, actor=actor, user=user,
                          reason=f"waived: {reason.strip()}")
        charge_event_emit(charge=charge, type=FEE_WAIVED, now=now)
        assert charge.appointment is not None
        ledger_follow_charge(charge, charge.appointment, 0, Practice.load(), now, actor, user,
                       f"waived: {reason.strip()}", kind=LedgerKind.WAIVER)
    return charge


def _charge_follow(appointment: Appointment, client: Client, charge: Charge | None, practice: Practice,
                   now: dt.datetime, actor: str, user: User | None) -> None:
    try:
        share = share_compute(appointment=appointment, client=client, existing=charge)
    except NeedsReview as problem:
        review_open(kind=ReviewKind.PRICING, client=client, appointment=appointment, reason=str(problem),
                    now=now, charge=charge)
        if charge is not None:
            _charge_withdraw(charge, appointment, practice, now, actor, user, "needs review: " + str(problem))
        return
    review_close_stale(kind=ReviewKind.PRICING, client=client, appointment=appointment, now=now,
                       note="Priced once the missing information arrived.")

    if charge is None:
        if share.amount_cents == 0:
            return  # Nothing owed (e.g. a $0 plan category): nothing to collect.
        _charge_create(appointment, client, share, practice, now, actor, user)
    elif charge.status == ChargeStatus.CANCELED:
        if share.amount_cents and not charge.canceled_by_staff:
            _charge_revive(charge, appointment, share, practice, now, actor, user)
    elif charge.status in OPEN_STATUSES:
        if share.amount_cents == 0:
            _charge_withdraw(charge, appointment, practice, now, actor, user, "nothing is owed now")
        else:
            _charge_reprice(charge, appointment, share, practice, now, actor, user)
    else:
        _adjust_after_money_moved(charge, appointment, share.amount_cents, practice, now, actor, user,
                                  f"now computes {format_cents(share.amount_cents)}")


def charge_build(*, appointment: Appointment, client: Client, share: Share, practice: Practice,
                 now: dt.datetime) -> Charge:
    """The new session charge for ``share``, not saved yet: its amount, when it is taken and when the
    client is told. Every way a session charge is created builds it here (one by one in
    ``_charge_create``, a batch's new sessions in ``new_sessions_price``), so a rule about new charges
    belongs here once."""
    due = charge_at(practice, now)
    return Charge(
        client=client, appointment=appointment, kind=share.kind, amount_cents=share.amount_cents,
        insurance_cents=share.insurance_cents, deductible_applied_cents=share.deductible_applied_cents,
        breakdown=share.breakdown(), status=ChargeStatus.SCHEDULED, scheduled_for=due,
        notice_due_at=notice_due_at(practice, due, now))


CHARGE_CREATED = "session billable"


def _charge_create(appointment: Appointment, client: Client, share: Share, practice: Practice,
                   now: dt.datetime, actor: str, user: User | None) -> Charge:
    charge = charge_build(appointment=appointment, client=client, share=share, practice=practice, now=now)
    charge.save(force_insert=True)
    charge_event_record(charge=charge, from_status="", now=now, actor=actor, user=user, reason=CHARGE_CREATED)
    ledger_post(client=client, kind=LedgerKind.SESSION_CHARGE, amount_cents=share.amount_cents,
                occurred_on=service_date(appointment, practice), now=now, actor=actor, user=user,
                appointment=appointment, charge=charge, memo=share.lines[0].label)
    estimate_guard_enforce(charge=charge, now=now, actor=actor, user=user, practice=practice)
    return charge


@dataclass
class NewSessionCharges:
    """What billing a batch's new sessions writes (``new_sessions_price``), before it is written
    (``new_session_charges_write``): the charges, their status events and ledger lines, and the review
    items to open."""

    charges: list[Charge] = field(default_factory=list)
    events: list[ChargeEvent] = field(default_factory=list)
    entries: list[LedgerEntry] = field(default_factory=list)
    reviews: list[tuple[Client, Appointment, str]] = field(default_factory=list)


def new_sessions_price(*, sessions: Sequence[tuple[Appointment, Sequence[Client]]], practice: Practice,
                       now: dt.datetime, actor: str) -> NewSessionCharges:
    """``appointment_sync_charges`` for many new sessions, all at the billing trigger and in a status that
    carries no fee, none with a charge or review item yet (the events batch's new completed sessions),
    decided here and written by ``new_session_charges_write``: the same charges, status events, ledger
    lines, review items and audit entries as one by one, in a few statements for the lot.

    The decisions are the one-by-one path's own: each participant (in id order) priced by
    ``share_compute`` (its look-ups loaded once for the lot, ``pricing_lookups``), a ``NeedsReview``
    becoming a ``review_open``, each charge built by ``charge_build``; the deductible a charge applies
    counts for the client's next session in the lot, as it would one by one. For a session just
    created, the sync's other steps (closing stale review items, withdrawing charges, fees) have
    nothing to act on. Only reads: the appointments need not be written yet, but need their ids."""
    moment = timezone.now()  # the charges' created_at, as save() would stamp it
    participant_counts = {appointment.pk: len(clients) for appointment, clients in sessions}
    client_ids = {client.pk for _, clients in sessions for client in clients}
    lookups = pricing_lookups(client_ids=client_ids, participant_counts=participant_counts, zone=practice.zone)
    out = NewSessionCharges()
    with pricing_preloaded(lookups):
        for appointment, clients in sessions:
            for client in sorted(clients, key=lambda c: c.pk):
                try:
                    share = share_compute(appointment=appointment, client=client)
                except NeedsReview as problem:
                    out.reviews.append((client, appointment, str(problem)))
                    continue
                if share.amount_cents == 0:
                    continue
                charge = charge_build(appointment=appointment, client=client, share=share, practice=practice, now=now)
                charge.created_at = charge.updated_at = moment
                out.charges.append(charge)
                out.events.append(charge_event_build(charge=charge, from_status="", now=now, actor=actor,
                                                     reason=CHARGE_CREATED))
                out.entries.append(ledger_entry_build(
                    client=client, kind=LedgerKind.SESSION_CHARGE, amount_cents=share.amount_cents,
                    occurred_on=service_date(appointment, practice), now=now, actor=actor, appointment=appointment,
                    charge=charge, memo=share.lines[0].label))
                if charge.deductible_applied_cents:
                    lookups.deductible_charges.setdefault(client.pk, []).append(
                        (0, moment, charge.deductible_applied_cents))
    return out


def new_session_charges_write(billing: NewSessionCharges, *, now: dt.datetime, audit: BulkAudit,
                              cursor: psycopg.Cursor[Any] | None = None, charge_ids: Sequence[int] = ()) -> None:
    """Write what ``new_sessions_price`` decided, once the appointments are written (or sent before, on
    the same ``cursor``): at once, or sent on ``cursor`` (pipeline mode) with the charges' ids reserved
    (``charge_ids``, as many as charges). The review items are opened through ``review_open``, after."""
    if cursor is None:
        instances_insert(billing.charges, audit.db)
    else:
        for charge, pk in zip(billing.charges, charge_ids, strict=True):
            charge.pk = pk
    for event, entry in zip(billing.events, billing.entries, strict=True):  # their charges have ids now
        event.charge_id = entry.charge_id = event.charge.pk
    if cursor is None:
        instances_insert(billing.events, audit.db)
        instances_insert(billing.entries, audit.db)
    else:
        for rows in (billing.charges, billing.events, billing.entries):
            instances_send(rows, audit.db, cursor)
    audit_bulk_created(billing.charges, audit, cursor)
    for client, appointment, reason in billing.reviews:
        review_open(kind=ReviewKind.PRICING, client=client, appointment=appointment, reason=reason, now=now)


def _charge_revive(charge: Charge, appointment: Appointment, share: Share, practice: Practice,
                   now: dt.datetime, actor: str, user: User | None) -> None:
    due = charge_at(practice, now)
    charge_transition(charge=charge, to_status=ChargeStatus.SCHEDULED, now=now, actor=actor, user=user,
                      reason="session billable again", **_priced_fields(share), scheduled_for=due,
                      notice_due_at=notice_due_at(practice, due, now), notice_sent_at=None)
    ledger_follow_charge(charge, appointment, share.amount_cents, practice, now, actor, user, "session billable again")
    estimate_guard_enforce(charge=charge, now=now, actor=actor, user=user, practice=practice)


def _charge_reprice(charge: Charge, appointment: Appointment, share: Share, practice: Practice,
                    now: dt.datetime, actor: str, user: User | None) -> None:
    fields = _priced_fields(share)
    # Part may already be paid on the portal: the charge collects only the rest; the ledger keeps the share.
    fields["amount_cents"] = max(share.amount_cents - charge.prepaid_cents, 0)
    if all(getattr(charge, name) == value for name, value in fields.items()):
        return
    old_amount = charge.amount_cents
    for name, value in fields.items():
        setattr(charge, name, value)
    update = [*fields, "updated_at"]
    if old_amount != charge.amount_cents and charge.notice_sent_at is not None:
        # The client was told another amount: tell them again now, and give the new notice its full lead time.
        charge.notice_sent_at = None
        charge.notice_due_at = now
        update += ["notice_sent_at", "notice_due_at"]
        if charge.status == ChargeStatus.SCHEDULED:
            charge.scheduled_for = max(charge.scheduled_for, earliest_charge_at(practice, now))
            update.append("scheduled_for")
    if old_amount != charge.amount_cents and charge.status == ChargeStatus.FAILED:
        # A declined charge the client was told of at another amount: tell them the new one before any retry
        # (with no retry planned, the notice waits for one: a new card, see cards.card_save_from_setup_intent).
        if charge.next_retry_at is not None:
            failed_charge_renotify(charge=charge, practice=practice, now=now)
        else:
            charge.notice_sent_at = None
        update += ["notice_sent_at", "notice_due_at", "next_retry_at"]
    charge.save(update_fields=update)
    charge_event_record(charge=charge, from_status=charge.status, now=now, actor=actor, user=user,
                        reason=f"re-priced from {format_cents(old_amount)}")
    ledger_follow_charge(charge, appointment, share.amount_cents, practice, now, actor, user,
                   f"re-priced from {format_cents(old_amount)}")
    if old_amount != charge.amount_cents:
        estimate_guard_enforce(charge=charge, now=now, actor=actor, user=user, practice=practice)


def failed_charge_renotify(*, charge: Charge, practice: Practice, now: dt.datetime) -> None:
    """``failed_charges_renotify`` for one charge."""
    failed_charges_renotify(charges=[charge], practice=practice, now=now)


def failed_charges_renotify(*, charges: Sequence[Charge], practice: Practice, now: dt.datetime) -> None:
    """Email declined charges' amounts now, before they are retried (one notice per client and retry moment,
    listing its sessions); each retry waits the notice's lead time from now. The caller saves
    ``notice_sent_at``, ``notice_due_at`` and ``next_retry_at``."""
    earliest = earliest_charge_at(practice, now)
    for charge in charges:
        charge.next_retry_at = max(charge.next_retry_at or earliest, earliest)
    if earliest == now:
        return  # the practice sends no notices (immediate timing, or no lead time)
    for charge in charges:
        charge.notice_sent_at = now
        charge.notice_due_at = now
    # Keyed by the moment it is told too: the same amount may be announced again before another retry.
    notices_enqueue(charges=charges, now=now, practice=practice, retry=True)


def notices_enqueue(*, charges: Sequence[Charge], now: dt.datetime, practice: Practice, retry: bool = False) -> int:
    """The pre-charge notices for these charges: one email per client and charge moment (their
    ``scheduled_for``, or with ``retry`` their ``next_retry_at``), listing each session with its amount and the
    total. Each notice records the charges and amounts it announced (``OutboundEmail.charge_amounts``), so
    "told before charged" holds per charge. The caller records ``notice_sent_at``."""
    batches: dict[tuple[int, dt.datetime], list[Charge]] = defaultdict(list)
    for charge in charges:
        charge_at = charge.next_retry_at if retry else charge.scheduled_for
        assert charge_at is not None
        batches[(charge.client_id, charge_at)].append(charge)
    services = service_descriptions(list(charges))
    emails = []
    for (client_id, charge_at), batch in batches.items():
        prefix = f"notice:client:{client_id}:at:{int(charge_at.timestamp())}"
        if retry:
            prefix += f":told:{int(now.timestamp())}"
        emails.append(charges_email(prefix=prefix, charges=batch, template="pre_charge_notice", practice=practice,
                                    context={"charge_at": charge_at}, services=services))
    return emails_enqueue(emails, now=now, practice=practice)


def _charge_withdraw(charge: Charge, appointment: Appointment, practice: Practice, now: dt.datetime,
                     actor: str, user: User | None, why: str) -> None:
    if charge.status == ChargeStatus.CANCELED:
        return
    if charge.status in CANCELABLE_STATUSES:
        payment_withdraw_after_commit(charge)
        charge_transition(charge=charge, to_status=ChargeStatus.CANCELED, now=now, actor=actor, user=user,
                          reason=why)
        ledger_follow_charge(charge, appointment, 0, practice, now, actor, user, f"charge canceled: {why}",
                       kind=LedgerKind.CHARGE_CANCELED)
    else:
        _adjust_after_money_moved(charge, appointment, 0, practice, now, actor, user, why)


def _adjust_after_money_moved(charge: Charge, appointment: Appointment, owed_cents: int, practice: Practice,
                              now: dt.datetime, actor: str, user: User | None, why: str) -> None:
    """Money moved (or may have): leave the charge alone, correct the balance, and tell staff."""
    posted = ledger_follow_charge(charge, appointment, owed_cents, practice, now, actor, user,
                            f"after payment: {why}")
    if posted:
        review_open(kind=ReviewKind.PAID_SESSION_CHANGED, client=charge.client, appointment=appointment,
                    charge=charge, now=now,
                    reason=f"{charge.get_kind_display()} of {format_cents(charge.amount_cents)} is "
                           f"{charge.status_phrase}, but the {why}. The balance was adjusted; "
                           "refund or collect the difference if needed.")


def ledger_follow_charge(charge: Charge, appointment: Appointment, owed_cents: int, practice: Practice,
                   now: dt.datetime, actor: str, user: User | None, memo: str,
                   kind: str = LedgerKind.ADJUSTMENT) -> bool:
    """Post the entry that makes the ledger say ``owed_cents`` for this charge; nothing if it already does."""
    difference = owed_cents - ledger_owed_for_charge(charge, with_write_offs=owed_cents == 0)
    if difference == 0:
        return False
    ledger_post(client=charge.client, kind=kind, amount_cents=difference,
                occurred_on=service_date(appointment, practice), now=now, actor=actor, user=user,
                appointment=appointment, charge=charge, memo=memo)
    return True


def _priced_fields(share: Share) -> dict[str, object]:
    return {"kind": share.kind, "amount_cents": share.amount_cents, "insurance_cents": share.insurance_cents,
            "deductible_applied_cents": share.deductible_applied_cents, "breakdown": share.breakdown()}
