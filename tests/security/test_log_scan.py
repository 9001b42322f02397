"""No client data in the logs: the workflows run with every logger at DEBUG, and what the configured
handlers would write (and every record emitted) is scanned for the clients' names, emails, phones and
link tokens. Stripe's traffic is scanned by tests/payments/test_privacy.py.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient
from django.utils import timezone

from billing.models import Appointment, BillingType, Charge, ChargeStatus, Client, LinkPurpose, Practice
from billing.services.cards import clients_link_stripe, enrollment_link_send
from billing.services.links import link_create
from billing.services.refunds import charge_refund
from billing.services.schedule import appointment_set_status
from portal.logging_filters import RedactClientData
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

PEOPLE = [("Maya", "Lindqvist", "maya.lindqvist@example.com", "(555) 201-3344"),
          ("Tomasz", "Okonkwo", "t.okonkwo@example.org", "555-877-1200"),
          ("Aurelia", "Fairweather", "aurelia.f@example.net", "+1 555 400 9911")]


def configured_handlers() -> list[logging.Handler]:
    """Every handler LOGGING set up (pytest's own capture handlers aside)."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict))]
    found: list[logging.Handler] = []
    for logger in loggers:
        for handler in logger.handlers:
            pytest_own = type(handler).__module__.startswith("_pytest")
            if pytest_own or isinstance(handler, logging.NullHandler) or handler in found:
                continue
            found.append(handler)
    return found


@contextmanager
def logs_at_debug() -> Iterator[io.StringIO]:
    """Point every configured handler at one buffer, with the app's loggers at DEBUG."""
    buffer = io.StringIO()
    handlers = [h for h in configured_handlers() if isinstance(h, logging.StreamHandler)]
    streams = [h.setStream(buffer) for h in handlers]
    names = ["", "django", "django.request", "django.server", "billing", "portal", "integrations", "auditlog",
             "axes", "django_q"]
    levels = [logging.getLogger(name).level for name in names]
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.setStream(stream)
        for name, level in zip(names, levels, strict=True):
            logging.getLogger(name).setLevel(level)


def test_every_configured_handler_redacts() -> None:
    handlers = configured_handlers()
    assert handlers, "LOGGING configured no handler"
    for handler in handlers:
        assert any(isinstance(f, RedactClientData) for f in handler.filters), handler


@pytest.mark.django_db
def test_a_full_workflow_leaves_no_client_data_in_the_logs(
        practice: Practice, stripe_server: FakeStripe, make_appointment: Callable[..., Appointment],
        caplog: pytest.LogCaptureFixture) -> None:
    practice.charge_timing = "immediate"
    practice.save()
    clients = [Client.objects.create(first_name=first, last_name=last, email=email, phone=phone,
                                     billing_type=BillingType.SELF_PAY, session_rate_cents=12000)
               for first, last, email, phone in PEOPLE]
    payer, decliner, portal_payer = clients
    tokens: list[str] = []
    http = HttpClient()
    caplog.set_level(logging.DEBUG)
    with logs_at_debug() as output:
        clients_link_stripe(clients=clients, now=FRIDAY_10AM)
        # Enrollment through the client's page, then the card saved as Stripe.js would.
        issued = enrollment_link_send(client=payer, now=timezone.now(), actor="test", send_email=True)
        path = issued.url.removeprefix("http://127.0.0.1:8000")
        tokens.append(path.split("/")[2])
        assert http.get(path).status_code == 200
        assert http.post(path + "card/start/", {"agree": "yes"}).status_code == 200
        save_card(payer, CARD_OK, stripe_server)
        save_card(decliner, CARD_DECLINES_WHEN_CHARGED, stripe_server)
        save_card(portal_payer, CARD_OK, stripe_server)
        # Charges: one paid, one declined (and retried), through billing_tick.
        for person in (payer, decliner):
            appointment = make_appointment(person, starts_at=FRIDAY_10AM - dt.timedelta(hours=1),
                                           fee_cents=12000)
            appointment_set_status(appointment=appointment, status="completed", now=FRIDAY_10AM, actor="test")
        for day in (0, 3):
            tick(FRIDAY_10AM + dt.timedelta(days=day))
        paid = Charge.objects.get(client=payer)
        assert paid.status == ChargeStatus.SUCCEEDED
        assert Charge.objects.get(client=decliner).status == ChargeStatus.FAILED
        # A refund by staff.
        charge_refund(charge=paid, amount_cents=2000, reason="courtesy", user=User.objects.create_user("mgr"),
                      now=FRIDAY_10AM + dt.timedelta(days=4))
        # Paying the balance on the portal.
        practice.charge_timing = "weekly"
        practice.save()
        appointment = make_appointment(portal_payer, starts_at=FRIDAY_10AM - dt.timedelta(hours=2),
                                       fee_cents=9000)
        appointment_set_status(appointment=appointment, status="completed", now=FRIDAY_10AM, actor="test")
        pay = link_create(client=portal_payer, purpose=LinkPurpose.PAY_BALANCE, now=timezone.now(), actor="test")
        pay_path = pay.url.removeprefix("http://127.0.0.1:8000")
        tokens.append(pay_path.split("/")[2])
        assert http.get(pay_path).status_code == 200
        assert http.post(pay_path + "balance/pay/", {"mode": "all"}).json()["status"] == "succeeded"
        # A link that no longer works, and a server request line as runserver writes it.
        assert http.get(pay_path.replace(tokens[-1], tokens[-1][:-4] + "AAAA")).status_code == 404
        logging.getLogger("django.server").info('"%s" %s %s', f"GET {pay_path} HTTP/1.1", 200, 5120)
        logging.getLogger("django.request").warning("Not Found: %s?email=%s", pay_path, payer.email)
        logging.getLogger("billing").debug("debug detail for %s, %s", decliner.email, decliner.phone)

    written = output.getvalue()
    assert "GET /p/[link]/" in written, "the runserver line should have been written, redacted"
    forbidden = [t for first, last, email, phone in PEOPLE for t in (first, last, email, phone)] + tokens
    leaks = [term for term in forbidden if term in written]
    assert leaks == [], f"client data in the log output: {leaks}\n{written}"
    # Names cannot be pattern-matched, so no record may carry one in the first place.
    raw = "\n".join(record.getMessage() for record in caplog.records)
    names = [term for first, last, _, _ in PEOPLE for term in (first, last) if term in raw]
    assert names == [], f"a log record names a client: {names}"
