"""What a receipt, a notice or a portal page says about a charge: date of service, therapist, service.

A notice or a receipt may be about several sessions of one client (the charges of one batch): it lists
each session and the total, and records which charges it names and for how much (``charges_email``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from billing.models import Charge, Practice, Service
from billing.money import format_cents
from billing.services.notify import Email


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


def charges_context(charges: Sequence[Charge], practice: Practice,
                    services: dict[str, str] | None = None) -> dict[str, Any]:
    """An email about one client's charges: ``sessions`` (each as ``receipt_context`` describes a charge, by
    date of service) and their ``total``. With one session, that session's own variables as well, so the
    practice's wording written for one session still reads right."""
    if services is None:
        services = service_descriptions(list(charges))
    by_date = sorted(charges, key=lambda c: (c.appointment.starts_at if c.appointment else c.created_at, c.pk))
    sessions = [receipt_context(charge, practice, services) for charge in by_date]
    total = format_cents(sum(charge.amount_cents for charge in charges))
    context: dict[str, Any] = {"sessions": sessions, "total": total}
    if len(sessions) == 1:
        context.update(sessions[0])
    else:
        context["amount"] = total
    return context


def charges_email(*, prefix: str, charges: Sequence[Charge], template: str, practice: Practice,
                  context: dict[str, Any] | None = None, services: dict[str, str] | None = None) -> Email:
    """One email to a client about several of their charges, keyed by ``prefix`` and the charges with the
    amount it names for each (``notice:client:7:at:1764345600:charges:42-14000.43-9000``): the same
    announcement is written once, and an amount told again is a new one. Past the key's length, a digest of
    the same list stands for it; the list itself is kept on the email (``charge_amounts``)."""
    ordered = sorted(charges, key=lambda charge: charge.pk)
    pairs = tuple((charge.pk, charge.amount_cents) for charge in ordered)
    listed = ".".join(f"{pk}-{amount}" for pk, amount in pairs)
    key = f"{prefix}:charges:{listed}"
    if len(key) > 200:
        key = f"{prefix}:charges:sha256:{hashlib.sha256(listed.encode()).hexdigest()}"
    return Email(key, ordered[0].client, template, {**charges_context(ordered, practice, services), **(context or {})},
                 pairs)
