"""The money rules' state machine, run longer than the suite runs it and with random seeds.

    .venv/bin/python bench/money_state_machine.py [--rounds 4] [--examples 100] [--steps 60] [--seed N]
                                                  [--no-shrink] [--without RULE ...]

The machine and its invariants are ``tests/payments/test_money_state_machine.py``'s (read its docstring);
the suite runs it derandomized with a small budget, this runs ``--rounds`` rounds of ``--examples``
examples of up to ``--steps`` steps each, each round with its own random seed (printed, so a failure can be
replayed with ``--seed``), and shrinks each failure to a minimal example (unless ``--no-shrink``). A round
stops generating at its first failure (shrinking it may turn up a few distinct ones); ``--without NAME``
leaves a rule or an invariant out, to look past a failure already known.

It uses its own PostgreSQL database (``portal_bench_money`` on ``BENCH_PG_SERVER``, by default
postgres://postgres@127.0.0.1:5432; created and migrated if missing; the machine empties the billing tables
before each example) and its own fake Stripe server. After each round it prints the round's failures, each
with its minimal example; at the end, the examples run (including those run while shrinking), the steps,
the failures found and the time taken.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from charge_run import SECRET_KEY, fake_stripe  # noqa: E402  (the bench's fake Stripe server, shared)

SERVER = os.environ.get("BENCH_PG_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE = "portal_bench_money"


def ensure_database() -> str:
    if os.environ.get("BENCH_DATABASE_URL"):  # a database given as it is (tests/test_benchmarks.py's smoke run)
        return os.environ["BENCH_DATABASE_URL"]
    import psycopg

    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE]).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"{SERVER}/{DATABASE}"


def configure_django(database_url: str, stripe_url: str) -> None:
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "portal.settings", "DATABASE_URL": database_url,
        "STRIPE_API_BASE": stripe_url, "STRIPE_SECRET_KEY": SECRET_KEY, "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
        "STRIPE_WEBHOOK_SECRET": "whsec_bench", "STRIPE_MAX_REQUESTS_PER_SECOND": "0",
        "STRIPE_MAX_NETWORK_RETRIES": "0", "EMAIL_URL": "memorymail://", "LOG_LEVEL": "ERROR",
        # The machine posts far more than a person would in a minute.
        "PORTAL_LINK_RATE_PER_MINUTE": "0",
    })
    import django

    django.setup()
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    setup_test_environment()  # the test client's host, emails in memory
    call_command("migrate", verbosity=0)


def failures_in(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in failures_in(inner)]
    return [error]


def report(round_seed: int, failure: BaseException) -> None:
    print(f"\n--- failure (seed {round_seed}) " + "-" * 60)
    if not isinstance(failure, AssertionError):  # where the portal itself raised
        print("".join(traceback.format_tb(failure.__traceback__, limit=-4)).rstrip())
    print("".join(traceback.format_exception_only(failure)).rstrip() + "\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--examples", type=int, default=100, help="examples per round")
    parser.add_argument("--steps", type=int, default=60, help="most steps per example")
    parser.add_argument("--seed", type=int, help="the first round's seed (the next rounds add 1)")
    parser.add_argument("--no-shrink", action="store_true", help="report failures as found, unshrunk")
    parser.add_argument("--without", action="append", default=[], metavar="RULE",
                        help="leave a rule or an invariant out (e.g. one whose failure is known), to look for "
                             "others; repeatable")
    args = parser.parse_args()

    database_url = ensure_database()
    with fake_stripe() as stripe_url:
        configure_django(database_url, stripe_url)
        from hypothesis import HealthCheck, Phase, seed, settings
        from hypothesis.stateful import get_state_machine_test

        from tests.conftest import FakeStripe
        from tests.payments.test_money_state_machine import PHASES, MoneyMachine, Stats

        MoneyMachine.stripe = FakeStripe(stripe_url)
        unknown = [name for name in args.without if not callable(getattr(MoneyMachine, name, None))]
        if unknown:
            raise SystemExit(f"no rule or invariant named {', '.join(unknown)}")
        # A method without hypothesis' marker is no rule or invariant: the subclass's plain methods hide them.
        machine = type("MoneyMachine", (MoneyMachine,), {name: lambda self, *_, **__: None for name in args.without})
        phases = [phase for phase in PHASES if phase != Phase.shrink or not args.no_shrink]
        run_settings = settings(max_examples=args.examples, stateful_step_count=args.steps, deadline=None,
                                database=None, derandomize=False, phases=phases,
                                suppress_health_check=list(HealthCheck))
        first_seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
        found: list[tuple[int, BaseException]] = []
        started = time.monotonic()
        for round_seed in range(first_seed, first_seed + args.rounds):
            round_started, examples, steps = time.monotonic(), Stats.examples, Stats.steps
            try:
                seed(round_seed)(get_state_machine_test(machine, settings=run_settings))()
                failures: list[BaseException] = []
            except Exception as error:  # each failure is reported below; the other rounds still run
                failures = failures_in(error)
            print(f"round seed {round_seed}: {Stats.examples - examples} examples, {Stats.steps - steps} steps, "
                  f"{len(failures)} failure(s), {time.monotonic() - round_started:.0f} s", flush=True)
            for failure in failures:
                report(round_seed, failure)
            found += [(round_seed, failure) for failure in failures]
        took = time.monotonic() - started

    print(f"\nexamples run: {Stats.examples} (including those run while shrinking)")
    print(f"steps: {Stats.steps}")
    print(f"weekly card payments: {Stats.weekly_payments}, for {Stats.weekly_sessions} charges")
    print(f"payment plans agreed: {Stats.plans}, installments paid: {Stats.installments_paid}")
    print(f"failures found: {len(found)}")
    print(f"time: {took:.0f} s")


if __name__ == "__main__":
    main()
