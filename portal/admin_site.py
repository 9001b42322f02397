"""The staff console as the portal assembles it: Django's admin with the billing pages (billing/admin/),
the second factor and the audit-trail search (portal/security_admin.py), and the practice's front page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils import timezone

from billing import models, roles
from billing.admin import (
    appointments,
    charges,
    emails,
    estimates,
    metrics,
    people,
    plans,
    practice,
    records,
    remittances,
    reports,
    review,
    statements,
    today,
)
from billing.admin.common import CappedCountPaginator
from billing.models import Practice
from billing.money import format_cents
from billing.selectors import dashboard
from portal.security_admin import StaffSecuritySiteMixin

# The front page's list of pages, grouped by the work they serve ("app_label.model" names). Anything not
# named here is technical and goes under System, which only administrators see.
SECTIONS: list[tuple[str, str, list[str]]] = [
    ("todays-work", "Today's work", ["billing.reviewitem", "billing.charge", "billing.reconciliationfinding"]),
    ("clients-sessions", "Clients & sessions", [
        "billing.client", "billing.appointment", "billing.coverage", "billing.policyacknowledgment",
        "billing.goodfaithestimate", "billing.clinician"]),
    ("money", "Money", [
        "billing.ledgerentry", "billing.paymentattempt", "billing.refund", "billing.insurancepayment",
        "ehr.remittanceupload", "billing.remittance", "billing.remittanceline", "billing.balanceepisode",
        "billing.balanceallocation", "billing.paymentplan", "billing.cardconsent"]),
    ("reports", "Reports", ["billing.reconciliationrun", "billing.statement", "billing.statementrun"]),
    ("integrations", "Integrations", [
        "ehr.apikey", "ehr.csvimport", "ehr.webhookendpoint", "ehr.webhookevent", "billing.stripeevent",
        "billing.clientlink", "billing.outboundemail"]),
    ("settings", "Settings", [
        "billing.practice", "billing.service", "billing.payer", "billing.feescheduleentry", "billing.categoryrate",
        "billing.emailtemplate", "auth.user", "auth.group"]),
]
SYSTEM = ("system", "System")


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
        self.register(models.Remittance, remittances.RemittanceAdmin)
        self.register(models.RemittanceLine, remittances.RemittanceLineAdmin)
        self.register(models.ReconciliationFinding, reports.ReconciliationFindingAdmin)
        self.register(models.ReconciliationRun, reports.ReconciliationRunAdmin)
        self.register(models.Statement, statements.StatementAdmin)
        self.register(models.StatementRun, statements.StatementRunAdmin)
        self.register(models.BalanceEpisode, records.BalanceEpisodeAdmin)
        self.register(models.BalanceAllocation, records.BalanceAllocationAdmin)
        self.register(models.PaymentPlan, plans.PaymentPlanAdmin)
        self.register(models.EmailTemplate, emails.EmailTemplateAdmin)
        self.register(models.AuditSeal, records.AuditSealAdmin)
        self.register(models.GoodFaithEstimate, estimates.GoodFaithEstimateAdmin)

    def register(self, model_or_iterable: Any, admin_class: Any = None, **options: Any) -> None:
        """Every list in the console counts its rows only so far (CappedCountPaginator): a table of a
        million rows costs a page what ten thousand do."""
        super().register(model_or_iterable, admin_class, **options)
        for model in ([model_or_iterable] if isinstance(model_or_iterable, type) else model_or_iterable):
            model_admin = self._registry[model]
            # Set on the registered instance, whichever admin class it is (django-stubs call these class-only).
            if model_admin.paginator is Paginator:
                model_admin.paginator = CappedCountPaginator  # type: ignore[misc]
            model_admin.show_full_result_count = False  # type: ignore[misc]

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        if request.user.is_active and request.user.is_staff:
            practice = _practice(request)
            # A practice previewing charging sees so on every page.
            preview = " · preview: charging is off" if practice.charging_preview else ""
            context["site_header"] = f"{self.site_header} · {practice.name}{preview}"
        return context

    def get_urls(self) -> list[URLPattern | URLResolver]:
        fix = path("today/fix/", self.admin_view(today.fix_view), name="today_fix")
        return [fix, *super().get_urls()]

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        """Every page the staff member may open, grouped by task (an app's own page keeps Django's list)."""
        apps = super().get_app_list(request, app_label)
        if app_label is not None:
            return apps
        pages = {f"{app['app_label']}.{page['object_name'].lower()}": page for app in apps for page in app["models"]}
        sections = []
        for slug, name, names in SECTIONS:
            shown = [pages.pop(page) for page in names if page in pages]
            if slug == "reports":
                shown = self._report_pages(request) + shown
            if shown:
                sections.append(_section(slug, name, shown))
        if pages and is_administrator(request):
            sections.append(_section(*SYSTEM, sorted(pages.values(), key=lambda page: str(page["name"]))))
        return sections

    def _report_pages(self, request: HttpRequest) -> list[dict[str, Any]]:
        """Reports that are pages rather than lists of rows."""
        pages = []
        if request.user.has_perm("billing.view_client"):
            pages.append(_page("AR aging", "aragingreport", reverse("admin:billing_ar_aging")))
        if request.user.has_perm("auditlog.view_logentry"):
            pages.append(_page("Audit trail", "audittrail", reverse("admin:audit_trail")))
        return pages

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        queues = dashboard.today(now=timezone.now(), zone=_practice(request).zone)
        # Templates cannot turn cents into dollars; the rows carry their amount ready to show, and each
        # row the fix its staff member may apply.
        for row in (*queues["charges_due"].rows, *queues["stuck_charges"].rows, *queues["held_charges"].rows,
                    *queues["fee_review"].rows, *queues["unknown_attempts"].rows):
            row.amount_display = format_cents(row.amount_cents)
        for row in (*queues["stuck_charges"].rows, *queues["held_charges"].rows, *queues["fee_review"].rows):
            row.fixes = today.charge_fixes(request, row)
        for row in (*queues["review_items"].rows, *queues["stripe_links"].rows):
            row.fixes = today.item_fixes(request, row)
        for row in queues["estimates_missing"].rows:
            row.fixes = today.estimate_fixes(request, row)
        figures = metrics.front_page(now=timezone.now(), zone=_practice(request).zone, queues=queues)
        context = {"queues": queues, "figures": figures, "estimate_batch_fixes": today.estimate_batch_fixes(
            request, queues["estimates_missing"].count), **(extra_context or {})}
        return super().index(request, extra_context=context)


def is_administrator(request: HttpRequest) -> bool:
    """A superuser, or a member of the Administrator role (read once per request)."""
    user = request.user
    if not (user.is_active and user.is_staff):
        return False
    if user.is_superuser:
        return True
    known: bool | None = getattr(request, "_portal_is_administrator", None)
    if known is None:
        known = user.groups.filter(name=roles.ADMINISTRATOR).exists()
        request._portal_is_administrator = known  # type: ignore[attr-defined]
    return known


def _section(slug: str, name: str, pages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": name, "app_label": slug, "app_url": f"#{slug}", "has_module_perms": True, "models": pages}


def _page(name: str, object_name: str, url: str) -> dict[str, Any]:
    return {"name": name, "object_name": object_name, "admin_url": url, "add_url": None, "view_only": True,
            "perms": {"view": True}}
