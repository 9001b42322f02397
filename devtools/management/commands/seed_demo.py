from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from devtools.demo import (
    ADMIN_PASSWORD,
    ADMIN_USERNAME,
    CARD_KINDS,
    FULL_SIZE,
    CardSeedResult,
    seed_demo,
    seed_demo_cards,
)
from devtools.demo_staff import demo_sign_in_hint


class Command(BaseCommand):
    help = ("Seed the demo practice (Riverbend Counseling Group): clinicians, services, payers, clients and a "
            "month of sessions, billed. Safe to run again: it adds only what is missing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=FULL_SIZE,
                            help=f"How many clients to seed (1 to {FULL_SIZE}; default {FULL_SIZE}).")
        parser.add_argument("--with-cards", action="store_true",
                            help="Also save the demo clients' cards through the enrollment flow, against the "
                                 "local fake Stripe server named by STRIPE_API_BASE (manage.py demo does this).")

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
        self.stdout.write(demo_sign_in_hint())
        if options["with_cards"]:
            try:
                cards = seed_demo_cards()
            except ValueError as problem:
                raise CommandError(str(problem)) from None
            self.stdout.write(describe_cards(cards))


def describe_cards(cards: CardSeedResult) -> str:
    saved = sum(cards.saved.values())
    kinds = ", ".join(f"{cards.saved[kind]} that {kind}" for kind in CARD_KINDS.values() if kind in cards.saved)
    lines = [f"Demo cards: {saved} saved through the enrollment flow" + (f" ({kinds})" if kinds else "")
             + f"; {cards.already} already on file; {cards.without} clients keep no card."]
    if cards.relinked:
        lines.append(f"  The fake Stripe server had lost its data: {cards.relinked} clients were linked again.")
    return "\n".join(lines)
