"""A batch's new, quiet appointments are written together (QuietCreates, integrations/ehr/api/events.py) and its
bodies checked by BatchValidator: the outcome must be exactly that of applying each event on its own."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections import Counter
from typing import Any

import pytest
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from django.db import connection, transaction
from django.utils import timezone
from rest_framework import serializers

from billing.models import (
    Appointment,
    AppointmentEvent,
    Charge,
    Client,
    Clinician,
    Participant,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    Service,
)
from billing.services import intake
from integrations.ehr.api import events as ehr_events
from integrations.ehr.api import serializers as api
from integrations.ehr.api.fields import AwareDateTime, ExternalId
from integrations.ehr.api.validation import BatchValidator
from tests.integrations.ehr.conftest import SOURCE, Call, appointment_body, client_body, clinician_body

pytestmark = pytest.mark.django_db


def event(kind: str, external_id: str | None, data: Any) -> dict[str, Any]:
    return {"type": kind, "external_id": external_id, "data": data}


def at(day: int) -> str:
    return f"2026-12-{day:02d}T10:00:00-05:00"


MIXED = [
    event("appointment", "a-new-1", appointment_body(["c-1"], at(1))),
    event("appointment", "a-group", appointment_body(["c-1", "c-2"], at(2), service_code="90853")),
    event("appointment", "a-same", appointment_body(["c-1"], at(3))),                         # identical
    event("appointment", "a-change", appointment_body(["c-2"], at(4), duration_minutes=45)),  # changed
    event("appointment", "a-bad-client", appointment_body(["c-1", "c-404"], at(5))),
    event("appointment", "a-bad-clinician", {**appointment_body(["c-1"], at(6)), "clinician": "clin-404"}),
    event("appointment", "a-bad-time", appointment_body(["c-1"], "2026-12-07T10:00:00")),
    event("appointment", "a-held", appointment_body(["c-3"], at(8), status="completed")),     # bills
    event("appointment", "a-new-held", appointment_body(["c-3"], at(9), status="completed")),
    event("appointment", "a-new-1", appointment_body(["c-1"], at(1))),                         # again: unchanged
    event("appointment", "a-group", appointment_body(["c-1", "c-2"], at(2), service_code="90853",
                                                     status="canceled")),
    event("appointment", "a-new-canceled", appointment_body(["c-2"], at(10), status="canceled")),
    event("client", "c-4", client_body("Dee", session_rate_cents=12000)),
    event("appointment", "a-new-c4", appointment_body(["c-4"], at(11))),
    "not an event",
    event("appointment", "a-unknown-field", {**appointment_body(["c-1"], at(12)), "fee": 100}),
    event("appointment", "a-new-2", appointment_body(["c-2"], at(13), note_signed_at=at(13))),
]
EXPECTED = ["created", "created", "unchanged", "updated", "error", "error", "error", "updated", "created",
            "unchanged", "updated", "created", "created", "created", "error", "error", "created"]


def _state(since: int) -> dict[str, Any]:
    """What the batch wrote, without ids and timestamps (which differ from one run to the other)."""
    appointments = {}
    for a in Appointment.objects.select_related("clinician").prefetch_related("participants__client", "charges"):
        appointments[a.external_id] = (
            a.clinician.external_id, a.service_code, a.diagnosis_codes, a.starts_at, a.duration_minutes, a.status,
            a.note_signed_at, a.fee_cents, sorted(p.client.external_id for p in a.participants.all()),
            [(e.from_status, e.to_status, e.actor, e.reason) for e in AppointmentEvent.objects.filter(
                appointment=a).order_by("pk")],
            sorted((c.client_id, c.kind, c.amount_cents, c.status) for c in a.charges.all()))
    varying = {"id", "created_at", "updated_at", "appointment", "charge", "scheduled_for", "notice_due_at"}
    clients = {str(pk): external_id for pk, external_id in Client.objects.values_list("pk", "external_id")}

    def value(name: str, change: list[Any]) -> Any:
        if name in varying:
            return "*"
        return tuple(clients.get(v, v) for v in change) if name == "client" else tuple(change)

    entries = Counter(
        (e.content_type.model, e.action, re.sub(r"#\d+", "#", e.object_repr), e.actor_id,
         tuple(sorted((k, value(k, v)) for k, v in (e.changes_dict or {}).items())))
        for e in LogEntry.objects.filter(pk__gt=since))
    return {"appointments": appointments, "entries": entries, "participants": Participant.objects.count()}


def test_a_mixed_batch_ends_as_the_events_applied_one_by_one(practice: Practice, put: Call, post: Call,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    put("clinicians/clin-1/", clinician_body())
    for n, name in enumerate(["Ana", "Bo", "Cy"], start=1):
        put(f"clients/c-{n}/", client_body(name, session_rate_cents=15000))
    put("appointments/a-same/", appointment_body(["c-1"], at(3)))
    put("appointments/a-change/", appointment_body(["c-2"], at(4)))
    put("appointments/a-held/", appointment_body(["c-3"], at(8)))
    since = LogEntry.objects.latest("pk").pk

    runs, written = [], []
    insert = intake.appointments_insert_quiet

    def counted(push: intake.Push, items: list[Any], *args: Any) -> None:
        written.append(len(items))
        insert(push, items, *args)

    for gathered in (True, False):
        with monkeypatch.context() as patch, transaction.atomic():
            if gathered:
                patch.setattr(ehr_events, "appointments_insert_quiet", counted)
            else:  # every event through appointment_put, one savepoint each
                patch.setattr(ehr_events.QuietCreates, "take", lambda self, *args: False)
                patch.setattr(ehr_events, "appointment_unchanged", lambda *args: False)
            response = post("events/", {"events": MIXED}, expect=200)
            runs.append((response["results"], _state(since)))
            transaction.set_rollback(True)

    (results, state), (one_by_one, expected_state) = runs
    assert [r["status"] for r in results] == EXPECTED
    assert sum(written) == 5 and len(written) > 1  # new quiet ones, written in several groups
    assert results == one_by_one  # the same messages for the same errors
    assert state == expected_state
    assert results[4]["errors"]["clients"][0].startswith("No client with external id 'c-404'")
    assert results[5]["code"] == "invalid" and "clinician" in results[5]["errors"]
    assert "starts_at" in results[6]["errors"] and results[15]["errors"] == {"fee": ["Unknown field."]}
    # Each new appointment and each of its participants got one creation entry; the identical one none.
    creations = Counter(model for (model, action, *_), n in state["entries"].items() for _ in range(n)
                        if action == LogEntry.Action.CREATE)
    assert creations["appointment"] == 6 and creations["participant"] == 7
    assert not any(repr_.startswith("90837 on 2026-12-03") for (_, _, repr_, *_) in state["entries"])
    assert len(state["appointments"]["a-held"][10]) == len(state["appointments"]["a-new-held"][10]) == 1


def test_the_same_schedule_twice_writes_nothing_the_second_time(practice: Practice, put: Call, post: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    batch = [event("appointment", f"a-{day}", appointment_body(["c-1"], at(day))) for day in range(1, 21)]
    assert post("events/", batch, expect=200)["counts"]["created"] == 20
    entries, events = LogEntry.objects.count(), AppointmentEvent.objects.count()
    assert post("events/", batch, expect=200)["counts"] == {"created": 0, "updated": 0, "unchanged": 20, "error": 0}
    assert (LogEntry.objects.count(), AppointmentEvent.objects.count()) == (entries, events)


def test_an_unchanged_push_still_prices_a_session_waiting_in_review(practice: Practice, put: Call,
                                                                    post: Call) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    held = event("appointment", "a-1", appointment_body(["c-1"], at(1), status="completed", service_code="90834"))
    assert post("events/", [held], expect=200)["counts"]["created"] == 1
    assert ReviewItem.objects.filter(kind=ReviewKind.PRICING, status=ReviewStatus.OPEN).exists()
    assert not Charge.objects.exists()
    Service.objects.create(cpt_code="90834", description="Individual therapy, 45 minutes", fee_cents=16000)
    assert post("events/", [held], expect=200)["results"][0]["status"] == "unchanged"
    assert Charge.objects.get().amount_cents == 16000
    assert not ReviewItem.objects.filter(kind=ReviewKind.PRICING, status=ReviewStatus.OPEN).exists()


BODIES: list[Any] = [
    appointment_body(["c-1"]),
    appointment_body(["c-1", "c-2"], status="completed", fee_cents=9000, note_signed_at="2026-11-23T11:00:00Z"),
    {**appointment_body(["c-1"]), "external_id": "a-1", "charges": [], "created_at": "x"},  # tolerated
    {"clinician": "clin-1", "clients": ["c-1"], "service_code": "90837", "starts_at": "2026-11-23T10:00:00Z"},
    appointment_body(["c-1"], diagnosis_codes=["f41.1", "Z63.0"]),
    appointment_body(["c-1", "c-1"]),
    appointment_body([]),
    appointment_body("c-1"),  # type: ignore[arg-type]
    appointment_body(["c-1"], starts_at="2026-11-23T10:00:00"),
    appointment_body(["c-1"], starts_at="1850-01-01T10:00:00Z"),
    appointment_body(["c-1"], duration_minutes=0),
    appointment_body(["c-1"], duration_minutes=True),
    appointment_body(["c-1"], duration_minutes="50"),
    appointment_body(["c-1"], duration_minutes=50.0),
    appointment_body(["c-1"], fee_cents=12.5),
    appointment_body(["c-1"], status="done"),
    appointment_body(["c-1"], service_code="9083"),
    appointment_body(["c-1"], diagnosis_codes=["nope"]),
    {**appointment_body(["c-1"]), "fee": 100},
    {**appointment_body(["c-1"]), "clinician": 5},
    {**appointment_body(["c-1"]), "clinician": "a/b"},
    {**appointment_body(["c-1"]), "clinician": "\ud800"},
    {"clients": ["c-1"]},
    {},
]


def _outcome(run: Any, body: Any) -> Any:
    try:
        return "ok", run(body)
    except serializers.ValidationError as exc:
        return "invalid", exc.detail


@pytest.mark.parametrize("kind", ["appointment", "client", "coverage", "insurance_payment", "policy_acknowledgment"])
def test_the_batch_validator_says_what_the_serializer_says(kind: str) -> None:
    others: dict[str, list[Any]] = {
        "client": [client_body("Ana"), client_body("Bo", billing_type="cash"), client_body("Cy", active=1),
                   {**client_body("Di"), "balance_cents": 5}, client_body("Ed", date_of_birth="1899-12-31")],
        "coverage": [{"payer_name": "Aetna", "payer_id": None, "copay_cents": 2500},
                     {"effective_from": "2026-02-01", "effective_to": "2026-01-01"},
                     {"coinsurance_percent": "20"}, {"coinsurance_percent": 20.5}],
        "insurance_payment": [{"appointment": "a-1", "client": "c-1", "allowed_cents": 1, "paid_cents": 0,
                               "patient_responsibility_cents": 0, "paid_on": "2026-12-01", "reference": "R1"},
                              {"appointment": "a-1", "reference": ""}],
        "policy_acknowledgment": [{"policy_version": "2", "acknowledged_at": "2026-11-01T09:00:00Z"},
                                  {"policy_version": 2, "acknowledged_at": "yesterday"}],
    }
    bodies = BODIES if kind == "appointment" else others[kind]
    serializer_class = ehr_events.EVENT_SERIALIZERS[kind]
    batch = BatchValidator(serializer_class())
    for body in [*bodies, *bodies]:  # the second time from what it remembers
        assert _outcome(batch.run, body) == _outcome(serializer_class().run_validation, body), body


def test_remembered_values_are_not_shared_between_events() -> None:
    batch = BatchValidator(api.AppointmentIn())
    first, second = (batch.run(appointment_body(["c-1"])) for _ in range(2))
    first["diagnosis_codes"].append("Z00.0")
    first["clients"].append("c-2")
    assert second["diagnosis_codes"] == ["F41.1"] and second["clients"] == ["c-1"]
    assert isinstance(second["starts_at"], dt.datetime)


@pytest.mark.parametrize("value", ["c-1", "x" * 100, "x" * 101, "é-1", "a/b", "abc\n", "tab\there", "  ", "",
                                   "a\x00b", "\ud800", 5, None, ["c-1"]])
def test_an_external_id_told_at_once_is_one_the_full_checks_accept_as_sent(value: Any) -> None:
    field = ExternalId()
    assert _outcome(field.run_validation, value) == _outcome(super(ExternalId, field).run_validation, value)


@pytest.mark.parametrize("value", ["2026-11-23T10:00:00-05:00", "2026-11-23T10:00:00Z", "2026-11-23 10:00+05:30",
                                   "2026-11-23T10:00:00.5-08:00", "2026-03-08T02:30:00-05:00"])
def test_a_moment_read_at_once_is_the_one_drf_reads(value: str) -> None:
    with timezone.override("America/New_York"):
        fast, full = AwareDateTime().to_internal_value(value), serializers.DateTimeField().to_internal_value(value)
    assert (fast, str(fast.tzinfo)) == (full, str(full.tzinfo))


@pytest.mark.django_db(transaction=True)
def test_a_batch_racing_another_for_the_same_new_appointment_falls_back_to_one_by_one(
        practice: Practice, put: Call, post: Call) -> None:
    """An integrator retries a batch while the first try is still being written: the retry's bulk insert
    meets the first's uncommitted row, waits, then fails on the unique id; its events then go one by one,
    and each appointment exists once."""
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    holding, release = threading.Event(), threading.Event()

    def first_try() -> None:
        try:
            with transaction.atomic():
                ehr_events.events_apply(push=intake.Push(source=SOURCE, now=timezone.now()),
                                      events=[event("appointment", "a-1", appointment_body(["c-1"], at(1)))])
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    other = threading.Thread(target=first_try)
    other.start()
    assert holding.wait(10)
    threading.Timer(0.5, release.set).start()  # the retry below is then waiting on the first try's row
    response = post("events/", [event("appointment", "a-1", appointment_body(["c-1"], at(1))),
                                event("appointment", "a-2", appointment_body(["c-1"], at(2)))], expect=200)
    other.join(10)
    assert [r["status"] for r in response["results"]] == ["unchanged", "created"]
    assert sorted(Appointment.objects.values_list("external_id", flat=True)) == ["a-1", "a-2"]
    assert Participant.objects.count() == AppointmentEvent.objects.count() == 2
    assert LogEntry.objects.filter(content_type__model="appointment").count() == 2


def test_a_long_schedule_is_written_in_chunks_each_row_as_if_put_alone(practice: Practice, put: Call,
                                                                        post: Call) -> None:
    """More new appointments than one chunk, sent while the batch reads on, with other events between them:
    every row, participant, status event and audit entry is there, and ids match up."""
    put("clinicians/clin-1/", clinician_body())
    for n, name in enumerate(["Ana", "Bo", "Cy"], start=1):
        put(f"clients/c-{n}/", client_body(name))
    size = 2 * ehr_events._CHUNK + 30

    def new(i: int) -> dict[str, Any]:
        clients = ["c-1", "c-2"] if i % 7 == 0 else [f"c-{1 + i % 3}"]
        return event("appointment", f"w-{i}", appointment_body(clients, f"2027-01-01T{i % 24:02d}:00:00Z"))

    events = [new(i) for i in range(size // 2)]
    events.append(event("client", "c-4", client_body("Dee")))  # another kind of event: the chunks so far end
    events += [new(i) for i in range(size // 2, size)]
    events.append(event("appointment", "w-3", appointment_body(["c-1"], "2027-01-01T03:00:00Z",
                                                               duration_minutes=45)))  # again, changed
    response = post("events/", {"events": events}, expect=200)

    statuses = [r["status"] for r in response["results"]]
    assert statuses == ["created"] * (size // 2) + ["created"] + ["created"] * (size - size // 2) + ["updated"]
    assert Appointment.objects.filter(external_id__startswith="w-").count() == size
    for appointment in Appointment.objects.prefetch_related("participants__client", "events"):
        i = int(appointment.external_id.removeprefix("w-"))
        assert sorted(p.client.external_id for p in appointment.participants.all()) == new(i)["data"]["clients"]
        assert [(e.from_status, e.to_status) for e in appointment.events.all()] == [("", "scheduled")]
        creation = LogEntry.objects.get_for_object(appointment).order_by("pk").first()
        assert creation is not None and creation.action == LogEntry.Action.CREATE
        if appointment.external_id != "w-3":  # (changed since)
            assert creation.changes_dict == {k: list(v) for k, v in model_instance_diff(None, appointment).items()}
    assert LogEntry.objects.filter(content_type__model="participant").count() == Participant.objects.count()
    assert Appointment.objects.get(external_id="w-3").duration_minutes == 45

    # Foreign keys are checked at COMMIT again, as everywhere else in the transaction.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO billing_participant (appointment_id, client_id) VALUES (%s, %s)",
                       [10**9, 10**9])  # no error before the end of the transaction
        transaction.set_rollback(True)


def test_after_a_rolled_back_event_the_next_chunks_read_what_they_need_before_sending(practice: Practice, put: Call,
                                                                                      post: Call) -> None:
    """A failed event empties the batch's cache; the events after it read their rows back from the database,
    which must wait for the chunks being sent."""
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    size = 2 * ehr_events._CHUNK + 50
    events = [event("appointment", f"x-{i}", appointment_body(["c-1"], f"2027-02-01T{i % 24:02d}:00:00Z"))
              for i in range(size)]
    events.insert(10, event("appointment", "x-bad", appointment_body(["c-404"])))  # rolled back
    response = post("events/", {"events": events}, expect=200)
    assert Counter(r["status"] for r in response["results"]) == {"created": size, "error": 1}
    assert Appointment.objects.count() == Participant.objects.count() == AppointmentEvent.objects.count() == size


def test_a_batch_that_needs_more_ids_than_it_reserved_reserves_more(practice: Practice, put: Call, post: Call,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    prefetch = ehr_events._prefetch_batch
    monkeypatch.setattr(ehr_events, "_prefetch_batch", lambda *args: (prefetch(*args), (1, 1))[1])  # too few
    size = ehr_events._CHUNK + 20
    response = post("events/", [event("appointment", f"y-{i}", appointment_body(["c-1"], at(1 + i % 28)))
                                for i in range(size)], expect=200)
    assert response["counts"]["created"] == size
    assert sorted(Participant.objects.values_list("appointment__external_id", flat=True)) == sorted(
        f"y-{i}" for i in range(size))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("size", [1, ehr_events._CHUNK + 1, 2 * ehr_events._CHUNK + 50])
def test_a_conflict_committed_while_the_batch_is_sent_falls_back_to_one_by_one(
        practice: Practice, put: Call, post: Call, monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """Another request commits one of the batch's new appointments after the batch looked them up: the
    database reports it on whichever statement follows, and the batch still ends as if applied one by one."""
    put("clinicians/clin-1/", clinician_body())
    put("clients/c-1/", client_body("Ana"))
    prefetch = ehr_events._prefetch_batch

    def meanwhile(push: intake.Push, events: list[Any]) -> tuple[int, int]:
        room = prefetch(push, events)
        if not Appointment.objects.filter(external_id="z-0").exists():  # once
            other = threading.Thread(target=other_request)
            other.start()
            other.join(10)
        return room

    def other_request() -> None:
        try:
            Appointment.objects.create(source=SOURCE, external_id="z-0", service_code="90837",
                                       clinician=Clinician.objects.get(external_id="clin-1"),
                                       starts_at=timezone.now())
        finally:
            connection.close()

    monkeypatch.setattr(ehr_events, "_prefetch_batch", meanwhile)
    events = [event("appointment", f"z-{i}", appointment_body(["c-1"], f"2027-01-01T{i % 24:02d}:00:00Z"))
              for i in range(size)]
    response = post("events/", [*events, event("client", "c-2", client_body("Bo"))], expect=200)
    assert [r["status"] for r in response["results"]] == ["updated"] + ["created"] * size
    assert Appointment.objects.count() == Participant.objects.count() == size
    assert LogEntry.objects.filter(content_type__model="appointment", action=LogEntry.Action.CREATE).count() == size
