"""A CSV import's progress page in Chromium, under the Content-Security-Policy: the bar moves while the dry run's
transaction is open in a worker, then the page shows the dry run's rows by itself."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client as HttpClient
from django.utils import timezone
from playwright.sync_api import Page, expect
from rest_framework.test import APIClient

from billing.models import Appointment, Payer, Practice
from integrations.ehr.imports import csv_jobs
from integrations.ehr.keys import api_key_create
from integrations.ehr.models import CsvImport, CsvImportJob, CsvImportJobStatus
from tests.csv_import_worker import pause_after_progress
from tests.integrations.ehr.conftest import client_body, clinician_body
from tests.integrations.ehr.imports.test_csv_import import SP_HEADER, sp_rows

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff_page(page: Page, live_server: Any, practice: Practice, aetna: Payer) -> Page:
    """An administrator signed in (second factor passed) in the browser, and what the EHR pushed before."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(source='simplepractice', now=timezone.now()).key}")
    assert api.put("/api/v1/clinicians/clin-1/", clinician_body(), format="json").status_code in (200, 201)
    events = [{"type": "client", "external_id": f"c-{i}", "data": client_body(f"N{i}")} for i in range(50)]
    assert api.post("/api/v1/events/", {"events": events}, format="json").status_code == 200
    user = User.objects.create_superuser("admin", "admin@practice.example", "a-long-test-password-42")
    http = HttpClient()
    http.force_login(user)
    cookie = django_settings.SESSION_COOKIE_NAME
    page.context.add_cookies([{"name": cookie, "value": http.cookies[cookie].value, "url": live_server.url}])
    return page


def test_the_bar_moves_while_the_dry_run_runs_then_the_rows_show(
        staff_page: Page, live_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    page = staff_page
    settings.EHR_CSV_STAGING_DIR = str(tmp_path / "staging")
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    path = tmp_path / "appointments.csv"
    path.write_text("\n".join([SP_HEADER, *sp_rows(3000)]) + "\n")

    page.goto(f"{live_server.url}/admin/ehr/csvimport/add/")
    page.get_by_label("Source").fill("simplepractice")
    page.get_by_label("Kind").select_option("appointments")
    page.get_by_label("Preset").select_option("simplepractice")
    page.get_by_label("File").set_input_files(str(path))
    page.get_by_role("button", name="Preview (dry run)").click()
    expect(page.locator("#csv-progress-status")).to_contain_text("Waiting for the task queue")
    expect(page.get_by_role("button", name="Discard (before it starts)")).to_be_visible()
    job = CsvImportJob.objects.get()

    # The task cluster's worker: a thread with its own connection, paused once 1,000 rows are reported.
    reached, resume = pause_after_progress(monkeypatch)

    def worker() -> None:
        try:
            csv_jobs.csv_import_job_run(job.pk)
        finally:
            connections.close_all()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert reached.wait(60)
        job.refresh_from_db()
        assert job.status == CsvImportJobStatus.RUNNING
        expect(page.locator("#csv-progress-rows")).to_have_text(f"{job.rows_done:,} of 3,000 rows")
        expect(page.locator("#csv-progress-status")).to_have_text("Running")
        expect(page.get_by_role("button", name="Discard (before it starts)")).to_be_hidden()
        assert page.locator("#csv-progress").evaluate("bar => [bar.value, bar.max]") == [job.rows_done, 3000]
        expect(page.locator("#csv-progress-rate")).to_contain_text("rows/s")
        expect(page.locator("#csv-progress-eta")).to_contain_text("left")
        expect(page.locator("#csv-progress-percent")).to_have_text(f"{100 * job.rows_done // 3000}%")
    finally:
        resume.set()
        thread.join(120)

    expect(page.locator("#import-rows")).to_be_visible()  # the page opened the dry run's report by itself
    expect(page.get_by_role("button", name="Apply: import 3,000 rows")).to_be_visible()
    assert CsvImport.objects.get().status == "previewed" and Appointment.objects.count() == 0
    assert violations == []
