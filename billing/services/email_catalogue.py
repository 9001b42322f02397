"""Every email the portal sends: what it is for, and sample data to preview it with.

The sample data is made-up and unsaved (no database rows), so a preview never shows a real client.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from billing.models import (
    Appointment,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    Clinician,
    EmailTemplate,
    GoodFaithEstimate,
    NoticeTone,
)

PREVIEW_LINK = "https://portal.example/p/sample-link/"


@dataclass(frozen=True)
class EmailKind:
    name: str
    purpose: str


CATALOGUE = [
    EmailKind("card_enrollment", "Asks the client to save a card (with the secure link)."),
    EmailKind("card_saved", "Confirms a saved card, listing what waited for one and asking the client to choose."),
    EmailKind("card_needed", "Charges are due but there is no card on file (at most one a day, listing them)."),
    EmailKind("waiting_charges_notice", "Before charging what waited for a card: the amounts and when."),
    EmailKind("pre_charge_notice", "Tells the client what will be charged and when, before the charge."),
    EmailKind("receipt", "After a successful charge: what FSA/HSA claims need."),
    EmailKind("payment_failed", "A card was declined (in the practice's chosen tone), with a card-update link."),
    EmailKind("authentication_required", "The bank asks the client to confirm a payment on-session."),
    EmailKind("fee_notice", "A no-show or late-cancel fee will be charged, naming the acknowledged policy."),
    EmailKind("balance_reminder", "First reminder of an unpaid balance, with a pay link."),
    EmailKind("balance_second_reminder", "Second reminder, with the practice's phone."),
    EmailKind("balance_paid", "Thanks the client for a payment that settled a reminded balance."),
    EmailKind("pay_balance_link", "Staff send a link to see and pay the balance (from the client's page)."),
    EmailKind("statement", "The monthly statement (sent on the practice's statement day, or by staff): opening "
                           "balance, the month's charges, payments, refunds and adjustments, closing balance by "
                           "age, and a pay link."),
    EmailKind("payment_plan_offer", "Staff offer a payment plan: the installments, with a link to agree."),
    EmailKind("payment_plan_lapsed", "A payment plan lapsed (an installment unpaid): the balance is due as usual."),
    EmailKind("good_faith_estimate", "A self-pay client's good faith estimate (or a revised one), with a secure link "
                                     "to read, download and acknowledge it."),
]
NAMES = [kind.name for kind in CATALOGUE]

def email_title(name: str) -> str:
    """What staff call the email (in the admin's lists and pages)."""
    return EmailTemplate.title_for(name)


def _statement_sample() -> dict[str, Any]:
    month = dt.date(2026, 10, 1)
    return {"month": month, "start": month, "end": dt.date(2026, 10, 31), "opening": "$60.00", "charges": "$280.00",
            "payments": "$170.00", "refunds": "$0.00", "adjustments": "$0.00", "closing": "$170.00", "owes": True,
            "credit": "-$170.00", "session_count": 2,
            "lines": [{"date": dt.date(2026, 10, 6), "what": "Session", "detail": "90837 with Dana Reyes",
                       "amount": "$140.00"},
                      {"date": dt.date(2026, 10, 9), "what": "Payment", "detail": "", "amount": "-$170.00"}],
            "aging": [("0-30 days", "$140.00"), ("31-60 days", "$30.00"), ("61-90 days", "$0.00"),
                      ("Over 90 days", "$0.00")]}


def sample_context(name: str, *, tone: str = NoticeTone.NEUTRAL) -> dict[str, Any]:
    """Made-up values for every variable the emails use."""
    when = dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.UTC)
    client = Client(first_name="Jordan", last_name="Sample", email="jordan@example.com", card_brand="visa",
                    card_last4="4242", card_exp_month=12, card_exp_year=2030, card_payment_method_id="pm_sample")
    clinician = Clinician(name="Dana Reyes", credentials="LCSW")
    appointment = Appointment(clinician=clinician, service_code="90837", starts_at=when - dt.timedelta(days=1))
    charge = Charge(pk=1001, client=client, appointment=appointment, kind=ChargeKind.COPAY, amount_cents=3000,
                    insurance_cents=9000, status=ChargeStatus.SUCCEEDED, payment_reference="pi_sample",
                    scheduled_for=when, breakdown=[{"label": "Copay (Aetna)", "amount_cents": 3000},
                                                   {"label": "You owe", "amount_cents": 3000}])
    session = {"charge": charge, "amount": "$30.00", "total_paid": "$30.00", "insurance": "$90.00",
               "session_date": timezone.localdate(appointment.starts_at), "therapist": "Dana Reyes, LCSW",
               "service": "Individual therapy, 60 minutes"}
    return {
        **session, "client": client, "sessions": [session], "link_url": PREVIEW_LINK, "receipts_url": PREVIEW_LINK,
        "expires_at": when + dt.timedelta(days=7),
        "charge_at": when + dt.timedelta(hours=22), "card": "Visa ending 4242, exp 12/2030", "tone": tone,
        "will_retry_on": when + dt.timedelta(days=3), "hard_decline": False, "label": "No-show fee",
        "policy_version": "2026-01", "acknowledged_at": dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
        "balance": "$200.00", "over_days": 14,
        "waiting": [{"session_date": appointment.starts_at.date(), "service": "Individual therapy, 60 minutes",
                     "therapist": "Dana Reyes, LCSW", "amount": "$30.00", "amount_cents": 3000}],
        "total": "$30.00", "count": 3, "why": "installment 2 ($300.00) was declined and its retries ended",
        "installments": [{"number": n, "due_on": (when + dt.timedelta(days=30 * n)).date(), "amount": "$300.00"}
                         for n in range(1, 4)],
        "revised": False,
        "estimate": GoodFaithEstimate(client=client, period_start=when.date(),
                                      period_end=when.date() + dt.timedelta(days=364), total_cents=728000,
                                      frequency="Weekly", practice_name="Riverbend Counseling", issued_at=when),
        "in_credit": False, **_statement_sample(),
    }
