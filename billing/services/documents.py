"""Superbills: a PDF per client and period that the client can send to their insurer (workflow 11).

It carries what a CMS-1500 claim asks for: the client (box 2, 3) and their member id (1a), the diagnoses
(box 21, lettered) and, per session, the date (24A), place of service (24B), CPT code and modifier (24D),
diagnosis pointer (24E), charge (24F), units (24G) and rendering clinician's NPI (24J); the practice's tax
id (25), total charge (28), amount paid (29), address and NPI (32, 33, 33a).

Only sessions that were billable appear (completed; not canceled, no-show or late-cancel, which
insurers are never billed for). The charge is the fee as billed: what the client's charge for the session
came to (their share plus what insurance was expected to pay), not the practice's list fee; a session with
no charge (priced at $0) shows the session's own fee. Paid is what the practice received from the client
toward the session, refunds deducted; the balance is the client's ledger balance on the day it is issued.
"""

from __future__ import annotations

import datetime as dt
import string
from dataclasses import dataclass

from django.template.loader import render_to_string

from billing.errors import Refused
from billing.local_time import practice_zone_active
from billing.models import (
    PAID_STATUSES,
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    Coverage,
    GoodFaithEstimate,
    Practice,
)
from billing.models import Service as ServiceModel
from billing.money import format_cents
from billing.selectors import client_balance

SESSION_CHARGE_KINDS = (ChargeKind.COPAY, ChargeKind.SESSION_FEE)
# CMS-1500 box 21 letters its diagnoses A to L; a longer list goes on as the alphabet does.
POINTER_LETTERS = string.ascii_uppercase


class PeriodNotAllowed(Refused):
    pass


@dataclass(frozen=True)
class SuperbillLine:
    date: dt.date
    clinician: str
    credentials: str
    npi: str
    place_of_service: str
    modifiers: list[str]
    cpt_code: str
    description: str
    diagnosis_codes: list[str]
    fee_cents: int
    paid_cents: int
    units: int = 1

    @property
    def fee(self) -> str:
        return format_cents(self.fee_cents)

    @property
    def paid(self) -> str:
        return format_cents(self.paid_cents)


@dataclass(frozen=True)
class _Billed:
    fee_cents: int = 0
    paid_cents: int = 0
    charged: bool = False


def _billed_by_session(client: Client, appointment_ids: list[int]) -> dict[int, _Billed]:
    """Per session, the fee as billed and what the client paid toward it (a canceled charge bills nothing)."""
    billed: dict[int, _Billed] = {}
    for charge in Charge.objects.filter(client=client, appointment_id__in=appointment_ids,
                                        kind__in=SESSION_CHARGE_KINDS).exclude(status=ChargeStatus.CANCELED):
        assert charge.appointment_id is not None
        share = charge.amount_cents + charge.prepaid_cents
        # The card charge brought in its amount once paid; a portal balance payment brought in prepaid.
        paid = charge.prepaid_cents + (charge.amount_cents if charge.status in PAID_STATUSES else 0)
        before = billed.get(charge.appointment_id, _Billed())
        billed[charge.appointment_id] = _Billed(
            fee_cents=before.fee_cents + share + charge.insurance_cents,
            paid_cents=before.paid_cents + max(paid - charge.refunded_cents, 0), charged=True)
    return billed


def superbill_lines(*, client: Client, start: dt.date, end: dt.date, practice: Practice) -> list[SuperbillLine]:
    zone = practice.zone
    begin = dt.datetime.combine(start, dt.time.min, tzinfo=zone)
    finish = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
    appointments = list(Appointment.objects.filter(
        participants__client=client, starts_at__gte=begin, starts_at__lt=finish,
        status=AppointmentStatus.COMPLETED).select_related("clinician").order_by("starts_at"))
    services = {s.cpt_code: s for s in ServiceModel.objects.all()}
    billed = _billed_by_session(client, [appointment.pk for appointment in appointments])
    lines = []
    for appointment in appointments:
        service = services.get(appointment.service_code)
        session = billed.get(appointment.pk, _Billed())
        fee = session.fee_cents if session.charged else (
            appointment.fee_cents if appointment.fee_cents is not None else (service.fee_cents if service else 0))
        lines.append(SuperbillLine(
            date=appointment.starts_at.astimezone(zone).date(), clinician=appointment.clinician.name,
            credentials=appointment.clinician.credentials, npi=appointment.clinician.npi,
            place_of_service=appointment.place_of_service, modifiers=appointment.cpt_modifiers,
            cpt_code=appointment.service_code, description=service.description if service else "",
            diagnosis_codes=list(appointment.diagnosis_codes), fee_cents=fee, paid_cents=session.paid_cents))
    return lines


def diagnosis_letters(lines: list[SuperbillLine]) -> dict[str, str]:
    """Each diagnosis once, lettered in the order first given (a session's primary diagnosis first)."""
    letters: dict[str, str] = {}
    for line in lines:
        for code in line.diagnosis_codes:
            if code not in letters:
                n = len(letters)
                letters[code] = POINTER_LETTERS[n] if n < len(POINTER_LETTERS) else str(n + 1)
    return letters


def superbill_pdf(*, client: Client, start: dt.date, end: dt.date, today: dt.date) -> bytes:
    """The superbill as a PDF. Raises PeriodNotAllowed for a period that makes no sense."""
    if end < start:
        raise PeriodNotAllowed("The period ends before it starts.")
    if (end - start).days > 366:
        raise PeriodNotAllowed("Choose a period of at most a year.")
    from weasyprint import HTML  # imported here: it loads system libraries and is needed only for PDFs

    practice = Practice.load()
    lines = superbill_lines(client=client, start=start, end=end, practice=practice)
    coverage = Coverage.objects.filter(client=client).select_related("payer").order_by("-effective_from").first()
    letters = diagnosis_letters(lines)
    total_paid = sum(line.paid_cents for line in lines)
    balance = client_balance(client)
    with practice_zone_active(practice):  # whoever asks (a client's link, staff, a command): the practice's dates
        html = render_to_string("documents/superbill.html", {
            "practice": practice, "client": client, "coverage": coverage, "start": start, "end": end, "today": today,
            "rows": [(line, "".join(letters[code] for code in line.diagnosis_codes[:4])) for line in lines],
            "total_fee": format_cents(sum(line.fee_cents for line in lines)),
            "total_paid": format_cents(total_paid), "nothing_paid": total_paid == 0,
            "balance": format_cents(abs(balance)), "balance_owed": balance > 0, "balance_credit": balance < 0,
            "place_missing": any(not line.place_of_service for line in lines),
            "diagnoses": list(letters.items())})
    return bytes(HTML(string=html).write_pdf())


def estimate_pdf(*, estimate: GoodFaithEstimate) -> bytes:
    """A good faith estimate as a PDF: what the law's model form holds (the client's page shows the same)."""
    from weasyprint import HTML  # imported here: it loads system libraries and is needed only for PDFs

    with practice_zone_active(Practice.load()):  # whoever asks: the practice's dates
        html = render_to_string("documents/good_faith_estimate.html", {
            "estimate": estimate, "lines": list(estimate.lines.all())})
    return bytes(HTML(string=html).write_pdf())
