"""Good faith estimates for staff: issue one (or one for every self-pay client without one), revise it, email it
again, record an acknowledgment on paper. Each page or action calls one service in billing/services/estimates.py;
what the guard holds is released from the Today page's held charges (billing/admin/today.py)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from billing.admin.common import DollarsField, ReadOnlyInline, dollars, has_billing_permission, plural, staff_user
from billing.errors import BillingError
from billing.models import Client, EstimateLine, EstimateStatus, GoodFaithEstimate, Service
from billing.money import format_cents
from billing.services.estimates import (
    LineIn,
    estimate_acknowledge,
    estimate_create,
    estimate_default_lines,
    estimate_revise,
    estimate_send,
    estimates_create_missing,
    period_end_for,
)

LINE_ROWS = 4
ISSUE = "add_goodfaithestimate"
REVISE = "change_goodfaithestimate"


class EstimateForm(forms.Form):
    """The expected services (up to four lines) and what else the model form holds."""

    frequency = forms.CharField(max_length=100, initial="Weekly", help_text='How often, e.g. "Weekly".')
    diagnosis_codes = forms.CharField(max_length=200, required=False, label="Diagnosis (ICD-10), if known",
                                      help_text="Comma separated, e.g. F41.1, F32.1")

    def __init__(self, *args: Any, revising: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        services = [("", "-")] + [(s.cpt_code, str(s)) for s in Service.objects.order_by("cpt_code")]
        if not revising:
            self.fields["period_start"] = forms.DateField(initial=timezone.localdate, label="First day of service",
                                                          widget=forms.DateInput(attrs={"type": "date"}))
            self.fields["months"] = forms.IntegerField(min_value=1, max_value=12, initial=12, label="Months covered",
                                                       help_text="At most 12.")
        for n in range(1, LINE_ROWS + 1):
            self.fields[f"cpt_{n}"] = forms.ChoiceField(choices=services, required=n == 1, label=f"Service {n}")
            self.fields[f"quantity_{n}"] = forms.IntegerField(min_value=1, max_value=999, required=False,
                                                              label=f"How many ({n})")
            self.fields[f"price_{n}"] = DollarsField(required=False, label=f"Each ($) ({n})",
                                                     help_text="Empty: the client's rate, else the practice fee.")
        if revising:
            self.fields["why"] = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 2}),
                                                 label="Why it is revised", help_text="Printed on the estimate.")
        self.fields["send"] = forms.BooleanField(required=False, initial=True, label="Email it to the client now")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        lines = []
        for n in range(1, LINE_ROWS + 1):
            cpt, quantity = data.get(f"cpt_{n}"), data.get(f"quantity_{n}")
            if cpt and quantity is None:
                self.add_error(f"quantity_{n}", "Say how many.")
            elif cpt and quantity is not None:
                lines.append(LineIn(cpt, quantity, data.get(f"price_{n}")))
        data["lines"] = lines
        data["codes"] = [code for code in (data.get("diagnosis_codes") or "").split(",") if code.strip()]
        return data


def _line_initial(lines: list[LineIn]) -> dict[str, Any]:
    initial: dict[str, Any] = {}
    for n, line in enumerate(lines[:LINE_ROWS], start=1):
        initial.update({f"cpt_{n}": line.cpt_code, f"quantity_{n}": line.quantity, f"price_{n}": line.unit_cents})
    return initial


class EstimateLineInline(ReadOnlyInline):
    model = EstimateLine
    fields = ("cpt_code", "description", "quantity", "each", "line_total")
    show_change_link = False

    @admin.display(description="Each")
    def each(self, line: EstimateLine) -> str:
        return dollars(line.unit_cents)

    @admin.display(description="Expected charge")
    def line_total(self, line: EstimateLine) -> str:
        return dollars(line.total_cents)


class GoodFaithEstimateAdmin(admin.ModelAdmin):
    list_display = ("number", "client", "period", "total", "status", "delivered_at", "acknowledged_at")
    list_filter = ("status",)
    list_select_related = ("client",)
    search_fields = ("client__first_name", "client__last_name", "client__email")
    ordering = ("-issued_at", "-id")
    inlines = (EstimateLineInline,)
    change_form_template = "admin/billing/goodfaithestimate/change_form.html"
    actions = ("email_again", "record_paper_acknowledgment")
    fieldsets = (
        (None, {"fields": ("client", "status", "period_start", "period_end", "frequency", "diagnosis_codes",
                           "total", "supersedes", "revision_reason")}),
        ("As printed", {"fields": ("practice_name", "practice_npi", "practice_tax_id", "practice_address",
                                   "provider_name", "provider_credentials", "provider_npi")}),
        ("Issued, delivered, acknowledged", {"fields": (
            "issued_at", "issued_by", "superseded_at", "delivered_at", "delivered_to", "delivered_by",
            "acknowledged_at", "acknowledged_by", "acknowledged_ip")}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # issued from a client (the "Issue a good faith estimate" page), never typed in as a row

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [str(name) for _, options in self.fieldsets for name in options["fields"]]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    @admin.display(description="Estimate", ordering="pk")
    def number(self, estimate: GoodFaithEstimate) -> str:
        return f"#{estimate.pk}"

    @admin.display(description="Period")
    def period(self, estimate: GoodFaithEstimate) -> str:
        return f"{estimate.period_start:%Y-%m-%d} to {estimate.period_end:%Y-%m-%d}"

    @admin.display(description="Total", ordering="total_cents")
    def total(self, estimate: GoodFaithEstimate) -> str:
        return dollars(estimate.total_cents)

    def get_urls(self) -> list[URLPattern]:
        return [
            path("issue/<int:client_id>/", self.admin_site.admin_view(self.issue_view),
                 name="billing_goodfaithestimate_issue"),
            path("<int:estimate_id>/revise/", self.admin_site.admin_view(self.revise_view),
                 name="billing_goodfaithestimate_revise"),
            *super().get_urls(),
        ]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        estimate = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if estimate is not None and estimate.status == EstimateStatus.ISSUED and has_billing_permission(request,
                                                                                                         REVISE):
            extra_context["revise_url"] = reverse("admin:billing_goodfaithestimate_revise", args=[estimate.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def _page(self, request: HttpRequest, form: EstimateForm, title: str, client: Client,
              estimate: GoodFaithEstimate | None = None) -> TemplateResponse:
        return TemplateResponse(request, "admin/billing/goodfaithestimate/form.html", {
            **self.admin_site.each_context(request), "opts": self.model._meta, "title": title, "form": form,
            "client": client, "estimate": estimate,
            "estimate_total": format_cents(estimate.total_cents) if estimate else ""})

    def issue_view(self, request: HttpRequest, client_id: int) -> HttpResponse:
        """Issue an estimate for one client, priced from their rate or the practice's fees."""
        if not has_billing_permission(request, ISSUE):
            raise PermissionDenied
        client = Client.objects.filter(pk=client_id).first()
        if client is None:
            raise Http404
        today = timezone.localdate()
        form = EstimateForm(request.POST or None, initial=_line_initial(estimate_default_lines(
            client=client, period_start=today, period_end=period_end_for(today, 12))))
        if request.method == "POST" and form.is_valid():
            data, user, now = form.cleaned_data, staff_user(request), timezone.now()
            start: dt.date = data["period_start"]
            try:
                estimate = estimate_create(
                    client=client, period_start=start, period_end=period_end_for(start, data["months"]),
                    lines=data["lines"], frequency=data["frequency"], diagnosis_codes=data["codes"], now=now,
                    actor=f"staff:{user.get_username()}", user=user)
                sent = self._send(request, estimate, data["send"])
            except BillingError as problem:
                form.add_error(None, str(problem))
            else:
                self.message_user(request, f"Issued good faith estimate #{estimate.pk} for {client}: "
                                           f"{format_cents(estimate.total_cents)}{sent}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:billing_goodfaithestimate_change", args=[estimate.pk]))
        return self._page(request, form, f"Issue a good faith estimate for {client}", client)

    def revise_view(self, request: HttpRequest, estimate_id: int) -> HttpResponse:
        """A revised estimate for the rest of the period: what the guard held that now fits goes ahead."""
        if not has_billing_permission(request, REVISE):
            raise PermissionDenied
        estimate = GoodFaithEstimate.objects.select_related("client").filter(pk=estimate_id).first()
        if estimate is None:
            raise Http404
        lines = [LineIn(line.cpt_code, line.quantity, line.unit_cents) for line in estimate.lines.all()]
        form = EstimateForm(request.POST or None, revising=True, initial={
            **_line_initial(lines), "frequency": estimate.frequency,
            "diagnosis_codes": ", ".join(estimate.diagnosis_codes)})
        if request.method == "POST" and form.is_valid():
            data, user = form.cleaned_data, staff_user(request)
            try:
                revised = estimate_revise(estimate=estimate, lines=data["lines"], now=timezone.now(),
                                          actor=f"staff:{user.get_username()}", user=user, why=data["why"],
                                          frequency=data["frequency"], diagnosis_codes=data["codes"],
                                          send=data["send"] and bool(estimate.client.email))
            except BillingError as problem:
                form.add_error(None, str(problem))
            else:
                self.message_user(request, f"Issued revised estimate #{revised.pk} "
                                           f"({format_cents(revised.total_cents)}); #{estimate.pk} is superseded. "
                                           "Held charges that fit now are charged after a notice.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:billing_goodfaithestimate_change", args=[revised.pk]))
        return self._page(request, form, f"Revise good faith estimate #{estimate.pk} for {estimate.client}",
                          estimate.client, estimate)

    def _send(self, request: HttpRequest, estimate: GoodFaithEstimate, send: bool) -> str:
        if not send:
            return ""
        if not estimate.client.email:
            return " (no email address: print it and record the acknowledgment)"
        estimate_send(estimate=estimate, now=timezone.now(), actor=f"staff:{staff_user(request).get_username()}")
        return f", emailed to {estimate.client.email}"

    @admin.action(description="Email the estimate to the client (again)", permissions=["change"])
    def email_again(self, request: HttpRequest, queryset: QuerySet[GoodFaithEstimate]) -> None:
        sent, problems = 0, []
        for estimate in queryset.select_related("client"):
            try:
                estimate_send(estimate=estimate, now=timezone.now(),
                              actor=f"staff:{staff_user(request).get_username()}")
                sent += 1
            except BillingError as problem:
                problems.append(str(problem))
        self.message_user(request, f"Emailed {plural(sent, 'estimate')}." + "".join(f" {p}" for p in problems),
                          messages.WARNING if problems else messages.SUCCESS)

    @admin.action(description="Record receipt acknowledged on paper", permissions=["change"])
    def record_paper_acknowledgment(self, request: HttpRequest, queryset: QuerySet[GoodFaithEstimate]) -> None:
        by = f"staff:{staff_user(request).get_username()} (on paper)"
        for estimate in queryset:
            estimate_acknowledge(estimate=estimate, now=timezone.now(), by=by)
        self.message_user(request, f"Recorded {plural(queryset.count(), 'acknowledgment')} (an earlier one stands).",
                          messages.SUCCESS)


def client_estimate_tools(request: HttpRequest, client: Client) -> list[tuple[str, str]]:
    """The estimate pages for a client's page: issue one (or revise the one in force)."""
    if not has_billing_permission(request, ISSUE):
        return []
    current = (GoodFaithEstimate.objects.filter(client=client, status=EstimateStatus.ISSUED)
               .order_by("-issued_at").first())
    if current is not None and current.covers(timezone.localdate()) and has_billing_permission(request, REVISE):
        return [("Revise the good faith estimate",
                 reverse("admin:billing_goodfaithestimate_revise", args=[current.pk]))]
    return [("Issue a good faith estimate", reverse("admin:billing_goodfaithestimate_issue", args=[client.pk]))]


def estimates_for_all(request: HttpRequest, clients: list[Client] | None = None) -> str:
    """One estimate for each self-pay client without one (or each of ``clients`` without one), emailed."""
    user = staff_user(request)
    result = estimates_create_missing(today=timezone.localdate(), now=timezone.now(),
                                      actor=f"staff:{user.get_username()}", user=user, clients=clients)
    total = sum(estimate.total_cents for estimate in result.created)
    done = (f"Issued {plural(len(result.created), 'good faith estimate')} ({format_cents(total)} in all, weekly "
            f"sessions for 12 months at each client's rate or the practice's fee); emailed to those with an address.")
    if result.skipped:
        done += " Not issued: " + "; ".join(f"{client}: {why}" for client, why in result.skipped[:5])
    return done

