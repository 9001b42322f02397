"""``manage.py doctor``: what is wrong with this deployment, in plain sentences.

Each check prints one line, ``ok`` or ``PROBLEM``, saying what it found and, for a problem, what to do. The
exit code is 1 when any problem was found, so a deploy script or a monitor can run it. It reads the settings
(the environment), the database, the tick's heartbeat and the task queue, and opens a connection to the SMTP
server (it sends nothing). It never prints a secret, only whether it is set and what kind it is.
"""

from __future__ import annotations

import os
import smtplib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from billing.models import Practice
from portal.checks import DEMO_STRIPE_VALUES
from portal.health import health_check

Finding = tuple[bool, str]  # (is a problem, the sentence)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1", "testserver"}
NOT_SENT = {
    "django.core.mail.backends.console.EmailBackend": "printed to the console",
    "django.core.mail.backends.filebased.EmailBackend": "written to files",
    "django.core.mail.backends.locmem.EmailBackend": "kept in memory",
    "django.core.mail.backends.dummy.EmailBackend": "thrown away",
}


def ok(sentence: str) -> list[Finding]:
    return [(False, sentence)]


def problem(sentence: str) -> list[Finding]:
    return [(True, sentence)]


def check_debug() -> list[Finding]:
    if settings.DEBUG:
        return problem("DEBUG is on: error pages show code and settings to anyone, and the demo's shortcuts "
                       "are allowed. Set DEBUG=false.")
    return ok("DEBUG is off.")


def check_secret_key() -> list[Finding]:
    if settings.SECRET_KEY == settings.INSECURE_DEV_SECRET_KEY:
        return problem("SECRET_KEY is the demo's published key: anyone could forge sessions and client links. "
                       "Set a long random SECRET_KEY (or SECRET_KEY_FILE).")
    if len(settings.SECRET_KEY) < 50 or len(set(settings.SECRET_KEY)) < 5:
        return problem("SECRET_KEY is short or repetitive: use at least 50 random characters.")
    return ok("SECRET_KEY is set and long.")


def check_hosts() -> list[Finding]:
    hosts = list(settings.ALLOWED_HOSTS)
    base = urlparse(settings.PORTAL_BASE_URL)
    findings: list[Finding] = []
    if base.scheme != "https":
        findings += problem(f"PORTAL_BASE_URL is {settings.PORTAL_BASE_URL}: client links in emails must use "
                            "https://. Set it to the portal's public address.")
    if "*" in hosts:
        findings += problem("ALLOWED_HOSTS accepts any host ('*'): name the portal's own host name.")
    elif not [h for h in hosts if h not in LOCAL_HOSTS]:
        findings += problem("ALLOWED_HOSTS names only this machine: set it to the portal's public host name.")
    elif base.hostname and not any(base.hostname == h or (h.startswith(".") and base.hostname.endswith(h))
                                   for h in hosts):
        findings += problem(f"ALLOWED_HOSTS ({', '.join(hosts)}) does not include {base.hostname}, the host of "
                            "PORTAL_BASE_URL: every request there would be refused.")
    return findings or ok(f"PORTAL_BASE_URL is {settings.PORTAL_BASE_URL} and ALLOWED_HOSTS includes its host.")


def _mode(key: str) -> str:
    for prefix, mode in (("sk_live_", "live"), ("pk_live_", "live"), ("rk_live_", "live"),
                         ("sk_test_", "test"), ("pk_test_", "test"), ("rk_test_", "test")):
        if key.startswith(prefix):
            return mode
    return "unknown"


def check_stripe() -> list[Finding]:
    secret, publishable = settings.STRIPE_SECRET_KEY, settings.STRIPE_PUBLISHABLE_KEY
    findings: list[Finding] = []
    for name, value in (("STRIPE_SECRET_KEY", secret), ("STRIPE_PUBLISHABLE_KEY", publishable)):
        if not value:
            findings += problem(f"{name} is not set: cards cannot be saved or charged. Copy it from the Stripe "
                                "dashboard (Developers → API keys).")
        elif value in DEMO_STRIPE_VALUES:
            findings += problem(f"{name} holds the demo's placeholder: set the practice's own key.")
        elif _mode(value) == "test":
            findings += problem(f"{name} is a test-mode key: no real money moves. Use the live key.")
        elif _mode(value) == "unknown":
            findings += problem(f"{name} does not look like a Stripe key (sk_live_/rk_live_ or pk_live_).")
    if secret and publishable and {_mode(secret), _mode(publishable)} == {"live", "test"}:
        findings += problem("The secret and publishable keys are from different modes (one live, one test): "
                            "cards saved on the page could not be charged.")
    if settings.STRIPE_API_BASE:
        findings += problem(f"STRIPE_API_BASE sends Stripe calls to {settings.STRIPE_API_BASE}, not to Stripe: "
                            "unset it.")
    return findings or ok("Stripe's live secret and publishable keys are set.")


def check_webhook_secret() -> list[Finding]:
    secret = settings.STRIPE_WEBHOOK_SECRET
    if not secret:
        return problem("STRIPE_WEBHOOK_SECRET is not set: Stripe's payment events would be refused. Add the "
                       f"endpoint {settings.PORTAL_BASE_URL}/stripe/webhook/ in the Stripe dashboard and set its "
                       "signing secret.")
    if secret in DEMO_STRIPE_VALUES or not secret.startswith("whsec_"):
        return problem("STRIPE_WEBHOOK_SECRET is not a Stripe signing secret (whsec_...): copy it from the "
                       "webhook endpoint in the Stripe dashboard.")
    return ok(f"STRIPE_WEBHOOK_SECRET is set (Stripe must send events to {settings.PORTAL_BASE_URL}/stripe/webhook/).")


def check_email() -> list[Finding]:
    backend = settings.EMAIL_BACKEND
    if backend in NOT_SENT:
        return problem(f"Emails are {NOT_SENT[backend]}, not sent: clients get no notices, receipts or links. "
                       "Set EMAIL_URL to the practice's SMTP server (e.g. smtp+tls://user:password@host:587) and "
                       "unset EMAIL_FILE_PATH.")
    findings: list[Finding] = []
    if settings.DEFAULT_FROM_EMAIL.endswith("@practice.example"):
        findings += problem(f"DEFAULT_FROM_EMAIL is {settings.DEFAULT_FROM_EMAIL}, a placeholder: set the "
                            "practice's own sender address.")
    if backend != "django.core.mail.backends.smtp.EmailBackend":
        return findings or ok(f"Emails go through {backend}.")
    host, port = settings.EMAIL_HOST, int(settings.EMAIL_PORT)
    try:
        smtp_class = smtplib.SMTP_SSL if settings.EMAIL_USE_SSL else smtplib.SMTP
        with smtp_class(host, port, timeout=10) as smtp:
            smtp.ehlo()
            if settings.EMAIL_USE_TLS:
                smtp.starttls()
                smtp.ehlo()
            if settings.EMAIL_HOST_USER:
                smtp.login(settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD)
    except smtplib.SMTPAuthenticationError:
        return [*findings, *problem(f"The SMTP server {host}:{port} refused the user name and password in "
                                    "EMAIL_URL.")]
    except (OSError, smtplib.SMTPException) as exc:
        return [*findings, *problem(f"The SMTP server {host}:{port} cannot be reached ({type(exc).__name__}: "
                                    f"{exc}): emails will wait in the outbox until it can.")]
    return findings or ok(f"The SMTP server {host}:{port} answers" + (
        " and accepts the sign-in." if settings.EMAIL_HOST_USER else "."))


def check_database() -> list[Finding]:
    if not os.environ.get("DATABASE_URL") and not settings.DEBUG:
        return problem(f"DATABASE_URL is not set: the portal uses the demo's default database "
                       f"({settings.DATABASE_URL_DEFAULT}). Set it to the practice's PostgreSQL.")
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0].split()[0]
        pending = MigrationExecutor(connection).migration_plan(
            MigrationExecutor(connection).loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return problem(f"The database cannot be reached ({type(exc).__name__}): check DATABASE_URL and that "
                       "PostgreSQL runs.")
    if pending:
        return problem(f"{len(pending)} database migrations are not applied: run manage.py migrate.")
    return ok(f"The database answers (PostgreSQL {version}) and is migrated.")


def check_time_zone() -> list[Finding]:
    try:
        practice = Practice.objects.filter(pk=Practice.SINGLETON_ID).first()
    except DatabaseError:
        return []  # said by the database check
    if practice is None:
        return problem("The practice is not set up: open admin → Practice and billing policy, and set its name, "
                       "address and time zone.")
    if practice.time_zone in ("", "UTC", "Etc/UTC"):
        return problem(f"The practice's time zone is {practice.time_zone or 'not set'}: due dates and charge times "
                       "follow it. Set it in admin → Practice and billing policy.")
    return ok(f"The practice's time zone is {practice.time_zone}.")


def check_tick_and_queue() -> list[Finding]:
    health = health_check(now=timezone.now())
    if not health.database:
        return []  # said by the database check
    findings: list[Finding] = [(True, sentence) for sentence in health.problems]
    if findings:
        return findings
    age = health.age(health.tick_finished_at)
    return ok(f"billing_tick last ran {age:.0f} s ago; {health.queued or 0} tasks wait in the queue.")


def check_cache() -> list[Finding]:
    backend = settings.CACHES["default"]["BACKEND"]
    if backend.endswith("LocMemCache") and not settings.DEBUG:
        return problem("The cache is in each process's memory (CACHE_URL unset): with several web processes the "
                       "sign-in lockout and rate limits count per process. Set CACHE_URL (redis:// or a "
                       "database cache).")
    return ok(f"The cache is {backend.rsplit('.', 1)[-1]}.")


def check_static() -> list[Finding]:
    root = settings.STATIC_ROOT
    if not settings.DEBUG and not (root and (root / "admin").is_dir()):
        return problem(f"The static files are not collected in {root}: run manage.py collectstatic.")
    return ok(f"The static files are in {root}.")


CHECKS: list[Callable[[], list[Finding]]] = [
    check_debug, check_secret_key, check_hosts, check_stripe, check_webhook_secret, check_email, check_database,
    check_time_zone, check_tick_and_queue, check_cache, check_static,
]


class Command(BaseCommand):
    help = "Say what is wrong with this deployment, in plain sentences; exit code 1 if anything is."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--skip-smtp", action="store_true", help="Do not open a connection to the SMTP server.")

    def handle(self, *args: Any, **options: Any) -> None:
        findings: list[Finding] = []
        for check in CHECKS:
            if check is check_email and options["skip_smtp"]:
                continue
            try:
                findings += check()
            except Exception as exc:  # a check that breaks is itself a finding, and the others still run
                findings.append((True, f"{check.__name__} could not run ({type(exc).__name__}: {exc})."))
        problems = [sentence for is_problem, sentence in findings if is_problem]
        for is_problem, sentence in findings:
            self.stdout.write(f"{'PROBLEM' if is_problem else 'ok     '}  {sentence}")
        if problems:
            self.stdout.write(f"\n{len(problems)} problem{'s' if len(problems) != 1 else ''} to fix.")
            raise SystemExit(1)
        self.stdout.write("\nNo problems found.")
