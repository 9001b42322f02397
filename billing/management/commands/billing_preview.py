from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from billing.errors import BillingError
from billing.models import Practice
from billing.money import format_cents
from billing.services.preview import PreviewReport, preview_report


def parse_day(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise CommandError(f"{option} {value!r} is not a date such as 2026-10-01.") from None


def _when(moment: dt.datetime | None, zone: dt.tzinfo) -> str:
    return f"{moment.astimezone(zone):%Y-%m-%d %H:%M}" if moment else "-"


def _days(pair: tuple[float | None, float | None]) -> str:
    median, average = pair
    return "none" if median is None else f"median {median}, average {average}"


def report_lines(report: PreviewReport, zone: dt.tzinfo) -> list[str]:
    """The report as text: a line per charge of a session, then the totals."""
    lines = [f"Preview of {report.start} to {report.end} (the tick replayed {report.ticks} times; nothing was "
             "charged or sent)",
             "Session          | Client | Charge | Would charge | When | Notice | Collected | When | EOB paid | Now"]
    for line in report.lines:
        would = format_cents(line.would_cents) if line.would_cents else f"- ({line.would_status})"
        notice = f"{line.notice} ({_when(line.notice_at, zone)})" if line.notice else "-"
        lines.append(" | ".join([
            _when(line.session_at, zone), line.client, line.kind, would, _when(line.would_at, zone), notice,
            format_cents(line.collected_cents), _when(line.collected_at, zone), format_cents(line.eob_paid_cents),
            line.status]))
    totals = report.totals
    unpaid = report.unpaid
    lines += [
        f"The portal would have collected {format_cents(totals['would'])}; collected: "
        f"{format_cents(totals['collected'])}; insurers paid (EOB lines): {format_cents(totals['eob_paid'])}.",
        f"Days from session to money: with the portal {_days(report.days('would'))}; as collected "
        f"{_days(report.days('collected'))}.",
        f"Still unpaid that the portal would have collected: {len(unpaid)} charge(s), "
        f"{format_cents(totals['unpaid_would_collect'])}.",
    ]
    return lines


class Command(BaseCommand):
    help = ("What the portal would have collected for the sessions of a past period, replayed through the tick "
            "in a transaction that is rolled back, against what was actually collected. Charges nothing.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--from", dest="start", required=True, help="The first day, YYYY-MM-DD.")
        parser.add_argument("--to", dest="end", required=True, help="The last day, YYYY-MM-DD.")

    def handle(self, *args: Any, **options: Any) -> None:
        start, end = parse_day(options["start"], "--from"), parse_day(options["end"], "--to")
        try:
            report = preview_report(start=start, end=end, now=timezone.now())
        except BillingError as error:
            raise CommandError(str(error)) from None
        self.stdout.write("\n".join(report_lines(report, Practice.load().zone)))
