"""Superbills: a PDF the client can send to their insurer, with codes, fees and payments."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable

import pypdfium2
import pytest

from billing.models import Appointment, BillingType, Client, Practice
from billing.services.documents import PeriodNotAllowed, superbill_pdf
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)


def pdf_text_and_image(pdf: bytes) -> tuple[str, tuple[int, int]]:
    document = pypdfium2.PdfDocument(io.BytesIO(pdf))
    page = document[0]
    image = page.render(scale=1.5).to_pil()
    return " ".join(page.get_textpage().get_text_range().split()), image.size


def test_superbill_lists_billable_sessions_with_codes_fees_and_payments(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment], make_appointment: Callable[..., Appointment]) -> None:
    immediate.npi = "1234567893"
    immediate.tax_id = "12-3456789"
    immediate.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=15000,
                         date_of_birth=dt.date(1990, 4, 2))
    save_card(person, CARD_OK, stripe_server)
    completed_session(person, at=FRIDAY_10AM - 7 * DAY, diagnosis_codes=["F41.1"])
    completed_session(person, at=FRIDAY_10AM, diagnosis_codes=["F41.1", "F32.1"], service_code="90791")
    make_appointment(person, starts_at=FRIDAY_10AM - 3 * DAY, status="no_show")  # never on a superbill
    tick(FRIDAY_10AM)

    pdf = superbill_pdf(client=person, start=dt.date(2026, 11, 1), end=dt.date(2026, 11, 30),
                        today=dt.date(2026, 12, 1))
    text, size = pdf_text_and_image(pdf)
    assert size[0] > 800 and size[1] > 1000  # a letter page rendered to an image
    for expected in ("Superbill", "Riverbend Counseling", "12-3456789", "Client1 Example", "04/02/1990",
                     "11/20/2026", "11/27/2026", "90837", "90791", "F41.1", "F32.1", "Dana Reyes, LCSW",
                     "1234567893", "$200.00", "$250.00", "$150.00", "$450.00", "$300.00"):
        assert expected in text, expected
    assert "11/24/2026" not in text  # the no-show


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
    assert "90837" in text and "$200.00" in text
    bad = client.get(path + "superbill/", {"start": "2026-11-30", "end": "2026-11-01"})  # type: ignore[attr-defined]
    assert bad.status_code == 400
    assert b"The period ends before it starts." in bad.content
