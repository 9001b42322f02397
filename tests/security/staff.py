"""Signing staff in, in tests: with the second factor passed (as the whole suite's ``force_login`` does, see
tests/conftest.py) or deliberately without it."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group, User
from django.test import Client as HttpClient
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

# Django's own force_login, kept before tests/conftest.py makes it pass the second factor too.
plain_force_login = HttpClient.force_login


def second_factor_pass(http: HttpClient, user: Any) -> TOTPDevice:
    """Mark the client's session as having passed the second factor, with a confirmed test device."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first() or TOTPDevice.objects.create(
        user=user, name="test device", confirmed=True)
    session = http.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device


def force_login_with_second_factor(self: HttpClient, user: Any, backend: str | None = None) -> None:
    plain_force_login(self, user, backend)
    if getattr(user, "is_staff", False):
        second_factor_pass(self, user)


def login_without_second_factor(http: HttpClient, user: Any) -> None:
    """A session that passed the password step only."""
    plain_force_login(http, user)


def staff_member(username: str, role: str | None = None, password: str = "a-long-test-password-42") -> User:
    user = User.objects.create_user(username, f"{username}@practice.example", password, is_staff=True)
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user
