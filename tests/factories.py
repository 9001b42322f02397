"""factory_boy factories for the billing models: valid, plain rows that tests adjust per case.

Call ``XFactory.create(...)`` (typed: returns the model) or ``XFactory(...)`` (the same, untyped).

Defaults describe the common case (a self-pay client, a 60-minute psychotherapy session, a copay
charge for a session the client attended); pass fields to describe anything else.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import factory
from django.utils import timezone
from factory.django import DjangoModelFactory

from billing import models

VALID_NPI = "1234567893"  # Luhn-valid with the 80840 prefix (billing.validators.npi_is_valid).


def _now() -> dt.datetime:
    return timezone.now()


def _add_attendees(appointment: models.Appointment, create: bool, extracted: list[models.Client] | None,
                   **kwargs: Any) -> None:
    for client in extracted or []:
        models.Participant.objects.create(appointment=appointment, client=client)


def _make_attendee(charge: models.Charge, create: bool, extracted: Any, **kwargs: Any) -> None:
    if create and charge.appointment_id is not None:
        models.Participant.objects.get_or_create(appointment_id=charge.appointment_id, client_id=charge.client_id)


class ClinicianFactory(DjangoModelFactory[models.Clinician]):
    class Meta:
        model = models.Clinician

    name = factory.Sequence(lambda n: f"Clinician {n}")
    email = factory.Sequence(lambda n: f"clinician{n}@practice.example")
    npi = VALID_NPI
    credentials = "LCSW"


class ClientFactory(DjangoModelFactory[models.Client]):
    class Meta:
        model = models.Client

    first_name = "Jordan"
    last_name = factory.Sequence(lambda n: f"Client{n}")
    email = factory.LazyAttribute(lambda c: f"{c.first_name}.{c.last_name}@example.com".lower())
    phone = "555-0100"
    billing_type = models.BillingType.SELF_PAY
    session_rate_cents = 15_000

    class Params:
        # ClientFactory(with_card=True): a linked Stripe customer with a saved card.
        with_card = factory.Trait(
            stripe_customer_id=factory.Sequence(lambda n: f"cus_test{n}"),
            stripe_link_status=models.StripeLinkStatus.MATCHED,
            card_payment_method_id=factory.Sequence(lambda n: f"pm_test{n}"),
            card_brand="visa",
            card_last4="4242",
            card_exp_month=12,
            card_exp_year=2035,
        )


class PayerFactory(DjangoModelFactory[models.Payer]):
    class Meta:
        model = models.Payer

    name = factory.Sequence(lambda n: f"Payer {n}")
    payer_id = factory.Sequence(lambda n: f"P{n:05d}")


class ServiceFactory(DjangoModelFactory[models.Service]):
    class Meta:
        model = models.Service
        django_get_or_create = ("cpt_code",)

    cpt_code = "90837"
    description = "Psychotherapy, 60 minutes"
    fee_cents = 15_000
    is_group = False


class FeeScheduleEntryFactory(DjangoModelFactory[models.FeeScheduleEntry]):
    class Meta:
        model = models.FeeScheduleEntry

    payer = factory.SubFactory(PayerFactory)
    service = factory.SubFactory(ServiceFactory)
    allowed_cents = 12_000


class CoverageFactory(DjangoModelFactory[models.Coverage]):
    class Meta:
        model = models.Coverage

    client = factory.SubFactory(ClientFactory, billing_type=models.BillingType.INSURANCE,
                                session_rate_cents=None)
    payer = factory.SubFactory(PayerFactory)
    payer_name = factory.LazyAttribute(lambda c: c.payer.name if c.payer else "")
    member_id = factory.Sequence(lambda n: f"M{n:08d}")
    copay_cents = 2_500


class CategoryRateFactory(DjangoModelFactory[models.CategoryRate]):
    class Meta:
        model = models.CategoryRate
        django_get_or_create = ("plan_category",)

    plan_category = "EAP"
    amount_cents = 0


class AppointmentFactory(DjangoModelFactory[models.Appointment]):
    """A session. It has no attendees unless given: AppointmentFactory(clients=[client, ...])."""

    class Meta:
        model = models.Appointment
        skip_postgeneration_save = True

    clinician = factory.SubFactory(ClinicianFactory)
    service_code = "90837"
    starts_at = factory.LazyFunction(lambda: _now() - dt.timedelta(days=1))
    duration_minutes = 50
    status = models.AppointmentStatus.SCHEDULED

    clients = factory.PostGeneration(_add_attendees)


class ParticipantFactory(DjangoModelFactory[models.Participant]):
    class Meta:
        model = models.Participant

    appointment = factory.SubFactory(AppointmentFactory)
    client = factory.SubFactory(ClientFactory)


class ChargeFactory(DjangoModelFactory[models.Charge]):
    """A copay for a completed session; the client is made an attendee of it if not one already."""

    class Meta:
        model = models.Charge
        skip_postgeneration_save = True

    client = factory.SubFactory(ClientFactory)
    appointment = factory.SubFactory(AppointmentFactory, status=models.AppointmentStatus.COMPLETED)
    kind = models.ChargeKind.COPAY
    amount_cents = 2_500
    breakdown = factory.LazyAttribute(lambda c: [{"label": "Copay", "amount_cents": c.amount_cents}])
    status = models.ChargeStatus.SCHEDULED
    scheduled_for = factory.LazyFunction(lambda: _now() + dt.timedelta(hours=1))

    attendee = factory.PostGeneration(_make_attendee)


class ChargeEventFactory(DjangoModelFactory[models.ChargeEvent]):
    class Meta:
        model = models.ChargeEvent

    charge = factory.SubFactory(ChargeFactory)
    from_status = ""
    to_status = models.ChargeStatus.SCHEDULED
    amount_cents = factory.LazyAttribute(lambda e: e.charge.amount_cents)
    at = factory.LazyFunction(_now)
    actor = "system"


class PaymentAttemptFactory(DjangoModelFactory[models.PaymentAttempt]):
    class Meta:
        model = models.PaymentAttempt

    charge = factory.SubFactory(ChargeFactory)
    number = 1
    idempotency_key = factory.LazyAttribute(lambda a: f"charge-{a.charge.pk}-attempt-{a.number}")
    amount_cents = factory.LazyAttribute(lambda a: a.charge.amount_cents)
    customer_id = factory.LazyAttribute(lambda a: a.charge.client.stripe_customer_id or "cus_test")
    payment_method_id = factory.LazyAttribute(lambda a: a.charge.client.card_payment_method_id or "pm_test")
    started_at = factory.LazyFunction(_now)


class AppointmentEventFactory(DjangoModelFactory[models.AppointmentEvent]):
    class Meta:
        model = models.AppointmentEvent

    appointment = factory.SubFactory(AppointmentFactory)
    from_status = models.AppointmentStatus.SCHEDULED
    to_status = models.AppointmentStatus.COMPLETED
    at = factory.LazyFunction(_now)
    actor = "system"


class LedgerEntryFactory(DjangoModelFactory[models.LedgerEntry]):
    """A session charge posted to the client's ledger (positive: the client owes more)."""

    class Meta:
        model = models.LedgerEntry

    client = factory.SubFactory(ClientFactory)
    kind = models.LedgerKind.SESSION_CHARGE
    amount_cents = 2_500
    occurred_on = factory.LazyFunction(lambda: timezone.localdate())
    actor = "system"
    created_at = factory.LazyFunction(_now)


class ReviewItemFactory(DjangoModelFactory[models.ReviewItem]):
    class Meta:
        model = models.ReviewItem

    kind = models.ReviewKind.PRICING
    client = factory.SubFactory(ClientFactory)
    reason = "No benefits on file for this session."
    created_at = factory.LazyFunction(_now)


class PolicyAcknowledgmentFactory(DjangoModelFactory[models.PolicyAcknowledgment]):
    class Meta:
        model = models.PolicyAcknowledgment

    client = factory.SubFactory(ClientFactory)
    policy_version = "1"
    acknowledged_at = factory.LazyFunction(_now)
    source = "staff"
