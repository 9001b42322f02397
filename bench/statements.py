"""How long the month's statement batch takes for N clients, and that its queries do not grow with N.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/<db> .venv/bin/python bench/statements.py [--clients 10000]

In one transaction that is rolled back at the end (the database is left as it was; it is migrated first), it
seeds N clients with three months of varied ledger activity (sessions, fees, card and balance payments, some
paying the month before's sessions, refunds, adjustments, write-offs, canceled charges; a fifth of the clients
quiet in the month but still owing), then times, for the last of the three months:

- the figures alone (``statement_figures`` and ``statement_lines``: every client's month in SQL aggregates);
- the whole batch as ``billing_tick`` runs it on the statement day (``statements_monthly``): the figures, a
  frozen ``Statement`` row per client, a pay link per client who owes, and each email rendered into the outbox.

It prints the time and the number of SQL queries of each, and checks every client's closing balance against
the ledger.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_setup() -> None:
    if not os.environ.get("DATABASE_URL"):
        sys.exit("Set DATABASE_URL to the PostgreSQL database to run in (nothing is left in it).")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def seed(n: int, month: dt.date, rng: random.Random) -> int:
    from billing.models import Client, LedgerEntry, LedgerKind

    clients = Client.objects.bulk_create(
        [Client(first_name=f"Bench{i}", last_name="Client", email=f"bench{i}@example.com", billing_type="self_pay",
                session_rate_cents=14_000, created_at=dt.datetime.now(dt.UTC), updated_at=dt.datetime.now(dt.UTC))
         for i in range(n)], batch_size=5000)
    months = [dt.date(month.year - (month.month <= k), (month.month - k - 1) % 12 + 1, 1) for k in (2, 1, 0)]
    entries = []

    def post(client: Client, kind: str, cents: int, day: dt.date) -> None:
        entries.append(LedgerEntry(client=client, kind=kind, amount_cents=cents, occurred_on=day, actor="bench",
                                   created_at=dt.datetime.combine(day, dt.time(15), tzinfo=dt.UTC)))

    for client in clients:
        quiet = rng.random() < 0.2
        for first in months:
            if quiet and first == month:
                continue
            for _ in range(rng.randint(1, 4)):
                day = first.replace(day=rng.randint(1, 28))
                post(client, LedgerKind.SESSION_CHARGE, 14_000, day)
                roll = rng.random()
                if roll < 0.6:
                    post(client, LedgerKind.PAYMENT, -14_000, min(day + dt.timedelta(days=rng.randint(0, 20)),
                                                                   first.replace(day=28) + dt.timedelta(days=20)))
                elif roll < 0.65:
                    post(client, LedgerKind.CHARGE_CANCELED, -14_000, day)
                elif roll < 0.7:
                    post(client, LedgerKind.PAYMENT, -14_000, day)
                    post(client, LedgerKind.REFUND, 4_000, day + dt.timedelta(days=1))
                    post(client, LedgerKind.WRITE_OFF, -4_000, day + dt.timedelta(days=1))
            if rng.random() < 0.1:
                post(client, LedgerKind.FEE, 7_500, first.replace(day=rng.randint(1, 28)))
            if rng.random() < 0.05:
                post(client, LedgerKind.ADJUSTMENT, rng.choice((-2_500, 2_500)), first.replace(day=15))
    LedgerEntry.objects.bulk_create(entries, batch_size=10_000)
    return len(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--month", default="2026-11", help="The month the statements cover (YYYY-MM).")
    args = parser.parse_args()
    django_setup()

    from django.core.management import call_command
    from django.db import connection, transaction
    from django.db.models import Sum
    from django.test.utils import CaptureQueriesContext

    from billing.models import LedgerEntry, OutboundEmail, Practice, Statement
    from billing.selectors.statements import month_last, statement_figures, statement_lines
    from billing.services.statements import month_parse, statements_monthly

    call_command("migrate", verbosity=0)
    month = month_parse(args.month)
    with transaction.atomic():
        Practice.objects.update_or_create(pk=Practice.SINGLETON_ID, defaults={
            "name": "Bench Counseling", "phone": "555-0100", "sender_email": "billing@bench.example",
            "time_zone": "America/New_York", "statement_day": 1})
        started = time.perf_counter()
        entries = seed(args.clients, month, random.Random(42))
        took = time.perf_counter() - started
        print(f"seeded {args.clients:,} clients and {entries:,} ledger entries in {took:.1f} s")

        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            figures = statement_figures(month)
            lines = statement_lines(month)
            took = time.perf_counter() - started
        print(f"figures for {len(figures):,} clients ({sum(map(len, lines.values())):,} lines): "
              f"{took:.2f} s, {len(queries)} queries")

        first = month_last(month) + dt.timedelta(days=1)
        statement_moment = dt.datetime.combine(first, dt.time(0), tzinfo=Practice.load().zone)
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            issued = statements_monthly(now=statement_moment)
            took = time.perf_counter() - started
        emails = OutboundEmail.objects.filter(template="statement").count()
        print(f"the month's batch (statements_monthly): {issued:,} statements and {emails:,} emails in "
              f"{took:.2f} s, {len(queries)} queries")

        ledger = dict(LedgerEntry.objects.filter(occurred_on__lte=month_last(month)).values("client_id")
                      .annotate(t=Sum("amount_cents")).values_list("client_id", "t"))
        wrong = [s.client_id for s in Statement.objects.filter(month=month)
                 if s.closing_cents != ledger.get(s.client_id, 0)
                 or s.opening_cents + s.charges_cents - s.payments_cents + s.refunds_cents + s.adjustments_cents
                 != s.closing_cents]
        print(f"closing balances checked against the ledger: {len(wrong)} wrong")
        transaction.set_rollback(True)


if __name__ == "__main__":
    main()
