"""Insurance payments (EOB lines), from the EHR's API or typed in by staff: one write path for both.

An EOB line records what a payer allowed and paid for one client's session. **It never changes the
client's ledger by itself**: the ledger is what the client owes, which is what the portal charged. If
the EOB says the client owes something else (its patient responsibility differs from the charge), that
is an ``amount_mismatch`` reconciliation finding for staff to settle (a refund, or an adjustment they
post), never an automatic re-charge or refund of a card. A payer paying less than its fee schedule
allows (allowed amount less the client's responsibility) is an ``insurance_underpayment`` finding. Both
are checked as the line is recorded, and again by each weekly run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from billing.errors import BillingError
from billing.models import Appointment, Client, InsurancePayment, Participant
from billing.services.reconciliation import eob_findings_refresh

CREATED, UPDATED, UNCHANGED = "created", "updated", "unchanged"
FIGURES = ("payer_name", "allowed_cents", "paid_cents", "patient_responsibility_cents", "paid_on")


class InsurancePaymentInvalid(BillingError):
    """The line cannot be recorded; ``errors`` maps field names to messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(m for ms in errors.values() for m in ms))
        self.errors = errors


@dataclass(frozen=True)
class Recorded:
    status: str  # created | updated | unchanged
    payment: InsurancePayment


def insurance_payment_record(*, appointment: Appointment, client: Client, reference: str, payer_name: str,
                             allowed_cents: int, paid_cents: int, patient_responsibility_cents: int,
                             paid_on: dt.date, source: str, now: dt.datetime) -> Recorded:
    """Record one EOB line, recognised by (appointment, client, reference): a repeat changes nothing, a
    corrected line (same reference, other figures) replaces the figures. Raises InsurancePaymentInvalid."""
    errors: dict[str, list[str]] = {}
    if not Participant.objects.filter(appointment=appointment, client=client).exists():
        errors["client"] = [f"{client} did not attend this appointment."]
    if not reference.strip():
        errors["reference"] = ["Give the EOB or remittance reference."]
    if paid_cents > allowed_cents:
        errors["paid_cents"] = ["The payer cannot pay more than it allowed."]
    if errors:
        raise InsurancePaymentInvalid(errors)
    figures = {"payer_name": payer_name, "allowed_cents": allowed_cents, "paid_cents": paid_cents,
               "patient_responsibility_cents": patient_responsibility_cents, "paid_on": paid_on}
    with transaction.atomic():
        payment = InsurancePayment.objects.select_for_update().filter(
            appointment=appointment, client=client, reference=reference).first()
        status = UPDATED
        if payment is None:
            try:
                with transaction.atomic():
                    payment = InsurancePayment.objects.create(appointment=appointment, client=client,
                                                              reference=reference, source=source, **figures)
                status = CREATED
            except IntegrityError:  # a concurrent request recorded it first: correct that row instead
                payment = InsurancePayment.objects.select_for_update().get(
                    appointment=appointment, client=client, reference=reference)
        if status != CREATED:
            changed = [name for name, value in figures.items() if getattr(payment, name) != value]
            if not changed:
                return Recorded(UNCHANGED, payment)
            for name in changed:
                setattr(payment, name, figures[name])
            payment.save(update_fields=[*changed, "updated_at"])

        eob_findings_refresh(payments=[payment], now=now)
    return Recorded(status, payment)
