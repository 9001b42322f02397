"""Production settings, response headers, the client links' rate limit, and no inline script anywhere."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from billing.csv_safe import safe_cell
from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Client,
    Clinician,
    FindingKind,
    LedgerEntry,
    LedgerKind,
    Participant,
    Practice,
    ReconciliationFinding,
)
from billing.services.cards import enrollment_link_send
from integrations.ehr.keys import api_key_create
from portal.logging_filters import redact

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "STRIPE_SECRET_KEY": "sk_live_example",
    "STRIPE_PUBLISHABLE_KEY": "pk_live_example",
    "STRIPE_WEBHOOK_SECRET": "whsec_example",
    "PORTAL_BASE_URL": "https://billing.practice.example",
    "ALLOWED_HOSTS": "billing.practice.example",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "SECRET_KEY", "DEBUG"))}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_check_deploy_passes_with_production_settings_and_no_warnings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_refuses_the_demo_secrets() -> None:
    result = manage("check", "--deploy", DEBUG="false", ALLOWED_HOSTS="billing.practice.example")
    assert result.returncode != 0
    assert "portal.E001" in result.stderr and "portal.E002" in result.stderr and "portal.E003" in result.stderr


def test_production_settings_are_https_only_with_secure_cookies() -> None:
    code = ("from django.conf import settings as s; print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, "
            "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, s.X_FRAME_OPTIONS, "
            "s.SECURE_REFERRER_POLICY, s.SESSION_COOKIE_AGE)")
    result = manage("shell", "-c", code, **PRODUCTION)
    assert result.stdout.split()[-8:] == ["True", "31536000", "True", "True", "True", "DENY", "same-origin", "900"]


def test_secrets_are_read_from_files(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text(PRODUCTION["SECRET_KEY"] + "\n")
    env = {k: v for k, v in PRODUCTION.items() if k != "SECRET_KEY"}
    result = manage("check", "--deploy", "--fail-level", "WARNING", SECRET_KEY_FILE=str(key_file), **env)
    assert result.returncode == 0, result.stderr


def test_no_secret_is_committed() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    pattern = re.compile(r"sk_live_[0-9A-Za-z]{10,}|rk_live_[0-9A-Za-z]{10,}|whsec_[0-9A-Za-z]{20,}|"
                         r"-----BEGIN (?:RSA |EC )?PRIVATE KEY-----")
    found = []
    for name in tracked.splitlines():
        path = ROOT / name
        text_file = path.suffix in (".py", ".md", ".html", ".txt", ".toml", ".cfg", ".yml", ".json", ".env", "")
        if text_file and path.is_file() and pattern.search(path.read_text(errors="ignore")):
            found.append(name)
    assert found == []


@pytest.mark.django_db
def test_client_pages_carry_the_security_headers(practice: Practice, make_client: Callable[..., Client],
                                                 settings: object) -> None:
    settings.STRIPE_JS_URL = "https://js.stripe.com/v3/"  # type: ignore[attr-defined]
    settings.STRIPE_API_BASE = ""  # type: ignore[attr-defined]
    issued = enrollment_link_send(client=make_client(), now=timezone.now(), actor="test", send_email=False)
    response = HttpClient().get(issued.url.removeprefix("http://127.0.0.1:8000"))
    assert response.status_code == 200
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert policy["script-src"] == "'self' https://js.stripe.com"
    assert "https://js.stripe.com" in policy["frame-src"] and "https://hooks.stripe.com" in policy["frame-src"]
    assert policy["connect-src"].split() == ["'self'", "https://js.stripe.com", "https://api.stripe.com"]
    assert policy["frame-ancestors"] == "'none'" and policy["object-src"] == "'none'"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response["Cache-Control"]


def test_no_template_has_an_inline_script_or_handler() -> None:
    offenders = []
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        if re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text) or re.search(r"\son[a-z]+=\"", text) \
                or "javascript:" in text:
            offenders.append(str(template.relative_to(ROOT)))
    assert offenders == []


@pytest.mark.django_db
def test_guessing_client_links_is_slowed_down_with_429(practice: Practice, make_client: Callable[..., Client],
                                                       settings: object) -> None:
    settings.PORTAL_BAD_LINKS_PER_10_MINUTES = 5  # type: ignore[attr-defined]
    guesser = HttpClient(REMOTE_ADDR="203.0.113.9")
    for _ in range(5):
        assert guesser.get(f"/p/{secrets.token_urlsafe(32)}/").status_code == 404
    blocked = guesser.get(f"/p/{secrets.token_urlsafe(32)}/")
    assert blocked.status_code == 429 and int(blocked["Retry-After"]) > 0
    assert "Please wait a moment" in blocked.content.decode()
    # Someone else, with a good link, is not affected.
    issued = enrollment_link_send(client=make_client(), now=timezone.now(), actor="test", send_email=False)
    assert HttpClient(REMOTE_ADDR="198.51.100.1").get(issued.url.removeprefix("http://127.0.0.1:8000")
                                                      ).status_code == 200


@pytest.mark.django_db
def test_too_many_requests_from_one_address_get_429(practice: Practice, make_client: Callable[..., Client],
                                                    settings: object) -> None:
    settings.PORTAL_LINK_RATE_PER_MINUTE = 10  # type: ignore[attr-defined]
    issued = enrollment_link_send(client=make_client(), now=timezone.now(), actor="test", send_email=False)
    path = issued.url.removeprefix("http://127.0.0.1:8000")
    http = HttpClient(REMOTE_ADDR="203.0.113.10")
    statuses = [http.get(path).status_code for _ in range(12)]
    assert statuses[:10] == [200] * 10 and statuses[10:] == [429, 429]


@pytest.mark.parametrize(("line", "expected"), [
    ('"GET /p/AbC123xyz:1tQ9:sig/card/start/ HTTP/1.1" 200', '"GET /p/[link]/card/start/ HTTP/1.1" 200'),
    ("customer search email='maya.lindqvist@example.com'", "customer search email='[email]'"),
    ("GET /v1/customers/search?query=email%3A%27maya%40example.com%27", "GET /v1/customers/search?query=[email]%27"),
    ("card 4242 4242 4242 4242 declined", "card [number] declined"),
    ("call (555) 123-4567 or 555.123.4567 or +1 555 123 4567", "call [phone] or [phone] or [phone]"),
    ("secret pi_3Abc_secret_XyZ12", "secret [client-secret]"),
    ("Authorization: Api-Key pbp_ab12cd_s3cr3t", "Authorization: Api-Key [redacted]"),
    ("?token=abc&next=/admin/", "?token=[redacted]&next=/admin/"),
    ("billing_tick at 2026-11-27T09:00:00+00:00: due: 3", "billing_tick at 2026-11-27T09:00:00+00:00: due: 3"),
])
def test_the_log_filter_redacts_client_data(line: str, expected: str) -> None:
    assert redact(line) == expected


# --- CSV exports: a cell a spreadsheet would run as a formula is written as text -------------------------

FORMULAS = ['=HYPERLINK("http://x")', "+cmd", "@SUM(1)", "-2+3"]


def _csv_rows(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return list(csv.DictReader(io.StringIO(body.decode())))


@pytest.mark.django_db
@pytest.mark.parametrize("formula", FORMULAS)
def test_the_admin_csv_exports_write_a_formula_name_as_text_and_keep_negative_amounts_numbers(
        formula: str, practice: Practice, admin_client: HttpClient) -> None:
    person = Client.objects.create(first_name=formula, last_name=formula, billing_type=BillingType.SELF_PAY)
    LedgerEntry.objects.create(client=person, kind=LedgerKind.PAYMENT, amount_cents=-1250, actor="test",
                               occurred_on=timezone.localdate(), created_at=timezone.now())
    quoted_name = f"'{formula} {formula}"

    [aging] = _csv_rows(admin_client.get(reverse("admin:billing_ar_aging"), {"format": "csv"}))
    assert aging["Client"] == f"'{formula}, {formula}"
    assert (aging["0-30 days ($)"], aging["Total ($)"]) == ("-12.50", "-12.50")  # dollars, still a number

    finding = ReconciliationFinding.objects.create(
        kind=FindingKind.UNMATCHED_PAYMENT, key="stripe:ch_formula", week=dt.date(2026, 11, 23), client=person,
        stripe_reference=formula, expected_cents=0, actual_cents=-1250, detail=formula,
        first_found_at=timezone.now(), last_found_at=timezone.now())
    url = reverse("admin:billing_reconciliationfinding_changelist")
    whole_list = _csv_rows(admin_client.get(url, {"format": "csv"}))
    chosen = _csv_rows(admin_client.post(url, {"action": "export_csv", ACTION_CHECKBOX_NAME: [finding.pk]}))
    for [row] in (whole_list, chosen):
        assert (row["client"], row["stripe"], row["detail"]) == (quoted_name, f"'{formula}", f"'{formula}")
        assert (row["expected_dollars"], row["actual_dollars"]) == ("0.00", "-12.50")


@pytest.mark.django_db
@pytest.mark.parametrize("formula", ['=HYPERLINK("x")', "+cmd", "@SUM(1)", "-2+3"])
def test_the_api_reconciliation_csv_writes_a_formula_external_id_as_text(
        formula: str, practice: Practice, clinician: Clinician) -> None:
    person = Client.objects.create(first_name="Ana", last_name="Able", billing_type=BillingType.SELF_PAY,
                                   session_rate_cents=14000, source="ehr-one", external_id=formula)
    session = Appointment.objects.create(clinician=clinician, service_code="90837", source="ehr-one",
                                         external_id=formula, starts_at=dt.datetime(2026, 11, 26, 15, tzinfo=dt.UTC),
                                         status=AppointmentStatus.COMPLETED)
    Participant.objects.create(appointment=session, client=person)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(source='ehr-one', now=timezone.now()).key}")
    [row] = _csv_rows(api.get("/api/v1/reconciliation/", {"week": "2026-W48", "format": "csv"}))
    assert (row["kind"], row["client"], row["appointment"]) == ("unpaid_session", f"'{formula}", f"'{formula}")
    assert row["actual_cents"] == "0"


@pytest.mark.django_db
@pytest.mark.parametrize("username", ["+cmd", "-2+3", "@evil"])
def test_the_audit_trail_csv_writes_a_formula_username_as_text(username: str, practice: Practice) -> None:
    from billing.roles import AUDITOR, FRONT_DESK
    from tests.security.staff import staff_member

    person = Client.objects.create(first_name="Ana", last_name="Able")
    front = HttpClient()
    front.force_login(staff_member(username, FRONT_DESK))
    assert front.get(reverse("admin:billing_client_change", args=[person.pk])).status_code == 200
    auditor = HttpClient()
    auditor.force_login(staff_member("ines", AUDITOR))
    rows = _csv_rows(auditor.get(reverse("admin:audit_trail_csv"), {"staff": username}))
    assert rows and {row["who"] for row in rows} == {f"'{username}"}


@pytest.mark.parametrize(("cell", "written"), [
    ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'), ("+cmd", "'+cmd"), ("@SUM(1)", "'@SUM(1)"),
    ("-2+3", "'-2+3"), ("\tx", "'\tx"), ("\rx", "'\rx"), ("-", "'-"), ("-12.50", "-12.50"), ("-1250", "-1250"),
    (-1250, "-1250"), ("12.50", "12.50"), ("Ana", "Ana"), (None, ""), ("a=b", "a=b"),
])
def test_safe_cell_quotes_formulas_but_not_plain_numbers(cell: object, written: str) -> None:
    assert safe_cell(cell) == written


@pytest.mark.django_db
@pytest.mark.parametrize(("start", "end"), [("0001-01-01", "9999-12-31"), ("", "9999-12-31"), ("0001-01-01", ""),
                                            ("2026-12-01", "2026-11-01")])
def test_an_audit_export_with_dates_out_of_range_is_refused_before_the_download_starts(
        start: str, end: str, practice: Practice) -> None:
    from billing.roles import AUDITOR
    from tests.security.staff import staff_member

    Client.objects.create(first_name="Ana", last_name="Able")  # something to export
    auditor = HttpClient()
    auditor.force_login(staff_member("ines", AUDITOR))
    export = auditor.get(reverse("admin:audit_trail_csv"), {"start": start, "end": end})
    assert export.status_code == 400 and not export.streaming
    assert "nothing was exported" in export.content.decode()
    page = auditor.get(reverse("admin:audit_trail"), {"start": start, "end": end})
    assert page.status_code == 200
    assert ("Choose a date from 1900-01-01 to 2199-12-31." in page.content.decode()
            or "The end date is before the start date." in page.content.decode())
    # The widest range allowed exports.
    assert _csv_rows(auditor.get(reverse("admin:audit_trail_csv"), {"start": "1900-01-01", "end": "2199-12-31"}))


# --- No 500s: odd input in the staff console is a 4xx and changes nothing --------------------------------

@pytest.mark.django_db
@pytest.mark.parametrize("url", [
    "/admin/billing/client/?q=%00", "/admin/billing/client/?billing_type=%00", "/admin/billing/charge/?status=%00",
    "/admin/billing/charge/?q=ab%00c", "/admin/billing/appointment/?q=%00", "/admin/billing/reviewitem/?kind=%00",
    "/admin/billing/reconciliationfinding/?week=%00&format=csv", "/admin/auditlog/logentry/?q=%00",
    "/admin/audit-trail/?client=%00", "/admin/billing/client/aging/?order=%00", "/admin/billing/client/?%00=1",
])
def test_a_nul_in_an_admin_search_or_filter_is_a_400(practice: Practice, admin_client: HttpClient, url: str) -> None:
    response = admin_client.get(url)
    assert response.status_code == 400
    assert "NUL character (%00)" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("query", ["starts_at__year=99999", "starts_at__year=0", "starts_at__iso_year=-5",
                                   "starts_at__year=9999&starts_at__month=12&starts_at__day=31"])
def test_a_year_filter_past_the_calendar_is_a_400(practice: Practice, admin_client: HttpClient, query: str) -> None:
    response = admin_client.get(f"/admin/billing/appointment/?{query}")
    assert response.status_code == 400
    assert "A year in the address must be from 1900 to 2199." in response.content.decode()
    assert admin_client.get("/admin/billing/appointment/?starts_at__year=2026").status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("selected", ["abc", "\x00", "1.5"])
def test_an_admin_action_on_ids_that_are_not_ids_is_a_400_and_does_nothing(
        practice: Practice, admin_client: HttpClient, selected: str) -> None:
    from tests import factories

    charge = factories.ChargeFactory.create()
    response = admin_client.post("/admin/billing/charge/", {"action": "cancel_charge", "reason": "x", "apply": "1",
                                                            ACTION_CHECKBOX_NAME: [str(charge.pk), selected]})
    assert response.status_code == 400
    assert "not valid; nothing was done" in response.content.decode()
    assert type(charge).objects.get(pk=charge.pk).status == charge.status


@pytest.mark.django_db
def test_cleaning_up_expired_sign_in_attempts_works(practice: Practice, admin_client: HttpClient) -> None:
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.create(username="someone", failures_since_start=1, ip_address="10.0.0.1",
                                           user_agent="test", attempt_time=timezone.now())
    response = admin_client.post("/admin/axes/accessattempt/", {"action": "cleanup_expired_attempts",
                                                                ACTION_CHECKBOX_NAME: [attempt.pk]})
    assert response.status_code == 302


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/admin/billing/coverage/add/", "/admin/billing/policyacknowledgment/add/"])
@pytest.mark.parametrize("value", ["abc", "\x00", "99999999999999999999"])
def test_a_changed_client_id_in_an_admin_form_is_a_form_error(practice: Practice, admin_client: HttpClient,
                                                              url: str, value: str) -> None:
    response = admin_client.post(url, {"client": value})
    assert response.status_code == 200
    expected = "Null characters are not allowed." if value == "\x00" else "Select a valid choice."
    assert expected in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(("page", "shown"), [("99999999999999999999", "2"), ("3", "2"), ("-5", "1"), ("x", "1"),
                                             ("9" * 5000, "1")])
def test_an_ar_aging_page_past_the_end_shows_the_last_page(practice: Practice, admin_client: HttpClient, page: str,
                                                           shown: str) -> None:
    for n in range(101):  # two pages
        person = Client.objects.create(first_name=f"C{n}", last_name="Owing")
        LedgerEntry.objects.create(client=person, kind=LedgerKind.SESSION_CHARGE, amount_cents=1000 + n,
                                   actor="test", occurred_on=timezone.localdate(), created_at=timezone.now())
    response = admin_client.get(reverse("admin:billing_ar_aging"), {"page": page})
    assert response.status_code == 200
    assert str(response.context["page"]) == shown
    assert len(response.context["rows"]) == (1 if shown == "2" else 100)


@pytest.mark.django_db
@pytest.mark.parametrize("week", ["9999-W52", "1899-W52", "2200-W01"])
def test_reconciling_a_week_at_the_calendars_ends_is_refused_with_a_message(
        practice: Practice, admin_client: HttpClient, week: str) -> None:
    from billing.models import ReconciliationRun

    response = admin_client.post(reverse("admin:billing_reconciliation_run"), {"week": week})
    assert response.status_code == 200
    assert "Give an ISO week from 1900-W01 to 2199-W52." in response.content.decode()
    assert not ReconciliationRun.objects.exists()
