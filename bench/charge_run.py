"""How much the portal adds to each card charge, against bare stripe-python calls to the same server.

    .venv/bin/python bench/charge_run.py [--charges 500] [--rounds 5] [--profile]
                                         [--measure-limit [--limit-charges 5000] [--rate 20]]

Charging is bound by Stripe (25 requests/s in test mode, 100 live), so the portal's own cost per charge
must vanish beside it. Target: ``billing_tick`` takes at most 1.3x the time of the same number of bare
off-session PaymentIntent calls made with the same parallelism.

What it does, in one run:
1. Its own PostgreSQL database (``portal_bench_charges``, or ``BENCH_DATABASE``: created if missing,
   migrated, emptied) and its own fake Stripe server (``python -m devtools.fakestripe --port 0``).
2. Not timed: N self-pay clients, each with a Stripe customer and a 4242 card made directly through the
   fake server's API; one completed session each, billed through the portal's services (as the events
   batch bills new completed sessions, ``new_sessions_price``), then marked due.
3. Timed: ``tick_run(now=...)`` in this process, which charges the N due charges exactly as the task
   cluster does (claim, attempt, one PaymentIntent each from ``STRIPE_PARALLEL_CHARGES`` threads, 4 by
   default, settle, ledger, receipt email).
4. The fake server is wiped (``DELETE /_config/everything``) and the same N customers and cards are made
   again, so the bare loop starts from the same store size the tick did (localstripe scans its whole
   store on each call, so a bigger store is a slower server). Timed: N bare
   ``payment_intents.create(off_session=True, confirm=True)`` calls with the same parameters, the same
   ``StripeClient`` options and their own idempotency keys, from as many threads as the tick uses, each
   taking the next card as soon as its call returns.
5. Steps 2 to 4 again, ``--rounds`` times in all (5 by default, after an untimed round of 20 charges, as a
   task cluster that has run before has its modules imported and templates compiled): on a machine of two
   cores, where the fake server, PostgreSQL and the portal share the CPU, one pair of runs can differ by a
   third from the next. The figures printed are the round with the median ratio, after every round's
   ratio. This process's CPU time during each run is printed too: the tick's less the bare loop's is the
   portal's own work per charge (the machine's speed moves it too).

The gateway's request limit (``STRIPE_MAX_REQUESTS_PER_SECOND``, 20/s with test keys) is set to 0 for
the timed runs: it deliberately protects Stripe, so with it both sides would only measure the limit.
``--measure-limit`` then seeds ``--limit-charges`` due charges afresh and runs the tick at the limit
(``--rate``, the gateway's default for test keys unless given) against a stub Stripe in its own process
(``serve_stub``: every PaymentIntent succeeds after ``--stub-latency``, 100 ms; localstripe slows with its
store and answers 5,000 cards slower than the limit), through the same gateway and stripe-python: it
prints the share of the limit the charging step sustained and this process's resident memory every 10
seconds (current and peak, from /proc).
Emails go to Django's in-memory backend (rendering and building them is counted; no SMTP), and
DEBUG is off, as in production. The load average is printed with the figures: on a shared machine,
compare figures from one run only.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_PG_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE = os.environ.get("BENCH_DATABASE", "portal_bench_charges")
SECRET_KEY = "sk_test_bench"
TARGET = 1.3
WARM_UP = 20  # due charges of the untimed round before the timed ones
DEFAULT_TEST_RATE = 20.0  # the gateway's default limit with test keys (portal/settings.py)
CARD = "4242424242424242"
# Session completed Monday 10:00 New York; the tick runs the next day, after the 24-hour delay.
COMPLETED_AT = dt.datetime(2026, 11, 23, 16, 0, tzinfo=dt.UTC)
TICK_AT = COMPLETED_AT + dt.timedelta(hours=25)


def ensure_database() -> str:
    if os.environ.get("BENCH_DATABASE_URL"):  # a database given as it is (tests/test_benchmarks.py's smoke run)
        return os.environ["BENCH_DATABASE_URL"]
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"{SERVER}/{DATABASE}"


@contextmanager
def fake_stripe() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        process = subprocess.Popen([sys.executable, "-m", "devtools.fakestripe", "--port", "0", "--port-file",
                                    str(port_file)], cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("The fake Stripe server did not start (is localstripe installed? "
                                     "pip install -e '.[dev]').")
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}"
            _wait_until_it_answers(url)
            yield url
        finally:
            process.terminate()
            process.wait(10)


def _wait_until_it_answers(url: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(f"{url}/v1/customers", headers={"Authorization": f"Bearer {SECRET_KEY}"}, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def configure_django(database_url: str, stripe_url: str) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": database_url, "DEBUG": "false",
        "STRIPE_API_BASE": stripe_url, "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
        "STRIPE_WEBHOOK_SECRET": "whsec_bench", "STRIPE_MAX_REQUESTS_PER_SECOND": "0",
        "EMAIL_URL": "memorymail://", "LOG_LEVEL": "WARNING", "SECURE_SSL_REDIRECT": "false",
        # DEBUG off starts only with a production's settings (portal/checks.py): the bench's own.
        "SECRET_KEY": "bench-only-0123456789abcdefghijklmnopqrstuvwxyz-0123456789",
        "PORTAL_BASE_URL": "https://portal.example",
        "STRIPE_PARALLEL_CHARGES": os.environ.get("STRIPE_PARALLEL_CHARGES", "4"),
    })
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def make_cards(stripe_url: str, count: int) -> list[tuple[str, str]]:
    """(customer id, payment method id) pairs, made straight through the fake server's API (not timed;
    8 at a time)."""
    with httpx.Client(base_url=stripe_url, headers={"Authorization": f"Bearer {SECRET_KEY}"}, timeout=60,
                      limits=httpx.Limits(max_connections=8)) as http:
        def make(n: int) -> tuple[str, str]:
            customer = http.post("/v1/customers", data={"email": f"bench{n}@example.com", "name": f"Bench {n}"})
            method = http.post("/v1/payment_methods", data={
                "type": "card", "card[number]": CARD, "card[exp_month]": "12", "card[exp_year]": "2030",
                "card[cvc]": "123"})
            customer_id, method_id = customer.json()["id"], method.json()["id"]
            http.post(f"/v1/payment_methods/{method_id}/attach", data={"customer": customer_id}).raise_for_status()
            return customer_id, method_id

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(make, range(count)))


def wipe(stripe_url: str) -> None:
    httpx.delete(f"{stripe_url}/_config/everything", timeout=30).raise_for_status()


def stripe_requests(stripe_url: str) -> int:
    return len(httpx.get(f"{stripe_url}/_config/requests", timeout=30).json())


def seed(count: int, cards: list[tuple[str, str]]) -> None:
    """N self-pay clients with a card on file, one completed session each, billed and marked due."""
    from django.core.management import call_command

    from billing.audit.bulk import bulk_audit
    from billing.audit.chain import chain_seal
    from billing.models import (
        Appointment,
        AppointmentStatus,
        BillingType,
        Charge,
        Client,
        Clinician,
        Participant,
        Practice,
        Service,
    )
    from billing.services.schedule import new_session_charges_write, new_sessions_price
    from billing.services.tick import charges_mark_due, tick_run

    call_command("migrate", interactive=False, verbosity=0)
    call_command("flush", interactive=False, verbosity=0)
    Practice.objects.create(name="Bench Counseling", phone="(555) 555-0100", sender_email="billing@bench.example",
                            time_zone="America/New_York")
    Service.objects.create(cpt_code="90837", description="Individual therapy, 60 minutes", fee_cents=20000)
    clinician = Clinician.objects.create(name="Dana Reyes", npi="1234567893", credentials="LCSW")
    clients = Client.objects.bulk_create(
        Client(first_name=f"Client{n}", last_name="Bench", email=f"bench{n}@example.com",
               billing_type=BillingType.SELF_PAY, session_rate_cents=14000 + n % 7 * 500,
               stripe_customer_id=customer, stripe_link_status="matched", card_payment_method_id=method,
               card_brand="visa", card_last4=CARD[-4:], card_exp_month=12, card_exp_year=2030)
        for n, (customer, method) in enumerate(cards))
    # The sessions billed as the events batch bills new completed ones (``new_sessions_price``): the
    # same charges, ledger lines and audit entries as one by one, in a few statements for thousands.
    appointments = Appointment.objects.bulk_create(
        Appointment(clinician=clinician, service_code="90837", diagnosis_codes=["F41.1"],
                    starts_at=COMPLETED_AT - dt.timedelta(hours=1, minutes=n % 60),
                    status=AppointmentStatus.COMPLETED) for n in range(len(clients)))
    Participant.objects.bulk_create(Participant(appointment=a, client=c) for a, c in zip(appointments, clients,
                                                                                         strict=True))
    with Practice.pinned() as practice:
        billing = new_sessions_price(sessions=[(a, [c]) for a, c in zip(appointments, clients, strict=True)],
                                     practice=practice, now=COMPLETED_AT, actor="bench")
        new_session_charges_write(billing, now=COMPLETED_AT, audit=bulk_audit([Charge]))
    # Everything a tick would do about the seed itself (sealing the audit chain over the new rows, emails)
    # is done now, as of the completions, so the timed tick does only the charging's work.
    tick_run(now=COMPLETED_AT)
    marked = charges_mark_due(now=TICK_AT)
    if marked != count:
        raise SystemExit(f"Expected {count} due charges, found {marked}.")
    chain_seal(now=TICK_AT)  # the audit entries of marking them due


@contextmanager
def stripe_call_clock() -> Iterator[list[float]]:
    """Time spent inside the gateway's off-session payment call (waiting on Stripe plus stripe-python)."""
    from integrations.stripe.gateway import StripeGateway

    spent: list[float] = []
    original = StripeGateway.payment_off_session

    def timed(self: StripeGateway, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    StripeGateway.payment_off_session = timed  # type: ignore[method-assign]
    try:
        yield spent
    finally:
        StripeGateway.payment_off_session = original  # type: ignore[method-assign]


@contextmanager
def query_counter() -> Iterator[list[int]]:
    from django.db import connection

    count = [0]

    def counting(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        count[0] += 1
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counting):
        yield count


@contextmanager
def step_clock() -> Iterator[dict[str, float]]:
    """Wall time of each billing_tick step."""
    from billing.services import tick

    spent: dict[str, float] = {}
    original = list(tick.TICK_STEPS)

    def timed(name: str, step: Callable[..., int]) -> Callable[..., int]:
        def run(**kwargs: Any) -> int:
            start = time.perf_counter()
            try:
                return step(**kwargs)
            finally:
                spent[name] = time.perf_counter() - start
        return run

    tick.TICK_STEPS[:] = [(name, timed(name, step)) for name, step in original]
    try:
        yield spent
    finally:
        tick.TICK_STEPS[:] = original


def run_tick(profile: bool) -> tuple[float, dict[str, int], float, int, dict[str, float], str]:
    from billing.services.tick import tick_run

    profiler = cProfile.Profile() if profile else None
    with stripe_call_clock() as spent, query_counter() as queries, step_clock() as steps:
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        done = tick_run(now=TICK_AT)
        if profiler:
            profiler.disable()
        elapsed = time.perf_counter() - start
    report = ""
    if profiler:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(25)
        report = out.getvalue()
    return elapsed, done, sum(spent), queries[0], steps, report


def bare_loop(stripe_url: str, cards: list[tuple[str, str]]) -> float:
    """The same PaymentIntent calls with nothing around them: stripe-python as the gateway configures it."""
    import stripe
    from django.conf import settings

    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_url},
                                 max_network_retries=settings.STRIPE_MAX_NETWORK_RETRIES,
                                 http_client=stripe.HTTPXClient(timeout=settings.STRIPE_TIMEOUT_SECONDS,
                                                                  allow_sync_methods=True))
    def call(n: int) -> None:
        customer, method = cards[n]
        params: Any = {"amount": 14000 + n % 7 * 500, "currency": "usd", "customer": customer,
                       "payment_method": method, "off_session": True, "confirm": True,
                       "metadata": {"portal_charge": str(n)}}
        intent = client.v1.payment_intents.create(params=params, options={"idempotency_key": f"bare-{n}"})
        if intent.status != "succeeded":
            raise SystemExit(f"bare call {n} ended {intent.status}")

    # As many calls at once as the tick makes (STRIPE_PARALLEL_CHARGES threads), each thread taking the
    # next card as soon as its call returns: like with like.
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=settings.STRIPE_PARALLEL_CHARGES) as pool:
        list(pool.map(call, range(len(cards))))
    return time.perf_counter() - start


@dataclass
class Round:
    tick_seconds: float
    bare_seconds: float
    tick_cpu: float  # this process's CPU seconds (user and system) during the tick: all its threads
    bare_cpu: float
    done: dict[str, int]
    in_stripe: float
    queries: int
    steps: dict[str, float]
    tick_requests: int
    bare_requests: int
    report: str

    @property
    def ratio(self) -> float:
        return self.tick_seconds / self.bare_seconds


def _cpu() -> float:
    used = os.times()
    return used.user + used.system


def one_round(stripe_url: str, count: int, profile: bool) -> Round:
    """Seed, then the tick; then the same server wiped and the same cards made again, then the bare loop."""
    wipe(stripe_url)
    seed(count, make_cards(stripe_url, count))
    before, cpu = stripe_requests(stripe_url), _cpu()
    tick_seconds, done, in_stripe, queries, steps, report = run_tick(profile)
    tick_cpu = _cpu() - cpu
    check_outcome(count)
    tick_requests = stripe_requests(stripe_url) - before

    wipe(stripe_url)
    cards = make_cards(stripe_url, count)
    before, cpu = stripe_requests(stripe_url), _cpu()
    bare_seconds = bare_loop(stripe_url, cards)
    bare_cpu = _cpu() - cpu
    bare_requests = stripe_requests(stripe_url) - before
    return Round(tick_seconds, bare_seconds, tick_cpu, bare_cpu, done, in_stripe, queries, steps, tick_requests,
                 bare_requests, report)


def check_outcome(count: int) -> None:
    from billing.models import Charge, ChargeStatus, PaymentAttempt

    paid = Charge.objects.filter(status=ChargeStatus.SUCCEEDED).count()
    attempts = PaymentAttempt.objects.count()
    if paid != count or attempts != count:
        raise SystemExit(f"The tick paid {paid} of {count} charges with {attempts} attempts.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5,
                        help="tick-then-bare rounds; the figures are the round with the median ratio")
    parser.add_argument("--profile", action="store_true",
                        help="profile the first round's tick with cProfile and print it")
    parser.add_argument("--measure-limit", action="store_true",
                        help="also run the tick at the gateway's request limit over --limit-charges charges")
    parser.add_argument("--limit-charges", type=int, default=5_000)
    parser.add_argument("--rate", type=float, default=DEFAULT_TEST_RATE,
                        help=f"the request limit for --measure-limit (default {DEFAULT_TEST_RATE:g}/s, test keys)")
    parser.add_argument("--stub-latency", type=float, default=STUB_LATENCY,
                        help="seconds the stub Stripe of --measure-limit takes per PaymentIntent")
    parser.add_argument("--serve-stub", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub, args.stub_latency)
        return
    count = args.charges
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    database_url = ensure_database()
    rounds: list[Round] = []
    with fake_stripe() as stripe_url:
        configure_django(database_url, stripe_url)
        # Untimed: the process's first tick imports and compiles what a running task cluster already has.
        one_round(stripe_url, min(WARM_UP, count), profile=False)
        for number in range(1, args.rounds + 1):
            print(f"Round {number} of {args.rounds}: seeding {count} due charges (PostgreSQL {DATABASE}, fake "
                  f"Stripe at {stripe_url}) ...", flush=True)
            rounds.append(one_round(stripe_url, count, args.profile and number == 1))
            print(f"  tick {rounds[-1].tick_seconds:.2f} s, bare loop {rounds[-1].bare_seconds:.2f} s: "
                  f"{rounds[-1].ratio:.2f}x", flush=True)

    limited = None
    if args.measure_limit:
        with stub_stripe(args.stub_latency) as stub_url:
            limited = measure_limited(stub_url, args.limit_charges, args.rate)

    middle = sorted(rounds, key=lambda r: r.ratio)[len(rounds) // 2]
    tick_seconds, bare_seconds, ratio = middle.tick_seconds, middle.bare_seconds, middle.ratio
    done, in_stripe, queries, steps = middle.done, middle.in_stripe, middle.queries, middle.steps
    tick_requests, bare_requests = middle.tick_requests, middle.bare_requests
    threads = int(os.environ["STRIPE_PARALLEL_CHARGES"])
    per_request = 1 / DEFAULT_TEST_RATE
    # At the limit each request waits for its slot unless the work since the last one took longer; the
    # gateway's limiter banks no credit for slow charges, so this is a lower bound (--measure-limit runs it).
    estimate = tick_requests * max(per_request, tick_seconds / max(tick_requests, 1))
    print(f"\nThe median of {len(rounds)} rounds (ratios: {', '.join(f'{r.ratio:.2f}x' for r in rounds)}), each a tick "
          "then a bare loop.")
    print("STRIPE_MAX_REQUESTS_PER_SECOND=0 for both timed runs (no request limit: it exists to protect "
          "Stripe, and\nwould make both sides measure only the limit). Same server, same store size at the "
          "start of each batch.\n")
    print(f"  billing_tick ({count} due charges): {tick_seconds:7.2f} s  {count / tick_seconds:6.1f} charges/s"
          f"  ({tick_requests} Stripe requests; tick steps: {done})")
    for name, seconds in steps.items():
        if seconds >= 0.005:
            print(f"    step {name + ':':<28}{seconds:7.2f} s")
    print(f"    Stripe calls, summed over {threads} thread(s): {in_stripe:.2f} s ({in_stripe / count * 1000:.2f} ms "
          f"each); {queries / count:.1f} SQL queries per charge")
    print(f"  bare stripe-python loop:          {bare_seconds:7.2f} s  {count / bare_seconds:6.1f} calls/s"
          f"  ({bare_requests} Stripe requests)")
    print(f"  CPU of this process: the tick {middle.tick_cpu:.2f} s, the bare loop {middle.bare_cpu:.2f} s: "
          f"the portal's own work {(middle.tick_cpu - middle.bare_cpu) / count * 1000:.2f} ms per charge "
          "(its database's apart)")
    verdict = "meets" if ratio <= TARGET else "MISSES"
    print(f"  ratio tick / bare:                {ratio:7.2f}x  ({verdict} the {TARGET}x target)")
    bound = "the limit" if per_request * tick_requests >= tick_seconds else "the portal's own work"
    print(f"  at the default limit ({DEFAULT_TEST_RATE:g}/s, test keys): at least {estimate:.1f} s for this tick, "
          f"bounded by {bound}; the bare loop at that limit: {bare_requests * per_request:.1f} s")
    if limited is not None:
        seconds, charging, requests, samples = limited
        print(f"\n  at the limit of {args.rate:g} requests/s, {args.limit_charges:,} due charges (stub Stripe "
              f"answering in {args.stub_latency * 1000:.0f} ms): the tick {seconds:.1f} s, its charging step "
              f"{charging:.1f} s for {requests:,} Stripe requests: {requests / charging:.2f} requests/s = "
              f"{requests / charging / args.rate:.1%} of the limit (target >= 95%)")
        print("    time    payment calls   calls/s in the interval   RSS MiB   peak RSS MiB")
        last_t, last_n = 0.0, 0
        for t, n, rss, peak in samples:
            interval = (n - last_n) / (t - last_t) if t > last_t else 0.0
            print(f"    {t:6.1f} s {n:10,}      {interval:10.2f}               {rss / 1024:7.1f}   {peak / 1024:7.1f}")
            last_t, last_n = t, n
    print(f"  load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")
    if rounds[0].report:
        print("\n" + rounds[0].report)


STUB_LATENCY = 0.1  # seconds the stub takes per PaymentIntent, about Stripe's own in test mode


def serve_stub(port_file: Path, latency: float) -> None:
    """A stand-in for Stripe that answers every off-session PaymentIntent as succeeded after ``latency``
    seconds, keeps nothing but a count, and so answers as fast at the 5,000th charge as at the first (for
    ``--measure-limit``: localstripe scans its whole store on each call, and at 5,000 cards on a shared
    machine it answers in 0.6 to 1.6 s, slower than the limit). Run in its own process."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.startswith("/_config/requests"):
                self._answer(200, [0] * count[0])
            else:
                self._answer(200, {"object": "list", "data": [], "has_more": False})

        def do_DELETE(self) -> None:
            self._answer(200, {})

        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            if not self.path.startswith("/v1/payment_intents"):
                self._answer(404, {"error": {"type": "invalid_request_error", "message": "not in the stub"}})
                return
            time.sleep(latency)
            with lock:
                count[0] += 1
                n = count[0]
            self._answer(200, {
                "id": f"pi_stub{n}", "object": "payment_intent", "status": "succeeded",
                "amount": int(form["amount"][0]), "currency": "usd", "customer": form["customer"][0],
                "payment_method": form["payment_method"][0], "client_secret": f"pi_stub{n}_secret",
                "last_payment_error": None, "latest_charge": f"ch_stub{n}",
                "metadata": {"portal_charge": form.get("metadata[portal_charge]", [""])[0]}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port_file.write_text(str(server.server_address[1]))
    server.serve_forever()


@contextmanager
def stub_stripe(latency: float) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        port_file = Path(tmp) / "port"
        process = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(port_file), "--stub-latency",
                                    str(latency)], cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while not (port_file.exists() and port_file.read_text()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("The stub Stripe server did not start.")
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port_file.read_text()}"
        finally:
            process.terminate()
            process.wait(10)


def _rss_kib() -> tuple[int, int]:
    """This process's resident memory now and at its peak (KiB), from /proc."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def measure_limited(stripe_url: str, count: int, rate: float
                    ) -> tuple[float, float, int, list[tuple[float, int, int, int]]]:
    """The tick again, from a fresh seed of ``count`` charges, at ``rate`` Stripe requests a second (the
    gateway's limit), against the stub Stripe at ``stripe_url``. Returns its time, the time of its charging
    step, its Stripe requests, and samples taken every 10 s (time, payment calls made so far, RSS, peak RSS)."""
    import threading

    from django.conf import settings

    from integrations.stripe.gateway import get_gateway

    seed(count, [(f"cus_stub{n}", f"pm_stub{n}") for n in range(count)])
    settings.STRIPE_MAX_REQUESTS_PER_SECOND = rate
    settings.STRIPE_API_BASE = stripe_url
    get_gateway.cache_clear()
    from billing.services.tick import tick_run

    samples: list[tuple[float, int, int, int]] = []
    stop = threading.Event()
    before = stripe_requests(stripe_url)
    with stripe_call_clock() as calls, step_clock() as steps:
        start = time.perf_counter()

        def sample() -> None:
            while not stop.wait(10):
                samples.append((time.perf_counter() - start, len(calls), *_rss_kib()))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        tick_run(now=TICK_AT)
        elapsed = time.perf_counter() - start
        stop.set()
        sampler.join()
        samples.append((elapsed, len(calls), *_rss_kib()))
    check_outcome(count)
    return elapsed, steps["payment_attempts"], stripe_requests(stripe_url) - before, samples


if __name__ == "__main__":
    main()
