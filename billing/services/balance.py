"""Balances: what a client can pay on the portal, paying it, and reminders when it stays high (workflow 9)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, Max, OuterRef, Q, QuerySet, Subquery, Sum, Window
from django.db.models.functions import Coalesce

from billing.bulk import rows_update
from billing.errors import Refused
from billing.models import (
    COLLECTION_KINDS,
    IN_FLIGHT_STATUSES,
    OPEN_STATUSES,
    AttemptStatus,
    BalanceAllocation,
    BalanceEpisode,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    LinkPurpose,
    PaymentAttempt,
    PaymentPlan,
    PlanStatus,
    Practice,
)
from billing.money import format_cents
from billing.services.cards import client_link_stripe
from billing.services.charges import charge_event_record
from billing.services.links import link_create
from billing.services.notify import email_enqueue
from billing.services.payments import (
    PORTAL_HOLD,
    attempt_refused,
    attempt_settle,
    payment_intent_withdraw,
    portal_payment_request,
)
from integrations.stripe.gateway import GatewayRefused, OutcomeUnknown

log = logging.getLogger(__name__)
SYSTEM = "system:balance"
# Open charges a client may pay on the portal. One being charged right now is not offered, so nothing
# can be paid twice; one waiting for the client's bank may be paid here instead (its request to the bank
# is withdrawn at Stripe first).
# Money on its way: a charge being taken, or waiting for the client to confirm it with their bank.
ABANDONED_AFTER = dt.timedelta(hours=1)
# A key the balance page puts in its form, so the same form sent twice pays once.
PAY_KEY = re.compile(r"[A-Za-z0-9_-]{16,64}")


def client_balance_cents(client: Client, *, at: dt.datetime | None = None) -> int:
    entries = LedgerEntry.objects.filter(client=client)
    if at is not None:
        entries = entries.filter(created_at__lte=at)
    return entries.aggregate(total=Sum("amount_cents"))["total"] or 0


@dataclass(frozen=True)
class Payable:
    """What the client owes, and how much of it may be paid on the portal now."""

    balance_cents: int
    in_flight_cents: int

    @property
    def now_cents(self) -> int:
        return max(self.balance_cents - self.in_flight_cents, 0)


def client_payable(client: Client) -> Payable:
    """The ledger balance and the money already on its way, read in one statement, so a payment that
    settles meanwhile cannot be counted on one side and not the other."""
    def total(rows: QuerySet[Any]) -> Coalesce:
        return Coalesce(Subquery(rows.values("client").annotate(t=Sum("amount_cents")).values("t")), 0)

    balance, in_flight = Client.objects.filter(pk=client.pk).annotate(
        b=total(LedgerEntry.objects.filter(client=OuterRef("pk"))),
        # A weekly card payment's sessions carry its money on the way: the payment itself is not counted again.
        f=total(Charge.objects.filter(client=OuterRef("pk"), status__in=IN_FLIGHT_STATUSES).exclude(
            kind=ChargeKind.WEEKLY_PAYMENT)),
    ).values_list("b", "f").get()
    return Payable(balance, in_flight)


def payable_charges(client: Client) -> list[Charge]:
    """The open charges the balance page offers one by one, oldest first: those waiting for the
    client's bank last, since paying one here withdraws that request."""
    return list(Charge.objects.filter(client=client, status__in=(*OPEN_STATUSES, ChargeStatus.REQUIRES_ACTION),
                                      amount_cents__gt=0)
                .exclude(hold_reason=PORTAL_HOLD).exclude(kind__in=COLLECTION_KINDS)
                .select_related("appointment__clinician")
                .order_by("appointment__starts_at", "created_at", "pk"))


@dataclass(frozen=True)
class PortalPayment:
    charge: Charge
    status: str  # succeeded | requires_action | failed | unknown
    client_secret: str = ""
    message: str = ""


class PaymentNotAllowed(Refused):
    pass


class PaymentInProgress(PaymentNotAllowed):
    """Another payment from this client is being taken right now (a second tab, a double click)."""


IN_PROGRESS = ("A payment is already being taken from your card. Please wait a moment and reload this page "
               "to see your balance before paying again.")


def balance_payment_start(*, client: Client, amount_cents: int | None, charge_ids: list[int] | None,
                          now: dt.datetime, pay_key: str = "", card_once: bool = False,
                          staff: User | None = None, why: str = "paid on the portal") -> PortalPayment:
    """Pay with the saved card, the client present: everything payable now (``amount_cents`` None),
    the chosen charges, or an amount up to what is payable now. With ``card_once`` the client pays with a
    card typed on the page that is not saved: the PaymentIntent has no card and no ``setup_future_usage``,
    and the answer is ``requires_action`` with the client secret the page confirms it with.

    One payment at a time per client: the client's row is locked while the payment is set up, and a
    portal payment still being taken refuses the next (``PaymentInProgress``); the same form sent
    again (``pay_key``) is refused too. The charges it pays are locked and put on hold first (so the
    scheduler cannot charge them too), then Stripe is called outside the transaction, and the outcome
    settled as for any charge. ``staff`` takes it for the client on the phone (the admin), ``why`` is
    kept in the payment's history.
    """
    if not card_once and (not client.card_payment_method_id or not client.stripe_customer_id):
        raise PaymentNotAllowed("Please add a card first.")
    if card_once and not client.stripe_customer_id:
        # The payment is kept under the client's Stripe customer (matched by email, as for a card), so it is found
        # in Stripe and reconciled like the others; the card itself is not attached. No customer (two share the
        # email), or Stripe not answering the lookup, still pays.
        try:
            client_link_stripe(client=client, now=now)
        except (OutcomeUnknown, GatewayRefused) as error:
            log.info("no Stripe customer for a payment made once: %s", type(error).__name__)
        client.refresh_from_db()
    if amount_cents is not None and amount_cents <= 0:
        raise PaymentNotAllowed("Enter an amount above $0.00.")
    pay_key = pay_key if PAY_KEY.fullmatch(pay_key or "") else ""
    if pay_key and PaymentAttempt.objects.filter(idempotency_key=_portal_key(client, pay_key)).exists():
        raise PaymentInProgress(IN_PROGRESS)
    _withdraw_before_paying(client, charge_ids or [], now)
    try:
        with transaction.atomic():
            payment, attempt = _payment_claim(client, amount_cents, charge_ids, now, pay_key, staff, why, card_once)
    except IntegrityError:  # the same form, sent twice at once: the other request has it
        raise PaymentInProgress(IN_PROGRESS) from None
    try:
        outcome = portal_payment_request(attempt)
    except OutcomeUnknown:
        return PortalPayment(payment, "unknown", message="We could not confirm the payment yet. Please check back "
                                                         "in a few minutes before trying again.")
    except GatewayRefused as refused:
        attempt_refused(attempt=attempt, message=str(refused), code=refused.code, now=now)
        return PortalPayment(payment, "failed", message="The payment could not be made. Please call us.")
    attempt_settle(attempt=attempt, payment=outcome, now=now)
    payment.refresh_from_db()
    if payment.status == ChargeStatus.SUCCEEDED:
        return PortalPayment(payment, "succeeded")
    if payment.status == ChargeStatus.REQUIRES_ACTION:
        return PortalPayment(payment, "requires_action", client_secret=outcome.client_secret)
    return PortalPayment(payment, "failed", message=outcome.message or "Your card was declined.")


def _portal_key(client: Client, pay_key: str) -> str:
    return f"portal-pay-{client.pk}-{pay_key}"


def _withdraw_before_paying(client: Client, charge_ids: list[int], now: dt.datetime) -> None:
    """Before a new portal payment (outside any transaction: these call Stripe): an earlier one the
    client left at their bank's check is canceled, and a chosen charge waiting for the client's bank
    has that request withdrawn, so neither can go through as well."""
    left = PaymentAttempt.objects.filter(status=AttemptStatus.REQUIRES_ACTION, charge__client=client).filter(
        Q(charge__kind=ChargeKind.BALANCE_PAYMENT)
        | Q(charge_id__in=charge_ids, charge__status=ChargeStatus.REQUIRES_ACTION)
        | Q(charge__kind=ChargeKind.WEEKLY_PAYMENT, charge__status=ChargeStatus.REQUIRES_ACTION,
            charge__allocations__charge_id__in=charge_ids))
    for attempt in left:
        payment_intent_withdraw(attempt=attempt, now=now)


def _payment_claim(client: Client, amount_cents: int | None, charge_ids: list[int] | None, now: dt.datetime,
                   pay_key: str, staff: User | None = None, why: str = "paid on the portal",
                   card_once: bool = False) -> tuple[Charge, PaymentAttempt]:
    """Inside the transaction: lock, check what may be paid now, and write the payment and its attempt."""
    client = Client.objects.select_for_update().get(pk=client.pk)
    if Charge.objects.filter(client=client, kind=ChargeKind.BALANCE_PAYMENT, status__in=IN_FLIGHT_STATUSES).exists():
        raise PaymentInProgress(IN_PROGRESS)
    open_charges, amount_cents = payable_lock(client, amount_cents, charge_ids, staff=staff is not None)
    payment = Charge.objects.create(
        client=client, kind=ChargeKind.BALANCE_PAYMENT, amount_cents=amount_cents, status=ChargeStatus.PROCESSING,
        scheduled_for=now, attempts=1, breakdown=[{"label": "Balance payment", "amount_cents": amount_cents}])
    charge_event_record(charge=payment, from_status="", now=now, user=staff, reason=why,
                        actor=f"staff:{staff.get_username()}" if staff else f"client:{client.pk}")
    allocations_write(payment, open_charges, now)
    attempt = PaymentAttempt.objects.create(
        charge=payment, number=1,
        idempotency_key=_portal_key(client, pay_key) if pay_key else f"portal-charge-{payment.pk}-attempt-1",
        amount_cents=amount_cents, customer_id=client.stripe_customer_id,
        payment_method_id="" if card_once else client.card_payment_method_id, started_at=now)
    return payment, attempt


def payable_lock(client: Client, amount_cents: int | None, charge_ids: list[int] | None, *,
                 staff: bool = False) -> tuple[list[Charge], int]:
    """Inside a transaction, the client's row locked by the caller: lock the open charges a payment may pay
    and check it against what is payable now. Returns the charges it pays (oldest first) and its amount:
    the chosen charges' total, everything payable now (``amount_cents`` None), or the amount asked for.
    ``staff`` words the refusals for staff paying for the client rather than the client."""
    you, your = ("The client", "the client's") if staff else ("You", "your")
    # Locked with their status re-checked, so a charge a billing run claimed meanwhile drops out.
    open_charges = list(Charge.objects.select_for_update(of=("self",)).filter(
        pk__in=[c.pk for c in payable_charges(client)], status__in=OPEN_STATUSES, amount_cents__gt=0,
    ).exclude(hold_reason=PORTAL_HOLD).order_by("appointment__starts_at", "created_at", "pk"))
    payable = client_payable(client)
    if charge_ids is not None:
        chosen = [c for c in open_charges if c.pk in set(charge_ids)]
        if not charge_ids or len(chosen) != len(set(charge_ids)):
            raise PaymentNotAllowed("Some of the chosen items can no longer be paid here. Please reload.")
        return chosen, sum(c.amount_cents for c in chosen)
    if amount_cents is None:
        amount_cents = payable.now_cents
        if amount_cents <= 0:
            raise PaymentNotAllowed("There is nothing to pay right now." + (
                f" {format_cents(payable.in_flight_cents)} is already being paid." if payable.in_flight_cents
                else ""))
    elif amount_cents > payable.now_cents:
        raise PaymentNotAllowed(f"{you} can pay at most {format_cents(payable.now_cents)} now" + (
            f" ({format_cents(payable.in_flight_cents)} of {your} balance is already being paid)."
            if payable.in_flight_cents else "."))
    return open_charges, amount_cents


def allocations_write(payment: Charge, charges: list[Charge], now: dt.datetime) -> None:
    """Which of the (locked) open charges the payment pays, oldest first, as far as its amount goes; each
    is put on hold until the payment settles, so the scheduler does not charge it too."""
    left = payment.amount_cents
    for charge in charges:  # oldest first
        if left <= 0:
            break
        part = min(left, charge.amount_cents)
        BalanceAllocation.objects.create(payment=payment, charge=charge, amount_cents=part,
                                         previous_next_retry_at=charge.next_retry_at,
                                         previous_hold_reason=charge.hold_reason)
        Charge.objects.filter(pk=charge.pk).update(hold_reason=PORTAL_HOLD, next_retry_at=None, updated_at=now)
        left -= part


def portal_payments_abandon(*, now: dt.datetime) -> int:
    """A portal payment left waiting for authentication is canceled, and its charges go back to schedule."""
    abandoned = 0
    stale = PaymentAttempt.objects.filter(status=AttemptStatus.REQUIRES_ACTION, charge__kind=ChargeKind.BALANCE_PAYMENT,
                                          started_at__lt=now - ABANDONED_AFTER)
    for attempt in stale.select_related("charge"):
        abandoned += payment_intent_withdraw(attempt=attempt, now=now)
    return abandoned


# Reminders ---------------------------------------------------------------------------------------

def _over_since(client_id: int, threshold: int, now: dt.datetime) -> dt.datetime | None:
    """When the balance last rose above the threshold, or the last payment made while it stayed above."""
    entries = (LedgerEntry.objects.filter(client_id=client_id, created_at__lte=now)
               .annotate(running=Window(Sum("amount_cents"), order_by=[F("created_at").asc(), F("id").asc()]))
               .order_by("created_at", "id").values_list("created_at", "kind", "running"))
    since = None
    before = 0
    for created_at, kind, running in entries:
        if running > threshold and (before <= threshold or kind == LedgerKind.PAYMENT):
            since = created_at
        elif running <= threshold:
            since = None
        before = running
    return since


def balance_reminders_run(*, now: dt.datetime) -> int:
    """Send what is due in each episode: reminder, second reminder with the phone, then flag."""
    practice = Practice.load()
    threshold = practice.balance_reminder_threshold_cents
    over = dict(LedgerEntry.objects.filter(created_at__lte=now).values("client").annotate(total=Sum("amount_cents"))
                .filter(total__gt=threshold).values_list("client", "total"))
    done = _episodes_close(over, now)
    # A client paying a current payment plan is not reminded (nor thanked: the episode stays open); once the plan
    # lapses or ends, the count goes on from where it was.
    on_plan = set(PaymentPlan.objects.filter(client_id__in=list(over), status=PlanStatus.CURRENT)
                  .values_list("client_id", flat=True))
    for client_id, total in over.items():
        if client_id in on_plan:
            continue
        since = _over_since(client_id, threshold, now)
        if since is None:
            continue
        with transaction.atomic():
            episode, _ = BalanceEpisode.objects.get_or_create(client_id=client_id, over_since=since)
            episode = BalanceEpisode.objects.select_for_update().select_related("client").get(pk=episode.pk)
            for older in BalanceEpisode.objects.filter(client_id=client_id, closed_at__isnull=True).exclude(
                    pk=episode.pk):
                _episode_close(older, now, "a payment restarted the count", acknowledge=True)
            if episode.closed_at is None:
                done += _episode_step(episode, total, practice, now)
    return done


def _episode_step(episode: BalanceEpisode, total: int, practice: Practice, now: dt.datetime) -> int:
    client = episode.client
    if client.flagged_for_outreach and "failed card" in client.flagged_reason:
        return 0  # the front desk is already calling about the card: no second stream of mail
    context = {"balance": format_cents(total), "over_days": (now - episode.over_since).days}
    if episode.first_reminder_at is None:
        if now >= episode.over_since + dt.timedelta(days=practice.balance_reminder_days):
            _remind(episode, "balance_reminder", context, now)
            episode.first_reminder_at = now
            episode.save(update_fields=["first_reminder_at"])
            return 1
    elif episode.second_reminder_at is None:
        if now >= episode.first_reminder_at + dt.timedelta(days=practice.balance_second_reminder_days):
            _remind(episode, "balance_second_reminder", context, now)
            episode.second_reminder_at = now
            episode.save(update_fields=["second_reminder_at"])
            return 1
    elif episode.flagged_at is None and now >= episode.second_reminder_at + dt.timedelta(
            days=practice.balance_flag_days):
        episode.flagged_at = now
        episode.save(update_fields=["flagged_at"])
        Client.objects.filter(pk=client.pk).update(
            flagged_for_outreach=True, flagged_at=now,
            flagged_reason=f"Balance of {format_cents(total)} unpaid after two reminders")
        return 1
    return 0


def _remind(episode: BalanceEpisode, template: str, context: dict[str, object], now: dt.datetime) -> None:
    issued = link_create(client=episode.client, purpose=LinkPurpose.PAY_BALANCE, now=now, actor=SYSTEM)
    email_enqueue(key=f"{template}:episode:{episode.pk}", client=episode.client, template=template,
                  context={**context, "link_url": issued.url}, now=now)


def _episodes_close(over: dict[int, int], now: dt.datetime) -> int:
    """Close every open episode whose client is no longer over the threshold, in a few queries."""
    with transaction.atomic():
        episodes = list(BalanceEpisode.objects.select_for_update(skip_locked=True, of=("self",))
                        .select_related("client").filter(closed_at__isnull=True).exclude(client_id__in=list(over)))
        _episodes_closed(episodes, now, "balance below the threshold", acknowledge=True)
    return len(episodes)


def _episode_close(episode: BalanceEpisode, now: dt.datetime, why: str, *, acknowledge: bool) -> None:
    _episodes_closed([episode], now, why, acknowledge=acknowledge)


def _episodes_closed(episodes: list[BalanceEpisode], now: dt.datetime, why: str, *, acknowledge: bool) -> None:
    """Close the (locked) episodes. One paid since it went over lifts its balance flag and, if a
    reminder went out, thanks the client."""
    if not episodes:
        return
    for episode in episodes:
        episode.closed_at = now
        episode.closed_reason = why
    rows_update(episodes, ["closed_at", "closed_reason"])
    last_paid = dict(LedgerEntry.objects.filter(client_id__in={e.client_id for e in episodes}, kind=LedgerKind.PAYMENT,
                                                created_at__lte=now)
                     .values("client_id").annotate(last=Max("created_at")).values_list("client_id", "last"))
    paid = [e for e in episodes if e.client_id in last_paid and last_paid[e.client_id] > e.over_since]
    flagged = [episode.client_id for episode in paid if episode.flagged_at is not None]
    if flagged:
        Client.objects.filter(pk__in=flagged, flagged_for_outreach=True,
                              flagged_reason__startswith="Balance of").update(
            flagged_for_outreach=False, flagged_reason="", flagged_at=None)
    for episode in paid:
        if acknowledge and episode.first_reminder_at is not None:
            email_enqueue(key=f"balance_paid:episode:{episode.pk}", client=episode.client, template="balance_paid",
                          context={"balance": format_cents(client_balance_cents(episode.client))}, now=now)



