"""An outside client that knows only docs/api.md pushes a practice's week, reads back what was charged, and
pushes everything again: the second time nothing changes."""

from __future__ import annotations

from typing import Any

import pytest
from auditlog.models import LogEntry

from billing.models import (
    Appointment,
    AppointmentEvent,
    Charge,
    ChargeEvent,
    Client,
    Coverage,
    InsurancePayment,
    LedgerEntry,
    OutboundEmail,
    Participant,
    PolicyAcknowledgment,
    Practice,
    ReviewItem,
)
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db

CLIENTS = {
    "c-copay": client_body("Ana", "insurance"),
    "c-coins": client_body("Ben", "insurance"),
    "c-eap": client_body("Cai", "insurance"),
    "c-self": client_body("Dee", "self_pay", session_rate_cents=15000),
    "c-slide": client_body("Eli", "sliding_scale", session_rate_cents=9000),
    "c-noack": client_body("Fay", "self_pay", session_rate_cents=15000),
}
COVERAGE = {
    "c-copay": {"payer_name": "Aetna", "payer_id": "60054", "member_id": "W100", "copay_cents": 2500,
                "effective_from": "2026-01-01", "effective_to": "2026-12-31"},
    "c-coins": {"payer_name": "Aetna", "payer_id": "60054", "member_id": "W200", "coinsurance_percent": 20,
                "deductible_cents": 50000, "deductible_met_cents": 45000, "effective_from": "2026-01-01"},
    "c-eap": {"payer_name": "Acme EAP", "payer_id": "EAP01", "member_id": "E1", "plan_category": "EAP"},
}
DAY = "2026-11-{:02d}T{:02d}:00:00-05:00"
# A week: individual and group sessions, every status.
APPOINTMENTS: dict[str, dict[str, Any]] = {
    "a-1": appointment_body(["c-copay"], DAY.format(23, 9), status="completed"),
    "a-2": appointment_body(["c-coins"], DAY.format(23, 10), status="completed"),
    "a-3": appointment_body(["c-eap"], DAY.format(23, 11), status="completed"),
    "a-4": appointment_body(["c-self"], DAY.format(24, 9), status="completed"),
    "a-5": appointment_body(["c-slide"], DAY.format(24, 10), status="completed"),
    "a-6": appointment_body(["c-copay", "c-self", "c-slide"], DAY.format(25, 17), status="completed",
                            service_code="90853", duration_minutes=90),
    "a-7": appointment_body(["c-self"], DAY.format(26, 9), status="no_show"),
    "a-8": appointment_body(["c-noack"], DAY.format(26, 10), status="late_cancel"),
    "a-9": appointment_body(["c-slide"], DAY.format(27, 9), status="canceled"),
    "a-10": appointment_body(["c-copay"], DAY.format(27, 10), status="scheduled"),
    "a-11": appointment_body(["c-self"], DAY.format(27, 11), status="completed", fee_cents=17500),
}
EXPECTED_CHARGES = {  # (appointment, client) -> amount in cents
    ("a-1", "c-copay"): 2500,                     # copay
    ("a-2", "c-coins"): 5000 + 1400,              # $50 deductible left, then 20% of the other $70 allowed
    ("a-4", "c-self"): 15000,                     # own session rate
    ("a-5", "c-slide"): 9000,                     # negotiated rate
    ("a-6", "c-copay"): 2500,                     # group: copay
    ("a-6", "c-self"): 8000,                      # group: the group fee, not the individual rate
    ("a-6", "c-slide"): 8000,                     # group: rate capped at the full (group) fee
    ("a-11", "c-self"): 17500,                    # the session's fee override
    ("a-7", "c-self"): 7500,                      # no-show fee: the client acknowledged the current policy
    # a-8: no late-cancel fee, c-noack never acknowledged the policy
}


def push_everything(put: Call, post: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clinicians/clin-2/", clinician_body("Sam Ortiz", "1245319599"))
    for external_id, body in CLIENTS.items():
        put(f"clients/{external_id}/", body)
    for external_id, benefits in COVERAGE.items():
        put(f"clients/{external_id}/coverage/", benefits)
    for external_id in ("c-self", "c-slide"):
        post(f"clients/{external_id}/policy-acknowledgments/",
             {"policy_version": "2", "acknowledged_at": "2026-11-01T12:00:00-05:00"})
    for external_id, body in APPOINTMENTS.items():
        put(f"appointments/{external_id}/", body)
    post("insurance-payments/", {"appointment": "a-1", "client": "c-copay", "payer_name": "Aetna",
                                 "allowed_cents": 12000, "paid_cents": 9500, "patient_responsibility_cents": 2500,
                                 "paid_on": "2026-12-10", "reference": "EOB-1"})


def counts() -> dict[str, int]:
    models = (Client, Coverage, PolicyAcknowledgment, Appointment, Participant, AppointmentEvent, Charge,
              ChargeEvent, LedgerEntry, ReviewItem, InsurancePayment, OutboundEmail, LogEntry)
    return {model.__name__: model.objects.count() for model in models}


def test_a_week_pushed_twice_bills_once_and_reads_back(practice: Practice, put: Call, post: Call, get: Call) -> None:
    push_everything(put, post)

    charges = get("charges/", page_size=100)["results"]
    found = {(c["appointment"], c["client"]): c["amount_cents"] for c in charges}
    assert found == EXPECTED_CHARGES
    assert {c["status"] for c in charges} == {"scheduled"}
    assert all(c["breakdown"][-1] == {"label": "You owe", "amount_cents": c["amount_cents"]} for c in charges)
    assert {c["kind"] for c in charges if c["appointment"] == "a-7"} == {"no_show_fee"}

    owed: dict[str, int] = {}
    for (_, client), amount in EXPECTED_CHARGES.items():
        owed[client] = owed.get(client, 0) + amount
    for external_id in CLIENTS:
        balance = get(f"clients/{external_id}/balance/")
        assert balance["balance_cents"] == owed.get(external_id, 0), external_id
        assert sum(balance["aging"].values()) == balance["balance_cents"]
        assert get(f"clients/{external_id}/")["balance_cents"] == owed.get(external_id, 0)

    appointment = get("appointments/a-6/")
    assert appointment["clients"] == ["c-copay", "c-self", "c-slide"]
    assert sorted(c["amount_cents"] for c in appointment["charges"]) == [2500, 8000, 8000]
    assert get("appointments/a-3/")["charges"] == []  # EAP plan: $0, nothing to collect

    before = counts()
    push_everything(put, post)
    assert counts() == before


def test_the_second_push_answers_200_with_the_same_record(practice: Practice, put: Call) -> None:
    put("clinicians/clin-1/", clinician_body(), expect=201)
    put("clients/c-self/", CLIENTS["c-self"], expect=201)
    first = put("appointments/a-4/", APPOINTMENTS["a-4"], expect=201)
    again = put("appointments/a-4/", APPOINTMENTS["a-4"], expect=200)
    assert again == first
