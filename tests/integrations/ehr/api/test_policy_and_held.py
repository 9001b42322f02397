"""What staff see, the API says: the current cancellation policy to acknowledge, and charges that wait for a card
or for review read as held with the reason, not as scheduled with a date already past."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from typing import Any

import pytest
import yaml
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client as HttpClient
from django.utils import timezone
from rest_framework.test import APIClient

from billing.models import Charge, ChargeStatus, Practice
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db

POLICY = "Cancel 24 hours ahead. A no-show costs $75.00, a late cancellation $50.00."


def test_the_current_policy_is_readable_with_its_version_day_and_fees(practice: Practice, get: Call,
                                                                       post: Call, put: Call) -> None:
    practice.cancellation_policy_text = POLICY
    practice.cancellation_policy_effective_on = dt.date(2026, 11, 2)
    practice.no_show_fee_cents, practice.late_cancel_fee_cents, practice.fee_review_hours = 7500, 5000, 24
    practice.save()

    assert get("policy/") == {"version": "2", "text": POLICY, "effective_date": "2026-11-02",
                              "fees": {"no_show_cents": 7500, "late_cancel_cents": 5000, "review_hours": 24}}
    # What an integrator does with it: acknowledge exactly that version.
    put("clients/c-1/", client_body("Ana"))
    body = {"policy_version": get("policy")["version"], "acknowledged_at": "2026-11-03T09:00:00-05:00"}
    assert post("clients/c-1/policy-acknowledgments/", body, expect=201)["is_current_policy"] is True


def test_the_policy_needs_a_key_and_is_in_the_schema(practice: Practice) -> None:
    assert APIClient().get("/api/v1/policy/").status_code == 401
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    policy = schema["paths"]["/api/v1/policy/"]["get"]
    assert {"200", "401", "429"} <= set(policy["responses"])
    assert set(schema["components"]["schemas"]["PolicyOut"]["properties"]) == {
        "version", "text", "effective_date", "fees"}
    charge = schema["components"]["schemas"]["ChargeOut"]["properties"]
    assert "held_reason" in charge
    assert "held" in schema["components"]["schemas"]["ChargeStatusEnum"]["enum"]


def test_a_new_version_saved_by_staff_takes_effect_that_day(practice: Practice, administrator: User,
                                                            get: Call) -> None:
    browser = HttpClient()
    browser.force_login(administrator)
    url = f"/admin/billing/practice/{practice.pk}/change/"
    form = browser.get(url).context["adminform"].form
    data: dict[str, Any] = {name: ("" if value is None else value) for name, value in form.initial.items()}
    data.update({name: int(data[name]) / 100 for name in data if name.endswith("_cents")})
    data.update(cancellation_policy_version="3", cancellation_policy_text=POLICY,
                cancellation_policy_effective_on="")
    response = browser.post(url, {k: v for k, v in data.items() if not isinstance(v, bool) or v})
    assert response.status_code == 302, response.context["adminform"].form.errors

    today = timezone.localdate(timezone.now(), practice.zone).isoformat()
    assert (get("policy/")["version"], get("policy/")["effective_date"]) == ("3", today)


def _tick(at: dt.datetime) -> None:
    call_command("billing_tick", "--at", at.isoformat(), stdout=StringIO())


def test_charges_waiting_for_a_card_or_staff_read_as_held_with_the_reason(
        practice: Practice, put: Call, get: Call, stripe_server: Any) -> None:
    practice.charge_timing, practice.pre_charge_notice_hours, practice.max_charge_cents = "immediate", 0, 15000
    practice.save()
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=12000))  # no card
    put("clients/c-2/", client_body("Bo", session_rate_cents=20000))  # above the practice's cap
    now = timezone.now()
    starts = (now - dt.timedelta(hours=3)).isoformat()
    put("appointments/a-1/", appointment_body(["c-1"], starts_at=starts, status="completed"))
    put("appointments/a-2/", appointment_body(["c-2"], starts_at=starts, status="completed"))
    before = {c["client"]: (c["status"], c["held_reason"]) for c in get("charges/")["results"]}
    assert before == {"c-1": ("scheduled", None), "c-2": ("scheduled", None)}

    _tick(now + dt.timedelta(minutes=1))

    assert set(Charge.objects.values_list("status", flat=True)) == {ChargeStatus.DUE}  # the database is unchanged
    after = {c["client"]: (c["status"], c["held_reason"]) for c in get("charges/")["results"]}
    assert after == {"c-1": ("held", "no_card"), "c-2": ("held", "above_cap")}
    assert sorted(c["client"] for c in get("charges/", status="held")["results"]) == ["c-1", "c-2"]
    assert get("charges/", status="scheduled")["results"] == []
    one = Charge.objects.get(client__external_id="c-1")
    assert get(f"charges/{one.pk}/")["status"] == "held"
    [appointment_charge] = get("appointments/a-2/")["charges"]
    assert (appointment_charge["status"], appointment_charge["held_reason"]) == ("held", "above_cap")
