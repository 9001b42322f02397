from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from integrations.ehr.keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key for an EHR source and print it once (only its hash is stored)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", required=True, help="The EHR the key pushes for, e.g. simplepractice.")
        parser.add_argument("--name", default="", help="What uses the key, e.g. 'nightly sync'.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            issued = api_key_create(source=options["source"], name=options["name"], now=timezone.now(),
                                    created_by="manage.py create_api_key")
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stderr.write(f"API key for source {issued.api_key.source!r} (shown once; store it now):")
        self.stdout.write(issued.key)
