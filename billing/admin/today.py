"""The Today page's fixes: each queue row offers what settles it, in place, for those whose role allows it.

A fix is a small form on the row (with a reason box when the service wants one) posted to ``fix_view``,
which checks the role again, calls one service and comes back to the page with what happened. A fix that
needs a page of its own (choosing a Stripe customer, refunding, settling a finding) is a link or the
admin action that opens that page.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from billing.admin.common import has_billing_permission, plural, staff_user
from billing.admin.estimates import ISSUE, REVISE, estimates_for_all
from billing.admin.linking import CARD_LINK_PERMISSION, LINK_PERMISSION
from billing.errors import BillingError
from billing.models import (
    CANCELABLE_STATUSES,
    NO_CARD_HOLD,
    STUCK_STATUSES,
    Charge,
    ChargeStatus,
    Client,
    EstimateStatus,
    GoodFaithEstimate,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.money import format_cents
from billing.selectors.dashboard import FEE_KINDS
from billing.services.cards import enrollment_link_send
from billing.services.estimates import is_estimate_hold
from billing.services.holds import charge_release, is_cap_hold
from billing.services.review import review_resolve
from billing.services.schedule import appointment_sync_charges, fee_waive
from billing.services.waiting import CHOICE_HOLD, waiting_charges_release


@dataclass(frozen=True)
class Fix:
    """One way to settle a row: a form posted to ``fix_view`` (``name`` and ``target``), an admin action
    posted to a list page (``action``), or a plain link (``url``)."""

    label: str
    name: str = ""
    target: int = 0
    reason: str = ""  # the reason box's placeholder; empty: no box
    reason_required: bool = False
    url: str = ""
    action: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def _may(request: HttpRequest, permission: str) -> bool:
    """``billing.<permission>``: a custom permission, or a model's standard one (change_appointment)."""
    return has_billing_permission(request, permission)


# --- which fixes a row offers --------------------------------------------------------------------------------

def charge_fixes(request: HttpRequest, charge: Charge) -> list[Fix]:
    """A held, failed or fee charge: release it, waive it, or ask the client for a card."""
    fixes = []
    if charge.kind in FEE_KINDS and charge.status in CANCELABLE_STATUSES and _may(request, "waive_fee"):
        fixes.append(Fix("Waive fee", name="waive", target=charge.pk, reason="Why waive it", reason_required=True))
    if charge.status == ChargeStatus.DUE and is_estimate_hold(charge):
        fixes += revise_fixes(request, charge.client_id)
    if (charge.status == ChargeStatus.DUE and (is_cap_hold(charge) or is_estimate_hold(charge))
            and _may(request, "release_charge")):
        fixes.append(Fix("Charge anyway", name="release", target=charge.pk, reason="Why it may go ahead",
                         reason_required=True))
    if (charge.status == ChargeStatus.DUE and charge.hold_reason == CHOICE_HOLD
            and _may(request, "release_charge")):
        fixes.append(Fix("Release: notice, then charge", name="release_waiting", target=charge.client_id))
    if ((charge.hold_reason == NO_CARD_HOLD or charge.status in STUCK_STATUSES)
            and _may(request, CARD_LINK_PERMISSION)):
        fixes.append(Fix("Email a card link", name="card_link", target=charge.client_id))
    return fixes


def revise_fixes(request: HttpRequest, client_id: int) -> list[Fix]:
    """A link to revise the client's good faith estimate in force (the guard held or warned about a charge)."""
    estimate = (GoodFaithEstimate.objects.filter(client_id=client_id, status=EstimateStatus.ISSUED)
                .order_by("-issued_at", "-pk").first())
    if estimate is None or not _may(request, REVISE):
        return []
    return [Fix("Issue a revised estimate", url=reverse("admin:billing_goodfaithestimate_revise", args=[estimate.pk]))]


def estimate_fixes(request: HttpRequest, client: Client) -> list[Fix]:
    """A self-pay client without an estimate: issue one (the page proposes the lines)."""
    if not _may(request, ISSUE):
        return []
    return [Fix("Issue an estimate", url=reverse("admin:billing_goodfaithestimate_issue", args=[client.pk]))]


def estimate_batch_fixes(request: HttpRequest, count: int) -> list[Fix]:
    """One estimate for each of them at once: weekly sessions for 12 months at their rate or the practice fee."""
    if not count or not _may(request, ISSUE):
        return []
    return [Fix(f"Issue and email an estimate to all {count}", name="estimates_all", target=0)]


def item_fixes(request: HttpRequest, item: ReviewItem) -> list[Fix]:
    """What settles a review item, by its cause; every open item can also be marked resolved."""
    fixes: list[Fix] = []
    kind = item.kind
    if kind in (ReviewKind.PRICING, ReviewKind.FEE_NO_ACK) and item.appointment_id and _may(
            request, "change_appointment"):
        if kind == ReviewKind.FEE_NO_ACK and _may(request, "add_policyacknowledgment"):
            fixes.append(Fix("Record the acknowledgment", url=reverse(
                "admin:billing_policyacknowledgment_add") + f"?client={item.client_id}"))
        fixes.append(Fix("Re-check billing", name="recheck", target=item.pk))
    elif kind == ReviewKind.STRIPE_LINK and _may(request, LINK_PERMISSION):
        changelist = reverse("admin:billing_reviewitem_changelist")
        fixes.append(Fix("Link a Stripe customer", url=changelist, action="stripe_link_chosen",
                         fields={"_selected_action": item.pk}))
        fixes.append(Fix("Create a Stripe customer", url=changelist, action="stripe_create_customer",
                         fields={"_selected_action": item.pk}))
    elif kind == ReviewKind.ESTIMATE_WARNING:
        fixes += revise_fixes(request, item.client_id)
    elif kind in (ReviewKind.NO_CARD, ReviewKind.CHARGE_CAP, ReviewKind.WAITING_CHOICE,
                  ReviewKind.ESTIMATE_HOLD) and item.charge is not None:
        fixes.extend(charge_fixes(request, item.charge))
    elif kind == ReviewKind.NO_CARD and _may(request, CARD_LINK_PERMISSION):
        fixes.append(Fix("Email a card link", name="card_link", target=item.client_id))
    elif kind in (ReviewKind.PAID_SESSION_CHANGED, ReviewKind.PAYMENT_REFUSED, ReviewKind.PAYMENT_UNKNOWN) \
            and item.charge_id:
        fixes.append(Fix("Open the charge (refund there)" if kind != ReviewKind.PAYMENT_UNKNOWN
                         else "Open the charge", url=reverse("admin:billing_charge_change", args=[item.charge_id])))
    elif kind == ReviewKind.PLAN_LAPSED:
        # The front desk calls the client; a new plan or another card is offered from the client's page.
        fixes.append(Fix("Open the client", url=reverse("admin:billing_client_change", args=[item.client_id])))
    if item.status == ReviewStatus.OPEN and _may(request, "change_reviewitem"):
        fixes.append(Fix("Mark resolved", name="resolve", target=item.pk, reason="Note (optional)"))
    return fixes


# --- doing a fix ---------------------------------------------------------------------------------------------

def _same_cause(item: ReviewItem) -> list[ReviewItem]:
    """The open items of this client with this cause: the Today page shows them as one row (a client's
    sessions every week with the same missing benefits), and its fix settles them together."""
    return list(ReviewItem.objects.filter(kind=item.kind, client_id=item.client_id, status=ReviewStatus.OPEN)
                .select_related("appointment"))


def _recheck(request: HttpRequest, pk: int, why: str) -> str:
    item = get_object_or_404(ReviewItem, pk=pk)
    user = staff_user(request)
    sessions = [i.appointment for i in _same_cause(item) if i.appointment is not None]
    if not sessions and item.appointment is not None:
        sessions = [item.appointment]
    for appointment in sessions:
        appointment_sync_charges(appointment=appointment, now=timezone.now(),
                                 actor=f"staff:{user.get_username()}", user=user)
    still_open = ReviewItem.objects.filter(pk__in=[i.pk for i in _same_cause(item)]).count()
    done = f"Re-checked billing for {plural(len(sessions), 'session')}."
    return done + (f" {plural(still_open, 'item')} still open: the reason is not settled yet." if still_open
                   else " Priced and closed.")


def _resolve(request: HttpRequest, pk: int, why: str) -> str:
    item = get_object_or_404(ReviewItem, pk=pk)
    items = _same_cause(item) or [item]
    for each in items:
        review_resolve(item=each, now=timezone.now(), user=staff_user(request), note=why)
    return f"Resolved {plural(len(items), 'review item')}."


def _card_link(request: HttpRequest, pk: int, why: str) -> str:
    client = get_object_or_404(Client, pk=pk)
    if not client.email:
        raise BillingError(f"{client} has no email address: add one, then send the card link.")
    enrollment_link_send(client=client, now=timezone.now(), actor=f"staff:{staff_user(request).get_username()}",
                         send_email=True)
    return f"Emailed a card link to {client} at {client.email}."


def _release(request: HttpRequest, pk: int, why: str) -> str:
    user = staff_user(request)
    charge = charge_release(charge=get_object_or_404(Charge, pk=pk), now=timezone.now(),
                            actor=f"staff:{user.get_username()}", user=user, why=why)
    return f"Charge #{charge.pk} ({format_cents(charge.amount_cents)}) will be charged on the next billing run."


def _release_waiting(request: HttpRequest, pk: int, why: str) -> str:
    user = staff_user(request)
    released = waiting_charges_release(client=get_object_or_404(Client, pk=pk), now=timezone.now(),
                                       actor=f"staff:{user.get_username()}", user=user)
    return f"Notice sent for {plural(len(released), 'charge')}; the card is charged after the notice's lead time."


def _waive(request: HttpRequest, pk: int, why: str) -> str:
    charge = fee_waive(charge=get_object_or_404(Charge, pk=pk), reason=why, now=timezone.now(),
                       user=staff_user(request))
    return f"Waived {charge.get_kind_display().lower()} #{charge.pk} ({format_cents(charge.amount_cents)})."


def _estimates_all(request: HttpRequest, pk: int, why: str) -> str:
    return estimates_for_all(request)


# name: (the permission it needs, whether a reason is required, what it does)
FIXES: dict[str, tuple[str, bool, Callable[[HttpRequest, int, str], str]]] = {
    "recheck": ("change_appointment", False, _recheck),
    "resolve": ("change_reviewitem", False, _resolve),
    "card_link": (CARD_LINK_PERMISSION, False, _card_link),
    "release": ("release_charge", True, _release),
    "release_waiting": ("release_charge", False, _release_waiting),
    "waive": ("waive_fee", True, _waive),
    "estimates_all": (ISSUE, False, _estimates_all),
}


@require_POST
def fix_view(request: HttpRequest) -> HttpResponse:
    """Do one fix and go back where the staff member was (the Today page, or a review item's page)."""
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        back = reverse("admin:index")
    fix = FIXES.get(request.POST.get("fix", ""))
    target = request.POST.get("target", "")
    if fix is None or not target.isdigit():
        messages.error(request, "That fix is not known; nothing was changed.")
        return HttpResponseRedirect(back)
    permission, reason_required, do = fix
    if not _may(request, permission):
        raise PermissionDenied
    why = request.POST.get("why", "").strip()[:200]
    if reason_required and not why:
        messages.error(request, "Say why first; nothing was changed.")
        return HttpResponseRedirect(back)
    try:
        messages.success(request, do(request, int(target), why))
    except BillingError as problem:
        messages.error(request, str(problem))
    return HttpResponseRedirect(back)
