"""docs/api.md's errors: 401, 400 with per-field messages and nothing written, 404, 409, 413, 429; never a 500."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.db import transaction
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Appointment, Charge, ChargeStatus, Client, Practice
from billing.services.charges import charge_transition
from integrations.ehr.keys import IssuedKey, api_key_create, api_key_revoke
from integrations.ehr.models import ApiKey
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


# --- 401 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("header", [None, "Api-Key", "Api-Key pbp_deadbeef_nope", "Bearer abc", "Api-Key a b"])
def test_a_missing_or_wrong_key_gets_401(issued: IssuedKey, header: str | None) -> None:
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/clients/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


def test_a_revoked_key_gets_401(issued: IssuedKey, api: APIClient) -> None:
    assert api.get("/api/v1/clients/").status_code == 200
    api_key_revoke(api_key=issued.api_key, now=timezone.now())
    assert api.get("/api/v1/clients/").status_code == 401


def test_a_key_with_the_right_prefix_and_a_wrong_secret_gets_401(issued: IssuedKey) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {issued.key[:-3]}xyz")
    assert client.get("/api/v1/clients/").status_code == 401


def test_last_used_is_recorded_at_most_once_a_minute(issued: IssuedKey, api: APIClient,
                                                     django_assert_num_queries: Any) -> None:
    api.get("/api/v1/clinicians/")
    first = ApiKey.objects.get(pk=issued.api_key.pk).last_used_at
    assert first is not None
    api.get("/api/v1/clinicians/")
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_at == first


def test_keys_only_see_their_own_source(practice: Practice, put: Call) -> None:
    put("clients/c-1/", client_body("Ana"))
    other = api_key_create(source="therapynotes", now=timezone.now())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {other.key}")
    assert client.get("/api/v1/clients/c-1/").status_code == 404
    assert client.put("/api/v1/clients/c-1/", client_body("Bo"), format="json").status_code == 201
    assert Client.objects.filter(external_id="c-1").count() == 2


# --- 400 -------------------------------------------------------------------------------------------------

def test_invalid_appointment_gets_per_field_messages_and_writes_nothing(practice: Practice, api: APIClient,
                                                                        put: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    logged = LogEntry.objects.count()
    body = appointment_body(["c-1"], starts_at="2026-11-23T10:00:00", service_code="9083",
                            status="done", fee_cents=-5, diagnosis_codes=["not-icd"], duration_minutes=0, fee=1)
    response = api.put("/api/v1/appointments/a-1/", body, format="json")
    assert response.status_code == 400
    errors = response.json()
    assert set(errors) == {"starts_at", "service_code", "status", "fee_cents", "diagnosis_codes",
                           "duration_minutes", "fee"}
    assert "offset" in errors["starts_at"][0]
    assert errors["fee"] == ["Unknown field."]
    assert Appointment.objects.count() == 0
    assert LogEntry.objects.count() == logged


def test_unknown_references_are_400_and_nothing_is_written(practice: Practice, api: APIClient, put: Call) -> None:
    put("clients/c-1/", client_body("Ana"))
    response = api.put("/api/v1/appointments/a-1/", appointment_body(["c-1", "c-missing"]), format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"clinician", "clients"}
    assert "c-missing" in response.json()["clients"][0]
    assert Appointment.objects.count() == 0


@pytest.mark.parametrize(("field", "value"), [
    ("billing_type", "cash"), ("first_name", "x" * 101), ("first_name", "   "), ("date_of_birth", "1990-02-30"),
    ("date_of_birth", "1066-10-14"), ("session_rate_cents", -1), ("session_rate_cents", 12.5),
    ("session_rate_cents", 10**30), ("email", "not-an-email"), ("first_name", "\ud800"), ("phone", "a\x00b"),
    ("active", "perhaps"),
])
def test_bad_client_fields_are_400(practice: Practice, api: APIClient, field: str, value: Any) -> None:
    # json.dumps escapes a lone surrogate as \\ud800, as a real client's JSON library would.
    body = json.dumps({**client_body("Ana"), field: value}).encode()
    response = api.generic("PUT", "/api/v1/clients/c-1/", body, content_type="application/json")  # type: ignore[arg-type]
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Client.objects.exists()


def test_a_clinician_npi_must_pass_its_check_digit(practice: Practice, api: APIClient) -> None:
    response = api.put("/api/v1/clinicians/clin-1/", clinician_body(npi="1234567890"), format="json")
    assert response.status_code == 400
    assert "check digit" in response.json()["npi"][0]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2", b'{"first_name": NaN}', b"\xff\xfe"])
def test_malformed_json_is_400(practice: Practice, api: APIClient, body: bytes) -> None:
    response = api.generic("PUT", "/api/v1/clients/c-1/", body, content_type="application/json")  # type: ignore[arg-type]
    assert response.status_code == 400


def test_a_body_that_is_not_json_is_415(practice: Practice, api: APIClient) -> None:
    response = api.generic("PUT", "/api/v1/clients/c-1/", b"first_name=Ana", content_type="text/plain")  # type: ignore[arg-type]
    assert response.status_code == 415


def test_coverage_that_ends_before_it_starts_is_400(practice: Practice, api: APIClient, put: Call) -> None:
    put("clients/c-1/", client_body("Ana", "insurance"))
    response = api.put("/api/v1/clients/c-1/coverage/", {"effective_from": "2026-06-01",
                                                         "effective_to": "2026-01-01"}, format="json")
    assert response.status_code == 400
    assert "effective_to" in response.json()


@pytest.mark.parametrize("query", [{"status": "due"}, {"created_after": "2026-01-01T00:00:00"},
                                   {"cursor": "not base64!"}, {"cursor": "cD1hYmM="}, {"page_size": "0"},
                                   {"client": "a\x00"}])
def test_bad_list_parameters_are_400(practice: Practice, api: APIClient, query: dict[str, str]) -> None:
    assert api.get("/api/v1/charges/", query).status_code == 400


# --- 404 -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("get", "clients/nobody/"), ("get", "clients/nobody/balance/"), ("get", "clients/nobody/coverage/"),
    ("put", "clients/nobody/coverage/"), ("post", "clients/nobody/policy-acknowledgments/"),
    ("post", "clients/nobody/card-enrollment-link/"), ("get", "appointments/nothing/"),
    ("patch", "appointments/nothing/"), ("patch", "clients/nobody/"), ("get", "clinicians/nobody/"),
    ("get", "charges/999999/"),
])
def test_unknown_ids_are_404(practice: Practice, api: APIClient, method: str, path: str) -> None:
    body = {"policy_version": "2", "acknowledged_at": "2026-11-01T12:00:00Z"} if "policy" in path else {}
    response = getattr(api, method)(f"/api/v1/{path}", body, format="json")
    assert response.status_code == 404, response.content


# --- 409 -------------------------------------------------------------------------------------------------

@pytest.fixture
def paid_session(practice: Practice, put: Call) -> Charge:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))
    put("clients/c-2/", client_body("Bo", session_rate_cents=15000))
    put("appointments/a-1/", appointment_body(["c-1", "c-2"], status="completed"))
    charge = Charge.objects.get(client__external_id="c-1")
    now = timezone.now()
    with transaction.atomic():
        charge = Charge.objects.select_for_update().get(pk=charge.pk)
        charge_transition(charge=charge, to_status=ChargeStatus.PROCESSING, now=now, actor="test")
        charge_transition(charge=charge, to_status=ChargeStatus.SUCCEEDED, now=now + dt.timedelta(seconds=1),
                          actor="test", payment_reference="pi_123")
    return charge


@pytest.mark.parametrize("change", [{"fee_cents": 9000}, {"service_code": "90791"}, {"clients": ["c-2"]}])
def test_changing_what_was_paid_for_is_409_and_says_what_to_do(paid_session: Charge, api: APIClient,
                                                               change: dict[str, Any]) -> None:
    before = Appointment.objects.get(external_id="a-1")
    response = api.patch("/api/v1/appointments/a-1/", change, format="json")
    assert response.status_code == 409
    assert "refund or adjustment in the admin" in response.json()["detail"]
    # A sentence, not a status code put in one ("is already succeeded").
    assert "for client 'c-1' is already paid: money has moved" in response.json()["detail"]
    after = Appointment.objects.get(external_id="a-1")
    assert (after.fee_cents, after.service_code, after.participants.count()) == (
        before.fee_cents, before.service_code, 2)


def test_a_status_correction_after_payment_is_accepted_and_adjusts_the_balance(paid_session: Charge, put: Call,
                                                                               get: Call) -> None:
    put("appointments/a-1/", appointment_body(["c-1", "c-2"], status="canceled"))
    charge = get(f"charges/{paid_session.pk}/")
    assert charge["status"] == "succeeded"  # money moved: the charge is never edited
    assert get("clients/c-1/balance/")["balance_cents"] == 0  # the ledger got an adjustment


def test_adding_a_participant_to_a_paid_group_is_allowed(paid_session: Charge, put: Call, get: Call) -> None:
    put("clients/c-3/", client_body("Cy", session_rate_cents=15000))
    put("appointments/a-1/", appointment_body(["c-1", "c-2", "c-3"], status="completed"))
    assert len(get("appointments/a-1/")["charges"]) == 3


# --- 413 and 429 -----------------------------------------------------------------------------------------

@override_settings(EHR_API_MAX_BODY_BYTES=2000)
def test_an_oversized_body_is_413(practice: Practice, api: APIClient) -> None:
    events = [{"type": "client", "external_id": f"c-{i}", "data": client_body("Ana")} for i in range(50)]
    response = api.post("/api/v1/events/", {"events": events}, format="json")
    assert response.status_code == 413
    assert not Client.objects.exists()


def test_too_many_requests_for_a_key_is_429(practice: Practice, api: APIClient, settings: Any) -> None:
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"ehr_api": "3/min"}}
    statuses = [api.get("/api/v1/clients/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert "Retry-After" in api.get("/api/v1/clients/")
