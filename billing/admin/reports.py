"""Reports in the staff console: insurance payments, the weekly reconciliation, AR aging, superbills.

Each page parses its input and calls one service or selector (billing/services/insurance.py,
billing/services/reconciliation.py, billing/selectors.py, billing/services/documents.py).
"""

from __future__ import annotations

import datetime as dt
import io
import zipfile
import zoneinfo
from collections.abc import Iterable, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from billing.admin import money, people
from billing.admin.charts import bar_chart
from billing.admin.common import (
    ActionsOnlyMixin,
    DollarsField,
    ViewOnlyMixin,
    confirmation,
    confirmed,
    dollars,
    plural,
    staff_user,
)
from billing.admin.people import CLIENT_SEARCH
from billing.csv_safe import csv_safe_writer
from billing.local_time import iso_local
from billing.models import (
    BillingType,
    Client,
    Clinician,
    FindingStatus,
    InsurancePayment,
    Practice,
    ReconciliationFinding,
    ReconciliationRun,
)
from billing.money import cents_as_dollars, format_cents
from billing.selectors import BUCKETS, Aging, ar_aging_by_client, ar_aging_summary
from billing.services.documents import PeriodNotAllowed, superbill_pdf
from billing.services.insurance import insurance_payment_record
from billing.services.reconciliation import (
    WeekInvalid,
    finding_set_status,
    iso_week_monday,
    reconciliation_run,
    week_monday,
)

BUCKET_LABELS = {"current": "0-30 days", "days_31_60": "31-60 days", "days_61_90": "61-90 days",
                 "days_over_90": "Over 90 days"}
BILLING_TYPE_LABELS = dict(BillingType.choices)


def _today() -> dt.date:
    return timezone.now().astimezone(Practice.current_zone()).date()


def _csv_response(filename: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> HttpResponse:
    out = io.StringIO()
    writer = csv_safe_writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- Insurance payments ----------------------------------------------------------------------------------

class InsurancePaymentForm(forms.ModelForm):
    """Staff type an EOB line; it is saved by the same service as the API's POST."""

    allowed_cents = DollarsField(label="Allowed ($)")
    paid_cents = DollarsField(label="Paid ($)")
    patient_responsibility_cents = DollarsField(label="Client responsibility ($)")

    class Meta:
        model = InsurancePayment
        fields = ("appointment", "client", "payer_name", "allowed_cents", "paid_cents",
                  "patient_responsibility_cents", "paid_on", "reference")

    def _post_clean(self) -> None:
        # No model validation here: the same (appointment, client, reference) again is an update, as with
        # the API, and the service checks the rest (the form's clean checks it first, for messages).
        self.instance = forms.models.construct_instance(self, self.instance, self._meta.fields)


class InsurancePaymentAdmin(admin.ModelAdmin):
    """EOB lines: recorded by the EHR's API or here, never changed or deleted by hand afterwards."""

    form = InsurancePaymentForm
    list_display = ("paid_on", "client", "payer_name", "allowed", "paid", "patient_responsibility", "reference",
                    "source")
    list_filter = ("source", "payer_name")
    list_select_related = ("client",)
    search_fields = (*CLIENT_SEARCH, "=reference", "payer_name")
    date_hierarchy = "paid_on"
    show_full_result_count = False
    raw_id_fields = ("appointment", "client")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: InsurancePayment, form: Any, change: bool) -> None:
        data = form.cleaned_data
        # The form checked what the service checks (get_form), so this records or updates the line.
        recorded = insurance_payment_record(
            appointment=data["appointment"], client=data["client"], reference=data["reference"],
            payer_name=data.get("payer_name") or "", allowed_cents=data["allowed_cents"],
            paid_cents=data["paid_cents"], patient_responsibility_cents=data["patient_responsibility_cents"],
            paid_on=data["paid_on"], source=f"staff:{staff_user(request).get_username()}"[:50], now=timezone.now())
        obj.pk = recorded.payment.pk
        obj.__dict__.update({k: v for k, v in recorded.payment.__dict__.items() if not k.startswith("_")})

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form_class = super().get_form(request, obj, change=change, **kwargs)

        class Checked(form_class):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                data = super().clean()
                appointment, client = data.get("appointment"), data.get("client")
                if appointment is not None and client is not None and not appointment.participants.filter(
                        client=client).exists():
                    self.add_error("client", f"{client} did not attend this appointment.")
                paid, allowed = data.get("paid_cents"), data.get("allowed_cents")
                if paid is not None and allowed is not None and paid > allowed:
                    self.add_error("paid_cents", "The payer cannot pay more than it allowed.")
                return data

        return Checked

    @admin.display(description="Allowed", ordering="allowed_cents")
    def allowed(self, payment: InsurancePayment) -> str:
        return dollars(payment.allowed_cents)

    @admin.display(description="Paid", ordering="paid_cents")
    def paid(self, payment: InsurancePayment) -> str:
        return dollars(payment.paid_cents)

    @admin.display(description="Client responsibility")
    def patient_responsibility(self, payment: InsurancePayment) -> str:
        return dollars(payment.patient_responsibility_cents)


# --- Reconciliation findings -----------------------------------------------------------------------------

class WeekFilter(admin.SimpleListFilter):
    title = "week"
    parameter_name = "week"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        monday = week_monday(_today())
        # This week first: a run on demand finds what is already missing from it.
        weeks = [monday - dt.timedelta(days=7 * n) for n in range(0, 9)]
        return [(f"{w:%G-W%V}", f"{w:%G-W%V} ({w:%b %-d}{', this week' if w == monday else ''})") for w in weeks]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if not self.value():
            return queryset
        try:
            return queryset.filter(week=iso_week_monday(self.value() or ""))
        except WeekInvalid:
            return queryset.none()


class FoundFilter(admin.SimpleListFilter):
    title = "still found"
    parameter_name = "found"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Found by the last run"), ("no", "No longer found")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        match self.value():
            case "yes":
                return queryset.filter(gone_at__isnull=True)
            case "no":
                return queryset.filter(gone_at__isnull=False)
        return queryset


class StatusReasonForm(forms.Form):
    reason = forms.CharField(max_length=300, required=False, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="What was done, or why this is not a problem.")

    def __init__(self, *args: Any, required: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].required = required


class RunForm(forms.Form):
    week = forms.RegexField(r"^\d{4}-W\d{2}$", help_text="An ISO week, e.g. 2026-W48 (Monday to Sunday).")


FINDING_CSV_HEADER = ("week", "kind", "status", "service_date", "client", "client_external_id", "appointment",
                      "appointment_external_id", "charge", "stripe", "expected_dollars", "actual_dollars", "detail",
                      "status_reason", "status_by", "status_at")


def _csv_dollars(cents: int | None) -> str:
    """Dollars as a plain number (12.50, -12.50) that a spreadsheet adds up; empty for no amount."""
    return "" if cents is None else cents_as_dollars(cents)


def findings_csv_rows(findings: Iterable[ReconciliationFinding], zone: zoneinfo.ZoneInfo) -> Iterable[list[Any]]:
    """Dates are the practice's days; ``status_at`` is ISO 8601 in the practice's zone, with its offset."""
    for f in findings:
        yield [f.iso_week, f.kind, f.status, f.service_date or "", str(f.client) if f.client else "",
               f.client.external_id if f.client else "", f.appointment_id or "",
               f.appointment.external_id if f.appointment else "", f.charge_id or "", f.stripe_reference,
               _csv_dollars(f.expected_cents), _csv_dollars(f.actual_cents),
               f.detail, f.status_reason, f.status_by.get_username() if f.status_by else "",
               iso_local(f.status_at, zone)]


class ReconciliationFindingAdmin(ActionsOnlyMixin, admin.ModelAdmin):
    list_display = ("week_label", "kind", "service_date", "client", "appointment", "expected", "actual", "detail",
                    "status", "status_reason")
    list_filter = (WeekFilter, "kind", "status", FoundFilter)
    list_select_related = ("client", "appointment", "status_by")
    search_fields = ("client__last_name", "client__first_name", "client__email", "detail", "=stripe_reference")
    show_full_result_count = False
    ordering = ("-week", "kind", "service_date", "id")
    actions = ("mark_resolved", "mark_ignored", "reopen", "export_csv")
    change_list_template = "admin/billing/reconciliationfinding/change_list.html"
    fieldsets = (
        (None, {"fields": ("kind", "week", "service_date", "client", "appointment", "charge", "insurance_payment",
                           "stripe_reference", "expected_cents", "actual_cents", "detail")}),
        ("Status", {"fields": ("status", "status_reason", "status_by", "status_at")}),
        ("Runs", {"fields": ("key", "first_found_at", "last_found_at", "gone_at")}),
    )

    change_form_template = "admin/billing/reconciliationfinding/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        settle = path("<path:object_id>/settle/", self.admin_site.admin_view(self.settle_view),
                      name="billing_reconciliationfinding_settle")
        return [path("run/", self.admin_site.admin_view(self.run_view), name="billing_reconciliation_run"), settle,
                *super().get_urls()]

    def settle_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Settle the finding with a refund, an adjustment or a write-off (billing/admin/money.py)."""
        return money.finding_settle_view(self, request, object_id)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        finding = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if finding is not None and finding.client_id and finding.status == FindingStatus.OPEN \
                and money.may_settle(request):
            extra_context["settle_url"] = reverse("admin:billing_reconciliationfinding_settle", args=[finding.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def run_view(self, request: HttpRequest) -> HttpResponse:
        """Reconcile any week now (the schedule does the week before, each Monday)."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        initial = {"week": f"{week_monday(_today()) - dt.timedelta(days=7):%G-W%V}"}
        form = RunForm(request.POST or None, initial=initial)
        if request.method == "POST" and form.is_valid():
            try:
                monday = iso_week_monday(form.cleaned_data["week"])
            except WeekInvalid as error:
                form.add_error("week", str(error))
            else:
                result = reconciliation_run(week=monday, now=timezone.now(), trigger="staff",
                                            actor=f"staff:{staff_user(request).get_username()}")
                self.message_user(request, f"Reconciled {monday:%G-W%V}: {plural(result.findings, 'finding')}.",
                                  messages.SUCCESS)
                if result.stripe_error:
                    self.message_user(request, result.stripe_error, messages.WARNING)
                url = reverse("admin:billing_reconciliationfinding_changelist")
                return HttpResponseRedirect(f"{url}?week={monday:%G-W%V}&found=yes")
        context = {**self.admin_site.each_context(request), "title": "Run the weekly reconciliation",
                   "opts": self.model._meta, "form": form}
        return TemplateResponse(request, "admin/billing/reconciliationfinding/run.html", context)

    def _set_status(self, request: HttpRequest, queryset: QuerySet[ReconciliationFinding], status: str,
                    action: str, title: str, submit: str, reason_required: bool) -> TemplateResponse | None:
        findings = list(queryset.select_related("client"))
        form = StatusReasonForm(request.POST if confirmed(request) else None, required=reason_required)
        if form.is_valid():
            now, user = timezone.now(), staff_user(request)
            for finding in findings:
                finding_set_status(finding=finding, status=status, reason=form.cleaned_data["reason"], user=user,
                                   now=now)
            self.message_user(request, f"{plural(len(findings), 'finding')} marked {status}.", messages.SUCCESS)
            return None
        return confirmation(self, request, action=action, title=title, submit=submit, form=form,
                            rows=[f"{f.get_kind_display()}: {f.client or f.stripe_reference} ({f.detail})"
                                  for f in findings])

    @admin.action(description="Mark resolved (with a note)", permissions=["change"])
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[ReconciliationFinding]) -> Any:
        return self._set_status(request, queryset, FindingStatus.RESOLVED, "mark_resolved", "Resolve findings",
                                "Mark resolved", reason_required=False)

    @admin.action(description="Ignore (with a reason)", permissions=["change"])
    def mark_ignored(self, request: HttpRequest, queryset: QuerySet[ReconciliationFinding]) -> Any:
        return self._set_status(request, queryset, FindingStatus.IGNORED, "mark_ignored", "Ignore findings",
                                "Ignore", reason_required=True)

    @admin.action(description="Open again", permissions=["change"])
    def reopen(self, request: HttpRequest, queryset: QuerySet[ReconciliationFinding]) -> Any:
        return self._set_status(request, queryset, FindingStatus.OPEN, "reopen", "Open findings again", "Open again",
                                reason_required=False)

    @admin.action(description="Export as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[ReconciliationFinding]) -> HttpResponse:
        rows = queryset.select_related("client", "appointment", "status_by").order_by("week", "kind", "service_date",
                                                                                     "key")
        return _csv_response("reconciliation-findings.csv", FINDING_CSV_HEADER,
                             findings_csv_rows(rows, Practice.current_zone()))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if request.GET.get("format") == "csv":  # the whole filtered list, not only a selection
            changelist = self.get_changelist_instance(_without_format(request))
            return self.export_csv(request, changelist.get_queryset(request))
        return super().changelist_view(request, extra_context)

    @admin.display(description="Week", ordering="week")
    def week_label(self, finding: ReconciliationFinding) -> str:
        return finding.iso_week

    @admin.display(description="Expected", ordering="expected_cents")
    def expected(self, finding: ReconciliationFinding) -> str:
        return dollars(finding.expected_cents)

    @admin.display(description="Actual", ordering="actual_cents")
    def actual(self, finding: ReconciliationFinding) -> str:
        return dollars(finding.actual_cents)


def _without_format(request: HttpRequest) -> HttpRequest:
    query = request.GET.copy()
    query.pop("format", None)
    request.GET = query  # type: ignore[assignment]  # the list's own filters, without ours
    return request


class ReconciliationRunAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """Each run of the weekly report: scheduled, by staff or through the API, and whether Stripe was read."""

    list_display = ("started_at", "week_label", "trigger", "actor", "findings", "stripe_checked", "stripe_error")
    list_filter = ("trigger", "stripe_checked")
    show_full_result_count = False

    @admin.display(description="Week", ordering="week")
    def week_label(self, run: ReconciliationRun) -> str:
        return f"{run.week:%G-W%V}"


# --- Clients: AR aging and superbills --------------------------------------------------------------------

class AgingFilterForm(forms.Form):
    clinician = forms.ModelChoiceField(Clinician.objects.all(), required=False, empty_label="All clinicians")
    billing_type = forms.ChoiceField(choices=[("", "All billing types"), *BillingType.choices], required=False)
    order = forms.ChoiceField(choices=[("-total", "Largest balance first"), ("-days_over_90", "Oldest debt first"),
                                       ("name", "By name")], required=False)


class SuperbillForm(forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("start") and data.get("end") and data["end"] < data["start"]:
            raise ValidationError("The period ends before it starts.")
        return data


PAGE = 100


class ClientAdmin(people.ClientAdmin):
    """The client list with the reports staff run per client: superbills and AR aging."""

    actions = (*people.ClientAdmin.actions, "superbill_pdf")  # type: ignore[assignment]
    change_list_template = "admin/billing/client/change_list.html"

    def get_urls(self) -> list[URLPattern]:
        return [path("aging/", self.admin_site.admin_view(self.aging_view), name="billing_ar_aging"),
                *super().get_urls()]

    @admin.action(description="Superbill PDF", permissions=["view"])
    def superbill_pdf(self, request: HttpRequest, queryset: QuerySet[Client]) -> HttpResponse | None:
        clients = list(queryset.order_by("last_name", "first_name", "pk"))
        today = _today()
        first_of_month = today.replace(day=1)
        last_month_end = first_of_month - dt.timedelta(days=1)
        form = SuperbillForm(request.POST if confirmed(request) else None,
                             initial={"start": last_month_end.replace(day=1), "end": last_month_end})
        if form.is_valid():
            start, end = form.cleaned_data["start"], form.cleaned_data["end"]
            try:
                pdfs = [(client, superbill_pdf(client=client, start=start, end=end, today=today)) for client in clients]
            except PeriodNotAllowed as problem:
                self.message_user(request, str(problem), messages.ERROR)
                return None
            period = f"{start:%Y%m%d}-{end:%Y%m%d}"
            if len(pdfs) == 1:
                response = HttpResponse(pdfs[0][1], content_type="application/pdf")
                response["Content-Disposition"] = f'attachment; filename="superbill-{pdfs[0][0].pk}-{period}.pdf"'
                return response
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for client, pdf in pdfs:
                    name = "".join(ch for ch in f"{client.last_name}-{client.first_name}" if ch.isalnum() or ch == "-")
                    archive.writestr(f"superbill-{name}-{client.pk}-{period}.pdf", pdf)
            response = HttpResponse(buffer.getvalue(), content_type="application/zip")
            response["Content-Disposition"] = f'attachment; filename="superbills-{period}.zip"'
            return response
        return confirmation(self, request, action="superbill_pdf", title="Superbills", submit="Download",
                            form=form, intro="A superbill PDF for each client (several come as one zip file):",
                            rows=[str(c) for c in clients])

    def aging_view(self, request: HttpRequest) -> HttpResponse:
        """AR aging: the practice's total and each client with a balance, by age; CSV with ?format=csv."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = AgingFilterForm(request.GET or None)
        filters: dict[str, Any] = {}
        order = "-total"
        if form.is_valid():
            clinician = form.cleaned_data.get("clinician")
            filters = {"clinician_id": clinician.pk if clinician else None,
                       "billing_type": form.cleaned_data.get("billing_type") or None}
            order = form.cleaned_data.get("order") or order
        today = _today()
        if request.GET.get("format") == "csv":
            rows = ar_aging_by_client(today, order=order, limit=None, **filters)
            return _csv_response(f"ar-aging-{today:%Y%m%d}.csv",
                                 ("Client ID", "Client", "Billing type", *(f"{BUCKET_LABELS[b]} ($)" for b in BUCKETS),
                                  "Total ($)"),
                                 ([r.client_id, r.name, BILLING_TYPE_LABELS.get(r.billing_type, r.billing_type),
                                   *(cents_as_dollars(v) for v in (*r.aging.as_dict().values(), r.aging.total))]
                                  for r in rows))
        count, total = ar_aging_summary(today, **filters)
        last_page = max((count + PAGE - 1) // PAGE, 1)
        try:  # a page past the end shows the last one (a number too large for the database included)
            page = min(max(int(request.GET.get("page", "1")), 1), last_page)
        except ValueError:
            page = 1
        rows = ar_aging_by_client(today, order=order, limit=PAGE, offset=(page - 1) * PAGE, **filters)
        query = request.GET.copy()
        query.pop("page", None)
        context = {
            **self.admin_site.each_context(request), "title": "AR aging", "opts": self.model._meta, "form": form,
            "today": today, "count": count, "total": _aging_display(total), "buckets": BUCKET_LABELS,
            "chart": aging_chart(total),
            "rows": [{"row": r, "cells": _aging_display(r.aging),
                      "billing_type": BILLING_TYPE_LABELS.get(r.billing_type, r.billing_type)} for r in rows],
            "page": page, "has_next": page * PAGE < count, "has_previous": page > 1, "query": query.urlencode(),
        }
        return TemplateResponse(request, "admin/billing/client/aging.html", context)


def _aging_display(aging: Aging) -> list[str]:
    return [format_cents(v) for v in (*aging.as_dict().values(), aging.total)]


def aging_chart(aging: Aging) -> Any:
    return bar_chart(title="AR aging", unit="dollars",
                     bars=[(BUCKET_LABELS[name], value) for name, value in aging.as_dict().items()])

