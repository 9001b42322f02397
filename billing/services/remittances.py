"""Electronic remittance advice (ERA, X12 835) posted to the EOB lines the reconciliation already checks.

The file is read elsewhere (integrations/ehr/era/: the way in); here it arrives as plain data
(``RemittanceIn``) and is posted in one transaction:

- **The payment** is recognised by its payer and trace number (TRN02, the check or EFT number). Each
  claim in it is recognised by its claim id and status within that payment, so posting the same file
  twice changes nothing, and a claim already posted is never posted again.
- **Each service line** is matched to one session: the client by the member id on their coverage (or,
  the 835 carrying no date of birth, by a name only one client has), then that client's session on the
  date of service with the line's CPT code. No client, no session, or more than one of either: the line
  waits, unmatched, for staff to pick the session by hand (``remittance_line_match``). Nothing is guessed.
- **A matched line** becomes an EOB line (``insurance_payment_record``: allowed, paid, and the client's
  responsibility = the PR adjustments), so a difference between it and what the client was charged is
  the existing ``amount_mismatch`` finding, and a payer paying below its fee schedule an underpayment.
- **Benefits**: the insurer's deductible (PR-1) for the session replaces the portal's own estimate of
  it in the coverage's deductible met so far, and its coinsurance (PR-2) or copay (PR-3) corrects the
  coverage's percentage or copay, of whichever kind the coverage already uses, for the next sessions.
- **A reversal** (claim status 22) takes back the EOB line the reversed claim posted and the deductible
  it added; the corrected claim that follows it in the file is posted as any other.

With ``dry_run`` everything is done and then rolled back: the report is what applying would do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Q

from billing.errors import Refused
from billing.models import (
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeStatus,
    Client,
    Coverage,
    Participant,
    Practice,
    Remittance,
    RemittanceLine,
    RemittanceLineStatus,
)
from billing.money import format_cents
from billing.services.insurance import InsurancePaymentInvalid, insurance_payment_record
from billing.services.pricing import deductible_remaining
from billing.services.schedule import SESSION_KINDS

REVERSAL = "22"
DENIED = "4"
PRIMARY_STATUSES = ("1", "19")  # processed as primary (19: and forwarded to another payer)
CLAIM_STATUS = {"1": "primary", "2": "secondary", "3": "tertiary", "4": "denied", "19": "primary, forwarded",
                "20": "secondary, forwarded", "21": "tertiary, forwarded", "22": "reversal",
                "23": "not our claim, forwarded", "25": "predetermination"}
# Patient responsibility (group PR) reason codes the portal keeps apart.
DEDUCTIBLE, COINSURANCE, COPAY = "1", "2", "3"

POSTED, UNMATCHED, ALREADY, REVERSED = "posted", "unmatched", "already posted", "reversal"


# --- What the file says (plain data) ---------------------------------------------------------------------

@dataclass(frozen=True)
class Adjustment:
    group: str  # CO contractual, PR patient responsibility, OA other, PI payer initiated
    reason: str
    amount_cents: int


@dataclass
class ServiceLineIn:
    cpt_code: str
    modifiers: list[str]
    charge_cents: int
    paid_cents: int
    units: str
    service_date: dt.date | None
    adjustments: list[Adjustment] = field(default_factory=list)
    allowed_cents: int | None = None  # AMT*B6 when the payer gives it

    def pr(self, reason: str | None = None) -> int:
        return sum(a.amount_cents for a in self.adjustments if a.group == "PR" and reason in (None, a.reason))

    @property
    def allowed(self) -> int:
        return self.allowed_cents if self.allowed_cents is not None else self.paid_cents + self.pr()


@dataclass
class ClaimIn:
    claim_id: str
    status: str
    charge_cents: int
    paid_cents: int
    patient_responsibility_cents: int
    payer_claim_number: str
    patient_last: str
    patient_first: str
    member_id: str
    lines: list[ServiceLineIn] = field(default_factory=list)
    adjustments: list[Adjustment] = field(default_factory=list)  # at claim level (before any SVC)
    statement_date: dt.date | None = None  # DTM*232: the date of service of a claim without service lines

    @property
    def patient_name(self) -> str:
        return " ".join(p for p in (self.patient_first, self.patient_last) if p)


@dataclass
class RemittanceIn:
    payer_name: str
    payer_key: str
    payee_name: str
    payee_npi: str
    trace_number: str
    method: str
    paid_cents: int
    paid_on: dt.date
    claims: list[ClaimIn] = field(default_factory=list)


# --- What posting did ------------------------------------------------------------------------------------

@dataclass
class LineOutcome:
    claim_id: str
    claim_status: str
    line_number: int
    patient: str
    member_id: str
    cpt_code: str
    service_date: str
    charge_cents: int
    paid_cents: int
    patient_responsibility_cents: int
    outcome: str
    detail: str = ""
    line_id: int | None = None


@dataclass
class PostReport:
    payer_name: str
    payee_name: str
    payee_npi: str
    trace_number: str
    method: str
    paid_cents: int
    paid_on: str
    dry_run: bool
    applied: bool = False
    remittance_id: int | None = None
    claims: int = 0
    lines: list[LineOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys((POSTED, UNMATCHED, ALREADY, REVERSED), 0)
        for line in self.lines:
            counts[line.outcome] += 1
        return counts

    def summary(self) -> str:
        c = self.counts
        verb = "" if self.applied else "would be "
        claims, lines = ("claim" if self.claims == 1 else "claims"), ("line" if len(self.lines) == 1 else "lines")
        parts = [f"{self.claims} {claims}, {len(self.lines)} {lines}: {c[POSTED]} {verb}posted",
                 f"{c[UNMATCHED]} {verb}left for staff to match", f"{c[ALREADY]} already posted"]
        if c[REVERSED]:
            parts.append(f"{c[REVERSED]} {verb}reversed")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "counts": self.counts, "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PostReport:
        data = {k: v for k, v in data.items() if k not in ("counts", "summary")}
        data["lines"] = [LineOutcome(**line) for line in data.get("lines", [])]
        return cls(**data)


# --- Matching --------------------------------------------------------------------------------------------

class NoMatch(Exception):
    pass


def client_find(*, member_id: str, first_name: str, last_name: str) -> Client:
    """The one client this member id (on a coverage) or, failing it, this full name belongs to. Raises NoMatch."""
    if member_id.strip():
        ids = set(Coverage.objects.filter(member_id__iexact=member_id.strip()).values_list("client_id", flat=True))
        if len(ids) == 1:
            return Client.objects.get(pk=ids.pop())
        if len(ids) > 1:
            raise NoMatch(f"Member id {member_id} is on the coverage of {len(ids)} clients.")
    if first_name.strip() and last_name.strip():
        clients = list(Client.objects.filter(first_name__iexact=first_name.strip(),
                                             last_name__iexact=last_name.strip())[:2])
        if len(clients) == 1:
            return clients[0]
        if len(clients) > 1:
            raise NoMatch(f"Several clients are named {first_name} {last_name} and no coverage has member id "
                          f"{member_id or '(none given)'}.")
    raise NoMatch(f"No client has member id {member_id or '(none given)'} on a coverage, nor the name "
                  f"{first_name} {last_name}.")


def session_find(*, client: Client, day: dt.date | None, cpt_code: str, zone: dt.tzinfo) -> Appointment:
    """The client's one session on ``day`` with this CPT code (canceled ones left out). Raises NoMatch."""
    if day is None:
        raise NoMatch("The line gives no date of service.")
    start = dt.datetime.combine(day, dt.time.min, tzinfo=zone)
    sessions = Appointment.objects.filter(participants__client=client, starts_at__gte=start,
                                          starts_at__lt=start + dt.timedelta(days=1)).exclude(
        status=AppointmentStatus.CANCELED)
    if cpt_code:
        sessions = sessions.filter(service_code=cpt_code)
    found = list(sessions.order_by("starts_at")[:2])
    if len(found) == 1:
        return found[0]
    what = f"{cpt_code} session" if cpt_code else "session"
    if not found:
        raise NoMatch(f"{client} has no {what} on {day:%m/%d/%Y}.")
    raise NoMatch(f"{client} has several {what}s on {day:%m/%d/%Y}.")


# --- Posting ---------------------------------------------------------------------------------------------

def _reference(remittance: Remittance, line: RemittanceLine) -> str:
    return f"ERA {remittance.trace_number} claim {line.claim_id} line {line.line_number}"[:100]


def _coverage_for(client: Client, line: RemittanceLine, day: dt.date) -> Coverage | None:
    in_force = [c for c in Coverage.objects.filter(client=client).order_by("pk") if c.in_force_on(day)]
    if line.member_id:
        same = [c for c in in_force if c.member_id.strip().lower() == line.member_id.strip().lower()]
        if len(same) == 1:
            return same[0]
    if len(in_force) == 1 and line.claim_status in PRIMARY_STATUSES:
        return in_force[0]
    return None


def _benefits_update(*, line: RemittanceLine, client: Client, appointment: Appointment, zone: dt.tzinfo) -> str:
    """Correct the coverage with the insurer's figures for this session; returns what changed, for people."""
    if line.claim_status == DENIED:
        return ""
    day = appointment.starts_at.astimezone(zone).date()
    coverage = _coverage_for(client, line, day)
    if coverage is None:
        return ""
    changes: list[str] = []
    if coverage.deductible_cents:
        charge = Charge.objects.filter(appointment=appointment, client=client, kind__in=SESSION_KINDS).exclude(
            status=ChargeStatus.CANCELED).first()
        # What the portal counts as met, without its own estimate for this session, plus the insurer's figure.
        met = coverage.deductible_cents - deductible_remaining(coverage, excluding=charge)
        if charge is not None and charge.created_at <= coverage.benefits_as_of:
            met -= charge.deductible_applied_cents  # already in the reported figure
        met = min(max(met + line.deductible_cents, 0), coverage.deductible_cents)
        line.deductible_added_cents = line.deductible_cents
        if met != coverage.deductible_met_cents:
            changes.append(f"deductible met {format_cents(coverage.deductible_met_cents or 0)} -> "
                           f"{format_cents(met)}")
        coverage.deductible_met_cents = met
    base = line.allowed_cents - line.deductible_cents
    if line.coinsurance_cents > 0 and base > 0 and coverage.coinsurance_percent is not None:
        percent = (Decimal(line.coinsurance_cents * 100) / base).quantize(Decimal("0.01"), ROUND_HALF_UP)
        if abs(percent - coverage.coinsurance_percent) >= Decimal("0.5"):  # not a cent's rounding
            changes.append(f"coinsurance {coverage.coinsurance_percent.normalize():f}% -> {percent.normalize():f}%")
            coverage.coinsurance_percent = percent
    if line.copay_cents > 0 and coverage.copay_cents is not None and not coverage.coinsurance_percent \
            and coverage.copay_cents != line.copay_cents:
        changes.append(f"copay {format_cents(coverage.copay_cents)} -> {format_cents(line.copay_cents)}")
        coverage.copay_cents = line.copay_cents
    if coverage.deductible_cents or changes:
        coverage.save()  # benefits_as_of moves to now: the figures include every charge made so far
        line.coverage_id_updated = coverage.pk
    return f"Benefits updated: {', '.join(changes)}." if changes else ""


def _post_line(*, remittance: Remittance, line: RemittanceLine, appointment: Appointment, client: Client,
               zone: dt.tzinfo, now: dt.datetime) -> None:
    """Record the matched line as an EOB line and update benefits. Raises NoMatch if it cannot be."""
    figures = (line.allowed_cents, line.paid_cents, line.patient_responsibility_cents)
    if min(figures) < 0:
        raise NoMatch("The line has negative amounts (a correction): post it by hand.")
    if not Participant.objects.filter(appointment=appointment, client=client).exists():
        raise NoMatch(f"{client} did not attend that session.")
    try:
        recorded = insurance_payment_record(
            appointment=appointment, client=client, reference=_reference(remittance, line),
            payer_name=remittance.payer_name, allowed_cents=line.allowed_cents, paid_cents=line.paid_cents,
            patient_responsibility_cents=line.patient_responsibility_cents, paid_on=remittance.paid_on,
            source="era", now=now)
    except InsurancePaymentInvalid as problem:
        raise NoMatch(str(problem)) from None
    line.client, line.appointment, line.insurance_payment = client, appointment, recorded.payment
    line.status, line.posted_at = RemittanceLineStatus.POSTED, now
    line.detail = (f"Posted to {appointment.service_code} on {appointment.starts_at.astimezone(zone):%m/%d/%Y} "
                   f"for {client}. " + _benefits_update(line=line, client=client, appointment=appointment,
                                                        zone=zone))[:300]


def _reverse(*, remittance: Remittance, line: RemittanceLine, now: dt.datetime) -> str:
    """Take back the posted line this reversal line cancels; returns what was done."""
    earlier = (RemittanceLine.objects.select_for_update()
               .filter(claim_id=line.claim_id, remittance__payer_key=remittance.payer_key,
                       status=RemittanceLineStatus.POSTED, cpt_code=line.cpt_code, service_date=line.service_date)
               .exclude(remittance=remittance, claim_status=REVERSAL).order_by("-created_at", "-pk"))
    target = next((e for e in earlier if e.paid_cents == -line.paid_cents), None) or earlier.first()
    if target is None:
        return "Reverses a payment the portal never posted: nothing to take back."
    if target.insurance_payment is not None:
        target.insurance_payment.delete()  # its findings go with it; the remittance lines keep the history
    if target.deductible_added_cents and target.coverage_id_updated:
        coverage = Coverage.objects.select_for_update().filter(pk=target.coverage_id_updated).first()
        if coverage is not None and coverage.deductible_met_cents:
            coverage.deductible_met_cents = max(coverage.deductible_met_cents - target.deductible_added_cents, 0)
            coverage.save()
    target.status, target.insurance_payment = RemittanceLineStatus.REVERSED, None
    target.detail = f"Reversed by the payer in ERA {remittance.trace_number} ({remittance.paid_on:%m/%d/%Y})."
    target.save(update_fields=["status", "insurance_payment", "detail"])
    line.client_id, line.appointment_id = target.client_id, target.appointment_id
    return f"Took back the payment posted from ERA {target.remittance.trace_number}."


def _claim_lines(claim: ClaimIn) -> list[ServiceLineIn]:
    # A claim paid at claim level only (no SVC) is one line with the claim's figures.
    return claim.lines or [ServiceLineIn(cpt_code="", modifiers=[], charge_cents=claim.charge_cents,
                                         paid_cents=claim.paid_cents, units="", service_date=claim.statement_date,
                                         adjustments=list(claim.adjustments), allowed_cents=claim.paid_cents
                                         + claim.patient_responsibility_cents)]


def remittance_post(*, remittance: RemittanceIn, file_name: str, actor: str, now: dt.datetime,
                    dry_run: bool = False) -> PostReport:
    """Post one payment's claims (all of them or none); with ``dry_run`` report what posting would do."""
    report = PostReport(payer_name=remittance.payer_name, payee_name=remittance.payee_name,
                        payee_npi=remittance.payee_npi, trace_number=remittance.trace_number,
                        method=remittance.method, paid_cents=remittance.paid_cents,
                        paid_on=remittance.paid_on.isoformat(), dry_run=dry_run, claims=len(remittance.claims))
    zone = Practice.load().zone
    with transaction.atomic():
        row = Remittance.objects.select_for_update().filter(payer_key=remittance.payer_key,
                                                            trace_number=remittance.trace_number).first()
        if row is None:
            try:
                with transaction.atomic():
                    row = Remittance.objects.create(
                        payer_name=remittance.payer_name[:200], payer_key=remittance.payer_key[:80],
                        payee_name=remittance.payee_name[:200], payee_npi=remittance.payee_npi[:10],
                        trace_number=remittance.trace_number[:80], method=remittance.method[:10],
                        paid_cents=remittance.paid_cents, paid_on=remittance.paid_on, file_name=file_name[:255],
                        posted_by=actor[:150], created_at=now)
            except IntegrityError:  # posted at this very moment by another request: that one wins
                row = Remittance.objects.select_for_update().get(payer_key=remittance.payer_key,
                                                                 trace_number=remittance.trace_number)
        else:
            report.notes.append(f"This payment ({remittance.trace_number}) was posted on "
                                f"{row.created_at.astimezone(zone):%m/%d/%Y %H:%M}; only claims not seen then "
                                "are posted.")
        report.remittance_id = row.pk
        seen = set(RemittanceLine.objects.filter(remittance=row).values_list("claim_id", "claim_status"))
        for claim in remittance.claims:
            for number, service in enumerate(_claim_lines(claim), start=1):
                outcome = _post_claim_line(row=row, claim=claim, service=service, number=number,
                                           seen=(claim.claim_id, claim.status) in seen, zone=zone, now=now)
                report.lines.append(outcome)
        report.applied = not dry_run
        if dry_run:
            transaction.set_rollback(True)
    if dry_run:
        report.remittance_id = None
        for outcome in report.lines:
            outcome.line_id = None
    return report


def _post_claim_line(*, row: Remittance, claim: ClaimIn, service: ServiceLineIn, number: int, seen: bool,
                     zone: dt.tzinfo, now: dt.datetime) -> LineOutcome:
    outcome = LineOutcome(claim_id=claim.claim_id, claim_status=claim.status, line_number=number,
                          patient=claim.patient_name, member_id=claim.member_id,
                          cpt_code=service.cpt_code, service_date=service.service_date.isoformat()
                          if service.service_date else "", charge_cents=service.charge_cents,
                          paid_cents=service.paid_cents, patient_responsibility_cents=service.pr(), outcome=ALREADY)
    if seen:
        outcome.detail = "Posted before from this payment: unchanged."
        return outcome
    line = RemittanceLine(
        remittance=row, claim_id=claim.claim_id[:80], claim_status=claim.status[:3],
        payer_claim_number=claim.payer_claim_number[:80], line_number=number, patient_name=claim.patient_name[:200],
        member_id=claim.member_id[:80], cpt_code=service.cpt_code[:10], modifiers=":".join(service.modifiers)[:20],
        units=service.units[:15], service_date=service.service_date, charge_cents=service.charge_cents,
        allowed_cents=service.allowed, paid_cents=service.paid_cents, patient_responsibility_cents=service.pr(),
        deductible_cents=service.pr(DEDUCTIBLE), coinsurance_cents=service.pr(COINSURANCE),
        copay_cents=service.pr(COPAY),
        adjustments=[[a.group, a.reason, a.amount_cents] for a in service.adjustments], created_at=now)
    if claim.status == REVERSAL:
        line.status = RemittanceLineStatus.REVERSAL
        line.detail = _reverse(remittance=row, line=line, now=now)
        outcome.outcome = REVERSED
    else:
        try:
            client = client_find(member_id=claim.member_id, first_name=claim.patient_first,
                                 last_name=claim.patient_last)
            line.client = client
            appointment = session_find(client=client, day=service.service_date, cpt_code=service.cpt_code, zone=zone)
            with transaction.atomic():
                _post_line(remittance=row, line=line, appointment=appointment, client=client, zone=zone, now=now)
            outcome.outcome = POSTED
        except NoMatch as problem:
            line.status, line.detail = RemittanceLineStatus.UNMATCHED, str(problem)[:300]
            line.insurance_payment = line.appointment = None
            line.deductible_added_cents, line.coverage_id_updated = 0, None
            outcome.outcome = UNMATCHED
    line.save()
    outcome.detail, outcome.line_id = line.detail, line.pk
    return outcome


def remittance_line_match(*, line: RemittanceLine, appointment: Appointment, client: Client, actor: str,
                          now: dt.datetime) -> RemittanceLine:
    """Staff pick the session of a line the portal could not match; it is then posted as a matched one."""
    zone = Practice.load().zone
    with transaction.atomic():
        line = RemittanceLine.objects.select_for_update().select_related("remittance").get(pk=line.pk)
        if line.status != RemittanceLineStatus.UNMATCHED:
            raise Refused(f"This line is {line.get_status_display().lower()}: there is nothing to match.")
        try:
            with transaction.atomic():
                _post_line(remittance=line.remittance, line=line, appointment=appointment, client=client, zone=zone,
                           now=now)
        except NoMatch as problem:
            raise Refused(str(problem)) from None
        line.matched_by = actor[:150]
        line.save()
    return line


def line_candidates(line: RemittanceLine, *, zone: dt.tzinfo, days: int = 3, limit: int = 100) -> list[Participant]:
    """Sessions staff may pick for an unmatched line: the line's client's first, then anyone's, near its date."""
    day = line.service_date or line.remittance.paid_on
    start = dt.datetime.combine(day - dt.timedelta(days=days), dt.time.min, tzinfo=zone)
    end = dt.datetime.combine(day + dt.timedelta(days=days + 1), dt.time.min, tzinfo=zone)
    near = Participant.objects.filter(appointment__starts_at__gte=start, appointment__starts_at__lt=end).exclude(
        appointment__status=AppointmentStatus.CANCELED).select_related("appointment", "client")
    if line.client_id:
        near = near.filter(Q(client_id=line.client_id) | Q(appointment__service_code=line.cpt_code))
    return sorted(near[:limit], key=lambda p: (p.client_id != line.client_id,
                                               p.appointment.service_code != line.cpt_code,
                                               abs((p.appointment.starts_at.astimezone(zone).date() - day).days),
                                               p.appointment.starts_at))
