"""The EHR reads a client's good faith estimates, and a charge the dispute guard holds reads as held above it."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from billing.models import Client, Practice
from billing.services.estimates import LineIn, estimate_create, estimate_revise
from tests.integrations.ehr.conftest import Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


def test_estimates_read_with_what_is_billed_and_a_held_charge_says_why(practice: Practice, get: Call,
                                                                       put: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=15_000))
    assert get("clients/c-1/estimates/") == []
    person = Client.objects.get(external_id="c-1")
    first = estimate_create(client=person, period_start=dt.date(2026, 11, 1), period_end=dt.date(2027, 10, 31),
                            lines=[LineIn("90837", 1)], now=timezone.now(), actor="staff:desk")
    for n, day in enumerate(("2026-11-09", "2026-11-16", "2026-11-23"), start=1):
        put(f"appointments/a-{n}/", appointment_body(["c-1"], starts_at=f"{day}T10:00:00-05:00", status="completed"))
    charges = {c["appointment"]: c for c in get("charges/", client="c-1")["results"]}
    # $150, $300 (staff warned at $150 over), then $450: $300 over, still under $400.
    assert [charges[f"a-{n}"]["status"] for n in (1, 2, 3)] == ["scheduled"] * 3
    put("appointments/a-4/", appointment_body(["c-1"], starts_at="2026-11-24T10:00:00-05:00", status="completed"))
    held = get("charges/", client="c-1", status="held")["results"]
    assert [(c["appointment"], c["held_reason"]) for c in held] == [("a-4", "above_estimate")]

    revised = estimate_revise(estimate=first, lines=[LineIn("90837", 6)], now=timezone.now(), actor="staff:manager",
                              why="Weekly sessions", send=False)
    [now_in_force, old] = get("clients/c-1/estimates/")
    assert (now_in_force["id"], now_in_force["status"], now_in_force["supersedes"]) == (revised.pk, "issued", first.pk)
    assert now_in_force["total_cents"] == 90_000 and now_in_force["billed_cents"] == 60_000
    assert now_in_force["lines"] == [{"cpt_code": "90837", "description": "Individual therapy, 60 minutes",
                                      "quantity": 6, "unit_cents": 15_000, "total_cents": 90_000}]
    assert now_in_force["revision_reason"] == "Weekly sessions" and now_in_force["acknowledged_at"] is None
    assert (old["status"], old["total_cents"]) == ("superseded", 15_000)
    assert get("charges/", client="c-1", status="held")["results"] == []
    get("clients/nobody/estimates/", expect=404)
