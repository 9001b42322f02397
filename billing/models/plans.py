"""Payment plans: a balance paid in installments the client agreed to on the portal."""

from __future__ import annotations

from django.db import models

from billing.models.charges import Charge
from billing.models.payments import ClientLink
from billing.models.people import Client


class PlanStatus(models.TextChoices):
    OFFERED = "offered", "Offered, waiting for the client"
    CURRENT = "current", "Current"
    COMPLETED = "completed", "Completed"
    LAPSED = "lapsed", "Lapsed"
    CANCELED = "canceled", "Canceled"


# A plan the client may still agree to, or is paying: at most one per client.
OPEN_PLAN_STATUSES = (PlanStatus.OFFERED, PlanStatus.CURRENT)


class PaymentPlan(models.Model):
    """A balance split into installments, each charged on its day to the card on file once the client agreed.

    It lapses when an installment is still unpaid after its retries end, or ``lapse_after_days`` after its day.
    """

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="payment_plans")
    status = models.CharField(max_length=20, choices=PlanStatus.choices, default=PlanStatus.OFFERED)
    total_cents = models.PositiveIntegerField()
    lapse_after_days = models.PositiveSmallIntegerField(
        default=30, help_text="An installment still unpaid this many days after its date lapses the plan.")
    form_key = models.CharField(max_length=64, unique=True, help_text="The staff form that offered it (sent once).")
    offered_at = models.DateTimeField()
    offered_by = models.CharField(max_length=100)
    agreed_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-offered_at", "-pk"]
        permissions = [("offer_payment_plan", "Can offer a payment plan"),
                       ("cancel_payment_plan", "Can cancel a payment plan")]
        constraints = [models.UniqueConstraint(fields=["client"], name="one_open_plan_per_client",
                                               condition=models.Q(status__in=["offered", "current"]))]

    def __str__(self) -> str:
        return f"Payment plan #{self.pk}"


class Installment(models.Model):
    """One agreed payment of a plan; its charge (kind installment) is written when the client agrees."""

    plan = models.ForeignKey(PaymentPlan, on_delete=models.PROTECT, related_name="installments")
    number = models.PositiveSmallIntegerField()
    due_on = models.DateField(help_text="The practice's day it is charged.")
    amount_cents = models.PositiveIntegerField(help_text="The amount agreed.")
    charge = models.OneToOneField(Charge, on_delete=models.PROTECT, null=True, blank=True, related_name="installment")

    class Meta:
        ordering = ["plan", "number"]
        constraints = [models.UniqueConstraint(fields=["plan", "number"], name="installment_number_once")]

    def __str__(self) -> str:
        return f"Installment {self.number} of plan #{self.plan_id}"


class PlanConsent(models.Model):
    """What the client agreed to, word for word, when and from where: at most one per plan."""

    plan = models.OneToOneField(PaymentPlan, on_delete=models.PROTECT, related_name="consent")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="plan_consents")
    link = models.ForeignKey(ClientLink, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    text = models.TextField()
    text_sha256 = models.CharField(max_length=64)
    agreed_at = models.DateTimeField()
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)

    def __str__(self) -> str:
        return f"Consent to plan #{self.plan_id}"
