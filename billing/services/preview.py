"""Preview: a practice runs with charging off, and sees what the portal would have collected.

- ``charging_preview_set``: switch preview on or off. Off, charging starts for sessions from that moment
  on; the open charges of earlier sessions wait, marked ``PREVIEW_HOLD`` ("from preview, not charged"),
  until staff charge them (``preview_charges_release``: a notice first, the card the lead time later).
- ``preview_report``: for a past period, each session's charges as the portal would have collected them,
  against what was actually collected. The period is replayed through the tick itself
  (``tick_run(replay=True)``, billing/services/tick.py) with ``now`` stepped through it, inside one
  transaction rolled back at its end (``tick_replay``), with a gateway that answers Stripe without any
  network call: the figures are the tick's own, and nothing of the replay stays.

The preview gate itself (no Stripe call, no email to a client while the practice previews) lives in two
places only: the tick's ``_gate`` and the email outbox (billing/services/notify.py).
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Min, Q, Sum

from billing.errors import Refused
from billing.models import (
    PAID_STATUSES,
    PAYMENT_KINDS,
    PENDING_STATUSES,
    Charge,
    ChargeEvent,
    ChargeStatus,
    InsurancePayment,
    OutboundEmail,
    Practice,
)
from billing.services.charges import charge_event_record, charges_transition
from billing.services.payments import PORTAL_HOLD
from billing.services.tick import tick_replay, tick_run

# Why a charge of a session before preview was switched off waits: the portal never charges it by itself.
PREVIEW_HOLD = "from preview, not charged"
# In a replay only (rolled back): a due charge of a session outside the replayed period.
OUTSIDE_HOLD = "outside the replayed period"
# A replay follows the period's charges this long past its end (weekly batches, retries), never past now.
FOLLOW_AFTER_END = dt.timedelta(days=31)


class PeriodInvalid(Refused):
    pass


class NothingFromPreview(Refused):
    pass


# --- Switching ------------------------------------------------------------------------------------------


def charging_preview_set(*, on: bool, now: dt.datetime, actor: str) -> int:
    """Switch preview on (charge nothing, send nothing) or off (charge from now on). Switching off marks the
    open charges of sessions before ``now`` as ``PREVIEW_HOLD``: they are not charged unless staff release
    them. Returns how many were marked."""
    Practice.load()  # a fresh install has its row
    with transaction.atomic():
        practice = Practice.objects.select_for_update().get(pk=Practice.SINGLETON_ID)
        if practice.charging_preview == on:
            return 0
        practice.charging_preview = on
        if not on:
            practice.charging_preview_ended_at = now
        practice.save(update_fields=["charging_preview", "charging_preview_ended_at", "updated_at"])
        if on:
            return 0
        earlier = (Charge.objects.select_for_update(of=("self",))
                   .filter(status__in=PENDING_STATUSES, appointment__starts_at__lt=now)
                   .exclude(kind__in=PAYMENT_KINDS).exclude(hold_reason__in=[PORTAL_HOLD, PREVIEW_HOLD])
                   .order_by("pk"))
        charges = list(earlier)
        why = "session before charging was switched on: from preview, not charged"
        # Scheduled ones are due now, held: no notice goes out for a charge that is not taken.
        charges_transition([c for c in charges if c.status == ChargeStatus.SCHEDULED], to_status=ChargeStatus.DUE,
                           now=now, actor=actor, reason=lambda _: why,
                           changes=lambda _: {"hold_reason": PREVIEW_HOLD, "next_retry_at": None})
        for charge in charges:
            if charge.status == ChargeStatus.DUE and charge.hold_reason != PREVIEW_HOLD:
                charge.hold_reason = PREVIEW_HOLD
                charge.save(update_fields=["hold_reason", "updated_at"])
                charge_event_record(charge=charge, from_status=charge.status, now=now, actor=actor, reason=why)
    return len(charges)


def preview_charges_release(*, charges: list[Charge], now: dt.datetime, actor: str) -> list[Charge]:
    """Staff choose to charge sessions from preview: each is told first (a pre-charge notice at the next
    tick) and charged the practice's lead time later (at least an hour, so the notice always goes first)."""
    practice = Practice.load()
    lead = dt.timedelta(hours=max(practice.pre_charge_notice_hours, 1))
    with transaction.atomic():
        rows = list(Charge.objects.select_for_update(of=("self",)).filter(
            pk__in=[c.pk for c in charges], status=ChargeStatus.DUE, hold_reason=PREVIEW_HOLD).order_by("pk"))
        if not rows:
            raise NothingFromPreview("None of these charges waits from preview.")
        charges_transition(rows, to_status=ChargeStatus.SCHEDULED, now=now, actor=actor,
                           reason=lambda _: "from preview: released to be charged, after a notice",
                           changes=lambda _: {"hold_reason": "", "scheduled_for": now + lead, "notice_due_at": now,
                                              "notice_sent_at": None})
    return rows


# --- The report -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreviewLine:
    """One charge of a session in the period: what the portal would have collected, and what was."""

    charge_id: int
    client: str
    session_at: dt.datetime
    kind: str
    status: str  # the charge's status now, as a phrase
    would_cents: int
    would_at: dt.datetime | None
    would_status: str  # where the replay left it: "paid", or why not ("due (no card on file)")
    notice: str  # the notice's subject ("" when none: immediate timing, or no lead time)
    notice_at: dt.datetime | None
    collected_cents: int
    collected_at: dt.datetime | None
    eob_paid_cents: int  # what the client's insurer paid for the session (EOB lines)

    @property
    def would_days(self) -> float | None:
        return _days(self.session_at, self.would_at)

    @property
    def collected_days(self) -> float | None:
        return _days(self.session_at, self.collected_at) if self.collected_cents else None

    @property
    def unpaid_would_collect(self) -> int:
        """What the portal would have collected that is still unpaid."""
        return max(self.would_cents - self.collected_cents, 0)


@dataclass(frozen=True)
class PreviewReport:
    start: dt.date
    end: dt.date
    lines: list[PreviewLine]
    ticks: int
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def unpaid(self) -> list[PreviewLine]:
        """Sessions still unpaid that the portal would have collected."""
        return [line for line in self.lines if line.unpaid_would_collect]

    def days(self, which: str) -> tuple[float | None, float | None]:
        """(median, average) days from session to money: ``would`` or ``collected``."""
        values = [d for line in self.lines if (d := getattr(line, f"{which}_days")) is not None]
        if not values:
            return None, None
        return round(statistics.median(values), 1), round(statistics.fmean(values), 1)


def _days(start: dt.datetime, end: dt.datetime | None) -> float | None:
    return None if end is None else round((end - start).total_seconds() / 86400, 1)


def preview_period_bounds(start: dt.date, end: dt.date, practice: Practice,
                          today: dt.date) -> tuple[dt.datetime, dt.datetime]:
    if end < start:
        raise PeriodInvalid("The period ends before it starts.")
    if end >= today:
        raise PeriodInvalid("A preview covers a past period: it must end before today.")
    if (end - start).days > 366:
        raise PeriodInvalid("A preview covers at most a year.")
    zone = practice.zone
    begin = dt.datetime.combine(start, dt.time(0), tzinfo=zone).astimezone(dt.UTC)
    finish = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(0), tzinfo=zone).astimezone(dt.UTC)
    return begin, finish


def preview_report(*, start: dt.date, end: dt.date, now: dt.datetime) -> PreviewReport:
    """What the portal would have collected for the sessions of ``start``..``end`` (practice days), by
    replaying the tick through the period (and after it, while its charges still wait) in a transaction that
    is rolled back. Every payment goes through in the replay; a client without a card is held, as for real."""
    practice = Practice.load()
    begin, finish = preview_period_bounds(start, end, practice, now.astimezone(practice.zone).date())
    charges = list(Charge.objects.select_related("client", "appointment").filter(
        appointment__starts_at__gte=begin, appointment__starts_at__lt=finish).exclude(kind__in=PAYMENT_KINDS)
        .order_by("appointment__starts_at", "pk"))
    ids = [c.pk for c in charges]
    collected = _money(ids)
    eob = _eob_paid(charges)
    horizon = min(now, finish + FOLLOW_AFTER_END)
    with tick_replay():
        _reopen(ids)
        ticks = 0
        moment: dt.datetime | None = begin
        while moment is not None and moment <= horizon:
            at = moment
            tick_run(now=at, replay=True)
            ticks += 1
            moment = _next_moment(at, ids)
        would = _money(ids)
        would_status = {c.pk: _status(c) for c in Charge.objects.filter(pk__in=ids)}
        notices = _notices(ids, begin)
    lines = []
    for charge in charges:
        would_cents, would_at = would.get(charge.pk, (0, None))
        collected_cents, collected_at = collected.get(charge.pk, (0, None))
        notice, notice_at = notices.get(charge.pk, ("", None))
        lines.append(PreviewLine(
            charge_id=charge.pk, client=str(charge.client), session_at=charge.appointment.starts_at,  # type: ignore[union-attr]
            kind=charge.get_kind_display(), status=_status(charge), would_cents=would_cents, would_at=would_at,
            would_status=would_status.get(charge.pk, ""), notice=notice, notice_at=notice_at,
            collected_cents=collected_cents, collected_at=collected_at,
            eob_paid_cents=eob.get((charge.appointment_id or 0, charge.client_id), 0)))
    totals = {"would": sum(line.would_cents for line in lines),
              "collected": sum(line.collected_cents for line in lines),
              "eob_paid": sum(eob.values()),
              "unpaid_would_collect": sum(line.unpaid_would_collect for line in lines)}
    return PreviewReport(start, end, lines, ticks, totals)


def _status(charge: Charge) -> str:
    held = charge.status == ChargeStatus.DUE and charge.hold_reason
    return charge.status_phrase + (f" ({charge.hold_reason})" if held else "")


def _reopen(ids: list[int]) -> None:
    """In the replay only: the period's charges that were never charged (due, held from preview or for want of a
    card) go back on their schedule, so the replay takes them when the tick would have. Charges of other
    sessions still waiting to be taken (months of them, in a practice that previews) are left out of it: each
    session's figures are its own, and the replay does not charge what the report does not show."""
    Charge.objects.filter(pk__in=ids, status=ChargeStatus.DUE).exclude(hold_reason=PORTAL_HOLD).update(
        status=ChargeStatus.SCHEDULED, hold_reason="")
    others = Charge.objects.exclude(pk__in=ids).exclude(kind__in=PAYMENT_KINDS)
    others.filter(status=ChargeStatus.DUE, hold_reason="").update(hold_reason=OUTSIDE_HOLD)
    others.filter(status=ChargeStatus.FAILED, next_retry_at__isnull=False).update(next_retry_at=None)


def _next_moment(after: dt.datetime, ids: list[int]) -> dt.datetime | None:
    """The next moment something of the period's charges falls due (a notice, a charge, a retry), as a tick
    each minute would meet it; None when nothing is left. The tick's other steps (reminders, the weekly
    reconciliation) run at these moments too, but move no charge."""
    ours = Charge.objects.filter(pk__in=ids)
    found = ours.aggregate(
        notice=Min("notice_due_at", filter=Q(status=ChargeStatus.SCHEDULED, notice_sent_at__isnull=True,
                                             notice_due_at__gt=after)),
        charge=Min("scheduled_for", filter=Q(status=ChargeStatus.SCHEDULED, scheduled_for__gt=after)),
        retry=Min("next_retry_at", filter=Q(status=ChargeStatus.FAILED, next_retry_at__gt=after)))
    return min((m for m in found.values() if m is not None), default=None)


def _money(ids: list[int]) -> dict[int, tuple[int, dt.datetime | None]]:
    """What each charge brought in (whatever way it was paid: card, weekly card payment, the portal, staff)
    and when it was paid."""
    paid_at = dict(ChargeEvent.objects.filter(charge_id__in=ids, to_status=ChargeStatus.SUCCEEDED)
                   .values("charge_id").annotate(at=Min("at")).values_list("charge_id", "at"))
    money: dict[int, tuple[int, dt.datetime | None]] = {}
    for pk, status, amount, prepaid in Charge.objects.filter(pk__in=ids).values_list(
            "pk", "status", "amount_cents", "prepaid_cents"):
        if status in PAID_STATUSES:
            money[pk] = (amount + prepaid, paid_at.get(pk))
        elif prepaid:
            money[pk] = (prepaid, None)
    return money


def _eob_paid(charges: list[Charge]) -> dict[tuple[int, int], int]:
    appointments = {c.appointment_id for c in charges if c.appointment_id}
    return {(a, c): total for a, c, total in InsurancePayment.objects.filter(appointment_id__in=appointments)
            .values("appointment_id", "client_id").annotate(total=Sum("paid_cents"))
            .values_list("appointment_id", "client_id", "total")}


def _notices(ids: list[int], begin: dt.datetime) -> dict[int, tuple[str, dt.datetime]]:
    """The first notice naming each charge (sent, drafted in preview, or drafted in the replay): the pre-charge
    notice listing it, or a fee's own notice."""
    wanted = set(ids)
    first: dict[int, tuple[dt.datetime, str]] = {}
    notices = OutboundEmail.objects.filter(Q(template="pre_charge_notice", created_at__gte=begin)
                                           | Q(key__in=[f"fee:charge:{pk}" for pk in ids]))
    for key, subject, at, amounts in notices.order_by("created_at", "pk").values_list(
            "key", "subject", "created_at", "charge_amounts"):
        named = [int(key.rsplit(":", 1)[1])] if key.startswith("fee:charge:") else [p[0] for p in amounts or [] if p]
        for pk in named:
            if pk in wanted and pk not in first:
                first[pk] = (at, subject)
    return {pk: (subject, at) for pk, (at, subject) in first.items()}
