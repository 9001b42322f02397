"""`manage.py create_staff`: the first administrator of a real install, and staff with a role."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client as HttpClient
from django_otp.plugins.otp_totp.models import TOTPDevice

from billing.models import Practice
from billing.roles import ADMINISTRATOR, AUDITOR, BILLING_MANAGER, FRONT_DESK

pytestmark = pytest.mark.django_db
STRONG = "walnut-harbor-lantern-91"


def run(*args: str, **options: Any) -> str:
    out = io.StringIO()
    call_command("create_staff", *args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


def roles(username: str) -> list[str]:
    return list(User.objects.get(username=username).groups.values_list("name", flat=True))


def test_the_first_administrator_from_flags_signs_in_and_is_sent_to_enroll_a_second_factor(
        practice: Practice, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text(STRONG + "\n")
    out = run("--no-input", "--username", "ana", "--email", "ana@riverbend.example", "--password-file",
              str(secret))  # no --role: the first account is an administrator
    assert "Created 'ana' with the role Administrator." in out
    assert "they will enroll their second factor" in out and "recovery codes" in out
    ana = User.objects.get(username="ana")
    assert (ana.is_staff, ana.is_superuser, ana.email, roles("ana")) == (
        True, False, "ana@riverbend.example", [ADMINISTRATOR])
    assert ana.check_password(STRONG) and not TOTPDevice.objects.filter(user=ana).exists()

    http = HttpClient()
    assert http.post("/admin/login/?next=/admin/", {"username": "ana", "password": STRONG}).status_code == 302
    assert http.get("/admin/")["Location"].startswith("/admin/otp/enroll/")


@pytest.mark.parametrize(("flag", "role"), [("front-desk", FRONT_DESK), ("billing-manager", BILLING_MANAGER),
                                            ("auditor", AUDITOR), ("administrator", ADMINISTRATOR)])
def test_staff_with_each_role_from_the_environment(practice: Practice, monkeypatch: pytest.MonkeyPatch,
                                                   flag: str, role: str) -> None:
    monkeypatch.setenv("STAFF_PASSWORD", STRONG)
    run("--no-input", "--username", "first", "--role", "administrator")
    run("--no-input", "--username", "bo", "--role", flag)
    assert roles("bo") == [role] and User.objects.get(username="bo").is_staff


@pytest.mark.parametrize(("password", "message"), [
    ("short-1", "too short"), ("password1234", "too common"), ("849302174659", "entirely numeric"),
    ("ana.riverbend", "too similar"),
])
def test_a_weak_password_is_refused_and_nothing_is_created(practice: Practice, monkeypatch: pytest.MonkeyPatch,
                                                           password: str, message: str) -> None:
    monkeypatch.setenv("STAFF_PASSWORD", password)
    with pytest.raises(CommandError, match=message):
        run("--no-input", "--username", "ana.riverbend", "--email", "ana@riverbend.example")
    assert not User.objects.filter(username="ana.riverbend").exists()


def test_bad_details_are_refused_with_what_to_do(practice: Practice, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAFF_PASSWORD", STRONG)
    run("--no-input", "--username", "ana")
    with pytest.raises(CommandError, match="A user named 'ANA' already exists"):
        run("--no-input", "--username", "ANA", "--role", "auditor")
    with pytest.raises(CommandError, match="Give --role"):  # only the first account defaults to administrator
        run("--no-input", "--username", "bo")
    with pytest.raises(CommandError, match="'not-an-email' is not an email address"):
        run("--no-input", "--username", "bo", "--role", "auditor", "--email", "not-an-email")
    with pytest.raises(CommandError, match="portal's own account"):
        run("--no-input", "--username", "system", "--role", "auditor")
    monkeypatch.delenv("STAFF_PASSWORD")
    with pytest.raises(CommandError, match="--password-file or the STAFF_PASSWORD"):
        run("--no-input", "--username", "bo", "--role", "auditor")
    with pytest.raises(CommandError, match="Cannot read the password file"):
        run("--no-input", "--username", "bo", "--role", "auditor", "--password-file", "/nonexistent/file")
    assert list(User.objects.filter(is_staff=True).values_list("username", flat=True)) == ["ana"]


def test_interactively_it_asks_and_asks_again_for_a_weak_or_mistyped_password(
        practice: Practice, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["ana", "ana@riverbend.example"])
    secrets = iter(["password1234", "password1234",  # too common: asked again
                    STRONG, STRONG + "x",  # typed differently: asked again
                    STRONG, STRONG])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(secrets))
    err = io.StringIO()
    out = io.StringIO()
    call_command("create_staff", stdout=out, stderr=err)
    assert "No staff account yet: this creates the first administrator." in out.getvalue()
    assert "This password is too common." in err.getvalue() and "The two passwords differ." in err.getvalue()
    assert roles("ana") == [ADMINISTRATOR] and User.objects.get(username="ana").check_password(STRONG)

    answers = iter(["bo", "", "front-desk"])
    secrets = iter(["123"] * 6)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(secrets))
    with pytest.raises(CommandError, match="No acceptable password given; nothing was created"):
        call_command("create_staff", stdout=io.StringIO(), stderr=io.StringIO())
    assert not User.objects.filter(username="bo").exists()
