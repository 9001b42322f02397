"""Refunds from the admin: never above what was paid, recorded before Stripe is called."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Sum

from billing.errors import Refused
from billing.models import (
    Charge,
    ChargeKind,
    ChargeStatus,
    LedgerEntry,
    LedgerKind,
    OutsideMethod,
    Practice,
    Refund,
    RefundStatus,
)
from billing.money import format_cents
from billing.services.charges import charge_transition
from billing.services.ledger import ledger_post
from billing.services.outbound import CHARGE_REFUNDED, charge_event_emit
from integrations.stripe.gateway import GatewayRefused, OutcomeUnknown, get_gateway


class RefundNotAllowed(Refused):
    pass


def refundable_cents(charge: Charge) -> int:
    """What may still go back to the card. Money taken outside Stripe (cash, a check) goes back the same way,
    outside the portal: staff record it as an adjustment."""
    if charge.payment_reference.partition(":")[0] in OutsideMethod.values:
        return 0
    if charge.kind == ChargeKind.WEEKLY_PAYMENT:
        return 0  # refunded session by session: each charge it paid keeps its own refunds
    return charge.amount_cents - charge.refunded_cents if charge.status in (
        ChargeStatus.SUCCEEDED, ChargeStatus.PARTIALLY_REFUNDED) else 0


def charge_refund(*, charge: Charge, amount_cents: int, reason: str, user: User, now: dt.datetime) -> Refund:
    """Refund part or all of a paid charge. Raises RefundNotAllowed with a message staff can act on."""
    reason = reason.strip()
    if not reason:
        raise RefundNotAllowed("Give a reason for the refund.")
    with transaction.atomic():
        charge = Charge.objects.select_for_update().get(pk=charge.pk)
        if Refund.objects.filter(charge=charge, status=RefundStatus.STARTED).exists():
            raise RefundNotAllowed("A refund on this charge is still waiting for Stripe's answer.")
        if charge.kind == ChargeKind.WEEKLY_PAYMENT:
            raise RefundNotAllowed("This is a weekly card payment: refund the sessions it paid, each on its own.")
        left = refundable_cents(charge)
        if amount_cents <= 0:
            raise RefundNotAllowed("The refund must be more than $0.00.")
        if amount_cents > left:
            raise RefundNotAllowed(f"At most {format_cents(left)} of this charge can be refunded.")
        number = charge.refunds.count() + 1
        refund = Refund.objects.create(charge=charge, amount_cents=amount_cents, reason=reason[:300],
                                       idempotency_key=f"portal-refund-{charge.pk}-{number}",
                                       requested_by=user, created_at=now)
    try:
        result = get_gateway().refund_create(payment_intent_id=charge.payment_reference, amount_cents=amount_cents,
                                             idempotency_key=refund.idempotency_key)
    except OutcomeUnknown:
        return refund  # stays started: retried with the same key by refunds_settle_unknown
    except GatewayRefused as refused:
        Refund.objects.filter(pk=refund.pk).update(status=RefundStatus.FAILED, failure_message=str(refused)[:300],
                                                   finished_at=now)
        raise RefundNotAllowed(f"Stripe refused the refund: {refused}") from refused
    return _refund_succeeded(refund, result.id, now, user)


def _refund_succeeded(refund: Refund, stripe_refund_id: str, now: dt.datetime, user: User | None) -> Refund:
    with transaction.atomic():
        refund = Refund.objects.select_for_update().get(pk=refund.pk)
        if refund.status != RefundStatus.STARTED:
            return refund
        refund.status = RefundStatus.SUCCEEDED
        refund.stripe_refund_id = stripe_refund_id
        refund.finished_at = now
        refund.save()
        charge = Charge.objects.select_for_update().get(pk=refund.charge_id)
        refunded = charge.refunded_cents + refund.amount_cents
        status = ChargeStatus.REFUNDED if refunded >= charge.amount_cents else ChargeStatus.PARTIALLY_REFUNDED
        actor = f"staff:{user.get_username()}" if user else "system:refunds"
        charge_transition(charge=charge, to_status=status, now=now, actor=actor, user=user,
                          reason=f"refunded {format_cents(refund.amount_cents)}: {refund.reason}",
                          refunded_cents=refunded)
        charge_event_emit(charge=charge, type=CHARGE_REFUNDED, now=now)
        # Money went back: the balance first uses up any credit the client had; the rest of the refund
        # means the amount was not owed, so it is written off rather than chased.
        balance = LedgerEntry.objects.filter(client_id=charge.client_id).aggregate(t=Sum("amount_cents"))["t"] or 0
        credit = max(-balance, 0)
        today = now.astimezone(Practice.load().zone).date()
        ledger_post(client=charge.client, kind=LedgerKind.REFUND, amount_cents=refund.amount_cents, occurred_on=today,
                    now=now, actor=actor, user=user, appointment=charge.appointment, charge=charge,
                    memo=f"Refund {stripe_refund_id}: {refund.reason}")
        not_owed = refund.amount_cents - min(credit, refund.amount_cents)
        if not_owed:
            ledger_post(client=charge.client, kind=LedgerKind.WRITE_OFF, amount_cents=-not_owed, occurred_on=today,
                        now=now, actor=actor, user=user, appointment=charge.appointment, charge=charge,
                        memo=f"Refunded amount not owed: {refund.reason}")
    return refund


def refunds_settle_unknown(*, now: dt.datetime) -> int:
    settled = 0
    for refund in Refund.objects.filter(status=RefundStatus.STARTED, created_at__lt=now - dt.timedelta(minutes=2),
                                        created_at__gte=now - dt.timedelta(hours=23)).select_related("charge"):
        try:
            result = get_gateway().refund_create(payment_intent_id=refund.charge.payment_reference,
                                                 amount_cents=refund.amount_cents,
                                                 idempotency_key=refund.idempotency_key)
        except (OutcomeUnknown, GatewayRefused):
            continue
        _refund_succeeded(refund, result.id, now, refund.requested_by)
        settled += 1
    return settled
