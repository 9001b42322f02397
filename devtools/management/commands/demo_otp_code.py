"""``manage.py demo_otp_code``: the demo's current sign-in code (the second step after the password)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from devtools.demo_staff import DEMO_TOTP_SECRET, demo_code


class Command(BaseCommand):
    help = "Print the demo's current 6-digit sign-in code (demo only: refused when DEBUG is off)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("demo_otp_code is for the demo only.")
        self.stdout.write(f"{demo_code()}  (valid for up to 30 seconds; authenticator key {DEMO_TOTP_SECRET})")
