"""Taking and recording money from a client's page, and settling a reconciliation finding (workflow 15).

Each page is a form that calls one service in billing/services/staff_payments.py. The form carries a fresh
random key each time it is shown, so the same form sent twice does one thing; a refusal (bad input, more
than is payable now, a payment already being taken) is shown on the form and changes nothing.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from billing.admin.common import DollarsField, has_billing_permission, staff_user
from billing.errors import Refused
from billing.models import ChargeStatus, Client, OutsideMethod, Practice, ReconciliationFinding, StaffAction
from billing.money import format_cents
from billing.services.balance import client_payable, payable_charges
from billing.services.plans import MAX_INSTALLMENTS, plan_offer
from billing.services.receipts import receipt_context
from billing.services.refunds import refundable_cents
from billing.services.staff_payments import (
    ADJUST_CHOICES,
    ALREADY_SENT,
    LINKS,
    SETTLE_CHOICES,
    StaffActionRefused,
    balance_adjust,
    client_link_send,
    finding_settle,
    outside_payment_record,
    phone_payment_take,
)

TAKE_PAYMENT = "take_payment"
ADJUST_BALANCE = "adjust_balance"
SEND_LINK = "send_card_link"
OFFER_PLAN = "offer_payment_plan"
REFUND = "refund_charge"


def new_form_key() -> str:
    return secrets.token_urlsafe(24)


class KeyedForm(forms.Form):
    form_key = forms.CharField(widget=forms.HiddenInput, max_length=64)


class PaysForm(KeyedForm):
    """What a payment (or a reduction) is for: chosen open charges, or an amount of the balance."""

    charges = forms.TypedMultipleChoiceField(
        coerce=int, required=False, widget=forms.CheckboxSelectMultiple, label="Open charges",
        help_text="Choose the charges it is for, or none to apply the amount to the balance, oldest charges first.")
    amount = DollarsField(required=False, label="Amount ($)")

    def __init__(self, *args: Any, charges: list[tuple[int, str, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.charge_amounts = {pk: cents for pk, _, cents in charges}
        self.fields["charges"].choices = [(pk, label) for pk, label, _ in charges]  # type: ignore[attr-defined]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        chosen, amount = data.get("charges") or [], data.get("amount")
        if chosen:
            total = sum(self.charge_amounts[pk] for pk in chosen)
            if amount is not None and amount != total:
                self.add_error("amount", f"The chosen charges total {format_cents(total)}: leave the amount empty "
                                         f"or make it {format_cents(total)}.")
        elif "amount" not in self.errors and not amount:
            self.add_error("amount", "Enter an amount above $0.00, or choose the charges it is for.")
        return data


class PhonePaymentForm(PaysForm):
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="What the client asked for on the phone; kept in the payment's history.")


class OutsidePaymentForm(PaysForm):
    method = forms.ChoiceField(choices=OutsideMethod.choices, label="Paid by")
    reference = forms.CharField(max_length=90, required=False, label="Reference",
                                help_text="The check number, or what identifies the payment (needed for a check "
                                          "or other).")
    reason = forms.CharField(max_length=300, required=False, label="Note",
                             widget=forms.Textarea(attrs={"rows": 2}))


class AdjustForm(PaysForm):
    choice = forms.ChoiceField(choices=[(key, value[0]) for key, value in ADJUST_CHOICES.items()], label="What",
                               widget=forms.RadioSelect)
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 2}),
                             help_text="Why: kept in the ledger and the audit trail.")
    field_order = ["choice", "charges", "amount", "reason"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("choice") == "add" and data.get("charges"):
            self.add_error("charges", "An amount added to what the client owes is not tied to charges.")
        return data


class PlanOfferForm(KeyedForm):
    amount = DollarsField(label="Total ($)", help_text="What the plan covers: at most what the client owes now.")
    count = forms.IntegerField(label="Number of installments", min_value=2, max_value=MAX_INSTALLMENTS, initial=3)
    first_due_on = forms.DateField(label="First installment on", help_text="YYYY-MM-DD; the others follow monthly "
                                                                           "on the same day.")
    lapse_after_days = forms.IntegerField(
        label="Lapses after (days)", min_value=1, max_value=365, initial=30,
        help_text="An installment still unpaid this many days after its date (or once its retries end) lapses the "
                  "plan.")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if "amount" not in self.errors and not data.get("amount"):
            self.add_error("amount", "Enter the plan's total, above $0.00.")
        return data


class LinkForm(KeyedForm):
    what = forms.ChoiceField(choices=list(LINKS.items()), widget=forms.RadioSelect, label="Send by email")


class SettleForm(KeyedForm):
    choice = forms.ChoiceField(choices=list(SETTLE_CHOICES.items()), widget=forms.RadioSelect, label="Settle by")
    amount = DollarsField(required=False, label="Amount ($)",
                          help_text="For its open charge: empty or the charge's amount takes the charge off in full.")
    reason = forms.CharField(max_length=300, widget=forms.Textarea(attrs={"rows": 2}))


def _charge_label(charge: Any) -> str:
    context = receipt_context(charge)
    when = f"{context['session_date']:%b %d, %Y}: " if context["session_date"] else ""
    return f"#{charge.pk} {when}{context['service']}, {format_cents(charge.amount_cents)} " \
           f"({charge.get_status_display().lower()})"


def open_charge_choices(client: Client) -> list[tuple[int, str, int]]:
    """The open charges staff may choose; one waiting for the client's bank is left to the client."""
    return [(c.pk, _charge_label(c), c.amount_cents) for c in payable_charges(client)
            if c.status != ChargeStatus.REQUIRES_ACTION]


@dataclass(frozen=True)
class Page:
    title: str
    permission: str
    form: type[forms.Form]
    submit: str
    act: Callable[[Client, dict[str, Any], Any, Any], str]  # (client, cleaned data, user, now) -> message
    intro: str = ""


def _charges(data: dict[str, Any]) -> list[int] | None:
    return list(data["charges"]) or None


def _phone(client: Client, data: dict[str, Any], user: Any, now: Any) -> str:
    charge_ids = _charges(data)
    result = phone_payment_take(client=client, amount_cents=None if charge_ids else data["amount"],
                                charge_ids=charge_ids, reason=data["reason"], form_key=data["form_key"],
                                user=user, now=now)
    if result.status != "succeeded":
        raise StaffActionRefused(result.message)
    return (f"Charged {format_cents(result.payment.amount_cents)} to {client.card_summary}; the client's receipt "
            "is on its way by email.")


def _outside(client: Client, data: dict[str, Any], user: Any, now: Any) -> str:
    charge_ids = _charges(data)
    action = outside_payment_record(client=client, amount_cents=None if charge_ids else data["amount"],
                                    charge_ids=charge_ids, method=data["method"], reference=data["reference"],
                                    reason=data["reason"], form_key=data["form_key"], user=user, now=now)
    return f"Recorded a {OutsideMethod(action.method).label.lower()} payment of {format_cents(-action.amount_cents)}."


def _adjust(client: Client, data: dict[str, Any], user: Any, now: Any) -> str:
    charge_ids = _charges(data)
    action = balance_adjust(client=client, choice=data["choice"], amount_cents=None if charge_ids else data["amount"],
                            charge_ids=charge_ids, reason=data["reason"], form_key=data["form_key"], user=user,
                            now=now)
    return f"Posted a {action.get_kind_display().lower()} of {format_cents(action.amount_cents)}."


def _offer_plan(client: Client, data: dict[str, Any], user: Any, now: Any) -> str:
    try:
        plan, _ = plan_offer(client=client, total_cents=data["amount"], count=data["count"],
                             first_due_on=data["first_due_on"], lapse_after_days=data["lapse_after_days"], now=now,
                             user=user, form_key=data["form_key"])
    except Refused as refused:
        raise StaffActionRefused(str(refused)) from None
    return (f"Offered {plan}: {format_cents(plan.total_cents)} in {data['count']} installments. The client's link to "
            f"agree is {_on_its_way(client)}; nothing is charged until they agree.")


def _link(client: Client, data: dict[str, Any], user: Any, now: Any) -> str:
    client_link_send(client=client, what=data["what"], form_key=data["form_key"], user=user, now=now)
    return f"{LINKS[data['what']]}: {_on_its_way(client)}."


def _on_its_way(client: Client) -> str:
    # While the practice previews charging the outbox keeps emails as drafts: staff are not told it was sent.
    if Practice.load().charging_preview:
        return f"drafted for {client.email}, not sent (the practice is previewing charging)"
    return f"emailed to {client.email}"


PAGES = {
    "charge-card": Page("Charge the card on file", TAKE_PAYMENT, PhonePaymentForm, "Charge the card now", _phone,
                        "The client is on the phone and agrees to this payment now."),
    "record-payment": Page("Record a payment taken outside Stripe", TAKE_PAYMENT, OutsidePaymentForm,
                           "Record the payment", _outside),
    "adjust": Page("Adjustment or write-off", ADJUST_BALANCE, AdjustForm, "Post it", _adjust),
    "send-link": Page("Send a link or statement", SEND_LINK, LinkForm, "Send", _link),
    "offer-plan": Page("Offer a payment plan", OFFER_PLAN, PlanOfferForm, "Offer the plan", _offer_plan,
                       "Monthly installments charged to the card on file once the client agrees on the portal (the "
                       "link is emailed to them)."),
}


def client_money_tools(request: HttpRequest, client: Client) -> list[tuple[str, str]]:
    """The money pages the signed-in staff member may open for this client: (title, url)."""
    return [(page.title, reverse("admin:billing_client_money", args=[client.pk, name]))
            for name, page in PAGES.items() if has_billing_permission(request, page.permission)]


def _context(model_admin: admin.ModelAdmin, request: HttpRequest, client: Client) -> dict[str, Any]:
    payable = client_payable(client)
    return {**model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, "original": client,
            "client": client, "balance": format_cents(payable.balance_cents),
            "payable": format_cents(payable.now_cents),
            "in_flight": format_cents(payable.in_flight_cents) if payable.in_flight_cents else "",
            "card": client.card_summary or "No card on file",
            "change_url": reverse("admin:billing_client_change", args=[client.pk])}


def _form(page: Page, data: Any, client: Client, **kwargs: Any) -> forms.Form:
    if issubclass(page.form, PaysForm):
        kwargs["charges"] = open_charge_choices(client)
    return page.form(data, **kwargs)


def client_money_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str, what: str) -> HttpResponse:
    page = PAGES.get(what)
    if page is None:
        raise Http404("No such page.")
    if not has_billing_permission(request, page.permission):
        raise PermissionDenied
    client = model_admin.get_object(request, object_id)
    if client is None:
        raise Http404(f"No client {object_id}.")
    change_url = reverse("admin:billing_client_change", args=[client.pk])
    if request.method == "POST":
        form = _form(page, request.POST, client)
        if _already_sent(request, form):
            pass  # said on the form: the first copy did the work, against the client as it was then
        elif form.is_valid():
            try:
                message = page.act(client, form.cleaned_data, staff_user(request), timezone.now())
            except StaffActionRefused as refused:
                # Shown as typed, with a new key: what was refused did nothing, and a new try is a new form.
                data = request.POST.copy()
                data["form_key"] = new_form_key()
                form = _form(page, data, client)
                form.is_valid()
                form.add_error(None, str(refused))
            else:
                model_admin.message_user(request, message, messages.SUCCESS)
                return HttpResponseRedirect(change_url)
    else:
        form = _form(page, None, client, initial={"form_key": new_form_key(),
                                                  "amount": client_payable(client).now_cents or None})
    return TemplateResponse(request, "admin/billing/client/money.html", {
        **_context(model_admin, request, client), "title": f"{page.title}: {client}", "form": form,
        "submit": page.submit, "intro": page.intro})


def _already_sent(request: HttpRequest, form: forms.Form) -> bool:
    """The same form sent again after it was done (Back and submit, a double click): say so rather than
    judge it against what it changed."""
    if not StaffAction.objects.filter(form_key=request.POST.get("form_key", "")[:64]).exists():
        return False
    form.is_valid()
    form.add_error(None, ALREADY_SENT)
    return True


# --- A reconciliation finding, settled from its page ------------------------------------------------------

def may_settle(request: HttpRequest) -> bool:
    return has_billing_permission(request, ADJUST_BALANCE) or has_billing_permission(request, REFUND)


def finding_settle_view(model_admin: admin.ModelAdmin, request: HttpRequest, object_id: str) -> HttpResponse:
    if not may_settle(request):
        raise PermissionDenied
    finding = model_admin.get_object(request, object_id)
    if not isinstance(finding, ReconciliationFinding):
        raise Http404(f"No finding {object_id}.")
    change_url = reverse("admin:billing_reconciliationfinding_change", args=[finding.pk])
    form = SettleForm(request.POST if request.method == "POST" else None,
                      initial={"form_key": new_form_key(), "amount": _finding_difference(finding)})
    if request.method == "POST" and _already_sent(request, form):
        pass
    elif form.is_valid():
        data = form.cleaned_data
        needed = REFUND if data["choice"] == "refund" else ADJUST_BALANCE
        try:
            if not has_billing_permission(request, needed):
                raise StaffActionRefused("Your role may not settle a finding that way.")
            action = finding_settle(finding=finding, choice=data["choice"], amount_cents=data["amount"],
                                    reason=data["reason"], form_key=data["form_key"], user=staff_user(request),
                                    now=timezone.now())
        except StaffActionRefused as refused:
            fresh = request.POST.copy()
            fresh["form_key"] = new_form_key()
            form = SettleForm(fresh)
            form.is_valid()
            form.add_error(None, str(refused))
        else:
            model_admin.message_user(request, f"Settled: {action.get_kind_display().lower()} of "
                                              f"{format_cents(abs(action.amount_cents))}; the finding is resolved.",
                                     messages.SUCCESS)
            return HttpResponseRedirect(change_url)
    charge = finding.charge
    return TemplateResponse(request, "admin/billing/reconciliationfinding/settle.html", {
        **model_admin.admin_site.each_context(request), "opts": model_admin.model._meta, "original": finding,
        "title": f"Settle: {finding}", "form": form, "change_url": change_url, "finding": finding,
        "charge": _charge_label(charge) if charge else "", "expected": _money(finding.expected_cents),
        "actual": _money(finding.actual_cents),
        "refundable": format_cents(refundable_cents(charge)) if charge else "",
        "balance": format_cents(client_payable(finding.client).balance_cents) if finding.client else ""})


def _money(cents: int | None) -> str:
    return "-" if cents is None else format_cents(cents)


def _finding_difference(finding: ReconciliationFinding) -> int | None:
    if finding.expected_cents is None or finding.actual_cents is None:
        return None
    return abs(finding.actual_cents - finding.expected_cents) or None
