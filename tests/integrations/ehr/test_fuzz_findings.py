"""What schemathesis found against /api/schema/, kept fixed: the API answers as its schema says."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from billing.models import Practice
from tests.integrations.ehr.conftest import Call, client_body

pytestmark = pytest.mark.django_db


def test_an_event_whose_type_is_not_text_is_an_error_result_not_a_500(practice: Practice, post: Call) -> None:
    body = post("events/", [{"type": {}, "external_id": None, "data": None}, {"type": ["client"]}], expect=200)
    assert [r["status"] for r in body["results"]] == ["error", "error"]


def test_a_charge_id_that_is_not_a_number_is_the_apis_json_404(practice: Practice, api: APIClient) -> None:
    response = api.get("/api/v1/charges/null,null/")
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize(("field", "value"), [("active", 0), ("active", "yes"), ("first_name", 0),
                                              ("session_rate_cents", "15000")])
def test_json_types_are_the_schemas(practice: Practice, put: Call, field: str, value: object) -> None:
    errors = put("clients/c-1/", {**client_body("Ana"), field: value}, expect=400)
    assert field in errors


def test_coverage_numbers_are_numbers(practice: Practice, put: Call) -> None:
    put("clients/c-1/", client_body("Ana", "insurance"))
    assert "coinsurance_percent" in put("clients/c-1/coverage/", {"coinsurance_percent": "20"}, expect=400)
    assert "plan_category" in put("clients/c-1/coverage/", {"plan_category": 0}, expect=400)


def test_lists_answer_the_documented_page_and_take_far_dates_as_no_bound(practice: Practice, get: Call) -> None:
    page = get("appointments/", starts_before="5353-05-28T06:56:11+03:19", starts_after="0736-01-26T21:59:47-00:26")
    assert page == {"next": None, "previous": None, "results": []}
    assert get("charges/", created_after="5045-05-18T21:11:11Z")["results"] == []
