"""``billing_tick``: everything due at a moment, as a function of that moment.

Each step claims its rows with ``select_for_update(skip_locked=True)`` and a conditional status
filter, so any number of ticks may run at once (the task queue every minute, a cron, a person
with ``--at``) and each piece of work is done once. A step never holds a transaction across a
call to Stripe or an email server.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from django.db import transaction

from billing.models import Charge, ChargeEvent, ChargeStatus

log = logging.getLogger(__name__)
BATCH = 500
SYSTEM = "system:billing_tick"


def charges_mark_due(*, now: dt.datetime) -> int:
    """Scheduled charges whose time has come are marked due, ready to be charged."""
    marked = 0
    while True:
        with transaction.atomic():
            batch = list(Charge.objects.select_for_update(skip_locked=True)
                         .filter(status=ChargeStatus.SCHEDULED, scheduled_for__lte=now)
                         .order_by("scheduled_for", "pk").values_list("pk", "amount_cents")[:BATCH])
            if not batch:
                return marked
            ids = [pk for pk, _ in batch]
            Charge.objects.filter(pk__in=ids, status=ChargeStatus.SCHEDULED).update(
                status=ChargeStatus.DUE, updated_at=now)
            ChargeEvent.objects.bulk_create(
                ChargeEvent(charge_id=pk, from_status=ChargeStatus.SCHEDULED, to_status=ChargeStatus.DUE,
                            amount_cents=amount, at=now, actor=SYSTEM, reason="scheduled time reached")
                for pk, amount in batch)
            marked += len(batch)


TickStep = Callable[..., int]
TICK_STEPS: list[TickStep] = [charges_mark_due]


def tick_run(*, now: dt.datetime) -> dict[str, int]:
    """Run every step for ``now``; returns how many things each step did."""
    done = {}
    for step in TICK_STEPS:
        done[step.__name__] = step(now=now)
    log.info("billing_tick at %s: %s", now.isoformat(), done)
    return done
