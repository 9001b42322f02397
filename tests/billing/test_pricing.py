"""What the client owes: table-driven over the modes of docs/product.md, workflow 3."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from billing.models import Appointment, BillingType, CategoryRate, Client, Practice
from billing.services.pricing import NeedsReview, share_compute

COPAY = {"copay_cents": 3000}
DEDUCTIBLE = {"coinsurance_percent": Decimal("20"), "deductible_cents": 100000}

INSURANCE_CASES = [
    # id, benefits, service, you owe, insurance pays
    ("copay", COPAY, "90837", 3000, 9000),
    ("deductible not met", {**DEDUCTIBLE, "deductible_met_cents": 0}, "90837", 12000, 0),
    ("deductible partly met", {**DEDUCTIBLE, "deductible_met_cents": 95000}, "90837", 5000 + 1400, 5600),
    ("deductible met", {**DEDUCTIBLE, "deductible_met_cents": 100000}, "90837", 2400, 9600),
    ("no deductible, coinsurance only", {"coinsurance_percent": Decimal("12.5")}, "90837", 1500, 10500),
    ("copay larger than allowed amount", {"copay_cents": 15000}, "90837", 12000, 0),
    ("copay without a fee schedule entry", COPAY, "90791", 3000, 0),
    ("zero copay with coinsurance", {"copay_cents": 0, "coinsurance_percent": 20}, "90837", 2400, 9600),
]


@pytest.mark.parametrize(("benefits", "service_code", "owed", "insurance"),
                         [case[1:] for case in INSURANCE_CASES], ids=[case[0] for case in INSURANCE_CASES])
def test_insurance_client_share(practice: Practice, make_client: Callable[..., Client],
                                make_appointment: Callable[..., Appointment], benefits: dict[str, Any],
                                service_code: str, owed: int, insurance: int) -> None:
    client = make_client(benefits=benefits)
    share = share_compute(appointment=make_appointment(client, service_code=service_code), client=client)
    assert (share.amount_cents, share.insurance_cents) == (owed, insurance)
    assert share.breakdown()[-1] == {"label": "You owe", "amount_cents": owed}


def test_breakdown_explains_deductible_and_coinsurance(practice: Practice, make_client: Callable[..., Client],
                                                       make_appointment: Callable[..., Appointment]) -> None:
    client = make_client(benefits={**DEDUCTIBLE, "deductible_met_cents": 95000})
    share = share_compute(appointment=make_appointment(client), client=client)
    assert share.breakdown() == [
        {"label": "Amount Aetna allows for this service", "amount_cents": 12000},
        {"label": "Toward your deductible ($50.00 left before this session)", "amount_cents": 5000},
        {"label": "Your coinsurance: 20% of $70.00", "amount_cents": 1400},
        {"label": "You owe", "amount_cents": 6400},
    ]
    assert share.deductible_applied_cents == 5000


def test_fixed_amount_by_plan_category_wins(practice: Practice, make_client: Callable[..., Client],
                                            make_appointment: Callable[..., Appointment]) -> None:
    CategoryRate.objects.create(plan_category="EAP", amount_cents=0)
    client = make_client(benefits={"plan_category": "EAP", "copay_cents": 2500})
    share = share_compute(appointment=make_appointment(client), client=client)
    assert share.amount_cents == 0
    assert share.breakdown()[0]["label"] == "Fixed amount for EAP plans"


NON_INSURANCE_CASES = [
    ("self-pay at the practice fee", BillingType.SELF_PAY, None, {}, 20000),
    ("self-pay at own session rate", BillingType.SELF_PAY, 18000, {}, 18000),
    ("self-pay with a fee override on the session", BillingType.SELF_PAY, 18000, {"fee_cents": 15000}, 15000),
    ("sliding scale", BillingType.SLIDING_SCALE, 6000, {}, 6000),
    ("sliding scale never above the full fee", BillingType.SLIDING_SCALE, 30000, {}, 20000),
]


@pytest.mark.parametrize(("billing_type", "rate", "appointment_fields", "owed"),
                         [case[1:] for case in NON_INSURANCE_CASES], ids=[case[0] for case in NON_INSURANCE_CASES])
def test_self_pay_and_sliding_scale_share(practice: Practice, make_client: Callable[..., Client],
                                          make_appointment: Callable[..., Appointment], billing_type: str,
                                          rate: int | None, appointment_fields: dict[str, Any], owed: int) -> None:
    client = make_client(billing_type=billing_type, session_rate_cents=rate)
    share = share_compute(appointment=make_appointment(client, **appointment_fields), client=client)
    assert share.amount_cents == owed
    assert share.insurance_cents == 0


def test_group_session_charges_each_participant_at_their_own_rate(
        practice: Practice, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    insured = make_client(benefits={"copay_cents": 2500})
    coinsured = make_client(benefits={**DEDUCTIBLE, "deductible_met_cents": 100000})
    self_pay = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=18000)
    sliding = make_client(billing_type=BillingType.SLIDING_SCALE, session_rate_cents=6000)
    group = make_appointment(insured, coinsured, self_pay, sliding, service_code="90853")
    owed = {client.pk: share_compute(appointment=group, client=client).amount_cents
            for client in (insured, coinsured, self_pay, sliding)}
    assert owed == {
        insured.pk: 2500,  # copay
        coinsured.pk: 1000,  # 20% of the group's allowed $50
        self_pay.pk: 8000,  # the group fee, not the individual session rate
        sliding.pk: 6000,  # negotiated rate, below the group fee
    }


REVIEW_CASES = [
    ("no coverage at all", None, "90837", "No insurance coverage is in force"),
    ("coverage ended before the session", {**COPAY, "effective_to": "2026-10-31"}, "90837",
     "No insurance coverage is in force"),
    ("no copay, coinsurance or category", {"plan_category": "PPO"}, "90837", "no copay, coinsurance or plan category"),
    ("copay and coinsurance both given", {"copay_cents": 2000, "coinsurance_percent": 20}, "90837",
     "both a copay and a coinsurance"),
    ("deductible met above the deductible", {**DEDUCTIBLE, "deductible_met_cents": 200000}, "90837",
     "Deductible met is more than the deductible"),
    ("coinsurance with no fee schedule entry for the CPT code", DEDUCTIBLE, "90791",
     "no allowed amount for CPT 90791 with Aetna"),
    ("dates the wrong way round", {**COPAY, "effective_from": "2026-12-01", "effective_to": "2026-01-01"},
     "90837", "No insurance coverage is in force"),
]


@pytest.mark.parametrize(("benefits", "service_code", "reason"), [case[1:] for case in REVIEW_CASES],
                         ids=[case[0] for case in REVIEW_CASES])
def test_missing_or_contradictory_benefits_need_review(
        practice: Practice, make_client: Callable[..., Client], make_appointment: Callable[..., Appointment],
        benefits: dict[str, Any] | None, service_code: str, reason: str) -> None:
    client = make_client(benefits=benefits)
    with pytest.raises(NeedsReview, match=reason):
        share_compute(appointment=make_appointment(client, service_code=service_code), client=client)


def test_sliding_scale_without_rate_and_unknown_cpt_need_review(
        practice: Practice, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    sliding = make_client(billing_type=BillingType.SLIDING_SCALE)
    with pytest.raises(NeedsReview, match="no negotiated rate"):
        share_compute(appointment=make_appointment(sliding), client=sliding)
    self_pay = make_client(billing_type=BillingType.SELF_PAY)
    with pytest.raises(NeedsReview, match="No practice fee is set for CPT 90899"):
        share_compute(appointment=make_appointment(self_pay, service_code="90899"), client=self_pay)
