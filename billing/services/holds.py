"""Staff decisions on charges the portal would not take by itself: charge anyway, or cancel.

``charge_release`` approves a due charge held above the practice's per-charge cap: the hold is cleared and
the approval is recorded as a charge event for that exact amount (a re-priced charge needs a new one). A charge
held above the client's good faith estimate is released the estimate's way (``estimate_hold_release``: a
pre-charge notice first, since none went out while it was held).
``charge_cancel`` cancels a charge no money moved for and reverses what the ledger says it owes.
Both lock the charge, so a billing run that is claiming it at the same moment either wins (and the
charge is no longer ours to change) or skips it.
"""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.models import User
from django.db import transaction

from billing.errors import Refused
from billing.models import CANCELABLE_STATUSES, Charge, ChargeKind, ChargeStatus, LedgerKind, Practice, ReviewKind
from billing.money import format_cents
from billing.services.charges import charge_event_record, charge_transition
from billing.services.estimates import estimate_hold_release, is_estimate_hold
from billing.services.ledger import ledger_owed_for_charge, ledger_post
from billing.services.payments import CAP_HOLD_PREFIX, PORTAL_HOLD, payment_withdraw_after_commit
from billing.services.review import review_close_stale
from billing.services.schedule import ledger_follow_charge
from billing.services.waiting import waiting_review_close_if_settled

RELEASED = "released by staff"
CANCELED_BY_STAFF = "canceled by staff"
# A charge may be canceled by staff before money moves. One waiting for the client to authenticate
# may be too: its request to the bank is withdrawn at Stripe once the cancel is committed.
HELD_KINDS = (ReviewKind.CHARGE_CAP, ReviewKind.NO_CARD, ReviewKind.ESTIMATE_HOLD)


class HoldNotChanged(Refused):
    """The charge cannot be released or canceled; the message says why, for staff."""


def is_cap_hold(charge: Charge) -> bool:
    return charge.status == ChargeStatus.DUE and charge.hold_reason.startswith(CAP_HOLD_PREFIX)


def charge_release(*, charge: Charge, now: dt.datetime, actor: str, user: User | None, why: str) -> Charge:
    """Charge a due charge held above the practice's cap anyway, at the next billing run."""
    why = why.strip()
    if not why:
        raise HoldNotChanged("Say why the charge may go ahead.")
    if is_estimate_hold(charge):
        return estimate_hold_release(charge=charge, now=now, actor=actor, user=user, why=why)
    with transaction.atomic():
        charge = Charge.objects.select_for_update(of=("self",)).select_related("client", "appointment").get(
            pk=charge.pk)
        if charge.status != ChargeStatus.DUE or not charge.hold_reason:
            raise HoldNotChanged(f"Charge #{charge.pk} is not on hold (it is {charge.status_phrase}).")
        if not is_cap_hold(charge):
            raise HoldNotChanged(f"Charge #{charge.pk} is not held above the cap but {charge.hold_reason}: it "
                                 "goes ahead by itself once that is settled.")
        # The approval is for this exact amount: a re-priced charge above the cap is held again.
        charge.hold_reason = ""
        charge.cap_approved_cents = charge.amount_cents
        charge.save(update_fields=["hold_reason", "cap_approved_cents", "updated_at"])
        charge_event_record(charge=charge, from_status=charge.status, now=now, actor=actor, user=user,
                            reason=f"{RELEASED}: charge {format_cents(charge.amount_cents)} above the cap "
                                   f"of {format_cents(Practice.load().max_charge_cents)}: {why}")
        review_close_stale(kind=ReviewKind.CHARGE_CAP, client=charge.client, appointment=charge.appointment,
                           now=now, note=f"Released by {actor}: {why}"[:300])
    return charge


def charge_cancel(*, charge: Charge, now: dt.datetime, actor: str, user: User | None, why: str) -> Charge:
    """Cancel a charge that took no money, and take what it was for off the client's balance."""
    why = why.strip()
    if not why:
        raise HoldNotChanged("Say why the charge is canceled.")
    with transaction.atomic():
        charge = Charge.objects.select_for_update(of=("self",)).select_related("client", "appointment").get(
            pk=charge.pk)
        if charge.status not in CANCELABLE_STATUSES:
            raise HoldNotChanged(f"Charge #{charge.pk} is {charge.status_phrase}: only a "
                                 "scheduled, due or failed charge can be canceled.")
        if charge.hold_reason == PORTAL_HOLD:
            raise HoldNotChanged(f"Charge #{charge.pk} is being paid by the client on the portal right now.")
        if charge.kind == ChargeKind.WEEKLY_PAYMENT:
            raise HoldNotChanged(f"Charge #{charge.pk} is a weekly card payment: cancel the sessions it was for.")
        memo = f"{CANCELED_BY_STAFF}: {why}"
        payment_withdraw_after_commit(charge)
        charge_transition(charge=charge, to_status=ChargeStatus.CANCELED, now=now, actor=actor, user=user,
                          reason=memo, hold_reason="", next_retry_at=None, canceled_by_staff=True)
        practice = Practice.load()
        if charge.appointment is not None:
            ledger_follow_charge(charge, charge.appointment, 0, practice, now, actor, user, memo,
                                 kind=LedgerKind.CHARGE_CANCELED)
        elif owed := ledger_owed_for_charge(charge, with_write_offs=True):
            ledger_post(client=charge.client, kind=LedgerKind.CHARGE_CANCELED, amount_cents=-owed,
                        occurred_on=now.astimezone(practice.zone).date(), now=now, actor=actor, user=user,
                        charge=charge, memo=memo)
        for kind in HELD_KINDS:
            review_close_stale(kind=kind, client=charge.client, appointment=charge.appointment, now=now,
                               note=f"The charge was canceled by {actor}."[:300])
        waiting_review_close_if_settled(client=charge.client, now=now)
    return charge
