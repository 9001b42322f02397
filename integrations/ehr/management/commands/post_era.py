"""``manage.py post_era [--dry-run] FILE [FILE ...]``: post insurers' 835 remittance files.

Prints, per payment, each service line's outcome: posted to a session, left unmatched for staff (with
why), already posted, or a reversal. A file is posted whole or not at all; a broken one prints the
segment at fault and exits 2 (nothing posted). Posting a file again changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.money import format_cents
from integrations.ehr.era.posting import RemittanceFileError, era_post


class Command(BaseCommand):
    help = "Post (or preview with --dry-run) ERA files (X12 835) from insurers to the sessions they pay for."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", help="835 files as the insurer or clearinghouse sent them.")
        parser.add_argument("--dry-run", action="store_true", help="Show what would be posted; write nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        failed = []
        for name in options["files"]:
            path = Path(name)
            if not path.is_file():
                raise CommandError(f"No such file: {path}", returncode=2)
            try:
                reports = era_post(data=path.read_bytes(), file_name=path.name, actor="command:post_era",
                                   now=timezone.now(), dry_run=options["dry_run"])
            except RemittanceFileError as error:
                self.stderr.write(f"{path.name}: not posted. {error}")
                failed.append(path.name)
                continue
            for report in reports:
                mode = "Dry run" if report.dry_run else "Posted"
                self.stdout.write(f"{mode}: {path.name}: {report.payer_name} {report.method} "
                                  f"{report.trace_number} of {format_cents(report.paid_cents)} on {report.paid_on}: "
                                  f"{report.summary()}.")
                for note in report.notes:
                    self.stdout.write(f"  Note: {note}")
                for line in report.lines:
                    self.stdout.write(f"  claim {line.claim_id} line {line.line_number} ({line.patient}, "
                                      f"{line.cpt_code or '-'} {line.service_date or '-'}): {line.outcome}. "
                                      f"{line.detail}")
        if failed:
            raise CommandError(f"Not posted: {', '.join(failed)}.", returncode=2)
