"""Good faith estimates and the dispute guard (No Surprises Act, 45 CFR 149.610).

Every uninsured or self-pay client gets an estimate of what they will be charged over a period of up to 12
months; they may dispute a bill that ends up $400 or more above it. The portal keeps the bill from getting
there unnoticed:

- ``estimate_guard_check`` is the one decision, for one charge: what the client's session charges dated in the
  period of the estimate in force come to with this one (charged or about to be: amount, less refunds, less
  what a canceled or held charge would have been) against the estimate's total. At the practice's warning
  threshold (``Practice.estimate_warning_cents``, $300 unless set) staff are warned; at $400 or more above it
  the charge is held for staff. Everything else (and a client without an estimate in force) goes ahead.
- ``estimate_guard_apply`` does what it decided to a charge the caller holds (inside its transaction): a held
  charge is due but waits (``hold_reason``), with no pre-charge notice, and a review item says why; a warning
  is a review item. ``estimate_guard_enforce`` is both, with the estimate locked so two charges of one client
  priced at once are decided one after the other. ``appointment_sync_charges`` calls it where it creates,
  re-prices or revives a session charge; a bulk path calls ``estimate_guard_check`` (``pending_cents``: what its
  own batch adds first) and ``estimate_guard_apply``.
- A held charge goes ahead when a revised estimate makes room for it (``estimate_revise``: the revision
  supersedes the estimate for the rest of its period and releases, oldest session first, what now fits), or
  when staff release it anyway, saying why (``estimate_hold_release``). Either way the client is told first:
  a pre-charge notice goes out with the release, and the card is charged the practice's notice lead time later.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import F, Sum

from billing.errors import Refused
from billing.models import (
    OPEN_STATUSES,
    Appointment,
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    Clinician,
    EstimateLine,
    EstimateStatus,
    GoodFaithEstimate,
    LinkPurpose,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    Service,
)
from billing.money import format_cents
from billing.selectors.estimates import clients_without_estimate
from billing.services.charges import charge_event_record, charge_transition
from billing.services.links import IssuedLink, link_create
from billing.services.notify import email_enqueue
from billing.services.payments import PORTAL_HOLD
from billing.services.review import review_close_stale, review_open
from billing.validators import ICD10_RE

# The law's figure: a bill this much above the estimate may be disputed. Not a setting.
HOLD_AT_CENTS = 40_000
ESTIMATE_HOLD_PREFIX = "above the good faith estimate"
RELEASED_ANYWAY = "released by staff above the good faith estimate"
# The charges an estimate's services become (fees for missed sessions are not expected services).
GUARDED_KINDS = (ChargeKind.COPAY, ChargeKind.SESSION_FEE)
MAX_LINES = 20
# Individual psychotherapy, 60, 45 and 30 minutes: what a weekly session usually is.
PSYCHOTHERAPY_CODES = ("90837", "90834", "90832")
DEFAULT_FREQUENCY = "Weekly"

OK, WARN, HOLD, NO_ESTIMATE = "ok", "warn", "hold", "no_estimate"


class EstimateRefused(Refused):
    """The estimate cannot be issued, revised or acknowledged as asked; the message says why."""


class EstimateInvalid(Refused):
    """What was given for an estimate does not make one (a period over 12 months, an unknown CPT code...)."""


@dataclass(frozen=True)
class LineIn:
    """An expected service as staff give it: the unit price defaults to the client's rate or the practice fee."""

    cpt_code: str
    quantity: int
    unit_cents: int | None = None


# --- the guard ------------------------------------------------------------------------------------------------

def guard_outcome(*, estimated_cents: int, billed_cents: int, amount_cents: int, warn_cents: int) -> str:
    """The arithmetic alone: with this charge, is the total billed $400 or more above the estimate (hold),
    at or past the practice's warning threshold (warn), or neither (ok)?"""
    over = billed_cents + amount_cents - estimated_cents
    if over >= HOLD_AT_CENTS:
        return HOLD
    if over >= warn_cents:
        return WARN
    return OK


@dataclass(frozen=True)
class GuardDecision:
    outcome: str
    estimate: GoodFaithEstimate | None = None
    estimated_cents: int = 0
    billed_cents: int = 0  # the period's other charges (and ``pending_cents``), before this one
    amount_cents: int = 0  # what this charge bills

    @property
    def total_cents(self) -> int:
        return self.billed_cents + self.amount_cents

    @property
    def over_cents(self) -> int:
        return self.total_cents - self.estimated_cents

    @property
    def hold(self) -> bool:
        return self.outcome == HOLD

    def sentence(self) -> str:
        assert self.estimate is not None
        estimate = self.estimate
        return (f"With this charge, {format_cents(self.total_cents)} is billed for sessions from "
                f"{estimate.period_start:%b} {estimate.period_start.day}, {estimate.period_start.year} to "
                f"{estimate.period_end:%b} {estimate.period_end.day}, {estimate.period_end.year}: "
                f"{format_cents(self.over_cents)} above good faith estimate #{estimate.pk} "
                f"({format_cents(self.estimated_cents)}).")


def charge_billed_cents(charge: Charge) -> int:
    """What a charge bills toward an estimate: its amount (with any part paid on the portal), less refunds."""
    return max(charge.amount_cents + charge.prepaid_cents - charge.refunded_cents, 0)


def is_estimate_hold(charge: Charge) -> bool:
    return charge.hold_reason.startswith(ESTIMATE_HOLD_PREFIX)


def service_day(appointment: Appointment, practice: Practice) -> dt.date:
    return appointment.starts_at.astimezone(practice.zone).date()


def _period_bounds(estimate: GoodFaithEstimate, practice: Practice) -> tuple[dt.datetime, dt.datetime]:
    """The period's first and the following day's midnights, in the practice's zone."""
    zone = practice.zone
    return (dt.datetime.combine(estimate.period_start, dt.time.min, tzinfo=zone),
            dt.datetime.combine(estimate.period_end + dt.timedelta(days=1), dt.time.min, tzinfo=zone))


def estimate_in_force(*, client: Client | int, day: dt.date) -> GoodFaithEstimate | None:
    """The client's estimate in force whose period covers ``day`` (the latest issued, should two)."""
    return (GoodFaithEstimate.objects.filter(client=client, status=EstimateStatus.ISSUED, period_start__lte=day,
                                             period_end__gte=day).order_by("-issued_at", "-pk").first())


def clients_with_estimate() -> set[int]:
    """The clients with an estimate in force for some period. A batch billing new sessions in bulk leaves theirs
    to the one-by-one path, where the guard decides each charge after the ones before it."""
    return set(GoodFaithEstimate.objects.filter(status=EstimateStatus.ISSUED).values_list("client_id", flat=True))


def estimate_billed_cents(*, estimate: GoodFaithEstimate, practice: Practice,
                          exclude_charge_ids: Sequence[int] = ()) -> int:
    """What the client's session charges dated in the estimate's period bill now: canceled charges and charges
    the guard holds bill nothing; refunds are taken off. One query."""
    begin, end = _period_bounds(estimate, practice)
    total = (Charge.objects.filter(client_id=estimate.client_id, kind__in=GUARDED_KINDS,
                                   appointment__starts_at__gte=begin, appointment__starts_at__lt=end)
             .exclude(status=ChargeStatus.CANCELED).exclude(hold_reason__startswith=ESTIMATE_HOLD_PREFIX)
             .exclude(pk__in=[pk for pk in exclude_charge_ids if pk is not None])
             .aggregate(t=Sum(F("amount_cents") + F("prepaid_cents") - F("refunded_cents")))["t"])
    return int(total or 0)


def estimate_guard_check(*, charge: Charge, practice: Practice | None = None, pending_cents: int = 0,
                         estimate: GoodFaithEstimate | None = None) -> GuardDecision:
    """Would this charge take what the client is billed $400 or more above their good faith estimate?

    A read, nothing written: ``charge`` may be unsaved (a bulk path deciding before it inserts; ``pending_cents``
    is what its batch bills in the same period before this one). Only session charges of a client with an
    estimate in force for the session's day are guarded."""
    practice = practice or Practice.load()
    if charge.kind not in GUARDED_KINDS or charge.appointment is None:
        return GuardDecision(NO_ESTIMATE)
    if estimate is None:
        estimate = estimate_in_force(client=charge.client_id, day=service_day(charge.appointment, practice))
    if estimate is None:
        return GuardDecision(NO_ESTIMATE)
    billed = estimate_billed_cents(estimate=estimate, practice=practice, exclude_charge_ids=[charge.pk]) + pending_cents
    amount = charge_billed_cents(charge)
    outcome = guard_outcome(estimated_cents=estimate.total_cents, billed_cents=billed, amount_cents=amount,
                            warn_cents=practice.estimate_warning_cents)
    return GuardDecision(outcome, estimate, estimate.total_cents, billed, amount)


def estimate_guard_apply(*, charge: Charge, decision: GuardDecision, now: dt.datetime, actor: str,
                         user: User | None = None, practice: Practice | None = None, announce: bool = True) -> None:
    """Do what the guard decided to a saved charge the caller holds (select_for_update, in its transaction). A
    held charge that fits now goes ahead after a pre-charge notice (sent now, unless ``announce`` is off: the
    caller announces a batch at once)."""
    if decision.estimate is None or charge.status not in OPEN_STATUSES or charge.hold_reason == PORTAL_HOLD:
        return
    practice = practice or Practice.load()
    if decision.hold:
        why = f"{ESTIMATE_HOLD_PREFIX} #{decision.estimate.pk}: {format_cents(decision.over_cents)} over"
        changes = {"hold_reason": why[:200], "notice_due_at": None, "next_retry_at": None}
        reason = f"held: {decision.sentence()}"
        if charge.status == ChargeStatus.DUE:
            for name, value in changes.items():
                setattr(charge, name, value)
            charge.save(update_fields=[*changes, "updated_at"])
            charge_event_record(charge=charge, from_status=charge.status, now=now, actor=actor, user=user,
                                reason=reason)
        else:
            charge_transition(charge=charge, to_status=ChargeStatus.DUE, now=now, actor=actor, user=user,
                              reason=reason, **changes)
        review_open(kind=ReviewKind.ESTIMATE_HOLD, client=charge.client, appointment=charge.appointment,
                    charge=charge, now=now,
                    reason=f"{charge.get_kind_display()} of {format_cents(charge.amount_cents)} is held, not charged. "
                           f"{decision.sentence()} The client may dispute a bill $400 or more above the estimate: "
                           "issue a revised estimate, or charge it anyway.")
        return
    if is_estimate_hold(charge):
        _hold_lift(charge, practice, now, actor, user, f"fits good faith estimate #{decision.estimate.pk} now")
        if announce:
            _announce([charge], practice, now)
    if decision.outcome == WARN:
        review_open(kind=ReviewKind.ESTIMATE_WARNING, client=charge.client, appointment=charge.appointment,
                    charge=charge, now=now,
                    reason=f"{decision.sentence()} At $400 above it charges are held: consider a revised estimate.")


def estimate_guard_enforce(*, charge: Charge, now: dt.datetime, actor: str, user: User | None = None,
                           practice: Practice | None = None) -> GuardDecision:
    """``estimate_guard_check`` then ``estimate_guard_apply``, the estimate locked meanwhile. The caller holds the
    charge (where charges are created or re-priced: ``appointment_sync_charges``)."""
    practice = practice or Practice.load()
    if charge.kind not in GUARDED_KINDS or charge.appointment is None:
        return GuardDecision(NO_ESTIMATE)
    estimate = estimate_in_force(client=charge.client_id, day=service_day(charge.appointment, practice))
    if estimate is not None:
        estimate = GoodFaithEstimate.objects.select_for_update().filter(
            pk=estimate.pk, status=EstimateStatus.ISSUED).first()
    if estimate is None:
        return GuardDecision(NO_ESTIMATE)
    decision = estimate_guard_check(charge=charge, practice=practice, estimate=estimate)
    estimate_guard_apply(charge=charge, decision=decision, now=now, actor=actor, user=user, practice=practice)
    return decision


def _hold_lift(charge: Charge, practice: Practice, now: dt.datetime, actor: str, user: User | None,
               reason: str) -> None:
    """A held charge goes ahead, told first: the card is charged the practice's notice lead time from now (at
    once when the practice sends no notices); the caller announces it (``_announce``)."""
    lead = dt.timedelta(hours=practice.pre_charge_notice_hours)
    charge_transition(charge=charge, to_status=ChargeStatus.SCHEDULED, now=now, actor=actor, user=user,
                      reason=reason, hold_reason="", scheduled_for=now + lead, notice_due_at=now if lead else None,
                      notice_sent_at=now if lead else None, next_retry_at=None)
    review_close_stale(kind=ReviewKind.ESTIMATE_HOLD, client=charge.client, appointment=charge.appointment, now=now,
                       note=reason[:300])


def _announce(charges: list[Charge], practice: Practice, now: dt.datetime) -> None:
    """The pre-charge notice for charges released together: one email listing them, sent with the release."""
    # Imported here: schedule imports this module (the guard runs where it prices charges).
    from billing.services.schedule import notices_enqueue

    if charges and practice.pre_charge_notice_hours:
        notices_enqueue(charges=charges, now=now, practice=practice)


def estimate_hold_release(*, charge: Charge, now: dt.datetime, actor: str, user: User | None, why: str) -> Charge:
    """Staff go on: the held charge is charged anyway (after its notice), recorded with who and why. The
    approval is for this amount: re-priced later, the charge is checked again."""
    why = why.strip()
    if not why:
        raise EstimateRefused("Say why the charge may go ahead above the estimate.")
    with transaction.atomic():
        charge = Charge.objects.select_for_update(of=("self",)).select_related("client", "appointment").get(
            pk=charge.pk)
        if charge.status != ChargeStatus.DUE or not is_estimate_hold(charge):
            raise EstimateRefused(f"Charge #{charge.pk} is not held above a good faith estimate "
                                  f"(it is {charge.status_phrase}).")
        practice = Practice.load()
        _hold_lift(charge, practice, now, actor, user, f"{RELEASED_ANYWAY} ({charge.hold_reason}) by {actor}: {why}")
        _announce([charge], practice, now)
    return charge


def estimate_held_release_fitting(*, estimate: GoodFaithEstimate, now: dt.datetime, actor: str,
                                  user: User | None = None) -> list[Charge]:
    """The client's charges held in the estimate's period that now fit under it go ahead, oldest session first;
    the rest stay held (their review item says by how much now). The caller holds the estimate."""
    practice = Practice.load()
    begin, end = _period_bounds(estimate, practice)
    held = list(Charge.objects.select_for_update(of=("self",)).select_related("client", "appointment")
                .filter(client_id=estimate.client_id, status=ChargeStatus.DUE, kind__in=GUARDED_KINDS,
                        hold_reason__startswith=ESTIMATE_HOLD_PREFIX, appointment__starts_at__gte=begin,
                        appointment__starts_at__lt=end).order_by("appointment__starts_at", "pk"))
    released = []
    for charge in held:
        decision = estimate_guard_check(charge=charge, practice=practice, estimate=estimate)
        estimate_guard_apply(charge=charge, decision=decision, now=now, actor=actor, user=user, practice=practice,
                             announce=False)
        if not is_estimate_hold(charge):
            released.append(charge)
    _announce(released, practice, now)
    return released


# --- issuing --------------------------------------------------------------------------------------------------

def period_end_for(start: dt.date, months: int = 12) -> dt.date:
    """The last day of a period of ``months`` months from ``start`` (12 months from Jan 15: Jan 14 next year)."""
    month = start.month - 1 + months
    year, month = start.year + month // 12, month % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return dt.date(year, month, day) - dt.timedelta(days=1)


def _default_service(client: Client) -> Service | None:
    """The service the client's sessions are (their latest), else the practice's most booked individual one."""
    latest = (Appointment.objects.filter(participants__client=client).order_by("-starts_at")
              .values_list("service_code", flat=True).first())
    services = {s.cpt_code: s for s in Service.objects.filter(is_group=False)}
    if latest in services:
        return services[latest]
    booked = Counter(Appointment.objects.filter(service_code__in=list(services)).values_list("service_code", flat=True)
                     .order_by()[:5000])
    if booked:
        return services[booked.most_common(1)[0][0]]
    # Nothing booked yet: an individual psychotherapy session (not the intake assessment), if the practice lists one.
    for code in PSYCHOTHERAPY_CODES:
        if code in services:
            return services[code]
    return next(iter(sorted(services.values(), key=lambda s: s.cpt_code)), None)


def unit_price(*, client: Client, service: Service) -> int:
    """What one session is expected to cost the client: their own rate for an individual session (a sliding
    scale never above the full fee), else the practice's fee."""
    if client.session_rate_cents is not None and not service.is_group:
        if client.billing_type == BillingType.SLIDING_SCALE:
            return min(client.session_rate_cents, service.fee_cents)
        return client.session_rate_cents
    return service.fee_cents


def estimate_default_lines(*, client: Client, period_start: dt.date, period_end: dt.date) -> list[LineIn]:
    """Weekly sessions of the client's usual service over the period, at their rate or the practice's fee."""
    service = _default_service(client)
    if service is None:
        return []
    weeks = max(((period_end - period_start).days + 1) // 7, 1)
    return [LineIn(service.cpt_code, weeks, unit_price(client=client, service=service))]


def _checked_lines(client: Client, lines: Sequence[LineIn]) -> list[EstimateLine]:
    if not lines:
        raise EstimateInvalid("List at least one expected service.")
    if len(lines) > MAX_LINES:
        raise EstimateInvalid(f"List at most {MAX_LINES} expected services.")
    services = {s.cpt_code: s for s in Service.objects.filter(cpt_code__in=[line.cpt_code for line in lines])}
    built = []
    for position, line in enumerate(lines):
        service = services.get(line.cpt_code)
        if service is None:
            raise EstimateInvalid(f"CPT {line.cpt_code!r} is not one of the practice's services.")
        if not 1 <= line.quantity <= 999:
            raise EstimateInvalid(f"Give how many {line.cpt_code} sessions, from 1 to 999.")
        unit = unit_price(client=client, service=service) if line.unit_cents is None else line.unit_cents
        if not 0 <= unit <= 10_000_000:
            raise EstimateInvalid(f"The price of {line.cpt_code} must be between $0.00 and $100,000.00.")
        built.append(EstimateLine(position=position, cpt_code=service.cpt_code, description=service.description,
                                  quantity=line.quantity, unit_cents=unit, total_cents=unit * line.quantity))
    return built


def _checked_period(start: dt.date, end: dt.date) -> None:
    if end < start:
        raise EstimateInvalid("The period ends before it starts.")
    if end > period_end_for(start, 12):
        raise EstimateInvalid("An estimate covers at most 12 months: end the period sooner, and issue another "
                              "estimate for what follows.")


def _checked_diagnoses(codes: Sequence[str]) -> list[str]:
    cleaned = [code.strip().upper() for code in codes if code.strip()]
    bad = [code for code in cleaned if not ICD10_RE.match(code)]
    if bad:
        raise EstimateInvalid(f"Not ICD-10 codes: {', '.join(bad)}.")
    return cleaned[:12]


def estimate_create(*, client: Client, period_start: dt.date, period_end: dt.date, lines: Sequence[LineIn],
                    now: dt.datetime, actor: str, user: User | None = None, frequency: str = DEFAULT_FREQUENCY,
                    clinician: Clinician | None = None, diagnosis_codes: Sequence[str] = (),
                    supersedes: GoodFaithEstimate | None = None, revision_reason: str = "") -> GoodFaithEstimate:
    """Issue an estimate: its lines priced, the practice and provider as they are today. A client has one
    estimate in force for a day: an overlapping one is revised instead (``estimate_revise``)."""
    _checked_period(period_start, period_end)
    built = _checked_lines(client, lines)
    diagnoses = _checked_diagnoses(diagnosis_codes)
    frequency = frequency.strip()[:100] or DEFAULT_FREQUENCY
    practice = Practice.load()
    with transaction.atomic():
        Client.objects.select_for_update().filter(pk=client.pk).first()
        overlapping = GoodFaithEstimate.objects.filter(client=client, status=EstimateStatus.ISSUED,
                                                       period_start__lte=period_end, period_end__gte=period_start)
        if supersedes is not None:
            overlapping = overlapping.exclude(pk=supersedes.pk)
        if (other := overlapping.first()) is not None:
            raise EstimateRefused(f"{client} already has good faith estimate #{other.pk} for "
                                  f"{other.period_start:%Y-%m-%d} to {other.period_end:%Y-%m-%d}: revise it instead.")
        if clinician is None:
            clinician = (Clinician.objects.filter(appointments__participants__client=client)
                         .order_by("-appointments__starts_at").first())
        estimate = GoodFaithEstimate.objects.create(
            client=client, period_start=period_start, period_end=period_end, frequency=frequency,
            diagnosis_codes=diagnoses, total_cents=sum(line.total_cents for line in built),
            practice_name=practice.name, practice_address=practice.address, practice_phone=practice.phone,
            practice_email=practice.sender_email, practice_npi=practice.npi, practice_tax_id=practice.tax_id,
            clinician=clinician, provider_name=clinician.name if clinician else "",
            provider_credentials=clinician.credentials if clinician else "",
            provider_npi=clinician.npi if clinician else "", supersedes=supersedes,
            revision_reason=revision_reason.strip()[:300], issued_at=now, issued_by=actor, user=user)
        for line in built:
            line.estimate = estimate
        EstimateLine.objects.bulk_create(built)
    return estimate


def estimate_send(*, estimate: GoodFaithEstimate, now: dt.datetime, actor: str) -> IssuedLink:
    """Email the client a secure link to the estimate (its page and PDF, and the acknowledgment), and record
    the delivery: to whom, when, by whom (the first delivery stays recorded; a resend is another email)."""
    client = estimate.client
    if not client.email:
        raise EstimateRefused(f"{client} has no email address: add one, or print the estimate and record its "
                              "acknowledgment on paper.")
    with transaction.atomic():
        issued = link_create(client=client, purpose=LinkPurpose.ESTIMATE, now=now, actor=actor)
        email_enqueue(key=f"estimate:{estimate.pk}:sent:{int(now.timestamp())}", client=client,
                      template="good_faith_estimate", now=now, context={
                          "estimate": estimate, "total": format_cents(estimate.total_cents), "link_url": issued.url,
                          "expires_at": issued.expires_at, "revised": estimate.supersedes_id is not None})
        GoodFaithEstimate.objects.filter(pk=estimate.pk, delivered_at__isnull=True).update(
            delivered_at=now, delivered_to=client.email, delivered_by=actor)
    estimate.refresh_from_db()
    return issued


def estimate_acknowledge(*, estimate: GoodFaithEstimate, now: dt.datetime, by: str,
                         ip_address: str | None = None) -> GoodFaithEstimate:
    """The client confirms they received the estimate (on the portal, or on paper recorded by staff). Once:
    the first acknowledgment stands."""
    GoodFaithEstimate.objects.filter(pk=estimate.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=now, acknowledged_by=by[:100], acknowledged_ip=ip_address)
    estimate.refresh_from_db()
    return estimate


def estimate_revise(*, estimate: GoodFaithEstimate, lines: Sequence[LineIn], now: dt.datetime, actor: str,
                    why: str, user: User | None = None, frequency: str | None = None,
                    diagnosis_codes: Sequence[str] | None = None, send: bool = True) -> GoodFaithEstimate:
    """A revised estimate for the same client and period: it supersedes ``estimate`` for the rest of the period
    (the old one is kept, marked superseded), the charges held that now fit go ahead after their notice, and the
    client is sent the new one."""
    why = why.strip()
    if not why:
        raise EstimateRefused("Say why the estimate is revised (it is printed on the revised estimate).")
    with transaction.atomic():
        old = GoodFaithEstimate.objects.select_for_update().select_related("client").get(pk=estimate.pk)
        if old.status != EstimateStatus.ISSUED:
            raise EstimateRefused(f"Good faith estimate #{old.pk} was already superseded: revise the newest one.")
        new = estimate_create(
            client=old.client, period_start=old.period_start, period_end=old.period_end, lines=lines, now=now,
            actor=actor, user=user, frequency=old.frequency if frequency is None else frequency,
            clinician=old.clinician,
            diagnosis_codes=old.diagnosis_codes if diagnosis_codes is None else diagnosis_codes,
            supersedes=old, revision_reason=why)
        GoodFaithEstimate.objects.filter(pk=old.pk).update(status=EstimateStatus.SUPERSEDED, superseded_at=now)
        new = GoodFaithEstimate.objects.select_for_update().select_related("client").get(pk=new.pk)
        estimate_held_release_fitting(estimate=new, now=now, actor=actor, user=user)
        practice = Practice.load()
        billed = estimate_billed_cents(estimate=new, practice=practice)
        if billed - new.total_cents < practice.estimate_warning_cents:
            for item_appointment in _open_warning_sessions(new.client):
                review_close_stale(kind=ReviewKind.ESTIMATE_WARNING, client=new.client, appointment=item_appointment,
                                   now=now, note=f"Revised good faith estimate #{new.pk} issued by {actor}.")
        if send and new.client.email:
            estimate_send(estimate=new, now=now, actor=actor)
    return new


def _open_warning_sessions(client: Client) -> list[Appointment | None]:
    return [item.appointment for item in ReviewItem.objects.filter(
        kind=ReviewKind.ESTIMATE_WARNING, client=client, status=ReviewStatus.OPEN).select_related("appointment")]


@dataclass(frozen=True)
class BatchResult:
    created: list[GoodFaithEstimate]
    skipped: list[tuple[Client, str]]


def estimates_create_missing(*, today: dt.date, now: dt.datetime, actor: str, user: User | None = None,
                             send: bool = True, clients: Sequence[Client] | None = None) -> BatchResult:
    """An estimate for every active self-pay client without one in force today (or for ``clients``, those of
    them without one): weekly sessions of their usual service for 12 months from today, at their rate or the
    practice's fee; emailed when they have an address. A client it cannot price is listed, not guessed."""
    missing = clients_without_estimate(today=today)
    if clients is not None:
        missing = missing.filter(pk__in=[client.pk for client in clients])
    end = period_end_for(today, 12)
    created, skipped = [], []
    for client in missing.order_by("pk"):
        lines = estimate_default_lines(client=client, period_start=today, period_end=end)
        if not lines:
            skipped.append((client, "the practice has no individual service with a fee to estimate from"))
            continue
        try:
            estimate = estimate_create(client=client, period_start=today, period_end=end, lines=lines, now=now,
                                       actor=actor, user=user)
        except (EstimateRefused, EstimateInvalid) as problem:
            skipped.append((client, str(problem)))
            continue
        if send and client.email:
            estimate_send(estimate=estimate, now=now, actor=actor)
        created.append(estimate)
    return BatchResult(created, skipped)
