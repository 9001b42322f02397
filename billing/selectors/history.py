"""A client's history as the client portal shows it: their sessions, and every charge, payment and refund on
their ledger, newest first.

Only what the client already reads on receipts and notices: dates (the practice's days), service names and
amounts. No diagnosis or CPT code, no clinician's notes, no staff memos.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Sum

from billing.models import (
    PAID_STATUSES,
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    Practice,
    Service,
)

SESSIONS_SHOWN = 100
ENTRIES_SHOWN = 200

ATTENDANCE: dict[str, str] = {
    AppointmentStatus.SCHEDULED: "Scheduled",
    AppointmentStatus.COMPLETED: "Attended",
    AppointmentStatus.NO_SHOW: "Missed",
    AppointmentStatus.LATE_CANCEL: "Canceled late",
    AppointmentStatus.CANCELED: "Canceled",
}
CHARGE_STATE: dict[str, str] = {
    ChargeStatus.SCHEDULED: "To be charged",
    ChargeStatus.DUE: "To be charged",
    ChargeStatus.PROCESSING: "Being charged",
    ChargeStatus.SUCCEEDED: "Paid",
    ChargeStatus.FAILED: "Card declined",
    ChargeStatus.REQUIRES_ACTION: "Waiting for your bank",
    ChargeStatus.CANCELED: "Not charged",
    ChargeStatus.REFUNDED: "Refunded",
    ChargeStatus.PARTIALLY_REFUNDED: "Partly refunded",
}
ENTRY_LABEL: dict[str, str] = {
    LedgerKind.SESSION_CHARGE: "Session",
    LedgerKind.FEE: "Fee",
    LedgerKind.PAYMENT: "Card payment",
    LedgerKind.REFUND: "Refunded to your card",
    LedgerKind.ADJUSTMENT: "Adjustment",
    LedgerKind.WRITE_OFF: "No longer owed",
    LedgerKind.WAIVER: "Fee waived",
    LedgerKind.CHARGE_CANCELED: "Charge canceled",
}


@dataclass(frozen=True)
class SessionLine:
    starts_at: dt.datetime  # in the practice's zone
    service: str
    attendance: str
    amount_cents: int | None  # what the client was charged for it (with any fee), None if nothing
    charge_state: str


@dataclass(frozen=True)
class AccountLine:
    date: dt.date  # the practice's day: the date of service for charges, the day taken for payments
    what: str
    amount_cents: int  # positive: owed; negative: paid or credited
    receipt_charge_id: int | None  # a payment's receipt to download


@dataclass(frozen=True)
class ClientHistory:
    sessions: list[SessionLine]
    account: list[AccountLine]
    balance_cents: int


def client_history(client: Client, *, now: dt.datetime, practice: Practice | None = None) -> ClientHistory:
    """The client's sessions up to ``now`` and their ledger, in five queries whatever their length."""
    zone = (practice or Practice.load()).zone
    appointments = list(Appointment.objects.filter(participants__client=client, starts_at__lte=now)
                        .order_by("-starts_at", "-pk")[:SESSIONS_SHOWN])
    entries = list(LedgerEntry.objects.filter(client=client).select_related("charge__appointment")
                   .order_by("-created_at", "-pk")[:ENTRIES_SHOWN])
    codes = {a.service_code for a in appointments} | {
        e.charge.appointment.service_code for e in entries if e.charge and e.charge.appointment}
    services = dict(Service.objects.filter(cpt_code__in=codes).values_list("cpt_code", "description"))
    charges: dict[int, list[Charge]] = {}
    for charge in Charge.objects.filter(client=client, appointment__in=appointments).order_by("pk"):
        charges.setdefault(charge.appointment_id or 0, []).append(charge)

    sessions = []
    for appointment in appointments:
        billed = [c for c in charges.get(appointment.pk, []) if c.status != ChargeStatus.CANCELED]
        sessions.append(SessionLine(
            starts_at=appointment.starts_at.astimezone(zone),
            service=services.get(appointment.service_code, "Therapy session"),
            attendance=ATTENDANCE.get(appointment.status, appointment.get_status_display()),
            amount_cents=sum(c.amount_cents + c.prepaid_cents for c in billed) if billed else None,
            charge_state=", ".join(sorted({CHARGE_STATE[c.status] for c in billed}))))

    account = [AccountLine(entry.occurred_on, _entry_label(entry, services), entry.amount_cents,
                           _receipt_id(entry)) for entry in entries]
    balance = LedgerEntry.objects.filter(client=client).aggregate(total=Sum("amount_cents"))["total"] or 0
    return ClientHistory(sessions, account, balance)


def _entry_label(entry: LedgerEntry, services: dict[str, str]) -> str:
    charge = entry.charge
    if charge is not None and charge.kind == ChargeKind.BALANCE_PAYMENT:
        return "Payment on the portal" if entry.kind == LedgerKind.PAYMENT else ENTRY_LABEL[entry.kind]
    label = ENTRY_LABEL.get(entry.kind, entry.get_kind_display())
    if charge is not None and charge.kind in (ChargeKind.NO_SHOW_FEE, ChargeKind.LATE_CANCEL_FEE):
        label = charge.get_kind_display() if entry.kind == LedgerKind.FEE else f"{label}: {charge.get_kind_display()}"
    elif charge is not None and charge.appointment is not None:
        label = f"{label}: {services.get(charge.appointment.service_code, 'Therapy session')}"
    return label


def _receipt_id(entry: LedgerEntry) -> int | None:
    """A card payment links to its charge's receipt while the charge stays paid (refunded ones included)."""
    if entry.kind == LedgerKind.PAYMENT and entry.charge is not None and entry.charge.status in PAID_STATUSES:
        return entry.charge_id
    return None
