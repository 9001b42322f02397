"""``billing_tick``: everything due at a moment, as a function of that moment.

Each step claims its rows with ``select_for_update(skip_locked=True)`` and a conditional status
filter, so any number of ticks may run at once (the task queue every minute, a cron, a person
with ``--at``) and each piece of work is done once. A step never holds a transaction across a
call to Stripe or an email server.

Preview (``Practice.charging_preview``) is gated here, in one place (``_gate``): the steps that reach Stripe
or clients are skipped and any other Stripe call is refused before the network; the outbox drafts instead of
sending (billing/services/notify.py). A replay (billing/services/preview.py) runs these same steps inside a
transaction it rolls back, with a gateway that answers Stripe's part itself.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from django.db import connection, transaction
from django.utils import timezone

from billing.audit.chain import chain_seal
from billing.local_time import practice_zone_active
from billing.models import Charge, ChargeStatus, Practice, TickHeartbeat
from billing.services.balance import balance_reminders_run, portal_payments_abandon
from billing.services.charges import charges_transition
from billing.services.ledger import aging_roll
from billing.services.notify import emails_deferred, emails_send
from billing.services.outbound import webhooks_deliver
from billing.services.payments import attempts_settle_unknown, charges_collect
from billing.services.plans import plans_review
from billing.services.reconciliation import reconciliation_weekly
from billing.services.refunds import refunds_settle_unknown
from billing.services.schedule import notices_enqueue
from billing.services.statements import statements_monthly
from integrations.stripe.gateway import AnsweringGateway, ClosedGateway, gateway_replaced

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
    # Payment plans paid off or lapsed (billing/services/plans.py), before the reminders that a lapse restarts.
    ("plans_reviewed", plans_review),
    ("balance_reminders", balance_reminders_run),
    # From the start of the practice's statement day (its zone): the month before's statements, once.
    ("statements_issued", statements_monthly),
    ("emails_sent", emails_send),
    # Mondays from 06:00 practice time: reconcile the week before, once (billing/services/reconciliation.py).
    ("weeks_reconciled", reconciliation_weekly),
    ("webhooks_delivered", webhooks_deliver),
    ("audit_rows_sealed", chain_seal),
    # Once a day: AR aging's kept amounts as of the practice's new date (billing/services/ledger.py).
    ("aging_rolled", _aging_roll),
]


# What a step reaches beyond the portal's own database (the others only read and write it).
STRIPE, CLIENTS, EHR, SEAL = "Stripe", "clients", "the EHR", "the audit seal"
STEP_REACHES: dict[str, str] = {
    "payments_settled": STRIPE, "payment_attempts": STRIPE, "emails_sent": CLIENTS, "webhooks_delivered": EHR,
    # One sealer at a time, by a lock held to the end of its transaction: a replay would hold it throughout.
    "audit_rows_sealed": SEAL,
}


_replaying: ContextVar[bool] = ContextVar("tick_replaying", default=False)


@contextmanager
def tick_replay() -> Iterator[None]:
    """The one transaction ``tick_run(replay=True)`` runs in: rolled back at its end, whatever happens, so
    nothing a replay does stays. Inside a transaction the collector calls the gateway inline, in this
    connection; the steps' own transactions are savepoints, their SKIP LOCKED claims see this transaction's
    rows."""
    with transaction.atomic():
        token = _replaying.set(True)
        try:
            yield
        finally:
            _replaying.reset(token)
            transaction.set_rollback(True)


@contextmanager
def _gate(practice: Practice, replay: bool) -> Iterator[frozenset[str]]:
    """The one gate between a tick and the world: what it must not reach, and who answers for Stripe.

    - Charging on: everything runs, against Stripe.
    - Preview (the practice charges nothing): no step reaching Stripe or clients runs (no charge is claimed,
      no email leaves), and any Stripe call left (reconciliation's read) is refused before the network.
    - Replay (a preview report, inside a transaction rolled back at its end): Stripe is answered here, every
      payment going through; nothing leaves the database (no email, no EHR write-back) nor outlives it.
    """
    if replay:
        if not (_replaying.get() and connection.in_atomic_block):
            raise RuntimeError("A replay runs only inside tick_replay(), which rolls it back.")
        with gateway_replaced(AnsweringGateway()):
            yield frozenset({CLIENTS, EHR, SEAL})
    elif practice.charging_preview:
        with gateway_replaced(ClosedGateway()):
            yield frozenset({STRIPE, CLIENTS})
    else:
        yield frozenset()


def tick_run(*, now: dt.datetime, replay: bool = False) -> dict[str, int]:
    """Run every step for ``now``; returns how many things each step did (a step kept from Stripe or
    clients by preview, or by a ``replay``, is left out). ``replay`` runs only inside ``tick_replay()``
    (billing/services/preview.py)."""
    done = {}
    started = time.monotonic()
    # One read of the practice's policy per tick; emails wait for the tick's own sending step. The tick runs
    # outside any request: the practice's zone is made current, as a request's is, for what it writes.
    with Practice.pinned() as practice, practice_zone_active(practice), emails_deferred(), \
            _gate(practice, replay) as closed:
        for name, step in TICK_STEPS:
            if STEP_REACHES.get(name) not in closed:
                done[name] = step(now=now)
    if not replay:
        heartbeat_record(as_of=now, seconds=time.monotonic() - started)
    log.info("billing_tick at %s%s: %s", now.isoformat(), " (replay)" if replay else "", done)
    return done


def heartbeat_record(*, as_of: dt.datetime, seconds: float) -> None:
    """Note that a tick ran to its end, at the clock's time (the health endpoint and ``doctor`` read it). One
    statement that creates or updates the row, so ticks running side by side never conflict."""
    TickHeartbeat.objects.bulk_create(
        [TickHeartbeat(pk=TickHeartbeat.SINGLETON_ID, finished_at=timezone.now(), as_of=as_of, seconds=seconds)],
        update_conflicts=True, unique_fields=["id"], update_fields=["finished_at", "as_of", "seconds"])
