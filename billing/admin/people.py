"""Clients, clinicians and what the practice charges: the records staff look up all day."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from billing.admin import estimates, linking, money, statements
from billing.admin.common import (
    DollarsMixin,
    IdCheckedAutocompleteMixin,
    NewestRowsInline,
    dollars,
    has_billing_permission,
)
from billing.admin.plans import ClientPlanInline
from billing.models import (
    CategoryRate,
    Charge,
    Client,
    Coverage,
    FeeScheduleEntry,
    LedgerEntry,
    PolicyAcknowledgment,
    Service,
    StaffAction,
    StripeLinkStatus,
)
from billing.selectors import clients_with_balance

CLIENT_SEARCH = ("client__last_name", "client__first_name", "client__email")


def clients_matching(search_term: str) -> QuerySet[Client]:
    """Clients whose name or email contains every word of the search, as the client list searches them.

    Sessions and charges search through this rather than joining clients into their own (large) list:
    PostgreSQL then finds the few matching clients first and their rows through the client indexes.
    """
    found = Client.objects.all()
    for word in search_term.split():
        found = found.filter(Q(first_name__icontains=word) | Q(last_name__icontains=word) | Q(email__icontains=word))
    return found


def with_balance(clients: QuerySet[Client]) -> QuerySet[Client]:
    """Each client's balance as ``balance_cents``: the kept balance (ClientBalance), joined, so sorting and
    filtering the list by balance reads one row per client rather than the ledger."""
    return clients_with_balance(clients)


class BalanceFilter(admin.SimpleListFilter):
    title = "balance"
    parameter_name = "balance"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("owes", "Owes money"), ("credit", "In credit"), ("settled", "Settled")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        match self.value():
            case "owes":
                return queryset.filter(balance_cents__gt=0)
            case "credit":
                return queryset.filter(balance_cents__lt=0)
            case "settled":
                return queryset.filter(balance_cents=0)
        return queryset


class CardFilter(admin.SimpleListFilter):
    title = "card on file"
    parameter_name = "card"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Has a card"), ("no", "No card")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        match self.value():
            case "yes":
                return queryset.exclude(card_payment_method_id="")
            case "no":
                return queryset.filter(card_payment_method_id="")
        return queryset


class StripeLinkFilter(admin.SimpleListFilter):
    """Clients by how they are linked to a Stripe customer; "needs a person" is the linking queue."""

    title = "Stripe customer"
    parameter_name = "stripe_link"
    CHOICES = {
        "needs_person": ("Needs a person (unmatched or ambiguous)", linking.NEEDS_A_PERSON),
        "not_linked": ("Not yet linked", (StripeLinkStatus.NOT_LINKED,)),
        "linked": ("Linked (matched or created)", (StripeLinkStatus.MATCHED, StripeLinkStatus.CREATED)),
        "ignored": ("Ignored", (StripeLinkStatus.IGNORED,)),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in self.CHOICES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        choice = self.CHOICES.get(self.value() or "")
        return queryset.filter(stripe_link_status__in=choice[1]) if choice else queryset


class CoverageInline(DollarsMixin, admin.TabularInline):
    model = Coverage
    extra = 0
    fields = ("payer", "payer_name", "member_id", "plan_category", "copay_cents", "coinsurance_percent",
              "deductible_cents", "deductible_met_cents", "effective_from", "effective_to")


class PolicyAcknowledgmentInline(admin.TabularInline):
    model = PolicyAcknowledgment
    extra = 0
    fields = ("policy_version", "acknowledged_at", "source", "ip_address")


class ClientChargeInline(NewestRowsInline):
    model = Charge
    verbose_name_plural = "charges"
    fields = ("kind", "amount", "status", "scheduled_for", "appointment", "payment_reference")
    ordering = ("-created_at",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Charge]:
        return super().get_queryset(request).select_related("appointment")

    @admin.display(description="Amount")
    def amount(self, charge: Charge) -> str:
        return dollars(charge.amount_cents)


class LedgerEntryInline(NewestRowsInline):
    model = LedgerEntry
    verbose_name_plural = "ledger (newest first)"
    fields = ("occurred_on", "kind", "amount", "memo", "charge", "appointment", "actor", "created_at")
    ordering = ("-occurred_on", "-id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[LedgerEntry]:
        return super().get_queryset(request).select_related("charge", "appointment")

    @admin.display(description="Amount")
    def amount(self, entry: LedgerEntry) -> str:
        return dollars(entry.amount_cents)


class StaffActionInline(NewestRowsInline):
    model = StaffAction
    verbose_name_plural = "money taken, recorded or sent by staff"
    fields = ("created_at", "kind", "amount", "method", "reference", "reason", "payment", "user")
    ordering = ("-created_at", "-id")
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[StaffAction]:
        return super().get_queryset(request).select_related("payment", "user")

    @admin.display(description="Amount")
    def amount(self, action: StaffAction) -> str:
        return dollars(action.amount_cents) if action.amount_cents else ""


class ClientAdmin(DollarsMixin, admin.ModelAdmin):
    list_display = ("name", "email", "billing_type", "balance", "card", "flagged_for_outreach", "active")
    list_filter = ("billing_type", "flagged_for_outreach", BalanceFilter, CardFilter, StripeLinkFilter, "active")
    search_fields = ("last_name", "first_name", "email", "phone", "=external_id")
    show_full_result_count = False
    ordering = ("last_name", "first_name")
    readonly_fields = ("balance", "card", "stripe_customer_id", "stripe_link_status", "card_payment_method_id",
                       "flagged_at", "source", "external_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("first_name", "last_name", "email", "phone", "date_of_birth", "active")}),
        ("Billing", {"fields": ("billing_type", "session_rate_cents", "balance")}),
        ("Card and Stripe", {"fields": ("card", "stripe_customer_id", "stripe_link_status",
                                        "card_payment_method_id")}),
        ("Outreach", {"fields": ("flagged_for_outreach", "flagged_reason", "flagged_at")}),
        ("From the EHR", {"fields": ("source", "external_id", "created_at", "updated_at")}),
    )
    inlines = (CoverageInline, PolicyAcknowledgmentInline, ClientPlanInline, ClientChargeInline, LedgerEntryInline,
               StaffActionInline)
    actions = ("link_to_stripe", "create_stripe_customer", "link_chosen_customer", "ignore_stripe_link",
               "send_card_link", "issue_estimates")
    change_form_template = "admin/billing/client/change_form.html"

    def get_urls(self) -> list[URLPattern]:
        # Taking and recording money from the client's page (billing/admin/money.py).
        page = path("<path:object_id>/money/<slug:what>/", self.admin_site.admin_view(self.money_view),
                    name="billing_client_money")
        return [page, *super().get_urls()]

    def money_view(self, request: HttpRequest, object_id: str, what: str) -> HttpResponse:
        return money.client_money_view(self, request, object_id, what)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        client = self.get_object(request, object_id)
        extra_context = dict(extra_context or {})
        if client is not None:
            extra_context["money_tools"] = [*money.client_money_tools(request, client),
                                            *estimates.client_estimate_tools(request, client),
                                            *statements.client_statement_tools(request, client)]
        return super().change_view(request, object_id, form_url, extra_context)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Client]:
        return with_balance(super().get_queryset(request))

    def has_link_stripe_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, linking.LINK_PERMISSION)

    def has_card_link_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, linking.CARD_LINK_PERMISSION)

    @admin.action(description="Link to Stripe customers", permissions=["link_stripe"])
    def link_to_stripe(self, request: HttpRequest, queryset: QuerySet[Client]) -> TemplateResponse | None:
        return linking.link_to_stripe(self, request, list(queryset), "link_to_stripe")

    @admin.action(description="Create a new Stripe customer", permissions=["link_stripe"])
    def create_stripe_customer(self, request: HttpRequest, queryset: QuerySet[Client]) -> TemplateResponse | None:
        return linking.create_customers(self, request, list(queryset), "create_stripe_customer")

    @admin.action(description="Link to a chosen Stripe customer", permissions=["link_stripe"])
    def link_chosen_customer(self, request: HttpRequest, queryset: QuerySet[Client]) -> TemplateResponse | None:
        return linking.link_chosen(self, request, list(queryset), "link_chosen_customer")

    @admin.action(description="Ignore for Stripe linking", permissions=["link_stripe"])
    def ignore_stripe_link(self, request: HttpRequest, queryset: QuerySet[Client]) -> TemplateResponse | None:
        return linking.ignore(self, request, list(queryset), "ignore_stripe_link")

    @admin.action(description="Send card link", permissions=["card_link"])
    def send_card_link(self, request: HttpRequest, queryset: QuerySet[Client]) -> TemplateResponse | None:
        return linking.send_card_links(self, request, list(queryset), "send_card_link")

    def has_issue_estimate_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, estimates.ISSUE)

    @admin.action(description="Issue a good faith estimate to each self-pay client without one",
                  permissions=["issue_estimate"])
    def issue_estimates(self, request: HttpRequest, queryset: QuerySet[Client]) -> None:
        self.message_user(request, estimates.estimates_for_all(request, list(queryset)), messages.SUCCESS)

    @admin.display(description="Name", ordering="last_name")
    def name(self, client: Client) -> str:
        return f"{client.last_name}, {client.first_name}"

    @admin.display(description="Balance", ordering="balance_cents")
    def balance(self, client: Client) -> str:
        # Set by with_balance(); a client being added has no ledger yet.
        return dollars(getattr(client, "balance_cents", 0))

    @admin.display(description="Card")
    def card(self, client: Client) -> str:
        return client.card_summary or "No card"


class ClinicianAdmin(admin.ModelAdmin):
    list_display = ("name", "credentials", "npi", "email", "active")
    list_filter = ("active",)
    search_fields = ("name", "email", "=npi", "=external_id")
    readonly_fields = ("source", "external_id", "created_at", "updated_at")


class FeeScheduleInline(DollarsMixin, admin.TabularInline):
    model = FeeScheduleEntry
    extra = 0


class PayerAdmin(admin.ModelAdmin):
    list_display = ("name", "payer_id")
    search_fields = ("name", "=payer_id")
    inlines = (FeeScheduleInline,)


class ServiceAdmin(DollarsMixin, admin.ModelAdmin):
    list_display = ("cpt_code", "description", "fee", "is_group")
    list_filter = ("is_group",)
    search_fields = ("cpt_code", "description")

    @admin.display(description="Fee", ordering="fee_cents")
    def fee(self, service: Service) -> str:
        return dollars(service.fee_cents)


class FeeScheduleEntryAdmin(DollarsMixin, admin.ModelAdmin):
    list_display = ("payer", "service", "allowed")
    list_filter = ("payer",)
    list_select_related = ("payer", "service")
    search_fields = ("payer__name", "service__cpt_code")
    ordering = ("payer__name", "service__cpt_code")

    @admin.display(description="Allowed", ordering="allowed_cents")
    def allowed(self, entry: FeeScheduleEntry) -> str:
        return dollars(entry.allowed_cents)


class CategoryRateAdmin(DollarsMixin, admin.ModelAdmin):
    list_display = ("plan_category", "amount")

    @admin.display(description="Client pays", ordering="amount_cents")
    def amount(self, rate: CategoryRate) -> str:
        return dollars(rate.amount_cents)


class CoverageAdmin(IdCheckedAutocompleteMixin, DollarsMixin, admin.ModelAdmin):
    list_display = ("client", "payer_label", "member_id", "copay", "coinsurance_percent", "effective_from",
                    "effective_to")
    list_filter = ("payer",)
    list_select_related = ("client", "payer")
    search_fields = (*CLIENT_SEARCH, "=member_id", "payer_name")
    autocomplete_fields = ("client",)
    show_full_result_count = False
    readonly_fields = ("created_at", "benefits_as_of")

    @admin.display(description="Payer")
    def payer_label(self, coverage: Coverage) -> str:
        return coverage.payer.name if coverage.payer else coverage.payer_name

    @admin.display(description="Copay", ordering="copay_cents")
    def copay(self, coverage: Coverage) -> str:
        return dollars(coverage.copay_cents)


class PolicyAcknowledgmentAdmin(IdCheckedAutocompleteMixin, admin.ModelAdmin):
    list_display = ("client", "policy_version", "acknowledged_at", "source")
    list_filter = ("policy_version",)
    list_select_related = ("client",)
    search_fields = CLIENT_SEARCH
    autocomplete_fields = ("client",)
    show_full_result_count = False
