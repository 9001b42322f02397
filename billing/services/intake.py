"""Record intake: clients, clinicians, coverage, appointments and EOB lines as a source pushes them.

Every way records come in (the REST API, its events batch, the CSV import) applies them here, so the
money rules (``_refuse_if_money_moved``, what counts as a change) are the same whichever way a record came.
Each call applies one pushed record, idempotently, and lets billing follow.

Every function takes the ``Push`` (who pushes, when, and what it has already looked up) and the
validated data; it compares before it saves, so a body identical to what is stored writes nothing
(no save, hence no audit entry and no billing event). ``partial`` applies only the fields given (PATCH);
otherwise the data is the whole record (PUT) and a missing record is created.

Appointment changes go through billing's own services: a status move through ``appointment_set_status``
(which records it), any other change through ``appointment_sync_charges``, exactly as the admin does.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import psycopg
from django.db import (
    IntegrityError,
    models,
    transaction,
)
from django.db.models import F
from django.utils import timezone

from billing.audit.bulk import BulkAudit, audit_bulk_created_columns
from billing.bulk import AnyOf, bulk_insert_values, ids_reserve, rows_send
from billing.errors import Conflict, InvalidInput, NotFound
from billing.models import (
    MONEY_MOVED_STATUSES,
    OPEN_STATUSES,
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
from billing.services.insurance import InsurancePaymentInvalid
from billing.services.insurance import insurance_payment_record as record
from billing.services.schedule import (
    SESSION_KINDS,
    appointment_event_record,
    appointment_set_status,
    appointment_sync_charges,
    new_session_charges_write,
    new_sessions_price,
    session_is_billable,
)

log = logging.getLogger(__name__)

CREATED, UPDATED, UNCHANGED, ERROR = "created", "updated", "unchanged", "error"
M = TypeVar("M", bound=models.Model)


@dataclass(frozen=True)
class Outcome(Generic[M]):
    status: str
    obj: M


PREFETCHED_CLIENT_FIELDS = ("id", "source", "external_id", "first_name", "last_name", "billing_type",
                            "session_rate_cents")


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

        Clients are loaded with the fields the events use (the id, the name that audit entries show for
        a participant, and the billing terms a completed session is priced by): a client row has some
        forty columns, and reading them all for 1,000 clients cost more than the query. Any other field
        is read from the database if ever asked for.

        Each query also says ``external_id <> ''`` (true of every id looked up): the unique index on
        (source, external id) leaves out blank ids, and PostgreSQL cannot tell by itself that a list of
        more than 100 ids does too, so it would scan the whole table (173 ms for 1,000 ids among a
        million rows, against 2 ms through the index).
        """
        self.clients.update(dict.fromkeys(clients))
        self.clients.update({c.external_id: c for c in Client.objects.filter(
            AnyOf(F("external_id"), self.clients), source=self.source).exclude(external_id="").only(
            *PREFETCHED_CLIENT_FIELDS)})
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
    pending = set(Charge.objects.filter(client=client, kind__in=SESSION_KINDS, status__in=OPEN_STATUSES,
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
                      "fee_cents", "place_of_service")
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
                f"{charge.client.external_id or charge.client_id!r} is already {charge.status_phrase}: money has "
                f"moved, so this session's {what} cannot be changed through the API. Record a refund or adjustment "
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


def appointment_unchanged(push: Push, external_id: str, data: Mapping[str, Any]) -> bool:
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

    try:
        recorded = record(appointment=appointment, client=client, reference=data["reference"], source=push.source,
                          now=push.now, **{name: data[name] for name in INSURANCE_PAYMENT_FIELDS})
    except InsurancePaymentInvalid as exc:
        raise InvalidInput(exc.errors) from None
    return Outcome(recorded.status, recorded.payment)


# --- New appointments written in bulk (the events batch's fast path) -------------------------------------

Gathered = tuple[dict[str, Any], str, dict[str, Any], Clinician, list[Client]]
# ^ the event's result, its external id, its validated data, and the rows it refers to


def appointments_insert_quiet(push: Push, items: list[Gathered], audit: BulkAudit,
                              cursor: psycopg.Cursor[Any] | None = None,
                  ids: list[int] | None = None, participant_ids: list[int] | None = None) -> list[int]:
    """The rows ``appointment_put`` would create (with ``save()``'s ``auto_now`` times), their
    participants, creation events and audit entries: sent on ``cursor`` (pipeline mode) with the
    reserved ``ids`` and ``participant_ids``, or else written at once. Returns the appointments' ids."""
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
    return ids


def appointments_insert_billed(push: Push, items: list[Gathered], audit: BulkAudit,
                               pipeline: Callable[[], psycopg.Cursor[Any]]) -> None:
    """New appointments already at the billing trigger (a completed session, under the "completed"
    trigger): the rows ``appointments_insert_quiet`` writes, and what ``appointment_put``'s sync bills
    for them (``new_sessions_price``: charges, their events, ledger lines, review items, audit entries),
    in a few statements for the lot rather than some thirty queries each. The caller checked each one is
    new and ``status_is_billable``. ``audit`` names Appointment, Participant and Charge.

    The reads and decisions come first (the clients, the pricing look-ups, the primary keys reserved),
    then every row is sent on the cursor in pipeline mode ``pipeline`` returns, not waited for."""
    # The batch's clients as it read them (``PREFETCHED_CLIENT_FIELDS``, with what pricing reads): a
    # decision reading another field has it read then, as it would one by one.
    ids = ids_reserve(Appointment, len(items), audit.db)
    participant_ids = ids_reserve(Participant, sum(len(attending) for *_, attending in items), audit.db)
    sessions = []
    for appointment_id, (_, external_id, data, clinician, attending) in zip(ids, items, strict=True):
        appointment = Appointment(pk=appointment_id, source=push.source, external_id=external_id,
                                  clinician=clinician, status=data["status"],
                                  **{name: data[name] for name in APPOINTMENT_FIELDS})
        appointment._state.adding = False
        sessions.append((appointment, attending))
    billing = new_sessions_price(sessions=sessions, practice=push.practice, now=push.now, actor=push.actor)
    charge_ids = ids_reserve(Charge, len(billing.charges), audit.db) if billing.charges else []
    cursor = pipeline()
    appointments_insert_quiet(push, items, audit, cursor, ids, participant_ids)
    new_session_charges_write(billing, now=push.now, audit=audit, cursor=cursor, charge_ids=charge_ids)
