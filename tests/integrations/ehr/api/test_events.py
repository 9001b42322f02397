"""POST /api/v1/events/: a batch applied in order, one result per event; a bad event never stops the others."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Appointment, Charge, ChargeStatus, Client, Practice
from billing.services.charges import charge_transition
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


def event(kind: str, external_id: str | None, data: Any) -> dict[str, Any]:
    return {"type": kind, "external_id": external_id, "data": data}


def test_a_bad_event_in_the_middle_stops_nothing(practice: Practice, put: Call, post: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    batch = [
        event("client", "c-1", client_body("Ana", session_rate_cents=15000)),
        event("appointment", "a-1", appointment_body(["c-1"], status="completed")),
        event("client", "c-2", client_body("Bo", billing_type="cash")),                 # invalid
        event("appointment", "a-2", appointment_body(["c-1", "c-nobody"])),             # unknown client
        event("coverage", "c-nobody", {"payer_name": "Aetna"}),                         # unknown client
        "not an event",
        event("séance", "x", {}),
        event("client", "c-1", client_body("Ana", session_rate_cents=15000)),           # same again
        event("client", "c-1", client_body("Ana", session_rate_cents=16000)),           # re-prices a-1
        event("policy_acknowledgment", "c-1", {"policy_version": "2",
                                               "acknowledged_at": "2026-11-01T09:00:00Z"}),
        event("insurance_payment", None, {"appointment": "a-1", "client": "c-1", "allowed_cents": 1,
                                          "paid_cents": 0, "patient_responsibility_cents": 0,
                                          "paid_on": "2026-12-01", "reference": "R1"}),
    ]
    response = post("events/", {"events": batch}, expect=200)
    statuses = [r["status"] for r in response["results"]]
    assert statuses == ["created", "created", "error", "error", "error", "error", "error", "unchanged", "updated",
                        "created", "created"]
    assert response["counts"] == {"created": 4, "updated": 1, "unchanged": 1, "error": 5}
    errors = response["results"]
    assert errors[2]["code"] == "invalid" and "billing_type" in errors[2]["errors"]
    assert errors[3]["code"] == "invalid" and "c-nobody" in errors[3]["errors"]["clients"][0]
    assert errors[4]["code"] == "not_found"
    assert "type" in errors[6]["errors"]
    assert list(Client.objects.values_list("external_id", flat=True)) == ["c-1"]
    assert Charge.objects.get().amount_cents == 16000


def test_the_same_batch_twice_is_all_unchanged(practice: Practice, put: Call, post: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    batch = [event("client", f"c-{i}", client_body(f"N{i}", session_rate_cents=10000)) for i in range(5)]
    batch += [event("appointment", f"a-{i}", appointment_body([f"c-{i}", f"c-{(i + 1) % 5}"],
                                                              status="completed", service_code="90853"))
              for i in range(5)]
    assert post("events/", batch, expect=200)["counts"]["created"] == 10  # a bare array is accepted too
    assert post("events/", {"events": batch}, expect=200)["counts"] == {
        "created": 0, "updated": 0, "unchanged": 10, "error": 0}
    assert Charge.objects.count() == 10


def test_a_conflicting_event_is_reported_and_the_rest_applied(practice: Practice, put: Call, post: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))
    put("appointments/a-1/", appointment_body(["c-1"], status="completed"))
    with transaction.atomic():
        charge = Charge.objects.select_for_update().get()
        charge_transition(charge=charge, to_status=ChargeStatus.PROCESSING, now=timezone.now(), actor="test")
    response = post("events/", [
        event("appointment", "a-1", appointment_body(["c-1"], status="completed", fee_cents=1000)),
        event("appointment", "a-2", appointment_body(["c-1"])),
    ], expect=200)
    assert [r["status"] for r in response["results"]] == ["error", "created"]
    assert response["results"][0]["code"] == "conflict"
    assert Appointment.objects.get(external_id="a-1").fee_cents is None


def test_an_event_that_fails_after_writing_leaves_nothing_behind(practice: Practice, put: Call, post: Call) -> None:
    # The event creates the appointment's row before finding the client list wrong? No: references are checked
    # first. Here the second event of the same appointment changes it and then conflicts; the first stays.
    put("clinicians/clin-1/", clinician_body())
    response = post("events/", [
        event("client", "c-1", client_body("Ana")),
        event("appointment", "a-1", {**appointment_body(["c-1"]), "clinician": "clin-404"}),
        event("appointment", "a-1", appointment_body(["c-1"])),
    ], expect=200)
    assert [r["status"] for r in response["results"]] == ["created", "error", "created"]
    assert Appointment.objects.count() == 1


@pytest.mark.parametrize("body", [{"events": "x"}, {"events": [], "extra": 1}, 5, {"nope": []}])
def test_a_malformed_batch_is_400(practice: Practice, api: APIClient, body: Any) -> None:
    assert api.post("/api/v1/events/", body, format="json").status_code == 400


def test_more_than_1000_events_is_400(practice: Practice, api: APIClient) -> None:
    response = api.post("/api/v1/events/", [event("client", "c", {})] * 1001, format="json")
    assert response.status_code == 400
    assert "1000" in response.json()["events"][0] or "1,000" in response.json()["events"][0]


@pytest.mark.parametrize("depth", [100_000, 900, 33])
def test_a_batch_nested_too_deeply_is_400_with_a_clear_message(practice: Practice, api: APIClient,
                                                               depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    response = api.generic("POST", "/api/v1/events/", body, content_type="application/json")  # type: ignore[arg-type]
    assert response.status_code == 400, response.content[:300]
    assert response.json()["detail"] == "The JSON is nested too deeply: at most 32 levels of objects and arrays."
    nested: Any = {"first_name": "Ana"}
    for _ in range(40):
        nested = {"x": nested}
    single = api.put("/api/v1/clients/c-1/", nested, format="json")
    assert single.status_code == 400 and "nested too deeply" in single.json()["detail"]
    assert not Client.objects.exists()
