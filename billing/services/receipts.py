"""What a receipt, a notice or a portal page says about a charge: date of service, therapist, service."""

from __future__ import annotations

from billing.models import Charge, Practice, Service
from billing.money import format_cents


def receipt_context(charge: Charge, practice: Practice | None = None,
                    services: dict[str, str] | None = None) -> dict[str, object]:
    appointment = charge.appointment
    zone = (practice or Practice.load()).zone
    if services is None:
        services = service_descriptions([charge])
    return {
        "charge": charge,
        "amount": format_cents(charge.amount_cents),
        # What the charge brought in altogether, including any part paid earlier on the portal.
        "total_paid": format_cents(charge.amount_cents + charge.prepaid_cents),
        "insurance": format_cents(charge.insurance_cents) if charge.insurance_cents else "",
        "session_date": appointment.starts_at.astimezone(zone).date() if appointment else None,
        "therapist": str(appointment.clinician) if appointment else "",
        "service": (services.get(appointment.service_code, "Therapy session") if appointment
                    else charge.get_kind_display()),
    }


def service_descriptions(charges: list[Charge]) -> dict[str, str]:
    """The practice's description of each session's service code, in one query."""
    codes = {charge.appointment.service_code for charge in charges if charge.appointment is not None}
    return dict(Service.objects.filter(cpt_code__in=codes).values_list("cpt_code", "description")) if codes else {}
