"""The place of service reaches the session whichever way it comes in: the API, its events batch, a CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from billing.models import Appointment, Practice
from integrations.ehr.imports.csv_import import csv_import
from tests.integrations.ehr.conftest import SOURCE, Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


@pytest.fixture
def people(practice: Practice, put: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))


def test_the_api_takes_the_place_of_service_and_gives_it_back(people: None, put: Call, post: Call,
                                                              get: Call) -> None:
    body = put("appointments/a-1/", appointment_body(["c-1"], place_of_service="10"))
    assert body["place_of_service"] == "10"
    assert Appointment.objects.get(external_id="a-1").cpt_modifiers == ["95"]
    assert get("appointments/a-1/")["place_of_service"] == "10"
    # PUT replaces the record: a body without the field means not recorded.
    assert put("appointments/a-1/", appointment_body(["c-1"]))["place_of_service"] == ""
    batch = post("events/", {"events": [{"type": "appointment", "external_id": "a-2",
                                         "data": appointment_body(["c-1"], place_of_service="02")}]}, expect=200)
    assert batch["results"][0]["status"] == "created", batch
    assert Appointment.objects.get(external_id="a-2").place_of_service == "02"


@pytest.mark.parametrize("value", ["12", "telehealth", 10, "95"])
def test_the_api_refuses_a_place_of_service_it_does_not_know(people: None, put: Call, value: object) -> None:
    errors = put("appointments/a-1/", appointment_body(["c-1"], place_of_service=value), expect=400)
    assert "place_of_service" in errors
    assert not Appointment.objects.exists()


def test_a_csv_column_sets_the_place_of_service_and_a_bad_one_names_the_row(people: None, tmp_path: Path) -> None:
    header = "Date of Service,Time,Client ID,Clinician,Service Code,Status,Place of Service"
    rows = ["03/01/2027,9:00 AM,c-1,Dana Reyes,90837,Show,11", "03/02/2027,9:00 AM,c-1,Dana Reyes,90837,Show,2",
            "03/03/2027,9:00 AM,c-1,Dana Reyes,90837,Show,10 - Telehealth in patient's home",
            "03/04/2027,9:00 AM,c-1,Dana Reyes,90837,Show,"]
    path = tmp_path / "export.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    report = csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", dry_run=False)
    assert report.applied, report.problems
    places = list(Appointment.objects.order_by("starts_at").values_list("place_of_service", flat=True))
    assert places == ["11", "02", "10", ""]

    path.write_text("\n".join([header, "03/05/2027,9:00 AM,c-1,Dana Reyes,90837,Show,Telehealth"]) + "\n")
    report = csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", dry_run=False)
    assert not report.applied and report.problems[0].row == 2
    assert "Place of Service: 'Telehealth' is not a place of service" in report.problems[0].message
    assert Appointment.objects.count() == 4
