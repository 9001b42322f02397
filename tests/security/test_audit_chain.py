"""The money events and the audit trail are tamper-evident: verify_audit_chain names the first broken row."""

from __future__ import annotations

from collections.abc import Callable
from io import StringIO

import pytest
from auditlog.models import LogEntry
from django.core.management import CommandError, call_command
from django.db import connection

from billing.models import Appointment, BillingType, Client, LedgerEntry, Practice
from billing.services.schedule import appointment_set_status
from tests.practice_fixtures import FRIDAY_10AM


@pytest.fixture
def history(practice: Practice, make_client: Callable[..., Client],
            make_appointment: Callable[..., Appointment]) -> list[LedgerEntry]:
    for n in range(3):
        person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=10000 + n)
        appointment_set_status(appointment=make_appointment(person), status="completed", now=FRIDAY_10AM,
                               actor="test")
    return list(LedgerEntry.objects.order_by("pk"))


def verify() -> str:
    out = StringIO()
    call_command("verify_audit_chain", stdout=out)
    return out.getvalue()


def test_intact_chain_verifies(history: list[LedgerEntry]) -> None:
    assert "Audit chain intact" in verify()
    assert "Audit chain intact (0 new rows sealed)" in verify()


def test_a_ledger_amount_changed_in_the_database_is_named(history: list[LedgerEntry]) -> None:
    verify()
    target = history[1]
    with connection.cursor() as cursor:
        cursor.execute("UPDATE billing_ledgerentry SET amount_cents = 1 WHERE id = %s", [target.pk])
    with pytest.raises(CommandError, match=rf"ledger_entry row {target.pk} \(seal \d+\): the row was changed"):
        verify()


def test_an_audit_trail_row_changed_or_deleted_in_the_database_is_named(history: list[LedgerEntry]) -> None:
    verify()
    entry = LogEntry.objects.order_by("pk").first()
    assert entry is not None
    with connection.cursor() as cursor:
        cursor.execute("UPDATE auditlog_logentry SET remote_addr = '10.0.0.9' WHERE id = %s", [entry.pk])
    with pytest.raises(CommandError, match=rf"audit_log row {entry.pk} .*changed after it was sealed"):
        verify()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM auditlog_logentry WHERE id = %s", [entry.pk])
    with pytest.raises(CommandError, match=rf"audit_log row {entry.pk} .*the row was deleted"):
        verify()


def test_a_deleted_seal_breaks_the_chain(history: list[LedgerEntry]) -> None:
    verify()
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM billing_auditseal WHERE sequence = 2")
    with pytest.raises(CommandError, match="seal 2 is missing"):
        verify()
