"""A client's history as the client portal shows it: their sessions, and every charge, payment and refund on
their ledger, newest first.

Only what the client already reads on receipts and notices: dates (the practice's days), service names and
amounts. No diagnosis or CPT code, no clinician's notes, no staff memos.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from django.db.models import Sum

from billing.models import (
    PAID_STATUSES,
    Appointment,
    AppointmentStatus,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    Installment,
    LedgerEntry,
    LedgerKind,
    PaymentPlan,
    PlanStatus,
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
class InstallmentLine:
    number: int
    due_on: dt.date
    amount_cents: int  # what it takes (or took): the agreed amount, or less once the balance was paid another way
    state: str


@dataclass(frozen=True)
class PlanLine:
    status: str  # as the client reads it: "Current", "Lapsed"...
    total_cents: int
    paid_cents: int
    agreed_on: dt.date | None
    ended_reason: str
    installments: list[InstallmentLine]


@dataclass(frozen=True)
class ClientHistory:
    sessions: list[SessionLine]
    account: list[AccountLine]
    balance_cents: int
    plans: list[PlanLine] = field(default_factory=list)


PLAN_STATE: dict[str, str] = {
    PlanStatus.OFFERED: "Offered, waiting for your agreement",
    PlanStatus.CURRENT: "Current",
    PlanStatus.COMPLETED: "Completed",
    PlanStatus.LAPSED: "Lapsed",
    PlanStatus.CANCELED: "Canceled by the practice",
}
INSTALLMENT_STATE: dict[str, str] = {
    ChargeStatus.SCHEDULED: "To be charged",
    ChargeStatus.DUE: "To be charged",
    ChargeStatus.PROCESSING: "Being charged",
    ChargeStatus.REQUIRES_ACTION: "Waiting for your bank",
    ChargeStatus.CANCELED: "Not charged",
    ChargeStatus.SUCCEEDED: "Paid",
    ChargeStatus.REFUNDED: "Paid, then refunded",
    ChargeStatus.PARTIALLY_REFUNDED: "Paid, then partly refunded",
}


def installment_state(installment: Installment) -> str:
    """What became of an installment, as the client (and staff) read it."""
    charge = installment.charge
    if charge is None:
        return "Not agreed yet" if installment.plan.status == PlanStatus.OFFERED else "Not charged"
    if charge.status == ChargeStatus.FAILED:
        return "Declined: will be tried again" if charge.next_retry_at else "Declined"
    return INSTALLMENT_STATE.get(charge.status, charge.get_status_display())


def client_plans(client: Client, zone: dt.tzinfo) -> list[PlanLine]:
    """The client's payment plans, newest first (an offer the practice withdrew before they agreed is left out),
    in two queries."""
    plans = (PaymentPlan.objects.filter(client=client).exclude(status=PlanStatus.CANCELED, agreed_at__isnull=True)
             .prefetch_related("installments__charge").order_by("-offered_at", "-pk"))
    lines = []
    for plan in plans:
        installments = sorted(plan.installments.all(), key=lambda i: i.number)
        for installment in installments:
            installment.plan = plan
        lines.append(PlanLine(
            status=PLAN_STATE[plan.status], total_cents=plan.total_cents,
            paid_cents=sum(i.charge.amount_cents for i in installments
                           if i.charge is not None and i.charge.status in PAID_STATUSES),
            agreed_on=plan.agreed_at.astimezone(zone).date() if plan.agreed_at else None,
            ended_reason=plan.end_reason if plan.status == PlanStatus.LAPSED else "",
            installments=[InstallmentLine(i.number, i.due_on, i.charge.amount_cents if i.charge else i.amount_cents,
                                          installment_state(i)) for i in installments]))
    return lines


def client_history(client: Client, *, now: dt.datetime, practice: Practice | None = None) -> ClientHistory:
    """The client's sessions up to ``now``, their ledger and their payment plans, in seven queries whatever their
    length."""
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
    return ClientHistory(sessions, account, balance, client_plans(client, zone))


def _entry_label(entry: LedgerEntry, services: dict[str, str]) -> str:
    charge = entry.charge
    if charge is not None and charge.kind == ChargeKind.BALANCE_PAYMENT:
        return "Payment on the portal" if entry.kind == LedgerKind.PAYMENT else ENTRY_LABEL[entry.kind]
    if charge is not None and charge.kind == ChargeKind.INSTALLMENT:
        return "Payment plan installment" if entry.kind == LedgerKind.PAYMENT else ENTRY_LABEL[entry.kind]
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
