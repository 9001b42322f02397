"""System checks that stop a production deployment from starting without its secrets."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=True)
def production_secrets(app_configs: Any, **kwargs: Any) -> list[Error]:
    if settings.DEBUG:
        return []
    errors = []
    if settings.SECRET_KEY == settings.INSECURE_DEV_SECRET_KEY:
        errors.append(Error("SECRET_KEY is the demo key.", hint="Set SECRET_KEY or SECRET_KEY_FILE.",
                            id="portal.E001"))
    for name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET"):
        if not getattr(settings, name):
            errors.append(Error(f"{name} is not set.", hint=f"Set {name} or {name}_FILE.", id="portal.E002"))
    if not settings.PORTAL_BASE_URL.startswith("https://"):
        errors.append(Error("PORTAL_BASE_URL must be an https:// address in production.",
                            hint="Emailed links carry client tokens; they must travel over HTTPS.",
                            id="portal.E003"))
    return errors


@register(Tags.database)
def no_demo_second_factor(app_configs: Any, **kwargs: Any) -> list[Error]:
    """The demo's published authenticator key must never guard a real practice (runs with ``migrate``)."""
    if settings.DEBUG or not kwargs.get("databases"):
        return []
    from django.db import DatabaseError
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from portal.security_demo import DEMO_TOTP_KEY_HEX

    try:
        found = TOTPDevice.objects.filter(key=DEMO_TOTP_KEY_HEX).exists()
    except DatabaseError:  # not migrated yet
        return []
    if found:
        return [Error("A staff account uses the demo's published authenticator key.",
                      hint="Reset that account's second factor (admin → Users → Reset second factor).",
                      id="portal.E004")]
    return []
