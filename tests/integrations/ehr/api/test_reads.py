"""Reads: cursor pagination, filters, coverage, balance, reconciliation, the card link, and the schema."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from auditlog.models import LogEntry
from django.conf import settings
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from billing.models import Charge, Coverage, Payer, Practice
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


def test_lists_page_with_a_cursor_until_the_end(practice: Practice, put: Call, api: APIClient) -> None:
    for i in range(7):
        put(f"clients/c-{i}/", client_body(f"N{i}"))
    seen: list[str] = []
    url: str | None = "/api/v1/clients/?page_size=3"
    pages = 0
    while url:
        page = api.get(url).json()
        seen += [c["external_id"] for c in page["results"]]
        url = page["next"]
        pages += 1
    assert (pages, seen) == (3, [f"c-{i}" for i in range(7)])


def test_charge_filters(practice: Practice, put: Call, get: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))
    put("clients/c-2/", client_body("Bo", session_rate_cents=12000))
    put("appointments/a-1/", appointment_body(["c-1"], status="completed"))
    put("appointments/a-2/", appointment_body(["c-2"], status="completed"))
    put("appointments/a-3/", appointment_body(["c-2"], status="scheduled"))

    def amounts(**params: Any) -> list[int]:
        return sorted(c["amount_cents"] for c in get("charges/", **params)["results"])

    assert amounts() == [12000, 15000]
    assert amounts(client="c-2") == [12000]
    assert amounts(appointment="a-1") == [15000]
    assert amounts(status="scheduled", kind="session_fee") == [12000, 15000]
    assert amounts(status="succeeded") == []
    assert amounts(created_after="2199-01-01T00:00:00Z") == []
    assert amounts(client="c-unknown") == []
    appointments = get("appointments/", client="c-2", status="completed")["results"]
    assert [a["external_id"] for a in appointments] == ["a-2"]


def test_coverage_put_maps_the_payer_replaces_benefits_and_reprices(practice: Practice, put: Call,
                                                                    get: Call, api: APIClient) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", "insurance"))
    put("appointments/a-1/", appointment_body(["c-1"], status="completed"))
    assert not Charge.objects.exists()  # no benefits yet: waits in review

    body = {"payer_name": "Cigna", "payer_id": "62308", "member_id": "C1", "copay_cents": 3000}
    assert api.put("/api/v1/clients/c-1/coverage/", body, format="json").status_code == 201
    assert Payer.objects.get(payer_id="62308").name == "Cigna"
    # Cigna has no fee schedule: the copay stands as is.
    assert get("charges/")["results"][0]["amount_cents"] == 3000

    logged = LogEntry.objects.count()
    assert api.put("/api/v1/clients/c-1/coverage/", body, format="json").status_code == 200
    assert LogEntry.objects.count() == logged

    response = api.patch("/api/v1/clients/c-1/coverage/", {"copay_cents": 2000}, format="json")
    assert response.status_code == 200
    assert response.json()["payer_id"] == "62308"
    assert Coverage.objects.count() == 1
    assert get("charges/")["results"][0]["amount_cents"] == 2000  # the pending charge followed


def test_balance_and_client_reads(practice: Practice, put: Call, get: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))
    put("appointments/a-1/", appointment_body(["c-1"], status="completed"))
    client = get("clients/c-1/")
    assert client["balance_cents"] == 15000
    assert client["card_on_file"] is None
    assert client["stripe_link_status"] is None
    assert client["flagged_for_outreach"] is False
    balance = get("clients/c-1/balance/")
    assert balance["balance_cents"] == 15000
    assert set(balance["aging"]) == {"current", "days_31_60", "days_61_90", "days_over_90"}


def test_reconciliation_lists_completed_sessions_without_a_charge(practice: Practice, put: Call, get: Call,
                                                                  api: APIClient) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", "insurance"))  # no benefits: cannot be priced
    put("clients/c-2/", client_body("Bo", session_rate_cents=15000))
    put("appointments/a-1/", appointment_body(["c-1"], status="completed"))
    put("appointments/a-2/", appointment_body(["c-2"], status="completed"))
    report = get("reconciliation/", week="2026-W48")
    assert [(f["kind"], f["appointment"], f["client"]) for f in report["findings"]] == [
        ("unpaid_session", "a-1", "c-1")]
    csv = api.get("/api/v1/reconciliation/", {"week": "2026-W48", "format": "csv"})
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    assert csv.content.decode().splitlines()[1].startswith("unpaid_session,a-1,c-1,")
    assert api.get("/api/v1/reconciliation/", {"week": "2026-W60"}).status_code == 400
    assert api.get("/api/v1/reconciliation/").status_code == 400


def test_policy_acknowledgment_is_recorded_once(practice: Practice, post: Call, put: Call) -> None:
    put("clients/c-1/", client_body("Ana"))
    body = {"policy_version": "2", "acknowledged_at": "2026-11-01T12:00:00-05:00"}
    assert post("clients/c-1/policy-acknowledgments/", body, expect=201)["is_current_policy"] is True
    post("clients/c-1/policy-acknowledgments/", body, expect=200)


def test_card_enrollment_link_opens_the_card_page_and_can_be_emailed(
        practice: Practice, put: Call, api: APIClient, django_capture_on_commit_callbacks: Any) -> None:
    put("clients/c-1/", client_body("Ana"))
    response = api.post("/api/v1/clients/c-1/card-enrollment-link/", {"send_email": False}, format="json")
    assert response.status_code == 201
    assert set(response.json()) == {"url", "expires_at"}
    page = Client().get(response.json()["url"].removeprefix(settings.PORTAL_BASE_URL))
    assert page.status_code == 200
    assert b"Save a card for your sessions" in page.content
    with django_capture_on_commit_callbacks(execute=True):
        emailed = api.post("/api/v1/clients/c-1/card-enrollment-link/", {"send_email": True}, format="json")
    assert emailed.status_code == 201
    assert [m.to for m in mail.outbox] == [["ana@example.com"]]
    assert emailed.json()["url"] in mail.outbox[0].body


def test_patch_changes_only_the_fields_given(practice: Practice, put: Call, api: APIClient) -> None:
    put("clients/c-1/", client_body("Ana", phone="555-0101"))
    response = api.patch("/api/v1/clients/c-1/", {"phone": "555-0199"}, format="json")
    assert response.status_code == 200
    assert (response.json()["phone"], response.json()["first_name"]) == ("555-0199", "Ana")


def test_routes_answer_without_their_trailing_slash(practice: Practice, api: APIClient) -> None:
    assert api.put("/api/v1/clients/c-1", client_body("Ana"), format="json").status_code == 201


def test_the_schema_documents_every_resource_and_the_docs_render(api: APIClient) -> None:
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    paths = set(schema["paths"])
    assert {"/api/v1/clients/{external_id}/", "/api/v1/clients/{external_id}/coverage/",
            "/api/v1/clients/{external_id}/policy-acknowledgments/", "/api/v1/events/", "/api/v1/charges/",
            "/api/v1/charges/{id}/", "/api/v1/clients/{external_id}/balance/", "/api/v1/reconciliation/",
            "/api/v1/appointments/{external_id}/", "/api/v1/insurance-payments/",
            "/api/v1/clients/{external_id}/card-enrollment-link/", "/api/v1/clinicians/{external_id}/"} <= paths
    put = schema["paths"]["/api/v1/appointments/{external_id}/"]["put"]
    assert {"200", "201", "400", "401", "409", "413", "429"} <= set(put["responses"])
    assert schema["components"]["schemas"]["AppointmentInRequest"]["additionalProperties"] is False
    assert APIClient().get("/api/docs/").status_code == 200
