"""Charges and the money history: visible in full, changed only by services (through admin actions)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from billing.admin import dashboard
from billing.admin.common import ActionsOnlyMixin, ReadOnlyInline, ViewOnlyMixin, dollars
from billing.admin.people import CLIENT_SEARCH, clients_matching
from billing.models import Charge, ChargeEvent, LedgerEntry, PaymentAttempt, Practice


def _line_amount(cents: object) -> str:
    return dollars(cents) if isinstance(cents, int) else str(cents or "")


class QueueFilter(admin.SimpleListFilter):
    """The front page's charge queues, so its "see all" links land on the same rows."""

    title = "needs attention"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("due_today", "Due by the end of today"), ("stuck", "Failed or waiting for the client")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        match self.value():
            case "due_today":
                return dashboard.charges_due_by_end_of_today(queryset, now=timezone.now(),
                                                             zone=Practice.current_zone())
            case "stuck":
                return queryset.filter(status__in=dashboard.STUCK_STATUSES)
        return queryset


class ChargeEventInline(ReadOnlyInline):
    model = ChargeEvent
    verbose_name_plural = "history"
    fields = ("at", "from_status", "to_status", "amount", "actor", "reason")
    show_change_link = False

    @admin.display(description="Amount after")
    def amount(self, event: ChargeEvent) -> str:
        return dollars(event.amount_cents)


class PaymentAttemptInline(ReadOnlyInline):
    model = PaymentAttempt
    verbose_name_plural = "calls to Stripe"
    fields = ("number", "status", "amount", "payment_intent_id", "decline_code", "failure_code", "failure_message",
              "started_at", "finished_at")
    show_change_link = False

    @admin.display(description="Amount")
    def amount(self, attempt: PaymentAttempt) -> str:
        return dollars(attempt.amount_cents)


class ChargeAdmin(ActionsOnlyMixin, admin.ModelAdmin):
    list_display = ("number", "client", "kind", "amount", "status", "scheduled_for", "session", "attempts")
    # No date_hierarchy: its list of years reads every charge on each page; the date filter reads none.
    list_filter = (QueueFilter, "status", "kind", "scheduled_for")
    list_select_related = ("client", "appointment")
    # Searched by get_search_results; naming the field here is what shows the search box.
    search_fields = ("=payment_reference",)
    search_help_text = "A client's name or email, or a Stripe payment id (pi_...)."
    show_full_result_count = False
    ordering = ("-created_at",)
    # Every field is shown read-only (the form never saves); these are the computed ones.
    readonly_fields = ("amount", "insurance", "deductible_applied", "refunded", "breakdown_table")
    fieldsets = (
        (None, {"fields": ("client", "appointment", "kind", "status", "amount", "breakdown_table",
                           "insurance", "deductible_applied", "refunded")}),
        ("When", {"fields": ("scheduled_for", "notice_due_at", "notice_sent_at", "receipt_sent_at",
                             "created_at", "updated_at")}),
        ("Payment", {"fields": ("hold_reason", "attempts", "next_retry_at", "last_failure_code",
                                "payment_reference")}),
    )
    inlines = (PaymentAttemptInline, ChargeEventInline)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Charge],
                           search_term: str) -> tuple[QuerySet[Charge], bool]:
        # Find the matching clients first, then their charges through the client index (a join with the
        # clients table would read every charge).
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.startswith("pi_"):
            return queryset.filter(payment_reference=term), False
        return queryset.filter(client__in=clients_matching(term)), False

    @admin.display(description="Charge", ordering="id")
    def number(self, charge: Charge) -> str:
        return f"#{charge.pk}"

    @admin.display(description="Amount", ordering="amount_cents")
    def amount(self, charge: Charge) -> str:
        return dollars(charge.amount_cents)

    @admin.display(description="Insurance expected to pay")
    def insurance(self, charge: Charge) -> str:
        return dollars(charge.insurance_cents)

    @admin.display(description="Counted toward the deductible")
    def deductible_applied(self, charge: Charge) -> str:
        return dollars(charge.deductible_applied_cents)

    @admin.display(description="Refunded")
    def refunded(self, charge: Charge) -> str:
        return dollars(charge.refunded_cents)

    @admin.display(description="Session", ordering="appointment__starts_at")
    def session(self, charge: Charge) -> str:
        if charge.appointment is None:
            return ""
        return date_format(timezone.localtime(charge.appointment.starts_at), "M j, Y")

    @admin.display(description="How the amount was worked out")
    def breakdown_table(self, charge: Charge) -> SafeString:
        # The breakdown is JSON written by the pricing service; show what is there, never fail on it.
        lines = [line for line in charge.breakdown if isinstance(line, dict)] \
            if isinstance(charge.breakdown, list) else []
        rows = format_html_join(
            "", "<tr><td>{}</td><td style='text-align:right'>{}</td></tr>",
            ((line.get("label", ""), _line_amount(line.get("amount_cents"))) for line in lines))
        return format_html("<table><tbody>{}</tbody><tfoot><tr><th>Client pays</th>"
                           "<th style='text-align:right'>{}</th></tr></tfoot></table>",
                           rows, dollars(charge.amount_cents))


class ChargeEventAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("at", "charge", "from_status", "to_status", "amount", "actor", "reason")
    list_filter = ("to_status",)
    list_select_related = ("charge",)
    date_hierarchy = "at"
    show_full_result_count = False
    ordering = ("-at", "-id")

    @admin.display(description="Amount after", ordering="amount_cents")
    def amount(self, event: ChargeEvent) -> str:
        return dollars(event.amount_cents)


class PaymentAttemptAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("started_at", "charge", "number", "status", "payment_intent_id", "failure_code")
    list_filter = ("status",)
    list_select_related = ("charge",)
    search_fields = ("=payment_intent_id", "=idempotency_key")
    date_hierarchy = "started_at"
    show_full_result_count = False
    ordering = ("-started_at", "-id")


class LedgerEntryAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("occurred_on", "client", "kind", "amount", "memo", "charge", "actor")
    list_filter = ("kind", "occurred_on")
    list_select_related = ("client", "charge")
    search_fields = (*CLIENT_SEARCH, "memo")
    show_full_result_count = False
    ordering = ("-occurred_on", "-id")

    @admin.display(description="Amount", ordering="amount_cents")
    def amount(self, entry: LedgerEntry) -> str:
        return dollars(entry.amount_cents)
