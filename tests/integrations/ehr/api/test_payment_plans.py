"""The EHR reads a client's payment plans: each installment, its charge once agreed, and what it paid."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Client
from billing.services.plans import plan_offer
from tests.integrations.ehr.conftest import appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


def test_the_api_reads_a_clients_plans(practice: Any, put: Callable[..., Any], get: Callable[..., Any]) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15000))
    put("appointments/a-1/", appointment_body(["c-1"], status="completed"))
    assert get("clients/c-1/payment-plans/") == {"client": "c-1", "plans": []}
    person = Client.objects.get(external_id="c-1")
    first = timezone.localdate() + dt.timedelta(days=10)
    plan, _ = plan_offer(client=person, total_cents=15000, count=3, first_due_on=first, now=timezone.now(), user=None,
                         form_key="api-read-" + "k" * 16)
    [read] = get("clients/c-1/payment-plans/")["plans"]
    assert (read["id"], read["status"], read["total_cents"], read["paid_cents"]) == (plan.pk, "offered", 15000, 0)
    assert [(i["number"], i["amount_cents"], i["charge"], i["status"]) for i in read["installments"]] == [
        (1, 5000, None, None), (2, 5000, None, None), (3, 5000, None, None)]
    assert read["installments"][0]["due_on"] == first.isoformat()
    get("clients/c-unknown/payment-plans/", expect=404)


def test_the_schema_documents_the_plans_read() -> None:
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    read = schema["paths"]["/api/v1/clients/{external_id}/payment-plans/"]["get"]
    assert {"200", "404"} <= set(read["responses"])
