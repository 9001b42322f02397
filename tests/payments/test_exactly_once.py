"""Never charge twice, never lose a charge: concurrent ticks, a worker killed mid-payment, webhooks."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client as HttpClient

from billing.models import (
    Appointment,
    AttemptStatus,
    Charge,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    PaymentAttempt,
    Practice,
    StripeEvent,
)
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, outbox, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

ROOT = Path(__file__).resolve().parents[2]


def _subprocess_env(stripe_server: FakeStripe) -> dict[str, str]:
    database = connection.settings_dict
    return {**os.environ,
            "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
            "STRIPE_API_BASE": stripe_server.url, "STRIPE_SECRET_KEY": "sk_test_portal",
            "STRIPE_MAX_REQUESTS_PER_SECOND": "0", "STRIPE_MAX_NETWORK_RETRIES": "0",
            "EMAIL_URL": "dummymail://"}


def _succeeded(stripe_server: FakeStripe) -> list[dict[str, object]]:
    return [c for c in stripe_server.charges() if c["status"] == "succeeded"]


@pytest.mark.django_db(transaction=True)
def test_four_concurrent_ticks_pay_200_due_charges_exactly_once(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    for n in range(20):
        client = make_client(billing_type="self_pay", session_rate_cents=10000 + n)
        save_card(client, CARD_OK, stripe_server)
        for k in range(10):
            completed_session(client, at=FRIDAY_10AM - dt.timedelta(days=k))
    assert Charge.objects.count() == 200

    at = FRIDAY_10AM.isoformat()
    ticks = [subprocess.Popen([sys.executable, "manage.py", "billing_tick", "--at", at], cwd=ROOT,
                              env=_subprocess_env(stripe_server), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outputs = [t.communicate(timeout=300) for t in ticks]
    assert [t.returncode for t in ticks] == [0, 0, 0, 0], outputs

    assert Charge.objects.filter(status=ChargeStatus.SUCCEEDED).count() == 200
    assert PaymentAttempt.objects.count() == 200
    paid = _succeeded(stripe_server)
    assert len(paid) == 200
    assert len({c["payment_intent"] for c in paid}) == 200
    assert sorted(int(str(c["amount"])) for c in paid) == sorted(Charge.objects.values_list("amount_cents", flat=True))
    assert sum(int(out.split("payment_attempts: ")[1].split(",")[0]) for out, _ in outputs) == 200


KILL_AFTER_STRIPE_ANSWERS = """
import os, signal, django
django.setup()
from django.utils.dateparse import parse_datetime
from billing.services import payments
from billing.services.tick import charges_mark_due

settle = payments._settle_answers

def die(answers, now):  # Stripe has answered; the process dies before writing the outcome down
    if answers:
        os.kill(os.getpid(), signal.SIGKILL)
    settle(answers, now)

payments._settle_answers = die
now = parse_datetime(os.environ["AT"])
charges_mark_due(now=now)
payments.charges_collect(now=now)
"""


@pytest.mark.django_db(transaction=True)
def test_worker_killed_after_stripe_answered_is_settled_by_the_next_tick_without_a_second_payment(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment]) -> None:
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    worker = subprocess.run([sys.executable, "-c", KILL_AFTER_STRIPE_ANSWERS], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={**_subprocess_env(stripe_server),
                                                         "DJANGO_SETTINGS_MODULE": "portal.settings",
                                                         "AT": FRIDAY_10AM.isoformat()})
    assert worker.returncode == -9, worker.stderr
    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.PROCESSING
    assert len(_succeeded(stripe_server)) == 1  # the card was charged; we did not record it

    tick(FRIDAY_10AM + dt.timedelta(minutes=1))  # too early to call it lost: nothing happens
    charge.refresh_from_db()
    assert charge.status == ChargeStatus.PROCESSING
    tick(FRIDAY_10AM + dt.timedelta(minutes=5))
    charge.refresh_from_db()
    assert (charge.status, charge.attempts) == (ChargeStatus.SUCCEEDED, 1)
    assert len(_succeeded(stripe_server)) == 1
    assert LedgerEntry.objects.filter(charge=charge, kind=LedgerKind.PAYMENT).count() == 1


def _signed(payload: dict[str, object], secret: str = "whsec_test_portal", at: int | None = None) -> dict[str, str]:
    body = json.dumps(payload)
    timestamp = at if at is not None else int(time.time())
    signature = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return {"data": body, "content_type": "application/json",
            "HTTP_STRIPE_SIGNATURE": f"t={timestamp},v1={signature}"}


def _event(event_id: str, kind: str, payment_intent: str) -> dict[str, object]:
    return {"id": event_id, "object": "event", "type": kind, "created": int(time.time()),
            "data": {"object": {"id": payment_intent, "object": "payment_intent"}}}


def test_webhook_three_times_and_out_of_order_leaves_one_payment(
        immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
        completed_session: Callable[..., Appointment], client: HttpClient) -> None:
    from billing.services.payments import _claim_batch
    from billing.services.tick import charges_mark_due
    from integrations.stripe.gateway import get_gateway

    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    charges_mark_due(now=FRIDAY_10AM)
    _, [attempt] = _claim_batch(FRIDAY_10AM, None)
    # The worker died after Stripe charged the card: only the webhooks can tell us.
    payment = get_gateway().payment_off_session(
        amount_cents=attempt.amount_cents, customer_id=attempt.customer_id,
        payment_method_id=attempt.payment_method_id, idempotency_key=attempt.idempotency_key,
        reference=str(attempt.charge_id))

    deliveries = [_event("evt_2", "payment_intent.succeeded", payment.payment_intent_id),
                  _event("evt_1", "payment_intent.payment_failed", payment.payment_intent_id),  # older, late
                  _event("evt_2", "payment_intent.succeeded", payment.payment_intent_id),
                  _event("evt_2", "payment_intent.succeeded", payment.payment_intent_id)]
    answers = [client.post("/stripe/webhook/", **_signed(d)).json()["outcome"] for d in deliveries]  # type: ignore[arg-type]
    assert answers == ["settled", "settled", "duplicate", "duplicate"]

    charge = Charge.objects.get(appointment=appointment)
    assert charge.status == ChargeStatus.SUCCEEDED
    assert PaymentAttempt.objects.get(pk=attempt.pk).status == AttemptStatus.SUCCEEDED
    assert LedgerEntry.objects.filter(charge=charge, kind=LedgerKind.PAYMENT).count() == 1
    assert StripeEvent.objects.count() == 2
    assert len(_succeeded(stripe_server)) == 1


@pytest.mark.parametrize("problem", ["unsigned", "wrong secret", "stale"])
def test_webhook_without_a_valid_fresh_signature_is_refused_and_changes_nothing(
        db: None, stripe_server: FakeStripe, client: HttpClient, problem: str) -> None:
    event = _event("evt_9", "payment_intent.succeeded", "pi_123")
    if problem == "unsigned":
        response = client.post("/stripe/webhook/", data=json.dumps(event), content_type="application/json")
    else:
        signed = _signed(event, secret="whsec_other" if problem == "wrong secret" else "whsec_test_portal",
                         at=int(time.time()) - 3600 if problem == "stale" else None)
        response = client.post("/stripe/webhook/", **signed)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


def test_saving_a_card_is_also_learned_from_the_setup_intent_webhook(
        practice: Practice, stripe_server: FakeStripe, self_pay_client: Client, client: HttpClient) -> None:
    from billing.services.cards import enrollment_begin, enrollment_link_send
    from billing.services.links import link_resolve

    issued = enrollment_link_send(client=self_pay_client, now=FRIDAY_10AM, actor="test", send_email=False)
    link = link_resolve(token=issued.url.rstrip("/").rsplit("/", 1)[1], now=FRIDAY_10AM)
    secret = enrollment_begin(link=link, ip_address="127.0.0.1", user_agent="test", now=FRIDAY_10AM)
    setup_intent = stripe_server.confirm_setup(secret, CARD_OK)["id"]  # the browser closed right after
    event = {"id": "evt_si", "object": "event", "type": "setup_intent.succeeded", "created": int(time.time()),
             "data": {"object": {"id": setup_intent, "object": "setup_intent"}}}
    assert client.post("/stripe/webhook/", **_signed(event)).json()["outcome"] == "card saved"  # type: ignore[arg-type]
    self_pay_client.refresh_from_db()
    assert (self_pay_client.card_last4, self_pay_client.card_exp_year) == ("4242", 2030)
    assert len(outbox("card_saved")) == 0  # written to the outbox; sent after commit by the tick
    tick(FRIDAY_10AM)
    assert len(outbox("card_saved")) == 1


def _signed_body(body: str, at: int | None = None) -> dict[str, str]:
    timestamp = at if at is not None else int(time.time())
    signature = hmac.new(b"whsec_test_portal", f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return {"data": body, "content_type": "application/json", "HTTP_STRIPE_SIGNATURE": f"t={timestamp},v1={signature}"}


@pytest.mark.parametrize(("body", "message"), [
    ("[1, 2]", "not a JSON object"),
    ('"evt_1"', "not a JSON object"),
    ("{not json", "not JSON"),
    ("[" * 100_000 + "]" * 100_000, "not JSON"),
    (json.dumps({"type": "payment_intent.succeeded", "data": {"object": {"id": "pi_1", "object": "payment_intent"}}}),
     "id must be text"),
    (json.dumps({"id": 5, "type": "x", "data": {"object": {}}}), "id must be text"),
    (json.dumps({"id": "evt_" + "x" * 97, "type": "payment_intent.succeeded",
                 "data": {"object": {"id": "pi_1", "object": "payment_intent"}}}), "id must be text of 1 to 100"),
    (json.dumps({"id": "evt_1", "data": {"object": {}}}), "type must be text"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded"}), "data.object is missing"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "data": {}}), "data.object is missing"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": []}}), "data.object is missing"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": "pi_" + "x" * 98}}}),
     "data.object's id"),
    (json.dumps({"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {"id": ["pi_1"]}}}),
     "data.object's id"),
])
def test_a_signed_webhook_that_is_not_a_proper_event_is_400_and_stores_nothing(
        db: None, stripe_server: FakeStripe, client: HttpClient, body: str, message: str) -> None:
    response = client.post("/stripe/webhook/", **_signed_body(body))  # type: ignore[arg-type]
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not StripeEvent.objects.exists()


def test_a_signed_webhook_that_is_not_utf8_is_400(db: None, stripe_server: FakeStripe, client: HttpClient) -> None:
    timestamp = int(time.time())
    body = b'{"id": "evt_\xff"}'
    signature = hmac.new(b"whsec_test_portal", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    response = client.post("/stripe/webhook/", data=body, content_type="application/json",
                           HTTP_STRIPE_SIGNATURE=f"t={timestamp},v1={signature}")
    assert response.status_code == 400
    assert not StripeEvent.objects.exists()


@pytest.mark.parametrize(("seconds", "status"), [(-3600, 400), (-200, 200), (200, 200), (400, 400), (86400, 400)])
def test_a_webhook_signed_too_far_in_the_past_or_the_future_is_refused(
        db: None, stripe_server: FakeStripe, client: HttpClient, seconds: int, status: int) -> None:
    event = {"id": "evt_time", "object": "event", "type": "customer.created", "created": int(time.time()),
             "data": {"object": {"id": "cus_1", "object": "customer"}}}
    response = client.post("/stripe/webhook/", **_signed(event, at=int(time.time()) + seconds))  # type: ignore[arg-type]
    assert response.status_code == status, response.content
    assert StripeEvent.objects.exists() == (status == 200)


def test_a_webhook_for_a_payment_intent_stripe_does_not_know_is_acknowledged_and_kept(
        db: None, stripe_server: FakeStripe, client: HttpClient) -> None:
    event = _event("evt_unknown", "payment_intent.succeeded", "pi_not_ours_and_not_in_stripe")
    response = client.post("/stripe/webhook/", **_signed(event))  # type: ignore[arg-type]
    assert response.status_code == 200  # Stripe stops resending it
    assert response.json()["outcome"] == "unknown payment intent: kept for reconciliation"
    stored = StripeEvent.objects.get()
    assert (stored.event_id, stored.object_id, stored.outcome) == (
        "evt_unknown", "pi_not_ours_and_not_in_stripe", "unknown payment intent: kept for reconciliation")
    assert stored.processed_at is not None
    assert client.post("/stripe/webhook/", **_signed(event)).json()["outcome"] == "duplicate"  # type: ignore[arg-type]


def test_a_webhook_for_a_payment_taken_outside_the_portal_is_acknowledged_and_kept(
        db: None, stripe_server: FakeStripe, client: HttpClient) -> None:
    from tests.billing.test_reports import _stripe_payment_with_no_appointment

    intent = _stripe_payment_with_no_appointment(stripe_server)  # taken in the Stripe dashboard
    response = client.post("/stripe/webhook/", **_signed(_event("evt_desk", "payment_intent.succeeded", intent)))  # type: ignore[arg-type]
    assert response.status_code == 200
    assert response.json()["outcome"] == "unknown payment intent: kept for reconciliation"
    assert StripeEvent.objects.get().object_id == intent
    assert not PaymentAttempt.objects.exists() and not Charge.objects.exists()


def test_a_webhook_is_retried_by_stripe_while_stripe_cannot_be_asked(
        db: None, client: HttpClient, settings: Any) -> None:
    # No fake Stripe here: asking Stripe about the PaymentIntent fails, so the portal asks Stripe to resend.
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_portal"
    event = _event("evt_later", "payment_intent.succeeded", "pi_1")
    response = client.post("/stripe/webhook/", **_signed(event))  # type: ignore[arg-type]
    assert response.status_code == 503
    assert StripeEvent.objects.get().processed_at is None


def test_staff_list_the_kept_events_about_payments_the_portal_did_not_make(
        db: None, stripe_server: FakeStripe, client: HttpClient, admin_client: HttpClient) -> None:
    client.post("/stripe/webhook/", **_signed(_event("evt_a", "payment_intent.succeeded", "pi_nobody_made")))  # type: ignore[arg-type]
    StripeEvent.objects.create(event_id="evt_b", type="customer.created", object_id="cus_other",
                               received_at=FRIDAY_10AM, processed_at=FRIDAY_10AM, outcome="ignored")
    page = admin_client.get("/admin/billing/stripeevent/", {"payment": "unknown"}).content.decode()
    assert "pi_nobody_made" in page and "cus_other" not in page


def test_an_idempotency_key_sent_again_with_other_parameters_is_refused_not_replayed(
        stripe_server: FakeStripe, self_pay_client: Client) -> None:
    """As Stripe does: the same key replays the first answer only for the same request, so a bug that
    reused a key for another amount would show here instead of charging the first amount again."""
    from integrations.stripe.gateway import GatewayRefused, get_gateway

    save_card(self_pay_client, CARD_OK, stripe_server)
    self_pay_client.refresh_from_db()
    ask = functools.partial(get_gateway().payment_off_session, customer_id=self_pay_client.stripe_customer_id,
                            payment_method_id=self_pay_client.card_payment_method_id,
                            idempotency_key="charge-test-attempt-1", reference="1")
    first = ask(amount_cents=14000)
    assert (first.status, first.replayed) == ("succeeded", False)
    again = ask(amount_cents=14000)
    assert (again.payment_intent_id, again.replayed) == (first.payment_intent_id, True)
    with pytest.raises(GatewayRefused, match="same parameters"):
        ask(amount_cents=9000)
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [14000]
