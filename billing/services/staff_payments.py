"""Money staff take and record from a client's page (workflow 15): a card payment by phone, a payment taken
outside Stripe, an adjustment or write-off, emailed links and statements, and settling a reconciliation
finding.

The money rules are the portal's (billing/services/balance.py): one payment at a time per client (the
client's row is locked), never above what is payable now (the balance less money already on its way), and a
charge being taken or waiting for the client's bank is not paid twice. Every action carries the key of the
form it came from (``form_key``) and writes one ``StaffAction`` with it: the same form sent twice, even at the
same moment, does one thing. Each action writes the ledger (or the charges whose ledger follows), and its
``StaffAction`` row is in the audit trail with who, when and from where.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.errors import Refused
from billing.models import (
    AttemptStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    FindingStatus,
    LedgerKind,
    LinkPurpose,
    OutsideMethod,
    PaymentAttempt,
    Practice,
    ReconciliationFinding,
    ReviewKind,
    StaffAction,
    StaffActionKind,
)
from billing.money import format_cents
from billing.services.balance import (
    PaymentNotAllowed,
    allocations_write,
    balance_payment_start,
    client_payable,
    payable_charges,
    payable_lock,
)
from billing.services.cards import enrollment_link_send
from billing.services.charges import charge_event_record, charge_transition
from billing.services.ledger import ledger_post
from billing.services.links import link_create
from billing.services.notify import email_enqueue
from billing.services.payments import allocations_paid, payment_intent_withdraw
from billing.services.reconciliation import finding_set_status
from billing.services.refunds import RefundNotAllowed, charge_refund, refundable_cents
from billing.services.review import review_close_stale
from billing.services.statements import NothingToState, statement_send
from billing.services.waiting import waiting_review_close_if_settled

# The key a staff form carries (a fresh random one each time the form is shown).
FORM_KEY = re.compile(r"[A-Za-z0-9_-]{16,48}")
# Adding to what a client owes by hand: a sanity limit on a typing slip.
MAX_ADDED_CENTS = 10_000_000
LINKS = {"pay_balance": "Pay-balance link", "statement": "Last month's statement", "card": "Card-enrollment link"}
NEEDS_REFERENCE = (OutsideMethod.CHECK, OutsideMethod.OTHER)


class StaffActionRefused(Refused):
    """The action was not taken; the message says why, for staff. Nothing changed."""


class FormAlreadySent(StaffActionRefused):
    """The same form was sent before (a double click, a retry): it did its one thing then."""


ALREADY_SENT = "This form was already sent: nothing more was done. Check the client's page before trying again."


def _actor(user: User) -> str:
    return f"staff:{user.get_username()}"


def _form_key_check(form_key: str) -> None:
    if not FORM_KEY.fullmatch(form_key or ""):
        raise StaffActionRefused("This form is out of date: open it again.")
    if StaffAction.objects.filter(form_key=form_key).exists():
        raise FormAlreadySent(ALREADY_SENT)


def _reason_required(reason: str, what: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise StaffActionRefused(f"Give a reason for the {what}.")
    return reason[:300]


def _today(now: dt.datetime) -> dt.date:
    return timezone.localdate(now, Practice.load().zone)


# --- A card payment by phone ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PhonePayment:
    action: StaffAction | None
    payment: Charge
    status: str  # succeeded | failed | unknown | needs_client
    message: str = ""


def phone_payment_take(*, client: Client, amount_cents: int | None, charge_ids: list[int] | None, reason: str,
                       form_key: str, user: User, now: dt.datetime) -> PhonePayment:
    """Charge the card on file now, the client on the phone: the chosen open charges, or an amount of the
    balance (oldest charges first). The portal's balance payment, taken by staff: the same locks, limits
    and receipt. A card whose bank asks the client to confirm cannot be confirmed over the phone: that
    request is withdrawn at once, nothing is charged, and staff send a pay-balance link instead."""
    reason = _reason_required(reason, "payment")
    _form_key_check(form_key)
    try:
        result = balance_payment_start(client=client, amount_cents=amount_cents, charge_ids=charge_ids, now=now,
                                       pay_key=f"staff-{form_key}", staff=user,
                                       why=f"taken by phone by {_actor(user)}: {reason}")
    except PaymentNotAllowed as refused:
        raise StaffActionRefused(_for_staff(str(refused))) from None
    action = StaffAction.objects.create(
        client=client, kind=StaffActionKind.CARD_PAYMENT, form_key=form_key, method="card",
        amount_cents=-result.charge.amount_cents, reason=reason, payment=result.charge, user=user, created_at=now)
    if result.status == "requires_action":
        for attempt in PaymentAttempt.objects.filter(charge=result.charge, status=AttemptStatus.REQUIRES_ACTION):
            payment_intent_withdraw(attempt=attempt, now=now)
        return PhonePayment(action, result.charge, "needs_client",
                            "The client's bank asks them to confirm this payment themselves, which cannot be done "
                            "over the phone: nothing was charged. Send them a pay-balance link instead.")
    if result.status == "succeeded":
        return PhonePayment(action, result.charge, "succeeded")
    if result.status == "unknown":
        return PhonePayment(action, result.charge, "unknown",
                            "Stripe has not answered yet. The payment is checked again automatically within a few "
                            "minutes: do not charge again before its status shows on the client's page.")
    return PhonePayment(action, result.charge, "failed", f"The card was not charged: {result.message}")


def _for_staff(message: str) -> str:
    """The portal's refusals speak to the client; staff read them about the client."""
    if "already being taken" in message:
        return "A card payment for this client is being taken right now. Wait a moment, then reload the page."
    if message == "Please add a card first.":
        return "The client has no card on file: send them a card-enrollment link."
    return message.replace("Please reload.", "Reload the page.")


# --- A payment taken outside Stripe ---------------------------------------------------------------------

def outside_payment_record(*, client: Client, amount_cents: int | None, charge_ids: list[int] | None,
                           method: str, reference: str, reason: str, form_key: str, user: User,
                           now: dt.datetime) -> StaffAction:
    """Record cash, a check or another payment the practice took itself: the chosen open charges, or an
    amount of the balance (oldest charges first). The charges it pays are paid as a portal payment pays
    them (so the scheduler never charges them to the card as well); the ledger gets the payment."""
    if method not in OutsideMethod.values:
        raise StaffActionRefused("Choose how the client paid: cash, check or other.")
    reference = (reference or "").strip()[:90]
    if method in NEEDS_REFERENCE and not reference:
        raise StaffActionRefused("Give the check number (or what identifies the payment).")
    if amount_cents is not None and amount_cents <= 0:
        raise StaffActionRefused("Enter an amount above $0.00.")
    _form_key_check(form_key)
    label = OutsideMethod(method).label
    try:
        with transaction.atomic():
            client = _locked(client, form_key)
            try:
                charges, amount_cents = payable_lock(client, amount_cents, charge_ids, staff=True)
            except PaymentNotAllowed as refused:
                raise StaffActionRefused(_for_staff(str(refused))) from None
            payment_reference = f"{method}:{reference}" if reference else method
            payment = Charge.objects.create(
                client=client, kind=ChargeKind.BALANCE_PAYMENT, amount_cents=amount_cents,
                status=ChargeStatus.SUCCEEDED, scheduled_for=now, payment_reference=payment_reference,
                breakdown=[{"label": f"{label} payment", "amount_cents": amount_cents}])
            memo = f"{label} payment" + (f" {reference}" if reference else "") + (f": {reason}" if reason else "")
            charge_event_record(charge=payment, from_status="", now=now, actor=_actor(user), user=user,
                                reason=f"recorded by staff: {memo}")
            ledger_post(client=client, kind=LedgerKind.PAYMENT, amount_cents=-amount_cents, occurred_on=_today(now),
                        now=now, actor=_actor(user), user=user, charge=payment, memo=memo)
            allocations_write(payment, charges, now)
            allocations_paid(payment=payment, reference=payment_reference, now=now)
            return StaffAction.objects.create(
                client=client, kind=StaffActionKind.OUTSIDE_PAYMENT, form_key=form_key, method=method,
                reference=reference, amount_cents=-amount_cents, reason=(reason or "").strip()[:300],
                payment=payment, user=user, created_at=now)
    except IntegrityError:  # the same form, at the same moment: the other request recorded it
        raise FormAlreadySent(ALREADY_SENT) from None


def _locked(client: Client, form_key: str) -> Client:
    """Lock the client's row (one money action at a time per client) and check the form again under it:
    a second copy of the form waits here for the first to commit, then finds its key taken."""
    client = Client.objects.select_for_update().get(pk=client.pk)
    if StaffAction.objects.filter(form_key=form_key).exists():
        raise FormAlreadySent(ALREADY_SENT)
    return client


# --- Adjustments and write-offs -------------------------------------------------------------------------

ADJUST_CHOICES = {
    "write_off": ("Write off (the client no longer owes it)", StaffActionKind.WRITE_OFF, -1),
    "reduce": ("Adjustment: reduce what the client owes", StaffActionKind.ADJUSTMENT, -1),
    "add": ("Adjustment: add to what the client owes", StaffActionKind.ADJUSTMENT, 1),
}


def balance_adjust(*, client: Client, choice: str, amount_cents: int | None, charge_ids: list[int] | None,
                   reason: str, form_key: str, user: User, now: dt.datetime,
                   finding: ReconciliationFinding | None = None) -> StaffAction:
    """Post an adjustment or a write-off to the client's ledger, with a reason.

    Reducing what is owed either takes whole open charges off (chosen: each is canceled by staff, so it
    is never charged, and the ledger takes what it still had to collect off the balance), or takes an
    amount off the part of the balance no open charge will collect (otherwise the card would still be
    charged for money the ledger no longer asks for). Adding posts the amount; it is collected as the
    balance is (a payment on the portal or by phone), not charged by itself.
    """
    if choice not in ADJUST_CHOICES:
        raise StaffActionRefused("Choose a write-off or an adjustment.")
    _label, kind, sign = ADJUST_CHOICES[choice]
    what = "write-off" if kind == StaffActionKind.WRITE_OFF else "adjustment"
    reason = _reason_required(reason, what)
    if charge_ids is None and (amount_cents is None or amount_cents <= 0):
        raise StaffActionRefused("Enter an amount above $0.00.")
    if sign > 0 and charge_ids:
        raise StaffActionRefused("An amount added to what the client owes is not tied to charges: leave them "
                                 "unchosen.")
    if sign > 0 and amount_cents is not None and amount_cents > MAX_ADDED_CENTS:
        raise StaffActionRefused(f"At most {format_cents(MAX_ADDED_CENTS)} can be added at once.")
    _form_key_check(form_key)
    ledger_kind = LedgerKind.WRITE_OFF if kind == StaffActionKind.WRITE_OFF else LedgerKind.ADJUSTMENT
    memo = f"{what.capitalize()} by staff: {reason}"
    try:
        with transaction.atomic():
            client = _locked(client, form_key)
            if sign > 0:
                assert amount_cents is not None
                total = amount_cents
                ledger_post(client=client, kind=ledger_kind, amount_cents=total, occurred_on=_today(now), now=now,
                            actor=_actor(user), user=user, memo=memo)
            elif charge_ids:
                total = _charges_taken_off(client, charge_ids, ledger_kind, memo, user, now)
            else:
                assert amount_cents is not None
                loose = _balance_no_charge_collects(client)
                if amount_cents > loose:
                    raise StaffActionRefused(
                        f"At most {format_cents(loose)} of this balance is not an open charge the card will be "
                        "charged for: choose the charges to take off instead." if loose else
                        "All of this balance is open charges the card will be charged for (or money on its way): "
                        "choose the charges to take off instead.")
                total = amount_cents
                ledger_post(client=client, kind=ledger_kind, amount_cents=-total, occurred_on=_today(now), now=now,
                            actor=_actor(user), user=user, memo=memo)
            return StaffAction.objects.create(
                client=client, kind=kind, form_key=form_key, amount_cents=sign * total, user=user, created_at=now,
                reason=(f"Finding #{finding.pk}: {reason}" if finding else reason)[:300], method=choice)
    except IntegrityError:
        raise FormAlreadySent(ALREADY_SENT) from None


def _balance_no_charge_collects(client: Client) -> int:
    """The part of what is payable now that no open charge will collect (e.g. an adjustment posted after
    a paid session changed)."""
    open_total = sum(c.amount_cents for c in payable_charges(client) if c.status != ChargeStatus.REQUIRES_ACTION)
    return max(client_payable(client).now_cents - open_total, 0)


def _charges_taken_off(client: Client, charge_ids: list[int], ledger_kind: str, memo: str, user: User,
                       now: dt.datetime) -> int:
    offered = {c.pk for c in payable_charges(client) if c.status != ChargeStatus.REQUIRES_ACTION}
    charges = list(Charge.objects.select_for_update(of=("self",)).select_related("appointment").filter(
        pk__in=[i for i in charge_ids if i in offered], client=client, amount_cents__gt=0,
        status__in=(ChargeStatus.SCHEDULED, ChargeStatus.DUE, ChargeStatus.FAILED)).order_by("pk"))
    if not charge_ids or len(charges) != len(set(charge_ids)):
        raise StaffActionRefused("Some of the chosen charges can no longer be taken off (being charged, paid or "
                                 "canceled meanwhile). Reload the page.")
    practice = Practice.load()
    total = 0
    for charge in charges:
        owed = charge.amount_cents  # what it still has to collect (any part paid on the portal stays paid)
        charge_transition(charge=charge, to_status=ChargeStatus.CANCELED, now=now, actor=_actor(user), user=user,
                          reason=memo, hold_reason="", next_retry_at=None, canceled_by_staff=True)
        occurred_on = (charge.appointment.starts_at.astimezone(practice.zone).date() if charge.appointment
                       else _today(now))
        ledger_post(client=client, kind=ledger_kind, amount_cents=-owed, occurred_on=occurred_on, now=now,
                    actor=_actor(user), user=user, appointment=charge.appointment, charge=charge, memo=memo)
        for kind in (ReviewKind.CHARGE_CAP, ReviewKind.NO_CARD):
            review_close_stale(kind=kind, client=client, appointment=charge.appointment, now=now,
                               note=f"{memo}"[:300])
        total += owed
    waiting_review_close_if_settled(client=client, now=now)
    return total


# --- Links and statements by email ----------------------------------------------------------------------

def client_link_send(*, client: Client, what: str, form_key: str, user: User, now: dt.datetime) -> StaffAction:
    """Email the client a pay-balance link, their monthly statement (of the last month that is over:
    ``billing.services.statements``) or a card-enrollment link."""
    if what not in LINKS:
        raise StaffActionRefused("Choose what to send.")
    if not client.email:
        raise StaffActionRefused("The client has no email address: add one first.")
    _form_key_check(form_key)
    try:
        with transaction.atomic():
            client = _locked(client, form_key)
            if what == "card":
                enrollment_link_send(client=client, now=now, actor=_actor(user), send_email=True)
            elif what == "pay_balance":
                issued = link_create(client=client, purpose=LinkPurpose.PAY_BALANCE, now=now, actor=_actor(user))
                email_enqueue(key=f"pay_balance_link:link:{issued.link.pk}", client=client, template="pay_balance_link",
                              context={"balance": format_cents(max(client_payable(client).balance_cents, 0)),
                                       "link_url": issued.url, "expires_at": issued.expires_at}, now=now)
            else:
                try:
                    statement_send(client=client, now=now, actor=_actor(user), key=f"staff:{form_key}")
                except NothingToState as nothing:
                    raise StaffActionRefused(str(nothing)) from None
            return StaffAction.objects.create(client=client, kind=StaffActionKind.LINK_SENT, form_key=form_key,
                                              method=what, reason=LINKS[what], user=user, created_at=now)
    except IntegrityError:
        raise FormAlreadySent(ALREADY_SENT) from None


# --- Settling a reconciliation finding ------------------------------------------------------------------

SETTLE_CHOICES = {"refund": "Refund to the client's card", **{k: v[0] for k, v in ADJUST_CHOICES.items()}}


def finding_settle(*, finding: ReconciliationFinding, choice: str, amount_cents: int | None, reason: str,
                   form_key: str, user: User, now: dt.datetime) -> StaffAction:
    """Settle a finding from its page: a refund of its charge, an adjustment or a write-off (of its charge
    if that is still open, else of the balance), then mark it resolved with what was done."""
    if finding.client is None:
        raise StaffActionRefused("This finding names no client (a Stripe payment the portal did not make): "
                                 "settle it in Stripe, then mark it resolved.")
    if finding.status != FindingStatus.OPEN:
        raise StaffActionRefused(f"This finding is already {finding.get_status_display().lower()}: open it again "
                                 "first if something is still to settle.")
    if choice not in SETTLE_CHOICES:
        raise StaffActionRefused("Choose a refund, an adjustment or a write-off.")
    reason = _reason_required(reason, "refund" if choice == "refund" else "adjustment")
    if choice == "refund":
        action = _finding_refund(finding, amount_cents, reason, form_key, user, now)
    else:
        charge = finding.charge
        takes_charge = (choice != "add" and charge is not None and amount_cents in (None, charge.amount_cents)
                        and charge.status in (ChargeStatus.SCHEDULED, ChargeStatus.DUE, ChargeStatus.FAILED))
        action = balance_adjust(client=finding.client, choice=choice, reason=reason, form_key=form_key, user=user,
                                now=now, finding=finding, amount_cents=None if takes_charge else amount_cents,
                                charge_ids=[charge.pk] if takes_charge and charge else None)
    done = f"{action.get_kind_display()} of {format_cents(abs(action.amount_cents))}: {reason}"
    finding_set_status(finding=finding, status=FindingStatus.RESOLVED, reason=done, user=user, now=now)
    return action


def _finding_refund(finding: ReconciliationFinding, amount_cents: int | None, reason: str, form_key: str,
                    user: User, now: dt.datetime) -> StaffAction:
    charge = finding.charge
    if charge is None or not refundable_cents(charge):
        raise StaffActionRefused("This finding has no card payment to refund: use an adjustment instead.")
    if amount_cents is None or amount_cents <= 0:
        raise StaffActionRefused("Enter an amount above $0.00.")
    if amount_cents > refundable_cents(charge):
        raise StaffActionRefused(f"At most {format_cents(refundable_cents(charge))} of this charge can be refunded.")
    _form_key_check(form_key)
    assert finding.client is not None
    try:
        # The form's key is taken before Stripe is called, so the same form sent twice refunds once.
        with transaction.atomic():
            _locked(finding.client, form_key)
            action = StaffAction.objects.create(
                client=finding.client, kind=StaffActionKind.REFUND, form_key=form_key, amount_cents=amount_cents,
                reason=f"Finding #{finding.pk}: {reason}"[:300], payment=charge, user=user, created_at=now)
    except IntegrityError:
        raise FormAlreadySent(ALREADY_SENT) from None
    try:
        charge_refund(charge=charge, amount_cents=amount_cents, reason=reason, user=user, now=now)
    except RefundNotAllowed as refused:
        # No money moved (refused here or by Stripe): the record of the action goes too, so a refusal
        # changes nothing and the form can be sent again once fixed.
        action.delete()
        raise StaffActionRefused(str(refused)) from None
    return action
