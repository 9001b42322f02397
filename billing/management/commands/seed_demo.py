from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from billing.demo import ADMIN_PASSWORD, ADMIN_USERNAME, FULL_SIZE, seed_demo


class Command(BaseCommand):
    help = ("Seed the demo practice (Riverbend Counseling Group): clinicians, services, payers, clients and a "
            "month of sessions, billed. Safe to run again: it adds only what is missing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=FULL_SIZE,
                            help=f"How many clients to seed (1 to {FULL_SIZE}; default {FULL_SIZE}).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = seed_demo(clients=options["clients"])
        except ValueError as problem:
            raise CommandError(str(problem)) from None
        added = sum(result.created.values())
        self.stdout.write(f"Demo practice seeded ({added} new records). Demo records now:")
        for name, count in result.counts.items():
            new = result.created.get(name, 0)
            self.stdout.write(f"  {name:<24} {count:>5}" + (f"  (+{new})" if new else ""))
        if result.admin_created:
            self.stdout.write(self.style.SUCCESS(
                f"Created the staff login: username {ADMIN_USERNAME!r}, password {ADMIN_PASSWORD!r}"))
        else:
            self.stdout.write(f"Staff login {ADMIN_USERNAME!r} already exists (its password was left alone; "
                              f"the demo's is {ADMIN_PASSWORD!r}).")
