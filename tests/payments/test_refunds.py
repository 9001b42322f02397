"""Refunds never exceed what was paid, and the client's balance follows."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db.models import Sum

from billing.models import Appointment, Charge, ChargeStatus, Client, LedgerEntry, Practice
from billing.services.refunds import RefundNotAllowed, charge_refund
from billing.services.schedule import appointment_set_status
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM


def balance(client: Client) -> int:
    return LedgerEntry.objects.filter(client=client).aggregate(t=Sum("amount_cents"))["t"] or 0


@pytest.fixture
def paid_charge(immediate: Practice, stripe_server: FakeStripe, self_pay_client: Client,
                completed_session: Callable[..., Appointment]) -> Charge:
    save_card(self_pay_client, CARD_OK, stripe_server)
    appointment = completed_session(self_pay_client)
    tick(FRIDAY_10AM)
    return Charge.objects.get(appointment=appointment, status=ChargeStatus.SUCCEEDED)


def test_partial_then_full_refund_and_never_more_than_paid(paid_charge: Charge, stripe_server: FakeStripe) -> None:
    staff = User.objects.create_user("manager")
    charge_refund(charge=paid_charge, amount_cents=4000, reason="billed the wrong rate", user=staff, now=FRIDAY_10AM)
    paid_charge.refresh_from_db()
    assert (paid_charge.status, paid_charge.refunded_cents) == (ChargeStatus.PARTIALLY_REFUNDED, 4000)
    assert balance(paid_charge.client) == 0  # the refunded part was not owed: written off, not chased

    with pytest.raises(RefundNotAllowed, match=r"At most \$100.00"):
        charge_refund(charge=paid_charge, amount_cents=10001, reason="too much", user=staff, now=FRIDAY_10AM)
    with pytest.raises(RefundNotAllowed, match="Give a reason"):
        charge_refund(charge=paid_charge, amount_cents=100, reason=" ", user=staff, now=FRIDAY_10AM)

    charge_refund(charge=paid_charge, amount_cents=10000, reason="session waived", user=staff, now=FRIDAY_10AM)
    paid_charge.refresh_from_db()
    assert (paid_charge.status, paid_charge.refunded_cents) == (ChargeStatus.REFUNDED, 14000)
    refunds = stripe_server.http.get("/v1/refunds", params={"payment_intent": paid_charge.payment_reference}).json()
    assert sorted(r["amount"] for r in refunds["data"]) == [4000, 10000]
    assert balance(paid_charge.client) == 0


def test_refund_of_a_session_canceled_after_payment_uses_the_credit(paid_charge: Charge) -> None:
    appointment = paid_charge.appointment
    assert appointment is not None
    appointment_set_status(appointment=appointment, status="canceled", now=FRIDAY_10AM, actor="api:ehr")
    assert balance(paid_charge.client) == -14000  # the client has a credit
    charge_refund(charge=paid_charge, amount_cents=14000, reason="session canceled", user=User.objects.create_user("m"),
                  now=FRIDAY_10AM)
    assert balance(paid_charge.client) == 0
