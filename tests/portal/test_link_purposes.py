"""Each client link does only what it was sent for: an enrollment link (the one EHRs get from the API) opens
no superbill or receipt, and a receipts link starts no card enrollment (SECURITY.md, "What each link may do")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from billing.models import Appointment, BillingType, Charge, ChargeStatus, Client, ClientLink, LinkPurpose, Practice
from billing.services.estimates import LineIn, estimate_create
from billing.services.links import link_create
from tests.practice_fixtures import FRIDAY_10AM

ALLOWED = {
    "superbill": {LinkPurpose.PAY_BALANCE, LinkPurpose.RECEIPTS, LinkPurpose.PAYMENT_PLAN},
    "receipt": {LinkPurpose.PAY_BALANCE, LinkPurpose.RECEIPTS, LinkPurpose.PAYMENT_PLAN},
    "history": {LinkPurpose.PAY_BALANCE, LinkPurpose.RECEIPTS, LinkPurpose.PAYMENT_PLAN},
    "card_link": {LinkPurpose.PAY_BALANCE, LinkPurpose.PAYMENT_PLAN},
    "balance_confirmed": {LinkPurpose.PAY_BALANCE},
    "estimate": {LinkPurpose.ESTIMATE},
}
NOT_VALID = "This link is not valid. Please ask the practice for a new one."


@pytest.fixture
def paid(practice: Practice, make_client: Callable[..., Client],
         completed_session: Callable[..., Appointment]) -> Charge:
    """A client with a session, charged and paid (a receipt to download, a superbill to make)."""
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000)
    session = completed_session(person)
    charge = Charge.objects.get(appointment=session)
    Charge.objects.filter(pk=charge.pk).update(status=ChargeStatus.SUCCEEDED, payment_reference="pi_paid")
    return charge


def _path(charge: Charge, purpose: str) -> str:
    issued = link_create(client=charge.client, purpose=purpose, now=timezone.now(), actor="test",
                         charge=charge if purpose == LinkPurpose.AUTHENTICATE_PAYMENT else None)
    return issued.url.split("127.0.0.1:8000", 1)[1]


@pytest.mark.parametrize("purpose", LinkPurpose.values)
@pytest.mark.parametrize("action", ALLOWED)
def test_a_link_does_only_what_its_purpose_allows(paid: Charge, client: HttpClient, action: str,
                                                  purpose: str) -> None:
    path = _path(paid, purpose)
    links_before = ClientLink.objects.count()
    if action == "superbill":
        response = client.get(path + "superbill/", {"start": "2026-11-01", "end": "2026-11-30"})
        works = response.status_code == 200 and response["Content-Type"] == "application/pdf"
    elif action == "receipt":
        response = client.get(f"{path}receipts/{paid.pk}/")
        works = response.status_code == 200 and b"Individual therapy, 60 minutes" in response.content
    elif action == "history":
        response = client.get(path + "history/")
        works = response.status_code == 200 and b"Individual therapy, 60 minutes" in response.content
    elif action == "card_link":
        response = client.post(path + "card/new/")
        works = response.status_code == 302 and ClientLink.objects.filter(
            client=paid.client, purpose=LinkPurpose.ENROLL_CARD, created_by="client").exists()
    elif action == "estimate":
        estimate = estimate_create(client=paid.client, period_start=dt.date(2026, 11, 1),
                                   period_end=dt.date(2027, 10, 31), lines=[LineIn("90837", 4)], now=FRIDAY_10AM,
                                   actor="test")
        response = client.post(f"{path}estimates/{estimate.pk}/acknowledge/")
        estimate.refresh_from_db()
        works = response.status_code == 200 and estimate.acknowledged_at is not None
    else:  # no such balance payment: the view itself answers (it was reached)
        response = client.post(path + "balance/confirmed/", {"payment": str(paid.pk)})
        works = response.status_code == 404 and response.json() == {
            "error": "That payment is not part of this account."}

    if purpose in ALLOWED[action]:
        assert works, (response.status_code, response.content[:300])
        return
    assert response.status_code == 404
    if action == "balance_confirmed":
        assert response.json() == {"error": NOT_VALID}
    else:
        assert b"This link doesn&#x27;t work" in response.content or b"This link doesn't work" in response.content
        assert response["Content-Type"].startswith("text/html")
    assert ClientLink.objects.count() == links_before  # no card-enrollment link was made


@pytest.mark.parametrize("payment", ["abc", "1.5", "-1", "", "99999999999999999999", "٣"])
def test_confirming_a_balance_payment_that_is_not_a_number_is_a_404_not_an_error(
        paid: Charge, client: HttpClient, payment: str) -> None:
    response = client.post(_path(paid, LinkPurpose.PAY_BALANCE) + "balance/confirmed/", {"payment": payment})
    assert response.status_code == 404
    assert response.json() == {"error": "That payment is not part of this account."}


def test_a_receipt_number_too_large_for_the_database_is_a_404(paid: Charge, client: HttpClient) -> None:
    response = client.get(f"{_path(paid, LinkPurpose.RECEIPTS)}receipts/99999999999999999999/")
    assert response.status_code == 404


def test_a_used_or_expired_link_is_refused_before_its_purpose_is_checked(paid: Charge, client: HttpClient) -> None:
    path = _path(paid, LinkPurpose.RECEIPTS)
    ClientLink.objects.update(expires_at=FRIDAY_10AM - dt.timedelta(days=400))
    assert client.get(f"{path}receipts/{paid.pk}/").status_code == 410
