"""Agreeing on the card page, when it shows the current cancellation policy, acknowledges that version: the
no-show fee rule (a fee only with a current acknowledgment) then charges the fee instead of listing it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from billing.models import (
    Appointment,
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeKind,
    Client,
    PolicyAcknowledgment,
    Practice,
    ReviewItem,
    ReviewKind,
)
from billing.services.cards import enrollment_link_send
from billing.services.schedule import appointment_set_status
from tests.conftest import FakeStripe

POLICY = "Please cancel 24 hours ahead. A no-show costs $75.00."


@pytest.fixture
def policy(practice: Practice) -> Practice:
    practice.cancellation_policy_version = "2026-03"
    practice.cancellation_policy_text = POLICY
    practice.no_show_fee_cents = 7500
    practice.save()
    return practice


def _agree(http: HttpClient, person: Client) -> None:
    issued = enrollment_link_send(client=person, now=timezone.now(), actor="test", send_email=False)
    path = issued.url.split("127.0.0.1:8000", 1)[1]
    page = http.get(path)
    assert POLICY in page.content.decode()
    response = http.post(path + "card/start/", {"agree": "yes"}, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200, response.content


def test_agreeing_to_the_card_page_acknowledges_the_policy_it_showed_and_the_fee_follows(
        policy: Practice, stripe_server: FakeStripe, client: HttpClient, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    _agree(client, person)

    [ack] = PolicyAcknowledgment.objects.filter(client=person)
    assert (ack.policy_version, ack.source, ack.ip_address) == ("2026-03", "portal", "203.0.113.9")
    session = make_appointment(person, starts_at=timezone.now() - dt.timedelta(hours=2))
    appointment_set_status(appointment=session, status=AppointmentStatus.NO_SHOW, now=timezone.now(), actor="test")
    assert Charge.objects.filter(client=person, kind=ChargeKind.NO_SHOW_FEE, amount_cents=7500).exists()
    assert not ReviewItem.objects.filter(client=person, kind=ReviewKind.FEE_NO_ACK).exists()


def test_agreeing_again_keeps_the_first_acknowledgment(
        policy: Practice, stripe_server: FakeStripe, client: HttpClient, make_client: Callable[..., Client]) -> None:
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    _agree(client, person)
    first = PolicyAcknowledgment.objects.get(client=person).acknowledged_at
    _agree(client, person)
    assert list(PolicyAcknowledgment.objects.filter(client=person).values_list("acknowledged_at", flat=True)) == [
        first]


def test_a_card_page_without_a_policy_acknowledges_nothing(
        practice: Practice, stripe_server: FakeStripe, client: HttpClient, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    practice.no_show_fee_cents = 7500
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    issued = enrollment_link_send(client=person, now=timezone.now(), actor="test", send_email=False)
    path = issued.url.split("127.0.0.1:8000", 1)[1]
    assert client.post(path + "card/start/", {"agree": "yes"}).status_code == 200

    assert not PolicyAcknowledgment.objects.filter(client=person).exists()
    session = make_appointment(person, starts_at=timezone.now() - dt.timedelta(hours=2))
    appointment_set_status(appointment=session, status=AppointmentStatus.NO_SHOW, now=timezone.now(), actor="test")
    assert ReviewItem.objects.filter(client=person, kind=ReviewKind.FEE_NO_ACK).exists()
