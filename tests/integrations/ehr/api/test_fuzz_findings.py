"""What schemathesis found against /api/schema/, kept fixed: the API answers as its schema says."""

from __future__ import annotations

import re

import pytest
from rest_framework.test import APIClient

from billing.models import Practice
from integrations.ehr.api.pagination import CURSOR_PATTERN
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

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
    assert "plan_category" in put("clients/c-1/coverage/", {"plan_category": 0}, expect=400)


def test_a_coinsurance_sent_as_text_is_taken_like_the_number(practice: Practice, put: Call) -> None:
    """Some EHRs send the percent as a string: "20" is taken as 20."""
    from billing.models import Coverage

    put("clients/c-1/", client_body("Ana", "insurance"))
    assert put("clients/c-1/coverage/", {"coinsurance_percent": "20"})["coinsurance_percent"] == 20
    assert str(Coverage.objects.get().coinsurance_percent) == "20.00"
    assert put("clients/c-1/coverage/", {"coinsurance_percent": 20})["coinsurance_percent"] == 20
    assert put("clients/c-1/coverage/", {"coinsurance_percent": "12.5"})["coinsurance_percent"] == 12.5
    # Only the number itself as text: no sign, exponent, spaces, NaN, or more than two decimals or 100.
    for text in ("1e1", " 20", "20 ", "-5", "+5", "NaN", "20%", "12.345", "100.01", "101", "", "twenty"):
        assert "coinsurance_percent" in put("clients/c-1/coverage/", {"coinsurance_percent": text}, expect=400), text
    assert put("clients/c-1/coverage/", {"coinsurance_percent": None})["coinsurance_percent"] is None


def test_lists_answer_the_documented_page_and_take_far_dates_as_no_bound(practice: Practice, get: Call) -> None:
    page = get("appointments/", starts_before="5353-05-28T06:56:11+03:19", starts_after="0736-01-26T21:59:47-00:26")
    assert page == {"next": None, "previous": None, "results": []}
    assert get("charges/", created_after="5045-05-18T21:11:11Z")["results"] == []


# --- The second round: schema-valid input the API refused, and what the schema now states -------------

def test_the_date_patterns_admit_exactly_the_dates_the_api_takes() -> None:
    import datetime as dt
    import re

    from integrations.ehr.api.fields import DATE_PATTERN, EARLIEST, LATEST

    pattern = re.compile(DATE_PATTERN)
    for year in [1899, 1900, 1904, 2000, 2024, 2100, 2199, 2200]:
        for month in range(0, 14):
            for day in range(0, 33):
                try:
                    taken = EARLIEST <= dt.date(year, month, day) <= LATEST
                except ValueError:
                    taken = False
                assert bool(pattern.fullmatch(f"{year:04d}-{month:02d}-{day:02d}")) is taken, (year, month, day)


def test_the_week_pattern_admits_exactly_the_weeks_that_exist() -> None:
    import re

    from billing.services.reconciliation import WeekInvalid, iso_week_monday
    from integrations.ehr.api.fields import iso_week_pattern

    pattern = re.compile(iso_week_pattern())
    for year in [1899, 1900, 2020, 2021, 2026, 2027, 2199, 2200, 9999]:
        for week in range(0, 55):
            text = f"{year}-W{week:02d}"
            try:
                iso_week_monday(text)
                exists = 1900 <= year <= 2199
            except WeekInvalid:
                exists = False
            assert bool(pattern.fullmatch(text)) is exists, text


@pytest.mark.parametrize(("week", "expect"), [("2026-W53", 200), ("2027-W53", 400), ("2026-W00", 400),
                                              ("1899-W52", 400), ("9999-W52", 400)])
def test_reconciliation_weeks(practice: Practice, get: Call, week: str, expect: int) -> None:
    # 9999-W52 was a 500: the week after it overflows the calendar.
    get("reconciliation/", expect=expect, week=week)


def test_an_unknown_format_is_a_bad_parameter_not_a_missing_record(practice: Practice, api: APIClient) -> None:
    response = api.get("/api/v1/reconciliation/", {"week": "2026-W48", "format": "xml"})
    assert response.status_code == 400 and "format" in response.json()


def test_a_time_is_in_range_by_the_date_written(practice: Practice, put: Call, post: Call) -> None:
    # 00:30 at UTC+1 on 1 January 1900 is still 1899 in UTC; the schema's pattern reads the date as written.
    put("clients/c-1/", client_body("Ana"))
    post("clients/c-1/policy-acknowledgments/", {"policy_version": "1", "acknowledged_at": "1900-01-01T00:30:00+01:00"},
         expect=201)
    post("clients/c-1/policy-acknowledgments/", {"policy_version": "2", "acknowledged_at": "1899-12-31T23:30:00-01:00"},
         expect=400)


def test_list_filters_far_in_time_with_an_offset_are_no_bound(practice: Practice, get: Call) -> None:
    # Year 1 or 9999 with an offset overflowed the conversion to UTC before the range was read.
    assert get("appointments/", starts_after="0001-01-01T00:00:00+05:00",
               starts_before="9999-12-31T23:00:00-05:00")["results"] == []


def test_cursors_are_the_ones_the_schema_states(practice: Practice, put: Call, api: APIClient) -> None:
    for i in range(3):
        put(f"clients/c-{i}/", client_body(f"N{i}"))
    next_link = api.get("/api/v1/clients/", {"page_size": 2}).json()["next"]
    cursor = next_link.split("cursor=")[1].split("&")[0]
    assert re.fullmatch(CURSOR_PATTERN, cursor)
    assert [c["external_id"] for c in api.get(next_link).json()["results"]] == ["c-2"]
    # Any cursor the pattern admits reads (a page, maybe empty); anything else is a 400.
    assert api.get("/api/v1/clients/", {"cursor": "o3rp999999999999999999"}).status_code == 200
    assert api.get("/api/v1/clients/", {"cursor": "cD0x"}).status_code == 400


@pytest.mark.parametrize(("query", "expect"), [({"active": "true"}, 200), ({"active": "false"}, 200),
                                               ({"active": ""}, 400), ({"active": "yes"}, 400),
                                               ({"active": "1"}, 400)])
def test_a_boolean_filter_is_true_or_false(practice: Practice, api: APIClient, query: dict[str, str],
                                           expect: int) -> None:
    assert api.get("/api/v1/clients/", query).status_code == expect


# Arabic-Indic and full-width digits are digits to Python's \d, not to the schema's [0-9].
@pytest.mark.parametrize("code", ["\u0669\u0660\u0668\u06637", "\uff19\uff10\uff18\uff137"])
def test_codes_are_ascii_digits(practice: Practice, put: Call, code: str) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    errors = put("appointments/a-1/", appointment_body(["c-1"], service_code=code), expect=400)
    assert "service_code" in errors


def test_coinsurance_has_two_decimal_places(practice: Practice, put: Call) -> None:
    put("clients/c-1/", client_body("Ana", "insurance"))
    assert put("clients/c-1/coverage/", {"coinsurance_percent": 0.07})["coinsurance_percent"] == 0.07
    assert "coinsurance_percent" in put("clients/c-1/coverage/", {"coinsurance_percent": 79.7458}, expect=400)
