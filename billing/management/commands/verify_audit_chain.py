from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from billing.audit.chain import chain_seal, chain_verify


class Command(BaseCommand):
    help = ("Check that no ledger entry, charge or appointment event, or audit-trail row changed since it "
            "was sealed. Exits non-zero and names the first broken row if one did.")

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        sealed = chain_seal(now=now)  # rows written since the last tick are sealed first
        problem = chain_verify(now=now)
        if problem is not None:
            raise CommandError(f"Audit chain broken at {problem}.")
        self.stdout.write(f"Audit chain intact ({sealed} new rows sealed).")
