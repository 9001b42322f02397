"""The review queue: what the portal would not decide on its own."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from billing.admin import linking, today
from billing.admin.common import ActionsOnlyMixin, confirmed, has_billing_permission, staff_user
from billing.admin.people import CLIENT_SEARCH
from billing.models import Client, ReviewItem, ReviewKind, ReviewStatus
from billing.money import format_cents
from billing.selectors import dashboard
from billing.services.review import review_resolve


class ResolveForm(forms.Form):
    note = forms.CharField(max_length=300, required=False, widget=forms.Textarea(attrs={"rows": 3}),
                           help_text="What was done, for whoever looks at this later.")


class QueueFilter(admin.SimpleListFilter):
    """The Today page's "needs review" queue, so its "see all" link lands on the same items."""

    title = "queue"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("needs_review", "Needs review (held charges and Stripe links have their own queues)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return dashboard.needs_review(queryset) if self.value() == "needs_review" else queryset


class ReviewItemAdmin(ActionsOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "kind", "client", "appointment", "reason", "status")
    list_filter = (QueueFilter, "status", "kind")
    list_select_related = ("client", "appointment")
    change_form_template = "admin/billing/reviewitem/change_form.html"
    search_fields = (*CLIENT_SEARCH, "reason")
    show_full_result_count = False
    ordering = ("-created_at", "-id")
    fieldsets = (
        (None, {"fields": ("kind", "status", "client", "appointment", "charge", "reason", "created_at")}),
        ("Resolution", {"fields": ("resolved_at", "resolved_by", "resolution_note")}),
    )
    actions = ("mark_resolved", "stripe_create_customer", "stripe_link_chosen", "stripe_ignore")

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        """The item's page says what it is about (the session, the charge) and offers its fixes."""
        item = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if item is not None:
            appointment = item.appointment
            extra_context.update(
                item=item, appointment=appointment, fixes=today.item_fixes(request, item),
                attendees=list(appointment.participants.select_related("client")) if appointment else [],
                charge_amount=format_cents(item.charge.amount_cents) if item.charge else "")
        return super().change_view(request, object_id, form_url, extra_context)

    def has_link_stripe_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, linking.LINK_PERMISSION)

    def _stripe_clients(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> list[Client]:
        """The clients of the open Stripe-linking items selected; other items are left alone."""
        items = list(queryset.select_related("client"))
        clients = [item.client for item in items
                   if item.kind == ReviewKind.STRIPE_LINK and item.status == ReviewStatus.OPEN]
        if len(clients) < len(items) and (not clients or not confirmed(request)):
            self.message_user(request, "Only open \"Stripe customer to link by hand\" items can be linked; "
                                       f"{len(items) - len(clients)} other selected item(s) were left alone.",
                              messages.WARNING)
        return clients

    @admin.action(description="Stripe linking: create a new Stripe customer", permissions=["link_stripe"])
    def stripe_create_customer(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> TemplateResponse | None:
        clients = self._stripe_clients(request, queryset)
        return linking.create_customers(self, request, clients, "stripe_create_customer") if clients else None

    @admin.action(description="Stripe linking: link to a chosen customer", permissions=["link_stripe"])
    def stripe_link_chosen(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> TemplateResponse | None:
        clients = self._stripe_clients(request, queryset)
        return linking.link_chosen(self, request, clients, "stripe_link_chosen") if clients else None

    @admin.action(description="Stripe linking: ignore", permissions=["link_stripe"])
    def stripe_ignore(self, request: HttpRequest, queryset: QuerySet[ReviewItem]) -> TemplateResponse | None:
        clients = self._stripe_clients(request, queryset)
        return linking.ignore(self, request, clients, "stripe_ignore") if clients else None

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
