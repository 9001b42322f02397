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
