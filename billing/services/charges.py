from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import User

from billing.models import Charge, ChargeEvent
from billing.states import CHARGE_TRANSITIONS, check_transition


def charge_event_record(*, charge: Charge, from_status: str, now: dt.datetime, actor: str,
                        user: User | None = None, reason: str = "") -> ChargeEvent:
    return ChargeEvent.objects.create(
        charge=charge, from_status=from_status, to_status=charge.status, amount_cents=charge.amount_cents,
        at=now, actor=actor, user=user, reason=reason[:300])


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
