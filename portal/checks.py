"""System checks that stop a production deployment from starting without its secrets (at start, and
under ``check --deploy``)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError
from django_otp.plugins.otp_totp.models import TOTPDevice

# The demo's placeholder Stripe values (portal/settings.py): never a real practice's.
DEMO_STRIPE_VALUES = {"sk_test_demo", "pk_test_demo", "whsec_demo"}
# Commands that must run on a machine being set up, before its secrets are there (an image build).
# ``doctor`` too: it is what says, in plain sentences, what is missing.
RUNS_UNCONFIGURED = {"check", "collectstatic", "help", "version", "--help", "--version", "makemigrations", "doctor"}


class UnsafeStart(ImproperlyConfigured):
    """Production (DEBUG off) was started without its secrets, or with the demo's."""


def refuse_unsafe_start(argv: list[str] | None = None) -> None:
    """Called as the portal starts (PortalConfig.ready): with DEBUG off, missing or demo secrets stop the
    process at once, whether it is the web server, the task cluster or a command, not only under
    ``check --deploy``. ``check`` itself still runs, so it can list what is wrong."""
    argv = sys.argv if argv is None else argv
    if settings.DEBUG:
        return
    command = argv[1] if len(argv) > 1 and Path(argv[0]).name in ("manage.py", "django-admin", "__main__.py") else ""
    if command in RUNS_UNCONFIGURED:
        return
    errors = production_secrets(None)
    if errors:
        raise UnsafeStart("The portal will not start in production (DEBUG is off): "
                          + " ".join(f"{e.msg} {e.hint} [{e.id}]" for e in errors))


@register(Tags.security, deploy=True)
def production_secrets(app_configs: Any, **kwargs: Any) -> list[Error]:
    if settings.DEBUG:
        return []
    errors = []
    demo = [name for name in ("STRIPE_SECRET_KEY", "STRIPE_PUBLISHABLE_KEY", "STRIPE_WEBHOOK_SECRET")
            if getattr(settings, name) in DEMO_STRIPE_VALUES]
    if demo:
        errors.append(Error(f"{', '.join(demo)} hold the demo's placeholder values.",
                            hint="Set the practice's own Stripe keys.", id="portal.E005"))
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


# The SHA-256 of the demo's published authenticator key (devtools/demo_staff.py): production code holds no
# demo secret, only what recognises it.
DEMO_TOTP_KEY_SHA256 = "079401e55c45c386f2cda585666e225688fb64fa09eca075eb9d5747125d1dad"


@register(Tags.database)
def no_demo_second_factor(app_configs: Any, **kwargs: Any) -> list[Error]:
    """The demo's published authenticator key must never guard a real practice (runs with ``migrate``)."""
    if settings.DEBUG or not kwargs.get("databases"):
        return []
    try:
        keys = list(TOTPDevice.objects.values_list("key", flat=True))
    except DatabaseError:  # not migrated yet
        return []
    if any(hashlib.sha256(key.encode()).hexdigest() == DEMO_TOTP_KEY_SHA256 for key in keys):
        return [Error("A staff account uses the demo's published authenticator key.",
                      hint="Reset that account's second factor (admin → Users → Reset second factor).",
                      id="portal.E004")]
    return []
