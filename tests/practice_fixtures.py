"""A small practice for billing tests: two services, one payer with a fee schedule, one clinician.

Built with the factories (tests/factories.py), the one way the suite makes test data; these fixtures name
the practice's fixed cast."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

from billing.models import (
    Appointment,
    BillingType,
    Client,
    Clinician,
    Payer,
    Practice,
)
from tests import factories

# Friday 27 November 2026, 10:00 in New York.
FRIDAY_10AM = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.UTC)


@pytest.fixture
def practice(db: None) -> Practice:
    return Practice.objects.create(name="Riverbend Counseling", phone="555-0100",
                                   sender_email="billing@riverbend.example", time_zone="America/New_York")


@pytest.fixture
def aetna(db: None) -> Payer:
    payer = factories.PayerFactory.create(name="Aetna", payer_id="60054")
    individual = factories.ServiceFactory.create(cpt_code="90837", description="Individual therapy, 60 minutes",
                                                 fee_cents=20000)
    group = factories.ServiceFactory.create(cpt_code="90853", description="Group therapy", fee_cents=8000,
                                            is_group=True)
    factories.ServiceFactory.create(cpt_code="90791", description="Intake assessment", fee_cents=25000)
    factories.FeeScheduleEntryFactory.create(payer=payer, service=individual, allowed_cents=12000)
    factories.FeeScheduleEntryFactory.create(payer=payer, service=group, allowed_cents=5000)
    return payer


@pytest.fixture
def clinician(db: None) -> Clinician:
    return factories.ClinicianFactory.create(name="Dana Reyes", npi="1234567893", credentials="LCSW", email="")


@pytest.fixture
def make_client(db: None, aetna: Payer) -> Callable[..., Client]:
    """A client; ``benefits`` (a dict of Coverage fields) gives an insurance client coverage with Aetna."""
    counter = iter(range(1, 10_000))

    def make(billing_type: str = BillingType.INSURANCE, benefits: dict[str, Any] | None = None,
             **fields: Any) -> Client:
        n = next(counter)
        client = factories.ClientFactory.create(
            first_name=f"Client{n}", last_name="Example", billing_type=billing_type, email=f"client{n}@example.com",
            **{"phone": "", "session_rate_cents": None, **fields})
        if benefits is not None:
            factories.CoverageFactory.create(client=client, payer=aetna, payer_name="Aetna", member_id=f"W{n:08d}",
                                             **{"copay_cents": None, **benefits})
        return client

    return make


@pytest.fixture
def make_appointment(db: None, clinician: Clinician) -> Callable[..., Appointment]:
    def make(*clients: Client, service_code: str = "90837", starts_at: dt.datetime = FRIDAY_10AM,
             **fields: Any) -> Appointment:
        fields.setdefault("diagnosis_codes", ["F41.1"])
        return factories.AppointmentFactory.create(clinician=clinician, service_code=service_code,
                                                   starts_at=starts_at, clients=list(clients), **fields)

    return make
