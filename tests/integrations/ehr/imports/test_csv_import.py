"""CSV imports of EHR exports: presets, the dry run, all-or-nothing apply, and files that are not what they seem."""

from __future__ import annotations

import codecs
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client as HttpClient

from billing.models import Appointment, AppointmentStatus, Charge, Client, InsurancePayment, Practice
from integrations.ehr.imports.csv_import import ImportFileError, csv_import
from integrations.ehr.models import CsvImport, CsvImportStatus
from tests.integrations.ehr.conftest import SOURCE, Call, client_body, clinician_body

pytestmark = pytest.mark.django_db

SP_HEADER = "Date of Service,Time,Client,Client ID,Clinician,Service Code,Status,Rate,Duration"


@pytest.fixture
def people(practice: Practice, put: Call, post: Call) -> None:
    """What the API pushed before: a clinician and 50 clients."""
    put("clinicians/clin-1/", clinician_body())
    events = [{"type": "client", "external_id": f"c-{i}", "data": client_body(f"N{i}", session_rate_cents=15000)}
              for i in range(50)]
    post("events/", {"events": events}, expect=200)


def write(tmp_path: Path, text: str, encoding: str = "utf-8", name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def sp_rows(n: int, *, start: dt.date = dt.date(2027, 3, 1), status: str = "Show") -> list[str]:
    rows = []
    for i in range(n):
        day = start + dt.timedelta(days=i // 8)
        hour = 8 + i % 8
        rows.append(f"{day:%m/%d/%Y},{(hour - 1) % 12 + 1}:00 {'AM' if hour < 12 else 'PM'},N{i % 50} Example,"
                    f"c-{i % 50},Dana Reyes,90837,{status},$200.00,53")
    return rows


def test_5000_appointment_rows_import_in_one_go_and_again_change_nothing(people: None, tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([SP_HEADER, *sp_rows(5000)]) + "\n")
    report = csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", dry_run=False)
    assert report.applied and report.rejected == 0, report.problems
    assert report.counts["create"] == 5000
    assert Appointment.objects.filter(source=SOURCE).count() == 5000
    # "Show" on a session still to come is SimplePractice's default: scheduled here, nothing billed yet.
    assert set(Appointment.objects.values_list("status", flat=True)) == {AppointmentStatus.SCHEDULED}
    again = csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", dry_run=False)
    assert again.counts["unchanged"] == 5000 and again.counts["create"] == 0


def test_one_bad_row_imports_nothing_and_names_the_row_and_the_problem(people: None, tmp_path: Path) -> None:
    rows = sp_rows(5000)
    rows[2499] = rows[2499].replace(rows[2499].split(",")[0], "13/45/2027", 1)  # row 2501 counting the header
    path = write(tmp_path, "\n".join([SP_HEADER, *rows]) + "\n")
    report = csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", dry_run=False)
    assert not report.applied and report.rejected == 1
    assert report.problems[0].row == 2501
    message = report.problems[0].message
    assert "Date of Service" in message and "'13/45/2027' is not a date" in message
    assert Appointment.objects.count() == 0

    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("import_ehr_csv", str(path), source=SOURCE, kind="appointments", stdout=out, stderr=err)
    assert raised.value.returncode == 1
    assert "row 2501: Date of Service" in out.getvalue()
    assert Appointment.objects.count() == 0


def test_past_sessions_bill_as_the_api_would_and_statuses_map(people: None, tmp_path: Path, post: Call) -> None:
    post("clients/c-1/policy-acknowledgments/", {"policy_version": "2", "acknowledged_at": "2026-01-05T09:00:00Z"})
    text = "\n".join([SP_HEADER,
                      "11/02/2026,9:00 AM,N0 Example,c-0,Dana Reyes,90837,Show,$200.00,53",
                      "11/02/2026,10:00 AM,N1 Example,c-1,\"Dana Reyes, LCSW\",90837,No Show,$200.00,53",
                      "11/02/2026,11:00 AM,N2 Example,c-2,Dana Reyes,90837,Late Cancelled,$200.00,53",
                      "11/02/2026,1:00 PM,N3 Example,c-3,clin-1,90837,Cancelled,$200.00,53"])
    report = csv_import(path=write(tmp_path, text), source=SOURCE, kind="appointments", preset="simplepractice",
                        dry_run=False)
    assert report.applied, report.problems
    statuses = dict(Appointment.objects.values_list("external_id", "status"))
    assert statuses == {"c-0@2026-11-02T09:00": "completed", "c-1@2026-11-02T10:00": "no_show",
                        "c-2@2026-11-02T11:00": "late_cancel", "c-3@2026-11-02T13:00": "canceled"}
    charges = {(c.client.external_id, c.kind): c.amount_cents for c in Charge.objects.select_related("client")}
    # The same billing as an API push: the session at its fee, the no-show fee where the policy was acknowledged.
    assert charges == {("c-0", "session_fee"): 20000, ("c-1", "no_show_fee"): 7500}


def test_therapynotes_preset(people: None, tmp_path: Path) -> None:
    text = "\n".join(["Patient,Patient ID,Date,Time,Clinician,Service Code,Status,Charge Fee",
                      "N0 Example,c-0,2026-11-02,14:00,Dana Reyes,90837,Attended,",
                      "N1 Example,c-1,2026-11-03,15:30,Dana Reyes,90837,Missed,No",
                      "N2 Example,c-2,2026-11-04,09:00,Dana Reyes,90837,Canceled,Yes",
                      "N3 Example,c-3,2030-11-04,09:00,Dana Reyes,90837,Scheduled,"])
    report = csv_import(path=write(tmp_path, text), source=SOURCE, kind="appointments", preset="therapynotes",
                        dry_run=False)
    assert report.applied, report.problems
    assert sorted(Appointment.objects.values_list("status", flat=True)) == [
        "canceled", "completed", "late_cancel", "scheduled"]
    appointment = Appointment.objects.get(external_id="c-1@2026-11-03T15:30")
    assert appointment.starts_at == dt.datetime(2026, 11, 3, 20, 30, tzinfo=dt.UTC)  # 15:30 in New York


def test_clients_and_insurance_payments(practice: Practice, put: Call, tmp_path: Path) -> None:
    put("clinicians/clin-1/", clinician_body())
    clients = "\n".join(["Client ID,First Name,Last Name,Email,Phone,Date of Birth,Billing Type,Rate",
                         "c-1,Ana,Lopez,ana@example.com,555-0101,04/01/1990,Self-pay,$150.00",
                         "c-2,Ben,Ng,ben@example.com,,1985-12-31,Insurance,"])
    report = csv_import(path=write(tmp_path, clients), source=SOURCE, kind="clients", preset="simplepractice",
                        dry_run=False)
    assert report.applied and report.counts["create"] == 2, report.problems
    ana = Client.objects.get(external_id="c-1")
    assert (ana.billing_type, ana.session_rate_cents, ana.date_of_birth) == ("self_pay", 15000, dt.date(1990, 4, 1))

    appointments = "\n".join([SP_HEADER, "11/02/2026,9:00 AM,Ben Ng,c-2,Dana Reyes,90837,Show,,53"])
    assert csv_import(path=write(tmp_path, appointments), source=SOURCE, kind="appointments",
                      preset="simplepractice", dry_run=False).applied
    eob = "\n".join(["Client ID,Date of Service,Payer,Allowed Amount,Insurance Paid,Client Responsibility,"
                     "Payment Date,Reference",
                     "c-2,11/02/2026,Aetna,$120.00,$95.00,$25.00,11/20/2026,EFT-991"])
    report = csv_import(path=write(tmp_path, eob), source=SOURCE, kind="insurance-payments", preset="simplepractice",
                        dry_run=False)
    assert report.applied, report.problems
    payment = InsurancePayment.objects.get()
    assert (payment.allowed_cents, payment.paid_cents, payment.reference) == (12000, 9500, "EFT-991")


def test_dry_run_writes_nothing_and_says_what_would_happen(people: None, tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([SP_HEADER, *sp_rows(3)]))
    report = csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", dry_run=True)
    assert report.counts == {"create": 3, "change": 0, "unchanged": 0, "reject": 0}
    assert [r["outcome"] for r in report.preview] == ["create"] * 3
    assert Appointment.objects.count() == 0


def test_unknown_references_and_values_are_rejected_per_row(people: None, tmp_path: Path) -> None:
    text = "\n".join([SP_HEADER,
                      "11/02/2026,9:00 AM,X,c-404,Dana Reyes,90837,Show,,53",
                      "11/02/2026,9:00 AM,X,c-1,Nobody Here,90837,Show,,53",
                      "11/02/2026,9:00 AM,X,c-1,Dana Reyes,9083,Show,,53",
                      "11/02/2026,9:00 AM,X,c-1,Dana Reyes,90837,Maybe,,53",
                      "11/02/2026,25:00,X,c-1,Dana Reyes,90837,Show,,53",
                      "11/02/2026,9:00 AM,X,c-1,Dana Reyes,90837,Show,$-5,53,extra"])
    report = csv_import(path=write(tmp_path, text), source=SOURCE, kind="appointments", preset="simplepractice")
    messages = {p.row: p.message for p in report.problems}
    assert "c-404" in messages[2] and "Client ID" in messages[2]
    assert "no clinician 'Nobody Here'" in messages[3]
    assert messages[4].startswith("Service Code '9083'")
    assert "'Maybe' is not a status SimplePractice uses" in messages[5]
    assert "'25:00' is not a time" in messages[6]
    assert "7 cells but the header has" not in messages[7] and "10 cells" in messages[7]


@pytest.mark.parametrize(("encoding", "note"), [("utf-8", ""), ("utf-8-sig", ""), ("utf-16", "UTF-16"),
                                                ("utf-16-le", "UTF-16"), ("cp1252", "Windows-1252")])
def test_encodings(practice: Practice, tmp_path: Path, encoding: str, note: str) -> None:
    text = "Client ID,First Name,Last Name\r\nc-1,José,Núñez\r\n"
    report = csv_import(path=write(tmp_path, text, encoding), source=SOURCE, kind="clients",
                        preset="simplepractice", dry_run=False)
    assert report.applied, report.problems
    assert (note in " ".join(report.notes)) if note else not report.notes
    assert Client.objects.get().first_name == "José"
    assert Client.objects.get().last_name == "Núñez"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "The file is empty."),
    (b"\r\n\r\n", "The file is empty."),
    (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 4, "Excel workbook"),
    (bytes(range(256)) * 16, "binary data"),
    (b"%PDF-1.7\n", "PDF"),
    (("a," * 300 + "a\n").encode(), "301 columns"),
    (b"Date of Service,Client ID\n11/02/2026,c-1\n", "Missing required columns for SimplePractice appointments: "
                                                      "'Clinician' or 'Clinician Name' (the clinician"),
    (b'Date of Service,Client ID,Clinician,Service Code\n"11/02/2026,c-1\n', "malformed"),
])
def test_files_that_cannot_be_imported_get_a_clear_message(practice: Practice, tmp_path: Path, content: bytes,
                                                           message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError) as raised:
        csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice")
    assert message in str(raised.value)


def test_a_custom_mapping_fills_what_the_preset_lacks(people: None, tmp_path: Path) -> None:
    text = "\n".join(["When,Who,Therapist,Code,Attendance", "2026-11-02 09:00,c-1,Dana Reyes,90837,Show"])
    path = write(tmp_path, text)
    with pytest.raises(ImportFileError, match="Missing required columns"):
        csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice")
    report = csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", dry_run=False,
                        mapping={"When": "date", "Who": "client", "Therapist": "clinician", "Code": "service_code"})
    assert report.applied, report.problems
    assert Appointment.objects.get().status == "completed"
    with pytest.raises(ImportFileError, match="'Nope', which the file does not have"):
        csv_import(path=path, source=SOURCE, kind="appointments", preset="simplepractice", mapping={"Nope": "date"})


def test_a_reimport_keeps_what_the_file_does_not_carry(people: None, put: Call, tmp_path: Path) -> None:
    put("appointments/a-1/", {"clinician": "clin-1", "clients": ["c-1"], "service_code": "90837",
                              "diagnosis_codes": ["F41.1"], "starts_at": "2027-03-01T09:00:00-05:00",
                              "duration_minutes": 53})
    text = "\n".join(["Appointment ID," + SP_HEADER, "a-1,03/01/2027,9:00 AM,X,c-1,Dana Reyes,90837,Show,,53"])
    report = csv_import(path=write(tmp_path, text), source=SOURCE, kind="appointments", preset="simplepractice",
                        dry_run=False)
    assert report.counts["unchanged"] == 1, (report.counts, report.problems)
    assert Appointment.objects.get().diagnosis_codes == ["F41.1"]


def test_consecutive_rows_of_one_appointment_id_are_a_group_session(people: None, tmp_path: Path) -> None:
    text = "\n".join(["Appointment ID," + SP_HEADER] + [
        f"g-1,03/01/2027,5:00 PM,X,c-{i},Dana Reyes,90853,Show,,90" for i in range(3)])
    report = csv_import(path=write(tmp_path, text), source=SOURCE, kind="appointments", preset="simplepractice",
                        dry_run=False)
    assert report.applied and report.counts["create"] == 3
    assert sorted(Appointment.objects.get().participants.values_list("client__external_id", flat=True)) == [
        "c-0", "c-1", "c-2"]


# --- The command and the admin -----------------------------------------------------------------------------

def test_command_dry_run_then_apply(people: None, tmp_path: Path) -> None:
    path = write(tmp_path, "\n".join([SP_HEADER, *sp_rows(30)]))
    out, err = io.StringIO(), io.StringIO()
    call_command("import_ehr_csv", str(path), source=SOURCE, kind="appointments", preset="simplepractice",
                 dry_run=True, progress_every=10, stdout=out, stderr=err)
    assert "Dry run" in out.getvalue() and "30 would be created" in out.getvalue()
    assert "30 rows read" in err.getvalue()
    assert Appointment.objects.count() == 0
    call_command("import_ehr_csv", str(path), source=SOURCE, kind="appointments", stdout=out, stderr=err)
    assert "Imported." in out.getvalue()
    assert Appointment.objects.count() == 30
    with pytest.raises(CommandError) as raised:
        call_command("import_ehr_csv", str(tmp_path / "none.csv"), source=SOURCE, kind="clients", stdout=out)
    assert raised.value.returncode == 2


def test_a_command_import_is_in_the_audit_trail_as_the_system_account(people: None, tmp_path: Path) -> None:
    path = write(tmp_path, "Client ID,First Name,Last Name,Email\nc-1,N1,Example,new-address@example.com\n")
    call_command("import_ehr_csv", str(path), source=SOURCE, kind="clients", stdout=io.StringIO(),
                 stderr=io.StringIO())
    client = Client.objects.get(source=SOURCE, external_id="c-1")
    assert client.email == "new-address@example.com"
    entry = LogEntry.objects.get_for_object(client).filter(action=LogEntry.Action.UPDATE).get()
    assert entry.actor is not None and entry.actor.username == "system"
    assert entry.additional_data == {"via": "command:import_ehr_csv"}


def test_a_command_import_names_evening_sessions_by_the_practices_time(people: None, tmp_path: Path) -> None:
    # 8:30 PM in New York is 01:30 the next day in UTC; the command runs outside any request.
    path = write(tmp_path, "\n".join([SP_HEADER, "03/01/2027,8:30 PM,N1 Example,c-1,Dana Reyes,90837,Show,$200.00,53"]))
    call_command("import_ehr_csv", str(path), source=SOURCE, kind="appointments", stdout=io.StringIO(),
                 stderr=io.StringIO())
    appointment = Appointment.objects.get(source=SOURCE)
    assert appointment.starts_at == dt.datetime(2027, 3, 2, 1, 30, tzinfo=dt.UTC)
    entry = LogEntry.objects.get_for_object(appointment).filter(action=LogEntry.Action.CREATE).get()
    assert entry.object_repr == "90837 on 2027-03-01 20:30"


def upload(admin_client: HttpClient, path: Path, **fields: Any) -> Any:
    with path.open("rb") as handle:
        return admin_client.post("/admin/ehr/csvimport/add/", {
            "source": SOURCE, "kind": "appointments", "preset": "simplepractice", "mapping": "", "file": handle,
            **fields})


def test_admin_upload_preview_and_apply(people: None, admin_client: HttpClient, tmp_path: Path,
                                        settings: Any, sync_tasks: None) -> None:
    settings.EHR_CSV_STAGING_DIR = str(tmp_path / "staging")
    rows = sp_rows(20)
    path = write(tmp_path, "\n".join([SP_HEADER, *rows]))
    response = upload(admin_client, path)
    assert response.status_code == 302, response.content
    record = CsvImport.objects.get()
    assert Path(record.staged_path).exists() and record.status == CsvImportStatus.PREVIEWED
    page = admin_client.get(response["Location"])
    html = page.content.decode()
    assert "would create" in html and "Apply: import 20 rows" in html and html.count("<td>create</td>") == 20
    assert Appointment.objects.count() == 0

    done = admin_client.post(response["Location"], {"action": "apply"}, follow=True)
    assert "Imported export.csv: 20 rows" in done.content.decode() and "rows/s" in done.content.decode()
    record.refresh_from_db()
    assert record.status == CsvImportStatus.APPLIED and record.rows_per_second
    assert not record.staged_path and not list((tmp_path / "staging").iterdir())
    assert Appointment.objects.count() == 20
    assert admin_client.get("/admin/ehr/csvimport/").status_code == 200


def test_admin_shows_rejected_rows_and_offers_no_apply(people: None, admin_client: HttpClient, tmp_path: Path,
                                                       settings: Any, sync_tasks: None) -> None:
    settings.EHR_CSV_STAGING_DIR = str(tmp_path / "staging")
    rows = sp_rows(5)
    rows[2] = rows[2].replace("90837", "ABC")
    response = upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *rows])))
    html = admin_client.get(response["Location"]).content.decode()
    assert "Rejected rows" in html and "<td>4</td>" in html and "Service Code &#x27;ABC&#x27;" in html
    assert "Apply:" not in html
    refused = admin_client.post(response["Location"], {"action": "discard"}, follow=True)
    assert "Discarded" in refused.content.decode()
    assert not list((tmp_path / "staging").iterdir())


def test_admin_upload_of_junk_says_why(practice: Practice, admin_client: HttpClient, tmp_path: Path,
                                       settings: Any) -> None:
    settings.EHR_CSV_STAGING_DIR = str(tmp_path / "staging")
    path = tmp_path / "report.xlsx"
    path.write_bytes(b"PK\x03\x04" + bytes(200))
    response = upload(admin_client, path)
    assert response.status_code == 200
    assert "looks like an Excel workbook" in response.content.decode()
    assert not CsvImport.objects.exists() and not list((tmp_path / "staging").iterdir())


def test_bom_and_header_whitespace(people: None, tmp_path: Path) -> None:
    text = codecs.BOM_UTF8.decode() + " Date of Service ;Time;Client ID;Clinician;Service Code;Status\n" \
        "03/01/2027;9:00 AM;c-1;Dana Reyes;90837;Show\n"
    report = csv_import(path=write(tmp_path, text), source=SOURCE, kind="appointments", preset="simplepractice",
                        dry_run=False)
    assert report.applied, report.problems
