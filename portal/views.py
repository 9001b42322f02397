"""The pages clients reach from emailed links. No passwords: the signed, expiring token is the key.

Views parse input, call one billing service and respond. Nothing about the client goes into a URL
or a log line; the token itself is never logged (see portal.logging_filters).
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import re
import secrets
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from billing.errors import PaymentProviderError
from billing.models import (
    COLLECTION_KINDS,
    PAID_STATUSES,
    Charge,
    ChargeKind,
    ChargeStatus,
    ClientLink,
    EstimateStatus,
    GoodFaithEstimate,
    LinkPurpose,
    Practice,
)
from billing.money import format_cents
from billing.selectors.history import client_history
from billing.services.balance import (
    PaymentInProgress,
    PaymentNotAllowed,
    balance_payment_start,
    client_payable,
    payable_charges,
)
from billing.services.cards import (
    authorization_text,
    card_save_from_setup_intent,
    enrollment_begin,
    enrollment_link_send,
)
from billing.services.documents import PeriodNotAllowed, estimate_pdf, superbill_pdf
from billing.services.estimates import estimate_acknowledge as acknowledge_estimate
from billing.services.links import LinkProblem, link_mark_used, link_resolve
from billing.services.payments import payment_client_secret, payment_refresh
from billing.services.plans import (
    PlanEnded,
    PlanNotFound,
    PlanRefused,
    installment_lines,
    plan_agree,
    plan_for_link,
    plan_paid_cents,
    plan_terms_text,
)
from billing.services.receipts import receipt_context
from billing.services.waiting import (
    CHOICE_HOLD,
    NothingWaiting,
    waiting_charges,
    waiting_charges_leave,
    waiting_charges_release,
    waiting_choice_link,
    waiting_lines,
)
from billing.services.webhooks import stripe_event_receive, stripe_event_verify

log = logging.getLogger(__name__)


def _page(request: HttpRequest, template: str, context: dict[str, object], status: int = 200) -> HttpResponse:
    response = render(request, template, {"practice": Practice.load(), **context}, status=status)
    response["Cache-Control"] = "no-store"
    # The token must not leak to Stripe.js or any other site; same-origin still lets our own forms pass CSRF.
    response["Referrer-Policy"] = "same-origin"
    return response


def _problem(request: HttpRequest, problem: LinkProblem) -> HttpResponse:
    return _page(request, "portal/link_problem.html", {"reason": problem.reason},
                 status=404 if problem.reason == "unknown" else 410)


LinkView = Callable[..., HttpResponse]


def _with_link(*purposes: str, answer_json: bool) -> Callable[[LinkView], LinkView]:
    """Resolve the link a page or call is for (and check what it is for) before the view runs.

    The view receives the ClientLink; an expired, used or forged token gets the friendly page, or a
    JSON error for the pages' own calls.
    """
    def wrap(view: LinkView) -> LinkView:
        @functools.wraps(view)
        def resolved(request: HttpRequest, token: str, **kwargs: Any) -> HttpResponse:
            try:
                client_link = link_resolve(token=token, now=timezone.now())
            except LinkProblem as problem:
                if answer_json:
                    return JsonResponse({"error": _problem_text(problem.reason)}, status=410)
                return _problem(request, problem)
            if purposes and client_link.purpose not in purposes:
                if answer_json:
                    return JsonResponse({"error": _problem_text("unknown")}, status=404)
                return _problem(request, LinkProblem("unknown"))
            return view(request, client_link, token, **kwargs)
        return resolved
    return wrap


@require_GET
@never_cache
def link(request: HttpRequest, token: str) -> HttpResponse:
    try:
        client_link = link_resolve(token=token, now=timezone.now())
    except LinkProblem as problem:
        return _problem(request, problem)
    if client_link.purpose == LinkPurpose.ENROLL_CARD:
        return _enroll_page(request, client_link, token)
    if client_link.purpose == LinkPurpose.AUTHENTICATE_PAYMENT:
        return _authenticate_page(request, client_link, token)
    if client_link.purpose == LinkPurpose.PAY_BALANCE:
        return _balance_page(request, client_link, token)
    if client_link.purpose == LinkPurpose.RECEIPTS:  # the link in every receipt: history and receipts, no paying
        return _history_page(request, client_link, token)
    if client_link.purpose == LinkPurpose.PAYMENT_PLAN:
        return _plan_page(request, client_link, token)
    if client_link.purpose == LinkPurpose.ESTIMATE:
        return _estimate_page(request, client_link, token)
    return _problem(request, LinkProblem("unknown"))


def _balance_page(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    client = client_link.client
    charges = payable_charges(client)
    payable = client_payable(client)
    offered = [c for c in charges if c.status != ChargeStatus.REQUIRES_ACTION]
    other = max(payable.now_cents - sum(c.amount_cents for c in offered), 0)
    # Receipts are per session or fee (what an FSA/HSA claim needs); portal balance payments are the
    # money behind them, receipted by email when made.
    paid = (Charge.objects.filter(client=client, status__in=PAID_STATUSES).exclude(kind__in=COLLECTION_KINDS)
            .select_related("appointment__clinician").order_by("-updated_at")[:24])
    waiting = [c for c in charges if c.status == ChargeStatus.DUE and c.hold_reason == CHOICE_HOLD]
    return _page(request, "portal/balance.html", {
        "waiting": waiting_lines(waiting), "waiting_total": format_cents(sum(c.amount_cents for c in waiting)),
        "notice_hours": Practice.load().pre_charge_notice_hours,
        "client": client, "token": token, "balance": payable.balance_cents,
        "balance_text": format_cents(max(payable.balance_cents, 0)),
        "payable": payable.now_cents, "payable_text": format_cents(payable.now_cents),
        "in_flight_text": format_cents(payable.in_flight_cents) if payable.in_flight_cents else "",
        "items": [_item(c) for c in charges], "other_cents": other,
        "receipts": [_item(c) for c in paid], "can_pay": client_link.purpose == LinkPurpose.PAY_BALANCE,
        "pay_key": secrets.token_urlsafe(24), **_superbill_period(), **_stripe_js()})


def _plan_page(request: HttpRequest, client_link: ClientLink, token: str, *, error: str = "",
               status: int = 200) -> HttpResponse:
    """A payment plan: its installments and what became of each; the terms and the agree form while it is offered."""
    try:
        plan = plan_for_link(link=client_link)
    except PlanNotFound as missing:
        return _page(request, "portal/try_again.html", {"heading": "This plan is not available",
                                                         "message": str(missing)}, status=404)
    client = client_link.client
    practice = Practice.load()
    return _page(request, "portal/plan.html", {
        "client": client, "token": token, "plan": plan, "lines": installment_lines(plan),
        "total": format_cents(plan.total_cents), "paid": format_cents(plan_paid_cents(plan)),
        "terms": plan_terms_text(plan, practice, client.card_summary) if client.has_card else "",
        "consent": getattr(plan, "consent", None), "error": error}, status=status)


@require_POST
@_with_link(LinkPurpose.PAYMENT_PLAN, answer_json=False)
def plan_agree_view(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    """The client agreed to the plan's terms: record the consent once and schedule the installments."""
    plan_id = request.POST.get("plan", "")
    if not (plan_id.isascii() and plan_id.isdigit()):
        return _page(request, "portal/try_again.html", {"heading": "This plan is not available",
                                                         "message": "This payment plan is not part of your account."},
                     status=404)
    if request.POST.get("agree") != "yes":
        return _plan_page(request, client_link, token, error="Please read the terms and tick the box to agree.",
                          status=400)
    try:
        plan_agree(link=client_link, plan_id=int(plan_id), ip_address=_client_ip(request),
                   user_agent=request.META.get("HTTP_USER_AGENT", ""), now=timezone.now())
    except PlanNotFound as missing:
        return _page(request, "portal/try_again.html", {"heading": "This plan is not available",
                                                         "message": str(missing)}, status=404)
    except PlanEnded as ended:
        return _page(request, "portal/try_again.html", {"heading": "This plan has ended", "message": str(ended)},
                     status=410)
    except PlanRefused as refused:
        return _plan_page(request, client_link, token, error=str(refused), status=400)
    return redirect("portal:link", token=token)


@require_GET
@never_cache
@_with_link(LinkPurpose.PAY_BALANCE, LinkPurpose.RECEIPTS, LinkPurpose.PAYMENT_PLAN, answer_json=False)
def history(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    return _history_page(request, client_link, token)


def _history_page(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    """Sessions, charges, payments and refunds, in the practice's days; what receipts already show, no more."""
    practice = Practice.load()
    history = client_history(client_link.client, now=timezone.now(), practice=practice)
    return _page(request, "portal/history.html", {
        "client": client_link.client, "token": token, "history": history, "credit_cents": -history.balance_cents,
        "can_pay": client_link.purpose == LinkPurpose.PAY_BALANCE, "zone_name": practice.time_zone.replace("_", " "),
        **_superbill_period()})


def _superbill_period() -> dict[str, dt.date]:
    """Last month to today, the period a superbill form starts with."""
    today = timezone.localdate()
    return {"superbill_start": today.replace(day=1) - dt.timedelta(days=1), "superbill_end": today}


def _item(charge: Charge) -> dict[str, object]:
    context = receipt_context(charge)
    amount = context["total_paid"] if charge.status in PAID_STATUSES else context["amount"]
    return {"id": charge.pk, "amount_cents": charge.amount_cents, "amount": amount,
            "label": context["service"], "session_date": context["session_date"], "therapist": context["therapist"],
            "status": charge.get_status_display(), "failed": charge.status == ChargeStatus.FAILED,
            "at_bank": charge.status == ChargeStatus.REQUIRES_ACTION,
            "paid_on": charge.updated_at}


def _dollars_to_cents(text: str) -> int | None:
    """``50``, ``$1,234.5``, ``.75`` in cents; None for anything else. Decimal alone would also read NaN,
    Infinity, exponents (``1e999999``) and signs, which are not amounts a client types."""
    amount = text.replace("$", "").replace(",", "").strip()
    if not re.fullmatch(r"[0-9]{1,7}(?:\.[0-9]{0,2})?|\.[0-9]{1,2}", amount):
        return None
    cents = int(Decimal(amount) * 100)
    return cents if cents > 0 else None


@require_POST
@_with_link(LinkPurpose.PAY_BALANCE, answer_json=True)
def balance_pay(request: HttpRequest, client_link: ClientLink, token: str) -> JsonResponse:
    """Pay all of the balance, chosen items, or a chosen amount, with the saved card, or once with a card typed
    on the page that is not saved (``card=once``: the answer carries the secret the page confirms it with)."""
    client = client_link.client
    card = request.POST.get("card", "saved")
    if card not in ("saved", "once"):
        return JsonResponse({"error": "Choose how to pay."}, status=400)
    mode = request.POST.get("mode", "all")
    charge_ids: list[int] | None = None
    amount: int | None = None
    if mode == "all":
        pass
    elif mode == "items":
        try:
            charge_ids = [int(i) for i in request.POST.getlist("items")]
        except ValueError:
            return JsonResponse({"error": "Choose the items to pay."}, status=400)
        offered = {c.pk for c in payable_charges(client)}
        if not charge_ids or any(i not in offered for i in charge_ids):
            return JsonResponse({"error": "Choose the items to pay."}, status=400)
    elif mode == "amount":
        amount = _dollars_to_cents(request.POST.get("amount", ""))
        if amount is None:
            return JsonResponse({"error": "Enter an amount in dollars and cents, for example 50.00."}, status=400)
    else:
        return JsonResponse({"error": "Choose what to pay."}, status=400)
    try:
        result = balance_payment_start(client=client, amount_cents=amount, charge_ids=charge_ids, now=timezone.now(),
                                       pay_key=request.POST.get("pay_key", ""), card_once=card == "once")
    except PaymentInProgress as busy:
        return JsonResponse({"status": "in_progress", "error": str(busy)}, status=409)
    except PaymentNotAllowed as refused:
        return JsonResponse({"error": str(refused), "pay_key": secrets.token_urlsafe(24)}, status=400)
    body = {"status": result.status, "payment": result.charge.pk, "amount": format_cents(result.charge.amount_cents)}
    if result.status == "requires_action":
        body["client_secret"] = result.client_secret
    elif result.status != "succeeded":
        body["error"] = result.message
        body["pay_key"] = secrets.token_urlsafe(24)  # a new try is a new payment
    return JsonResponse(body, status=200 if result.status in ("succeeded", "requires_action") else 402)


@require_POST
@_with_link(LinkPurpose.PAY_BALANCE, answer_json=True)
def balance_confirmed(request: HttpRequest, client_link: ClientLink, token: str) -> JsonResponse:
    """After the bank's check on the page: re-read the payment from Stripe."""
    payment_id = request.POST.get("payment", "")
    payment = Charge.objects.filter(pk=int(payment_id), client=client_link.client,
                                    kind=ChargeKind.BALANCE_PAYMENT).first() \
        if payment_id.isascii() and payment_id.isdigit() else None
    if payment is None or not payment.payment_reference:
        return JsonResponse({"error": "That payment is not part of this account."}, status=404)
    try:
        payment_refresh(payment_intent_id=payment.payment_reference, now=timezone.now())
    except PaymentProviderError:
        return JsonResponse({"error": "We could not confirm the payment yet. Please refresh in a minute."},
                            status=503)
    payment.refresh_from_db()
    if payment.status == ChargeStatus.SUCCEEDED:
        return JsonResponse({"status": "succeeded", "amount": format_cents(payment.amount_cents)})
    if payment.status == ChargeStatus.REQUIRES_ACTION:
        # Still waiting for the card or the bank on the page (the card was not accepted there): a new try is a
        # new payment, which withdraws this one at Stripe first.
        return JsonResponse({"status": "requires_action", "error": "The payment is not complete yet.",
                             "pay_key": secrets.token_urlsafe(24)}, status=402)
    return JsonResponse({"status": "failed", "error": "The payment was not completed. You can try again.",
                         "pay_key": secrets.token_urlsafe(24)}, status=402)


@require_POST
@_with_link(LinkPurpose.PAY_BALANCE, LinkPurpose.PAYMENT_PLAN, answer_json=False)
def card_link(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    """From the balance page: a fresh card-enrollment link, to add or replace the card."""
    issued = enrollment_link_send(client=client_link.client, now=timezone.now(), actor="client", send_email=False)
    return redirect(_local(issued.url))


@require_POST
@_with_link(LinkPurpose.PAY_BALANCE, answer_json=False)
def waiting_choice(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    """What waited for a card: the client leaves it to the practice, or lets it be charged after a notice.
    (Paying it now goes through balance_pay, like any other payment on the page.)"""
    choice = request.POST.get("choice", "")
    client = client_link.client
    try:
        if choice == "practice":
            waiting_charges_leave(client=client, now=timezone.now())
            message = "Thank you. We'll be in touch about these amounts; nothing is charged until then."
        elif choice == "automatic":
            released = waiting_charges_release(client=client, now=timezone.now(), actor=f"client:{client.pk}")
            charge_at = timezone.localtime(released[0].scheduled_for)
            message = (f"Thank you. We'll charge {format_cents(sum(c.amount_cents for c in released))} to your card "
                       f"on {charge_at:%B} {charge_at.day} at {charge_at:%-I:%M %p}; we've emailed you the details.")
        else:
            return _page(request, "portal/try_again.html", {"heading": "Please choose again",
                                                             "message": "Choose one of the options."}, status=400)
    except NothingWaiting:
        message = "Nothing is waiting for your choice any more."
    return _page(request, "portal/message.html", {"heading": "Your choice is saved", "message": message,
                                                     "back_url": request.path.rsplit("balance/", 1)[0]})


@require_GET
@_with_link(LinkPurpose.PAY_BALANCE, LinkPurpose.RECEIPTS, LinkPurpose.PAYMENT_PLAN, answer_json=False)
def superbill_download(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    """The client's superbill for a period they choose, as a PDF."""
    try:
        start = dt.date.fromisoformat(request.GET.get("start", ""))
        end = dt.date.fromisoformat(request.GET.get("end", ""))
        pdf = superbill_pdf(client=client_link.client, start=start, end=end, today=timezone.localdate())
    except (ValueError, PeriodNotAllowed) as problem:
        message = str(problem) if isinstance(problem, PeriodNotAllowed) else "Choose a start and an end date."
        return _page(request, "portal/try_again.html", {"heading": "Please choose the dates again",
                                                         "message": message}, status=400)
    response = HttpResponse(pdf, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="superbill-{start:%Y%m%d}-{end:%Y%m%d}.pdf"'
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@_with_link(LinkPurpose.PAY_BALANCE, LinkPurpose.RECEIPTS, LinkPurpose.PAYMENT_PLAN, answer_json=False)
def receipt_download(request: HttpRequest, client_link: ClientLink, token: str, charge_id: int) -> HttpResponse:
    """A paid charge's receipt as a file the client can keep or send to an FSA/HSA."""
    charge = Charge.objects.filter(pk=charge_id, client=client_link.client, status__in=PAID_STATUSES).select_related(
        "appointment__clinician", "client").first()
    if charge is None:
        return _problem(request, LinkProblem("unknown"))
    response = render(request, "portal/receipt.html", {"practice": Practice.load(), "client": charge.client,
                                                        **receipt_context(charge)})
    response["Content-Disposition"] = f'attachment; filename="receipt-{charge.pk}.html"'
    response["Cache-Control"] = "no-store"
    return response


def _estimate_page(request: HttpRequest, client_link: ClientLink, token: str,
                   acknowledged_now: bool = False) -> HttpResponse:
    """The client's good faith estimate in force (the newest issued), to read, download and acknowledge; the
    earlier ones as PDFs."""
    estimates = list(GoodFaithEstimate.objects.filter(client=client_link.client).select_related("client")
                     .order_by("-issued_at", "-pk")[:24])
    current = next((e for e in estimates if e.status == EstimateStatus.ISSUED), None)
    return _page(request, "portal/estimate.html", {
        "client": client_link.client, "token": token, "acknowledged_now": acknowledged_now,
        "current": {"estimate": current, "lines": list(current.lines.all())} if current else None,
        "earlier": [e for e in estimates if e is not current]})


def _client_estimate(client_link: ClientLink, estimate_id: int) -> GoodFaithEstimate | None:
    return GoodFaithEstimate.objects.filter(pk=estimate_id, client=client_link.client).select_related("client").first()


@require_GET
@_with_link(LinkPurpose.ESTIMATE, answer_json=False)
def estimate_download(request: HttpRequest, client_link: ClientLink, token: str, estimate_id: int) -> HttpResponse:
    """One of the client's good faith estimates as a PDF."""
    estimate = _client_estimate(client_link, estimate_id)
    if estimate is None:
        return _problem(request, LinkProblem("unknown"))
    response = HttpResponse(estimate_pdf(estimate=estimate), content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="good-faith-estimate-{estimate.pk}.pdf"'
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@_with_link(LinkPurpose.ESTIMATE, answer_json=False)
def estimate_acknowledge(request: HttpRequest, client_link: ClientLink, token: str, estimate_id: int) -> HttpResponse:
    """The client confirms they received the estimate: recorded once, with when and from where."""
    estimate = _client_estimate(client_link, estimate_id)
    if estimate is None:
        return _problem(request, LinkProblem("unknown"))
    acknowledge_estimate(estimate=estimate, now=timezone.now(), by="client (portal)", ip_address=_client_ip(request))
    return _estimate_page(request, client_link, token, acknowledged_now=True)


def _stripe_js() -> dict[str, str]:
    return {"stripe_js_url": settings.STRIPE_JS_URL, "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY}


def _enroll_page(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    practice = Practice.load()
    return _page(request, "portal/enroll.html", {
        "client": client_link.client, "token": token, "authorization_text": authorization_text(practice),
        "replacing": client_link.client.has_card, **_stripe_js()})


def _authenticate_page(request: HttpRequest, client_link: ClientLink, token: str) -> HttpResponse:
    charge = client_link.charge
    if charge is None or charge.status != ChargeStatus.REQUIRES_ACTION:
        return _page(request, "portal/payment_done.html", {
            "charge": charge, "not_paid": _not_paid_text(charge) if charge and charge.status == ChargeStatus.FAILED
            else ""})
    try:
        client_secret = payment_client_secret(charge=charge)
    except PaymentProviderError:
        return _page(request, "portal/try_again.html", {}, status=503)
    return _page(request, "portal/authenticate.html", {
        "token": token, "client_secret": client_secret, "charge": charge,
        "payment_method_id": client_link.client.card_payment_method_id, **receipt_context(charge),
        **_stripe_js()})


def _client_ip(request: HttpRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


@require_POST
@_with_link(LinkPurpose.ENROLL_CARD, answer_json=True)
def enrollment_start(request: HttpRequest, client_link: ClientLink, token: str) -> JsonResponse:
    """The client agreed to the authorization text: record the consent and start a SetupIntent."""
    if request.POST.get("agree") != "yes":
        return JsonResponse({"error": "Please read the authorization and tick the box to agree."}, status=400)
    try:
        client_secret = enrollment_begin(link=client_link, ip_address=_client_ip(request),
                                         user_agent=request.META.get("HTTP_USER_AGENT", ""), now=timezone.now())
    except PaymentProviderError:
        return JsonResponse({"error": "We could not reach our card processor. Please try again in a minute."},
                            status=503)
    return JsonResponse({"client_secret": client_secret})


@require_POST
def enrollment_finish(request: HttpRequest, token: str) -> JsonResponse:
    """The browser says the card was saved: check with Stripe and keep it (the webhook may beat us)."""
    setup_intent_id = request.POST.get("setup_intent", "")
    try:
        client_link = link_resolve(token=token, now=timezone.now())
    except LinkProblem as problem:
        client_link = problem.link  # type: ignore[assignment]
        if problem.reason != "used" or client_link is None:
            return JsonResponse({"error": _problem_text(problem.reason)}, status=410)
    if not setup_intent_id or client_link.setup_intent_id != setup_intent_id:
        return JsonResponse({"error": "This card setup does not belong to this link."}, status=400)
    try:
        client = card_save_from_setup_intent(setup_intent_id=setup_intent_id, now=timezone.now())
    except PaymentProviderError:
        return JsonResponse({"error": "We could not confirm the card yet. Please try again in a minute."},
                            status=503)
    if client is None:
        return JsonResponse({"error": "The card was not saved. Please try again."}, status=400)
    body: dict[str, object] = {"saved": True, "card": client.card_summary}
    if waiting := waiting_charges(client):
        # Older amounts are never charged by saving a card: the client chooses on the balance page.
        body.update(waiting_total=format_cents(sum(c.amount_cents for c in waiting)), waiting_count=len(waiting),
                    choose_url=_local(waiting_choice_link(client=client, now=timezone.now(), actor="client")))
    return JsonResponse(body)


def _local(url: str) -> str:
    return url.removeprefix(settings.PORTAL_BASE_URL) or url


@require_POST
@_with_link(LinkPurpose.AUTHENTICATE_PAYMENT, answer_json=True)
def payment_confirmed(request: HttpRequest, client_link: ClientLink, token: str) -> JsonResponse:
    """The client authenticated a payment on-session: re-read it from Stripe and settle it."""
    charge = client_link.charge
    if charge is None:
        return JsonResponse({"error": _problem_text("unknown")}, status=404)
    try:
        payment_refresh(payment_intent_id=charge.payment_reference, now=timezone.now())
    except PaymentProviderError:
        return JsonResponse({"error": "We could not confirm the payment yet. Please refresh in a minute."},
                            status=503)
    charge.refresh_from_db()
    if charge.status == ChargeStatus.SUCCEEDED:
        link_mark_used(link=client_link, now=timezone.now())
        return JsonResponse({"paid": True, "amount": format_cents(charge.amount_cents)})
    if charge.status == ChargeStatus.REQUIRES_ACTION:
        return JsonResponse({"error": "The payment was not completed. You can try again."}, status=402)
    return JsonResponse({"error": _not_paid_text(charge)}, status=402)


def _not_paid_text(charge: Charge) -> str:
    """What happens next once the bank did not confirm: nothing was charged; when we try again."""
    text = "Your bank did not confirm the payment, so nothing was charged."
    if charge.next_retry_at:
        day = timezone.localtime(charge.next_retry_at, Practice.current_zone()).date()
        text += f" We'll try your card again on {day:%B} {day.day}."
    return text + " To use a different card, use the link in the email we just sent you."


def _problem_text(reason: str) -> str:
    return {
        "expired": "This link has expired. Please ask the practice for a new one.",
        "used": "This link has already been used. Please ask the practice for a new one if you need it.",
    }.get(reason, "This link is not valid. Please ask the practice for a new one.")


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    """Stripe's events: verified, stored once by id, applied by re-reading the object."""
    try:
        event = stripe_event_verify(body=request.body, signature=request.headers.get("Stripe-Signature", ""))
    except ValueError as refused:  # a bad signature or time, or a body that is not an event: the reason
        return JsonResponse({"error": str(refused)}, status=400)
    try:
        outcome = stripe_event_receive(event=event, now=timezone.now())
    except PaymentProviderError:
        return JsonResponse({"error": "try again later"}, status=503)  # Stripe delivers it again
    return JsonResponse({"received": True, "outcome": outcome})
