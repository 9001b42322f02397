"""Write-back webhooks: a real receiver on a loopback port gets signed events, retried with backoff, in order."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient

from billing.models import Appointment, Charge, ChargeKind, ChargeStatus, Client, Practice
from billing.services.outbound import CHARGE_REFUNDED, CHARGE_SUCCEEDED, charge_event_emit
from billing.services.refunds import charge_refund
from integrations.ehr.models import WebhookEndpoint, WebhookEvent, WebhookEventStatus
from integrations.ehr.writeback.webhooks import backoff, verify
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

SECRET = "pws_test_secret"


class Receiver:
    """An EHR middleware's endpoint: answers 500 to its first ``failures`` requests, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                ok = len(receiver.requests) > receiver.failures
                self.send_response(200 if ok else 500)
                self.end_headers()
                self.wfile.write(b"ok" if ok else b"try later")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/portal-events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory() -> Iterator[Callable[[int], Receiver]]:
    made: list[Receiver] = []

    def make(failures: int) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture
def ehr_client(make_client: Callable[..., Client]) -> Client:
    return make_client(billing_type="self_pay", session_rate_cents=14000, source="simplepractice", external_id="c-77")


def endpoint(url: str) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(source="simplepractice", url=url, secret=SECRET)


def test_receiver_failing_twice_gets_the_event_on_the_third_try_with_a_verifiable_signature(
        immediate: Practice, stripe_server: FakeStripe, ehr_client: Client,
        completed_session: Callable[..., Appointment], receiver_factory: Callable[[int], Receiver]) -> None:
    receiver = receiver_factory(2)
    endpoint(receiver.url)
    save_card(ehr_client, CARD_OK, stripe_server)
    appointment = completed_session(ehr_client, external_id="appt-9", source="simplepractice")
    tick(FRIDAY_10AM)  # charges the card; the event goes out in the same tick and gets a 500
    charge = Charge.objects.get(appointment=appointment, status=ChargeStatus.SUCCEEDED)
    event = WebhookEvent.objects.get()
    assert (event.type, event.attempts, event.status) == (CHARGE_SUCCEEDED, 1, WebhookEventStatus.PENDING)
    assert event.last_status_code == 500 and "HTTP 500" in event.last_error
    assert event.next_attempt_at == FRIDAY_10AM + dt.timedelta(seconds=30)

    tick(FRIDAY_10AM + dt.timedelta(seconds=29))  # backoff not over: nothing sent
    assert len(receiver.requests) == 1
    tick(FRIDAY_10AM + dt.timedelta(seconds=30))  # second try: 500 again, next one a minute later
    event.refresh_from_db()
    assert (len(receiver.requests), event.attempts) == (2, 2)
    assert event.next_attempt_at == FRIDAY_10AM + dt.timedelta(seconds=90)
    tick(FRIDAY_10AM + dt.timedelta(seconds=89))
    assert len(receiver.requests) == 2
    tick(FRIDAY_10AM + dt.timedelta(seconds=90))
    event.refresh_from_db()
    assert (len(receiver.requests), event.status, event.last_error) == (3, WebhookEventStatus.DELIVERED, "")

    headers, body = receiver.requests[-1]
    # What the receiver does with only the secret (README: "Verifying a delivery").
    parts = dict(item.split("=", 1) for item in headers["portal-signature"].split(","))
    expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(expected, parts["v1"])
    assert abs(time.time() - int(parts["t"])) < 60
    assert verify(secret=SECRET, header=headers["portal-signature"], body=body)
    assert not verify(secret="pws_wrong", header=headers["portal-signature"], body=body)
    assert not verify(secret=SECRET, header=headers["portal-signature"], body=body + b" ")

    payload = json.loads(body)
    assert headers["portal-event-id"] == payload["id"] and headers["portal-event-type"] == "charge.succeeded"
    assert payload["type"] == "charge.succeeded" and payload["occurred_at"] == FRIDAY_10AM.isoformat()
    assert payload["data"] == {"charge": charge.pk, "kind": "session_fee", "client": "c-77", "appointment": "appt-9",
                               "amount_cents": 14000, "refunded_cents": 0, "status": "succeeded",
                               "payment_reference": charge.payment_reference}
    # The same event on every try (receivers dedupe on the id); nothing clinical in it.
    assert len({b["id"] for b in receiver.bodies()}) == 1
    assert not {"service_code", "diagnosis_codes", "starts_at", "clinician"} & set(payload["data"])


def test_events_for_one_charge_are_delivered_in_order(
        make_client: Callable[..., Client], make_appointment: Callable[..., Appointment],
        receiver_factory: Callable[[int], Receiver], practice: Practice) -> None:
    receiver = receiver_factory(1)
    endpoint(receiver.url)
    client = make_client(billing_type="self_pay", source="simplepractice", external_id="c-1")
    charges = [Charge.objects.create(client=client, appointment=make_appointment(client), kind=ChargeKind.SESSION_FEE,
                                     amount_cents=1000 * (i + 1), status=ChargeStatus.SUCCEEDED,
                                     scheduled_for=FRIDAY_10AM) for i in range(2)]
    charge_event_emit(charge=charges[0], type=CHARGE_SUCCEEDED, now=FRIDAY_10AM)
    charge_event_emit(charge=charges[0], type=CHARGE_REFUNDED, now=FRIDAY_10AM)
    charge_event_emit(charge=charges[1], type=CHARGE_SUCCEEDED, now=FRIDAY_10AM)

    tick(FRIDAY_10AM)
    # The first event failed: the refund of the same charge waits behind it; the other charge goes on.
    sent = [(b["data"]["charge"], b["type"]) for b in receiver.bodies()]
    assert sent == [(charges[0].pk, "charge.succeeded"), (charges[1].pk, "charge.succeeded")]
    assert WebhookEvent.objects.get(type=CHARGE_REFUNDED).attempts == 0

    tick(FRIDAY_10AM + backoff(1))
    sent = [(b["data"]["charge"], b["type"]) for b in receiver.bodies()]
    assert sent[2:] == [(charges[0].pk, "charge.succeeded"), (charges[0].pk, "charge.refunded")]
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {WebhookEventStatus.DELIVERED}


def test_decline_refund_and_no_endpoint(immediate: Practice, stripe_server: FakeStripe, ehr_client: Client,
                                        make_client: Callable[..., Client],
                                        completed_session: Callable[..., Appointment],
                                        receiver_factory: Callable[[int], Receiver]) -> None:
    receiver = receiver_factory(0)
    endpoint(receiver.url)
    save_card(ehr_client, CARD_OK, stripe_server)
    paid = completed_session(ehr_client, source="simplepractice", external_id="a-paid")
    staff_only = make_client(billing_type="self_pay", session_rate_cents=9000)  # no source: no endpoint
    save_card(staff_only, CARD_OK, stripe_server)
    completed_session(staff_only)
    declines = make_client(billing_type="self_pay", session_rate_cents=9000, source="simplepractice",
                           external_id="c-decl")
    save_card(declines, CARD_DECLINES_WHEN_CHARGED, stripe_server)
    completed_session(declines, source="simplepractice", external_id="a-decl")
    tick(FRIDAY_10AM)
    charge = Charge.objects.get(appointment=paid)
    charge_refund(charge=charge, amount_cents=14000, reason="goodwill", user=User.objects.create_user("m"),
                  now=FRIDAY_10AM)
    tick(FRIDAY_10AM + dt.timedelta(minutes=1))
    kinds = sorted((b["data"]["client"], b["type"], b["data"]["status"]) for b in receiver.bodies())
    assert kinds == [("c-77", "charge.refunded", "refunded"), ("c-77", "charge.succeeded", "succeeded"),
                     ("c-decl", "charge.failed", "failed")]


def test_admin_endpoint_secret_shown_once_and_retry_now(
        admin_client: HttpClient, make_client: Callable[..., Client], make_appointment: Callable[..., Appointment],
        receiver_factory: Callable[[int], Receiver], practice: Practice) -> None:
    receiver = receiver_factory(1)
    response = admin_client.post("/admin/ehr/webhookendpoint/add/", {"source": "simplepractice", "url": receiver.url,
                                                                     "active": "on"}, follow=True)
    hook = WebhookEndpoint.objects.get()
    assert hook.secret.startswith("pws_") and hook.secret in response.content.decode()
    assert hook.secret not in admin_client.get(f"/admin/ehr/webhookendpoint/{hook.pk}/change/").content.decode()

    client = make_client(billing_type="self_pay", source="simplepractice", external_id="c-1")
    charge = Charge.objects.create(client=client, appointment=make_appointment(client), kind=ChargeKind.SESSION_FEE,
                                   amount_cents=1000, status=ChargeStatus.SUCCEEDED, scheduled_for=FRIDAY_10AM)
    charge_event_emit(charge=charge, type=CHARGE_SUCCEEDED, now=FRIDAY_10AM)
    tick(FRIDAY_10AM)
    event = WebhookEvent.objects.get()
    listing = admin_client.get("/admin/ehr/webhookevent/").content.decode()
    assert "HTTP 500" in listing
    done = admin_client.post("/admin/ehr/webhookevent/", {"action": "retry_now", "_selected_action": [event.pk]},
                             follow=True)
    assert "1 delivered now" in done.content.decode()
    event.refresh_from_db()
    assert event.status == WebhookEventStatus.DELIVERED and len(receiver.requests) == 2


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(30) == dt.timedelta(hours=6)
