from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.models import ClientBalance
from billing.selectors import balance_mismatches

SHOWN = 20


class Command(BaseCommand):
    help = ("Check that every client's kept balance (what the client list and AR aging read) equals the sum "
            "of their ledger. Exits non-zero and names the clients whose balance differs.")

    def handle(self, *args: Any, **options: Any) -> None:
        wrong = balance_mismatches()
        if wrong:
            lines = [f"  client {client_id}: kept {kept} cents, ledger {ledger} cents"
                     for client_id, kept, ledger in wrong[:SHOWN]]
            more = [f"  ... and {len(wrong) - SHOWN} more"] if len(wrong) > SHOWN else []
            raise CommandError("\n".join([f"{len(wrong)} client balance(s) differ from the ledger:", *lines, *more]))
        self.stdout.write(f"All {ClientBalance.objects.count()} client balances equal their ledger.")
