"""Admin CSV imports run in the task queue: the job's states, the progress JSON, all-or-nothing applies, who may
watch or act, and progress that is visible from another connection while the import's transaction is open."""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import User
from django.contrib.staticfiles import finders
from django.db import connection, connections
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from django_q.exceptions import TimeoutException
from django_q.models import OrmQ

from billing.models import Appointment
from integrations.ehr.imports import csv_jobs
from integrations.ehr.imports.csv_import import Report
from integrations.ehr.imports.csv_jobs import (
    csv_import_job_run,
    job_check_stopped,
    job_progress,
    job_start,
    staging_root,
)
from integrations.ehr.models import (
    CsvImport,
    CsvImportJob,
    CsvImportJobAction,
    CsvImportJobStatus,
    CsvImportStatus,
)
from tests.csv_import_worker import pause_after_progress
from tests.integrations.ehr.imports.test_csv_import import SP_HEADER, people, sp_rows, upload, write

pytestmark = pytest.mark.django_db

__all__ = ["people"]  # the fixture, shared with test_csv_import.py


@pytest.fixture(autouse=True)
def _staging(settings: Any, tmp_path: Path) -> Path:
    settings.EHR_CSV_STAGING_DIR = str(tmp_path / "staging")
    return tmp_path / "staging"


def progress_url(record: CsvImport) -> str:
    return reverse("admin:ehr_csvimport_progress", args=[record.pk])


def page_url(record: CsvImport) -> str:
    return reverse("admin:ehr_csvimport_change", args=[record.pk])


def previewed(rows: int) -> dict[str, Any]:
    """The report of a clean dry run of ``rows`` new sessions."""
    report = Report(source="simplepractice", kind="appointments", preset="simplepractice", dry_run=True, rows=rows)
    report.counts["create"] = rows
    return report.as_dict()


def staged_import(tmp_path: Path, rows: list[str], *, user: User | None = None, status: str = "previewing",
                  report: dict[str, Any] | None = None) -> CsvImport:
    """An upload as the admin leaves it: the file staged, the record saved."""
    path = Path(tempfile.mkdtemp(prefix="upload-", dir=staging_root())) / "export.csv"
    path.write_text("\n".join([SP_HEADER, *rows]) + "\n")
    return CsvImport.objects.create(source="simplepractice", kind="appointments", preset="simplepractice",
                                    file_name="export.csv", size_bytes=path.stat().st_size, staged_path=str(path),
                                    status=status, report=report or {}, created_by=user, created_at=timezone.now())


# --- Through the admin, the task run at once (Q_CLUSTER sync) ----------------------------------------------

def test_upload_runs_the_dry_run_as_a_job_and_the_page_shows_its_rows(
        people: None, admin_client: HttpClient, admin_user: User, tmp_path: Path, sync_tasks: None) -> None:
    response = upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *sp_rows(30)])))
    assert response.status_code == 302
    record = CsvImport.objects.get()
    job = CsvImportJob.objects.get()
    assert (job.csv_import, job.action, job.status) == (record, CsvImportJobAction.PREVIEW, CsvImportJobStatus.DONE)
    assert (job.rows_done, job.rows_total, job.attempts) == (30, 30, 1)
    assert job.requested_by == admin_user and job.task_id
    assert job.queued_at <= job.started_at <= job.finished_at  # type: ignore[operator]
    assert job.summary == "30 rows: 30 would be created, 0 would be changed, 0 unchanged, 0 rejected"
    assert record.status == CsvImportStatus.PREVIEWED and record.report["counts"]["create"] == 30
    assert Appointment.objects.count() == 0

    state = admin_client.get(progress_url(record)).json()
    assert state["status"] == "done" and state["finished"] is True and state["action"] == "preview"
    assert (state["rows_done"], state["rows_total"], state["percent"]) == (30, 30, 100.0)
    assert state["summary"] == job.summary and state["error"] == "" and state["seconds_left"] is None

    html = admin_client.get(response["Location"]).content.decode()
    assert "Apply: import 30 rows" in html and html.count("<td>create</td>") == 30

    applied = admin_client.post(page_url(record), {"action": "apply"})
    assert applied.status_code == 302 and applied["Location"] == page_url(record)
    apply_job = CsvImportJob.objects.get(action=CsvImportJobAction.APPLY)
    assert apply_job.status == CsvImportJobStatus.DONE and (apply_job.rows_done, apply_job.rows_total) == (30, 30)
    assert apply_job.summary == "30 rows: 30 created, 0 changed, 0 unchanged, 0 rejected"
    record.refresh_from_db()
    assert record.status == CsvImportStatus.APPLIED and record.applied_at and not record.staged_path
    assert Appointment.objects.count() == 30
    # The audit trail names who started the apply, not the task queue's system account.
    assert LogEntry.objects.get_for_object(Appointment.objects.first()).get().actor == admin_user
    html = admin_client.get(page_url(record)).content.decode()
    assert "Imported export.csv: 30 rows: 30 created" in html and "applied by admin" in html


def test_an_apply_refused_for_a_bad_row_writes_nothing_and_the_job_names_the_row(
        people: None, admin_client: HttpClient, tmp_path: Path, sync_tasks: None) -> None:
    upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *sp_rows(40)])))
    record = CsvImport.objects.get()
    assert record.status == CsvImportStatus.PREVIEWED
    # The portal or the file changed after the dry run: row 12 (the header is row 1) is now rejected.
    rows = sp_rows(40)
    rows[10] = rows[10].replace(rows[10].split(",")[0], "13/45/2027", 1)
    Path(record.staged_path).write_text("\n".join([SP_HEADER, *rows]) + "\n")

    admin_client.post(page_url(record), {"action": "apply"})
    job = CsvImportJob.objects.get(action=CsvImportJobAction.APPLY)
    assert job.status == CsvImportJobStatus.FAILED and (job.rows_done, job.rows_total) == (40, 40)
    assert "Nothing was imported: 1 row is rejected" in job.error
    assert "row 12: Date of Service" in job.error and "'13/45/2027' is not a date" in job.error
    record.refresh_from_db()
    assert record.status == CsvImportStatus.REFUSED and not record.staged_path
    assert Appointment.objects.count() == 0

    state = admin_client.get(progress_url(record)).json()
    assert state["status"] == "failed" and state["finished"] and "row 12: Date of Service" in state["error"]
    html = admin_client.get(page_url(record)).content.decode()
    assert "Not applied: Nothing was imported" in html and "Apply:" not in html


def test_the_admin_offers_no_apply_while_rows_are_rejected_and_refuses_one_posted(
        people: None, admin_client: HttpClient, tmp_path: Path, sync_tasks: None) -> None:
    rows = sp_rows(5)
    rows[2] = rows[2].replace("90837", "ABC")
    upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *rows])))
    record = CsvImport.objects.get()
    refused = admin_client.post(page_url(record), {"action": "apply"})
    assert refused.status_code == 200 and "Nothing can be imported while rows are rejected" in refused.content.decode()
    assert not CsvImportJob.objects.filter(action=CsvImportJobAction.APPLY).exists()


def test_a_file_broken_past_its_first_lines_fails_the_job_with_the_reason(
        people: None, admin_client: HttpClient, tmp_path: Path, sync_tasks: None) -> None:
    rows = sp_rows(10)
    rows[6] = '03/01/2027,"9:00 AM,N1 Example'  # a quote left open: the rest of the file is one field
    upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *rows])))
    record = CsvImport.objects.get()
    job = CsvImportJob.objects.get()
    assert job.status == CsvImportJobStatus.FAILED and "is a quote left open?" in job.error
    assert record.status == CsvImportStatus.FAILED and not record.staged_path
    html = admin_client.get(page_url(record)).content.decode()
    assert "The dry run failed:" in html and "Upload the file again" in html
    assert Appointment.objects.count() == 0


def _upload_that_fails(admin_client: HttpClient, tmp_path: Path, error: str) -> CsvImport:
    """Upload a small file whose dry run fails with ``error``: the run and the import say so, and the
    staged file is kept for another try."""
    upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *sp_rows(5)])))
    record = CsvImport.objects.get()
    job = CsvImportJob.objects.get()
    assert job.status == CsvImportJobStatus.FAILED and error in job.error
    assert record.status == CsvImportStatus.FAILED and Path(record.staged_path).exists()
    return record


def test_an_unexpected_error_keeps_the_file_to_preview_again(
        people: None, admin_client: HttpClient, tmp_path: Path, sync_tasks: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("the database went away")

    working = csv_jobs.csv_import
    monkeypatch.setattr(csv_jobs, "csv_import", broken)
    record = _upload_that_fails(admin_client, tmp_path, "unexpected error (RuntimeError)")
    html = admin_client.get(page_url(record)).content.decode()
    assert "Preview again" in html and "Apply:" not in html

    monkeypatch.setattr(csv_jobs, "csv_import", working)
    admin_client.post(page_url(record), {"action": "preview", "mapping": ""})
    record.refresh_from_db()
    assert record.status == CsvImportStatus.PREVIEWED and record.jobs.count() == 2


def test_a_task_queue_that_cannot_be_reached_fails_the_run_at_once(
        people: None, admin_client: HttpClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> str:
        raise ConnectionError("broker down")

    monkeypatch.setattr(csv_jobs, "async_task", unreachable)
    record = _upload_that_fails(admin_client, tmp_path, "task queue could not be reached")
    assert "Preview again" in admin_client.get(page_url(record)).content.decode()


def test_a_run_past_its_timeout_is_failed_and_the_worker_let_go(
        people: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def too_long(**kwargs: Any) -> Any:
        raise TimeoutException("Task exceeded maximum timeout value (3600 seconds)")

    monkeypatch.setattr(csv_jobs, "csv_import", too_long)
    record = staged_import(tmp_path, sp_rows(5), status=CsvImportStatus.PREVIEWED, report=previewed(5))
    job = CsvImportJob.objects.create(csv_import=record, action=CsvImportJobAction.APPLY, queued_at=timezone.now())
    with pytest.raises(TimeoutException):  # django-q2 replaces the worker
        csv_import_job_run(job.pk)
    job.refresh_from_db()
    assert job.status == CsvImportJobStatus.FAILED and "took longer than the task queue allows" in job.error
    assert Appointment.objects.count() == 0


# --- Through the task queue: queued, then a worker ------------------------------------------------------------

def test_a_queued_job_shows_the_progress_page_until_a_worker_runs_it(
        people: None, admin_client: HttpClient, tmp_path: Path) -> None:
    response = upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *sp_rows(25)])))
    record = CsvImport.objects.get()
    job = CsvImportJob.objects.get()
    assert job.status == CsvImportJobStatus.QUEUED and record.status == CsvImportStatus.PREVIEWING
    assert OrmQ.objects.count() == 1 and job.task_id

    page = admin_client.get(response["Location"])
    html = page.content.decode()
    assert '<progress id="csv-progress"' in html and f'data-progress-url="{progress_url(record)}"' in html
    assert '<script src="/static/portal/csv_import_progress.js" defer></script>' in html
    assert "<script>" not in html  # the Content-Security-Policy runs no inline script
    assert finders.find("portal/csv_import_progress.js")
    assert "Apply:" not in html

    state = admin_client.get(progress_url(record)).json()
    assert state["status"] == "queued" and state["finished"] is False
    assert state["rows_total"] is None and state["percent"] is None and state["hint"] == ""
    later = job_progress(job, job.queued_at + dt.timedelta(minutes=1))
    assert "is the task cluster running" in later["hint"]

    # Starting anything else meanwhile is refused; the run is not queued twice.
    assert admin_client.post(page_url(record), {"action": "preview"}).status_code == 200
    assert CsvImportJob.objects.count() == 1

    assert csv_import_job_run(job.pk) == "25 rows: 25 would be created, 0 would be changed, 0 unchanged, 0 rejected"
    state = admin_client.get(progress_url(record)).json()
    assert state["finished"] and (state["rows_done"], state["rows_total"]) == (25, 25)
    # The task queue delivering the task again (after Q_CLUSTER's retry) does not run it twice.
    assert csv_import_job_run(job.pk) == "nothing to do"
    assert CsvImportJob.objects.get().attempts == 1
    assert "Apply: import 25 rows" in admin_client.get(page_url(record)).content.decode()


def test_discarding_a_queued_import_cancels_its_run(people: None, admin_client: HttpClient, tmp_path: Path,
                                                    _staging: Path) -> None:
    upload(admin_client, write(tmp_path, "\n".join([SP_HEADER, *sp_rows(5)])))
    record = CsvImport.objects.get()
    job = CsvImportJob.objects.get()
    admin_client.post(page_url(record), {"action": "discard"})
    record.refresh_from_db()
    job.refresh_from_db()
    assert record.status == CsvImportStatus.DISCARDED and not list(_staging.iterdir())
    assert job.status == CsvImportJobStatus.FAILED and "Discarded by admin before it ran" in job.error
    assert csv_import_job_run(job.pk) == "nothing to do"
    assert Appointment.objects.count() == 0


def test_a_big_apply_with_one_bad_row_writes_nothing(people: None, tmp_path: Path) -> None:
    rows = sp_rows(3000)
    rows[2499] = rows[2499].replace(rows[2499].split(",")[0], "13/45/2027", 1)  # row 2501, the header being 1
    record = staged_import(tmp_path, rows, status=CsvImportStatus.PREVIEWED,
                           report=previewed(3000))
    job = CsvImportJob.objects.create(csv_import=record, action=CsvImportJobAction.APPLY, queued_at=timezone.now())
    csv_import_job_run(job.pk)
    job.refresh_from_db()
    assert job.status == CsvImportJobStatus.FAILED and (job.rows_done, job.rows_total) == (3000, 3000)
    assert "row 2501: Date of Service" in job.error and "'13/45/2027' is not a date" in job.error
    assert Appointment.objects.count() == 0
    record.refresh_from_db()
    assert record.status == CsvImportStatus.REFUSED and record.report["problems"][0]["row"] == 2501


def test_a_run_whose_worker_died_is_marked_failed_or_run_again(people: None, admin_client: HttpClient,
                                                              tmp_path: Path) -> None:
    """A job left running by a worker that is gone (its advisory lock free): the page marks it failed, or
    the task queue's next delivery runs it from the start."""
    record = staged_import(tmp_path, sp_rows(10), status=CsvImportStatus.PREVIEWING)
    stale = timezone.now() - dt.timedelta(minutes=10)
    CsvImportJob.objects.create(csv_import=record, action=CsvImportJobAction.PREVIEW, queued_at=stale,
                                status=CsvImportJobStatus.RUNNING, started_at=stale, progress_at=stale, attempts=1,
                                rows_done=4, rows_total=10)
    state = admin_client.get(progress_url(record)).json()
    assert state["status"] == "failed" and "task queue stopped while this ran" in state["error"]
    record.refresh_from_db()
    assert record.status == CsvImportStatus.FAILED and record.staged_path

    again = CsvImportJob.objects.create(csv_import=record, action=CsvImportJobAction.PREVIEW, queued_at=stale,
                                        status=CsvImportJobStatus.RUNNING, started_at=stale, attempts=1)
    csv_import_job_run(again.pk)
    again.refresh_from_db()
    assert again.status == CsvImportJobStatus.DONE and again.attempts == 2 and again.rows_done == 10


# --- Who may watch and act ---------------------------------------------------------------------------------------

def signed_in(user: User) -> HttpClient:
    http = HttpClient()
    http.force_login(user)  # second factor passed (tests/conftest.py)
    return http


def test_only_staff_who_may_see_imports_get_the_progress_and_only_administrators_act(
        people: None, tmp_path: Path, front_desk: User, auditor: User, administrator: User) -> None:
    record = staged_import(tmp_path, sp_rows(5), status=CsvImportStatus.PREVIEWED,
                           report=previewed(5))
    CsvImportJob.objects.create(csv_import=record, action=CsvImportJobAction.PREVIEW, queued_at=timezone.now(),
                                status=CsvImportJobStatus.DONE, rows_done=5, rows_total=5)
    url = progress_url(record)

    anonymous = HttpClient().get(url)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    client_user = User.objects.create_user("someone", "someone@example.com", "a-long-test-password-42")
    not_staff = signed_in(client_user).get(url)
    assert not_staff.status_code == 302 and "/login/" in not_staff["Location"]

    desk = signed_in(front_desk)
    assert desk.get(url).status_code == 403
    assert desk.get(page_url(record)).status_code == 403
    assert desk.post(page_url(record), {"action": "apply"}).status_code == 403

    reader = signed_in(auditor)
    assert reader.get(url).status_code == 200 and reader.get(url).json()["status"] == "done"
    assert reader.post(page_url(record), {"action": "apply"}).status_code == 403
    assert reader.get(reverse("admin:ehr_csvimport_add")).status_code == 403

    head = signed_in(administrator)
    assert head.get(url).status_code == 200
    assert head.post(page_url(record), {"action": "apply"}).status_code == 302
    assert CsvImportJob.objects.filter(action=CsvImportJobAction.APPLY).count() == 1
    assert not Appointment.objects.exists()  # queued, not run: no cluster in the tests


# --- The mechanism: progress seen from another connection while the transaction is open ---------------------

@pytest.mark.django_db(transaction=True)
def test_progress_is_visible_from_another_connection_while_the_apply_transaction_is_open(
        people: None, admin_client: HttpClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker (a thread with its own connection) pauses after writing progress for 1,000 rows; from the
    test's connection the job shows that progress while none of the import's rows are visible yet."""
    record = staged_import(tmp_path, sp_rows(3000), status=CsvImportStatus.PREVIEWED,
                           report=previewed(3000))
    job = job_start(csv_import=record, action=CsvImportJobAction.APPLY, requested_by=None, now=timezone.now())
    assert job.status == CsvImportJobStatus.QUEUED

    reached, resume = pause_after_progress(monkeypatch)
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            outcome["result"] = csv_import_job_run(job.pk)
        except BaseException as error:  # reported by the main thread
            outcome["error"] = error
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert reached.wait(60), outcome
        job.refresh_from_db()
        assert job.status == CsvImportJobStatus.RUNNING and job.rows_total == 3000
        assert 1000 <= job.rows_done < 3000 and job.progress_at is not None
        # The apply's transaction is open: the rows it has written (at least its first chunks) are not visible.
        assert Appointment.objects.count() == 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                           "AND state LIKE 'idle in transaction%%'")
            assert cursor.fetchone()[0] >= 1

        state = admin_client.get(progress_url(record)).json()
        assert state["status"] == "running" and state["finished"] is False
        assert state["rows_done"] == job.rows_done and state["rows_total"] == 3000
        assert state["percent"] == round(100 * job.rows_done / 3000, 1)
        assert state["rows_per_second"] > 0 and state["seconds_left"] is not None
        page = admin_client.get(page_url(record)).content.decode()
        assert f'value="{job.rows_done}"' in page and "of 3,000 rows" in page

        # Meanwhile the task queue delivers the task again, and the page checks on the worker: both see it alive.
        assert csv_import_job_run(job.pk) == "already running elsewhere"
        assert job_check_stopped(job, timezone.now()) is False
    finally:
        resume.set()
        thread.join(120)
    assert "error" not in outcome, outcome
    assert outcome["result"].startswith("3,000 rows: 3,000 created")
    job.refresh_from_db()
    record.refresh_from_db()
    assert job.status == CsvImportJobStatus.DONE and (job.rows_done, job.rows_total) == (3000, 3000)
    assert record.status == CsvImportStatus.APPLIED and Appointment.objects.count() == 3000
    assert admin_client.get(progress_url(record)).json()["percent"] == 100.0
