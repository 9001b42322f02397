"""Monthly statements against PostgreSQL: the month's figures for every client from the ledger in a fixed
number of queries, the batch on the practice's statement day (once, however many ticks), the frozen rows,
the email and the PDF, and what staff and the API see."""

from __future__ import annotations

import datetime as dt
import io
import random
from collections.abc import Callable
from typing import Any

import pypdfium2
import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    Appointment,
    BillingType,
    Client,
    LedgerEntry,
    LedgerKind,
    OutboundEmail,
    Practice,
    Statement,
    StatementRun,
)
from billing.selectors.statements import month_last, statement_figures
from billing.services.statements import (
    NothingToState,
    statement_live,
    statement_pdf,
    statement_send,
    statements_issue,
    statements_monthly,
)
from tests import factories
from tests.payment_fixtures import tick

NOVEMBER, DECEMBER = dt.date(2026, 11, 1), dt.date(2026, 12, 1)
# 1 December 2026, midnight in New York: the default statement moment for November.
DEC_1 = dt.datetime(2026, 12, 1, 5, 0, tzinfo=dt.UTC)


def entry(person: Client, kind: str, cents: int, day: dt.date) -> LedgerEntry:
    return LedgerEntry(client=person, kind=kind, amount_cents=cents, occurred_on=day, actor="test",
                       created_at=dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC))


def october_done(at: dt.datetime) -> None:
    """October's statements went out on November 1 (before a month is due, the month before's run is done)."""
    StatementRun.objects.create(month=dt.date(2026, 10, 1), started_at=at, finished_at=at)


def many_clients(n: int) -> list[Client]:
    """``n`` clients in one insert (the factories' fields, without a query each)."""
    return Client.objects.bulk_create(factories.ClientFactory.build_batch(n, billing_type=BillingType.SELF_PAY))


def varied_practice(n: int, seed: int = 7) -> list[Client]:
    """``n`` clients, each with a random mix of sessions, fees, payments (some paying the month before's
    sessions), refunds, adjustments, write-offs and canceled charges over three months."""
    rng = random.Random(seed)
    people = many_clients(n)
    entries = []
    for person in people:
        for _ in range(rng.randint(0, 6)):
            day = dt.date(2026, rng.choice((9, 10, 11, 12)), rng.randint(1, 28))
            kind = rng.choice(list(LedgerKind))
            cents = rng.randint(1, 300) * 100
            sign = -1 if kind in (LedgerKind.PAYMENT, LedgerKind.WRITE_OFF, LedgerKind.WAIVER,
                                  LedgerKind.CHARGE_CANCELED) else 1
            if kind == LedgerKind.ADJUSTMENT:
                sign = rng.choice((-1, 1))
            entries.append(entry(person, kind, sign * cents, day))
    LedgerEntry.objects.bulk_create(entries)
    return people


def test_every_clients_month_adds_up_and_closes_on_the_ledger_balance(practice: Practice) -> None:
    people = varied_practice(300)
    # One client's October session is paid in November.
    late = people[0]
    LedgerEntry.objects.bulk_create([entry(late, LedgerKind.SESSION_CHARGE, 14000, dt.date(2026, 10, 30)),
                                     entry(late, LedgerKind.PAYMENT, -14000, dt.date(2026, 11, 2))])

    figures = statement_figures(NOVEMBER)
    ledger: dict[int, list[tuple[dt.date, int]]] = {}
    for client_id, day, cents in LedgerEntry.objects.values_list("client_id", "occurred_on", "amount_cents"):
        ledger.setdefault(client_id, []).append((day, cents))
    for person in people:
        mine = ledger.get(person.pk, [])
        before = sum(cents for day, cents in mine if day < NOVEMBER)
        after = sum(cents for day, cents in mine if day <= month_last(NOVEMBER))
        in_month = sum(1 for day, _ in mine if NOVEMBER <= day <= month_last(NOVEMBER))
        if person.pk not in figures:
            assert before == 0 and not in_month
            continue
        f = figures[person.pk]
        assert f.opening_cents == before
        assert (f.opening_cents + f.charges_cents - f.payments_cents + f.refunds_cents + f.adjustments_cents
                == f.closing_cents == after)
        assert f.aging.total == after
        assert f.entries == in_month
    assert len(figures) > 200

    october, november = statement_figures(dt.date(2026, 10, 1))[late.pk], figures[late.pk]
    assert october.charges_cents >= 14000 and november.payments_cents >= 14000
    assert november.opening_cents == october.closing_cents


def test_the_batch_costs_the_same_queries_for_ten_clients_or_a_hundred(practice: Practice) -> None:
    counts = []
    for n, month in ((10, dt.date(2026, 9, 1)), (100, dt.date(2026, 10, 1))):
        LedgerEntry.objects.bulk_create([entry(p, LedgerKind.SESSION_CHARGE, 9000, month.replace(day=5))
                                         for p in many_clients(n)])
        with CaptureQueriesContext(connection) as queries:
            issued = statements_issue(month=month, now=DEC_1, trigger="schedule", actor="test")
        assert len(issued) >= n
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    assert Statement.objects.filter(month=dt.date(2026, 10, 1)).count() == 110  # September's ten owe still


def test_an_evening_session_far_west_of_utc_is_in_the_practices_month(
        practice: Practice, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    practice.time_zone = "Pacific/Honolulu"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    # 30 November, 19:00 to 20:00 in Honolulu is 1 December 05:00-06:00 UTC.
    completed_session(person, at=dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC))

    november = statement_live(client=person, month=NOVEMBER, now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    december = statement_live(client=person, month=DECEMBER, now=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    assert (november.charges_cents, november.sessions, november.closing_cents) == (14000, 1, 14000)
    assert (december.opening_cents, december.charges_cents) == (14000, 0)
    assert november.lines[0]["date"] == "2026-11-30"

    # The statement day starts at midnight in Honolulu, ten hours after UTC's.
    october_done(DEC_1 - dt.timedelta(days=30))
    assert statements_monthly(now=dt.datetime(2026, 12, 1, 9, 59, tzinfo=dt.UTC)) == 0
    assert statements_monthly(now=dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)) == 1
    issued = Statement.objects.get(client=person)
    assert (issued.month, issued.charges_cents, issued.closing_cents) == (NOVEMBER, 14000, 14000)


def test_the_tick_issues_last_months_statements_once_on_the_statement_day(practice: Practice) -> None:
    owes, paid_up, in_credit, quiet = factories.ClientFactory.create_batch(4)
    Client.objects.filter(pk=quiet.pk).update(email="")
    LedgerEntry.objects.bulk_create([
        entry(owes, LedgerKind.SESSION_CHARGE, 14000, dt.date(2026, 11, 5)),
        entry(paid_up, LedgerKind.SESSION_CHARGE, 14000, dt.date(2026, 10, 20)),
        entry(paid_up, LedgerKind.PAYMENT, -14000, dt.date(2026, 11, 3)),
        entry(in_credit, LedgerKind.PAYMENT, -5000, dt.date(2026, 11, 3)),
        entry(quiet, LedgerKind.FEE, 7500, dt.date(2026, 8, 3)),
    ])
    october_done(DEC_1 - dt.timedelta(days=30))
    assert statements_monthly(now=DEC_1 - dt.timedelta(minutes=1)) == 0  # 23:59 on November 30 in New York

    tick(DEC_1)
    tick(DEC_1 + dt.timedelta(minutes=1))
    assert statements_monthly(now=DEC_1 + dt.timedelta(hours=3)) == 0

    by_client = {s.client_id: s for s in Statement.objects.filter(month=NOVEMBER)}
    assert set(by_client) == {owes.pk, paid_up.pk, in_credit.pk, quiet.pk}
    assert StatementRun.objects.get(month=NOVEMBER).statements == 4
    assert [by_client[p.pk].closing_cents for p in (owes, paid_up, in_credit, quiet)] == [14000, 0, -5000, 7500]
    assert by_client[quiet.pk].aging_over_90_cents == 7500 and by_client[quiet.pk].emailed_to == ""
    assert by_client[owes.pk].pay_link is not None and by_client[paid_up.pk].pay_link is None

    emails = {e.client_id: e for e in OutboundEmail.objects.filter(template="statement")}
    assert set(emails) == {owes.pk, paid_up.pk, in_credit.pk}  # one each; the client without an address: none
    owed = emails[owes.pk]
    assert owed.subject == "Your November 2026 statement from Riverbend Counseling"
    assert "Balance on November 30, 2026: $140.00" in owed.body_text and "/p/" in owed.body_text
    assert "You are in credit (-$50.00)" not in emails[in_credit.pk].body_text
    assert "You are in credit ($50.00)" in emails[in_credit.pk].body_text
    assert "Payments received: $140.00" in emails[paid_up.pk].body_text


def test_a_later_statement_day_waits_for_it(practice: Practice) -> None:
    practice.statement_day = 5
    practice.save()
    LedgerEntry.objects.bulk_create([entry(factories.ClientFactory.create(), LedgerKind.FEE, 5000, NOVEMBER)])
    assert statements_monthly(now=DEC_1 + dt.timedelta(days=3, hours=23)) == 0
    assert statements_monthly(now=DEC_1 + dt.timedelta(days=4)) == 1


HOSTILE = {"first_name": "<script>alert(1)</script>", "last_name": "=cmd|' /C calc'!A0"}


def pdf_text(pdf: bytes) -> str:
    document = pypdfium2.PdfDocument(io.BytesIO(pdf))
    return "\n".join(page.get_textpage().get_text_range() for page in document)


def test_a_hostile_name_is_shown_as_text_in_the_email_and_the_pdf(practice: Practice) -> None:
    person = factories.ClientFactory.create(**HOSTILE)
    LedgerEntry.objects.bulk_create([entry(person, LedgerKind.SESSION_CHARGE, 14000, dt.date(2026, 11, 5))])
    statements_issue(month=NOVEMBER, now=DEC_1, trigger="schedule", actor="test")
    email = OutboundEmail.objects.get(template="statement")
    assert "<script>" not in email.body_html and "&lt;script&gt;alert(1)&lt;/script&gt;" in email.body_html

    statement = Statement.objects.select_related("client").get()
    text = pdf_text(statement_pdf(statement=statement, now=timezone.now()))
    assert "<script>alert(1)</script> =cmd|' /C calc'!" in " ".join(text.split())
    assert "$140.00" in text and "Statement for November 2026" in text


def test_staff_see_the_statements_sent_and_any_months_pdf_from_the_clients_page(
        practice: Practice, front_desk: Any) -> None:
    person = factories.ClientFactory.create(first_name="Ana", last_name="Ortiz")
    LedgerEntry.objects.bulk_create([entry(person, LedgerKind.SESSION_CHARGE, 14000, dt.date(2026, 11, 5))])
    statements_issue(month=NOVEMBER, now=DEC_1, trigger="schedule", actor="test")
    http = HttpClient()
    http.force_login(front_desk)

    page = http.get(reverse("admin:billing_client_change", args=[person.pk])).content.decode()
    tools = reverse("admin:billing_statement_client_pdf", args=[person.pk])
    assert "Monthly statements" in page and tools in page
    choose = http.get(tools).content.decode()
    assert 'name="month"' in choose and "November 2026" in choose and "$140.00" in choose
    listed = http.get(reverse("admin:billing_statement_changelist"), {"client__id__exact": person.pk})
    assert listed.status_code == 200 and "Ortiz, Ana" in listed.content.decode()
    assert "$140.00" in listed.content.decode()

    sent = http.get(reverse("admin:billing_statement_pdf", args=[Statement.objects.get().pk]))
    assert sent.status_code == 200 and "Statement for November 2026" in pdf_text(sent.content)
    october = http.get(tools, {"month": "2026-10"})
    assert october.status_code == 200 and "Nothing in this month." in pdf_text(october.content)
    wrong = http.get(tools, {"month": "2026-13"}, follow=True)
    assert "Give a month as YYYY-MM" in wrong.content.decode() and 'name="month"' in wrong.content.decode()


def test_a_run_cut_short_is_carried_on_by_a_later_tick_once_its_claim_is_stale(practice: Practice) -> None:
    people = many_clients(3)
    LedgerEntry.objects.bulk_create([entry(p, LedgerKind.SESSION_CHARGE, 9000, dt.date(2026, 11, 9)) for p in people])
    # The run that was cut: it had written the first client's statement (and email), then stopped.
    statements_issue(month=NOVEMBER, now=DEC_1, trigger="schedule", actor="test", client_ids=[people[0].pk])
    run = StatementRun.objects.create(month=NOVEMBER, started_at=DEC_1, claimed_at=timezone.now())
    assert statements_monthly(now=DEC_1 + dt.timedelta(minutes=1)) == 0  # still someone's

    StatementRun.objects.filter(pk=run.pk).update(claimed_at=timezone.now() - dt.timedelta(minutes=11))
    assert statements_monthly(now=DEC_1 + dt.timedelta(minutes=12)) == 2
    run.refresh_from_db()
    assert run.finished_at is not None and (run.statements, run.emails) == (3, 3)
    assert OutboundEmail.objects.filter(template="statement").count() == 3
    assert statements_monthly(now=DEC_1 + dt.timedelta(minutes=30)) == 0


def test_staff_resend_a_statement_as_it_was_sent_and_are_told_when_there_is_none(practice: Practice) -> None:
    person, quiet = many_clients(2)
    LedgerEntry.objects.bulk_create([entry(person, LedgerKind.SESSION_CHARGE, 14000, dt.date(2026, 11, 5))])
    statements_issue(month=NOVEMBER, now=DEC_1, trigger="schedule", actor="test")
    # Posted later, dated in November: the ledger's November changes, the statement sent does not.
    LedgerEntry.objects.bulk_create([entry(person, LedgerKind.ADJUSTMENT, -4000, dt.date(2026, 11, 29))])

    later = DEC_1 + dt.timedelta(days=2)
    statement_send(client=person, now=later, actor="staff:desk", key="form-1")
    statement_send(client=person, now=later, actor="staff:desk", key="form-1")  # the same form again
    first, again = OutboundEmail.objects.filter(template="statement", client=person).order_by("pk")
    assert again.key == "statement:form-1"
    assert "Balance on November 30, 2026: $140.00" in again.body_text and "/p/" in again.body_text
    assert first.body_text.split("/p/")[1] != again.body_text.split("/p/")[1]  # a fresh pay link
    assert Statement.objects.get(client=person).closing_cents == 14000
    assert statement_live(client=person, month=NOVEMBER, now=later).closing_cents == 10000

    with pytest.raises(NothingToState, match="no balance and no activity in November 2026"):
        statement_send(client=quiet, now=later, actor="staff:desk", key="form-2")
    assert not Statement.objects.filter(client=quiet).exists()
