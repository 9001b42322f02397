from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from billing.models.appointments import Appointment
from billing.models.charges import Charge
from billing.models.insurance import InsurancePayment
from billing.models.people import Client


class FindingKind(models.TextChoices):
    UNPAID_SESSION = "unpaid_session", "Session with no payment"
    AMOUNT_MISMATCH = "amount_mismatch", "Amount differs"
    INSURANCE_UNDERPAYMENT = "insurance_underpayment", "Insurance paid below the fee schedule"
    UNMATCHED_PAYMENT = "unmatched_payment", "Stripe payment matching no session"


class FindingStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"
    IGNORED = "ignored", "Ignored"


class ReconciliationFinding(models.Model):
    """One thing the weekly reconciliation found that does not add up (docs/product.md, workflow 10).

    ``key`` names what the finding is about (``appointment:12:client:7``, ``charge:40``, ``eob:9``,
    ``stripe:ch_123``) so that running the report again updates the same row: the figures follow the
    data, the status staff set stays. A finding that is no longer found is closed by the system
    (``resolved``, by nobody); one staff resolved or ignored is left as they left it.
    """

    kind = models.CharField(max_length=30, choices=FindingKind.choices)
    key = models.CharField(max_length=120, help_text="What the finding is about; stable across runs.")
    week = models.DateField(help_text="The Monday of the ISO week the finding belongs to.")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, null=True, blank=True,
                               related_name="reconciliation_findings")
    appointment = models.ForeignKey(Appointment, on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="reconciliation_findings")
    charge = models.ForeignKey(Charge, on_delete=models.CASCADE, null=True, blank=True,
                               related_name="reconciliation_findings")
    insurance_payment = models.ForeignKey(InsurancePayment, on_delete=models.CASCADE, null=True, blank=True,
                                          related_name="reconciliation_findings")
    stripe_reference = models.CharField(max_length=100, blank=True,
                                        help_text="The Stripe charge (and PaymentIntent) for unmatched payments.")
    service_date = models.DateField(null=True, blank=True)
    expected_cents = models.IntegerField(null=True, blank=True)
    actual_cents = models.IntegerField(null=True, blank=True)
    detail = models.CharField(max_length=300, blank=True)

    status = models.CharField(max_length=10, choices=FindingStatus.choices, default=FindingStatus.OPEN)
    status_reason = models.CharField(max_length=300, blank=True)
    status_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    status_at = models.DateTimeField(null=True, blank=True)

    first_found_at = models.DateTimeField()
    last_found_at = models.DateTimeField()
    gone_at = models.DateTimeField(null=True, blank=True, help_text="When a re-run no longer found it.")

    class Meta:
        ordering = ["-week", "kind", "service_date", "id"]
        constraints = [models.UniqueConstraint(fields=["kind", "key"], name="finding_once_per_thing")]
        indexes = [
            models.Index(fields=["week", "kind"], name="finding_week_kind"),
            models.Index(fields=["status", "week"], name="finding_status_week"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.week:%G-W%V})"

    @property
    def iso_week(self) -> str:
        return f"{self.week:%G-W%V}"


class ReconciliationRun(models.Model):
    """One run of the weekly report: when, by whom, and whether Stripe could be read."""

    week = models.DateField(help_text="The Monday of the ISO week reconciled.")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    trigger = models.CharField(max_length=20, help_text="schedule, staff or api")
    actor = models.CharField(max_length=100)
    findings = models.PositiveIntegerField(default=0)
    stripe_checked = models.BooleanField(default=False)
    stripe_error = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["week", "trigger"], name="recon_run_week")]
        constraints = [models.UniqueConstraint(fields=["week"], condition=models.Q(trigger="schedule"),
                                               name="recon_scheduled_once_per_week")]

    def __str__(self) -> str:
        return f"Reconciliation of {self.week:%G-W%V} at {timezone.localtime(self.started_at):%Y-%m-%d %H:%M}"
