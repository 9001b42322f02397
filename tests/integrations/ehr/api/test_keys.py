"""API keys: created by command or admin and shown once, stored hashed, revocable."""

from __future__ import annotations

import hashlib
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client as BrowserClient
from rest_framework.test import APIClient

from integrations.ehr.models import ApiKey

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_the_key_once_and_stores_its_hash() -> None:
    out = StringIO()
    call_command("create_api_key", "--source", "simplepractice", stdout=out, stderr=StringIO())
    key = out.getvalue().strip()
    api_key = ApiKey.objects.get()
    assert key.startswith(f"pbp_{api_key.prefix}_")
    assert api_key.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert key not in str(ApiKey.objects.values().get())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert client.get("/api/v1/clients/").status_code == 200
    assert not api_key.user.is_active and not api_key.user.has_usable_password()


def test_a_source_name_is_checked() -> None:
    with pytest.raises(CommandError):
        call_command("create_api_key", "--source", "Simple Practice!", stdout=StringIO(), stderr=StringIO())


def test_staff_create_a_key_in_the_admin_and_see_it_once() -> None:
    admin = User.objects.create_superuser("boss", "boss@example.com", "a-long-password-123")
    browser = BrowserClient()
    browser.force_login(admin)
    response = browser.post("/admin/ehr/apikey/add/", {"source": "jane", "name": "sync"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "copy it now" in str(m)]
    assert len(shown) == 1
    key = next(word for word in shown[0].split() if word.startswith("pbp_"))
    api_key = ApiKey.objects.get()
    assert api_key.source == "jane"
    assert api_key.key_hash == hashlib.sha256(key.encode()).hexdigest()
    page = browser.get(f"/admin/ehr/apikey/{api_key.pk}/change/")
    assert key not in page.content.decode()
    browser.post("/admin/ehr/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]})
    api_key.refresh_from_db()
    assert api_key.revoked_at is not None
