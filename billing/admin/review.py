"""The review queue: what the portal would not decide on its own."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from billing.admin.common import ActionsOnlyMixin, staff_user
from billing.admin.people import CLIENT_SEARCH
from billing.models import ReviewItem, ReviewStatus
from billing.services.review import review_resolve


class ResolveForm(forms.Form):
    note = forms.CharField(max_length=300, required=False, widget=forms.Textarea(attrs={"rows": 3}),
                           help_text="What was done, for whoever looks at this later.")


class ReviewItemAdmin(ActionsOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "kind", "client", "appointment", "reason", "status")
    list_filter = ("status", "kind")
    list_select_related = ("client", "appointment")
    search_fields = (*CLIENT_SEARCH, "reason")
    show_full_result_count = False
    ordering = ("-created_at", "-id")
    fieldsets = (
        (None, {"fields": ("kind", "status", "client", "appointment", "charge", "reason", "created_at")}),
        ("Resolution", {"fields": ("resolved_at", "resolved_by", "resolution_note")}),
    )
    actions = ("mark_resolved",)

    @admin.action(description="Mark resolved", permissions=["change"])
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> TemplateResponse | None:
        """Ask for a note first (a confirmation page), then resolve each open item through the service."""
        items = list(queryset.filter(status=ReviewStatus.OPEN).select_related("client"))
        if not items:
            self.message_user(request, "The selected items are already resolved.", messages.WARNING)
            return None
        form = ResolveForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            now, user = timezone.now(), staff_user(request)
            for item in items:
                review_resolve(item=item, user=user, note=form.cleaned_data["note"], now=now)
            self.message_user(request, f"Resolved {len(items)} review item{'s' if len(items) != 1 else ''}.",
                              messages.SUCCESS)
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Resolve review items",
            "opts": self.model._meta,
            "items": items,
            "form": form,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/billing/reviewitem/resolve.html", context)
