"""The demo's staff logins and their second factor, so a person can sign in to the demo admin.

Demo only. Every demo login gets an authenticator device with one fixed, published secret and the same
fixed recovery codes, renewed each time the demo starts. With DEBUG off, ``manage.py migrate`` (and
``check --database default``) fail with portal.E004 if that key is on the database, and ``demo_otp_code``
refuses to run. Sign in with the password, then either the 6-digit code from ``python manage.py
demo_otp_code`` (or from an authenticator app given DEMO_TOTP_SECRET), or one of DEMO_RECOVERY_CODES.
"""

from __future__ import annotations

from base64 import b32encode
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from billing.roles import AUDITOR, BILLING_MANAGER, FRONT_DESK
from portal.security_otp import recovery_codes_issue

# Published on purpose: it protects nothing but the demo's fake practice.
DEMO_TOTP_KEY_HEX = "64656d6f2d6f6e6c792d6e6f742d612d736563726574"  # b"demo-only-not-a-secret"
DEMO_TOTP_SECRET = b32encode(bytes.fromhex(DEMO_TOTP_KEY_HEX)).decode().rstrip("=")
DEMO_DEVICE_NAME = "Demo authenticator (demo only)"
DEMO_RECOVERY_CODES = ["demo-1111-aaaa", "demo-2222-bbbb", "demo-3333-cccc", "demo-4444-dddd", "demo-5555-eeee"]
# One login per role next to the demo's administrator ("admin"), with the same password.
DEMO_ROLE_LOGINS = {"frontdesk": FRONT_DESK, "billing": BILLING_MANAGER, "auditor": AUDITOR}


@dataclass(frozen=True)
class DemoSecondFactor:
    usernames: list[str]
    secret: str
    recovery_codes: list[str]


def ensure_demo_staff(*, admin_username: str, password: str) -> DemoSecondFactor:
    """Role logins (created if missing) and, for them and the administrator, the demo's device and codes."""
    user_model = get_user_model()
    for username, role in DEMO_ROLE_LOGINS.items():
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"is_staff": True, "email": f"{username}@example.org"})
        if created:
            user.set_password(password)
            user.save()
            user.groups.add(Group.objects.get(name=role))
    names = [admin_username, *DEMO_ROLE_LOGINS]
    for user in user_model.objects.filter(username__in=names):
        TOTPDevice.objects.update_or_create(user=user, name=DEMO_DEVICE_NAME,
                                            defaults={"key": DEMO_TOTP_KEY_HEX, "confirmed": True})
        recovery_codes_issue(user, list(DEMO_RECOVERY_CODES))
    return DemoSecondFactor(usernames=names, secret=DEMO_TOTP_SECRET, recovery_codes=list(DEMO_RECOVERY_CODES))


def demo_code() -> str:
    """The demo authenticator's current 6-digit code."""
    return f"{TOTP(bytes.fromhex(DEMO_TOTP_KEY_HEX)).token():06d}"


def demo_sign_in_hint() -> str:
    """What the demo's banner says about the second sign-in step."""
    return (f"Second step:  the code from `python manage.py demo_otp_code` (now {demo_code()}), or add the key "
            f"{DEMO_TOTP_SECRET} to an authenticator app, or a recovery code: {', '.join(DEMO_RECOVERY_CODES[:2])}\n"
            f"  Other roles:  {', '.join(DEMO_ROLE_LOGINS)} (same password and second step)")
