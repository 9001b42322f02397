"""What the client owes for a session: one computation, with the reasons written down as lines.

Per participant (docs/product.md, workflow 3):
- Self-pay: the full fee (the appointment's fee override, else the practice's fee for the CPT code);
  a self-pay client's own session rate replaces it for individual sessions.
- Sliding scale: the negotiated rate, never more than the full fee.
- Insurance, in this order:
  1. a fixed amount for the plan's category (CategoryRate), when the practice set one;
  2. a copay, never more than the payer's allowed amount when the fee schedule knows it;
  3. the payer's allowed amount for the CPT code split as deductible remaining, then coinsurance.
Benefits that are missing or contradict each other are not guessed at: ``NeedsReview`` says why.
Rounding to the cent is ``billing.money.percent_of``'s rule.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal

from django.db.models import Sum

from billing.models import (
    Appointment,
    BillingType,
    CategoryRate,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    Coverage,
    FeeScheduleEntry,
    Practice,
    Service,
)
from billing.money import format_cents, percent_of


@dataclass
class PricingLookups:
    """What pricing reads, loaded once for many sessions (reconciliation prices a whole week in a few
    queries). Only used inside ``pricing_preloaded``; the rules themselves do not change."""

    services: dict[str, Service]
    category_rates: dict[str, CategoryRate]
    allowed: dict[tuple[int, int], FeeScheduleEntry]
    coverages: dict[int, list[Coverage]]
    participant_counts: dict[int, int]
    # (client_id, charge id, created_at, deductible_applied_cents) of the clients' non-canceled charges.
    deductible_charges: dict[int, list[tuple[int, dt.datetime, int]]]
    zone: zoneinfo.ZoneInfo  # the practice's: the day a session is on


_lookups: ContextVar[PricingLookups | None] = ContextVar("pricing_lookups", default=None)


@contextmanager
def pricing_preloaded(lookups: PricingLookups) -> Iterator[None]:
    token = _lookups.set(lookups)
    try:
        yield
    finally:
        _lookups.reset(token)


def pricing_lookups(*, client_ids: set[int], participant_counts: dict[int, int],
                    zone: zoneinfo.ZoneInfo) -> PricingLookups:
    """Everything ``share_compute`` reads for these clients' sessions, in five queries whatever their
    number; ``participant_counts``: how many attend each session (by appointment id)."""
    services = {s.cpt_code: s for s in Service.objects.all()}
    coverages: dict[int, list[Coverage]] = defaultdict(list)
    for coverage in Coverage.objects.filter(client_id__in=client_ids).select_related("payer"):
        coverages[coverage.client_id].append(coverage)
    deductible: dict[int, list[tuple[int, dt.datetime, int]]] = defaultdict(list)
    # Only clients with a deductible have charges that count toward one.
    with_deductible = {cid for cid, items in coverages.items() if any(c.deductible_cents for c in items)}
    if with_deductible:
        for client_id, pk, created_at, cents in (
                Charge.objects.filter(client_id__in=with_deductible, deductible_applied_cents__gt=0)
                .exclude(status=ChargeStatus.CANCELED)
                .values_list("client_id", "pk", "created_at", "deductible_applied_cents")):
            deductible[client_id].append((pk, created_at, cents))
    return PricingLookups(
        services=services,
        category_rates={r.plan_category: r for r in CategoryRate.objects.all()},
        allowed={(e.payer_id, e.service_id): e for e in FeeScheduleEntry.objects.all()},
        coverages={cid: coverages.get(cid, []) for cid in client_ids},
        participant_counts=participant_counts, deductible_charges=dict(deductible), zone=zone)


class NeedsReview(Exception):
    """The amount cannot be worked out without a person; the message says what is missing."""


@dataclass(frozen=True)
class Line:
    label: str
    amount_cents: int

    def as_dict(self) -> dict[str, object]:
        return {"label": self.label, "amount_cents": self.amount_cents}


@dataclass(frozen=True)
class Share:
    """A participant's share of a session: the amount, the insurer's expected part, and why."""

    kind: str
    amount_cents: int
    insurance_cents: int = 0
    lines: list[Line] = field(default_factory=list)
    deductible_applied_cents: int = 0

    def breakdown(self) -> list[dict[str, object]]:
        return [line.as_dict() for line in self.lines]


def _full_fee(appointment: Appointment, service: Service | None) -> int:
    if appointment.fee_cents is not None:
        return appointment.fee_cents
    if service is None:
        raise NeedsReview(f"No practice fee is set for CPT {appointment.service_code}; add it under Services "
                          "or send the session's fee.")
    return service.fee_cents


def _is_group(appointment: Appointment, service: Service | None) -> bool:
    if service is not None and service.is_group:
        return True
    lookups = _lookups.get()
    if lookups is not None:
        return lookups.participant_counts.get(appointment.pk, 0) > 1
    return appointment.participants.count() > 1


def coverage_in_force(client: Client, day: dt.date) -> Coverage:
    lookups = _lookups.get()
    known = lookups.coverages.get(client.pk, []) if lookups is not None else None
    if known is None:
        known = list(client.coverages.select_related("payer").all())
    coverages = [c for c in known if c.in_force_on(day)]
    if not coverages:
        raise NeedsReview(f"No insurance coverage is in force on {day:%Y-%m-%d}.")
    if len(coverages) > 1:
        raise NeedsReview(f"{len(coverages)} coverage records are in force on {day:%Y-%m-%d}; keep one.")
    return coverages[0]


def _check_benefits(coverage: Coverage) -> None:
    if coverage.effective_from and coverage.effective_to and coverage.effective_to < coverage.effective_from:
        raise NeedsReview("Coverage ends before it starts.")
    if (coverage.deductible_met_cents or 0) > (coverage.deductible_cents or 0) and coverage.deductible_cents:
        raise NeedsReview("Deductible met is more than the deductible.")
    if coverage.deductible_met_cents and coverage.deductible_cents is None:
        raise NeedsReview("Deductible met is given but the deductible is not.")


def deductible_remaining(coverage: Coverage, *, excluding: Charge | None = None) -> int:
    """The deductible still to meet: the EHR's figure less what the portal charged toward it since."""
    if not coverage.deductible_cents:
        return 0
    reported = coverage.deductible_cents - (coverage.deductible_met_cents or 0)
    lookups = _lookups.get()
    if lookups is not None:
        applied_since = sum(cents for pk, created_at, cents in lookups.deductible_charges.get(coverage.client_id, [])
                            if created_at > coverage.benefits_as_of and not (excluding and pk == excluding.pk))
        return max(reported - applied_since, 0)
    charged_since = Charge.objects.filter(
        client_id=coverage.client_id, created_at__gt=coverage.benefits_as_of,
    ).exclude(status=ChargeStatus.CANCELED)
    if excluding is not None and excluding.pk:
        charged_since = charged_since.exclude(pk=excluding.pk)
    applied = charged_since.aggregate(total=Sum("deductible_applied_cents"))["total"] or 0
    return max(reported - applied, 0)


def _service_day(appointment: Appointment) -> dt.date:
    """The day the session is on for the practice: 8:30 PM in Los Angeles is already the next day in UTC."""
    lookups = _lookups.get()
    zone = lookups.zone if lookups is not None else Practice.load().zone
    return appointment.starts_at.astimezone(zone).date()


def _insurance_share(appointment: Appointment, client: Client, service: Service | None,
                     existing: Charge | None) -> Share:
    day = _service_day(appointment)
    coverage = coverage_in_force(client, day)
    _check_benefits(coverage)
    payer_label = coverage.payer_name or (coverage.payer.name if coverage.payer else "insurance")

    if coverage.plan_category:
        lookups = _lookups.get()
        rate = (lookups.category_rates.get(coverage.plan_category) if lookups is not None
                else CategoryRate.objects.filter(plan_category=coverage.plan_category).first())
        if rate is not None:
            return Share(kind=ChargeKind.COPAY, amount_cents=rate.amount_cents, lines=[
                Line(f"Fixed amount for {coverage.plan_category} plans", rate.amount_cents),
                Line("You owe", rate.amount_cents)])

    allowed = None
    if coverage.payer is not None and service is not None:
        lookups = _lookups.get()
        entry = (lookups.allowed.get((coverage.payer.pk, service.pk)) if lookups is not None
                 else FeeScheduleEntry.objects.filter(payer=coverage.payer, service=service).first())
        if entry is not None:
            allowed = min(entry.allowed_cents, _full_fee(appointment, service))

    has_copay = coverage.copay_cents is not None
    has_coinsurance = coverage.coinsurance_percent is not None
    if has_copay and has_coinsurance and coverage.copay_cents and coverage.coinsurance_percent:
        raise NeedsReview("Benefits give both a copay and a coinsurance; say which applies to this service.")

    if has_copay and not (has_coinsurance and coverage.coinsurance_percent):
        copay = coverage.copay_cents or 0
        lines = [Line(f"Copay ({payer_label})", copay)]
        owed = copay
        if allowed is not None and copay > allowed:
            owed = allowed
            lines.append(Line(f"Limited to the amount {payer_label} allows for this service", allowed - copay))
        lines.append(Line("You owe", owed))
        insurance = max((allowed or 0) - owed, 0)
        return Share(kind=ChargeKind.COPAY, amount_cents=owed, insurance_cents=insurance, lines=lines)

    if not has_coinsurance:
        raise NeedsReview("Benefits give no copay, coinsurance or plan category.")
    if allowed is None:
        raise NeedsReview(f"The fee schedule has no allowed amount for CPT {appointment.service_code} "
                          f"with {payer_label}.")

    remaining = deductible_remaining(coverage, excluding=existing)
    to_deductible = min(allowed, remaining)
    percent = Decimal(coverage.coinsurance_percent or 0)
    coinsurance = percent_of(allowed - to_deductible, percent)
    owed = to_deductible + coinsurance
    lines = [Line(f"Amount {payer_label} allows for this service", allowed)]
    if coverage.deductible_cents:
        lines.append(Line(f"Toward your deductible ({format_cents(remaining)} left before this session)",
                          to_deductible))
    lines.append(Line(f"Your coinsurance: {percent.normalize():f}% of {format_cents(allowed - to_deductible)}",
                      coinsurance))
    lines.append(Line("You owe", owed))
    return Share(kind=ChargeKind.COPAY, amount_cents=owed, insurance_cents=allowed - owed, lines=lines,
                 deductible_applied_cents=to_deductible)


def share_compute(*, appointment: Appointment, client: Client, existing: Charge | None = None) -> Share:
    """What ``client`` owes for ``appointment``. Raises NeedsReview rather than guess."""
    lookups = _lookups.get()
    service = (lookups.services.get(appointment.service_code) if lookups is not None
               else Service.objects.filter(cpt_code=appointment.service_code).first())
    if client.billing_type == BillingType.INSURANCE:
        return _insurance_share(appointment, client, service, existing)

    full_fee = _full_fee(appointment, service)
    description = service.description if service else f"CPT {appointment.service_code}"
    if client.billing_type == BillingType.SLIDING_SCALE:
        if client.session_rate_cents is None:
            raise NeedsReview("Sliding-scale client has no negotiated rate.")
        owed = min(client.session_rate_cents, full_fee)
        return Share(kind=ChargeKind.SESSION_FEE, amount_cents=owed, lines=[
            Line(f"Full fee: {description}", full_fee),
            Line("Sliding-scale reduction", owed - full_fee),
            Line("You owe", owed)])

    if (client.session_rate_cents is not None and appointment.fee_cents is None
            and not _is_group(appointment, service)):
        owed = client.session_rate_cents
        label = f"Your session rate: {description}"
    else:
        owed = full_fee
        label = f"Session fee: {description}"
    return Share(kind=ChargeKind.SESSION_FEE, amount_cents=owed, lines=[Line(label, owed), Line("You owe", owed)])
