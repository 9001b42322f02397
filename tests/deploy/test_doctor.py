"""``manage.py doctor``: a deployment's mistakes said in plain sentences, with a non-zero exit code."""

from __future__ import annotations

import datetime as dt
import socket
import threading
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from billing.models import Practice, TickHeartbeat
from billing.services.tick import heartbeat_record

pytestmark = pytest.mark.django_db


@pytest.fixture
def smtp_server() -> Iterator[int]:
    """A mail server that answers every command and delivers nothing (the doctor only opens a connection)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as stream:
                stream.write(b"220 mail.example ESMTP\r\n")
                stream.flush()
                for line in stream:
                    stream.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 OK\r\n")
                    stream.flush()
                    if line.upper().startswith(b"QUIT"):
                        break

    threading.Thread(target=serve, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def production(settings: Any, practice: Practice, smtp_server: int, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> Any:
    """Settings as a real install sets them (all from the environment in production)."""
    monkeypatch.setenv("DATABASE_URL", "postgres://portal@db.riverbend.example:5432/portal")  # read as set
    settings.DEBUG = False
    settings.SECRET_KEY = "k3y-" + "".join(chr(33 + (i * 7) % 90) for i in range(60))
    settings.ALLOWED_HOSTS = ["billing.riverbend.example"]
    settings.PORTAL_BASE_URL = "https://billing.riverbend.example"
    settings.STRIPE_SECRET_KEY = "sk_live_51Abc"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_live_51Abc"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_live123"
    settings.STRIPE_API_BASE = ""
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", smtp_server
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = ""
    settings.DEFAULT_FROM_EMAIL = "billing@riverbend.example"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache"}}
    (tmp_path / "admin").mkdir()
    settings.STATIC_ROOT = tmp_path
    heartbeat_record(as_of=timezone.now(), seconds=0.3)
    return settings


def doctor(*args: str) -> tuple[int, list[str]]:
    out = StringIO()
    try:
        call_command("doctor", *args, stdout=out)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, out.getvalue().splitlines()


def problems(lines: list[str]) -> list[str]:
    return [line.removeprefix("PROBLEM  ") for line in lines if line.startswith("PROBLEM")]


def test_a_deployment_set_up_as_the_readme_says_has_no_problems(production: Any) -> None:
    code, lines = doctor()
    assert (code, problems(lines)) == (0, [])
    assert lines[-1] == "No problems found."
    assert "ok       The SMTP server 127.0.0.1:" in "\n".join(lines)
    assert any(line.startswith("ok       billing_tick last ran 0 s ago") for line in lines)


def test_the_demo_settings_are_named_one_by_one_and_the_exit_code_says_so(settings: Any, practice: Practice) -> None:
    settings.DEBUG = True
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
    settings.STRIPE_SECRET_KEY, settings.STRIPE_PUBLISHABLE_KEY = "sk_test_demo", "pk_test_demo"
    settings.STRIPE_WEBHOOK_SECRET = ""
    settings.SECRET_KEY = settings.INSECURE_DEV_SECRET_KEY
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
    settings.PORTAL_BASE_URL = "http://127.0.0.1:8000"
    settings.STRIPE_API_BASE = ""
    code, lines = doctor()
    found = problems(lines)
    assert code == 1
    assert lines[-1] == f"{len(found)} problems to fix."
    expected = [
        "DEBUG is on:", "SECRET_KEY is the demo's published key", "PORTAL_BASE_URL is http://127.0.0.1:8000",
        "ALLOWED_HOSTS names only this machine", "STRIPE_SECRET_KEY holds the demo's placeholder",
        "STRIPE_PUBLISHABLE_KEY holds the demo's placeholder", "STRIPE_WEBHOOK_SECRET is not set",
        "Emails are printed to the console, not sent", "billing_tick has never run",
    ]
    assert [start for start, sentence in zip(expected, found, strict=False) if sentence.startswith(start)] == expected
    assert len(found) == len(expected), found
    # No secret is ever printed, only what kind it is.
    assert settings.INSECURE_DEV_SECRET_KEY not in "\n".join(lines)


def test_stripe_test_keys_mixed_modes_and_a_stripe_address_override_are_problems(production: Any) -> None:
    production.STRIPE_SECRET_KEY = "sk_test_51Abc"
    production.STRIPE_API_BASE = "http://127.0.0.1:8420"
    code, lines = doctor()
    assert code == 1
    assert problems(lines) == [
        "STRIPE_SECRET_KEY is a test-mode key: no real money moves. Use the live key.",
        "The secret and publishable keys are from different modes (one live, one test): cards saved on the page "
        "could not be charged.",
        "STRIPE_API_BASE sends Stripe calls to http://127.0.0.1:8420, not to Stripe: unset it.",
    ]
    assert "sk_test_51Abc" not in "\n".join(lines)


def test_an_unreachable_smtp_server_a_utc_practice_and_a_stopped_tick_are_problems(production: Any) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        production.EMAIL_PORT = closed.getsockname()[1]  # nothing listens there
    Practice.objects.update(time_zone="UTC")
    TickHeartbeat.objects.update(finished_at=timezone.now() - dt.timedelta(hours=2))
    code, lines = doctor()
    found = problems(lines)
    assert code == 1
    assert found[0].startswith(f"The SMTP server 127.0.0.1:{production.EMAIL_PORT} cannot be reached")
    assert found[1].startswith("The practice's time zone is UTC")
    assert found[2].startswith("billing_tick last ran 7200 s ago")
    assert len(found) == 3
    assert doctor("--skip-smtp")[0] == 1


def test_a_production_without_database_url_is_told_it_runs_on_the_demo_default(
        production: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    code, lines = doctor("--skip-smtp")
    assert code == 1
    assert problems(lines) == ["DATABASE_URL is not set: the portal uses the demo's default database "
                               "(postgres://postgres@127.0.0.1:5432/portal_demo). Set it to the practice's PostgreSQL."]


def test_doctor_runs_where_the_portal_refuses_to_start_so_it_can_say_why() -> None:
    from portal.checks import RUNS_UNCONFIGURED

    assert "doctor" in RUNS_UNCONFIGURED
