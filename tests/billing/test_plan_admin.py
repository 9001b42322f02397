"""Payment plans for staff: offered from the client's page (billing managers), listed with what they paid,
canceled with a reason."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from billing.models import BillingType, Client, OutboundEmail, PaymentPlan, PlanStatus
from billing.roles import roles_sync
from tests.billing.test_staff_money import form_key, page, signed_in


@pytest.fixture(autouse=True)
def _roles(db: None) -> None:
    roles_sync()


@pytest.fixture
def owes_280(make_client: Callable[..., Client], completed_session: Callable[..., Any]) -> Client:
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    completed_session(person)
    completed_session(person, at=timezone.now() - dt.timedelta(days=1))
    return person


def _form(key: str, amount: str = "280.00", count: str = "2") -> dict[str, str]:
    first = timezone.localdate() + dt.timedelta(days=14)
    return {"form_key": key, "amount": amount, "count": count, "first_due_on": first.isoformat(),
            "lapse_after_days": "30"}


def test_a_billing_manager_offers_a_plan_once_and_cancels_it(owes_280: Client, billing_manager: Any,
                                                             front_desk: Any) -> None:
    desk = signed_in(front_desk)
    assert b"Offer a payment plan" not in desk.get(reverse("admin:billing_client_change", args=[owes_280.pk])).content
    assert desk.get(page(owes_280, "offer-plan")).status_code == 403

    http = signed_in(billing_manager)
    assert b"Offer a payment plan" in http.get(reverse("admin:billing_client_change", args=[owes_280.pk])).content
    too_much = http.post(page(owes_280, "offer-plan"), _form(form_key(http, page(owes_280, "offer-plan")), "300.00"))
    assert "a plan can be for that much at most" in too_much.content.decode()
    assert not PaymentPlan.objects.exists()

    form = _form(form_key(http, page(owes_280, "offer-plan")))
    done = http.post(page(owes_280, "offer-plan"), form, follow=True)
    assert "$280.00 in 2 installments" in done.content.decode()
    again = http.post(page(owes_280, "offer-plan"), form)
    assert "already offered" in again.content.decode()
    plan = PaymentPlan.objects.get()
    assert (plan.status, plan.total_cents, list(plan.installments.values_list("amount_cents", flat=True))) == (
        PlanStatus.OFFERED, 28000, [14000, 14000])
    assert OutboundEmail.objects.filter(template="payment_plan_offer", client=owes_280).count() == 1

    listed = http.get(reverse("admin:billing_paymentplan_changelist")).content.decode()
    assert "Payment plan #" in listed and "$280.00" in listed
    shown = http.get(reverse("admin:billing_client_change", args=[owes_280.pk])).content.decode()
    assert "payment plans" in shown.lower() and "Offered, waiting for the client" in shown

    canceled = http.post(reverse("admin:billing_paymentplan_changelist"), {
        "action": "cancel_plan", "_selected_action": [plan.pk], "apply": "1", "why": "paid at the front desk"},
        follow=True)
    assert f"Canceled {plan}." in canceled.content.decode()
    plan.refresh_from_db()
    assert (plan.status, plan.end_reason) == (PlanStatus.CANCELED, "canceled by staff: paid at the front desk")
