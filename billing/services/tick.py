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

from billing.audit.chain import chain_seal
from billing.local_time import practice_zone_active
from billing.models import Charge, ChargeStatus, Practice
from billing.services.balance import balance_reminders_run, portal_payments_abandon
from billing.services.charges import charges_transition
from billing.services.ledger import aging_roll
from billing.services.notify import emails_deferred, emails_send
from billing.services.outbound import webhooks_deliver
from billing.services.payments import attempts_settle_unknown, charges_collect
from billing.services.reconciliation import reconciliation_weekly
from billing.services.refunds import refunds_settle_unknown
from billing.services.schedule import notices_enqueue

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
                         .order_by("scheduled_for", "pk")[:BATCH])
            if not batch:
                return marked
            charges_transition(batch, to_status=ChargeStatus.DUE, now=now, actor=SYSTEM,
                               reason=lambda _: "scheduled time reached", changes=lambda _: {})
            marked += len(batch)


def notices_send(*, now: dt.datetime) -> int:
    """Pre-charge notices whose time has come (before the charge itself): one email per client and charge
    moment, listing the sessions of that batch. Returns how many charges were announced."""
    sent = 0
    practice = Practice.load()
    while True:
        with transaction.atomic():
            due = (Charge.objects.select_for_update(skip_locked=True, of=("self",))
                   .select_related("client", "appointment__clinician")
                   .filter(status=ChargeStatus.SCHEDULED, notice_due_at__lte=now, notice_sent_at__isnull=True,
                           scheduled_for__gt=now))
            batch = list(due.order_by("notice_due_at", "client_id", "scheduled_for", "pk")[:BATCH])
            if not batch:
                return sent
            if len(batch) == BATCH:
                # The last client's batch is announced whole, in this one email.
                last = batch[-1]
                batch += due.filter(client_id=last.client_id, scheduled_for=last.scheduled_for).exclude(
                    pk__in=[c.pk for c in batch])
            notices_enqueue(charges=batch, now=now, practice=practice)
            Charge.objects.filter(pk__in=[c.pk for c in batch]).update(notice_sent_at=now)
            sent += len(batch)


def _payments_janitor(*, now: dt.datetime) -> int:
    return attempts_settle_unknown(now=now) + refunds_settle_unknown(now=now) + portal_payments_abandon(now=now)


def _aging_roll(*, now: dt.datetime) -> int:
    return aging_roll(today=now.astimezone(Practice.current_zone()).date())


TickStep = Callable[..., int]
# Order matters: settle what is unknown before charging again; notify before charging.
TICK_STEPS: list[tuple[str, TickStep]] = [
    ("payments_settled", _payments_janitor),
    ("notices_sent", notices_send),
    ("charges_marked_due", charges_mark_due),
    ("payment_attempts", charges_collect),
    ("balance_reminders", balance_reminders_run),
    ("emails_sent", emails_send),
    # Mondays from 06:00 practice time: reconcile the week before, once (billing/services/reconciliation.py).
    ("weeks_reconciled", reconciliation_weekly),
    ("webhooks_delivered", webhooks_deliver),
    ("audit_rows_sealed", chain_seal),
    # Once a day: AR aging's kept amounts as of the practice's new date (billing/services/ledger.py).
    ("aging_rolled", _aging_roll),
]


def tick_run(*, now: dt.datetime) -> dict[str, int]:
    """Run every step for ``now``; returns how many things each step did."""
    done = {}
    # One read of the practice's policy per tick; emails wait for the tick's own sending step. The tick runs
    # outside any request: the practice's zone is made current, as a request's is, for what it writes.
    with Practice.pinned() as practice, practice_zone_active(practice), emails_deferred():
        for name, step in TICK_STEPS:
            done[name] = step(now=now)
    log.info("billing_tick at %s: %s", now.isoformat(), done)
    return done
