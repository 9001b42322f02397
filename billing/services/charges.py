from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from billing.audit.trail import audit_bulk_updated
from billing.bulk import rows_update
from billing.models import Charge, ChargeEvent
from billing.states import CHARGE_TRANSITIONS, check_transition


def charge_event_record(*, charge: Charge, from_status: str, now: dt.datetime, actor: str,
                        user: User | None = None, reason: str = "") -> ChargeEvent:
    event = charge_event_build(charge=charge, from_status=from_status, now=now, actor=actor, user=user,
                               reason=reason)
    event.save(force_insert=True)
    return event


def charge_event_build(*, charge: Charge, from_status: str, now: dt.datetime, actor: str,
                       user: User | None = None, reason: str = "") -> ChargeEvent:
    """The event row ``charge_event_record`` writes, not saved yet (for rows written in bulk)."""
    return ChargeEvent(charge=charge, from_status=from_status, to_status=charge.status,
                       amount_cents=charge.amount_cents, at=now, actor=actor, user=user, reason=reason[:300])


def charge_transition(*, charge: Charge, to_status: str, now: dt.datetime, actor: str,
                      user: User | None = None, reason: str = "", **changes: Any) -> Charge:
    """Move ``charge`` to ``to_status`` (with any other field ``changes``) and record the move.

    The caller holds the row (select_for_update) inside a transaction, so the move and its event
    row are written together.
    """
    from_status = charge.status
    check_transition(CHARGE_TRANSITIONS, from_status, to_status)
    charge.status = to_status
    for name, value in changes.items():
        setattr(charge, name, value)
    charge.save(update_fields=["status", "updated_at", *changes])
    charge_event_record(charge=charge, from_status=from_status, now=now, actor=actor, user=user, reason=reason)
    return charge


def charges_transition(charges: Sequence[Charge], *, to_status: str, now: dt.datetime, actor: str,
                       reason: Callable[[Charge], str], changes: Callable[[Charge], dict[str, Any]]) -> None:
    """``charge_transition`` for many charges at once (the tick's claims and payments): one UPDATE,
    one insert of their events and one of their audit entries, the same rows one by one would write.

    The caller holds the rows. ``changes(charge)`` gives each charge's other field changes; every
    charge must change the same fields.
    """
    if not charges:
        return
    planned = [changes(charge) for charge in charges]
    fields = ["status", "updated_at", *planned[0]]
    saved_at = timezone.now()  # what auto_now would write: bulk_update does not fill it in
    befores, events = [], []
    for charge, charge_changes in zip(charges, planned, strict=True):
        before = copy.copy(charge)
        check_transition(CHARGE_TRANSITIONS, charge.status, to_status)
        charge.status = to_status
        charge.updated_at = saved_at
        for name, value in charge_changes.items():
            setattr(charge, name, value)
        befores.append(before)
        events.append(ChargeEvent(charge=charge, from_status=before.status, to_status=to_status,
                                  amount_cents=charge.amount_cents, at=now, actor=actor, reason=reason(charge)[:300]))
    rows_update(charges, fields)
    ChargeEvent.objects.bulk_create(events)
    audit_bulk_updated(list(zip(befores, charges, strict=True)), fields=fields)
