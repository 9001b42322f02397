"""Good faith estimates (No Surprises Act, 45 CFR 149.610): what an uninsured or self-pay client is expected to
be charged over a period of up to 12 months, itemised, with what the law's model form holds.

An estimate is issued once and never edited: a change is a revised estimate, which supersedes it for the rest
of the period (``supersedes``). What the practice and the provider were called when it was issued is kept on
it, so the document reads the same years later.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models

from billing.models.people import Client, Clinician
from billing.validators import validate_cpt, validate_icd10_list


class EstimateStatus(models.TextChoices):
    ISSUED = "issued", "In force"
    SUPERSEDED = "superseded", "Superseded by a revised estimate"


class GoodFaithEstimate(models.Model):
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="estimates")
    status = models.CharField(max_length=20, choices=EstimateStatus.choices, default=EstimateStatus.ISSUED)
    period_start = models.DateField(help_text="The first day of service the estimate covers (practice's zone).")
    period_end = models.DateField(help_text="The last day of service it covers: at most 12 months after the start.")
    frequency = models.CharField(max_length=100, help_text='How often services are expected, e.g. "Weekly".')
    diagnosis_codes = models.JSONField(default=list, blank=True, validators=[validate_icd10_list],
                                       help_text="ICD-10 codes, if known.")
    total_cents = models.PositiveIntegerField(help_text="The total expected charges: the sum of the lines.")
    # The practice (convening provider) and the provider, as they were when it was issued.
    practice_name = models.CharField(max_length=200)
    practice_address = models.TextField(blank=True)
    practice_phone = models.CharField(max_length=40, blank=True)
    practice_email = models.CharField(max_length=254, blank=True)
    practice_npi = models.CharField(max_length=10, blank=True)
    practice_tax_id = models.CharField(max_length=20, blank=True)
    clinician = models.ForeignKey(Clinician, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    provider_name = models.CharField(max_length=200, blank=True)
    provider_credentials = models.CharField(max_length=40, blank=True)
    provider_npi = models.CharField(max_length=10, blank=True)
    supersedes = models.OneToOneField("self", on_delete=models.PROTECT, null=True, blank=True,
                                      related_name="superseded_by")
    revision_reason = models.CharField(max_length=300, blank=True)
    issued_at = models.DateTimeField()
    issued_by = models.CharField(max_length=100, help_text="staff:<username> or system.")
    superseded_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivered_to = models.CharField(max_length=254, blank=True)
    delivered_by = models.CharField(max_length=100, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=100, blank=True,
                                       help_text="client (on the portal) or staff:<username> (on paper).")
    acknowledged_ip = models.GenericIPAddressField(null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")

    class Meta:
        ordering = ["-issued_at", "-id"]
        verbose_name = "good faith estimate"
        indexes = [models.Index(fields=["client", "status", "period_start"], name="estimate_client_period")]

    def __str__(self) -> str:
        return f"Good faith estimate #{self.pk} for {self.client}"

    def covers(self, day: dt.date) -> bool:
        return self.period_start <= day <= self.period_end


class EstimateLine(models.Model):
    """One expected service: its CPT code, how many, and the charge for each."""

    estimate = models.ForeignKey(GoodFaithEstimate, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveSmallIntegerField(default=0)
    cpt_code = models.CharField("CPT code", max_length=5, validators=[validate_cpt])
    description = models.CharField(max_length=200)
    quantity = models.PositiveSmallIntegerField()
    unit_cents = models.PositiveIntegerField()
    total_cents = models.PositiveIntegerField()

    class Meta:
        ordering = ["estimate", "position", "id"]

    def __str__(self) -> str:
        return f"{self.quantity} x {self.cpt_code}"
