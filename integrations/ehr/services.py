"""Writes for the EHR API: each call applies one pushed record, idempotently, and lets billing follow.

Every function takes the ``Push`` (who pushes, when, and what it has already looked up) and the
validated data; it compares before it saves, so a body identical to what is stored writes nothing
(no save, hence no audit entry and no billing event). ``partial`` applies only the fields given (PATCH);
otherwise the data is the whole record (PUT) and a missing record is created.

Appointment changes go through billing's own services: a status move through ``appointment_set_status``
(which records it), any other change through ``appointment_sync_charges``, exactly as the admin does.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    IntegrityError,
    OperationalError,
    connection,
    connections,
    models,
    transaction,
)
from django.db.models import F
from django.utils import timezone
from rest_framework import serializers

from billing.audit.bulk import BulkAudit, audit_bulk_created_columns, bulk_audit
from billing.bulk import AnyOf, bulk_insert_values, ids_reserve, rows_send
from billing.models import (
    MONEY_MOVED_STATUSES,
    Appointment,
    AppointmentEvent,
    AppointmentStatus,
    Charge,
    Client,
    Clinician,
    Coverage,
    InsurancePayment,
    Participant,
    Payer,
    PolicyAcknowledgment,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.money import format_cents
from billing.services.schedule import (
    REPRICEABLE,
    SESSION_KINDS,
    appointment_event_record,
    appointment_set_status,
    appointment_sync_charges,
    session_is_billable,
    status_is_billable,
)
from integrations.ehr import serializers as api
from integrations.ehr.errors import Conflict, InvalidInput, NotFound
from integrations.ehr.fields import ExternalId
from integrations.ehr.validation import BatchValidator

log = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED, ERROR = "created", "updated", "unchanged", "error"
M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class Outcome(Generic[M]):
    status: str
    obj: M


@dataclass
class Push:
    """One request (or one events batch) from one source: the moment, the actor, and rows looked up.

    The caches map external ids to rows (None: known not to exist). A batch fills them in a few queries
    up front; ``forget`` empties them when an event is rolled back, since it may have created a row the
    cache still names.
    """

    source: str
    now: dt.datetime
    clients: dict[str, Client | None] = field(default_factory=dict)
    clinicians: dict[str, Clinician | None] = field(default_factory=dict)
    appointments: dict[str, Appointment | None] = field(default_factory=dict)
    participants: dict[int, set[int]] = field(default_factory=dict)
    open_pricing: set[int] | None = None
    _practice: Practice | None = None

    @property
    def actor(self) -> str:
        return f"api:{self.source}"

    @property
    def practice(self) -> Practice:
        if self._practice is None:
            self._practice = Practice.load()
        return self._practice

    def forget(self) -> None:
        self.clients.clear()
        self.clinicians.clear()
        self.appointments.clear()
        self.participants.clear()
        self.open_pricing = None

    def client(self, external_id: str) -> Client | None:
        if external_id not in self.clients:
            self.clients[external_id] = Client.objects.filter(source=self.source, external_id=external_id).first()
        return self.clients[external_id]

    def clinician(self, external_id: str) -> Clinician | None:
        if external_id not in self.clinicians:
            self.clinicians[external_id] = Clinician.objects.filter(
                source=self.source, external_id=external_id).first()
        return self.clinicians[external_id]

    def appointment_locked(self, external_id: str) -> Appointment | None:
        """The appointment, locked for this transaction (a batch locks its appointments up front)."""
        if external_id not in self.appointments:
            self.appointments[external_id] = Appointment.objects.select_for_update().filter(
                source=self.source, external_id=external_id).first()
        return self.appointments[external_id]

    def participant_ids(self, appointment: Appointment) -> set[int]:
        if appointment.pk not in self.participants:
            self.participants[appointment.pk] = set(
                Participant.objects.filter(appointment=appointment).values_list("client_id", flat=True))
        return self.participants[appointment.pk]

    def has_open_pricing_review(self, appointment: Appointment) -> bool:
        if self.open_pricing is not None:
            return appointment.pk in self.open_pricing
        return ReviewItem.objects.filter(appointment=appointment, kind=ReviewKind.PRICING,
                                         status=ReviewStatus.OPEN).exists()

    def prefetch(self, *, clients: Iterable[str], clinicians: Iterable[str], appointments: Iterable[str]) -> None:
        """Look up a batch's rows in one query per kind (the appointments locked, in id order).

        Clients are loaded with the fields the events use (the id, and the name that audit entries show
        for a participant): a client row has some forty columns, and reading them all for 1,000 clients
        cost more than the query. Any other field is read from the database if ever asked for.

        Each query also says ``external_id <> ''`` (true of every id looked up): the unique index on
        (source, external id) leaves out blank ids, and PostgreSQL cannot tell by itself that a list of
        more than 100 ids does too, so it would scan the whole table (173 ms for 1,000 ids among a
        million rows, against 2 ms through the index).
        """
        self.clients.update(dict.fromkeys(clients))
        self.clients.update({c.external_id: c for c in Client.objects.filter(
            AnyOf(F("external_id"), self.clients), source=self.source).exclude(external_id="").only(
            "id", "source", "external_id", "first_name", "last_name")})
        self.clinicians.update(dict.fromkeys(clinicians))
        self.clinicians.update({c.external_id: c for c in Clinician.objects.filter(
            AnyOf(F("external_id"), self.clinicians), source=self.source).exclude(external_id="")})
        wanted = list(appointments)
        self.appointments.update(dict.fromkeys(wanted))
        found = list(Appointment.objects.select_for_update().filter(
            AnyOf(F("external_id"), wanted), source=self.source).exclude(external_id="").order_by("pk"))
        self.appointments.update({a.external_id: a for a in found})
        ids = [a.pk for a in found]
        for appointment_id in ids:
            self.participants[appointment_id] = set()
        for appointment_id, client_id in Participant.objects.filter(AnyOf(F("appointment_id"), ids)).values_list(
                "appointment_id", "client_id"):
            self.participants[appointment_id].add(client_id)
        self.open_pricing = set(ReviewItem.objects.filter(
            AnyOf(F("appointment_id"), ids), kind=ReviewKind.PRICING, status=ReviewStatus.OPEN).values_list(
            "appointment_id", flat=True))


def _assign(obj: models.Model, data: Mapping[str, Any]) -> list[str]:
    """Set the fields whose value differs; return their names (empty: nothing to save)."""
    changed = []
    for name, value in data.items():
        if getattr(obj, name) != value:
            setattr(obj, name, value)
            changed.append(name)
    return changed


def _create_or_lock(model: type[M], *, source: str, external_id: str, fields: dict[str, Any]) -> tuple[M, bool]:
    try:
        with transaction.atomic():
            return model._default_manager.create(source=source, external_id=external_id, **fields), True
    except IntegrityError:
        # A concurrent request created it between our read and our insert: update that row instead.
        return model._default_manager.select_for_update().get(source=source, external_id=external_id), False


def _no_client(external_id: str) -> NotFound:
    return NotFound(f"No client with external id {external_id!r} from this source.")


# --- Clinicians and clients ------------------------------------------------------------------------------

def _record_put(model: type[M], cache: dict[str, M | None], *, push: Push, external_id: str,
                data: Mapping[str, Any], partial: bool, missing: NotFound) -> tuple[Outcome[M], list[str]]:
    """Create or replace one pushed record by (source, external id), locking it; returns the outcome and
    the fields that changed (none when an identical body was sent: nothing is saved or audited)."""
    record = model.objects.select_for_update().filter(  # type: ignore[attr-defined]
        source=push.source, external_id=external_id).first()
    if record is None:
        if partial:
            raise missing
        record, created = _create_or_lock(model, source=push.source, external_id=external_id, fields=dict(data))
        if created:
            cache[external_id] = record
            return Outcome(CREATED, record), []
    changed = _assign(record, data)
    if not changed:
        return Outcome(UNCHANGED, record), []
    record.save(update_fields=[*changed, "updated_at"])
    cache[external_id] = record
    return Outcome(UPDATED, record), changed


def clinician_put(*, push: Push, external_id: str, data: Mapping[str, Any],
                  partial: bool = False) -> Outcome[Clinician]:
    with transaction.atomic():
        outcome, _ = _record_put(Clinician, push.clinicians, push=push, external_id=external_id, data=data,
                                 partial=partial, missing=NotFound(
                                     f"No clinician with external id {external_id!r} from this source."))
        return outcome


PRICING_CLIENT_FIELDS = {"billing_type", "session_rate_cents"}


def client_put(*, push: Push, external_id: str, data: Mapping[str, Any], partial: bool = False) -> Outcome[Client]:
    with transaction.atomic():
        outcome, changed = _record_put(Client, push.clients, push=push, external_id=external_id, data=data,
                                       partial=partial, missing=_no_client(external_id))
        if PRICING_CLIENT_FIELDS.intersection(changed):
            _reprice_client_sessions(push, outcome.obj)
        return outcome


def _reprice_client_sessions(push: Push, client: Client) -> None:
    """New billing terms or benefits re-price what has not been charged yet, and retry what waits in
    review for want of them (README: "when the data is fixed, the next push prices it"). Sessions
    already paid are left alone: a later benefits update is not a reason to re-open them."""
    pending = set(Charge.objects.filter(client=client, kind__in=SESSION_KINDS, status__in=REPRICEABLE,
                                        appointment__isnull=False).values_list("appointment_id", flat=True))
    waiting = set(ReviewItem.objects.filter(client=client, kind=ReviewKind.PRICING, status=ReviewStatus.OPEN,
                                            appointment__isnull=False).values_list("appointment_id", flat=True))
    for appointment in Appointment.objects.filter(pk__in=pending | waiting).order_by("pk"):
        appointment_sync_charges(appointment=appointment, now=push.now, actor=push.actor)


# --- Coverage and policy acknowledgments -----------------------------------------------------------------

DEDUCTIBLE_FIELDS = {"deductible_cents", "deductible_met_cents"}
COVERAGE_OUT_FIELDS = ("payer_name", "member_id", "plan_category", "copay_cents", "coinsurance_percent",
                       "deductible_cents", "deductible_met_cents", "effective_from", "effective_to", "benefits_as_of")


def _payer(payer_id: str, name: str) -> Payer | None:
    if not payer_id:
        return None
    payer = Payer.objects.filter(payer_id=payer_id).first()
    if payer is not None:
        return payer  # staff own payer names: a push never renames one
    try:
        with transaction.atomic():
            return Payer.objects.create(payer_id=payer_id, name=name or payer_id)
    except IntegrityError:
        return Payer.objects.get(payer_id=payer_id)


def coverage_current(client: Client) -> Coverage | None:
    """The client's current benefits: the coverage record written last."""
    return client.coverages.select_related("payer").order_by("-created_at", "-pk").first()


def coverage_put(*, push: Push, client_external_id: str, data: Mapping[str, Any],
                 partial: bool = False) -> Outcome[Coverage]:
    """Replace the client's current benefits (the latest coverage record; older ones are left as they are)."""
    with transaction.atomic():
        # Locking the client serialises two pushes of the same client's benefits.
        client = Client.objects.select_for_update().filter(
            source=push.source, external_id=client_external_id).first()
        if client is None:
            raise _no_client(client_external_id)
        coverage = coverage_current(client)
        if coverage is None and partial:
            raise NotFound(f"Client {client_external_id!r} has no coverage yet; PUT it first.")
        fields = dict(data)
        if "payer_id" in fields:
            name = fields.get("payer_name") or (coverage.payer_name if coverage else "")
            payer = _payer(fields.pop("payer_id"), name)
            fields["payer_id"] = payer.pk if payer else None  # the model's foreign key column
        if coverage is None:
            coverage = Coverage.objects.create(client=client, **fields)
            _reprice_client_sessions(push, client)
            return Outcome(CREATED, coverage)
        as_of = coverage.benefits_as_of
        changed = _assign(coverage, fields)
        if not changed:
            return Outcome(UNCHANGED, coverage)
        update = [*changed]
        if DEDUCTIBLE_FIELDS.intersection(changed):
            # New deductible figures are "as of now"; a change of, say, member id must not move this
            # moment, or deductible the portal charged since the last figures would be counted again.
            update.append("benefits_as_of")
        coverage.save(update_fields=update)
        if "benefits_as_of" not in update:
            coverage.benefits_as_of = as_of
        _reprice_client_sessions(push, client)
        return Outcome(UPDATED, coverage)


def policy_acknowledgment_record(*, push: Push, client_external_id: str,
                                 data: Mapping[str, Any]) -> Outcome[PolicyAcknowledgment]:
    """The first acknowledgment of a version stands; sending it again changes nothing."""
    client = push.client(client_external_id)
    if client is None:
        raise _no_client(client_external_id)
    existing = PolicyAcknowledgment.objects.filter(client=client, policy_version=data["policy_version"]).first()
    if existing is not None:
        return Outcome(UNCHANGED, existing)
    try:
        with transaction.atomic():
            ack = PolicyAcknowledgment.objects.create(
                client=client, policy_version=data["policy_version"], acknowledged_at=data["acknowledged_at"],
                source=push.actor[:50])
    except IntegrityError:
        return Outcome(UNCHANGED, PolicyAcknowledgment.objects.get(client=client,
                                                                   policy_version=data["policy_version"]))
    return Outcome(CREATED, ack)


# --- Appointments ----------------------------------------------------------------------------------------

APPOINTMENT_FIELDS = ("service_code", "diagnosis_codes", "starts_at", "duration_minutes", "note_signed_at",
                      "fee_cents")
PRICE_FIELDS = {"service_code", "fee_cents"}
# A new appointment in one of these statuses that has not reached the billing trigger has nothing to bill.
QUIET_STATUSES = (AppointmentStatus.SCHEDULED, AppointmentStatus.CANCELED)


def _references(push: Push, data: Mapping[str, Any]) -> tuple[Clinician | None, list[Client] | None]:
    errors: dict[str, list[str]] = {}
    clinician = None
    if "clinician" in data:
        clinician = push.clinician(data["clinician"])
        if clinician is None:
            errors["clinician"] = [f"No clinician with external id {data['clinician']!r} from this source; "
                                   "push the clinician first."]
    clients = None
    if "clients" in data:
        found = [(external_id, push.client(external_id)) for external_id in data["clients"]]
        missing = [external_id for external_id, client in found if client is None]
        if missing:
            errors["clients"] = [f"No client with external id {external_id!r} from this source; push the "
                                 "client first." for external_id in missing]
        clients = [client for _, client in found if client is not None]
    if errors:
        raise InvalidInput(errors)
    return clinician, clients


def _refuse_if_money_moved(appointment: Appointment, price_change: list[str], removed: set[int]) -> None:
    if not price_change and not removed:
        return
    for charge in Charge.objects.filter(appointment=appointment, status__in=MONEY_MOVED_STATUSES).select_related(
            "client").order_by("pk"):
        # A new fee or code re-prices the session charges; removing a client touches all of theirs.
        if (price_change and charge.kind in SESSION_KINDS) or charge.client_id in removed:
            what = " and ".join(price_change) if price_change else "clients"
            raise Conflict(
                f"The {charge.get_kind_display().lower()} of {format_cents(charge.amount_cents)} for client "
                f"{charge.client.external_id or charge.client_id!r} is already {charge.status}: money has moved, "
                f"so this session's {what} cannot be changed through the API. Record a refund or adjustment "
                "in the admin instead; the session was left as it was.")


def _appointment_fields(data: Mapping[str, Any], clinician: Clinician | None) -> dict[str, Any]:
    fields = {name: data[name] for name in APPOINTMENT_FIELDS if name in data}
    if clinician is not None:
        fields["clinician_id"] = clinician.pk
    return fields


def _differences(push: Push, appointment: Appointment, fields: Mapping[str, Any], clients: list[Client] | None,
                 status: str | None) -> tuple[list[str], list[int], set[int], bool]:
    """What a push would change: the fields, the clients added and removed, and whether the status moves."""
    current = push.participant_ids(appointment)
    wanted = {client.pk for client in clients} if clients is not None else current
    added = [client.pk for client in clients or [] if client.pk not in current]
    removed = current - wanted
    changed = [name for name, value in fields.items() if getattr(appointment, name) != value]
    moves = status is not None and status != appointment.status
    return changed, added, removed, moves


def _appointment_unchanged(push: Push, external_id: str, data: Mapping[str, Any]) -> bool:
    """Whether ``appointment_put`` would find nothing to do, told from the rows the batch looked up: a
    schedule pushed again is mostly such appointments, and each then needs no savepoint."""
    appointment = push.appointments.get(external_id)
    clinician = push.clinicians.get(data["clinician"])
    clients = [push.clients.get(client) for client in data["clients"]]
    if appointment is None or clinician is None or any(c is None for c in clients) or push.open_pricing is None:
        return False
    differences = _differences(push, appointment, _appointment_fields(data, clinician),
                               [c for c in clients if c is not None], data.get("status"))
    return not any(differences) and appointment.pk not in push.open_pricing


def appointment_put(*, push: Push, external_id: str, data: Mapping[str, Any],
                    partial: bool = False) -> Outcome[Appointment]:
    clinician, clients = _references(push, data)
    fields = _appointment_fields(data, clinician)
    status = data.get("status")
    with transaction.atomic():
        appointment = push.appointment_locked(external_id)
        if appointment is None:
            if partial:
                raise NotFound(f"No appointment with external id {external_id!r} from this source.")
            appointment, created = _create_or_lock(Appointment, source=push.source, external_id=external_id,
                                                   fields={**fields, "status": status})
            if created:
                _appointment_created(push, appointment, clients or [])
                return Outcome(CREATED, appointment)

        changed, added, removed, moves = _differences(push, appointment, fields, clients, status)
        if not changed and not added and not removed and not moves:
            if push.has_open_pricing_review(appointment):
                # Nothing new in the push, but the data it waited for may have arrived since.
                appointment_sync_charges(appointment=appointment, now=push.now, actor=push.actor)
            return Outcome(UNCHANGED, appointment)

        _refuse_if_money_moved(appointment, [name for name in changed if name in PRICE_FIELDS], removed)
        if changed:
            for name in changed:
                setattr(appointment, name, fields[name])
            appointment.save(update_fields=[*changed, "updated_at"])
        if removed:
            # One by one (not a bulk delete) so the audit trail records each participant removed.
            for participant in Participant.objects.filter(appointment=appointment, client_id__in=removed):
                participant.delete()
        for client_id in added:
            Participant.objects.create(appointment=appointment, client_id=client_id)
        push.participants[appointment.pk] = (push.participant_ids(appointment) - removed) | set(added)
        if moves:
            assert status is not None
            appointment_set_status(appointment=appointment, status=status, now=push.now, actor=push.actor,
                                   reason="pushed by the EHR")
        else:
            appointment_sync_charges(appointment=appointment, now=push.now, actor=push.actor)
        return Outcome(UPDATED, appointment)


def _appointment_created(push: Push, appointment: Appointment, clients: list[Client]) -> None:
    for client in clients:
        Participant.objects.create(appointment=appointment, client=client)
    push.appointments[appointment.external_id] = appointment
    push.participants[appointment.pk] = {client.pk for client in clients}
    appointment_event_record(appointment=appointment, from_status="", now=push.now, actor=push.actor,
                             reason="pushed by the EHR")
    # A new, merely scheduled session has no charge to follow yet: skipping the sync saves the bulk of
    # a schedule push's queries. Anything that could bill (or carry a fee) goes through billing.
    if appointment.status not in QUIET_STATUSES or session_is_billable(appointment, push.practice):
        appointment_sync_charges(appointment=appointment, now=push.now, actor=push.actor)


# --- Insurance payments ----------------------------------------------------------------------------------

INSURANCE_PAYMENT_FIELDS = ("payer_name", "allowed_cents", "paid_cents", "patient_responsibility_cents", "paid_on")


def insurance_payment_record(*, push: Push, data: Mapping[str, Any]) -> Outcome[InsurancePayment]:
    """One EOB line, recognised by (appointment, client, reference): a repeat changes nothing, a
    corrected line (same reference, other amounts) replaces the figures."""
    errors: dict[str, list[str]] = {}
    appointment = Appointment.objects.filter(source=push.source, external_id=data["appointment"]).first()
    if appointment is None:
        errors["appointment"] = [f"No appointment with external id {data['appointment']!r} from this source."]
    client = push.client(data["client"])
    if client is None:
        errors["client"] = [f"No client with external id {data['client']!r} from this source."]
    elif appointment is not None and not Participant.objects.filter(appointment=appointment,
                                                                    client=client).exists():
        errors["client"] = [f"Client {data['client']!r} did not attend appointment {data['appointment']!r}."]
    if errors:
        raise InvalidInput(errors)
    assert appointment is not None and client is not None
    # The admin records EOB lines through the same billing service (billing/services/insurance.py).
    from billing.services.insurance import InsurancePaymentInvalid
    from billing.services.insurance import insurance_payment_record as record

    try:
        recorded = record(appointment=appointment, client=client, reference=data["reference"], source=push.source,
                          now=push.now, **{name: data[name] for name in INSURANCE_PAYMENT_FIELDS})
    except InsurancePaymentInvalid as exc:
        raise InvalidInput(exc.errors) from None
    return Outcome(recorded.status, recorded.payment)


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
    push; consecutive ones are gathered and written together (see ``_QuietCreates``). Any other event
    first writes what is gathered, so every event still sees the ones before it, in order. An appointment
    sent again as it is stored is answered unchanged without a savepoint (``_appointment_unchanged``).
    Bodies are validated by ``BatchValidator``, which checks each distinct field value once per batch.
    """
    validators = {kind: BatchValidator(cls()) for kind, cls in EVENT_SERIALIZERS.items()}
    external_id_field = ExternalId()
    results: list[dict[str, Any]] = []
    with _collector_paused(), transaction.atomic(), Practice.pinned():  # the practice's policy read once
        room = _prefetch_batch(push, events)
        with _QuietCreates(push, room) as gathered:
            _events_apply(push, events, validators, external_id_field, results, gathered)
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
                  results: list[dict[str, Any]], gathered: _QuietCreates) -> None:
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
            if _appointment_unchanged(push, external_id, data):
                result["status"] = UNCHANGED
                continue
            if gathered.take(result, external_id, data):
                continue
        gathered.flush()
        _event_apply_one(push, result, kind, external_id, data)
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


_Gathered = tuple[dict[str, Any], str, dict[str, Any], Clinician, list[Client]]
# ^ the event's result, its external id, its validated data, and the rows it refers to
_CHUNK = 200  # new appointments sent at a time, while the batch reads on


@dataclass
class _QuietCreates:
    """New appointments that need no billing yet, written a few hundred at a time (``billing.bulk``).

    ``take`` accepts only an appointment the batch has not seen, whose clinician and clients are known,
    in a status that bills nothing (scheduled or canceled, and not at the practice's trigger): for those
    ``appointment_put`` would insert the row, its participants and its creation event, and nothing else.
    A chunk is three INSERTs (rows, participants, events) and one of audit entries, column by column,
    with no model instance per row.

    On PostgreSQL the chunks go through the connection's pipeline mode: each is sent and the batch goes
    on reading the next events while the database writes it. Their primary keys are reserved up front
    (``room``: as many as the batch's events could create; an id not used is a gap, as a rolled-back
    insert leaves), since nothing comes back until the pipeline is synchronised. ``flush`` synchronises,
    and runs before any other event (so every event sees the ones before it; it may query) and at the
    end of the batch. The chunks since the last ``flush`` share a savepoint: if one failed (a concurrent
    request created one of its appointments) they are rolled back and their events applied one by one.
    Other databases (the demo's SQLite) write each chunk at once. Written rows are left out of the batch's
    cache, so an event naming one again reads it back from the database.
    """

    push: Push
    room: tuple[int, int]  # how many appointments, and participants, the batch's events could create
    items: list[_Gathered] = field(default_factory=list)
    taken: set[str] = field(default_factory=set)
    sent: list[_Gathered] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    participant_ids: list[int] = field(default_factory=list)
    pipeline: ExitStack | None = None
    cursor: psycopg.Cursor[Any] | None = None
    savepoint: str = ""
    audit: BulkAudit | None = None

    def __enter__(self) -> _QuietCreates:
        return self

    def __exit__(self, failed: type[BaseException] | None, *exc: object) -> None:
        if failed is not None and self.pipeline is not None:
            with suppress(Exception):  # the batch's own error is the one to report; its transaction ends
                self.pipeline.close()

    def take(self, result: dict[str, Any], external_id: str, data: dict[str, Any]) -> bool:
        push = self.push
        if external_id in self.taken or data["status"] not in QUIET_STATUSES:
            return False
        if push.appointment_locked(external_id) is not None:
            return False
        clinician = push.clinician(data["clinician"])
        clients = [push.client(external_id) for external_id in data["clients"]]
        if clinician is None or any(client is None for client in clients):
            return False  # the one-by-one path reports which
        if status_is_billable(data["status"], data["note_signed_at"], push.practice):
            return False
        self.items.append((result, external_id, data, clinician, [c for c in clients if c is not None]))
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
        if connection.vendor != "postgresql":
            self._write_now(items)
            return
        participants = sum(len(clients) for *_, clients in items)
        if len(self.ids) < len(items) or len(self.participant_ids) < participants:
            self._sync()
            self._reserve(len(items), participants)
        if self.pipeline is None:
            self.audit = bulk_audit([Appointment, Participant])
            self.savepoint = transaction.savepoint()
            self.pipeline = ExitStack()
            self.pipeline.enter_context(self.audit.db.connection.pipeline())
            self.cursor = self.pipeline.enter_context(psycopg.Cursor(self.audit.db.connection))
            # Foreign keys checked as each INSERT ends, while the batch reads on, rather than all at COMMIT
            # (a quarter of a batch's time, with nothing else to do meanwhile). Every row here comes after
            # the rows it points to. Rolling back to the savepoint restores the deferred checks; ``_sync``
            # restores them otherwise (every deferrable constraint here is initially deferred).
            self.cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        ids, self.ids = self.ids[:len(items)], self.ids[len(items):]
        participant_ids, self.participant_ids = self.participant_ids[:participants], self.participant_ids[participants:]
        assert self.audit is not None and self.cursor is not None
        self.sent.extend(items)
        try:
            # A statement sent earlier that failed (a concurrent request's committed row) is reported by
            # whichever statement is sent after the database answered, not only at the sync.
            with connection.wrap_database_errors:
                _quiet_insert(self.push, items, self.audit, self.cursor, ids, participant_ids)
        except (IntegrityError, OperationalError):
            self._sync(failed=True)

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

    def _write_now(self, items: list[_Gathered]) -> None:
        savepoint = transaction.savepoint()
        try:
            _quiet_insert(self.push, items, bulk_audit([Appointment, Participant]))
        except (IntegrityError, OperationalError):
            self._one_by_one(savepoint, items)
            return
        transaction.savepoint_commit(savepoint)
        self._created(items)

    def _one_by_one(self, savepoint: str, items: list[_Gathered]) -> None:
        transaction.savepoint_rollback(savepoint)
        self.push.forget()
        for result, external_id, data, _, _ in items:
            _event_apply_one(self.push, result, "appointment", external_id, data)

    def _created(self, items: list[_Gathered]) -> None:
        for result, external_id, *_ in items:
            result["status"] = CREATED
            self.push.appointments.pop(external_id, None)


def _quiet_insert(push: Push, items: list[_Gathered], audit: BulkAudit, cursor: psycopg.Cursor[Any] | None = None,
                  ids: list[int] | None = None, participant_ids: list[int] | None = None) -> None:
    """The rows ``appointment_put`` would create (with ``save()``'s ``auto_now`` times), their
    participants, creation events and audit entries: sent on ``cursor`` (pipeline mode) with the
    reserved ``ids`` and ``participant_ids``, or else written at once."""
    db, n, now = audit.db, len(items), timezone.now()

    def insert(model: type[models.Model], columns: Mapping[str, Sequence[Any]], reserved: list[int] | None = None
               ) -> list[Any]:
        if cursor is None:
            return bulk_insert_values(model, columns, db)
        rows_send(model, columns if reserved is None else {"id": reserved, **columns}, db, cursor)
        return reserved or []

    rows: dict[str, list[Any]] = {
        "source": [push.source] * n, "external_id": [external_id for _, external_id, *_ in items],
        "created_at": [now] * n, "updated_at": [now] * n,
        "clinician_id": [clinician.pk for *_, clinician, _ in items],
        "status": [data["status"] for _, _, data, *_ in items],
        **{name: [data[name] for _, _, data, *_ in items] for name in APPOINTMENT_FIELDS}}
    ids = insert(Appointment, rows, ids)
    attending = [(appointment_id, client) for appointment_id, (*_, clients) in zip(ids, items, strict=True)
                 for client in clients]
    participants = {"appointment_id": [appointment_id for appointment_id, _ in attending],
                    "client_id": [client.pk for _, client in attending]}
    participant_ids = insert(Participant, participants, participant_ids)
    insert(AppointmentEvent, {  # as appointment_event_record writes them
        "appointment_id": ids, "from_status": [""] * n, "to_status": rows["status"], "at": [push.now] * n,
        "actor": [push.actor] * n, "user_id": [None] * n, "reason": ["pushed by the EHR"] * n})
    audit_bulk_created_columns(audit, Appointment, {"id": ids, **rows}, cursor)
    # The client itself, not only its id: a participant's entry shows the client's name.
    audit_bulk_created_columns(audit, Participant, {"id": participant_ids, **participants,
                                                    "client": [client for _, client in attending]}, cursor)


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
