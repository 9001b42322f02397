"""Client linking to Stripe customers and card links, as staff actions (docs/product.md, workflows 1 and 2).

The client list and the review queue (its "Stripe customer to link by hand" items) offer the same
actions; each function here takes the clients the selection names, asks for confirmation (and any
input), calls one service per client and reports what happened. Stripe's own refusal (a wrong
customer id, say) is shown to staff as Stripe worded it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from billing.admin.common import confirmation, confirmed, plural, staff_user
from billing.errors import GatewayRefused, OutcomeUnknown
from billing.models import Client, ReviewItem, ReviewKind, ReviewStatus, StripeLinkStatus
from billing.services.cards import (
    client_customer_create,
    client_customer_link,
    client_link_ignore,
    clients_link_stripe,
    enrollment_link_send,
)

LINK_PERMISSION = "link_stripe_customer"
CARD_LINK_PERMISSION = "send_card_link"
# Each client costs one or two calls to Stripe (25 a second in test mode): keep a request short.
MAX_CLIENTS_PER_RUN = 100
REPORT_ROWS = (
    (StripeLinkStatus.MATCHED, "Matched to an existing Stripe customer"),
    (StripeLinkStatus.CREATED, "New Stripe customer created"),
    (StripeLinkStatus.UNMATCHED, "Unmatched (no email to match by)"),
    (StripeLinkStatus.AMBIGUOUS, "Ambiguous (several customers share the email)"),
    (StripeLinkStatus.IGNORED, "Ignored"),
)
NEEDS_A_PERSON = (StripeLinkStatus.UNMATCHED, StripeLinkStatus.AMBIGUOUS)
STRIPE_TROUBLE = (GatewayRefused, OutcomeUnknown)


class CustomerIdForm(forms.Form):
    customer_id = forms.CharField(label="Stripe customer id", max_length=100,
                                  help_text="The id from the Stripe dashboard, starting cus_.")

    def clean_customer_id(self) -> str:
        value: str = self.cleaned_data["customer_id"].strip()
        if not value.startswith("cus_"):
            raise forms.ValidationError("A Stripe customer id starts with cus_.")
        return value


def _too_many(model_admin: admin.ModelAdmin, request: HttpRequest, clients: list[Client]) -> bool:
    if len(clients) > MAX_CLIENTS_PER_RUN:
        model_admin.message_user(request, f"Select at most {MAX_CLIENTS_PER_RUN} clients at a time "
                                          f"({len(clients)} were selected).", messages.WARNING)
        return True
    return False


def _stripe_trouble(model_admin: admin.ModelAdmin, request: HttpRequest, client: Client, error: Exception,
                    request_name: str) -> None:
    if isinstance(error, OutcomeUnknown):
        text = f"Stripe did not answer for {client}: {error} Nothing was changed for them; try again."
    else:
        text = f"Stripe refused {request_name} for {client}: {error}"
    model_admin.message_user(request, text, messages.ERROR)


def link_to_stripe(model_admin: admin.ModelAdmin, request: HttpRequest, clients: list[Client],
                   action: str) -> TemplateResponse | None:
    """Match the clients to Stripe customers by email (creating one where none matches); show the report."""
    if _too_many(model_admin, request, clients):
        return None
    if not confirmed(request):
        return confirmation(
            model_admin, request, action=action, title="Link to Stripe customers", submit="Link to Stripe",
            intro=f"Each of these {plural(len(clients), 'client')} is matched to the Stripe customer with the "
                  "same email, or a new customer is created when none has it. Clients whose email two "
                  "customers share, or who have no email, wait in the review queue.",
            rows=[f"{c} ({c.email or 'no email'}): {c.get_stripe_link_status_display()}" for c in clients])
    try:
        report = clients_link_stripe(clients=clients, now=timezone.now())
    except STRIPE_TROUBLE as error:
        model_admin.message_user(request, f"Stripe stopped answering part way ({error}); the clients before "
                                          "that were linked. Run the action again for the rest.", messages.ERROR)
        return None
    ids = [c.pk for c in clients]
    waiting = list(ReviewItem.objects.filter(kind=ReviewKind.STRIPE_LINK, status=ReviewStatus.OPEN, client__in=ids)
                   .select_related("client").order_by("client__last_name", "client__first_name", "id"))
    counts = [(label, report.get(status, 0)) for status, label in REPORT_ROWS]
    if report.get("not linked"):
        counts.append(("Not linked", report["not linked"]))
    model_admin.message_user(request, "Linked to Stripe: " + ", ".join(
        f"{report.get(status, 0)} {status.label.lower()}" for status, _ in REPORT_ROWS) + ".", messages.SUCCESS)
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Stripe match report",
        "opts": model_admin.model._meta,
        "total": len(clients),
        "counts": counts,
        "waiting": waiting,
        "queue_url": reverse("admin:billing_reviewitem_changelist")
        + f"?kind__exact={ReviewKind.STRIPE_LINK}&status__exact={ReviewStatus.OPEN}",
    }
    return TemplateResponse(request, "admin/billing/client/link_report.html", context)


def create_customers(model_admin: admin.ModelAdmin, request: HttpRequest, clients: list[Client],
                     action: str) -> TemplateResponse | None:
    """A new Stripe customer for each client not linked to one."""
    linked = [c for c in clients if c.stripe_customer_id]
    todo = [c for c in clients if not c.stripe_customer_id]
    if not todo:
        model_admin.message_user(request, "Every selected client is already linked to a Stripe customer.",
                                 messages.WARNING)
        return None
    if _too_many(model_admin, request, todo):
        return None
    if not confirmed(request):
        return confirmation(
            model_admin, request, action=action, title="Create new Stripe customers",
            submit="Create Stripe customers",
            intro=f"A new Stripe customer (name and email only) will be created for {plural(len(todo), 'client')}:",
            rows=[f"{c} ({c.email or 'no email'})" for c in todo],
            warnings=[f"Already linked, left as they are: {', '.join(str(c) for c in linked)}."] if linked else [])
    _each(model_admin, request, todo, lambda c: client_customer_create(client=c, now=timezone.now()),
          "Created a new Stripe customer for {}.")
    return None


def link_chosen(model_admin: admin.ModelAdmin, request: HttpRequest, clients: list[Client],
                action: str) -> TemplateResponse | None:
    """Link one client to the Stripe customer staff name (it must exist in Stripe)."""
    if len(clients) != 1:
        model_admin.message_user(request, "Select exactly one client to link to a chosen Stripe customer.",
                                 messages.WARNING)
        return None
    [client] = clients
    form = CustomerIdForm(request.POST if confirmed(request) else None)
    if not form.is_valid():
        warnings = []
        if client.stripe_customer_id:
            warnings.append(f"{client} is linked to {client.stripe_customer_id} now; that link is replaced.")
        if client.has_card:
            warnings.append(f"{client}'s saved card ({client.card_summary}) belongs to the current customer: "
                            "send a card link afterwards so the card is saved with the new one.")
        return confirmation(
            model_admin, request, action=action, title="Link to a chosen Stripe customer", form=form,
            submit="Link", rows=[f"{client} ({client.email or 'no email'}): "
                                 f"{client.get_stripe_link_status_display()}"],
            intro="Find the customer in the Stripe dashboard and paste its id:", warnings=warnings)
    customer_id = form.cleaned_data["customer_id"]
    _each(model_admin, request, [client],
          lambda c: client_customer_link(client=c, customer_id=customer_id, now=timezone.now()),
          f"Linked {{}} to Stripe customer {customer_id}.", request_name=f"customer {customer_id}")
    return None


def ignore(model_admin: admin.ModelAdmin, request: HttpRequest, clients: list[Client],
           action: str) -> TemplateResponse | None:
    """Stop trying to link the clients (e.g. they never pay by card); their review items close."""
    if not confirmed(request):
        return confirmation(
            model_admin, request, action=action, title="Ignore for Stripe linking", submit="Ignore",
            intro=f"These {plural(len(clients), 'client')} will not be matched to Stripe customers "
                  "until someone links them by hand:",
            rows=[f"{c} ({c.email or 'no email'}): {c.get_stripe_link_status_display()}" for c in clients])
    _each(model_admin, request, clients, lambda c: client_link_ignore(client=c, now=timezone.now()),
          "{} will not be linked to Stripe.")
    return None


def _each(model_admin: admin.ModelAdmin, request: HttpRequest, clients: list[Client],
          service: Callable[[Client], Any], done: str, request_name: str = "the request") -> None:
    for client in clients:
        try:
            service(client)
        except STRIPE_TROUBLE as error:
            _stripe_trouble(model_admin, request, client, error, request_name)
        else:
            model_admin.message_user(request, done.format(client), messages.SUCCESS)


def send_card_links(model_admin: admin.ModelAdmin, request: HttpRequest, clients: list[Client],
                    action: str) -> TemplateResponse | None:
    """Email each client a secure link to save a card. The link itself is never shown to staff."""
    reachable = [c for c in clients if c.email]
    unreachable = [c for c in clients if not c.email]
    if not reachable:
        for client in unreachable:
            model_admin.message_user(request, f"{client} has no email address: add one, then send the card link.",
                                     messages.ERROR)
        return None
    if _too_many(model_admin, request, reachable):
        return None
    if not confirmed(request):
        return confirmation(
            model_admin, request, action=action, title="Send card links", submit="Send card links",
            intro=f"{plural(len(reachable), 'client')} will be emailed a link (valid for 7 days) to save a card:",
            rows=[f"{c} ({c.email}){': replaces ' + c.card_summary if c.has_card else ''}" for c in reachable],
            warnings=[f"{c} has no email address and will not be sent a link." for c in unreachable])
    user = staff_user(request)
    for client in reachable:
        enrollment_link_send(client=client, now=timezone.now(), actor=f"staff:{user.get_username()}",
                             send_email=True)
        model_admin.message_user(request, f"Emailed a card link to {client} at {client.email}.", messages.SUCCESS)
    for client in unreachable:
        model_admin.message_user(request, f"{client} has no email address: add one, then send the card link.",
                                 messages.ERROR)
    return None
