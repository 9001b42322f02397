"""How fast the reports are on a large practice: AR aging, the weekly reconciliation and the dashboard.

    .venv/bin/python bench/reports.py [--appointments 1000000] [--repeat 3] [--no-smaller]

Seeds a dedicated PostgreSQL database (``portal_bench_reports``; created if missing; seeded once per size,
skipped when it already holds that many sessions) with COPY through psycopg: N sessions over five years up
to today, one client each (N/20 clients of every billing type, 10 clinicians), a charge priced as the
portal prices it, its payment attempt, the ledger (charge and payment), and EOB lines for a tenth of the
insurance sessions. A few gaps are planted each week (declined cards, a wrong amount, an underpayment).

Then, in a fresh process (so the peak memory is the reports', not the seeding's), it times each report
as staff meet it and prints queries, the median time and the process's peak RSS:
AR aging (the total, the per-client page in the admin, by clinician, the CSV), the weekly reconciliation
of last week (Stripe answered by a stub gateway listing that week's charges, as ``charges_since`` would),
and the dashboard (the admin's front page). It then does the same at a tenth of the size
(``portal_bench_reports_small``): the query counts must not change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SERVER = "postgres://postgres@127.0.0.1:5432"
YEARS = 5
CLINICIANS = 10


def ensure_database(name: str) -> None:
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup(database: str) -> None:
    os.environ["DATABASE_URL"] = f"{SERVER}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


# --- Seeding ---------------------------------------------------------------------------------------------

def seed(database: str, appointment_count: int) -> None:
    from django.apps import apps
    from django.core.management import call_command
    from django.db import connection

    from billing import models as m

    call_command("migrate", verbosity=0)
    if m.Appointment.objects.count() == appointment_count:
        print(f"{database}: already seeded with {appointment_count:,} sessions.")
        return
    started = time.perf_counter()
    tables = ", ".join(model._meta.db_table for model in apps.get_app_config("billing").get_models())
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    m.Practice.objects.create(name="Bench Counseling", phone="555-0100", sender_email="billing@bench.example",
                              time_zone="America/New_York")
    m.Clinician.objects.bulk_create(m.Clinician(name=f"Clinician {i}", npi="1234567893", credentials="LCSW")
                                    for i in range(CLINICIANS))
    service = m.Service.objects.create(cpt_code="90837", description="Individual therapy", fee_cents=20_000)
    payer = m.Payer.objects.create(name="Aetna", payer_id="60054")
    m.FeeScheduleEntry.objects.create(payer=payer, service=service, allowed_cents=12_000)
    clinician_ids = list(m.Clinician.objects.order_by("pk").values_list("pk", flat=True))

    rng = random.Random(6)
    client_count = max(appointment_count // 20, 10)
    types = [rng.choice(("insurance", "insurance", "self_pay", "sliding_scale")) for _ in range(client_count)]
    price = {"insurance": 2_500, "self_pay": 14_000, "sliding_scale": 9_000}
    kind = {"insurance": "copay", "self_pay": "session_fee", "sliding_scale": "session_fee"}
    dsn = f"{SERVER}/{database}"
    with psycopg.connect(dsn) as conn:
        with conn.cursor() as cur:
            with cur.copy("COPY billing_client (id, source, external_id, created_at, updated_at, first_name, "
                          "last_name, email, phone, billing_type, session_rate_cents, active, stripe_customer_id, "
                          "stripe_link_status, card_payment_method_id, card_brand, card_last4, flagged_for_outreach, "
                          "flagged_reason) FROM STDIN") as copy:
                for i in range(client_count):
                    rate = {"self_pay": 14_000, "sliding_scale": 9_000}.get(types[i])
                    copy.write_row((i + 1, "", "", now, now, f"First{i}", f"Last{i:07d}", f"c{i}@example.com", "",
                                    types[i], rate, True, f"cus_{i}", "matched", f"pm_{i}", "visa", "4242",
                                    i % 500 == 0, "3 failed cards" if i % 500 == 0 else ""))
            with cur.copy("COPY billing_coverage (client_id, payer_id, payer_name, member_id, plan_category, "
                          "copay_cents, created_at, benefits_as_of) FROM STDIN") as copy:
                for i in range(client_count):
                    if types[i] == "insurance":
                        copy.write_row((i + 1, payer.pk, "Aetna", f"W{i:08d}", "", 2_500, now, now))
            _copy_sessions(cur, rng, appointment_count, client_count, types, price, kind, clinician_ids, now)
        conn.commit()
    with connection.cursor() as cursor:
        for table in ("billing_client", "billing_appointment", "billing_participant", "billing_charge",
                      "billing_paymentattempt", "billing_ledgerentry", "billing_insurancepayment",
                      "billing_coverage"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"COALESCE((SELECT MAX(id) FROM {table}), 1))")
        cursor.execute("VACUUM ANALYZE")
    print(f"{database}: seeded {appointment_count:,} sessions with COPY in {time.perf_counter() - started:.0f} s.")


def _copy_sessions(cur: Any, rng: random.Random, total: int, client_count: int, types: list[str],
                   price: dict[str, int], kind: dict[str, str], clinician_ids: list[int], now: dt.datetime) -> None:
    span = dt.timedelta(days=365 * YEARS)
    first = now - span
    charges: list[tuple[Any, ...]] = []
    attendees: list[int] = []
    with cur.copy("COPY billing_appointment (id, source, external_id, created_at, updated_at, clinician_id, "
                  "service_code, diagnosis_codes, starts_at, duration_minutes, status, note_signed_at, "
                  "place_of_service) FROM STDIN") as appointments:
        for i in range(total):
            pk = i + 1
            starts_at = first + span * (i / total)
            status = rng.choices(("completed", "no_show", "canceled"), weights=(92, 3, 5))[0]
            client = rng.randrange(client_count)
            appointments.write_row((pk, "", "", starts_at, starts_at, clinician_ids[i % len(clinician_ids)], "90837",
                                    '["F41.1"]', starts_at, 50, status, starts_at if status == "completed" else None,
                                    ""))
            attendees.append(client + 1)
            if status == "completed":
                charges.append((pk, client, starts_at))
    with cur.copy("COPY billing_participant (id, appointment_id, client_id) FROM STDIN") as participants:
        for pk, client_id in enumerate(attendees, start=1):
            participants.write_row((pk, pk, client_id))
    # Gaps planted every week, so the reconciliation of any week has some of each.
    declined = {n for n in range(len(charges)) if n % 97 == 0}
    wrong = {n for n in range(len(charges)) if n % 1_009 == 0}
    with cur.copy("COPY billing_charge (id, client_id, appointment_id, kind, amount_cents, insurance_cents, "
                  "deductible_applied_cents, breakdown, status, scheduled_for, attempts, last_failure_code, "
                  "payment_reference, refunded_cents, canceled_by_staff, prepaid_cents, hold_reason, created_at, "
                  "updated_at) FROM STDIN") as copy:
        for n, (appointment_id, client, starts_at) in enumerate(charges):
            amount = price[types[client]] + (500 if n in wrong else 0)
            failed = n in declined
            copy.write_row((n + 1, client + 1, appointment_id, kind[types[client]], amount, 0, 0,
                            f'[{{"label": "You owe", "amount_cents": {amount}}}]', "failed" if failed else "succeeded",
                            starts_at + dt.timedelta(days=1), 1, "card_declined" if failed else "",
                            "" if failed else f"pi_{n + 1}", 0, False, 0, "", starts_at, starts_at))
    with cur.copy("COPY billing_paymentattempt (id, charge_id, number, idempotency_key, status, amount_cents, "
                  "customer_id, payment_method_id, payment_intent_id, decline_code, failure_code, failure_message, "
                  "started_at, finished_at) FROM STDIN") as copy:
        for n, (_, client, starts_at) in enumerate(charges):
            failed = n in declined
            at = starts_at + dt.timedelta(days=1)
            copy.write_row((n + 1, n + 1, 1, f"charge-{n + 1}-1", "failed" if failed else "succeeded",
                            price[types[client]], f"cus_{client}", f"pm_{client}", f"pi_{n + 1}",
                            "generic_decline" if failed else "", "card_declined" if failed else "", "", at, at))
    with cur.copy("COPY billing_ledgerentry (client_id, kind, amount_cents, occurred_on, appointment_id, charge_id, "
                  "memo, actor, created_at) FROM STDIN") as copy:
        for n, (appointment_id, client, starts_at) in enumerate(charges):
            amount = price[types[client]] + (500 if n in wrong else 0)
            day = starts_at.date()
            copy.write_row((client + 1, "session_charge", amount, day, appointment_id, n + 1, "", "system", starts_at))
            if n not in declined:
                copy.write_row((client + 1, "payment", -amount, day + dt.timedelta(days=1), appointment_id, n + 1,
                                "", "system", starts_at))
    with cur.copy("COPY billing_insurancepayment (client_id, appointment_id, payer_name, allowed_cents, paid_cents, "
                  "patient_responsibility_cents, paid_on, reference, source, created_at, updated_at) "
                  "FROM STDIN") as copy:
        for n, (appointment_id, client, starts_at) in enumerate(charges):
            if types[client] != "insurance" or n % 10:
                continue
            paid = 8_000 if n % 130 == 0 else 9_500
            copy.write_row((client + 1, appointment_id, "Aetna", 12_000, paid, 2_500,
                            starts_at.date() + dt.timedelta(days=20), f"EFT-{n}", "bench", starts_at, starts_at))


# --- Measuring -------------------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StubGateway:
    """Stripe's charges for the week, as ``charges_since`` returns them: every portal payment of the week
    plus two taken outside the portal. (A real Stripe account pages through them 100 at a time.)"""

    def __init__(self, week_start: dt.datetime, week_end: dt.datetime) -> None:
        self.start, self.end = week_start, week_end
        self.listed: list[Any] | None = None

    def charges_since(self, created_after: int) -> list[Any]:
        # Listed once: the time Stripe takes to answer is Stripe's, not the report's.
        if self.listed is None:
            self.listed = self._list()
        return self.listed

    def _list(self) -> list[Any]:
        from billing.models import PaymentAttempt
        from integrations.stripe.gateway import StripeCharge

        attempts = PaymentAttempt.objects.filter(status="succeeded", started_at__gte=self.start,
                                                 started_at__lt=self.end).values_list(
            "payment_intent_id", "customer_id", "amount_cents", "started_at")
        found = [StripeCharge(f"ch_{pi}", pi, customer, amount, 0, "succeeded", int(at.timestamp()), {})
                 for pi, customer, amount, at in attempts.iterator()]
        middle = int((self.start + (self.end - self.start) / 2).timestamp())
        found += [StripeCharge(f"ch_outside_{n}", f"pi_outside_{n}", "", 4_500, 0, "succeeded", middle, {})
                  for n in range(2)]
        return found


def timed(label: str, repeat: int, run: Callable[[], Any]) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run()  # warm up (templates, content types, PostgreSQL's buffers), as a running server is
    timings, count = [], 0
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
        count = len(queries)
    median = statistics.median(timings)
    flag = "" if median <= 2.0 else "  OVER 2 s"
    print(f"{label:44} {count:7d} {median * 1000:10.0f} {peak_rss_mb():12.0f}{flag}")


def _second_factor_passed(browser: Any, user: Any) -> None:
    """Staff pages need the second factor (portal.security): mark the session as having passed it."""
    try:
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice
    except ImportError:  # no second factor configured
        return
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or TOTPDevice.objects.create(
        user=user, name="bench", confirmed=True)
    session = browser.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


def measure(repeat: int) -> None:
    from unittest import mock

    from django.contrib.auth.models import User
    from django.test import Client as HttpClient
    from django.utils import timezone

    from billing.models import Appointment, Clinician, LedgerEntry, Practice
    from billing.selectors import ar_aging_summary
    from billing.services.reconciliation import reconciliation_run, week_bounds, week_monday

    user = User.objects.filter(username="bench").first() or User.objects.create_superuser("bench")
    browser = HttpClient()
    browser.force_login(user)
    _second_factor_passed(browser, user)
    zone = Practice.load().zone
    today = timezone.now().astimezone(zone).date()
    clinician = Clinician.objects.order_by("pk").first()
    assert clinician is not None
    monday = week_monday(today) - dt.timedelta(days=7)
    start, end = week_bounds(monday, zone)
    in_week = Appointment.objects.filter(starts_at__gte=start, starts_at__lt=end).count()
    print(f"\n{Appointment.objects.count():,} sessions, {LedgerEntry.objects.count():,} ledger entries; "
          f"{in_week:,} sessions in {monday:%G-W%V}")
    print(f"{'report':44} {'queries':>7} {'median ms':>10} {'peak RSS MB':>12}")

    def page(url: str) -> Callable[[], Any]:
        def get() -> Any:
            response = browser.get(url)
            if response.status_code != 200:
                raise SystemExit(f"{url} answered {response.status_code}")
            return response
        return get

    timed("AR aging: practice total (selector)", repeat, lambda: ar_aging_summary(today))
    timed("AR aging: admin page (total + 100 clients)", repeat, page("/admin/billing/client/aging/"))
    timed("AR aging: admin page, one clinician", repeat,
          page(f"/admin/billing/client/aging/?clinician={clinician.pk}"))
    timed("AR aging: admin page, insurance, oldest first", repeat,
          page("/admin/billing/client/aging/?billing_type=insurance&order=-days_over_90"))
    timed("AR aging: CSV of every client", 1, page("/admin/billing/client/aging/?format=csv"))
    with mock.patch("integrations.stripe.gateway.get_gateway", return_value=StubGateway(start, end)):
        timed(f"Reconciliation of {monday:%G-W%V} (run + re-run)", repeat,
              lambda: reconciliation_run(week=monday, now=timezone.now(), trigger="staff", actor="bench"))
    timed("Findings list in the admin", repeat, page("/admin/billing/reconciliationfinding/?found=yes"))
    timed("Dashboard (Today page)", repeat, page("/admin/"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--appointments", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--database", default="portal_bench_reports")
    parser.add_argument("--no-smaller", action="store_true", help="skip the run at a tenth of the size")
    parser.add_argument("--step", choices=["all", "seed", "measure"], default="all", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.step == "all":
        ensure_database(args.database)
        for step in ("seed", "measure"):
            subprocess.run([sys.executable, __file__, "--appointments", str(args.appointments), "--repeat",
                            str(args.repeat), "--database", args.database, "--step", step], check=True)
        if not args.no_smaller:
            subprocess.run([sys.executable, __file__, "--appointments", str(args.appointments // 10), "--repeat",
                            str(args.repeat), "--database", f"{args.database}_small", "--no-smaller"], check=True)
        return
    django_setup(args.database)
    if args.step == "seed":
        seed(args.database, args.appointments)
    else:
        measure(args.repeat)


if __name__ == "__main__":
    main()
