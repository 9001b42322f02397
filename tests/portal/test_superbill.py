"""Superbills: a PDF the client can send to their insurer, with codes, fees and payments."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import pypdfium2
import pytest

from billing.models import Appointment, BillingType, Client, Practice
from billing.services.documents import PeriodNotAllowed, diagnosis_letters, superbill_lines, superbill_pdf
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)


def pdf_text_and_image(pdf: bytes) -> tuple[str, tuple[int, int]]:
    document = pypdfium2.PdfDocument(io.BytesIO(pdf))
    page = document[0]
    image = page.render(scale=1.5).to_pil()
    return " ".join(page.get_textpage().get_text_range().split()), image.size


def test_superbill_has_what_a_claim_form_needs_with_fees_as_billed(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment], make_appointment: Callable[..., Appointment]) -> None:
    """Field by field against the CMS-1500: 2, 3 (client, birth date), 21 (diagnoses, lettered), 24A date,
    24B place of service, 24D CPT and modifier, 24E pointer, 24F charge, 24G units, 24J rendering NPI,
    25 tax id, 28 total charge, 29 amount paid, 32/33 practice address and NPI."""
    immediate.npi = "1245319599"
    immediate.tax_id = "12-3456789"
    immediate.address = "12 Elm Street\nSpringfield, IL 62701"
    immediate.save()
    # The practice lists 90837 at $200 and 90791 at $250; this client is billed $150 a session.
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000,
                         date_of_birth=dt.date(1990, 4, 2))
    save_card(person, CARD_OK, stripe_server)
    completed_session(person, at=FRIDAY_10AM - 7 * DAY, diagnosis_codes=["F41.1"], place_of_service="11")
    completed_session(person, at=FRIDAY_10AM, diagnosis_codes=["F32.1", "F41.1"], service_code="90791",
                      place_of_service="10")
    make_appointment(person, starts_at=FRIDAY_10AM - 3 * DAY, status="no_show")  # never on a superbill
    tick(FRIDAY_10AM)
    # Completed after the billing run: billed, not paid yet.
    completed_session(person, at=FRIDAY_10AM + 2 * DAY, diagnosis_codes=["F41.1"], place_of_service="02")

    lines = superbill_lines(client=person, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30),
                            practice=Practice.load())
    assert [(line.date, line.place_of_service, line.cpt_code, line.modifiers, line.units, line.npi,
             line.fee_cents, line.paid_cents) for line in lines] == [
        (dt.date(2026, 11, 20), "11", "90837", [], 1, "1234567893", 15000, 15000),
        (dt.date(2026, 11, 27), "10", "90791", ["95"], 1, "1234567893", 15000, 15000),
        (dt.date(2026, 11, 29), "02", "90837", ["95"], 1, "1234567893", 15000, 0)]
    assert diagnosis_letters(lines) == {"F41.1": "A", "F32.1": "B"}

    pdf = superbill_pdf(client=person, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30),
                        today=dt.date(2026, 12, 1))
    text, size = pdf_text_and_image(pdf)
    assert size[0] > 800 and size[1] > 1000  # a letter page rendered to an image
    for expected in ("Superbill", "Riverbend Counseling", "12 Elm Street", "Springfield, IL 62701",
                     "Tax ID (EIN): 12-3456789", "Practice NPI: 1245319599", "Client1 Example", "04/02/1990",
                     "A. F41.1", "B. F32.1",
                     "11/20/2026 11 90837", "11/27/2026 10 90791 95", "11/29/2026 02 90837 95",
                     "Dana Reyes, LCSW 1234567893", "Total $450.00 $300.00",
                     "Balance on December 1, 2026: $150.00 owed to Riverbend Counseling"):
        assert expected in text, (expected, text)
    assert "BA 1" in text  # the intake's pointers: its primary diagnosis first
    assert "$200.00" not in text and "$250.00" not in text  # the list fees were never billed
    assert "11/24/2026" not in text  # the no-show
    assert "paid the amounts shown" not in text
    assert "No payment has been received" not in text


def test_superbill_for_an_insured_client_bills_the_allowed_amount_and_claims_no_payment(
        practice: Practice, make_client: Callable[..., Client], make_appointment: Callable[..., Appointment]) -> None:
    from billing.services.schedule import appointment_set_status

    person = make_client(benefits={"copay_cents": 3000})
    session = make_appointment(person, starts_at=FRIDAY_10AM - DAY)
    appointment_set_status(appointment=session, status="completed", now=FRIDAY_10AM, actor="test")

    pdf = superbill_pdf(client=person, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30),
                        today=dt.date(2026, 12, 1))
    text, _ = pdf_text_and_image(pdf)
    # Aetna allows $120 for 90837: the $30 copay plus the $90 insurance is expected to pay; nothing paid yet.
    assert "Total $120.00 $0.00" in text, text
    assert "Member ID: W" in text and "Insurance: Aetna" in text
    assert "No payment has been received for these sessions yet." in text
    assert "Balance on December 1, 2026: $30.00 owed" in text
    # No place of service on record: shown as missing, never guessed.
    assert "11/26/2026 — 90837" in text
    assert "have no place of service on record" in text


def test_a_refund_is_deducted_from_what_the_superbill_says_was_paid(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment], billing_manager: Any) -> None:
    from billing.models import Charge
    from billing.services.refunds import charge_refund

    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000)
    save_card(person, CARD_OK, stripe_server)
    completed_session(person, place_of_service="11")
    tick(FRIDAY_10AM)
    charge = Charge.objects.get(client=person)
    charge_refund(charge=charge, amount_cents=5000, reason="goodwill", now=FRIDAY_10AM + DAY,
                  user=billing_manager)

    [line] = superbill_lines(client=person, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30),
                             practice=Practice.load())
    assert (line.fee_cents, line.paid_cents) == (15000, 10000)


def test_superbill_refuses_a_period_that_makes_no_sense(practice: Practice, make_client: Callable[..., Client]) -> None:
    person = make_client(billing_type=BillingType.SELF_PAY)
    with pytest.raises(PeriodNotAllowed, match="ends before it starts"):
        superbill_pdf(client=person, start=dt.date(2026, 11, 30), end=dt.date(2026, 11, 1), today=dt.date(2026, 12, 1))


def test_client_downloads_a_superbill_from_the_portal(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Appointment],
        client: object) -> None:
    from billing.models import LinkPurpose
    from billing.services.links import link_create

    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000)
    completed_session(person)
    issued = link_create(client=person, purpose=LinkPurpose.PAY_BALANCE, now=dt.datetime.now(dt.UTC), actor="test")
    path = issued.url.split("127.0.0.1:8000", 1)[1]
    page = client.get(path)  # type: ignore[attr-defined]
    assert b"Download superbill (PDF)" in page.content
    pdf = client.get(path + "superbill/", {"start": "2026-11-01", "end": "2026-11-30"})  # type: ignore[attr-defined]
    assert pdf["Content-Type"] == "application/pdf"
    assert pdf["Content-Disposition"] == 'attachment; filename="superbill-20261101-20261130.pdf"'
    text, _ = pdf_text_and_image(pdf.content)
    assert "90837" in text and "$150.00" in text  # the client's rate, as billed
    bad = client.get(path + "superbill/", {"start": "2026-11-30", "end": "2026-11-01"})  # type: ignore[attr-defined]
    assert bad.status_code == 400
    assert b"The period ends before it starts." in bad.content
