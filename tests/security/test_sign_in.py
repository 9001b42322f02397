"""Staff sign-in: password, then a second factor; enrollment, recovery codes, lockout, inactivity, resets."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import Client as HttpClient
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from billing.models import Practice
from billing.roles import ADMINISTRATOR, FRONT_DESK
from portal.security_otp import recovery_codes_issue
from tests.security.staff import staff_member

PASSWORD = "a-long-test-password-42"
pytestmark = pytest.mark.django_db


def current_code(device: TOTPDevice) -> str:
    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token():06d}"


def sign_in_with_password(http: HttpClient, username: str, password: str = PASSWORD) -> Any:
    return http.post("/admin/login/?next=/admin/", {"username": username, "password": password})


@pytest.fixture
def staff(practice: Practice, settings: object) -> User:
    # django-otp also slows down guessing: after a wrong code the device refuses codes for 1s, 2s, 4s...
    # Tests type a wrong code and then the right one at once, so that delay is off here.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # type: ignore[attr-defined]
    settings.OTP_STATIC_THROTTLE_FACTOR = 0  # type: ignore[attr-defined]
    return staff_member("dana", FRONT_DESK)


def test_staff_without_a_device_are_sent_to_enroll_and_reach_no_other_admin_page(staff: User) -> None:
    http = HttpClient()
    assert sign_in_with_password(http, "dana").status_code == 302
    for path in ("/admin/", "/admin/billing/client/", "/admin/billing/charge/", "/admin/password_change/",
                 "/admin/audit-trail/", "/admin/otp/recovery-codes/"):
        response = http.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/otp/enroll/"), path
    # Even posting to an admin page is turned away, not served.
    assert http.post("/admin/billing/client/add/", {"first_name": "X"}).status_code == 302

    page = http.get("/admin/otp/enroll/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<svg" in html and 'id="otp-secret"' in html
    device = TOTPDevice.objects.get(user=staff, confirmed=False)
    shown_secret = re.search(r'id="otp-secret">([A-Z2-7 ]+)<', html)
    assert shown_secret and len(shown_secret.group(1).replace(" ", "")) >= 32

    assert http.post("/admin/otp/enroll/", {"code": "000000"}).status_code == 200  # wrong: asked again
    done = http.post("/admin/otp/enroll/", {"code": current_code(device), "next": "/admin/"})
    assert done.status_code == 200
    codes = re.findall(r"<li><code>([a-z0-9-]+)</code></li>", done.content.decode())
    assert len(codes) == 10 and len(set(codes)) == 10
    # Kept as HMACs, never as the codes themselves.
    stored = set(StaticToken.objects.filter(device__user=staff).values_list("token", flat=True))
    assert len(stored) == 10 and not stored & set(codes) and not stored & {c.replace("-", "") for c in codes}
    assert TOTPDevice.objects.get(user=staff).confirmed
    assert http.get("/admin/").status_code == 200


def test_a_staff_member_with_a_device_enters_its_code_after_the_password(staff: User) -> None:
    device = TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    http = HttpClient()
    sign_in_with_password(http, "dana")
    response = http.get("/admin/billing/client/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/otp/verify/")
    # Enrolling a second phone with the password alone is not possible.
    assert http.get("/admin/otp/enroll/")["Location"].startswith("/admin/otp/verify/")
    assert TOTPDevice.objects.filter(user=staff).count() == 1

    wrong = http.post("/admin/otp/verify/", {"code": "123456", "next": "/admin/billing/client/"})
    assert wrong.status_code == 200 and "not right" in wrong.content.decode()
    right = http.post("/admin/otp/verify/", {"code": current_code(device), "next": "/admin/billing/client/"})
    assert (right.status_code, right["Location"]) == (302, "/admin/billing/client/")
    assert http.get("/admin/billing/client/").status_code == 200


def test_a_recovery_code_signs_in_once(staff: User) -> None:
    TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    codes = recovery_codes_issue(staff)
    http = HttpClient()
    sign_in_with_password(http, "dana")
    assert http.post("/admin/otp/verify/", {"code": codes[0].upper()})["Location"] == "/admin/"
    assert http.get("/admin/").status_code == 200

    again = HttpClient()
    sign_in_with_password(again, "dana")
    assert http.post("/admin/logout/").status_code in (200, 302)
    assert again.post("/admin/otp/verify/", {"code": codes[0]}).status_code == 200  # used up
    assert again.get("/admin/").status_code == 302
    assert again.post("/admin/otp/verify/", {"code": codes[1]}).status_code == 302


def test_the_sixth_attempt_is_refused_even_with_the_right_password_until_an_administrator_unlocks(
        staff: User, admin_client: HttpClient) -> None:
    http = HttpClient()
    for attempt in range(1, 6):
        response = sign_in_with_password(http, "dana", "wrong-password")
        assert "_auth_user_id" not in http.session, attempt
        assert response.status_code in (200, 429), attempt
    sixth = sign_in_with_password(http, "dana", PASSWORD)
    assert sixth.status_code == 429
    assert "This account is locked" in sixth.content.decode()
    assert "_auth_user_id" not in http.session
    # Another address changes nothing: the lockout is per username.
    elsewhere = HttpClient(REMOTE_ADDR="10.9.9.9")
    assert sign_in_with_password(elsewhere, "dana").status_code == 429

    listed = admin_client.get("/admin/auth/user/")
    assert listed.status_code == 200
    unlock = admin_client.post("/admin/auth/user/", {"action": "unlock_sign_in", "_selected_action": [staff.pk]})
    assert unlock.status_code == 302
    assert sign_in_with_password(HttpClient(), "dana").status_code == 302


def test_five_wrong_codes_lock_the_account_too(staff: User) -> None:
    TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    http = HttpClient()
    sign_in_with_password(http, "dana")
    for _ in range(5):
        http.post("/admin/otp/verify/", {"code": "999999"})
    assert "_auth_user_id" not in http.session  # signed out when locked
    assert sign_in_with_password(HttpClient(), "dana").status_code == 429


def test_staff_are_signed_out_after_fifteen_idle_minutes(staff: User, settings: object) -> None:
    start = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False) as clock:
        http = HttpClient()
        http.force_login(staff)
        assert http.get("/admin/").status_code == 200
        clock.shift(dt.timedelta(minutes=14))
        assert http.get("/admin/").status_code == 200  # activity moves the deadline
        clock.shift(dt.timedelta(minutes=14))
        assert http.get("/admin/billing/client/").status_code == 200
        clock.shift(dt.timedelta(minutes=16))
        response = http.get("/admin/billing/client/")
        assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
        assert "_auth_user_id" not in http.session
        assert http.get("/admin/").status_code == 302


def test_the_idle_limit_is_configurable(staff: User, settings: object) -> None:
    settings.STAFF_IDLE_MINUTES = 5  # type: ignore[attr-defined]
    start = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)
    with time_machine.travel(start, tick=False) as clock:
        http = HttpClient()
        http.force_login(staff)
        assert http.get("/admin/").status_code == 200
        clock.shift(dt.timedelta(minutes=6))
        assert http.get("/admin/").status_code == 302


def test_an_administrator_resets_a_lost_device_and_the_next_sign_in_enrolls_anew(staff: User) -> None:
    boss = staff_member("boss", ADMINISTRATOR)
    admin_http = HttpClient()
    admin_http.force_login(boss)
    staff_http = HttpClient()
    staff_http.force_login(staff)  # signed in, second factor passed
    assert staff_http.get("/admin/").status_code == 200
    recovery_codes_issue(staff)

    response = admin_http.post("/admin/auth/user/", {"action": "reset_second_factor", "_selected_action": [staff.pk]})
    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(user=staff).exists()
    assert not StaticToken.objects.filter(device__user=staff).exists()
    # The session that passed with the old device no longer counts.
    assert staff_http.get("/admin/")["Location"].startswith("/admin/otp/enroll/")


def test_only_administrators_reset_devices_or_unlock(staff: User) -> None:
    http = HttpClient()
    http.force_login(staff_member("frontdesk2", FRONT_DESK))
    assert http.get("/admin/auth/user/").status_code == 403
    TOTPDevice.objects.create(user=staff, name="phone", confirmed=True)
    http.post("/admin/auth/user/", {"action": "reset_second_factor", "_selected_action": [staff.pk]})
    assert TOTPDevice.objects.filter(user=staff).exists()


def test_weak_passwords_are_refused() -> None:
    for weak in ("password1234", "short-1", "123456789012", "dana-reyes-1"):
        with pytest.raises(ValidationError):
            validate_password(weak, User(username="dana-reyes-1", first_name="Dana", last_name="Reyes"))
    validate_password("correct horse battery staple 9")
