"""The three ways an 835 comes in: the EHR API (the file as the body), the admin (dry run, then post), and
staff picking the session of a line nothing matched."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client as HttpClient
from rest_framework.test import APIClient

from billing.models import (
    AppointmentStatus,
    InsurancePayment,
    Remittance,
    RemittanceLine,
    RemittanceLineStatus,
)
from integrations.ehr.models import RemittanceUpload, RemittanceUploadStatus
from tests.factories import AppointmentFactory, CoverageFactory
from tests.integrations.ehr.era.conftest import NY, PRIMARY, fixture, state


def send(api: APIClient, data: bytes, query: str = "", content_type: str = "application/edi-x12") -> Any:
    return api.generic("POST", f"/api/v1/remittances/{query}", data,  # type: ignore[arg-type]
                       content_type=content_type)


def test_api_posts_the_file_once(planted: dict[str, Any], api: APIClient) -> None:
    dry = send(api, PRIMARY, "?dry_run=true")
    assert dry.status_code == 200, dry.content
    assert dry.json()["payments"][0]["counts"]["posted"] == 3 and not InsurancePayment.objects.exists()

    response = send(api, PRIMARY)
    assert response.status_code == 201, response.content
    [payment] = response.json()["payments"]
    assert (payment["trace_number"], payment["paid_cents"], payment["paid_on"]) == ("EFT0001", 23_100, "2026-11-20")
    assert [line["outcome"] for line in payment["lines"]] == ["posted", "posted", "posted", "unmatched"]

    before = state()
    again = send(api, PRIMARY, content_type="text/plain")
    assert again.status_code == 200 and state() == before
    assert again.json()["payments"][0]["counts"]["already posted"] == 4


def test_api_refuses_broken_files_and_837s_with_the_segment(planted: dict[str, Any], api: APIClient) -> None:
    broken = send(api, PRIMARY.replace(b"SVC*HC:90837*200.00*56.00", b"SVC*HC:90837*200.00*5X.00"),
                  content_type="application/octet-stream")
    assert broken.status_code == 400
    assert "Segment 18 (SVC)" in broken.json()["file"][0]
    claim = send(api, fixture("claim.837"))
    assert claim.status_code == 400 and "837 claim file" in claim.json()["file"][0]
    json_body = api.post("/api/v1/remittances/", {"file": "ISA"}, format="json")
    assert json_body.status_code == 415
    assert not Remittance.objects.exists()


def test_admin_preview_then_post_then_match_by_hand(planted: dict[str, Any], billing_manager: Any) -> None:
    http = HttpClient()
    http.force_login(billing_manager)
    refused = http.post("/admin/ehr/remittanceupload/add/", {"file": _upload("claim.837", fixture("claim.837"))})
    assert refused.status_code == 200 and b"837 claim file" in refused.content
    assert not RemittanceUpload.objects.exists()

    response = http.post("/admin/ehr/remittanceupload/add/", {"file": _upload("aetna.835", PRIMARY)})
    assert response.status_code == 302
    page = http.get(response["Location"])
    assert b"would be posted" in page.content and b"No client has member id W999999999" in page.content
    assert not InsurancePayment.objects.exists()

    posted = http.post(response["Location"], {"action": "apply"})
    assert posted.status_code == 302
    upload = RemittanceUpload.objects.get()
    assert upload.status == RemittanceUploadStatus.APPLIED and InsurancePayment.objects.count() == 3
    assert http.post(response["Location"], {"action": "apply"}).status_code == 200  # done with: nothing again
    assert InsurancePayment.objects.count() == 3

    # The line nobody matched: staff pick Sam's session among those near its date.
    sam: Any = CoverageFactory(client__first_name="Samuel", client__last_name="Stranger", member_id="S-1").client
    appointment: Any = AppointmentFactory(starts_at=dt.datetime(2026, 11, 5, 9, tzinfo=NY),
                                                  service_code="90834", status=AppointmentStatus.COMPLETED,
                                                  clients=[sam])
    line = RemittanceLine.objects.get(status=RemittanceLineStatus.UNMATCHED)
    match_page = http.get(f"/admin/billing/remittanceline/{line.pk}/change/")
    participant = appointment.participants.get()
    assert f'value="{participant.pk}"'.encode() in match_page.content
    done = http.post(f"/admin/billing/remittanceline/{line.pk}/change/", {"participant": participant.pk})
    assert done.status_code == 302
    line.refresh_from_db()
    assert line.status == RemittanceLineStatus.POSTED and line.matched_by == billing_manager.get_username()
    assert InsurancePayment.objects.get(appointment=appointment).paid_cents == 8_000


def test_front_desk_sees_lines_but_cannot_post(planted: dict[str, Any], front_desk: Any) -> None:
    http = HttpClient()
    http.force_login(front_desk)
    assert http.get("/admin/billing/remittanceline/").status_code == 200
    assert http.post("/admin/ehr/remittanceupload/add/", {"file": _upload("a.835", PRIMARY)}).status_code == 403
    assert not Remittance.objects.exists()


def _upload(name: str, data: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data, content_type="application/octet-stream")
