"""Charges and the money history: visible in full, changed only by services (through admin actions)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from billing.admin.common import (
    ActionsOnlyMixin,
    DollarsField,
    ReadOnlyInline,
    ViewOnlyMixin,
    confirmation,
    confirmed,
    dollars,
    has_billing_permission,
    plural,
    staff_user,
)
from billing.admin.people import clients_matching
from billing.errors import GatewayRefused, OutcomeUnknown
from billing.models import (
    CANCELABLE_STATUSES,
    STUCK_STATUSES,
    Charge,
    ChargeEvent,
    ChargeStatus,
    Client,
    LedgerEntry,
    PaymentAttempt,
    Practice,
    Refund,
    RefundStatus,
)
from billing.money import format_cents
from billing.selectors import dashboard
from billing.services.holds import HoldNotChanged, charge_cancel, charge_release, is_cap_hold
from billing.services.preview import PREVIEW_HOLD, NothingFromPreview, preview_charges_release
from billing.services.refunds import RefundNotAllowed, charge_refund, refundable_cents
from billing.services.schedule import FEE_FOR_STATUS, WaiveNotAllowed, fee_waive
from billing.services.waiting import CHOICE_HOLD, NothingWaiting, waiting_charges_release

FEE_KINDS = tuple(FEE_FOR_STATUS.values())

# A Stripe PaymentIntent or refund id, as the ledger's memos name them.
STRIPE_ID = re.compile(r"(pi|re)_[A-Za-z0-9_]+")

REFUND_PERMISSION = "refund_charge"
RELEASE_PERMISSION = "release_charge"
CANCEL_PERMISSION = "cancel_charge"


def _line_amount(cents: object) -> str:
    return dollars(cents) if isinstance(cents, int) else str(cents or "")


class QueueFilter(admin.SimpleListFilter):
    """The front page's charge queues, so its "see all" links land on the same rows."""

    title = "needs attention"
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("due_today", "Due by the end of today"), ("fee_review", "Fees waiting for review"),
                ("stuck", "Failed or waiting for the client"), ("on_hold", "On hold")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        match self.value():
            case "due_today":
                return dashboard.charges_due_by_end_of_today(queryset, now=timezone.now(),
                                                             zone=Practice.current_zone())
            case "stuck":
                return queryset.filter(status__in=STUCK_STATUSES)
            case "on_hold":
                return dashboard.charges_on_hold(queryset)
            case "fee_review":
                return dashboard.fees_in_review(queryset)
        return queryset


class RefundInline(ReadOnlyInline):
    model = Refund
    verbose_name_plural = "refunds"
    fields = ("created_at", "amount", "status", "reason", "requested_by", "stripe_refund_id", "failure_message",
              "finished_at")
    ordering = ("created_at", "id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Refund]:
        return super().get_queryset(request).select_related("requested_by")

    @admin.display(description="Amount")
    def amount(self, refund: Refund) -> str:
        return dollars(refund.amount_cents)


class RefundForm(forms.Form):
    amount = DollarsField(label="Amount to refund ($)")
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 3}),
                             help_text="Why the money goes back, for the client's history.")
    # How many refunds the charge had when the form was opened: a second click, or a colleague's refund
    # in the meantime, is caught instead of refunding twice.
    refunds_seen = forms.IntegerField(widget=forms.HiddenInput)


class WhyForm(forms.Form):
    why = forms.CharField(label="Reason", max_length=200, widget=forms.Textarea(attrs={"rows": 2}),
                          help_text="Kept in the charge's history.")


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
    list_display = ("number", "client", "kind", "amount", "status", "hold_reason", "scheduled_for", "session",
                    "attempts")
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
    inlines = (PaymentAttemptInline, RefundInline, ChargeEventInline)
    actions = ("release_charge", "release_waiting", "release_preview", "cancel_charge", "waive_fee")
    change_form_template = "admin/billing/charge/change_form.html"

    def has_refund_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, REFUND_PERMISSION)

    def has_release_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, RELEASE_PERMISSION)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, CANCEL_PERMISSION)

    def has_waive_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, "waive_fee")

    def get_urls(self) -> list[URLPattern]:
        refund = path("<path:object_id>/refund/", self.admin_site.admin_view(self.refund_view),
                      name="billing_charge_refund")
        return [refund, *super().get_urls()]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        charge = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if charge is not None and self.has_refund_permission(request) and refundable_cents(charge):
            extra_context["refund_url"] = reverse("admin:billing_charge_refund", args=[charge.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def refund_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Refund part or all of a paid charge: a form (amount, reason), then charge_refund."""
        if not self.has_refund_permission(request):
            raise PermissionDenied
        charge = self.get_object(request, object_id)
        if charge is None:
            raise Http404(f"No charge {object_id}.")
        change_url = reverse("admin:billing_charge_change", args=[charge.pk])
        left = refundable_cents(charge)
        refunds = charge.refunds.count()
        form = RefundForm(request.POST if request.method == "POST" else None,
                          initial={"amount": left, "refunds_seen": refunds})
        if request.method != "POST" and not left:
            self.message_user(request, f"Nothing on charge #{charge.pk} can be refunded "
                                       f"(it is {charge.status_phrase}).", messages.WARNING)
            return HttpResponseRedirect(change_url)
        if form.is_valid():
            amount, reason = form.cleaned_data["amount"], form.cleaned_data["reason"]
            if form.cleaned_data["refunds_seen"] != refunds:
                self.message_user(request, "This charge was refunded since the form was opened: check what is "
                                           "left to refund, then try again.", messages.ERROR)
            else:
                try:
                    refund = charge_refund(charge=charge, amount_cents=amount, reason=reason,
                                           user=staff_user(request), now=timezone.now())
                except (RefundNotAllowed, GatewayRefused, OutcomeUnknown) as problem:
                    self.message_user(request, str(problem), messages.ERROR)
                else:
                    if refund.status == RefundStatus.STARTED:
                        self.message_user(request, f"Stripe has not confirmed the refund of {format_cents(amount)} "
                                                   "yet; it is checked again automatically and shown here when "
                                                   "it settles. Do not refund again.", messages.WARNING)
                    else:
                        self.message_user(request, f"Refunded {format_cents(amount)} of charge #{charge.pk} to "
                                                   "the client's card.", messages.SUCCESS)
                    return HttpResponseRedirect(change_url)
            # Show the form again as it was typed, against the charge as it is now.
            charge.refresh_from_db()
            left = refundable_cents(charge)
            form = RefundForm(initial={"amount": amount, "reason": reason, "refunds_seen": charge.refunds.count()})
        context = {
            **self.admin_site.each_context(request),
            "title": f"Refund charge #{charge.pk}",
            "opts": self.opts,
            "original": charge,
            "form": form,
            "paid": format_cents(charge.amount_cents),
            "refunded": format_cents(charge.refunded_cents),
            "refundable": format_cents(left),
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/billing/charge/refund.html", context)

    def _selected_holds(self, request: HttpRequest, queryset: QuerySet[Charge], is_held: Callable[[Charge], bool],
                        held_as: str, *, nothing: str) -> tuple[list[Charge], list[str]]:
        """The release actions' selection: the selected charges held this way, and the confirmation's warning
        naming the others, which are left alone. None held: ``nothing`` is said and the list is empty."""
        charges = list(queryset.select_related("client"))
        held = [c for c in charges if is_held(c)]
        if not held:
            self.message_user(request, nothing, messages.WARNING)
        others = [f"#{c.pk}" for c in charges if c not in held]
        return held, [f"Not {held_as}, left alone: {', '.join(others)}."] if others else []

    @admin.action(description="Charge now anyway (approve above the cap)", permissions=["release"])
    def release_charge(self, request: HttpRequest, queryset: QuerySet[Charge]) -> TemplateResponse | None:
        held, left_alone = self._selected_holds(
            request, queryset, is_cap_hold, "held above the cap",
            nothing="None of the selected charges is held above the practice's cap (a charge waiting for a card goes "
                    "ahead when the client saves one).")
        if not held:
            return None
        form = WhyForm(request.POST if confirmed(request) else None)
        if not form.is_valid():
            return confirmation(
                self, request, action="release_charge", title="Charge now anyway", form=form,
                submit=f"Charge {plural(len(held), 'charge')} anyway",
                intro="These charges are held above the practice's per-charge cap. They will be charged on the "
                      "next billing run:",
                rows=[f"#{c.pk} {c.client}: {format_cents(c.amount_cents)} ({c.hold_reason})" for c in held],
                warnings=left_alone)
        self._each(request, held, lambda c, actor, user: charge_release(
            charge=c, now=timezone.now(), actor=actor, user=user, why=form.cleaned_data["why"]),
            "Charge #{} will be charged on the next billing run.")
        return None

    @admin.action(description="Release waiting charges: notice first, then charge", permissions=["release"])
    def release_waiting(self, request: HttpRequest, queryset: QuerySet[Charge]) -> TemplateResponse | None:
        held, left_alone = self._selected_holds(
            request, queryset, lambda c: c.status == ChargeStatus.DUE and c.hold_reason == CHOICE_HOLD,
            "waiting for a choice", nothing="None of the selected charges waits since before its client saved a card.")
        if not held:
            return None
        hours = Practice.load().pre_charge_notice_hours
        if not confirmed(request):
            return confirmation(
                self, request, action="release_waiting", title="Release waiting charges",
                submit=f"Release {plural(len(held), 'charge')}",
                intro=f"Each client gets one notice listing their charges now; the card is charged {hours} "
                      "hour(s) later, at the notice's lead time:",
                rows=[f"#{c.pk} {c.client}: {format_cents(c.amount_cents)}" for c in held],
                warnings=left_alone)
        user = staff_user(request)
        by_client: dict[Client, list[int]] = {}
        for charge in held:
            by_client.setdefault(charge.client, []).append(charge.pk)
        for client, ids in by_client.items():
            try:
                released = waiting_charges_release(client=client, charge_ids=ids, now=timezone.now(),
                                                   actor=f"staff:{user.get_username()}", user=user)
            except NothingWaiting as problem:
                self.message_user(request, str(problem), messages.ERROR)
            else:
                self.message_user(request, f"{client}: notice sent for {plural(len(released), 'charge')}; the card "
                                           f"is charged in {hours} hour(s).", messages.SUCCESS)
        return None

    @admin.action(description="Charge sessions from preview: notice first, then charge", permissions=["release"])
    def release_preview(self, request: HttpRequest, queryset: QuerySet[Charge]) -> TemplateResponse | None:
        held, left_alone = self._selected_holds(
            request, queryset, lambda c: c.status == ChargeStatus.DUE and c.hold_reason == PREVIEW_HOLD,
            "from preview", nothing="None of the selected charges is a session from preview, not charged.")
        if not held:
            return None
        hours = max(Practice.load().pre_charge_notice_hours, 1)
        if not confirmed(request):
            return confirmation(
                self, request, action="release_preview", title="Charge sessions from preview",
                submit=f"Charge {plural(len(held), 'charge')} after a notice",
                intro=f"These sessions were held while the practice previewed charging. Each client gets a notice "
                      f"on the next billing run; the card is charged {hours} hour(s) after it:",
                rows=[f"#{c.pk} {c.client}: {format_cents(c.amount_cents)}" for c in held],
                warnings=left_alone)
        user = staff_user(request)
        try:
            released = preview_charges_release(charges=held, now=timezone.now(), actor=f"staff:{user.get_username()}")
        except NothingFromPreview as problem:
            self.message_user(request, str(problem), messages.ERROR)
        else:
            self.message_user(request, f"{plural(len(released), 'charge')} from preview: the notice goes out on the "
                                       f"next billing run, the card is charged {hours} hour(s) later.",
                              messages.SUCCESS)
        return None

    @admin.action(description="Cancel charge", permissions=["cancel"])
    def cancel_charge(self, request: HttpRequest, queryset: QuerySet[Charge]) -> TemplateResponse | None:
        charges = list(queryset.select_related("client"))
        cancelable = [c for c in charges if c.status in CANCELABLE_STATUSES]
        others = [c for c in charges if c not in cancelable]
        if not cancelable:
            self.message_user(request, "Only scheduled, due (or held) and failed charges can be canceled; refund a "
                                       "paid one instead.", messages.WARNING)
            return None
        form = WhyForm(request.POST if confirmed(request) else None)
        if not form.is_valid():
            return confirmation(
                self, request, action="cancel_charge", title="Cancel charges", form=form,
                submit=f"Cancel {plural(len(cancelable), 'charge')}",
                intro="These charges will not be taken, and what they were for comes off the client's balance:",
                rows=[f"#{c.pk} {c.client}: {format_cents(c.amount_cents)}, {c.status_phrase}"
                      f"{' (' + c.hold_reason + ')' if c.hold_reason else ''}" for c in cancelable],
                warnings=[f"Cannot be canceled, left alone: "
                          f"{', '.join(f'#{c.pk} ({c.get_status_display()})' for c in others)}."] if others else [])
        self._each(request, cancelable, lambda c, actor, user: charge_cancel(
            charge=c, now=timezone.now(), actor=actor, user=user, why=form.cleaned_data["why"]),
            "Canceled charge #{}.")
        return None

    @admin.action(description="Waive no-show / late-cancel fee", permissions=["waive"])
    def waive_fee(self, request: HttpRequest, queryset: QuerySet[Charge]) -> TemplateResponse | None:
        charges = list(queryset.select_related("client"))
        fees = [c for c in charges if c.kind in FEE_KINDS and c.status in CANCELABLE_STATUSES]
        others = [c for c in charges if c not in fees]
        if not fees:
            self.message_user(request, "Only no-show and late-cancel fees not yet charged can be waived; refund a "
                                       "charged fee instead.", messages.WARNING)
            return None
        form = WhyForm(request.POST if confirmed(request) else None)
        if not form.is_valid():
            return confirmation(
                self, request, action="waive_fee", title="Waive fees", form=form,
                submit=f"Waive {plural(len(fees), 'fee')}",
                intro="These fees will not be charged; the client's ledger shows the waiver and your reason:",
                rows=[f"#{c.pk} {c.client}: {c.get_kind_display()} {format_cents(c.amount_cents)}, "
                      f"due {timezone.localtime(c.scheduled_for):%b %d %H:%M}" for c in fees],
                warnings=[f"Not a fee that can be waived, left alone: {', '.join(f'#{c.pk}' for c in others)}."]
                if others else [])
        self._each(request, fees, lambda c, actor, user: fee_waive(
            charge=c, reason=form.cleaned_data["why"], now=timezone.now(), user=user), "Waived fee #{}.")
        return None

    def _each(self, request: HttpRequest, charges: list[Charge], service: Any, done: str) -> None:
        user = staff_user(request)
        for charge in charges:
            try:
                service(charge, f"staff:{user.get_username()}", user)
            except (HoldNotChanged, WaiveNotAllowed) as problem:
                self.message_user(request, str(problem), messages.ERROR)
            else:
                self.message_user(request, done.format(charge.pk), messages.SUCCESS)

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
    # Searched by get_search_results; naming the field here is what shows the search box.
    search_fields = ("=memo",)
    search_help_text = "A client's name or email, or a Stripe payment or refund id (pi_..., re_...)."
    show_full_result_count = False
    ordering = ("-occurred_on", "-id")

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[LedgerEntry],
                           search_term: str) -> tuple[QuerySet[LedgerEntry], bool]:
        # One indexed path per search, never an OR of them (which reads the whole ledger): a Stripe id finds
        # its charge through the payment attempts or refunds; anything else, the few matching clients.
        term = search_term.strip()
        if not term:
            return queryset, False
        if STRIPE_ID.fullmatch(term):
            paid = PaymentAttempt.objects.filter(payment_intent_id=term).values_list("charge_id", flat=True)
            refunded = Refund.objects.filter(stripe_refund_id=term).values_list("charge_id", flat=True)
            return queryset.filter(charge_id__in=list(paid.union(refunded))), False
        return queryset.filter(client__in=clients_matching(term)), False

    @admin.display(description="Amount", ordering="amount_cents")
    def amount(self, entry: LedgerEntry) -> str:
        return dollars(entry.amount_cents)
