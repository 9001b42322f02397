"""Records the portal writes as it works (links, consents, refunds, emails, webhooks, EOB lines): view only.

Each is created by a service; staff read them to answer "did the client get the email?", "what did they
agree to?", "did Stripe tell us?".
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from billing.admin.common import ViewOnlyMixin, dollars
from billing.admin.people import CLIENT_SEARCH
from billing.models import BalanceAllocation, Refund, StaffAction, StripeEvent
from billing.services.webhooks import UNKNOWN_PAYMENT


class ClientLinkAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "client", "purpose", "expires_at", "used_at", "created_by")
    list_filter = ("purpose",)
    list_select_related = ("client",)
    search_fields = CLIENT_SEARCH
    show_full_result_count = False
    # The token's hash is left out: it is of no use to staff.
    fields = ("client", "purpose", "charge", "created_at", "expires_at", "used_at", "setup_intent_id",
              "created_by")


class CardConsentAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("agreed_at", "client", "policy_version", "ip_address")
    list_select_related = ("client",)
    search_fields = CLIENT_SEARCH
    show_full_result_count = False


class RefundAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "charge", "amount", "status", "reason", "requested_by")
    list_filter = ("status",)
    list_select_related = ("charge", "requested_by")
    search_fields = ("=stripe_refund_id", "charge__client__last_name", "charge__client__email")
    show_full_result_count = False

    @admin.display(description="Amount", ordering="amount_cents")
    def amount(self, refund: Refund) -> str:
        return dollars(refund.amount_cents)


class OutboundEmailAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("created_at", "to", "template", "subject", "status", "sent_at")
    list_filter = ("status", "template")
    search_fields = ("=to", "subject", *CLIENT_SEARCH)
    date_hierarchy = "created_at"
    show_full_result_count = False


class UnknownPaymentFilter(admin.SimpleListFilter):
    """Events about payments the portal did not make, kept so staff can match them by hand."""

    title = "payment"
    parameter_name = "payment"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("unknown", "Not made by the portal (kept for reconciliation)")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[StripeEvent]) -> QuerySet[StripeEvent]:
        return queryset.filter(outcome=UNKNOWN_PAYMENT) if self.value() == "unknown" else queryset


class StripeEventAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("received_at", "type", "event_id", "object_id", "processed_at", "outcome")
    list_filter = (UnknownPaymentFilter, "type")
    search_fields = ("=event_id", "=object_id")
    show_full_result_count = False


class BalanceEpisodeAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("over_since", "client", "first_reminder_at", "second_reminder_at", "flagged_at", "closed_at",
                    "closed_reason")
    list_select_related = ("client",)
    search_fields = CLIENT_SEARCH
    show_full_result_count = False


class BalanceAllocationAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("payment", "charge", "amount")
    list_select_related = ("payment", "charge")
    show_full_result_count = False

    @admin.display(description="Amount", ordering="amount_cents")
    def amount(self, allocation: BalanceAllocation) -> str:
        return dollars(allocation.amount_cents)


class AuditSealAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """The tamper-evident chain: view only (manage.py verify_audit_chain checks it)."""

    list_display = ("sequence", "table", "row_id", "sealed_at", "chain_hash")
    list_filter = ("table",)
    search_fields = ("=row_id",)
    show_full_result_count = False


class StaffActionAdmin(ViewOnlyMixin, admin.ModelAdmin):
    """What staff took, recorded or sent from clients' pages (billing/admin/money.py), with who and why."""

    list_display = ("created_at", "client", "kind", "amount", "method", "reference", "reason", "user")
    list_filter = ("kind", "method")
    list_select_related = ("client", "user")
    search_fields = (*CLIENT_SEARCH, "=reference")
    show_full_result_count = False

    @admin.display(description="Amount", ordering="amount_cents")
    def amount(self, action: StaffAction) -> str:
        return dollars(action.amount_cents)
