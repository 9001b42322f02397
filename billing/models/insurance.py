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


class Remittance(models.Model):
    """One payment an insurer reported in an electronic remittance advice (an X12 835 file).

    Recognised by the payer and the payment's trace number (the check or EFT number): posting the same
    file again finds it and adds only claims it has not seen.
    """

    payer_name = models.CharField(max_length=200)
    payer_key = models.CharField(max_length=80, help_text="The payer's identifier (TRN03 or its name): with the "
                                                          "trace number it names the payment.")
    payee_name = models.CharField(max_length=200, blank=True)
    payee_npi = models.CharField("payee NPI", max_length=10, blank=True)
    trace_number = models.CharField(max_length=80, help_text="The check or EFT trace number (TRN02).")
    method = models.CharField(max_length=10, blank=True, help_text="ACH, CHK, BOP, FWT or NON (no payment).")
    paid_cents = models.IntegerField(help_text="The payment's total (BPR02).")
    paid_on = models.DateField(help_text="The payment date (BPR16).")
    file_name = models.CharField(max_length=255, blank=True)
    posted_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-paid_on", "-id"]
        constraints = [models.UniqueConstraint(fields=["payer_key", "trace_number"], name="remittance_once")]

    def __str__(self) -> str:
        return f"{self.payer_name} {self.trace_number} ({self.paid_on:%Y-%m-%d})"


class RemittanceLineStatus(models.TextChoices):
    POSTED = "posted", "Posted"
    UNMATCHED = "unmatched", "Waiting to be matched"
    REVERSED = "reversed", "Reversed by the payer"
    REVERSAL = "reversal", "Reversal of an earlier payment"


class RemittanceLine(models.Model):
    """One service line of a claim in a remittance, matched to a session (posted as an EOB line) or not."""

    remittance = models.ForeignKey(Remittance, on_delete=models.CASCADE, related_name="lines")
    claim_id = models.CharField(max_length=80, help_text="The practice's claim id (CLP01).")
    claim_status = models.CharField(max_length=3, help_text="CLP02: 1 primary, 2 secondary, 3 tertiary, "
                                                            "4 denied, 22 reversal...")
    payer_claim_number = models.CharField(max_length=80, blank=True)
    line_number = models.PositiveSmallIntegerField(help_text="The line's place in its claim, from 1.")
    patient_name = models.CharField(max_length=200)
    member_id = models.CharField("member ID", max_length=80, blank=True)
    cpt_code = models.CharField("CPT code", max_length=10, blank=True)
    modifiers = models.CharField(max_length=20, blank=True)
    units = models.CharField(max_length=15, blank=True)
    service_date = models.DateField(null=True, blank=True)
    charge_cents = models.IntegerField()
    allowed_cents = models.IntegerField()
    paid_cents = models.IntegerField()
    patient_responsibility_cents = models.IntegerField(help_text="The PR adjustments: what the client owes.")
    deductible_cents = models.IntegerField(default=0, help_text="PR-1.")
    coinsurance_cents = models.IntegerField(default=0, help_text="PR-2.")
    copay_cents = models.IntegerField(default=0, help_text="PR-3.")
    adjustments = models.JSONField(default=list, help_text="[[group, reason, cents], ...] as the payer gave them.")
    status = models.CharField(max_length=10, choices=RemittanceLineStatus.choices)
    detail = models.CharField(max_length=300, blank=True, help_text="Why it is unmatched, or what posting did.")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    appointment = models.ForeignKey(Appointment, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    insurance_payment = models.ForeignKey(InsurancePayment, on_delete=models.SET_NULL, null=True, blank=True,
                                          related_name="remittance_lines")
    deductible_added_cents = models.IntegerField(
        default=0, help_text="What posting added to the coverage's deductible met (taken back by a reversal).")
    coverage_id_updated = models.IntegerField(null=True, blank=True)
    matched_by = models.CharField(max_length=150, blank=True, help_text="Staff who matched it by hand.")
    created_at = models.DateTimeField()
    posted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["remittance", "claim_id", "line_number"]
        constraints = [models.UniqueConstraint(fields=["remittance", "claim_id", "claim_status", "line_number"],
                                               name="remittance_line_once")]
        indexes = [models.Index(fields=["status"], name="remittance_line_status"),
                   models.Index(fields=["claim_id"], name="remittance_line_claim")]

    def __str__(self) -> str:
        return f"Claim {self.claim_id}, line {self.line_number} ({self.patient_name})"
