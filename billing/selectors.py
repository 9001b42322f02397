"""Reads shared by the API, the admin and reports: balances and AR aging, derived from the ledger in SQL.

A balance is the sum of a client's ledger entries. Aging groups the same sum by how old each entry's
``occurred_on`` is (the date of service for charges): ``current`` is 0-30 days (and anything dated in the
future), then 31-60, 61-90 and over 90 days.

Entries are netted inside their own bucket first, so a payment posted against a session's charge (dated
like the charge) clears that session where it sits. A credit left over in a bucket (a balance payment, a
write-off dated today) then pays off the oldest debt first, as AR aging conventionally applies
unallocated credits; a client in credit overall shows the credit as ``current``. The buckets always add
up to the balance.

Reading many clients never costs a query per client: ``clients_with_balance`` annotates a queryset,
``client_balances`` and ``clients_aging`` answer for a list of ids in one query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import IntegerField, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from billing.models import (
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    ChargeTrigger,
    Client,
    FeeScheduleEntry,
    InsurancePayment,
    LedgerEntry,
    Participant,
    Practice,
)
from billing.services.schedule import NOT_BILLED

BUCKETS = ("current", "days_31_60", "days_61_90", "days_over_90")


@dataclass(frozen=True)
class Aging:
    """A balance split by age, in cents. ``current`` is 0-30 days."""

    current: int = 0
    days_31_60: int = 0
    days_61_90: int = 0
    days_over_90: int = 0

    @property
    def total(self) -> int:
        return self.current + self.days_31_60 + self.days_61_90 + self.days_over_90

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in BUCKETS}

    def __add__(self, other: Aging) -> Aging:
        return Aging(*(getattr(self, name) + getattr(other, name) for name in BUCKETS))


def client_balance(client: Client | int) -> int:
    """What ``client`` owes now, in cents (negative: the client is in credit)."""
    client_id = client if isinstance(client, int) else client.pk
    total = LedgerEntry.objects.filter(client_id=client_id).aggregate(t=Sum("amount_cents"))["t"]
    return int(total or 0)


def client_balances(client_ids: Iterable[int]) -> dict[int, int]:
    """Balances for many clients in one query; a client with no entries owes 0."""
    ids = list(client_ids)
    balances = dict.fromkeys(ids, 0)
    rows = (LedgerEntry.objects.filter(client_id__in=ids).values("client_id")
            .annotate(total=Sum("amount_cents")).values_list("client_id", "total"))
    for client_id, total in rows:
        balances[client_id] = int(total or 0)
    return balances


def clients_with_balance(queryset: QuerySet[Client]) -> QuerySet[Client]:
    """``queryset`` with ``balance_cents`` on every row, computed by the database in the same query."""
    owed = (LedgerEntry.objects.filter(client_id=OuterRef("pk")).order_by().values("client_id")
            .annotate(total=Sum("amount_cents")).values("total"))
    return queryset.annotate(balance_cents=Coalesce(Subquery(owed, output_field=IntegerField()), Value(0)))


def _bucket_sums(today: dt.date) -> dict[str, Sum]:
    # occurred_on > today - 31 days means 0-30 days old (future dates count as current).
    d30, d60, d90 = (today - dt.timedelta(days=n) for n in (30, 60, 90))
    return {
        "current": Sum("amount_cents", filter=Q(occurred_on__gte=d30), default=0),
        "days_31_60": Sum("amount_cents", filter=Q(occurred_on__lt=d30, occurred_on__gte=d60), default=0),
        "days_61_90": Sum("amount_cents", filter=Q(occurred_on__lt=d60, occurred_on__gte=d90), default=0),
        "days_over_90": Sum("amount_cents", filter=Q(occurred_on__lt=d90), default=0),
    }


def _settle_credits(netted: Mapping[str, Any]) -> Aging:
    """Apply credit left in any bucket to the oldest debt first; what remains is a current credit."""
    credit = -sum(amount for amount in netted.values() if amount < 0)
    owed = {name: max(int(netted.get(name) or 0), 0) for name in BUCKETS}
    for name in reversed(BUCKETS):  # oldest first
        paid = min(owed[name], credit)
        owed[name] -= paid
        credit -= paid
    owed["current"] -= credit
    return Aging(**owed)


def client_aging(client: Client | int, today: dt.date) -> Aging:
    """``client``'s balance by age as of ``today`` (the practice's local date)."""
    client_id = client if isinstance(client, int) else client.pk
    netted = LedgerEntry.objects.filter(client_id=client_id).aggregate(**_bucket_sums(today))
    return _settle_credits(netted)


def clients_aging(client_ids: Iterable[int] | None, today: dt.date) -> dict[int, Aging]:
    """Aging for many clients (or every client with ledger entries, for ``None``) in one query."""
    entries = LedgerEntry.objects.all()
    if client_ids is not None:
        entries = entries.filter(client_id__in=list(client_ids))
    rows: Iterable[Mapping[str, Any]] = entries.values("client_id").annotate(**_bucket_sums(today)).order_by()
    return {row["client_id"]: _settle_credits(row) for row in rows}


def ar_aging(today: dt.date) -> Aging:
    """The practice's accounts receivable by age: each client's aging, added up.

    Clients are settled one by one (a client's credit never hides another client's debt), so this
    reads one row per client with a ledger; the bucketing itself is done in SQL.
    """
    total = Aging()
    for aging in clients_aging(None, today).values():
        total = total + aging
    return total


# --- Weekly reconciliation (PRODUCT.md workflow 10) ------------------------------------------------------
# A first version answered from a few queries; the reports work refines the rules and adds the admin page.

FINDING_KINDS = ("unpaid_session", "amount_mismatch", "insurance_underpayment", "unmatched_payment")
# A charge in one of these is on its way to being paid (or was paid): its session is not "unpaid".
_COLLECTING = (ChargeStatus.SCHEDULED, ChargeStatus.DUE, ChargeStatus.PROCESSING, ChargeStatus.SUCCEEDED,
               ChargeStatus.PARTIALLY_REFUNDED, ChargeStatus.REFUNDED)
_PAID = (ChargeStatus.SUCCEEDED, ChargeStatus.PARTIALLY_REFUNDED)
_SESSION_KINDS = (ChargeKind.COPAY, ChargeKind.SESSION_FEE)


@dataclass(frozen=True)
class Finding:
    kind: str
    client: Client
    appointment: Appointment | None
    charge: Charge | None
    service_date: dt.date | None
    expected_cents: int | None
    actual_cents: int | None
    detail: str


def iso_week_bounds(week: str, zone: dt.tzinfo) -> tuple[dt.datetime, dt.datetime]:
    """``2026-W48`` -> Monday 00:00 to the next Monday 00:00 in ``zone``. Raises ValueError if malformed."""
    monday = dt.datetime.strptime(week + "-1", "%G-W%V-%u").date()
    start = dt.datetime.combine(monday, dt.time(0), tzinfo=zone)
    return start, dt.datetime.combine(monday + dt.timedelta(days=7), dt.time(0), tzinfo=zone)


def _billable(practice: Practice) -> Q:
    if practice.charge_trigger == ChargeTrigger.NOTE_SIGNED:
        return Q(note_signed_at__isnull=False) & ~Q(status__in=NOT_BILLED)
    return Q(status=AppointmentStatus.COMPLETED)


def reconciliation_findings(*, start: dt.datetime, end: dt.datetime, source: str | None = None) -> list[Finding]:
    """What does not add up for sessions held, and EOBs paid, between ``start`` and ``end``.

    - unpaid_session: a billable session whose participant has no charge on its way to being paid;
    - amount_mismatch: an EOB's patient responsibility differs from what the client was charged;
    - insurance_underpayment: the payer paid less than its fee schedule allows, less the client's share;
    - unmatched_payment: a paid session charge whose session is no longer billable.
    ``source`` limits the report to one EHR's records.
    """
    practice = Practice.load()
    zone = practice.zone
    findings: list[Finding] = []

    appointments = Appointment.objects.filter(starts_at__gte=start, starts_at__lt=end)
    if source is not None:
        appointments = appointments.filter(source=source)
    billable_ids = set(appointments.filter(_billable(practice)).values_list("pk", flat=True))
    participants = (Participant.objects.filter(appointment_id__in=billable_ids)
                    .select_related("appointment", "client").order_by("appointment__starts_at", "pk"))
    charges: dict[tuple[int, int], Charge] = {
        (c.appointment_id, c.client_id): c for c in Charge.objects.filter(
            appointment__in=appointments, kind__in=_SESSION_KINDS).select_related("appointment", "client")
        if c.appointment_id is not None}
    for p in participants:
        charge = charges.get((p.appointment_id, p.client_id))
        if charge is not None and charge.status in _COLLECTING:
            continue
        findings.append(Finding(
            kind="unpaid_session", client=p.client, appointment=p.appointment, charge=charge,
            service_date=p.appointment.starts_at.astimezone(zone).date(),
            expected_cents=charge.amount_cents if charge is not None else None, actual_cents=0,
            detail=(f"The charge is {charge.get_status_display().lower()}." if charge is not None
                    else "No charge was made for this session.")))

    for charge in sorted(charges.values(), key=lambda c: c.pk):
        appointment = charge.appointment
        if appointment is None:
            continue
        if charge.status in _PAID and appointment.pk not in billable_ids:
            findings.append(Finding(
                kind="unmatched_payment", client=charge.client, appointment=appointment, charge=charge,
                service_date=appointment.starts_at.astimezone(zone).date(), expected_cents=0,
                actual_cents=charge.amount_cents - charge.refunded_cents,
                detail=f"Paid, but the session is {appointment.get_status_display().lower()}."))

    allowed = {(payer_name.lower(), cpt): cents for payer_name, cpt, cents in FeeScheduleEntry.objects.values_list(
        "payer__name", "service__cpt_code", "allowed_cents")}
    eobs = InsurancePayment.objects.filter(paid_on__gte=start.date(), paid_on__lt=end.date())
    if source is not None:
        eobs = eobs.filter(source=source)
    eob_charges = {(c.appointment_id, c.client_id): c for c in Charge.objects.filter(
        appointment__in=eobs.values("appointment"), kind__in=_SESSION_KINDS)}
    for eob in eobs.select_related("appointment", "client").order_by("paid_on", "pk"):
        charge = eob_charges.get((eob.appointment_id, eob.client_id))
        day = eob.appointment.starts_at.astimezone(zone).date()
        charged = charge.amount_cents if charge is not None and charge.status != ChargeStatus.CANCELED else 0
        if charged != eob.patient_responsibility_cents:
            findings.append(Finding(
                kind="amount_mismatch", client=eob.client, appointment=eob.appointment, charge=charge,
                service_date=day, expected_cents=eob.patient_responsibility_cents, actual_cents=charged,
                detail=f"The EOB ({eob.reference}) says the client owes a different amount than was charged."))
        schedule = allowed.get((eob.payer_name.lower(), eob.appointment.service_code))
        if schedule is not None:
            expected = max(schedule - eob.patient_responsibility_cents, 0)
            if eob.paid_cents < expected:
                findings.append(Finding(
                    kind="insurance_underpayment", client=eob.client, appointment=eob.appointment,
                    charge=charge, service_date=day, expected_cents=expected, actual_cents=eob.paid_cents,
                    detail=f"{eob.payer_name} paid less than its fee schedule allows ({eob.reference})."))
    return findings
