"""The demo practice: seeded once however often the seed runs, and covering every case the portal handles."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import transaction
from django.db.models import Count, F, Q
from django.test import override_settings

from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeKind,
    Client,
    Clinician,
    Coverage,
    Practice,
    ReviewItem,
    ReviewKind,
)
from billing.validators import npi_is_valid
from devtools.demo import ADMIN_USERNAME, POLICY_VERSION, SOURCE, seed_demo

# Thursday 26 November 2026, 15:00 in New York. A small practice keeps the test fast; it is the
# first 16 clients of the full demo, which still holds one client of every kind.
NOW = dt.datetime(2026, 11, 26, 20, 0, tzinfo=dt.UTC)
SMALL = 16
FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(scope="module")
def _seeded_once(django_db_setup: None, django_db_blocker: Any) -> Iterator[dict[str, int]]:
    # Seeding is the slow part, so the module seeds once inside a transaction it rolls back at the end;
    # each test still runs in its own savepoint (the ``db`` fixture), so what one test adds, the next
    # does not see.
    with django_db_blocker.unblock(), override_settings(PASSWORD_HASHERS=FAST_HASHER), transaction.atomic():
        yield seed_demo(now=NOW, clients=SMALL).counts
        transaction.set_rollback(True)


@pytest.fixture
def seeded(_seeded_once: dict[str, int], db: None) -> dict[str, int]:
    return _seeded_once


def test_seeding_twice_adds_nothing(seeded: dict[str, int]) -> None:
    again = seed_demo(now=NOW, clients=SMALL)

    assert again.counts == seeded
    assert sum(again.created.values()) == 0
    assert not again.admin_created
    assert get_user_model().objects.filter(username=ADMIN_USERNAME, is_superuser=True).count() == 1


def test_seeding_a_day_later_adds_only_new_sessions(seeded: dict[str, int]) -> None:
    later = seed_demo(now=NOW + dt.timedelta(days=1), clients=SMALL).counts

    assert later["clients"] == seeded["clients"]
    assert later["coverage"] == seeded["coverage"]
    keys = list(Appointment.objects.filter(source=SOURCE).values_list("external_id", flat=True))
    assert len(keys) == len(set(keys))


def test_practice_is_set_up_for_clients(seeded: dict[str, int]) -> None:
    practice = Practice.load()

    assert practice.name == "Riverbend Counseling Group"
    assert practice.time_zone == "America/New_York"
    assert practice.cancellation_policy_version == POLICY_VERSION
    assert practice.cancellation_policy_text and practice.card_authorization_text
    practice.full_clean()


def test_clinicians_have_valid_npis(seeded: dict[str, int]) -> None:
    clinicians = list(Clinician.objects.filter(source=SOURCE))

    assert len(clinicians) == 6
    assert all(npi_is_valid(c.npi) and c.credentials for c in clinicians)


def test_every_billing_type_and_benefit_shape_is_present(seeded: dict[str, int]) -> None:
    clients = Client.objects.filter(source=SOURCE)
    coverages = Coverage.objects.filter(client__source=SOURCE)

    assert set(clients.values_list("billing_type", flat=True)) == set(BillingType.values)
    assert clients.filter(billing_type=BillingType.SELF_PAY, session_rate_cents__isnull=True).exists()
    assert clients.filter(billing_type=BillingType.SELF_PAY, session_rate_cents__isnull=False).exists()
    assert not clients.filter(billing_type=BillingType.SLIDING_SCALE, session_rate_cents__isnull=True).exists()
    assert coverages.filter(copay_cents__isnull=False, coinsurance_percent__isnull=True).exists()
    assert coverages.filter(deductible_met_cents=0, coinsurance_percent__isnull=False).exists()
    assert coverages.filter(deductible_met_cents__gt=0, deductible_met_cents__lt=F("deductible_cents")).exists()
    assert coverages.filter(deductible_cents__gt=0, deductible_met_cents=F("deductible_cents")).exists()
    assert coverages.exclude(plan_category="").exists()
    assert clients.filter(billing_type=BillingType.INSURANCE, coverages__isnull=True).exists()


def test_every_appointment_status_and_a_mixed_group_are_present(seeded: dict[str, int]) -> None:
    appointments = Appointment.objects.filter(source=SOURCE)

    assert set(appointments.values_list("status", flat=True)) == set(AppointmentStatus.values)
    completed = appointments.filter(status=AppointmentStatus.COMPLETED)
    assert completed.filter(note_signed_at__isnull=False).exists()
    assert completed.filter(note_signed_at__isnull=True).exists()
    groups = completed.filter(service_code="90853").annotate(
        people=Count("participants"), ways=Count("participants__client__billing_type", distinct=True))
    assert groups.filter(people__gte=4, ways__gte=2).exists()
    assert not appointments.filter(diagnosis_codes=[]).exists()


def test_completed_sessions_are_billed_or_waiting_for_review(seeded: dict[str, int]) -> None:
    completed = Appointment.objects.filter(source=SOURCE, status=AppointmentStatus.COMPLETED)
    participants = completed.values_list("pk", "participants__client_id")
    charged = set(completed.filter(charges__isnull=False).values_list("pk", "charges__client_id"))
    in_review = set(ReviewItem.objects.filter(appointment__in=completed, kind=ReviewKind.PRICING)
                    .values_list("appointment_id", "client_id"))
    zero_rate = set(Client.objects.filter(source=SOURCE).filter(
        Q(coverages__plan_category="EAP") | Q(coverages__plan_category="Medicaid")).values_list("pk", flat=True))

    unbilled = [(a, c) for a, c in participants if (a, c) not in charged | in_review and c not in zero_rate]
    assert unbilled == []
    assert in_review, "the clients with contradictory benefits should be in the needs-review queue"
    # Sessions that did not happen carry at most a no-show or late-cancel fee, never a session charge.
    assert not Charge.objects.filter(appointment__source=SOURCE).exclude(
        appointment__status=AppointmentStatus.COMPLETED).exclude(
        kind__in=[ChargeKind.NO_SHOW_FEE, ChargeKind.LATE_CANCEL_FEE]).exists()


@override_settings(PASSWORD_HASHERS=FAST_HASHER)
def test_seed_demo_command_prints_the_login(db: None) -> None:
    out = StringIO()
    call_command("seed_demo", "--clients", "3", stdout=out)

    assert "admin" in out.getvalue() and "demo-portal-2026" in out.getvalue()
