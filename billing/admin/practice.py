"""The practice's settings and billing policy: one row, edited in place."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html

from billing.admin.common import DollarsMixin, plural, staff_user
from billing.errors import BillingError
from billing.models import Practice
from billing.money import format_cents
from billing.services.preview import charging_preview_set, preview_report

# A report replays the tick through its period in one request: a quarter at most here (the command takes more).
PREVIEW_MAX_DAYS = 92


class PreviewForm(forms.Form):
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("start"), data.get("end")
        if start and end:
            if end < start:
                raise ValidationError("The period ends before it starts.")
            if (end - start).days >= PREVIEW_MAX_DAYS:
                raise ValidationError(f"Preview at most {PREVIEW_MAX_DAYS} days here; for longer, run "
                                      "manage.py billing_preview.")
        return data


class PracticeAdmin(DollarsMixin, admin.ModelAdmin):
    readonly_fields = ("charging_preview_ended_at",)
    fieldsets = (
        ("Practice", {"fields": ("name", "phone", "sender_email", "address", "tax_id", "npi", "time_zone")}),
        ("Preview", {"fields": ("charging_preview", "charging_preview_ended_at")}),
        ("When to charge", {"fields": ("charge_trigger", "charge_timing", "charge_delay_hours",
                                       "weekly_batch_weekday", "weekly_batch_hour", "weekly_one_payment",
                                       "max_charge_cents",
                                       "card_authorization_text")}),
        ("Notices and retries", {"fields": ("pre_charge_notice_hours", "retry_days", "failures_before_flag",
                                            "decline_notice_tone")}),
        ("No-show and late-cancel fees", {"fields": ("no_show_fee_cents", "late_cancel_fee_cents",
                                                     "fee_review_hours", "cancellation_policy_version",
                                                     "cancellation_policy_effective_on",
                                                     "cancellation_policy_text")}),
        ("Balance reminders", {"fields": ("balance_reminder_threshold_cents", "balance_reminder_days",
                                          "balance_second_reminder_days", "balance_flag_days")}),
        ("Monthly statements", {"fields": ("statement_day",)}),
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        url = reverse("admin:billing_practice_preview")
        return [(name, {**options, "description": format_html(
            'See what the portal would have collected for a past period: <a href="{}">preview report</a>.', url)})
                if name == "Preview" else (name, options) for name, options in self.fieldsets]

    def save_model(self, request: HttpRequest, obj: Practice, form: Any, change: bool) -> None:
        # Preview is switched by its service (what switching off holds is decided there), after the rest is saved.
        switch = "charging_preview" in form.changed_data
        wanted = obj.charging_preview
        if switch:
            obj.charging_preview = not wanted
        self._save_policy(request, obj, form, change)
        if switch:
            held = charging_preview_set(on=wanted, now=timezone.now(),
                                        actor=f"staff:{staff_user(request).get_username()}")
            obj.refresh_from_db()
            if wanted:
                self.message_user(request, "Preview is on: nothing is charged and no email reaches a client; "
                                           "notices are drafted in the email list.", messages.WARNING)
            else:
                self.message_user(request, f"Charging is on for sessions from now on. {plural(held, 'charge')} of "
                                           "earlier sessions wait, marked \"from preview, not charged\"; charge them "
                                           "from the charge list if you choose.", messages.SUCCESS)

    def _save_policy(self, request: HttpRequest, obj: Practice, form: Any, change: bool) -> None:
        # Integrators read the version and the day it took effect (GET /api/v1/policy/): a new version takes
        # effect the day staff save it, unless they gave its day themselves.
        if ("cancellation_policy_version" in form.changed_data
                and "cancellation_policy_effective_on" not in form.changed_data):
            obj.cancellation_policy_effective_on = timezone.localdate(timezone.now(), obj.zone)
        super().save_model(request, obj, form, change)

    def get_urls(self) -> list[URLPattern]:
        return [path("preview/", self.admin_site.admin_view(self.preview_view), name="billing_practice_preview"),
                *super().get_urls()]

    def preview_view(self, request: HttpRequest) -> HttpResponse:
        """What the portal would have collected for a past period (billing/services/preview.py): the tick
        replayed and rolled back; nothing is charged or sent."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        practice = Practice.load()
        today = timezone.localdate(timezone.now(), practice.zone)
        last_month_end = today.replace(day=1) - dt.timedelta(days=1)
        form = PreviewForm(request.GET or None, initial={"start": last_month_end.replace(day=1), "end": last_month_end})
        report = None
        if form.is_valid():
            try:
                report = preview_report(start=form.cleaned_data["start"], end=form.cleaned_data["end"],
                                        now=timezone.now())
            except BillingError as problem:
                form.add_error(None, str(problem))
        context = {**self.admin_site.each_context(request), "title": "Preview: what the portal would have collected",
                   "opts": self.model._meta, "form": form, "report": report, "practice": practice}
        if report is not None:
            context.update(
                totals={name: format_cents(cents) for name, cents in report.totals.items()},
                would_days=report.days("would"), collected_days=report.days("collected"),
                lines=[{"line": line, "would": format_cents(line.would_cents),
                        "collected": format_cents(line.collected_cents), "eob": format_cents(line.eob_paid_cents),
                        "unpaid": format_cents(line.unpaid_would_collect)} for line in report.lines])
        return TemplateResponse(request, "admin/billing/practice/preview.html", context)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # There is one practice: its list would be a page with one link on it.
        practice = Practice.load()
        return HttpResponseRedirect(reverse("admin:billing_practice_change", args=[practice.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not Practice.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
