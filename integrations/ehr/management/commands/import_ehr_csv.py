"""``manage.py import_ehr_csv --source NAME --kind KIND [--preset P] [--map "Column=field,..."] [--dry-run] FILE``

Prints the preview summary and each rejected row's problem. Applies the file only if no row is
rejected (all or nothing); exits 1 when a row is rejected, 2 when the file cannot be read at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.ehr.imports.csv_import import MAX_PROBLEMS, ImportFileError, csv_import, parse_mapping
from integrations.ehr.imports.csv_presets import KINDS, PRESETS
from integrations.ehr.models import validate_source


class Command(BaseCommand):
    help = "Import (or preview with --dry-run) a CSV export from an EHR: clients, appointments or insurance payments."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The CSV file exported from the EHR.")
        parser.add_argument("--source", required=True, help="The EHR's source name, as its API key's (e.g. "
                                                            "simplepractice).")
        parser.add_argument("--kind", required=True, choices=KINDS)
        parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                            help="Which export's columns to expect (default: the source's name if it is a preset, "
                                 "else custom: the portal's field names).")
        parser.add_argument("--map", default="", dest="mapping",
                            help='Override or add columns: "Column=field,Other Column=field".')
        parser.add_argument("--dry-run", action="store_true", help="Show what would change; write nothing.")
        parser.add_argument("--progress-every", type=int, default=10_000, help="Print progress every N rows.")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        if not path.is_file():
            raise CommandError(f"No such file: {path}", returncode=2)
        try:
            validate_source(options["source"])
        except Exception as error:
            raise CommandError(f"--source: {' '.join(getattr(error, 'messages', [str(error)]))}",
                               returncode=2) from None
        preset = options["preset"] or (options["source"] if options["source"] in PRESETS else "custom")

        def progress(rows: int, seconds: float) -> None:
            rate = rows / seconds if seconds else 0
            self.stderr.write(f"  {rows:,} rows read ({rate:,.0f} rows/s)")

        try:
            report = csv_import(path=path, source=options["source"], kind=options["kind"], preset=preset,
                                mapping=parse_mapping(options["mapping"]), dry_run=options["dry_run"],
                                progress=progress, progress_every=max(1, options["progress_every"]))
        except ImportFileError as error:
            raise CommandError(str(error), returncode=2) from None
        for note in report.notes:
            self.stdout.write(f"Note: {note}")
        mode = "Dry run" if report.dry_run else ("Applied" if report.applied else "Not applied")
        self.stdout.write(f"{mode}: {path.name} ({report.kind}, {PRESETS[preset].label} columns, {report.encoding}): "
                          f"{report.summary()} in {report.seconds:.1f}s ({report.rows_per_second:,.0f} rows/s).")
        for problem in report.problems:
            self.stdout.write(f"  row {problem.row}: {problem.message}")
        if report.rejected > len(report.problems):
            self.stdout.write(f"  ... and {report.rejected - MAX_PROBLEMS:,} more rejected rows.")
        if report.rejected:
            raise CommandError(f"{report.rejected:,} rows rejected: nothing was imported. Fix them and run again.",
                               returncode=1)
        if not report.dry_run and report.applied:
            self.stdout.write(self.style.SUCCESS("Imported."))
