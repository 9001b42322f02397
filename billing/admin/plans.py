"""Payment plans for staff: the list of plans (status, paid so far, next installment), each plan's installments
and the client's consent, and canceling a plan. A plan is offered from the client's page (billing/admin/money.py).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Q, QuerySet, Sum
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from billing.admin.common import (
    ActionsOnlyMixin,
    ReadOnlyInline,
    confirmation,
    dollars,
    has_billing_permission,
    plural,
    staff_user,
)
from billing.errors import BillingError
from billing.models import OPEN_PLAN_STATUSES, PAID_STATUSES, Charge, Installment, PaymentPlan
from billing.selectors.history import installment_state
from billing.services.plans import plan_cancel

CANCEL_PERMISSION = "cancel_payment_plan"


class InstallmentInline(ReadOnlyInline):
    model = Installment
    verbose_name_plural = "installments"
    fields = ("number", "due_on", "agreed_amount", "charged_amount", "state", "charge")
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Installment]:
        return super().get_queryset(request).select_related("charge", "plan")

    @admin.display(description="Agreed")
    def agreed_amount(self, installment: Installment) -> str:
        return dollars(installment.amount_cents)

    @admin.display(description="Charge amount")
    def charged_amount(self, installment: Installment) -> str:
        return dollars(installment.charge.amount_cents) if installment.charge else "-"

    @admin.display(description="Status")
    def state(self, installment: Installment) -> str:
        return installment_state(installment)


class ClientPlanInline(ReadOnlyInline):
    """On the client's page: their plans, each linking to its own page."""

    model = PaymentPlan
    verbose_name_plural = "payment plans"
    fields = ("status", "total", "offered_at", "agreed_at", "ended_at", "end_reason")

    @admin.display(description="Total")
    def total(self, plan: PaymentPlan) -> str:
        return dollars(plan.total_cents)


class CancelForm(forms.Form):
    why = forms.CharField(label="Reason", max_length=200, widget=forms.Textarea(attrs={"rows": 2}),
                          help_text="Kept with the plan and in its installments' history.")


class PaymentPlanAdmin(ActionsOnlyMixin, admin.ModelAdmin):
    list_display = ("__str__", "client", "status", "total", "paid", "next_installment", "agreed_at")
    list_filter = ("status",)
    search_fields = ("client__last_name", "client__first_name", "client__email")
    list_select_related = ("client",)
    ordering = ("-offered_at",)
    fields = ("client", "status", "total", "paid", "lapse_after_days", "offered_at", "offered_by", "agreed_at",
              "consent_text", "consent_from", "ended_at", "end_reason")
    readonly_fields = fields
    inlines = (InstallmentInline,)
    actions = ("cancel_plan",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[PaymentPlan]:
        return super().get_queryset(request).annotate(
            paid_cents=Sum("installments__charge__amount_cents",
                           filter=Q(installments__charge__status__in=PAID_STATUSES)))

    @admin.display(description="Total")
    def total(self, plan: PaymentPlan) -> str:
        return dollars(plan.total_cents)

    @admin.display(description="Paid")
    def paid(self, plan: PaymentPlan) -> str:
        return dollars(getattr(plan, "paid_cents", None) or 0)

    @admin.display(description="Next installment")
    def next_installment(self, plan: PaymentPlan) -> str:
        if plan.status not in OPEN_PLAN_STATUSES:
            return "-"
        upcoming = Charge.objects.filter(installment__plan=plan).exclude(
            status__in=(*PAID_STATUSES, "canceled")).order_by("scheduled_for").first()
        if upcoming is None:
            following = plan.installments.order_by("number").first()
            return f"{following.due_on:%b %d, %Y}: {dollars(following.amount_cents)}" if following else "-"
        when = timezone.localtime(upcoming.scheduled_for)
        return f"{when:%b %d, %Y}: {dollars(upcoming.amount_cents)} ({upcoming.status_phrase})"

    @admin.display(description="What the client agreed to")
    def consent_text(self, plan: PaymentPlan) -> str:
        consent = getattr(plan, "consent", None)
        return consent.text if consent else "-"

    @admin.display(description="Agreed from")
    def consent_from(self, plan: PaymentPlan) -> str:
        consent = getattr(plan, "consent", None)
        return f"{consent.ip_address or '?'} ({consent.user_agent[:80]})" if consent else "-"

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return has_billing_permission(request, CANCEL_PERMISSION)

    @admin.action(description="Cancel payment plan", permissions=["cancel"])
    def cancel_plan(self, request: HttpRequest, queryset: QuerySet[PaymentPlan]) -> TemplateResponse | None:
        plans = list(queryset.select_related("client"))
        open_plans = [p for p in plans if p.status in OPEN_PLAN_STATUSES]
        if not open_plans:
            self.message_user(request, "Only offered and current plans can be canceled.", messages.WARNING)
            return None
        form = CancelForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            others = [p for p in plans if p not in open_plans]
            return confirmation(
                self, request, action="cancel_plan", title="Cancel payment plans", form=form,
                submit=f"Cancel {plural(len(open_plans), 'plan')}",
                intro="No more installments of these plans are charged; what was paid stays paid, and what the "
                      "client still owes is due as usual (the balance reminders start again):",
                rows=[f"{p} {p.client}: {dollars(p.total_cents)}, {p.get_status_display().lower()}"
                      for p in open_plans],
                warnings=[f"Already ended, left alone: {', '.join(str(p) for p in others)}."] if others else [])
        for plan in open_plans:
            try:
                plan_cancel(plan=plan, reason=form.cleaned_data["why"], user=staff_user(request), now=timezone.now())
            except BillingError as refused:
                self.message_user(request, f"{plan}: {refused}", messages.ERROR)
            else:
                self.message_user(request, f"Canceled {plan}.", messages.SUCCESS)
        return None

