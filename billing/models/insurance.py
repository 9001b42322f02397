from __future__ import annotations

from django.db import models

from billing.models.appointments import Appointment
from billing.models.people import Client


class InsurancePayment(models.Model):
    """One EOB line: what an insurer allowed and paid for one client's session, as the EHR reported it.

    It moves no money in the portal and posts nothing to the client's ledger (the ledger is what the
    client owes); reconciliation compares it with the fee schedule and with what the client was charged.
    """

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="insurance_payments")
    appointment = models.ForeignKey(Appointment, on_delete=models.PROTECT, related_name="insurance_payments")
    payer_name = models.CharField(max_length=200, blank=True)
    allowed_cents = models.PositiveIntegerField(help_text="What the payer allowed for the service.")
    paid_cents = models.PositiveIntegerField(help_text="What the payer paid.")
    patient_responsibility_cents = models.PositiveIntegerField(help_text="What the EOB says the client owes.")
    paid_on = models.DateField()
    reference = models.CharField(max_length=100, help_text="The EOB or remittance reference (e.g. check number).")
    source = models.CharField(max_length=50, blank=True, help_text="The EHR or integration that reported it.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-paid_on", "-id"]
        constraints = [
            # The EHR may send the same EOB line again: it is recognised by these three, never doubled.
            models.UniqueConstraint(fields=["appointment", "client", "reference"], name="insurance_payment_once"),
        ]
        indexes = [models.Index(fields=["paid_on"], name="insurance_payment_paid_on")]

    def __str__(self) -> str:
        return f"{self.payer_name or 'Insurance'} paid {self.paid_cents} on {self.paid_on:%Y-%m-%d}"
