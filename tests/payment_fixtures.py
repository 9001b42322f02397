"""Fixtures and helpers for payments, which run against the fake Stripe server over HTTP."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from io import StringIO
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.test import Client as HttpClient

from billing.models import Appointment, AppointmentStatus, BillingType, Client, LinkPurpose, Practice
from billing.services.cards import card_save_from_setup_intent, enrollment_begin, enrollment_link_send
from billing.services.links import link_create, link_resolve
from billing.services.schedule import appointment_set_status
from tests.conftest import FakeStripe
from tests.practice_fixtures import FRIDAY_10AM

CARD_OK = "4242424242424242"
CARD_DECLINES_WHEN_CHARGED = "4000000000000341"
CARD_NEEDS_AUTHENTICATION = "4000002760003184"


def tick(at: dt.datetime) -> str:
    out = StringIO()
    call_command("billing_tick", "--at", at.isoformat(), stdout=out)
    return out.getvalue()


def save_card(client: Client, number: str, stripe_server: FakeStripe, now: dt.datetime = FRIDAY_10AM) -> Client:
    """The enrollment flow minus the browser: link, consent, SetupIntent, Stripe.js confirm, save."""
    issued = enrollment_link_send(client=client, now=now, actor="test", send_email=False)
    token = issued.url.rstrip("/").rsplit("/", 1)[1]
    link = link_resolve(token=token, now=now)
    secret = enrollment_begin(link=link, ip_address="127.0.0.1", user_agent="pytest", now=now)
    confirmed = stripe_server.confirm_setup(secret, number)
    assert confirmed.get("status") == "succeeded", confirmed
    saved = card_save_from_setup_intent(setup_intent_id=confirmed["id"], now=now)
    assert saved is not None
    return saved


def pay_link(person: Client) -> str:
    """The path of a fresh pay-balance link for the client, as the balance page's own calls use it."""
    issued = link_create(client=person, purpose=LinkPurpose.PAY_BALANCE, now=dt.datetime.now(dt.UTC), actor="test")
    return issued.url.split("127.0.0.1:8000", 1)[1]


def outbox(template: str) -> list[Any]:
    return [m for m in mail.outbox if m.extra_headers.get("X-Portal-Email") == template]


@pytest.fixture
def immediate(practice: Practice) -> Practice:
    practice.charge_timing = "immediate"
    practice.save()
    return practice


@pytest.fixture
def completed_session(make_client: Callable[..., Client],
                      make_appointment: Callable[..., Appointment]) -> Callable[..., Appointment]:
    """A self-pay session at the client's rate, marked complete at ``at``."""
    def complete(client: Client, at: dt.datetime = FRIDAY_10AM, **fields: Any) -> Appointment:
        appointment = make_appointment(client, starts_at=at - dt.timedelta(hours=1), **fields)
        appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=at, actor="test")
        return appointment
    return complete


@pytest.fixture
def self_pay_client(make_client: Callable[..., Client]) -> Client:
    return make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)


def post_at_once(path: str, forms: list[dict[str, Any]], *, cookies: Any = None) -> list[Any]:
    """Each form posted from its own thread (its own database connection, with the given session cookies),
    all released together, as two tabs or a double click would; the responses, in the order they came."""
    start = threading.Barrier(len(forms))
    answers: list[Any] = []

    def post(form: dict[str, Any]) -> None:
        try:
            http = HttpClient()
            if cookies is not None:
                http.cookies = cookies
            start.wait()
            answers.append(http.post(path, form))
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(form,)) for form in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return answers
