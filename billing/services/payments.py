"""Taking the money: each due charge is charged once, off-session, on the card on file.

The protocol (docs/architecture.md, "Charging exactly once"):
1. Claim: in a short transaction, lock the charge (SKIP LOCKED, so concurrent ticks share the work),
   write a PaymentAttempt with a deterministic idempotency key and move the charge to processing.
   Commit. Nothing is locked while Stripe answers.
2. Call Stripe with that key.
3. Settle: in another short transaction, record the outcome. A timeout or crash leaves the attempt
   *started*; ``attempts_settle_unknown`` later asks Stripe by PaymentIntent id, or repeats the very
   same request with the same key (Stripe replays its first answer), and settles it. No new attempt
   starts for a charge while one is unknown.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import functools
import logging
from collections import defaultdict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from billing.bulk import rows_update
from billing.models import (
    AWAITING_PAYMENT_STATUSES,
    COLLECTION_KINDS,
    OPEN_STATUSES,
    PAYMENT_KINDS,
    STUCK_STATUSES,
    AttemptStatus,
    BalanceAllocation,
    Charge,
    ChargeKind,
    ChargeStatus,
    ChargeTiming,
    Client,
    LedgerEntry,
    LedgerKind,
    LinkPurpose,
    PaymentAttempt,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.money import format_cents
from billing.services.charges import charge_event_record, charge_transition, charges_transition
from billing.services.ledger import ledger_post, ledger_post_many
from billing.services.links import link_create, links_create
from billing.services.notify import email_enqueue, emails_enqueue
from billing.services.outbound import CHARGE_FAILED, CHARGE_SUCCEEDED, charge_event_emit, charge_events_emit
from billing.services.receipts import charges_email, service_descriptions
from billing.services.review import review_open
from billing.services.waiting import NO_CARD_HOLD, card_needed_ask, waiting_review_close_if_settled
from integrations.stripe.gateway import GatewayRefused, OutcomeUnknown, Payment, get_gateway

log = logging.getLogger(__name__)
SYSTEM = "system:payments"
# Charges claimed at a time: each batch costs a few queries whatever its size (a claim, its attempts, its moves,
# then its settlement), so a larger batch costs less per charge; two batches are in flight at most.
CLAIM_BATCH = 50
# An attempt still open after this long is the janitor's: its worker died or Stripe never answered.
UNKNOWN_AFTER = dt.timedelta(minutes=2)
# Stripe keeps idempotency keys about 24 hours; past that, repeating the request could charge again.
IDEMPOTENCY_WINDOW = dt.timedelta(hours=23)
# A charge waiting for the client to authenticate is settled only on-session (or by staff), never
# retried off-session: the client could otherwise pay twice.
# A charge a client is paying on the portal right now: the off-session collector leaves it alone.
PORTAL_HOLD = "being paid on the portal"
# A charge whose attempt may still turn into money for it.
CAP_HOLD_PREFIX = "above the practice's cap"


def _collectable(now: dt.datetime) -> Q:
    # A payment that pays other charges (portal, weekly) is never charged again by itself: its charges are.
    # A plan's installment is: the client agreed to it in advance, so a declined one is retried on the practice's
    # days like a session's charge (and cut to what is still owed when claimed: ``_chargeable``).
    return (Q(status=ChargeStatus.DUE, hold_reason="") | Q(status=ChargeStatus.FAILED, next_retry_at__lte=now)) & ~Q(
        kind__in=PAYMENT_KINDS)


def charges_collect(*, now: dt.datetime, client: Client | None = None) -> int:
    """Charge every due charge and every failed one whose retry day has come. Returns attempts made.

    A pipeline, so the portal's bookkeeping overlaps Stripe's answers: a few threads send the claimed
    attempts to Stripe (they only call Stripe) while this thread claims the next batch and settles the
    one before, each batch in a few bulk queries. The next batch is queued for the threads as soon as
    it is claimed, before waiting for the last answers of the one before, so no thread idles while the
    slowest call of a batch finishes; a batch is settled whole (its client's charges receipted
    together), and at most two are in flight, so memory stays flat however many charges are due.
    Every attempt is committed and keyed before its call, so nothing can collide. Inside an open
    transaction (a test's) the calls run one by one instead, since the rows are visible to no other
    connection anyway.
    """
    made = 0
    no_card: set[int] = set()
    busy: set[int] = set()
    workers = settings.STRIPE_PARALLEL_CHARGES if not connection.in_atomic_block else 1
    with ThreadPoolExecutor(max_workers=workers) if workers > 1 else nullcontext() as pool:
        in_flight: deque[list[Future[Answer]]] = deque()  # claimed batches, oldest first
        while True:
            selected, claimed = _claim_batch(now, client, no_card, busy)
            made += len(claimed)
            if pool is None:
                _settle_answers([_ask_stripe(attempt) for attempt in claimed], now)
            else:
                if claimed:
                    # Each call in this thread's context: a gateway standing in for Stripe here
                    # (gateway_replaced) answers.
                    in_flight.append([pool.submit(contextvars.copy_context().run, _ask_stripe, attempt)
                                      for attempt in claimed])
                if in_flight and (len(in_flight) > 1 or not selected):
                    _settle_answers([future.result() for future in in_flight.popleft()], now)
            if not selected and not in_flight:
                card_needed_ask(client_ids=no_card, now=now)  # one email a client, listing all that waits
                return made


Answer = tuple[PaymentAttempt, Payment | OutcomeUnknown | GatewayRefused]


def _ask_stripe(attempt: PaymentAttempt) -> Answer:
    """The Stripe call alone (a pool thread's whole job: no database)."""
    try:
        return attempt, get_gateway().payment_off_session(
            amount_cents=attempt.amount_cents, customer_id=attempt.customer_id,
            payment_method_id=attempt.payment_method_id, idempotency_key=attempt.idempotency_key,
            reference=str(attempt.charge_id))
    except (OutcomeUnknown, GatewayRefused) as error:
        return attempt, error


def _settle_answers(answers: list[Answer], now: dt.datetime) -> None:
    paid = []
    for attempt, answer in answers:
        if isinstance(answer, OutcomeUnknown):
            log.warning("charge %s attempt %s outcome unknown: %s", attempt.charge_id, attempt.number, answer)
        elif isinstance(answer, GatewayRefused):
            attempt_refused(attempt=attempt, message=str(answer), code=answer.code, now=now)
        elif answer.status == "succeeded":
            paid.append((attempt, answer))
        else:
            attempt_settle(attempt=attempt, payment=answer, now=now)
    for attempt, payment in _settle_paid(paid, now):
        attempt_settle(attempt=attempt, payment=payment, now=now)


def _claim_batch(now: dt.datetime, client: Client | None, no_card: set[int] | None = None,
                 busy: set[int] | None = None) -> tuple[int, list[PaymentAttempt]]:
    """Lock up to a batch of collectable charges and claim each. Every locked charge leaves the
    collectable set (claimed, or put on hold), or is added to ``busy`` (an installment whose client is being
    paid for on the portal at this moment: left for the next tick), so the caller's loop ends. Clients found
    without a card are added to ``no_card``."""
    practice = Practice.load()
    busy = busy if busy is not None else set()
    with transaction.atomic():
        charges = (Charge.objects.select_for_update(skip_locked=True, of=("self",)).select_related("client")
                   .filter(_collectable(now)).exclude(pk__in=busy))
        if client is not None:
            charges = charges.filter(client=client)
        selected = list(charges.order_by("scheduled_for", "client_id", "pk")[:CLAIM_BATCH])
        if len(selected) == CLAIM_BATCH:
            # A client's charges due at one moment are claimed together, so they settle (and are receipted)
            # together.
            last = selected[-1]
            selected += charges.filter(client_id=last.client_id, scheduled_for=last.scheduled_for).exclude(
                pk__in=[c.pk for c in selected]).order_by("pk")
        chargeable = [charge for charge in selected if _chargeable(charge, practice, now, busy)]
        if no_card is not None:
            no_card.update(c.client_id for c in selected if c.hold_reason == NO_CARD_HOLD)
        singles, weekly = _weekly_batches(chargeable, practice)
        attempts = PaymentAttempt.objects.bulk_create(
            PaymentAttempt(charge=charge, number=charge.attempts + 1,
                           idempotency_key=f"portal-charge-{charge.pk}-attempt-{charge.attempts + 1}",
                           amount_cents=charge.amount_cents, customer_id=charge.client.stripe_customer_id,
                           payment_method_id=charge.client.card_payment_method_id, started_at=now)
            for charge in singles)
        charges_transition(singles, to_status=ChargeStatus.PROCESSING, now=now, actor=SYSTEM,
                           reason=lambda charge: f"attempt {charge.attempts}",
                           changes=lambda charge: {"attempts": charge.attempts + 1, "next_retry_at": None,
                                                   "hold_reason": ""})
        attempts += [_weekly_payment_claim(batch, now) for batch in weekly]
    return len(selected), attempts


def _weekly_batches(charges: list[Charge], practice: Practice) -> tuple[list[Charge], list[list[Charge]]]:
    """With one card payment a week (``Practice.weekly_one_payment``): a client's charges of one batch (due,
    or retried, at the same moment) are one payment when there are several and their total is within the
    practice's cap; everything else is charged on its own."""
    if practice.charge_timing != ChargeTiming.WEEKLY or not practice.weekly_one_payment:
        return charges, []
    batches: dict[tuple[int, dt.datetime | None], list[Charge]] = defaultdict(list)
    singles: list[Charge] = []
    for charge in charges:
        if charge.kind == ChargeKind.INSTALLMENT:  # a plan's installment pays charges itself: always on its own
            singles.append(charge)
            continue
        moment = charge.scheduled_for if charge.status == ChargeStatus.DUE else charge.next_retry_at
        batches[(charge.client_id, moment)].append(charge)
    combined: list[list[Charge]] = []
    for batch in batches.values():
        if len(batch) > 1 and sum(charge.amount_cents for charge in batch) <= practice.max_charge_cents:
            combined.append(batch)
        else:
            singles += batch
    return singles, combined


def _weekly_payment_claim(batch: list[Charge], now: dt.datetime) -> PaymentAttempt:
    """One payment for the batch, as a portal balance payment pays several charges: a payment charge with an
    allocation per session charge and one keyed attempt. The session charges are processing, like any
    charge being taken, so nothing re-prices or cancels them while the card is charged."""
    client = batch[0].client
    total = sum(charge.amount_cents for charge in batch)
    payment = Charge.objects.create(
        client=client, kind=ChargeKind.WEEKLY_PAYMENT, amount_cents=total, status=ChargeStatus.PROCESSING,
        scheduled_for=now, attempts=1,
        breakdown=[{"label": f"Charge #{charge.pk}", "amount_cents": charge.amount_cents} for charge in batch])
    charge_event_record(charge=payment, from_status="", now=now, actor=SYSTEM,
                        reason=f"one card payment for {len(batch)} charges of the weekly batch")
    BalanceAllocation.objects.bulk_create(
        BalanceAllocation(payment=payment, charge=charge, amount_cents=charge.amount_cents,
                          previous_next_retry_at=charge.next_retry_at, previous_hold_reason=charge.hold_reason)
        for charge in batch)
    charges_transition(batch, to_status=ChargeStatus.PROCESSING, now=now, actor=SYSTEM,
                       reason=lambda charge: f"attempt {charge.attempts}, in weekly card payment #{payment.pk}",
                       changes=lambda charge: {"attempts": charge.attempts + 1, "next_retry_at": None,
                                               "hold_reason": ""})
    return PaymentAttempt.objects.create(
        charge=payment, number=1, idempotency_key=f"portal-weekly-{payment.pk}-attempt-1", amount_cents=total,
        customer_id=client.stripe_customer_id, payment_method_id=client.card_payment_method_id, started_at=now)


def attempts_covering(charge: Charge) -> QuerySet[PaymentAttempt]:
    """Every attempt to take the charge: its own, and the weekly card payments that included it."""
    return PaymentAttempt.objects.filter(
        Q(charge=charge) | Q(charge__kind=ChargeKind.WEEKLY_PAYMENT, charge__allocations__charge=charge)).distinct()


def _weekly_sessions(payment: Charge) -> tuple[list[Charge], dict[int, int]]:
    """The session charges a weekly card payment was for (locked, by id) and the amount it took for each."""
    amounts = dict(payment.allocations.values_list("charge_id", "amount_cents"))
    charges = list(Charge.objects.select_for_update(of=("self",)).select_related("client", "appointment__clinician")
                   .filter(pk__in=amounts).order_by("pk"))
    return charges, amounts


def _chargeable(charge: Charge, practice: Practice, now: dt.datetime, busy: set[int]) -> bool:
    """May the card on file be charged now? If not, hold the charge (or stop its retries) and say why."""
    client = charge.client
    if (charge.status == ChargeStatus.DUE and charge.amount_cents > practice.max_charge_cents
            and charge.cap_approved_cents != charge.amount_cents):
        _hold(charge, now, f"{CAP_HOLD_PREFIX} of {format_cents(practice.max_charge_cents)}", ReviewKind.CHARGE_CAP)
        return False
    if not (client.card_payment_method_id and client.stripe_customer_id):
        if charge.status == ChargeStatus.DUE:
            _hold(charge, now, NO_CARD_HOLD, ReviewKind.NO_CARD)
        else:
            Charge.objects.filter(pk=charge.pk).update(next_retry_at=None)
        return False
    if charge.kind == ChargeKind.INSTALLMENT:
        # plans.py builds on this module (and on balance.py, which does too): imported when an installment is due.
        from billing.services.plans import installment_prepare
        ready = installment_prepare(charge, now)
        if ready is None:
            busy.add(charge.pk)
        return bool(ready)
    return True


def _hold(charge: Charge, now: dt.datetime, why: str, kind: str) -> None:
    charge.hold_reason = why[:200]
    Charge.objects.filter(pk=charge.pk).update(hold_reason=why[:200], updated_at=now)
    review_open(kind=kind, client=charge.client, appointment=charge.appointment, charge=charge, now=now,
                reason=f"{charge.get_kind_display()} of {format_cents(charge.amount_cents)} is due but {why}.")


def _settle_paid(paid: list[tuple[PaymentAttempt, Payment]], now: dt.datetime) -> list[tuple[PaymentAttempt, Payment]]:
    """Record a batch of off-session payments that went through, in a few bulk queries: what
    ``attempt_settle`` does for each, one by one. Returns the pairs it left to ``attempt_settle``
    (an attempt or charge no longer as claimed, or a portal balance payment)."""
    if not paid:
        return []
    with transaction.atomic():
        attempts = {attempt.pk: attempt for attempt in PaymentAttempt.objects.select_for_update().filter(
            pk__in=[attempt.pk for attempt, _ in paid], status=AttemptStatus.STARTED)}
        charges = {charge.pk: charge for charge in Charge.objects.select_for_update(of=("self",))
                   .select_related("client", "appointment__clinician")
                   .filter(pk__in=[attempt.charge_id for attempt, _ in paid], status=ChargeStatus.PROCESSING)
                   .exclude(kind__in=COLLECTION_KINDS)}
        settled = [(attempts[attempt.pk], charges[attempt.charge_id], payment) for attempt, payment in paid
                   if attempt.pk in attempts and attempt.charge_id in charges]
        if not settled:
            return paid
        for attempt, _charge, payment in settled:
            attempt.status = AttemptStatus.SUCCEEDED
            attempt.payment_intent_id = payment.payment_intent_id or attempt.payment_intent_id
            attempt.finished_at = now
        rows_update([attempt for attempt, _, _ in settled], ["status", "payment_intent_id", "finished_at"])
        _charges_succeeded([(charge, attempt) for attempt, charge, _ in settled], now, Practice.load())
    done = {attempt.pk for attempt, _, _ in settled}
    return [(attempt, payment) for attempt, payment in paid if attempt.pk not in done]


def attempt_refused(*, attempt: PaymentAttempt, message: str, code: str, now: dt.datetime) -> None:
    """Stripe refused the request itself (e.g. the card was removed): no retry, staff decide."""
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_for_update().select_related("charge__client").get(pk=attempt.pk)
        if attempt.status != AttemptStatus.STARTED:
            return
        attempt.status = AttemptStatus.FAILED
        attempt.failure_code = code or "request_refused"
        attempt.failure_message = message[:300]
        attempt.finished_at = now
        attempt.save()
        charge = Charge.objects.select_for_update().get(pk=attempt.charge_id)
        charge_transition(charge=charge, to_status=ChargeStatus.FAILED, now=now, actor=SYSTEM,
                          reason=f"Stripe refused the request: {attempt.failure_code}",
                          last_failure_code=attempt.failure_code, next_retry_at=None)
        review_open(kind=ReviewKind.PAYMENT_REFUSED, client=charge.client, appointment=charge.appointment,
                    charge=charge, now=now, reason=f"Stripe refused charge #{charge.pk}: {message[:200]}")
        if charge.kind in (ChargeKind.BALANCE_PAYMENT, ChargeKind.INSTALLMENT):
            _allocations_released(charge, now)
        if charge.kind == ChargeKind.INSTALLMENT:
            BalanceAllocation.objects.filter(payment=charge).delete()  # its next attempt, if any, holds afresh
        if charge.kind == ChargeKind.WEEKLY_PAYMENT:
            sessions, _ = _weekly_sessions(charge)
            charges_transition([c for c in sessions if c.status in AWAITING_PAYMENT_STATUSES
                                and c.status != ChargeStatus.FAILED], to_status=ChargeStatus.FAILED, now=now,
                               actor=SYSTEM, reason=lambda _: f"Stripe refused weekly card payment #{charge.pk}: "
                                                              f"{attempt.failure_code}",
                               changes=lambda _: {"last_failure_code": attempt.failure_code, "next_retry_at": None})


def attempt_settle(*, attempt: PaymentAttempt, payment: Payment, now: dt.datetime) -> None:
    """Record what Stripe says happened. Safe to call again, from a webhook, the janitor or a browser."""
    if payment.status in ("processing",):
        PaymentAttempt.objects.filter(pk=attempt.pk, payment_intent_id="").update(
            payment_intent_id=payment.payment_intent_id)
        return  # not final yet: the janitor or a webhook will look again
    with transaction.atomic():
        attempt = PaymentAttempt.objects.select_for_update().get(pk=attempt.pk)
        after_authentication = attempt.status == AttemptStatus.REQUIRES_ACTION
        if attempt.status == AttemptStatus.FAILED and payment.status == "succeeded":
            # With real Stripe a client can still complete a PaymentIntent we had recorded as failed
            # (they retried on the bank's page): the money moved, so it must be recorded.
            _late_success(attempt, now)
            return
        if attempt.status not in (AttemptStatus.STARTED, AttemptStatus.REQUIRES_ACTION):
            return  # already final: a repeat or a late, out-of-order answer changes nothing
        if attempt.status == AttemptStatus.REQUIRES_ACTION and payment.status == "requires_action":
            return
        charge = Charge.objects.select_for_update(of=("self",)).select_related("client", "appointment__clinician").get(
            pk=attempt.charge_id)
        practice = Practice.load()
        attempt.payment_intent_id = payment.payment_intent_id or attempt.payment_intent_id
        attempt.finished_at = now
        on_portal = charge.kind == ChargeKind.BALANCE_PAYMENT
        weekly = charge.kind == ChargeKind.WEEKLY_PAYMENT
        if payment.status == "succeeded" and charge.status not in AWAITING_PAYMENT_STATUSES:
            # The client confirmed a payment the portal had withdrawn meanwhile (paid another way, canceled).
            _late_success(attempt, now)
        elif payment.status == "succeeded":
            attempt.status = AttemptStatus.SUCCEEDED
            attempt.save()
            if weekly:
                _weekly_payment_succeeded(charge, attempt, now, practice)
            else:
                _charge_succeeded(charge, attempt, now, practice)
            if on_portal or charge.kind == ChargeKind.INSTALLMENT:
                _allocations_paid(charge, attempt.payment_intent_id, now)
        elif payment.status == "requires_action":
            attempt.status = AttemptStatus.REQUIRES_ACTION
            attempt.failure_code = payment.failure_code or "waiting_for_card"
            attempt.save()
            if on_portal:  # the client is on the page, which completes it with Stripe.js
                charge_transition(charge=charge, to_status=ChargeStatus.REQUIRES_ACTION, now=now, actor=SYSTEM,
                                  reason="the bank asks the client to confirm" if attempt.payment_method_id
                                  else "paying once with a card typed on the page",
                                  payment_reference=attempt.payment_intent_id)
            elif weekly:
                _weekly_payment_needs_authentication(charge, attempt, now)
            else:
                _charge_needs_authentication(charge, attempt, now)
        else:
            attempt.status = AttemptStatus.FAILED
            attempt.failure_code = "canceled" if payment.status == "canceled" else payment.failure_code[:60]
            attempt.decline_code = payment.decline_code[:60]
            attempt.failure_message = payment.message[:300]
            attempt.save()
            if (on_portal or after_authentication) and payment.status != "canceled" and attempt.payment_intent_id:
                # A payment that failed at the client's bank can still be completed there later (Stripe lets a
                # PaymentIntent be confirmed again); the portal moves on without it, so it is closed at Stripe.
                transaction.on_commit(functools.partial(_cancel_now, attempt.payment_intent_id))
            if on_portal:
                _portal_payment_failed(charge, attempt, now)
            elif payment.status != "canceled":
                # A payment the client's bank asked them to confirm, and which then failed, is never retried
                # off-session: the client pays it on the page or with a new card.
                _charge_failed(charge, attempt, payment, practice, now, retry=not after_authentication)
            elif charge.status == ChargeStatus.REQUIRES_ACTION:
                # Withdrawn at Stripe because the client pays it another way: it waits, not retried.
                withdrawn = [charge]
                if weekly:  # and so do the other sessions it was for
                    sessions, _ = _weekly_sessions(charge)
                    withdrawn += [c for c in sessions if c.status == ChargeStatus.REQUIRES_ACTION]
                charges_transition(withdrawn, to_status=ChargeStatus.FAILED, now=now, actor=SYSTEM,
                                   reason=lambda _: "the request to the client's bank was withdrawn",
                                   changes=lambda _: {"last_failure_code": "canceled", "next_retry_at": None})
            if charge.kind == ChargeKind.INSTALLMENT:
                # Nothing was taken: the charges it held go back as they were; a retry holds afresh.
                _allocations_released(charge, now)
                BalanceAllocation.objects.filter(payment=charge).delete()


def payment_intent_withdraw(*, attempt: PaymentAttempt, now: dt.datetime) -> bool:
    """Cancel at Stripe a payment waiting for the client's bank, and settle what Stripe says.
    False if Stripe could not be reached (it stays as it was); a payment that went through meanwhile is
    recorded as paid."""
    try:
        outcome = get_gateway().payment_cancel(attempt.payment_intent_id)
    except GatewayRefused:
        try:
            outcome = get_gateway().payment_get(attempt.payment_intent_id)  # it finished meanwhile
        except (GatewayRefused, OutcomeUnknown):
            return False
    except OutcomeUnknown:
        return False
    attempt_settle(attempt=attempt, payment=outcome, now=now)
    return True


def payment_withdraw_after_commit(charge: Charge) -> None:
    """The charge no longer waits for the client's bank (canceled, waived): once the change is committed,
    cancel its PaymentIntent at Stripe, so the emailed confirm link cannot take the money as well. If Stripe
    cannot be reached, a confirmation that still goes through is recorded and refunded by staff
    (``_late_success``)."""
    if charge.status != ChargeStatus.REQUIRES_ACTION:
        return
    for attempt in attempts_covering(charge).filter(status=AttemptStatus.REQUIRES_ACTION):
        transaction.on_commit(functools.partial(_withdraw_now, attempt))


def _cancel_now(payment_intent_id: str) -> None:
    """Cancel a PaymentIntent the portal recorded as failed; Stripe refusing (already final) is fine."""
    try:
        get_gateway().payment_cancel(payment_intent_id)
    except (GatewayRefused, OutcomeUnknown) as error:
        log.info("payment intent not canceled: %s", type(error).__name__)


def _withdraw_now(attempt: PaymentAttempt) -> None:
    payment_intent_withdraw(attempt=attempt, now=timezone.now())


def _charge_succeeded(charge: Charge, attempt: PaymentAttempt, now: dt.datetime,
                      practice: Practice | None = None) -> None:
    if charge.status != ChargeStatus.SUCCEEDED:
        _charges_succeeded([(charge, attempt)], now, practice or Practice.load())


def _charges_succeeded(paid: list[tuple[Charge, PaymentAttempt]], now: dt.datetime, practice: Practice,
                       amounts: dict[int, int] | None = None, why: str = "") -> None:
    """The charges were paid by these attempts: move them, tell the EHR side, post the payments to
    the ledger, write the receipts and close what held them back. The caller holds the rows.
    ``amounts`` is what a weekly card payment took for each charge (else each attempt's amount)."""
    charges = [charge for charge, _ in paid]
    reference = {charge.pk: attempt for charge, attempt in paid}
    amounts = amounts or {}
    charges_transition(charges, to_status=ChargeStatus.SUCCEEDED, now=now, actor=SYSTEM,
                       reason=lambda charge: why or f"paid on attempt {reference[charge.pk].number}",
                       changes=lambda charge: {"payment_reference": reference[charge.pk].payment_intent_id,
                                               "last_failure_code": "", "next_retry_at": None,
                                               "receipt_sent_at": now})
    charge_events_emit(charges=charges, type=CHARGE_SUCCEEDED, now=now)
    occurred_on = timezone.localdate(now, practice.zone)
    ledger_post_many([
        LedgerEntry(client=charge.client, kind=LedgerKind.PAYMENT,
                    amount_cents=-amounts.get(charge.pk, attempt.amount_cents), occurred_on=occurred_on,
                    appointment=charge.appointment, charge=charge, memo=f"Card payment {attempt.payment_intent_id}",
                    actor=SYSTEM, created_at=now)
        for charge, attempt in paid])
    # One receipt per client for what this settlement paid (a batch of their sessions), listing each session.
    services = service_descriptions(charges)
    paid_for: dict[int, list[Charge]] = defaultdict(list)
    for charge in charges:
        paid_for[charge.client_id].append(charge)
    # Each receipt links to the client's receipts and history (a link that views, never pays).
    receipts = links_create(clients=list({c.client_id: c.client for c in charges if c.client.email}.values()),
                            purpose=LinkPurpose.RECEIPTS, now=now, actor=SYSTEM)
    emails_enqueue([charges_email(prefix=f"receipt:client:{client_id}", charges=batch, template="receipt",
                                  practice=practice, services=services,
                                  context={"receipts_url": receipts[client_id].url if client_id in receipts else ""})
                    for client_id, batch in paid_for.items()],
                   now=now, practice=practice)
    # Whatever held these charges back is settled now (one query; usually nothing is open).
    held = Q()
    for charge in charges:
        held |= Q(client=charge.client_id, appointment=charge.appointment_id)
    ReviewItem.objects.filter(held, status=ReviewStatus.OPEN, kind__in=[ReviewKind.NO_CARD, ReviewKind.CHARGE_CAP]
                              ).update(status=ReviewStatus.RESOLVED, resolved_at=now,
                                       resolution_note="The charge was paid.")
    for client in {charge.client for charge in charges if charge.client.flagged_for_outreach}:
        _clear_card_flag_if_settled(client, now)


def _late_success(attempt: PaymentAttempt, now: dt.datetime) -> None:
    attempt.status = AttemptStatus.SUCCEEDED
    attempt.finished_at = now
    attempt.save(update_fields=["status", "finished_at", "payment_intent_id"])
    charge = Charge.objects.select_for_update(of=("self",)).select_related("client", "appointment__clinician").get(
        pk=attempt.charge_id)
    if charge.kind == ChargeKind.WEEKLY_PAYMENT:
        if charge.status in (ChargeStatus.FAILED, ChargeStatus.REQUIRES_ACTION):
            _weekly_payment_succeeded(charge, attempt, now, Practice.load(), late=True)
        return
    if charge.status in (ChargeStatus.FAILED, ChargeStatus.REQUIRES_ACTION):
        _charge_succeeded(charge, attempt, now)
        if charge.kind in (ChargeKind.BALANCE_PAYMENT, ChargeKind.INSTALLMENT):  # what it was for, if still open
            _allocations_paid(charge, attempt.payment_intent_id, now)
        return
    # The charge was already paid another way: this is a second payment. Record it and ask for a refund.
    ledger_post(client=charge.client, kind=LedgerKind.PAYMENT, amount_cents=-attempt.amount_cents,
                occurred_on=timezone.localdate(now, Practice.load().zone), now=now, actor=SYSTEM,
                appointment=charge.appointment, charge=charge,
                memo=f"Second card payment {attempt.payment_intent_id}")
    if charge.status == ChargeStatus.CANCELED:
        why = (f"Charge #{charge.pk} was canceled, but the client confirmed its payment {attempt.payment_intent_id} "
               "with their bank: refund the")
    else:
        why = f"Charge #{charge.pk} was paid twice ({attempt.payment_intent_id} as well): refund one"
    review_open(kind=ReviewKind.PAYMENT_REFUSED, client=charge.client, appointment=charge.appointment, charge=charge,
                now=now, reason=f"{why} payment of {format_cents(attempt.amount_cents)}.")


def _weekly_payment_succeeded(payment: Charge, attempt: PaymentAttempt, now: dt.datetime, practice: Practice,
                              *, late: bool = False) -> None:
    """A weekly card payment went through: each session charge it was for is paid, with its own ledger line
    and one receipt listing them. A session no longer waiting for this payment (paid another way or canceled
    while the client's bank confirmed it late) keeps the money as credit, and staff decide."""
    charge_transition(charge=payment, to_status=ChargeStatus.SUCCEEDED, now=now, actor=SYSTEM,
                      reason=f"paid on attempt {attempt.number}", payment_reference=attempt.payment_intent_id,
                      last_failure_code="", next_retry_at=None, receipt_sent_at=now)
    sessions, amounts = _weekly_sessions(payment)
    waiting = (ChargeStatus.FAILED, ChargeStatus.REQUIRES_ACTION) if late else AWAITING_PAYMENT_STATUSES
    paid = [charge for charge in sessions if charge.status in waiting]
    _charges_succeeded([(charge, attempt) for charge in paid], now, practice, amounts,
                       why=f"paid by weekly card payment #{payment.pk}")
    for charge in sessions:
        if charge in paid:
            continue
        ledger_post(client=charge.client, kind=LedgerKind.PAYMENT, amount_cents=-amounts[charge.pk],
                    occurred_on=timezone.localdate(now, practice.zone), now=now, actor=SYSTEM,
                    appointment=charge.appointment, charge=charge,
                    memo=f"Second card payment {attempt.payment_intent_id}")
        review_open(kind=ReviewKind.PAYMENT_REFUSED, client=charge.client, appointment=charge.appointment,
                    charge=charge, now=now,
                    reason=f"Weekly card payment {attempt.payment_intent_id} paid {format_cents(amounts[charge.pk])} "
                           f"toward charge #{charge.pk}, which was {charge.get_status_display().lower()} by then: "
                           "refund that part of it, or leave it as the client's credit.")


def _weekly_payment_needs_authentication(payment: Charge, attempt: PaymentAttempt, now: dt.datetime) -> None:
    """The bank asks the client to confirm the weekly card payment: one link for all its sessions, which wait
    for it and are never retried off-session."""
    sessions, _ = _weekly_sessions(payment)
    charges_transition([payment, *(c for c in sessions if c.status == ChargeStatus.PROCESSING)],
                       to_status=ChargeStatus.REQUIRES_ACTION, now=now, actor=SYSTEM,
                       reason=lambda _: "the card needs the client to confirm the payment",
                       changes=lambda _: {"payment_reference": attempt.payment_intent_id,
                                          "last_failure_code": "authentication_required", "next_retry_at": None})
    issued = link_create(client=payment.client, purpose=LinkPurpose.AUTHENTICATE_PAYMENT, now=now, actor=SYSTEM,
                         charge=payment)
    email_enqueue(key=f"authenticate:charge:{payment.pk}:attempt:{attempt.number}", client=payment.client,
                  template="authentication_required",
                  context={"charge": payment, "amount": format_cents(payment.amount_cents), "link_url": issued.url},
                  now=now)


def _allocations_paid(payment_charge: Charge, payment_intent_id: str, now: dt.datetime) -> None:
    """A portal balance payment went through: the charges it covered are paid (or paid in part).

    A charge paid in part collects only the rest (``amount_cents``) and remembers the part paid
    (``prepaid_cents``); what a charge brought in is always ``amount_cents + prepaid_cents``.
    """
    for allocation in payment_charge.allocations.select_related("charge").select_for_update(of=("self",)):
        charge = Charge.objects.select_for_update().get(pk=allocation.charge_id)
        reason = f"paid on the portal (balance payment #{payment_charge.pk})"
        if charge.status not in OPEN_STATUSES:
            # Canceled while the client confirmed the payment (the session was corrected), or paid otherwise
            # before a late confirmation: the money stays on the ledger as the client's credit, the
            # allocation records that it paid nothing, and staff decide whether to refund it.
            Charge.objects.filter(pk=charge.pk, hold_reason=PORTAL_HOLD).update(hold_reason="", updated_at=now)
            BalanceAllocation.objects.filter(pk=allocation.pk).update(amount_cents=0)
            charge_event_record(charge=charge, from_status=charge.status, now=now, actor=SYSTEM,
                                reason=f"{format_cents(allocation.amount_cents)} {reason} after it was "
                                       f"{charge.status_phrase}: kept as credit")
            review_open(kind=ReviewKind.PAID_SESSION_CHANGED, client=charge.client, appointment=charge.appointment,
                        charge=charge, now=now,
                        reason=f"Balance payment #{payment_charge.pk} paid {format_cents(allocation.amount_cents)} "
                               f"toward charge #{charge.pk}, which was {charge.status_phrase} "
                               "meanwhile. The client has that much credit: refund it, or leave it for what they "
                               "owe next.")
        elif allocation.amount_cents >= charge.amount_cents:
            charge_transition(charge=charge, to_status=ChargeStatus.SUCCEEDED, now=now, actor=SYSTEM, reason=reason,
                              payment_reference=payment_intent_id, hold_reason="", next_retry_at=None)
            charge_event_emit(charge=charge, type=CHARGE_SUCCEEDED, now=now)
        else:
            charge.amount_cents -= allocation.amount_cents
            charge.prepaid_cents += allocation.amount_cents
            charge.hold_reason = allocation.previous_hold_reason
            charge.next_retry_at = allocation.previous_next_retry_at
            charge.save(update_fields=["amount_cents", "prepaid_cents", "hold_reason", "next_retry_at", "updated_at"])
            charge_event_record(charge=charge, from_status=charge.status, now=now, actor=SYSTEM,
                                reason=f"{format_cents(allocation.amount_cents)} {reason}")
    _clear_card_flag_if_settled(payment_charge.client, now)
    waiting_review_close_if_settled(client=payment_charge.client, now=now)


def allocations_paid(*, payment: Charge, reference: str, now: dt.datetime) -> None:
    """A balance payment recorded as paid by other means (cash or a check staff took): the charges it
    covers are paid, or paid in part, exactly as when a portal payment goes through."""
    _allocations_paid(payment, reference, now)


def _portal_payment_failed(payment_charge: Charge, attempt: PaymentAttempt, now: dt.datetime) -> None:
    """The client saw the decline on the page; the charges it would have paid go back to their schedule."""
    code = attempt.decline_code or attempt.failure_code
    charge_transition(charge=payment_charge, to_status=ChargeStatus.FAILED, now=now, actor=SYSTEM,
                      reason=f"portal payment not completed ({code})", last_failure_code=code[:60], next_retry_at=None)
    _allocations_released(payment_charge, now)


def _allocations_released(payment_charge: Charge, now: dt.datetime) -> None:
    """A portal payment that took nothing: the charges it would have paid go back as they were."""
    for allocation in payment_charge.allocations.all():
        Charge.objects.filter(pk=allocation.charge_id, hold_reason=PORTAL_HOLD).update(
            hold_reason=allocation.previous_hold_reason, next_retry_at=allocation.previous_next_retry_at,
            updated_at=now)


def _charge_needs_authentication(charge: Charge, attempt: PaymentAttempt, now: dt.datetime) -> None:
    charge_transition(charge=charge, to_status=ChargeStatus.REQUIRES_ACTION, now=now, actor=SYSTEM,
                      reason="the card needs the client to confirm the payment",
                      payment_reference=attempt.payment_intent_id, last_failure_code="authentication_required",
                      next_retry_at=None)
    issued = link_create(client=charge.client, purpose=LinkPurpose.AUTHENTICATE_PAYMENT, now=now, actor=SYSTEM,
                         charge=charge)
    email_enqueue(key=f"authenticate:charge:{charge.pk}:attempt:{attempt.number}", client=charge.client,
                  template="authentication_required",
                  context={"charge": charge, "amount": format_cents(charge.amount_cents), "link_url": issued.url},
                  now=now)


def _charge_failed(charge: Charge, attempt: PaymentAttempt, payment: Payment, practice: Practice,
                   now: dt.datetime, *, retry: bool = True) -> None:
    if charge.kind == ChargeKind.WEEKLY_PAYMENT:
        # The payment itself is a record; its sessions are declined, retried (together) and told.
        charge_transition(charge=charge, to_status=ChargeStatus.FAILED, now=now, actor=SYSTEM,
                          reason=f"declined ({payment.decline_code or payment.failure_code})",
                          last_failure_code=(payment.decline_code or payment.failure_code)[:60], next_retry_at=None)
        sessions, _ = _weekly_sessions(charge)
        _charges_failed([c for c in sessions if c.status in (ChargeStatus.PROCESSING, ChargeStatus.REQUIRES_ACTION)],
                        attempt, payment, practice, now, retry=retry, about=charge)
    else:
        _charges_failed([charge], attempt, payment, practice, now, retry=retry, about=charge)


def _charges_failed(charges: list[Charge], attempt: PaymentAttempt, payment: Payment, practice: Practice,
                    now: dt.datetime, *, retry: bool, about: Charge) -> None:
    """The card was declined for these charges (one attempt, ``about``'s): each is retried on the policy's days
    after its first failure, and the client gets one email, with a card-update link, naming the amount."""
    code = payment.decline_code or payment.failure_code
    retries = []
    for charge in charges:
        failures = attempts_covering(charge).filter(status=AttemptStatus.FAILED).exclude(
            failure_code="canceled").order_by("started_at", "pk")
        first_failure = failures.first()
        count = failures.count()
        retry_days = practice.retry_day_list
        next_retry = None
        if retry and not payment.hard_decline and count <= len(retry_days) and first_failure is not None:
            next_retry = first_failure.started_at + dt.timedelta(days=retry_days[count - 1])
        retries.append(next_retry)
        charge_transition(charge=charge, to_status=ChargeStatus.FAILED, now=now, actor=SYSTEM,
                          reason=f"declined ({code}) on attempt {attempt.number}"
                                 + (f" of weekly card payment #{about.pk}" if about != charge else ""),
                          last_failure_code=code[:60], next_retry_at=next_retry)
        charge_event_emit(charge=charge, type=CHARGE_FAILED, now=now)
        client = charge.client
        if count >= practice.failures_before_flag and not client.flagged_for_outreach:
            client.flagged_for_outreach = True
            Client.objects.filter(pk=client.pk).update(
                flagged_for_outreach=True, flagged_at=now,
                flagged_reason=f"{count} failed card payments on charge #{charge.pk}")
    if not charges:
        return
    issued = link_create(client=about.client, purpose=LinkPurpose.ENROLL_CARD, now=now, actor=SYSTEM)
    # The email names the charges it is about, with their amounts: it announces their retries.
    email_enqueue(key=f"declined:charge:{about.pk}:attempt:{attempt.number}", client=about.client,
                  template="payment_failed",
                  context={"charge": about, "amount": format_cents(sum(c.amount_cents for c in charges)),
                           "link_url": issued.url, "tone": practice.decline_notice_tone,
                           "will_retry_on": min((r for r in retries if r), default=None),
                           "hard_decline": payment.hard_decline},
                  now=now, charge_amounts=tuple((c.pk, c.amount_cents) for c in charges))


def _clear_card_flag_if_settled(client: Client, now: dt.datetime) -> None:
    # A weekly card payment that failed stays failed as a record; its sessions say what is still stuck.
    open_failures = Charge.objects.filter(client=client, status__in=STUCK_STATUSES).exclude(
        kind=ChargeKind.WEEKLY_PAYMENT).exists()
    if not open_failures:
        Client.objects.filter(pk=client.pk, flagged_for_outreach=True,
                              flagged_reason__contains="failed card payments").update(
            flagged_for_outreach=False, flagged_reason="", flagged_at=None)


def card_flag_clear_if_settled(*, client: Client, now: dt.datetime) -> None:
    """Lift the client's failed-card flag once nothing of theirs is declined or waiting for their bank (a payment
    plan that lapsed cancels the installment that raised it: the plan's review item takes over)."""
    _clear_card_flag_if_settled(client, now)


def attempts_settle_unknown(*, now: dt.datetime) -> int:
    """The janitor: ask Stripe about attempts whose outcome we never learned, and settle them."""
    settled = 0
    stale = PaymentAttempt.objects.filter(status=AttemptStatus.STARTED, started_at__lt=now - UNKNOWN_AFTER)
    gateway = get_gateway()
    for attempt in stale.select_related("charge").order_by("started_at")[:200]:
        try:
            if attempt.payment_intent_id:
                payment = gateway.payment_get(attempt.payment_intent_id)
            elif attempt.started_at >= now - IDEMPOTENCY_WINDOW:
                # The very same request with the same key: Stripe answers with what it did the first time.
                # (A portal payment was an on-session request, or one made once with a card from the page:
                # the same parameters, or Stripe refuses the key.)
                if attempt.charge.kind == ChargeKind.BALANCE_PAYMENT:
                    payment = portal_payment_request(attempt)
                else:
                    payment = gateway.payment_off_session(
                        amount_cents=attempt.amount_cents, customer_id=attempt.customer_id,
                        payment_method_id=attempt.payment_method_id, idempotency_key=attempt.idempotency_key,
                        reference=str(attempt.charge_id))
            else:
                review_open(kind=ReviewKind.PAYMENT_UNKNOWN, client=attempt.charge.client,
                            appointment=attempt.charge.appointment, charge=attempt.charge, now=now,
                            reason=f"Attempt {attempt.number} on charge #{attempt.charge_id} has no answer from "
                                   "Stripe after a day. Check the Stripe dashboard before charging again.")
                continue
        except OutcomeUnknown:
            continue
        except GatewayRefused as refused:
            attempt_refused(attempt=attempt, message=str(refused), code=refused.code, now=now)
            continue
        attempt_settle(attempt=attempt, payment=payment, now=now)
        settled += 1
    return settled


def portal_payment_request(attempt: PaymentAttempt) -> Payment:
    """Ask Stripe for a portal payment's attempt (again, with the same key, if its answer was lost): a payment
    made once has no saved card on it; the others are the saved card, the client present."""
    if not attempt.payment_method_id:
        return get_gateway().payment_once(amount_cents=attempt.amount_cents, customer_id=attempt.customer_id,
                                          idempotency_key=attempt.idempotency_key, reference=str(attempt.charge_id))
    return get_gateway().payment_on_session(
        amount_cents=attempt.amount_cents, customer_id=attempt.customer_id,
        payment_method_id=attempt.payment_method_id, idempotency_key=attempt.idempotency_key,
        reference=str(attempt.charge_id))


def payment_client_secret(*, charge: Charge) -> str:
    """What Stripe.js needs to let the client confirm the charge's payment with their bank."""
    return get_gateway().payment_get(charge.payment_reference).client_secret


def payment_refresh(*, payment_intent_id: str, now: dt.datetime) -> bool:
    """Re-read a PaymentIntent from Stripe and settle the attempt it belongs to (webhooks, the portal).

    An attempt whose worker died before learning the PaymentIntent id is found by the charge
    reference the PaymentIntent carries.
    """
    payment = get_gateway().payment_get(payment_intent_id)
    attempt = PaymentAttempt.objects.filter(payment_intent_id=payment_intent_id).order_by("-number").first()
    if attempt is None and payment.reference.isdigit():
        attempt = PaymentAttempt.objects.filter(charge_id=int(payment.reference), status=AttemptStatus.STARTED,
                                                payment_intent_id="", amount_cents=payment.amount_cents).first()
    if attempt is None:
        return False
    attempt_settle(attempt=attempt, payment=payment, now=now)
    return True
