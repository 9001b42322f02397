"""An EHR integration's view of the portal: a practice configured by staff, and an API key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import CategoryRate, FeeScheduleEntry, Payer, Practice, Service
from integrations.ehr.keys import IssuedKey, api_key_create

SOURCE = "simplepractice"


@pytest.fixture(autouse=True)
def _fresh_throttle_counts() -> None:
    cache.clear()


@pytest.fixture
def practice(db: None) -> Practice:
    """Staff set these in the admin: the policy, services and fee schedule the API's pushes are billed by."""
    practice = Practice.objects.create(name="Riverbend Counseling", phone="555-0100",
                                       sender_email="billing@riverbend.example", time_zone="America/New_York",
                                       cancellation_policy_version="2")
    payer = Payer.objects.create(name="Aetna", payer_id="60054")
    individual = Service.objects.create(cpt_code="90837", description="Individual therapy, 60 minutes",
                                        fee_cents=20000)
    group = Service.objects.create(cpt_code="90853", description="Group therapy", fee_cents=8000, is_group=True)
    Service.objects.create(cpt_code="90791", description="Intake assessment", fee_cents=25000)
    FeeScheduleEntry.objects.create(payer=payer, service=individual, allowed_cents=12000)
    FeeScheduleEntry.objects.create(payer=payer, service=group, allowed_cents=5000)
    CategoryRate.objects.create(plan_category="EAP", amount_cents=0)
    return practice


@pytest.fixture
def issued(db: None) -> IssuedKey:
    return api_key_create(source=SOURCE, now=timezone.now(), name="tests")


@pytest.fixture
def api(issued: IssuedKey) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {issued.key}")
    return client


Call = Callable[..., Any]


@pytest.fixture
def put(api: APIClient) -> Call:
    def call(path: str, body: Any, expect: int | tuple[int, ...] = (200, 201)) -> Any:
        response = api.put(f"/api/v1/{path}", body, format="json")
        wanted = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in wanted, response.content
        return response.json()

    return call


@pytest.fixture
def post(api: APIClient) -> Call:
    def call(path: str, body: Any, expect: int | tuple[int, ...] = (200, 201)) -> Any:
        response = api.post(f"/api/v1/{path}", body, format="json")
        wanted = expect if isinstance(expect, tuple) else (expect,)
        assert response.status_code in wanted, response.content
        return response.json()

    return call


@pytest.fixture
def get(api: APIClient) -> Call:
    def call(path: str, expect: int = 200, **params: Any) -> Any:
        response = api.get(f"/api/v1/{path}", params)
        assert response.status_code == expect, response.content
        return response.json()

    return call


def clinician_body(name: str = "Dana Reyes", npi: str = "1234567893") -> dict[str, Any]:
    return {"name": name, "email": "dana@riverbend.example", "npi": npi, "credentials": "LCSW"}


def client_body(first: str, billing_type: str = "self_pay", **extra: Any) -> dict[str, Any]:
    return {"first_name": first, "last_name": "Example", "email": f"{first.lower()}@example.com",
            "phone": "555-0101", "date_of_birth": "1990-04-01", "billing_type": billing_type, **extra}


def appointment_body(clients: list[str], starts_at: str = "2026-11-23T10:00:00-05:00", **extra: Any) -> dict[str, Any]:
    return {"clinician": "clin-1", "clients": clients, "service_code": "90837", "diagnosis_codes": ["F41.1"],
            "starts_at": starts_at, "duration_minutes": 53, "status": "scheduled", **extra}


@pytest.fixture
def sync_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    """django-q2 runs each queued task at once, in the caller (its Q_CLUSTER["sync"]), instead of a cluster."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
