"""The weekly reconciliation (docs/product.md, workflow 10): what does not add up for one ISO week.

A week runs Monday 00:00 to the next Monday 00:00 in the practice's time zone. ``reconciliation_run``
stores what it finds as ``ReconciliationFinding`` rows keyed by what each is about, so running a week
again updates the figures and keeps the status staff set (open, resolved, ignored with a reason).

The rules:

- **unpaid_session**: a session held that week that reached the practice's billing trigger, for a
  participant whose session charge has no payment: failed, waiting for the client to authenticate,
  held for staff (no card, above the cap), canceled by the system, or due and overdue. A charge still
  scheduled for a later moment (delayed or weekly-batch timing) is on its way, not a finding, nor is
  one a staff member canceled (that was a decision). A participant with **no charge at all** is a
  finding unless pricing gives $0 (a $0 plan category); when pricing cannot work the amount out the
  finding says so and names the review queue's reason: the review queue explains why, but the session
  is still unpaid, and the weekly report is where a forgotten review item shows up.
- **amount_mismatch**: a session charge (amount plus any part prepaid on the portal) that differs from
  what ``share_compute`` gives now (a fee schedule or benefits corrected after the charge was priced);
  or an EOB line whose patient responsibility differs from what the client was charged. EOBs never
  re-charge anyone (billing/services/insurance.py): staff settle the difference.
  Charges that counted toward a deductible are not re-priced once newer deductible figures arrived
  from the EHR (those figures already include the session, so a re-price would double count it).
- **insurance_underpayment**: an EOB line (paid that week) where the payer paid less than its fee
  schedule's allowed amount for the CPT code less the client's responsibility: expected = allowed -
  patient responsibility, actual = paid.
- **unmatched_payment**: a succeeded Stripe charge created that week whose PaymentIntent matches no
  payment attempt of the portal (every payment it makes is one); read from Stripe through the gateway.
  If Stripe cannot be read, the run says so and leaves the week's earlier unmatched-payment findings.

A finding no longer found when the week is run again is closed by the system (resolved, by nobody,
with the reason); if it comes back it is opened again. Findings staff resolved or ignored keep their
status whatever a re-run finds.

Queries do not grow with the data: a week is read in a fixed number of set queries (pricing's lookups
are loaded once for the whole week), and findings are written with bulk inserts and updates.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Count, Q

from billing.models import (
    PAID_STATUSES,
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeStatus,
    ChargeTrigger,
    Client,
    Coverage,
    FeeScheduleEntry,
    FindingKind,
    FindingStatus,
    InsurancePayment,
    Participant,
    Payer,
    PaymentAttempt,
    Practice,
    ReconciliationFinding,
    ReconciliationRun,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.money import format_cents
from billing.services.pricing import (
    NeedsReview,
    PricingLookups,
    pricing_lookups,
    pricing_preloaded,
    share_compute,
)
from billing.services.schedule import NOT_BILLED, SESSION_KINDS
from integrations.stripe.gateway import GatewayRefused, OutcomeUnknown, get_gateway

log = logging.getLogger(__name__)

SYSTEM_GONE = "No longer found when the week was reconciled again."
SCHEDULE_HOUR = 6  # Monday 06:00 in the practice's zone: the scheduled run for the week before


class WeekInvalid(ValueError):
    pass


# --- Weeks -----------------------------------------------------------------------------------------------

def week_monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def iso_week_monday(text: str) -> dt.date:
    """``2026-W48`` -> Monday 23 November 2026. Raises WeekInvalid."""
    try:
        monday = dt.datetime.strptime(text + "-1", "%G-W%V-%u").date()
    except ValueError:
        raise WeekInvalid("Give an ISO week such as 2026-W48.") from None
    if f"{monday:%G-W%V}" != text:
        raise WeekInvalid("Give an ISO week such as 2026-W48.")
    # The weeks the EHR API admits too; a week at the calendar's end would overflow its bounds.
    if not 1900 <= monday.isocalendar().year <= 2199:
        raise WeekInvalid("Give an ISO week from 1900-W01 to 2199-W52.")
    return monday


def week_bounds(monday: dt.date, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(monday, dt.time.min, tzinfo=zone)
    return start, dt.datetime.combine(monday + dt.timedelta(days=7), dt.time.min, tzinfo=zone)


# --- What a run finds ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    kind: str
    key: str
    week: dt.date
    client_id: int | None
    appointment_id: int | None = None
    charge_id: int | None = None
    insurance_payment_id: int | None = None
    stripe_reference: str = ""
    service_date: dt.date | None = None
    expected_cents: int | None = None
    actual_cents: int | None = None
    detail: str = ""


def _billable(practice: Practice) -> Q:
    if practice.charge_trigger == ChargeTrigger.NOTE_SIGNED:
        return Q(note_signed_at__isnull=False) & ~Q(status__in=NOT_BILLED)
    return Q(status=AppointmentStatus.COMPLETED)


def _lookups(client_ids: set[int], appointment_ids: set[int], zone: zoneinfo.ZoneInfo) -> PricingLookups:
    """Everything ``share_compute`` reads for these sessions, in six queries whatever their number."""
    counts = dict(Participant.objects.filter(appointment_id__in=appointment_ids).values("appointment_id")
                  .annotate(n=Count("pk")).values_list("appointment_id", "n"))
    return pricing_lookups(client_ids=client_ids, participant_counts=counts, zone=zone)


def session_findings(*, start: dt.datetime, end: dt.datetime, monday: dt.date, practice: Practice,
                     now: dt.datetime) -> list[Found]:
    zone = practice.zone
    appointments = Appointment.objects.filter(starts_at__gte=start, starts_at__lt=end).filter(
        _billable(practice))
    pairs = list(Participant.objects.filter(appointment__in=appointments).values_list("appointment_id", "client_id"))
    charges = {(c.appointment_id, c.client_id): c for c in Charge.objects.filter(
        appointment__in=appointments, kind__in=SESSION_KINDS)}
    appointment_ids = {a for a, _ in pairs}
    client_ids = {c for _, c in pairs}
    # Only the sessions that need pricing are loaded as rows: charges to re-price, and participants
    # without a charge (the week's rows, read once; no query per row).
    by_id = {a.pk: a for a in Appointment.objects.filter(pk__in=appointment_ids)}
    clients = {c.pk: c for c in Client.objects.filter(pk__in=client_ids)}
    reviews = dict(ReviewItem.objects.filter(appointment_id__in=appointment_ids, kind=ReviewKind.PRICING,
                                             status=ReviewStatus.OPEN).values_list("appointment_id", "reason"))
    found: list[Found] = []
    with pricing_preloaded(_lookups(client_ids, appointment_ids, zone)):
        for appointment_id, client_id in sorted(pairs):
            appointment, client = by_id[appointment_id], clients[client_id]
            day = appointment.starts_at.astimezone(zone).date()
            charge = charges.get((appointment_id, client_id))
            key = f"appointment:{appointment_id}:client:{client_id}"
            if charge is None:
                try:
                    share = share_compute(appointment=appointment, client=client)
                except NeedsReview as problem:
                    reason = reviews.get(appointment_id, str(problem))
                    found.append(Found(FindingKind.UNPAID_SESSION, key, monday, client_id, appointment_id,
                                       service_date=day, actual_cents=0,
                                       detail=f"No charge: waiting in the review queue ({reason})"[:300]))
                    continue
                if share.amount_cents:
                    found.append(Found(FindingKind.UNPAID_SESSION, key, monday, client_id, appointment_id,
                                       service_date=day, expected_cents=share.amount_cents, actual_cents=0,
                                       detail="No charge was made for this session."))
                continue
            unpaid = _unpaid_reason(charge, now)
            if unpaid:
                found.append(Found(FindingKind.UNPAID_SESSION, key, monday, client_id, appointment_id, charge.pk,
                                   service_date=day, expected_cents=charge.amount_cents + charge.prepaid_cents,
                                   actual_cents=charge.prepaid_cents, detail=unpaid))
            if charge.status == ChargeStatus.CANCELED:
                continue
            mismatch = _price_mismatch(charge, appointment, client)
            if mismatch is not None:
                found.append(Found(FindingKind.AMOUNT_MISMATCH, f"charge:{charge.pk}", monday, client_id,
                                   appointment_id, charge.pk, service_date=day, expected_cents=mismatch,
                                   actual_cents=charge.amount_cents + charge.prepaid_cents,
                                   detail=f"Pricing now gives {format_cents(mismatch)}; the charge is "
                                          f"{format_cents(charge.amount_cents + charge.prepaid_cents)}."))
    return found


def _unpaid_reason(charge: Charge, now: dt.datetime) -> str:
    status = charge.status
    if status in PAID_STATUSES or status == ChargeStatus.PROCESSING:
        return ""
    if status == ChargeStatus.CANCELED:
        return "" if charge.canceled_by_staff else "The charge was canceled."
    if status in (ChargeStatus.SCHEDULED, ChargeStatus.DUE):
        if charge.hold_reason:
            return f"The charge is on hold: {charge.hold_reason}"[:300]
        if charge.scheduled_for > now:
            return ""  # on its way: charged at its scheduled time
        return "The charge is overdue."
    if status == ChargeStatus.FAILED:
        return f"The card was declined ({charge.last_failure_code or 'failed'})."[:300]
    return f"The charge is {charge.status_phrase}."


def _price_mismatch(charge: Charge, appointment: Appointment, client: Client) -> int | None:
    """What pricing gives now, when it differs from what the charge took (None: no difference)."""
    try:
        share = share_compute(appointment=appointment, client=client, existing=charge)
    except NeedsReview:
        return None  # the review queue has it
    if charge.deductible_applied_cents and share.deductible_applied_cents != charge.deductible_applied_cents:
        return None  # newer deductible figures already count this session (see the module's docstring)
    charged = charge.amount_cents + charge.prepaid_cents
    return share.amount_cents if share.amount_cents != charged else None


def eob_findings(payments: Sequence[InsurancePayment], practice: Practice) -> list[Found]:
    """Amount mismatches and underpayments of these EOB lines (their appointment and client joined)."""
    if not payments:
        return []
    zone = practice.zone
    charges = {(c.appointment_id, c.client_id): c for c in Charge.objects.filter(
        appointment_id__in={p.appointment_id for p in payments}, kind__in=SESSION_KINDS)}
    payers = {name.lower(): pk for pk, name in Payer.objects.values_list("pk", "name")}
    coverage_payer = dict(Coverage.objects.filter(client_id__in={p.client_id for p in payments}, payer__isnull=False)
                          .order_by("created_at", "pk").values_list("client_id", "payer_id"))
    allowed = {(payer_id, cpt): cents for payer_id, cpt, cents in FeeScheduleEntry.objects.values_list(
        "payer_id", "service__cpt_code", "allowed_cents")}
    found: list[Found] = []
    for eob in payments:
        appointment = eob.appointment
        monday = week_monday(eob.paid_on)
        day = appointment.starts_at.astimezone(zone).date()
        charge = charges.get((eob.appointment_id, eob.client_id))
        charged = (charge.amount_cents + charge.prepaid_cents
                   if charge is not None and charge.status != ChargeStatus.CANCELED else 0)
        key = f"eob:{eob.pk}"
        if charged != eob.patient_responsibility_cents:
            found.append(Found(FindingKind.AMOUNT_MISMATCH, key, monday, eob.client_id, eob.appointment_id,
                               charge.pk if charge else None, eob.pk, service_date=day,
                               expected_cents=eob.patient_responsibility_cents, actual_cents=charged,
                               detail=f"The EOB ({eob.reference}) says the client owes "
                                      f"{format_cents(eob.patient_responsibility_cents)}; the portal charged "
                                      f"{format_cents(charged)}."[:300]))
        payer_id = payers.get(eob.payer_name.lower()) or coverage_payer.get(eob.client_id)
        schedule = allowed.get((payer_id, appointment.service_code)) if payer_id else None
        if schedule is not None:
            expected = max(schedule - eob.patient_responsibility_cents, 0)
            if eob.paid_cents < expected:
                found.append(Found(FindingKind.INSURANCE_UNDERPAYMENT, key, monday, eob.client_id,
                                   eob.appointment_id, charge.pk if charge else None, eob.pk, service_date=day,
                                   expected_cents=expected, actual_cents=eob.paid_cents,
                                   detail=f"{eob.payer_name or 'The payer'} allows {format_cents(schedule)} for "
                                          f"{appointment.service_code}; it paid {format_cents(eob.paid_cents)} with "
                                          f"{format_cents(eob.patient_responsibility_cents)} due from the client "
                                          f"({eob.reference})."[:300]))
    return found


def unmatched_payment_findings(*, start: dt.datetime, end: dt.datetime, monday: dt.date,
                               zone: dt.tzinfo) -> list[Found]:
    """Succeeded Stripe charges created in the week whose PaymentIntent the portal never made."""
    since, until = int(start.timestamp()), int(end.timestamp())
    stripe_charges = [c for c in get_gateway().charges_since(since - 1)
                      if since <= c.created < until and c.status == "succeeded"]
    intents = {c.payment_intent_id for c in stripe_charges if c.payment_intent_id}
    # Every payment the portal makes (session charges, fees, portal balance payments) is a payment attempt.
    known = set(PaymentAttempt.objects.filter(payment_intent_id__in=intents).values_list("payment_intent_id",
                                                                                        flat=True))
    unmatched = [c for c in sorted(stripe_charges, key=lambda c: (c.created, c.id))
                 if not (c.payment_intent_id and c.payment_intent_id in known)]
    customers = dict(Client.objects.filter(stripe_customer_id__in={c.customer_id for c in unmatched if c.customer_id})
                     .values_list("stripe_customer_id", "pk"))
    found = []
    for c in unmatched:
        day = dt.datetime.fromtimestamp(c.created, tz=dt.UTC).astimezone(zone).date()
        found.append(Found(FindingKind.UNMATCHED_PAYMENT, f"stripe:{c.id}", monday, customers.get(c.customer_id),
                           stripe_reference=f"{c.id} / {c.payment_intent_id or '-'}"[:100], service_date=day,
                           expected_cents=0, actual_cents=c.amount_cents - c.amount_refunded_cents,
                           detail=f"Stripe charge {c.id} ({format_cents(c.amount_cents)}) matches no payment the "
                                  "portal made."[:300]))
    return found


# --- Storing findings ------------------------------------------------------------------------------------

FIGURE_FIELDS = ("week", "client_id", "appointment_id", "charge_id", "insurance_payment_id", "stripe_reference",
                 "service_date", "expected_cents", "actual_cents", "detail")


def findings_store(*, found: Iterable[Found], now: dt.datetime, week: dt.date | None = None,
                   kinds: Iterable[str] = ()) -> int:
    """Create or update the findings; for ``week``, close what the run of ``kinds`` no longer found."""
    wanted = {(f.kind, f.key): f for f in found}
    kinds = list(kinds)
    with transaction.atomic():
        scope = Q(key__in=[key for _, key in wanted])
        if week is not None and kinds:
            scope |= Q(week=week, kind__in=kinds)
        existing = {(f.kind, f.key): f for f in ReconciliationFinding.objects.select_for_update().filter(scope)}
        new, changed = [], []
        for natural, item in wanted.items():
            row = existing.get(natural)
            figures = {name: getattr(item, name) for name in FIGURE_FIELDS}
            if row is None:
                new.append(ReconciliationFinding(kind=item.kind, key=item.key, first_found_at=now, last_found_at=now,
                                                 **figures))
                continue
            for name, value in figures.items():
                setattr(row, name, value)
            row.last_found_at = now
            if row.gone_at is not None:
                row.gone_at = None
                if row.status == FindingStatus.RESOLVED and row.status_by_id is None and \
                        row.status_reason == SYSTEM_GONE:
                    row.status, row.status_reason, row.status_at = FindingStatus.OPEN, "", now
            changed.append(row)
        gone = [row for natural, row in existing.items()
                if natural not in wanted and row.gone_at is None and week is not None and row.week == week
                and row.kind in kinds]
        for row in gone:
            row.gone_at = now
            if row.status == FindingStatus.OPEN:
                row.status, row.status_reason, row.status_at, row.status_by = (FindingStatus.RESOLVED, SYSTEM_GONE,
                                                                               now, None)
        ReconciliationFinding.objects.bulk_create(new, ignore_conflicts=True, batch_size=1000)
        ReconciliationFinding.objects.bulk_update(
            [*changed, *gone], [*FIGURE_FIELDS, "last_found_at", "gone_at", "status", "status_reason", "status_at",
                                "status_by"], batch_size=1000)
    return len(wanted)


def eob_findings_refresh(*, payments: Sequence[InsurancePayment], now: dt.datetime) -> int:
    """Check EOB lines as they are recorded (the weekly run checks them again)."""
    rows = list(InsurancePayment.objects.filter(pk__in=[p.pk for p in payments]).select_related("appointment"))
    found = eob_findings(rows, Practice.load())
    keys = [f"eob:{p.pk}" for p in rows]
    # A corrected line may no longer be a finding: close those the way a re-run would.
    stale = ReconciliationFinding.objects.filter(key__in=keys, gone_at__isnull=True).exclude(
        Q(*[Q(kind=f.kind, key=f.key) for f in found], _connector=Q.OR) if found else Q(pk__in=[]))
    stale.filter(status=FindingStatus.OPEN).update(status=FindingStatus.RESOLVED, status_reason=SYSTEM_GONE,
                                                   status_at=now, gone_at=now)
    stale.update(gone_at=now)
    return findings_store(found=found, now=now)


# --- Running a week --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    run: ReconciliationRun | None
    week: dt.date
    findings: int
    stripe_error: str


ALL_KINDS = tuple(FindingKind.values)


def reconciliation_run(*, week: dt.date, now: dt.datetime, trigger: str = "staff", actor: str = "system",
                       check_stripe: bool = True, claim: bool = False) -> RunResult:
    """Reconcile the ISO week starting on Monday ``week``: find, store, and record the run.

    With ``claim`` (the scheduled run) the week is run once: a second call finds the claim and does nothing.
    """
    if week.weekday() != 0:
        raise WeekInvalid("A reconciliation week starts on a Monday.")
    practice = Practice.load()
    start, end = week_bounds(week, practice.zone)
    stripe_found: list[Found] = []
    stripe_error = ""
    if check_stripe:
        # Read Stripe first: no transaction is held while Stripe answers.

        try:
            stripe_found = unmatched_payment_findings(start=start, end=end, monday=week, zone=practice.zone)
        except (OutcomeUnknown, GatewayRefused) as error:
            stripe_error = f"Stripe could not be read: {error}"[:300]
            log.warning("reconciliation %s: %s", week, stripe_error)
    else:
        stripe_error = "Stripe was not checked."
    with transaction.atomic():
        run = ReconciliationRun(week=week, started_at=now, trigger=trigger, actor=actor[:100],
                                stripe_checked=not stripe_error, stripe_error=stripe_error)
        if claim:
            try:
                with transaction.atomic():
                    run.save()
            except IntegrityError:
                return RunResult(None, week, 0, "")
        found = session_findings(start=start, end=end, monday=week, practice=practice, now=now)
        eobs = list(InsurancePayment.objects.filter(paid_on__gte=week, paid_on__lt=week + dt.timedelta(days=7))
                    .select_related("appointment").order_by("paid_on", "pk"))
        found += eob_findings(eobs, practice)
        found += stripe_found
        kinds = [k for k in ALL_KINDS if k != FindingKind.UNMATCHED_PAYMENT or not stripe_error]
        count = findings_store(found=found, now=now, week=week, kinds=kinds)
        run.findings = count
        run.finished_at = now
        run.save()
    return RunResult(run, week, count, stripe_error)


def reconciliation_weekly(*, now: dt.datetime) -> int:
    """The billing_tick step: from Monday 06:00 (practice time) on, reconcile the week before, once."""
    practice = Practice.load()
    local = now.astimezone(practice.zone)
    this_monday = week_monday(local.date())
    due_at = dt.datetime.combine(this_monday, dt.time(SCHEDULE_HOUR), tzinfo=practice.zone)
    week = this_monday - dt.timedelta(days=7 if local >= due_at else 14)
    if ReconciliationRun.objects.filter(week=week, trigger="schedule").exists():
        return 0
    result = reconciliation_run(week=week, now=now, trigger="schedule", actor="system:billing_tick", claim=True)
    return 1 if result.run is not None else 0


def finding_set_status(*, finding: ReconciliationFinding, status: str, reason: str, user: User | None,
                       now: dt.datetime) -> ReconciliationFinding:
    """Staff mark a finding resolved, ignored (a reason is required) or open again."""
    if status not in FindingStatus.values:
        raise ValueError(f"Unknown status {status!r}.")
    if status == FindingStatus.IGNORED and not reason.strip():
        raise ValueError("Say why the finding is ignored.")
    finding.status, finding.status_reason, finding.status_by, finding.status_at = status, reason[:300], user, now
    finding.save(update_fields=["status", "status_reason", "status_by", "status_at"])
    return finding
