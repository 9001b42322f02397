from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from billing.models import AgingDay, ClientBalance
from billing.selectors import aging_mismatches, balance_mismatches

SHOWN = 20


class Command(BaseCommand):
    help = ("Check that every client's kept balance and amounts by age (what the client list and AR aging "
            "read) equal the sums of their ledger. Exits non-zero and names the clients that differ.")

    def handle(self, *args: Any, **options: Any) -> None:
        lines = [f"  client {client_id}: kept {kept} cents, ledger {ledger} cents"
                 for client_id, kept, ledger in balance_mismatches()]
        lines += [f"  client {client_id}: kept {kept} cents by age (0-30, 31-60, 61-90 days), ledger {ledger}"
                  for client_id, kept, ledger in aging_mismatches()]
        if lines:
            more = [f"  ... and {len(lines) - SHOWN} more"] if len(lines) > SHOWN else []
            raise CommandError("\n".join([f"{len(lines)} kept client balance(s) differ from the ledger:",
                                          *lines[:SHOWN], *more]))
        as_of = AgingDay.objects.filter(pk=1).values_list("as_of", flat=True).first()
        aged = f", and their amounts by age as of {as_of}," if as_of else ""
        self.stdout.write(f"All {ClientBalance.objects.count()} client balances{aged} equal their ledger.")
