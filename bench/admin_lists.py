"""How fast the staff console's busiest pages are on a large practice.

    .venv/bin/python bench/admin_lists.py [--appointments 100000] [--repeat 5]

Seeds a dedicated PostgreSQL database (``portal_bench``; created if missing, seeded once per size) with
N sessions, their attendees, about one charge each and the ledger behind them (N/20 clients, 10
clinicians), rolls AR aging's kept amounts to today as the tick does once a day (and says how long that
took), then renders each page as a superuser signed in with the second factor (as staff must be) and
prints its query count, median time and slowest query (``--show-sql N``: that query's SQL too).
It then does the same at a tenth of the size (``portal_bench_small``): the query counts must not change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SERVER = "postgres://postgres@127.0.0.1:5432"
BATCH = 5_000

SURNAMES = ["Garcia", "Nguyen", "Smith", "Okafor", "Kim", "Patel", "Rossi", "Cohen", "Silva", "Murphy",
            "Novak", "Haddad", "Larsen", "Moreau", "Tanaka", "Mendez", "Walsh", "Ibrahim", "Fischer", "Reyes"]
FIRST_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Ella", "Finn", "Grace", "Hugo", "Iris", "Jon", "Kai", "Lena"]


def ensure_database(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def seed(appointment_count: int) -> None:
    """Fill the database with a practice of this size, unless it already holds exactly that."""
    from django.apps import apps
    from django.db import connection
    from django.db.models import F

    from billing import models as m

    if m.Appointment.objects.count() == appointment_count:
        print(f"Already seeded with {appointment_count:,} sessions.")
        return
    started = time.perf_counter()
    tables = ", ".join(model._meta.db_table for model in apps.get_app_config("billing").get_models())
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")

    rng = random.Random(42)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    m.Practice.objects.create(name="Bench Counseling", phone="555-0100", sender_email="billing@bench.example")
    clinicians = m.Clinician.objects.bulk_create(
        m.Clinician(name=f"Clinician {i}", npi="1234567893", credentials="LCSW") for i in range(10))
    for code, fee, group in (("90837", 20_000, False), ("90834", 16_000, False), ("90791", 25_000, False),
                             ("90853", 8_000, True)):
        m.Service.objects.create(cpt_code=code, description=f"Service {code}", fee_cents=fee, is_group=group)
    payer = m.Payer.objects.create(name="Aetna", payer_id="60054")

    client_count = max(appointment_count // 20, 10)
    clients = m.Client.objects.bulk_create(
        (m.Client(
            first_name=FIRST_NAMES[i % len(FIRST_NAMES)], last_name=f"{SURNAMES[i % len(SURNAMES)]}{i // 20}",
            email=f"client{i}@example.com", billing_type=rng.choice(m.BillingType.values),
            session_rate_cents=12_000, stripe_customer_id=f"cus_{i}",
            card_payment_method_id=f"pm_{i}" if i % 5 else "", card_brand="visa", card_last4="4242",
            card_exp_month=12, card_exp_year=2030, flagged_for_outreach=i % 100 == 0,
            flagged_reason="3 failed cards" if i % 100 == 0 else "", flagged_at=now if i % 100 == 0 else None)
         for i in range(client_count)), batch_size=BATCH)
    m.Coverage.objects.bulk_create(
        (m.Coverage(client=c, payer=payer, payer_name="Aetna", member_id=f"W{c.pk:08d}", copay_cents=2_500)
         for c in clients if c.billing_type == m.BillingType.INSURANCE), batch_size=BATCH)

    # Two years of sessions, oldest first; the last 2% are still in the future.
    span = dt.timedelta(days=730)
    first = now - span * 0.98
    for start in range(0, appointment_count, BATCH):
        _seed_batch(rng, range(start, min(start + BATCH, appointment_count)), appointment_count, first, span,
                    now, clinicians, clients)
    m.Charge.objects.update(created_at=F("scheduled_for") - dt.timedelta(days=1))

    open_items = m.Appointment.objects.filter(status=m.AppointmentStatus.COMPLETED).order_by("pk")[
        : max(appointment_count // 500, 5)].prefetch_related("participants")
    m.ReviewItem.objects.bulk_create(
        m.ReviewItem(kind=m.ReviewKind.PRICING, client_id=a.participants.all()[0].client_id, appointment=a,
                     reason="No benefits on file for this session.", created_at=now) for a in open_items)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    print(f"Seeded {appointment_count:,} sessions in {time.perf_counter() - started:.0f} s.")


def _seed_batch(rng: random.Random, numbers: range, total: int, first: dt.datetime, span: dt.timedelta,
                now: dt.datetime, clinicians: list[Any], clients: list[Any]) -> None:
    from billing import models as m

    appointments = []
    for i in numbers:
        starts_at = first + span * (i / total)
        group = rng.random() < 0.03
        # Past sessions: mostly completed, some no-shows, late cancels and cancellations.
        status = (m.AppointmentStatus.SCHEDULED if starts_at > now
                  else rng.choices(m.AppointmentStatus.values[1:], weights=[88, 5, 3, 4])[0])
        appointments.append(m.Appointment(
            clinician=clinicians[i % len(clinicians)], service_code="90853" if group else "90837",
            starts_at=starts_at, status=status, diagnosis_codes=["F41.1"],
            note_signed_at=starts_at + dt.timedelta(hours=2) if status != m.AppointmentStatus.SCHEDULED else None))
    m.Appointment.objects.bulk_create(appointments)

    participants, charges = [], []
    for appointment in appointments:
        attendees = rng.sample(clients, 3) if appointment.service_code == "90853" else [rng.choice(clients)]
        for client in attendees:
            participants.append(m.Participant(appointment=appointment, client=client))
            if appointment.status not in (m.AppointmentStatus.COMPLETED, m.AppointmentStatus.NO_SHOW):
                continue
            scheduled_for = appointment.starts_at + dt.timedelta(days=1)
            charge_status = (m.ChargeStatus.SCHEDULED if scheduled_for > now
                             else rng.choices([m.ChargeStatus.SUCCEEDED, m.ChargeStatus.FAILED,
                                               m.ChargeStatus.REQUIRES_ACTION], weights=[97, 2.5, 0.5])[0])
            amount = rng.choice([2_500, 3_000, 12_000, 16_000])
            succeeded = charge_status == m.ChargeStatus.SUCCEEDED
            charges.append(m.Charge(
                client=client, appointment=appointment, amount_cents=amount, status=charge_status,
                kind=m.ChargeKind.COPAY if appointment.status == m.AppointmentStatus.COMPLETED
                else m.ChargeKind.NO_SHOW_FEE,
                breakdown=[{"label": "Copay", "amount_cents": amount}], scheduled_for=scheduled_for,
                attempts=0 if charge_status == m.ChargeStatus.SCHEDULED else 1,
                payment_reference=f"pi_{appointment.pk}_{client.pk}" if succeeded else "",
                last_failure_code="card_declined" if charge_status == m.ChargeStatus.FAILED else ""))
    m.Participant.objects.bulk_create(participants)
    m.Charge.objects.bulk_create(charges)

    entries = []
    for charge in charges:
        session = charge.appointment
        assert session is not None
        day = session.starts_at.date()
        entries.append(m.LedgerEntry(client=charge.client, kind=m.LedgerKind.SESSION_CHARGE,
                                     amount_cents=charge.amount_cents, occurred_on=day, appointment=session,
                                     charge=charge, actor="system", created_at=charge.scheduled_for))
        if charge.status == m.ChargeStatus.SUCCEEDED:
            entries.append(m.LedgerEntry(client=charge.client, kind=m.LedgerKind.PAYMENT,
                                         amount_cents=-charge.amount_cents, occurred_on=day, charge=charge,
                                         actor="system", created_at=charge.scheduled_for))
    m.LedgerEntry.objects.bulk_create(entries)


def pages() -> list[tuple[str, str]]:
    from billing import models as m

    busy_client = m.Client.objects.order_by("pk").first()
    appointment = m.Appointment.objects.filter(status=m.AppointmentStatus.COMPLETED).order_by("-pk").first()
    charge = m.Charge.objects.order_by("-pk").first()
    assert busy_client and appointment and charge
    month = appointment.starts_at
    return [
        ("Today (index)", "/admin/"),
        ("Clients", "/admin/billing/client/"),
        ("Clients: search 'garcia'", "/admin/billing/client/?q=garcia"),
        ("Clients: insurance, owing", "/admin/billing/client/?billing_type__exact=insurance&balance=owes"),
        ("Clients: by balance", "/admin/billing/client/?o=4"),
        ("Client page", f"/admin/billing/client/{busy_client.pk}/change/"),
        ("Sessions", "/admin/billing/appointment/"),
        ("Sessions: search 'garcia'", "/admin/billing/appointment/?q=garcia"),
        ("Sessions: clinician, completed",
         f"/admin/billing/appointment/?clinician__id__exact={appointment.clinician_id}&status__exact=completed"),
        ("Sessions: one month",
         f"/admin/billing/appointment/?starts_at__year={month.year}&starts_at__month={month.month}"),
        ("Session page", f"/admin/billing/appointment/{appointment.pk}/change/"),
        ("Charges", "/admin/billing/charge/"),
        ("Charges: failed", "/admin/billing/charge/?status__exact=failed"),
        ("Charges: due today", "/admin/billing/charge/?queue=due_today"),
        ("Charges: search 'garcia'", "/admin/billing/charge/?q=garcia"),
        ("Charge page", f"/admin/billing/charge/{charge.pk}/change/"),
        ("Ledger", "/admin/billing/ledgerentry/"),
        ("Ledger: search 'garcia'", "/admin/billing/ledgerentry/?q=garcia"),
        ("Review items: open", "/admin/billing/reviewitem/?status__exact=open"),
        ("Coverages: search 'garcia'", "/admin/billing/coverage/?q=garcia"),
        ("AR aging", "/admin/billing/client/aging/"),
        ("AR aging: insurance, oldest first",
         "/admin/billing/client/aging/?billing_type=insurance&order=-days_over_90"),
    ]


def signed_in_staff() -> Any:
    """A browser signed in as a superuser whose session passed the second factor, as staff sign in: the
    console answers nothing else but the sign-in pages (portal.security.StaffSessionMiddleware)."""
    from django.contrib.auth.models import User
    from django.test import Client as HttpClient
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_totp.models import TOTPDevice

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench")
    device = (TOTPDevice.objects.filter(user=user, confirmed=True).first()
              or TOTPDevice.objects.create(user=user, name="bench", confirmed=True))
    browser = HttpClient()
    browser.force_login(user)
    session = browser.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return browser


def measure(repeat: int, show_sql: int = 0, warm_up: bool = True) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from billing.models import Appointment, Practice
    from billing.services.ledger import aging_roll

    browser = signed_in_staff()
    # As the tick does once a day: AR aging's kept amounts as of the practice's today (not a page: timed apart).
    started = time.perf_counter()
    rolled = aging_roll(today=timezone.now().astimezone(Practice.current_zone()).date())
    rolled_ms = (time.perf_counter() - started) * 1000
    print(f"\n{Appointment.objects.count():,} sessions; the day's aging roll: "
          f"{f'{rolled_ms:.0f} ms' if rolled else 'already done today'}")
    print(f"{'page':36} {'queries':>7} {'median ms':>10} {'slowest query ms':>17}")
    for label, url in pages():
        if warm_up:
            browser.get(url)  # Warm up caches (content types, templates), as a running server has.
        timings, slowest = [], 0.0
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                response = browser.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}")
            slowest_query = max(queries.captured_queries, key=lambda q: float(q["time"]))
            slowest = max(slowest, float(slowest_query["time"]) * 1000)
        print(f"{label:36} {len(queries):7d} {statistics.median(timings):10.1f} {slowest:17.1f}", flush=True)
        if show_sql:
            print(f"    {slowest_query['sql'][:show_sql]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appointments", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--database", default="portal_bench")
    parser.add_argument("--no-smaller", action="store_true", help="skip the run at a tenth of the size")
    parser.add_argument("--no-warm-up", action="store_true", help="time each page's first request too")
    parser.add_argument("--show-sql", type=int, default=0, metavar="CHARS",
                        help="print each page's slowest statement, cut to CHARS characters")
    args = parser.parse_args()

    ensure_database(args.database)
    os.environ["DATABASE_URL"] = f"{SERVER}/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    seed(args.appointments)
    measure(args.repeat, args.show_sql, warm_up=not args.no_warm_up)

    if not args.no_smaller:
        # A separate process and database: Django's connection settings are fixed once set up.
        subprocess.run([sys.executable, __file__, "--appointments", str(args.appointments // 10), "--repeat",
                        str(args.repeat), "--database", f"{args.database}_small", "--no-smaller",
                        "--show-sql", str(args.show_sql), *(["--no-warm-up"] if args.no_warm_up else [])], check=True)


if __name__ == "__main__":
    main()
