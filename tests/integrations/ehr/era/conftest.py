"""ERA tests' shared parts: the fixture files, the sessions planted to match some of their lines, and a
snapshot of everything posting writes."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from pathlib import Path
from typing import Any

import pytest

from billing.models import (
    AppointmentStatus,
    ChargeKind,
    ChargeStatus,
    Coverage,
    InsurancePayment,
    Payer,
    Practice,
    ReconciliationFinding,
    Remittance,
    RemittanceLine,
)
from integrations.ehr.era.posting import era_post
from tests.factories import AppointmentFactory, ChargeFactory, CoverageFactory

FIXTURES = Path(__file__).parent / "fixtures"
NY = zoneinfo.ZoneInfo("America/New_York")
NOW = dt.datetime(2026, 12, 5, 15, 0, tzinfo=dt.UTC)


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def post(name: str, *, dry_run: bool = False, data: bytes | None = None) -> Any:
    return era_post(data=data if data is not None else fixture(name), file_name=name, actor="tests", now=NOW,
                    dry_run=dry_run)


def session(client: Any, day: int, *, charged: int, deductible: int = 0) -> Any:
    appointment = AppointmentFactory(starts_at=dt.datetime(2026, 11, day, 10, tzinfo=NY),
                                     status=AppointmentStatus.COMPLETED, clients=[client])
    ChargeFactory(client=client, appointment=appointment, kind=ChargeKind.COPAY, amount_cents=charged,
                  deductible_applied_cents=deductible, status=ChargeStatus.SUCCEEDED)
    return appointment


@pytest.fixture
def planted(practice: Practice) -> dict[str, Any]:
    aetna = Payer.objects.get(name="Aetna")  # the practice's fee schedule allows $120.00 for a 90837
    jane = CoverageFactory(client__first_name="Jane", client__last_name="Doe", payer=aetna, member_id="W111111111",
                           copay_cents=None, coinsurance_percent=20, deductible_cents=50_000,
                           deductible_met_cents=10_000).client
    john = CoverageFactory(client__first_name="John", client__last_name="Roe", payer=aetna, member_id="W222222222",
                           copay_cents=2_500).client
    mary = CoverageFactory(client__first_name="Mary", client__last_name="Poe", payer=aetna, member_id="W333333333",
                           copay_cents=None, coinsurance_percent=20).client
    return {
        "jane": jane, "john": john, "mary": mary,
        # The portal charged Jane $50.00 toward her deductible and 20% of the other $70.00: $64.00.
        "jane_session": session(jane, 2, charged=6_400, deductible=5_000),
        "john_session": session(john, 3, charged=2_500),
        "mary_session": session(mary, 4, charged=2_400),
    }


def state() -> tuple[Any, ...]:
    """Everything posting writes, to compare before and after."""
    return (list(Remittance.objects.values_list("pk", "trace_number")),
            list(RemittanceLine.objects.order_by("pk").values_list("pk", "status", "insurance_payment_id")),
            list(InsurancePayment.objects.order_by("pk").values_list(
                "pk", "allowed_cents", "paid_cents", "patient_responsibility_cents")),
            list(ReconciliationFinding.objects.order_by("pk").values_list("pk", "kind", "status", "gone_at")),
            list(Coverage.objects.order_by("pk").values_list("deductible_met_cents", "copay_cents",
                                                             "coinsurance_percent")))


PRIMARY = fixture("aetna_primary.835")
