"""The staff console as the portal assembles it: Django's admin with the billing pages (billing/admin/),
the second factor and the audit-trail search (portal/security_admin.py), and the practice's front page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from billing import models
from billing.admin import appointments, charges, emails, metrics, people, practice, records, reports, review
from billing.models import Practice
from billing.money import format_cents
from billing.selectors import dashboard
from portal.security_admin import StaffSecuritySiteMixin


def _practice(request: HttpRequest) -> Practice:
    # Every admin page shows the practice's name; read the row once per request.
    practice: Practice | None = getattr(request, "_billing_practice", None)
    if practice is None:
        practice = Practice.load()
        request._billing_practice = practice  # type: ignore[attr-defined]
    return practice


class PracticeAdminSite(StaffSecuritySiteMixin, admin.AdminSite):
    """The staff console: Django's admin, branded, whose front page says what needs a person today."""

    site_header = "Practice billing"
    site_title = "Practice billing"
    index_title = "Today"
    index_template = "admin/billing/today.html"

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name)
        self.register(models.Practice, practice.PracticeAdmin)
        self.register(models.Client, reports.ClientAdmin)  # people.ClientAdmin + superbills and AR aging
        self.register(models.Clinician, people.ClinicianAdmin)
        self.register(models.Payer, people.PayerAdmin)
        self.register(models.Service, people.ServiceAdmin)
        self.register(models.FeeScheduleEntry, people.FeeScheduleEntryAdmin)
        self.register(models.CategoryRate, people.CategoryRateAdmin)
        self.register(models.Coverage, people.CoverageAdmin)
        self.register(models.PolicyAcknowledgment, people.PolicyAcknowledgmentAdmin)
        self.register(models.Appointment, appointments.AppointmentAdmin)
        self.register(models.AppointmentEvent, appointments.AppointmentEventAdmin)
        self.register(models.Charge, charges.ChargeAdmin)
        self.register(models.ChargeEvent, charges.ChargeEventAdmin)
        self.register(models.PaymentAttempt, charges.PaymentAttemptAdmin)
        self.register(models.LedgerEntry, charges.LedgerEntryAdmin)
        self.register(models.ReviewItem, review.ReviewItemAdmin)
        self.register(models.Refund, records.RefundAdmin)
        self.register(models.ClientLink, records.ClientLinkAdmin)
        self.register(models.StaffAction, records.StaffActionAdmin)
        self.register(models.CardConsent, records.CardConsentAdmin)
        self.register(models.OutboundEmail, records.OutboundEmailAdmin)
        self.register(models.StripeEvent, records.StripeEventAdmin)
        self.register(models.InsurancePayment, reports.InsurancePaymentAdmin)
        self.register(models.ReconciliationFinding, reports.ReconciliationFindingAdmin)
        self.register(models.ReconciliationRun, reports.ReconciliationRunAdmin)
        self.register(models.BalanceEpisode, records.BalanceEpisodeAdmin)
        self.register(models.BalanceAllocation, records.BalanceAllocationAdmin)
        self.register(models.EmailTemplate, emails.EmailTemplateAdmin)
        self.register(models.AuditSeal, records.AuditSealAdmin)

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        if request.user.is_active and request.user.is_staff:
            context["site_header"] = f"{self.site_header} · {_practice(request).name}"
        return context

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        queues = dashboard.today(now=timezone.now(), zone=_practice(request).zone)
        # Templates cannot turn cents into dollars; the rows carry their amount ready to show.
        for row in (*queues["charges_due"].rows, *queues["stuck_charges"].rows, *queues["held_charges"].rows,
                    *queues["unknown_attempts"].rows):
            row.amount_display = format_cents(row.amount_cents)
        figures = metrics.front_page(now=timezone.now(), zone=_practice(request).zone, queues=queues)
        context = {"queues": queues, "figures": figures, **(extra_context or {})}
        return super().index(request, extra_context=context)
