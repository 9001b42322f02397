"""GET /api/v1/clients/<external_id>/statements/: a month's statement as JSON or PDF, as issued or as the
ledger has it now; bad input is a 400 that changes nothing."""

from __future__ import annotations

import datetime as dt

from rest_framework.test import APIClient

from billing.models import Client, LedgerEntry, LedgerKind, Practice, Statement
from billing.services.statements import statements_issue
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body


def test_a_months_statement_as_json_and_pdf_then_as_issued(practice: Practice, put: Call, get: Call,
                                                           api: APIClient) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))
    put("appointments/a-1/", appointment_body(["c-1"], status="completed"))  # 23 November, New York

    live = get("clients/c-1/statements/", month="2026-11")
    assert live["issued_at"] is None and live["final"] is True
    assert (live["month"], live["starts"], live["ends"]) == ("2026-11", "2026-11-01", "2026-11-30")
    assert (live["opening_cents"], live["charges_cents"], live["payments_cents"], live["closing_cents"]) == (
        0, 15000, 0, 15000)
    assert live["sessions"] == 1 and live["aging"]["current"] == 15000
    assert [(line["date"], line["kind"], line["amount_cents"]) for line in live["lines"]] == [
        ("2026-11-23", "session_charge", 15000)]
    assert get("clients/c-1/statements/", month="2026-12")["opening_cents"] == 15000

    pdf = api.get("/api/v1/clients/c-1/statements/", {"month": "2026-11", "format": "pdf"})
    assert pdf.status_code == 200 and pdf["Content-Type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and "statement-2026-11-c-1.pdf" in pdf["Content-Disposition"]

    person = Client.objects.get(external_id="c-1")
    statements_issue(month=dt.date(2026, 11, 1), now=dt.datetime(2026, 12, 1, 13, tzinfo=dt.UTC),
                     trigger="schedule", actor="test")
    LedgerEntry.objects.create(client=person, kind=LedgerKind.ADJUSTMENT, amount_cents=-1000,
                               occurred_on=dt.date(2026, 11, 30), actor="test",
                               created_at=dt.datetime(2026, 12, 2, tzinfo=dt.UTC))
    issued = get("clients/c-1/statements/", month="2026-11")
    assert issued["issued_at"] is not None and issued["closing_cents"] == 15000  # as sent


def test_bad_months_and_unknown_clients_are_refused(practice: Practice, put: Call, get: Call,
                                                   api: APIClient) -> None:
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))
    for month in ("2026-13", "2026-1", "november", "2200-01", ""):
        assert "month" in get("clients/c-1/statements/", expect=400, month=month)
    get("clients/nobody/statements/", expect=404, month="2026-11")
    refused = api.get("/api/v1/clients/c-1/statements/", {"month": "2026-13", "format": "pdf"})
    assert refused.status_code == 400 and refused["Content-Type"] == "application/json"
    assert "month" in refused.json()
    assert not Statement.objects.exists()
