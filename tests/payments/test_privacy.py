"""Nothing clinical reaches Stripe: every request the portal sends during the workflows is scanned."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from urllib.parse import unquote_plus

from django.contrib.auth.models import User

from billing.models import Appointment, Charge, Client, Practice
from billing.services.cards import clients_link_stripe
from billing.services.refunds import charge_refund
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_NEEDS_AUTHENTICATION, CARD_OK, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM


def test_no_diagnosis_cpt_clinician_time_or_note_is_sent_to_stripe(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    insured = make_client(benefits={"copay_cents": 2500})
    declining = make_client(billing_type="self_pay", session_rate_cents=9000)
    authenticating = make_client(billing_type="sliding_scale", session_rate_cents=4000)
    clients_link_stripe(clients=[insured, declining, authenticating], now=FRIDAY_10AM)
    for client, card in ((insured, CARD_OK), (declining, CARD_DECLINES_WHEN_CHARGED),
                         (authenticating, CARD_NEEDS_AUTHENTICATION)):
        save_card(client, card, stripe_server)
        completed_session(client, diagnosis_codes=["F43.23", "Z63.0"], service_code="90837")
    for day in (0, 3, 7):
        tick(FRIDAY_10AM + dt.timedelta(days=day))
    paid = Charge.objects.get(client=insured)
    staff = User.objects.create_user("billing", password="x")
    charge_refund(charge=paid, amount_cents=500, reason="courtesy", user=staff, now=FRIDAY_10AM + dt.timedelta(days=8))

    requests = stripe_server.requests()
    assert {r["path"].split("/")[2] for r in requests} >= {"customers", "setup_intents", "payment_intents", "refunds"}
    sent = "\n".join(unquote_plus(f"{r['path']}?{r['query']}\n{r['body']}") for r in requests)
    appointment = Appointment.objects.first()
    assert appointment is not None
    forbidden = ["90837", "F43.23", "Z63.0", "Dana Reyes", "LCSW", "1234567893", "Individual therapy",
                 appointment.starts_at.isoformat()[:16], appointment.starts_at.strftime("%Y-%m-%d"),
                 str(int(appointment.starts_at.timestamp()))]
    leaks = [term for term in forbidden if term in sent]
    assert leaks == [], f"clinical data sent to Stripe: {leaks}"
    # What Stripe does get: amounts, opaque ids, and the customer's name and email.
    assert "client1@example.com" in sent
    assert "portal_charge" in sent
