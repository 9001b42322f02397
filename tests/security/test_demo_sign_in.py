"""A person can sign in to the demo admin: password, then the demo's published code or recovery code;
and that published key can never guard a real practice unnoticed."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from billing.models import Practice
from devtools.demo import ADMIN_PASSWORD, ADMIN_USERNAME, ensure_admin
from devtools.demo_staff import DEMO_RECOVERY_CODES, demo_code, ensure_demo_staff
from portal.checks import no_demo_second_factor

pytestmark = pytest.mark.django_db


def test_the_demo_logins_sign_in_with_the_printed_code_or_a_recovery_code(practice: Practice) -> None:
    ensure_admin()
    shown = ensure_demo_staff(admin_username=ADMIN_USERNAME, password=ADMIN_PASSWORD)
    assert set(shown.usernames) == {"admin", "frontdesk", "billing", "auditor"}
    for username, code in (("admin", demo_code()), ("frontdesk", DEMO_RECOVERY_CODES[0])):
        http = HttpClient()
        assert http.post("/admin/login/", {"username": username, "password": ADMIN_PASSWORD}).status_code == 302
        assert http.post("/admin/otp/verify/", {"code": code})["Location"] == "/admin/"
        assert http.get("/admin/").status_code == 200
    # Starting the demo again renews the recovery codes (the demo's are printed, and may have been used).
    ensure_demo_staff(admin_username=ADMIN_USERNAME, password=ADMIN_PASSWORD)
    http = HttpClient()
    http.post("/admin/login/", {"username": "frontdesk", "password": ADMIN_PASSWORD})
    assert http.post("/admin/otp/verify/", {"code": DEMO_RECOVERY_CODES[0]}).status_code == 302
    assert User.objects.get(username="frontdesk").groups.get().name == "Front desk"


def test_production_refuses_the_demo_key(practice: Practice, settings: object) -> None:
    ensure_admin()
    settings.DEBUG = False  # type: ignore[attr-defined]
    assert no_demo_second_factor(None, databases=["default"]) == []
    ensure_demo_staff(admin_username=ADMIN_USERNAME, password=ADMIN_PASSWORD)
    assert [e.id for e in no_demo_second_factor(None, databases=["default"])] == ["portal.E004"]
