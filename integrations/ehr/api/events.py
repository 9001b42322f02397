"""The events batch (``POST /api/v1/events/``): parse each event, apply it through billing's record intake
(billing/services/intake.py), report each one. New appointments that bill nothing yet are gathered and
written in bulk (``QuietCreates``, through ``appointments_insert_quiet``), and so are new completed sessions,
billed together (``BilledCreates``, through ``appointments_insert_billed``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import psycopg
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    OperationalError,
    connection,
    connections,
    transaction,
)
from rest_framework import serializers

from billing.audit.bulk import BulkAudit, bulk_audit
from billing.bulk import ids_reserve
from billing.models import Appointment, Charge, Client, Clinician, Participant, Practice
from billing.services.estimates import clients_with_estimate
from billing.services.intake import (
    CREATED,
    ERROR,
    QUIET_STATUSES,
    UNCHANGED,
    Gathered,
    Outcome,
    Push,
    appointment_put,
    appointment_unchanged,
    appointments_insert_billed,
    appointments_insert_quiet,
    client_put,
    coverage_put,
    insurance_payment_record,
    policy_acknowledgment_record,
)
from billing.services.schedule import status_is_billable
from integrations.ehr.api import serializers as api
from integrations.ehr.api.errors import Conflict, InvalidInput, NotFound
from integrations.ehr.api.fields import ExternalId
from integrations.ehr.api.validation import BatchValidator

log = logging.getLogger(__name__)

# --- Events ----------------------------------------------------------------------------------------------

EVENT_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "client": api.ClientIn,
    "coverage": api.CoverageIn,
    "appointment": api.AppointmentIn,
    "insurance_payment": api.InsurancePaymentIn,
    "policy_acknowledgment": api.PolicyAcknowledgmentIn,
}
CLIENT_KEYED = ("client", "coverage", "policy_acknowledgment")
ENVELOPE = {"type", "external_id", "data"}


def _messages(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail, flattened to field -> messages (list items as ``field[2]``)."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}[{key}]" if isinstance(key, int) else (f"{prefix}.{key}" if prefix else str(key))
            for sub, messages in _messages(value, name).items():
                out.setdefault(sub, []).extend(messages)
    elif isinstance(detail, list):
        for item in detail:
            if isinstance(item, dict | list):
                for sub, messages in _messages(item, prefix).items():
                    out.setdefault(sub, []).extend(messages)
            else:
                out.setdefault(prefix or "non_field_errors", []).append(str(item))
    else:
        out.setdefault(prefix or "non_field_errors", []).append(str(detail))
    return out


def _prefetch_batch(push: Push, events: list[Any]) -> tuple[int, int]:
    """Look up the rows the batch's events name; returns how many appointments, and participants, its
    events could create at most (those of the appointments not found, each counted once)."""
    clients: set[str] = set()
    clinicians: set[str] = set()
    appointments: dict[str, int] = {}  # external id: how many clients its first event lists

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and 0 < len(value) <= 100 and "\x00" not in value else None

    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            continue
        kind, external_id, data = event.get("type"), text(event.get("external_id")), event["data"]
        if kind in CLIENT_KEYED and external_id:
            clients.add(external_id)
        elif kind == "appointment":
            if external_id and external_id not in appointments:  # (a longer list is refused)
                attending = len(data["clients"]) if isinstance(data.get("clients"), list) else 0
                appointments[external_id] = min(attending, api.MAX_CLIENTS)
            if text(data.get("clinician")):
                clinicians.add(data["clinician"])
            if isinstance(data.get("clients"), list):
                clients.update(c for c in data["clients"] if text(c))
        elif kind == "insurance_payment" and text(data.get("client")):
            clients.add(data["client"])
    push.prefetch(clients={c for c in clients if _clean(c)}, clinicians={c for c in clinicians if _clean(c)},
                  appointments={a for a in appointments if _clean(a)})
    new = [attending for external_id, attending in appointments.items() if push.appointments.get(external_id) is None]
    return len(new), sum(new)


def _clean(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def events_apply(*, push: Push, events: list[Any]) -> list[dict[str, Any]]:
    """Apply a batch in order, each event as its single-resource call would, each in its own savepoint:
    a bad event is reported and rolled back, and the others go on. The batch commits once at the end.

    New appointments that bill nothing yet (scheduled, not at the trigger) are the bulk of any schedule
    push; consecutive ones are gathered and written together (see ``QuietCreates``). Any other event
    first writes what is gathered, so every event still sees the ones before it, in order. An appointment
    sent again as it is stored is answered unchanged without a savepoint (``_appointment_unchanged``).
    Bodies are validated by ``BatchValidator``, which checks each distinct field value once per batch.
    """
    validators = {kind: BatchValidator(cls()) for kind, cls in EVENT_SERIALIZERS.items()}
    external_id_field = ExternalId()
    results: list[dict[str, Any]] = []
    with _collector_paused(), transaction.atomic(), Practice.pinned():  # the practice's policy read once
        room = _prefetch_batch(push, events)
        with QuietCreates(push, room) as gathered:
            _events_apply(push, events, validators, external_id_field, results, gathered,
                          BilledCreates(push, gathered))
    return results


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the batch. A batch keeps a few hundred thousand objects
    alive until it ends (its events, their validated data, its rows and entries), and they die then by
    reference counting; meanwhile the collector would scan them again and again, 10 to 50 ms a batch.
    Other threads' work only has its collections put off for as long."""
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def _events_apply(push: Push, events: list[Any], validators: dict[str, BatchValidator], external_id_field: ExternalId,
                  results: list[dict[str, Any]], gathered: QuietCreates, billed: BilledCreates) -> None:
    for index, event in enumerate(events):
        result: dict[str, Any] = {"index": index, "type": None, "external_id": None}
        results.append(result)
        try:
            kind, external_id, data = _event_parse(event, validators, external_id_field, result)
        except serializers.ValidationError as exc:
            _fail(result, "invalid", _messages(exc.detail))
            continue
        if kind == "appointment":
            gathered.before_reading(external_id, data)
            if appointment_unchanged(push, external_id, data):
                result["status"] = UNCHANGED
                continue
            if gathered.take(result, external_id, data) or billed.take(result, external_id, data):
                continue
        billed.flush()
        gathered.flush()
        _event_apply_one(push, result, kind, external_id, data)
    billed.flush()
    gathered.flush()


def _event_apply_one(push: Push, result: dict[str, Any], kind: str, external_id: str, data: dict[str, Any]) -> None:
    try:
        with transaction.atomic():
            outcome = _event_apply(push, kind, external_id, data)
        result["status"] = outcome.status
    except InvalidInput as exc:
        push.forget()
        _fail(result, "invalid", exc.errors)
    except NotFound as exc:
        push.forget()
        _fail(result, "not_found", {"external_id": [str(exc)]})
    except Conflict as exc:
        push.forget()
        _fail(result, "conflict", {"non_field_errors": [str(exc)]})
    except (IntegrityError, OperationalError) as exc:
        # A concurrent batch got in the way (lock timeout, deadlock): this event can simply be sent again.
        log.warning("events: event %s of source %s rolled back: %s", result["index"], push.source,
                    exc.__class__.__name__)
        push.forget()
        _fail(result, "retry", {"non_field_errors": ["Conflicted with a concurrent change; send this event "
                                                     "again."]})


_CHUNK = 200  # new appointments sent at a time, while the batch reads on


def _new_with_known_people(push: Push, external_id: str,
                           data: dict[str, Any]) -> tuple[Clinician, list[Client]] | None:
    """The clinician and clients of an appointment the source has not pushed before, if all are known;
    None otherwise (an update, or a reference the one-by-one path reports)."""
    if push.appointment_locked(external_id) is not None:
        return None
    clinician = push.clinician(data["clinician"])
    clients = [push.client(external_id) for external_id in data["clients"]]
    if clinician is None or any(client is None for client in clients):
        return None
    return clinician, [client for client in clients if client is not None]


@dataclass
class QuietCreates:
    """New appointments that need no billing yet, written a few hundred at a time (``billing.bulk``).

    ``take`` accepts only an appointment the batch has not seen, whose clinician and clients are known,
    in a status that bills nothing (scheduled or canceled, and not at the practice's trigger): for those
    ``appointment_put`` would insert the row, its participants and its creation event, and nothing else.
    A chunk is three INSERTs (rows, participants, events) and one of audit entries, column by column,
    with no model instance per row.

    The chunks go through the connection's pipeline mode: each is sent and the batch goes
    on reading the next events while the database writes it. Their primary keys are reserved up front
    (``room``: as many as the batch's events could create; an id not used is a gap, as a rolled-back
    insert leaves), since nothing comes back until the pipeline is synchronised. ``flush`` synchronises,
    and runs before any other event (so every event sees the ones before it; it may query) and at the
    end of the batch. The chunks since the last ``flush`` share a savepoint: if one failed (a concurrent
    request created one of its appointments) they are rolled back and their events applied one by one.
    Written rows are left out of the batch's
    cache, so an event naming one again reads it back from the database.
    """

    push: Push
    room: tuple[int, int]  # how many appointments, and participants, the batch's events could create
    items: list[Gathered] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    sent: list[Gathered] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    participant_ids: list[int] = field(default_factory=list)
    pipeline: ExitStack | None = None
    cursor: psycopg.Cursor[Any] | None = None
    savepoint: str = ""
    audit: BulkAudit | None = None

    def __enter__(self) -> QuietCreates:
        return self

    def __exit__(self, failed: type[BaseException] | None, *exc: object) -> None:
        if failed is not None and self.pipeline is not None:
            with suppress(Exception):  # the batch's own error is the one to report; its transaction ends
                self.pipeline.close()

    def take(self, result: dict[str, Any], external_id: str, data: dict[str, Any]) -> bool:
        push = self.push
        if external_id in self.taken or data["status"] not in QUIET_STATUSES:
            return False
        known = _new_with_known_people(push, external_id, data)
        if known is None or status_is_billable(data["status"], data["note_signed_at"], push.practice):
            return False
        self.items.append((result, external_id, data, *known))
        self.taken.add(external_id)
        if len(self.items) >= _CHUNK:
            self._send()
        return True

    def flush(self) -> None:
        self._send()
        self._sync()

    def before_reading(self, external_id: str, data: dict[str, Any]) -> None:
        """While chunks are in the pipeline a query would synchronise it, and a failed chunk's error would
        surface from that query rather than from ``_sync``, which falls back to one by one: if the rows
        this appointment event needs are not all in the batch's cache (after a rolled-back event emptied
        it), synchronise first."""
        push = self.push
        if self.pipeline is None:
            return
        appointment = push.appointments.get(external_id)
        if (external_id not in push.appointments or data["clinician"] not in push.clinicians
                or any(client not in push.clients for client in data["clients"])
                or (appointment is not None and appointment.pk not in push.participants)):
            self._sync()

    def _send(self) -> None:
        if not self.items:
            return
        items, self.items = self.items, []
        participants = sum(len(clients) for *_, clients in items)
        if len(self.ids) < len(items) or len(self.participant_ids) < participants:
            self._sync()
            self._reserve(len(items), participants)
        self._open()
        ids, self.ids = self.ids[:len(items)], self.ids[len(items):]
        participant_ids, self.participant_ids = self.participant_ids[:participants], self.participant_ids[participants:]
        assert self.audit is not None and self.cursor is not None
        self.sent.extend(items)
        try:
            # A statement sent earlier that failed (a concurrent request's committed row) is reported by
            # whichever statement is sent after the database answered, not only at the sync.
            with connection.wrap_database_errors:
                appointments_insert_quiet(self.push, items, self.audit, self.cursor, ids, participant_ids)
        except (IntegrityError, OperationalError):
            self._sync(failed=True)

    def _open(self) -> psycopg.Cursor[Any]:
        """The cursor in pipeline mode, opened (with the savepoint its chunks share) if it is not."""
        if self.pipeline is None:
            self.audit = bulk_audit([Appointment, Participant, Charge])
            self.savepoint = transaction.savepoint()
            self.pipeline = ExitStack()
            self.pipeline.enter_context(self.audit.db.connection.pipeline())
            self.cursor = self.pipeline.enter_context(psycopg.Cursor(self.audit.db.connection))
            # Foreign keys checked as each INSERT ends, while the batch reads on, rather than all at COMMIT
            # (a quarter of a batch's time, with nothing else to do meanwhile). Every row here comes after
            # the rows it points to. Rolling back to the savepoint restores the deferred checks; ``_sync``
            # restores them otherwise (every deferrable constraint here is initially deferred).
            self.cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        assert self.cursor is not None
        return self.cursor

    def _reserve(self, appointments: int, participants: int) -> None:
        db = connections[DEFAULT_DB_ALIAS]
        self.ids += ids_reserve(Appointment, max(appointments, self.room[0]) - len(self.ids), db)
        self.participant_ids += ids_reserve(Participant, max(participants, self.room[1]) - len(self.participant_ids),
                                            db)
        self.room = (0, 0)

    def _sync(self, failed: bool = False) -> None:
        """Wait for the database to have written what was sent; on a conflict (``failed``: one was reported
        already), roll it all back and apply it one by one."""
        if self.pipeline is None:
            return
        sent, self.sent = self.sent, []
        pipeline, cursor, self.pipeline, self.cursor = self.pipeline, self.cursor, None, None
        assert cursor is not None
        try:
            with connection.wrap_database_errors:
                if not failed:
                    cursor.execute("SET CONSTRAINTS ALL DEFERRED")
                pipeline.close()
        except DatabaseError as error:
            if not failed and not isinstance(error, IntegrityError | OperationalError):
                raise
            failed = True  # (after a reported failure, whatever the closing pipeline says is moot)
        if failed:
            self._one_by_one(self.savepoint, sent)
            return
        transaction.savepoint_commit(self.savepoint)
        self._created(sent)

    def _one_by_one(self, savepoint: str, items: list[Gathered]) -> None:
        transaction.savepoint_rollback(savepoint)
        self.push.forget()
        for result, external_id, data, _, _ in items:
            _event_apply_one(self.push, result, "appointment", external_id, data)

    def _created(self, items: list[Gathered]) -> None:
        for result, external_id, *_ in items:
            result["status"] = CREATED
            self.push.appointments.pop(external_id, None)


_BILLED_CHUNK = 500  # new billable appointments written and billed at a time


@dataclass
class BilledCreates:
    """New appointments already at the billing trigger (the completed sessions of a first import or a
    nightly push), gathered like ``QuietCreates``'s and written and billed a chunk at a time by
    ``appointments_insert_billed``: the same rows, charges, ledger lines, review items and audit
    entries ``appointment_put`` writes for each, priced by the same functions.

    ``take`` accepts only an appointment the batch has not seen (by either gatherer; they share
    ``quiet.taken``), new, whose clinician and clients are known, and at the trigger (``status_is_billable``,
    which no fee-carrying status is); anything else (an update, a no-show) goes one by one. ``flush``
    runs before any other event and at the end of the batch: it first synchronises ``quiet``'s pipeline
    (billing reads next: the clients' terms, the pricing look-ups, reserved ids), decides every charge,
    then sends the chunk's rows on ``quiet``'s pipeline, which the next flush synchronises, so the
    database writes them while the batch reads on. They share ``quiet``'s savepoint: if they failed (a
    concurrent request created one of the appointments) everything since is rolled back and applied one
    by one.
    """

    push: Push
    quiet: QuietCreates
    items: list[Gathered] = field(default_factory=list)
    guarded: set[int] | None = None  # clients with a good faith estimate, read once for the batch

    def take(self, result: dict[str, Any], external_id: str, data: dict[str, Any]) -> bool:
        push = self.push
        if external_id in self.quiet.taken or not status_is_billable(data["status"], data["note_signed_at"],
                                                                     push.practice):
            return False
        known = _new_with_known_people(push, external_id, data)
        if known is None:
            return False
        if self.guarded is None:
            self.guarded = clients_with_estimate()
        if any(client.pk in self.guarded for client in known[1]):
            return False  # the dispute guard decides each of their charges in turn, one by one
        self.items.append((result, external_id, data, *known))
        self.quiet.taken.add(external_id)
        if len(self.items) >= _BILLED_CHUNK:
            self.flush()
        return True

    def flush(self) -> None:
        if not self.items:
            return
        items, self.items = self.items, []
        quiet = self.quiet
        quiet.flush()  # its rows written: billing reads next
        # Read and decide, then send every row on ``quiet``'s pipeline, which the next flush synchronises
        # (the database writes this chunk while the batch reads on); a conflict is settled there, one by
        # one, with ``quiet``'s own chunks.
        reads, opened = transaction.savepoint(), False

        def pipeline() -> psycopg.Cursor[Any]:
            nonlocal opened
            transaction.savepoint_commit(reads)
            cursor = quiet._open()
            quiet.sent.extend(items)
            opened = True
            return cursor

        try:
            with connection.wrap_database_errors:
                appointments_insert_billed(self.push, items, bulk_audit([Appointment, Participant, Charge]), pipeline)
        except (IntegrityError, OperationalError):
            if opened:
                quiet._sync(failed=True)
            else:
                quiet._one_by_one(reads, items)


def _fail(result: dict[str, Any], code: str, errors: dict[str, list[str]]) -> None:
    result.update(status=ERROR, code=code, errors=errors)


def _event_parse(event: Any, validators: dict[str, BatchValidator], external_id_field: ExternalId,
                 result: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    if not isinstance(event, dict):
        raise serializers.ValidationError({"non_field_errors": ["Each event is an object with type, "
                                                                "external_id and data."]})
    errors: dict[str, list[str]] = {str(name)[:100]: ["Unknown field."] for name in event if name not in ENVELOPE}
    kind = event.get("type")
    if not isinstance(kind, str) or kind not in EVENT_SERIALIZERS:  # {"type": {}} must not raise
        errors["type"] = [f"Give one of: {', '.join(EVENT_SERIALIZERS)}."]
    else:
        result["type"] = kind
    external_id = ""
    if kind != "insurance_payment":
        try:
            external_id = external_id_field.run_validation(event.get("external_id", serializers.empty))
            result["external_id"] = external_id
        except serializers.ValidationError as exc:
            errors["external_id"] = [str(message) for message in exc.detail]
    if not isinstance(event.get("data"), dict):
        errors["data"] = ["Give the record as an object."]
    if errors or not isinstance(kind, str):
        raise serializers.ValidationError(errors)
    data = validators[kind].run(event["data"])
    return kind, external_id, data


def _event_apply(push: Push, kind: str, external_id: str, data: dict[str, Any]) -> Outcome[Any]:
    if kind == "client":
        return client_put(push=push, external_id=external_id, data=data)
    if kind == "coverage":
        return coverage_put(push=push, client_external_id=external_id, data=data)
    if kind == "appointment":
        return appointment_put(push=push, external_id=external_id, data=data)
    if kind == "policy_acknowledgment":
        return policy_acknowledgment_record(push=push, client_external_id=external_id, data=data)
    return insurance_payment_record(push=push, data=data)
