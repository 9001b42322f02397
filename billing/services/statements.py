"""Monthly statements (workflow: a month's account for every client, emailed and kept as sent).

For every client with a balance coming into a month or any ledger entry dated in it, a statement lists the
opening balance, the month's sessions and charges, payments, refunds and adjustments, the closing balance, its
aging at the month's end, and a link to pay it. The figures are ``billing.selectors.statements``'s, computed for
all clients together in a fixed number of queries.

A statement is issued (frozen in a ``Statement`` row, one per client and month, and emailed with a key naming
the client and the month) only for a month that is over in the practice's zone:

- by ``billing_tick`` (``statements_monthly``): from the start of the practice's statement day (default the
  1st) in its zone, for the month before; one tick at a time claims the month's ``StatementRun``, a client's
  statement is unique per month and its email keyed by client and month, so nothing is issued twice;
- by staff from the client's page ("Send a link or statement"): the last month that is over, issued now if the
  batch has not, else the statement as issued, with a fresh pay link.

Staff and the API may also read any month on demand: the statement as issued if there is one, else the figures
as the ledger has them now (the month so far, for the current month), nothing written.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.utils import timezone

from billing.errors import Refused
from billing.local_time import practice_zone_active
from billing.models import Client, LedgerKind, LinkPurpose, Practice, Statement, StatementRun
from billing.money import format_cents
from billing.selectors import BUCKETS
from billing.selectors.statements import (
    MonthFigures,
    StatementLine,
    month_before,
    month_first,
    month_last,
    statement_figures,
    statement_lines,
)
from billing.services.links import IssuedLink, link_create, links_create
from billing.services.notify import Email, emails_enqueue

STATEMENT_HOUR = 0  # the statement day starts at midnight, practice time
CHUNK = 1000  # clients written per transaction
# A run that claimed the month this long ago without finishing was cut short: another may carry it on.
STALE_CLAIM = dt.timedelta(minutes=10)
SYSTEM = "system:billing_tick"
MONTH_PATTERN = r"^(19\d\d|2[01]\d\d)-(0[1-9]|1[0-2])$"

LINE_LABELS = {
    LedgerKind.SESSION_CHARGE: "Session", LedgerKind.FEE: "Fee", LedgerKind.PAYMENT: "Payment",
    LedgerKind.REFUND: "Refund", LedgerKind.ADJUSTMENT: "Adjustment", LedgerKind.WRITE_OFF: "Write-off",
    LedgerKind.WAIVER: "Fee waived", LedgerKind.CHARGE_CANCELED: "Charge canceled",
}
AGING_LABELS = dict(zip(BUCKETS, ("0-30 days", "31-60 days", "61-90 days", "Over 90 days"), strict=True))


class MonthInvalid(Refused):
    pass


class NothingToState(Refused):
    pass


def month_parse(text: str) -> dt.date:
    """The first day of the month ``YYYY-MM`` names; raises MonthInvalid otherwise."""
    if not isinstance(text, str) or not re.match(MONTH_PATTERN, text.strip()):
        raise MonthInvalid("Give a month as YYYY-MM, such as 2026-11 (years 1900 to 2199).")
    year, month = text.strip().split("-")
    return dt.date(int(year), int(month), 1)


def local_today(now: dt.datetime, practice: Practice) -> dt.date:
    return now.astimezone(practice.zone).date()


def last_month_over(now: dt.datetime, practice: Practice) -> dt.date:
    """The most recent month that is over in the practice's zone (its first day)."""
    return month_before(local_today(now, practice))


def month_is_over(month: dt.date, now: dt.datetime, practice: Practice) -> bool:
    return month_last(month) < local_today(now, practice)


# --- Building statements ---------------------------------------------------------------------------------

def _statement(*, client_id: int, month: dt.date, figures: MonthFigures, lines: list[StatementLine],
               now: dt.datetime, trigger: str) -> Statement:
    aging = figures.aging
    return Statement(
        client_id=client_id, month=month, opening_cents=figures.opening_cents, charges_cents=figures.charges_cents,
        payments_cents=figures.payments_cents, refunds_cents=figures.refunds_cents,
        adjustments_cents=figures.adjustments_cents, closing_cents=figures.closing_cents,
        aging_current_cents=aging.current, aging_31_60_cents=aging.days_31_60, aging_61_90_cents=aging.days_61_90,
        aging_over_90_cents=aging.days_over_90, sessions=figures.sessions,
        lines=[line.as_json() for line in lines], trigger=trigger, issued_at=now)


def statement_live(*, client: Client, month: dt.date, now: dt.datetime) -> Statement:
    """The month's statement as the ledger has it now, unsaved (``issued_at`` None): all zeros for a month
    without a balance or activity."""
    month = month_first(month)
    figures = statement_figures(month, client_ids=[client.pk]).get(client.pk) or MonthFigures.nothing(client.pk)
    lines = statement_lines(month, client_ids=[client.pk]).get(client.pk, [])
    statement = _statement(client_id=client.pk, month=month, figures=figures, lines=lines, now=now, trigger="")
    statement.client = client
    statement.issued_at = None  # type: ignore[assignment]
    return statement


def statement_for(*, client: Client, month: dt.date, now: dt.datetime) -> Statement:
    """The month's statement as issued, else as the ledger has it now (unsaved)."""
    issued = Statement.objects.filter(client=client, month=month_first(month)).select_related("client").first()
    return issued or statement_live(client=client, month=month, now=now)


def statement_context(statement: Statement, *, link: IssuedLink | None = None) -> dict[str, Any]:
    """What the email and the PDF show (amounts formatted; every text escaped by the templates)."""
    month = statement.month
    aging = {"current": statement.aging_current_cents, "days_31_60": statement.aging_31_60_cents,
             "days_61_90": statement.aging_61_90_cents, "days_over_90": statement.aging_over_90_cents}
    lines = []
    for line in statement.lines:
        detail = " with ".join(part for part in (line.get("service_code"), line.get("clinician")) if part)
        memo = line.get("memo") or ""
        lines.append({"date": dt.date.fromisoformat(line["date"]), "what": LINE_LABELS.get(line["kind"], line["kind"]),
                      "detail": "; ".join(part for part in (detail, memo) if part),
                      "amount": format_cents(line["amount_cents"])})
    closing = statement.closing_cents
    return {
        "statement": statement, "month": month, "start": month, "end": month_last(month),
        "opening": format_cents(statement.opening_cents), "charges": format_cents(statement.charges_cents),
        "payments": format_cents(statement.payments_cents), "payments_less": format_cents(-statement.payments_cents),
        "refunds": format_cents(statement.refunds_cents),
        "adjustments": format_cents(statement.adjustments_cents), "closing": format_cents(closing),
        "balance": format_cents(closing), "owes": closing > 0, "in_credit": closing < 0,
        "credit": format_cents(-closing), "session_count": statement.sessions, "lines": lines,
        "aging": [(AGING_LABELS[name], format_cents(aging[name])) for name in BUCKETS],
        "issued_at": statement.issued_at, "link_url": link.url if link else "",
        "expires_at": link.expires_at if link else None,
    }


# --- Issuing: frozen and emailed -------------------------------------------------------------------------

def _email_key(client_id: int, month: dt.date) -> str:
    return f"statement:{client_id}:{month:%Y-%m}"


def statements_issue(*, month: dt.date, now: dt.datetime, trigger: str, actor: str,
                     client_ids: list[int] | None = None, practice: Practice | None = None,
                     chunk: int = CHUNK) -> list[Statement]:
    """Freeze and email the month's statements of every client who has one (or of ``client_ids``), skipping
    those already issued, and return those written.

    The figures and lines of every client are read first (four queries, whatever the number of clients); the
    statements, their pay links and emails are then written ``chunk`` clients per transaction, so a run cut
    short (the task queue's timeout) keeps what it wrote and the next run carries on from there."""
    month = month_first(month)
    practice = practice or Practice.load()
    figures = statement_figures(month, client_ids=client_ids)
    issued = Statement.objects.filter(month=month)
    if client_ids is not None:
        issued = issued.filter(client_id__in=client_ids)
    done = set(issued.values_list("client_id", flat=True))
    wanted = [pk for pk in figures if pk not in done]
    if not wanted:
        return []
    lines = statement_lines(month, client_ids=client_ids)
    rows: list[Statement] = []
    for start in range(0, len(wanted), chunk):
        with transaction.atomic():
            rows += _issue_chunk(month=month, wanted=wanted[start:start + chunk], figures=figures, lines=lines,
                                 now=now, trigger=trigger, actor=actor, practice=practice)
    return rows


def _issue_chunk(*, month: dt.date, wanted: list[int], figures: dict[int, MonthFigures],
                 lines: dict[int, list[StatementLine]], now: dt.datetime, trigger: str, actor: str,
                 practice: Practice) -> list[Statement]:
    clients = Client.objects.in_bulk(wanted)
    owing = [clients[pk] for pk in wanted if figures[pk].closing_cents > 0 and clients[pk].email]
    links = links_create(clients=owing, purpose=LinkPurpose.PAY_BALANCE, now=now, actor=actor) if owing else {}
    rows = []
    for pk in wanted:
        statement = _statement(client_id=pk, month=month, figures=figures[pk], lines=lines.get(pk, []), now=now,
                               trigger=trigger)
        statement.client = clients[pk]
        statement.emailed_to = clients[pk].email
        link = links.get(pk)
        statement.pay_link = link.link if link else None
        rows.append(statement)
    # A statement issued meanwhile by someone else wins; ours is dropped (and its email's key is the same).
    Statement.objects.bulk_create(rows, ignore_conflicts=True)
    with practice_zone_active(practice):
        emails_enqueue([Email(_email_key(s.client_id, month), s.client, "statement",
                              statement_context(s, link=links.get(s.client_id))) for s in rows if s.emailed_to],
                       now=now, practice=practice)
    return rows


def statements_monthly(*, now: dt.datetime) -> int:
    """The billing_tick step: from the start of the practice's statement day (its zone), issue the month
    before's statements, once. Returns how many were issued.

    The month's ``StatementRun`` is claimed first (one tick at a time; a claim left by a run that was cut
    short is taken over after STALE_CLAIM), and finished once every client's statement is written."""
    practice = Practice.load()
    local = now.astimezone(practice.zone)
    day = min(max(practice.statement_day, 1), 28)  # the form allows 1-28; a value set otherwise stays in range
    due_at = dt.datetime.combine(local.date().replace(day=day), dt.time(STATEMENT_HOUR), tzinfo=practice.zone)
    if local < due_at:
        return 0  # not yet this month (the month before was issued last month)
    month = month_before(local.date())
    if StatementRun.objects.filter(month=month, finished_at__isnull=False).exists():
        return 0
    # Claims are timed by the wall clock (as the email outbox's are), never by the tick's ``now``.
    claimed_at = timezone.now()
    try:
        run, _ = StatementRun.objects.get_or_create(month=month, defaults={"started_at": now})
    except IntegrityError:  # another tick created it at the same moment: it is theirs
        return 0
    free = Q(claimed_at__isnull=True) | Q(claimed_at__lt=claimed_at - STALE_CLAIM)
    if not StatementRun.objects.filter(free, pk=run.pk, finished_at__isnull=True).update(claimed_at=claimed_at):
        return 0
    rows = statements_issue(month=month, now=now, trigger="schedule", actor=SYSTEM, practice=practice)
    counts = Statement.objects.filter(month=month, trigger="schedule").aggregate(
        statements=Count("pk"), emails=Count("pk", filter=~Q(emailed_to="")))
    StatementRun.objects.filter(pk=run.pk).update(finished_at=timezone.now(), **counts)
    return len(rows)


def statement_send(*, client: Client, now: dt.datetime, actor: str, key: str) -> Statement:
    """Staff email the client's statement of the last month that is over: issued now if it was not yet
    (frozen, as the batch would have), else the statement as issued, with a fresh pay link. ``key`` names the
    request (a staff form), so the same request sends one email."""
    practice = Practice.load()
    month = last_month_over(now, practice)
    with transaction.atomic():
        statement = Statement.objects.filter(client=client, month=month).first()
        if statement is None:
            issued = statements_issue(month=month, now=now, trigger="staff", actor=actor, client_ids=[client.pk],
                                      practice=practice)
            if not issued:
                raise NothingToState(f"{client} had no balance and no activity in {month:%B %Y}: "
                                     "there is no statement to send.")
            return issued[0]
        statement.client = client
        link = (link_create(client=client, purpose=LinkPurpose.PAY_BALANCE, now=now, actor=actor)
                if statement.closing_cents > 0 else None)
        with practice_zone_active(practice):
            emails_enqueue([Email(f"statement:{key}", client, "statement", statement_context(statement, link=link))],
                           now=now, practice=practice)
    return statement


# --- The PDF ---------------------------------------------------------------------------------------------

def statement_pdf(*, statement: Statement, now: dt.datetime) -> bytes:
    """The statement as a PDF: as issued, or (unsaved) as the ledger has it now."""
    from weasyprint import HTML  # imported here: it loads system libraries and is needed only for PDFs

    practice = Practice.load()
    with practice_zone_active(practice):
        html = render_to_string("documents/statement.html", {
            **statement_context(statement), "practice": practice, "client": statement.client,
            "today": local_today(now, practice), "final": month_is_over(statement.month, now, practice)})
    return bytes(HTML(string=html).write_pdf())
