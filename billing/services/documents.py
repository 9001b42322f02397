"""Superbills: a PDF per client and period that the client can send to their insurer (workflow 11).

Only sessions that were billable appear (completed; not canceled, no-show or late-cancel, which
insurers are never billed for), each with the date, the clinician and NPI, CPT and ICD-10 codes, the
practice's fee and what the client paid toward it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Q
from django.template.loader import render_to_string

from billing.errors import Refused
from billing.local_time import practice_zone_active
from billing.models import (
    PAID_STATUSES,
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeKind,
    Client,
    Coverage,
    Practice,
)
from billing.models import Service as ServiceModel
from billing.money import format_cents


class PeriodNotAllowed(Refused):
    pass


@dataclass(frozen=True)
class SuperbillLine:
    date: dt.date
    clinician: str
    credentials: str
    npi: str
    cpt_code: str
    description: str
    diagnosis_codes: list[str]
    fee_cents: int
    paid_cents: int

    @property
    def fee(self) -> str:
        return format_cents(self.fee_cents)

    @property
    def paid(self) -> str:
        return format_cents(self.paid_cents)


def superbill_lines(*, client: Client, start: dt.date, end: dt.date, practice: Practice) -> list[SuperbillLine]:
    zone = practice.zone
    begin = dt.datetime.combine(start, dt.time.min, tzinfo=zone)
    finish = dt.datetime.combine(end + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
    appointments = (Appointment.objects.filter(participants__client=client, starts_at__gte=begin, starts_at__lt=finish,
                                               status=AppointmentStatus.COMPLETED)
                    .select_related("clinician").order_by("starts_at"))
    services = {s.cpt_code: s for s in ServiceModel.objects.all()}
    paid: dict[int, int] = {}
    for charge in Charge.objects.filter(client=client, appointment__in=appointments, status__in=PAID_STATUSES).filter(
            Q(kind=ChargeKind.COPAY) | Q(kind=ChargeKind.SESSION_FEE)):
        assert charge.appointment_id is not None
        paid[charge.appointment_id] = paid.get(charge.appointment_id, 0) + charge.amount_cents + charge.prepaid_cents \
            - charge.refunded_cents
    lines = []
    for appointment in appointments:
        service = services.get(appointment.service_code)
        fee = appointment.fee_cents if appointment.fee_cents is not None else (service.fee_cents if service else 0)
        lines.append(SuperbillLine(
            date=appointment.starts_at.astimezone(zone).date(), clinician=appointment.clinician.name,
            credentials=appointment.clinician.credentials, npi=appointment.clinician.npi,
            cpt_code=appointment.service_code, description=service.description if service else "",
            diagnosis_codes=list(appointment.diagnosis_codes), fee_cents=fee, paid_cents=paid.get(appointment.pk, 0)))
    return lines


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
    with practice_zone_active(practice):  # whoever asks (a client's link, staff, a command): the practice's dates
        html = render_to_string("documents/superbill.html", {
            "practice": practice, "client": client, "coverage": coverage, "start": start, "end": end, "today": today,
            "lines": lines, "total_fee": format_cents(sum(line.fee_cents for line in lines)),
            "total_paid": format_cents(sum(line.paid_cents for line in lines)),
            "diagnoses": sorted({code for line in lines for code in line.diagnosis_codes})})
    return bytes(HTML(string=html).write_pdf())
