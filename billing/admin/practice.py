"""The practice's settings and billing policy: one row, edited in place."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone

from billing.admin.common import DollarsMixin
from billing.models import Practice


class PracticeAdmin(DollarsMixin, admin.ModelAdmin):
    fieldsets = (
        ("Practice", {"fields": ("name", "phone", "sender_email", "address", "tax_id", "npi", "time_zone")}),
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

    def save_model(self, request: HttpRequest, obj: Practice, form: Any, change: bool) -> None:
        # Integrators read the version and the day it took effect (GET /api/v1/policy/): a new version takes
        # effect the day staff save it, unless they gave its day themselves.
        if ("cancellation_policy_version" in form.changed_data
                and "cancellation_policy_effective_on" not in form.changed_data):
            obj.cancellation_policy_effective_on = timezone.localdate(timezone.now(), obj.zone)
        super().save_model(request, obj, form, change)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        # There is one practice: its list would be a page with one link on it.
        practice = Practice.load()
        return HttpResponseRedirect(reverse("admin:billing_practice_change", args=[practice.pk]))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return not Practice.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
