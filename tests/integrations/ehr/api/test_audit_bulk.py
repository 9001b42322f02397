"""Audit entries written for bulk-created appointments are the ones django-auditlog itself would write."""

from __future__ import annotations

import pytest
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry

from billing.audit.bulk import creation_changes
from billing.models import Appointment, Participant, Practice
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


def test_bulk_created_appointments_get_auditlogs_own_entries(practice: Practice, put: Call, post: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    events = [{"type": "appointment", "external_id": f"a-{i}",
               "data": appointment_body(["c-1"], f"2026-12-0{i + 1}T10:00:00-05:00")} for i in range(3)]
    assert post("events/", {"events": events}, expect=200)["counts"]["created"] == 3
    for appointment in Appointment.objects.all():
        entry = LogEntry.objects.get_for_object(appointment).get()
        assert entry.action == LogEntry.Action.CREATE and entry.actor is not None
        assert entry.changes_dict == {k: list(v) for k, v in model_instance_diff(None, appointment).items()}
        assert entry.object_repr.startswith("90837 on 2026-12-0")
    for participant in Participant.objects.all():
        assert creation_changes(participant) == model_instance_diff(None, participant)
        assert LogEntry.objects.get_for_object(participant).count() == 1
