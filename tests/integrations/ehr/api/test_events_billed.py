"""A batch's new completed sessions are written and billed together (BilledCreates,
integrations/ehr/api/events.py): every row they leave (appointments, charges and their breakdowns, ledger
lines, review items, notices, audit entries, write-back events), and what the next billing run makes of
them (notices, holds), must be those of the same events applied one by one."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import Counter
from typing import Any

import pytest
import time_machine
from auditlog.models import LogEntry
from django.db import connection, models, transaction
from django.test.utils import CaptureQueriesContext

from billing.models import (
    Appointment,
    AppointmentEvent,
    Charge,
    ChargeEvent,
    ChargeStatus,
    Client,
    Clinician,
    LedgerEntry,
    OutboundEmail,
    Participant,
    Practice,
    ReviewItem,
)
from billing.services import intake
from billing.services.tick import tick_run
from integrations.ehr.api import events as ehr_events
from integrations.ehr.models import WebhookEndpoint, WebhookEvent
from tests.integrations.ehr.conftest import SOURCE, Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 12, 1, 15, 0, tzinfo=dt.UTC)


def event(kind: str, external_id: str, data: Any) -> dict[str, Any]:
    return {"type": kind, "external_id": external_id, "data": data}


def done(external_id: str, clients: list[str], day: int, **extra: Any) -> dict[str, Any]:
    return event("appointment", external_id, appointment_body(clients, f"2026-11-{day:02d}T10:00:00-05:00",
                                                              **{"status": "completed", **extra}))


BATCH = [
    event("client", "c-late", client_body("Lee", session_rate_cents=11000)),    # new in the batch, then billed
    done("a-self-1", ["c-self"], 2),
    done("a-self-fee", ["c-self"], 3, fee_cents=17500),                          # the session's own fee
    done("a-slide", ["c-slide"], 3),
    done("a-copay", ["c-copay"], 4),
    done("a-coins-1", ["c-coins"], 4),                                           # meets the deductible's rest
    done("a-coins-2", ["c-coins"], 5),                                           # then coinsurance only
    done("a-group", ["c-self", "c-slide", "c-copay"], 5, service_code="90853"),  # group fee, copay
    done("a-review", ["c-nocover"], 6),                                          # no coverage: review
    done("a-eap", ["c-eap"], 6),                                                 # $0 plan: no charge
    done("a-cap", ["c-big"], 7),                                                 # above the cap: held
    done("a-late", ["c-late"], 7),
    done("a-self-1", ["c-self"], 2),                                             # again: unchanged
    done("a-no-client", ["c-404"], 8),                                           # error, as one by one
    event("appointment", "a-scheduled", appointment_body(["c-self"], "2026-12-09T10:00:00-05:00")),
    done("a-was-scheduled", ["c-slide"], 9),                                     # an update: one by one
    done("a-paid", ["c-self"], 1, fee_cents=9900),                               # money moved: refused
    event("appointment", "a-no-show", appointment_body(["c-ack"], "2026-11-10T10:00:00-05:00",
                                                       status="no_show")),        # a policy fee
    done("a-coins-3", ["c-coins"], 10),
    done("a-signed", ["c-slide"], 10, note_signed_at="2026-11-10T16:00:00Z"),
]
EXPECTED = ["created", "created", "created", "created", "created", "created", "created", "created", "created",
            "created", "created", "created", "unchanged", "error", "created", "updated", "error", "created",
            "created", "created"]
BULK = {"a-self-1", "a-self-fee", "a-slide", "a-copay", "a-coins-1", "a-coins-2", "a-group", "a-review", "a-eap",
        "a-cap", "a-late", "a-coins-3", "a-signed"}


def _setup(put: Call, post: Call) -> None:
    Practice.objects.update(max_charge_cents=50_000)
    WebhookEndpoint.objects.create(source=SOURCE, url="https://ehr.example/hooks", secret="s3cret")
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-self/", client_body("Ana", session_rate_cents=14000))
    put("clients/c-slide/", client_body("Bo", "sliding_scale", session_rate_cents=9000))
    put("clients/c-big/", client_body("Cy", session_rate_cents=60000))
    put("clients/c-ack/", client_body("Di"))
    for external_id, name, coverage in [
            ("c-copay", "Eve", {"payer_id": "60054", "payer_name": "Aetna", "copay_cents": 3000}),
            ("c-coins", "Flo", {"payer_id": "60054", "payer_name": "Aetna", "coinsurance_percent": 20,
                                "deductible_cents": 50000, "deductible_met_cents": 45000}),
            ("c-eap", "Gus", {"payer_name": "EAP plan", "plan_category": "EAP"}),
            ("c-nocover", "Hal", None)]:
        put(f"clients/{external_id}/", client_body(name, "insurance"))
        if coverage:
            put(f"clients/{external_id}/coverage/", coverage)
    post("events/", [event("policy_acknowledgment", "c-ack", {"policy_version": "2",
                                                              "acknowledged_at": "2026-10-01T12:00:00Z"})])
    put("appointments/a-was-scheduled/", appointment_body(["c-slide"], "2026-11-09T10:00:00-05:00"))
    put("appointments/a-paid/", appointment_body(["c-self"], "2026-11-01T10:00:00-05:00", status="completed"))
    Charge.objects.filter(appointment__external_id="a-paid").update(status=ChargeStatus.SUCCEEDED)


def _state() -> dict[str, Any]:
    """Every row of the tables billing writes, with ids replaced by what they point to (the two runs
    number their rows differently); the clock is frozen, so times are compared as they are."""
    appointments: dict[int | None, str] = dict(Appointment.objects.values_list("pk", "external_id"))
    clients: dict[int | None, str] = dict(Client.objects.values_list("pk", "external_id"))
    charges = {c.pk: (appointments.get(c.appointment_id), clients[c.client_id], c.kind) for c in Charge.objects.all()}
    names: dict[str, dict[Any, Any]] = {"appointment": appointments, "client": clients, "charge": charges}

    def rows(model: type[models.Model], *skip: str) -> Counter[Any]:
        out: Counter[Any] = Counter()
        for row in model._default_manager.values():
            key = []
            for name, value in sorted(row.items()):
                if name == "id" or name in skip:
                    continue
                related = names.get(name.removesuffix("_id"))
                key.append((name, related.get(value, value) if related is not None and name.endswith("_id")
                            else repr(value)))
            out[tuple(key)] += 1
        return out

    def entry(e: LogEntry) -> Any:
        model = e.content_type.model
        changes = {k: ("*" if k == "id" else tuple(names[k].get(int(v), v) if k in names and v.isdigit() else v
                                                   for v in change)) for k, change in (e.changes_dict or {}).items()}
        return (model, e.action, re.sub(r"#\d+", "#", e.object_repr), e.actor_id, e.timestamp,
                tuple(sorted((k, repr(v)) for k, v in changes.items())))

    emails = Counter((clients.get(e.client_id), e.template, e.subject, re.sub(r"\d+", "#", e.key),
                      tuple((charges[pk], cents) for pk, cents in e.charge_amounts), e.status)
                     for e in OutboundEmail.objects.all())
    return {"appointments": rows(Appointment), "participants": rows(Participant),
            "appointment_events": rows(AppointmentEvent), "charges": rows(Charge), "charge_events": rows(ChargeEvent),
            "ledger": rows(LedgerEntry), "review": rows(ReviewItem), "emails": emails,
            "writeback": rows(WebhookEvent, "event_id", "payload"),
            "audit": Counter(entry(e) for e in LogEntry.objects.all())}


def test_completed_sessions_billed_in_bulk_end_as_one_by_one(practice: Practice, put: Call, post: Call,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[Any] = []
    billed: list[str] = []
    queries: list[int] = []
    insert = intake.appointments_insert_billed

    def counted(push: intake.Push, items: list[Any], *args: Any) -> None:
        billed.extend(external_id for _, external_id, *_ in items)
        insert(push, items, *args)

    with time_machine.travel(NOW - dt.timedelta(hours=1), tick=False):
        _setup(put, post)
    with time_machine.travel(NOW, tick=False):
        for bulk in (True, False):
            with monkeypatch.context() as patch, transaction.atomic():
                if bulk:
                    patch.setattr(ehr_events, "appointments_insert_billed", counted)
                else:  # every event through appointment_put, one savepoint each
                    patch.setattr(ehr_events.BilledCreates, "take", lambda self, *args: False)
                    patch.setattr(ehr_events.QuietCreates, "take", lambda self, *args: False)
                with CaptureQueriesContext(connection) as captured:
                    response = post("events/", {"events": BATCH}, expect=200)
                queries.append(len(captured))
                after_push = _state()
                with time_machine.travel(NOW + dt.timedelta(days=3), tick=False):
                    tick_run(now=NOW + dt.timedelta(days=3))  # notices, due, holds (no client has a card)
                runs.append((response["results"], after_push, _state()))
                transaction.set_rollback(True)

    (results, pushed, ticked), (one_results, one_pushed, one_ticked) = runs
    assert [r["status"] for r in results] == EXPECTED
    assert set(billed) == BULK
    assert results == one_results
    for table in pushed:
        assert pushed[table] == one_pushed[table], table
    for table in ticked:
        assert ticked[table] == one_ticked[table], table
    # What the batch billed, as a person reads it: the deductible's rest on the first coinsurance session only.
    assert _amounts(pushed) == {
        ("a-self-1", "c-self"): 14000, ("a-self-fee", "c-self"): 17500, ("a-slide", "c-slide"): 9000,
        ("a-copay", "c-copay"): 3000, ("a-coins-1", "c-coins"): 6400, ("a-coins-2", "c-coins"): 2400,
        ("a-coins-3", "c-coins"): 2400, ("a-group", "c-self"): 8000, ("a-group", "c-slide"): 8000,
        ("a-group", "c-copay"): 3000, ("a-cap", "c-big"): 60000, ("a-late", "c-late"): 11000,
        ("a-signed", "c-slide"): 9000, ("a-was-scheduled", "c-slide"): 9000, ("a-paid", "c-self"): 14000,
        ("a-no-show", "c-ack"): 7500}
    assert any(dict(row)["reason"].startswith("'No insurance coverage") for row in pushed["review"])
    held = Counter(dict(row)["hold_reason"] for row in ticked["charges"])
    assert held["\"above the practice's cap of $500.00\""] == 1 and held["'no card on file'"] >= 10
    assert queries[0] * 3 < queries[1], queries  # the point of it (13 of the 20 events billed in bulk)


def _amounts(state: dict[str, Any]) -> dict[tuple[str, str], int]:
    out = {}
    for row in state["charges"]:
        fields = dict(row)
        out[(fields["appointment_id"], fields["client_id"])] = int(fields["amount_cents"])
    return out


@pytest.mark.django_db(transaction=True)
def test_a_conflict_committed_while_completed_sessions_are_sent_falls_back_to_one_by_one(
        practice: Practice, put: Call, post: Call, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another request commits one of the batch's new completed sessions after the batch looked them up:
    the batch still ends as if applied one by one, each session billed once."""
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana", session_rate_cents=14000))
    prefetch = ehr_events._prefetch_batch

    def meanwhile(push: intake.Push, events: list[Any]) -> tuple[int, int]:
        room = prefetch(push, events)
        other = threading.Thread(target=other_request)
        other.start()
        other.join(10)
        return room

    def other_request() -> None:
        try:
            Appointment.objects.create(source=SOURCE, external_id="z-1", service_code="90837", status="completed",
                                       clinician=Clinician.objects.get(external_id="clin-1"), starts_at=NOW)
        finally:
            connection.close()

    monkeypatch.setattr(ehr_events, "_prefetch_batch", meanwhile)
    events = [done(f"z-{i}", ["c-1"], 10 + i) for i in range(3)]
    response = post("events/", events, expect=200)
    assert [r["status"] for r in response["results"]] == ["created", "updated", "created"]
    assert Appointment.objects.count() == Participant.objects.count() == 3
    assert sorted(Charge.objects.values_list("appointment__external_id", "amount_cents")) == [
        ("z-0", 14000), ("z-1", 14000), ("z-2", 14000)]
    assert LedgerEntry.objects.count() == ChargeEvent.objects.count() == 3
