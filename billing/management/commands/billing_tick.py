from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.models import Practice
from billing.services.tick import tick_run


def parse_moment(value: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(f"--at {value!r} is not an ISO 8601 time such as 2026-11-27T09:00:00-05:00.") from None
    if moment.tzinfo is None:
        raise CommandError(f"--at {value!r} has no UTC offset; add one, e.g. {value}-05:00 or {value}Z.")
    return moment.astimezone(dt.UTC)


class Command(BaseCommand):
    help = "Do all billing work due at a moment (default: now). Safe to run twice or concurrently."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--at", type=str, help="The moment to act as of, ISO 8601 with an offset.")

    def handle(self, *args: Any, **options: Any) -> None:
        now = parse_moment(options["at"]) if options["at"] else timezone.now()
        done = tick_run(now=now)
        summary = ", ".join(f"{name}: {count}" for name, count in done.items())
        preview = " (preview: charging is off; nothing went to Stripe or clients)" if Practice.load().charging_preview \
            else ""
        self.stdout.write(f"billing_tick at {now.isoformat()}: {summary}{preview}")
