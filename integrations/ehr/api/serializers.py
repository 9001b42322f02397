"""What the API takes and gives, field by field. The OpenAPI schema is generated from these.

Input serializers validate only shape and format; references to other records (a clinician's external
id, a client's) are checked by the services, which know the key's source.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.validators import RegexValidator
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from billing.models import (
    AppointmentStatus,
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    PlaceOfService,
    StripeLinkStatus,
)
from billing.selectors import FINDING_KINDS
from billing.services.estimates import ESTIMATE_HOLD_PREFIX
from billing.services.payments import CAP_HOLD_PREFIX, PORTAL_HOLD
from billing.services.waiting import CHOICE_HOLD, NO_CARD_HOLD
from billing.validators import ICD10_RE, validate_cpt, validate_npi
from integrations.ehr.api.fields import (
    AwareDateTime,
    BoundedDate,
    Cents,
    DistinctList,
    ExternalId,
    Percent,
    StrictBoolean,
    Text,
    TextChoice,
)

# [0-9], not \d: Python's \d also takes Arabic-Indic or full-width digits, the schema's regex engines do not.
cpt_pattern = RegexValidator(r"^[0-9]{4}[0-9A-Z]$", "Enter a five-character CPT code such as 90837.")
icd10_pattern = RegexValidator(r"^[A-TV-Za-tv-z][0-9][0-9A-Za-z](\.?[0-9A-Za-z]{1,4})?$",
                               "Enter an ICD-10 code such as F41.1.")
npi_pattern = RegexValidator(r"^[0-9]{10}$", "An NPI is 10 digits.")


# Input serializers refuse fields they do not know: a misspelt field ("fee" for "fee_cents") would otherwise
# be dropped without a word and the session billed at the wrong amount. Fields the API itself returns
# (``tolerated``) are accepted and ignored, so a record read can be sent back as it was. (A comment, not a
# docstring: drf-spectacular would print a docstring into every request schema.)
class Strict(serializers.Serializer):

    tolerated: frozenset[str] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        errors: dict[str, Any] = {}
        value = None
        try:
            value = super().to_internal_value(data)
        except serializers.ValidationError as exc:
            if not isinstance(exc.detail, dict):
                raise
            errors.update(exc.detail)
        if isinstance(data, Mapping):
            for name in data:
                if name not in self.fields and name not in self.tolerated:
                    errors[str(name)[:100]] = ["Unknown field."]
        if errors:
            raise serializers.ValidationError(errors)
        return value


# --- Clinicians -------------------------------------------------------------------------------------------

class ClinicianIn(Strict):
    tolerated = frozenset({"external_id", "created_at", "updated_at"})
    name = Text(max_length=200)
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")
    npi = Text(max_length=10, min_length=10, validators=[npi_pattern, validate_npi],
               help_text="10 digits; the last is a Luhn check digit.")
    credentials = Text(max_length=40, required=False, default="", help_text='For example "LCSW".')
    active = StrictBoolean(required=False, default=True)


class ClinicianOut(serializers.Serializer):
    external_id = serializers.CharField()
    name = serializers.CharField()
    email = serializers.CharField()
    npi = serializers.CharField()
    credentials = serializers.CharField()
    active = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


# --- Clients ----------------------------------------------------------------------------------------------

CLIENT_READ_ONLY = frozenset({"external_id", "balance_cents", "card_on_file", "stripe_link_status",
                              "flagged_for_outreach", "created_at", "updated_at"})


class ClientIn(Strict):
    tolerated = CLIENT_READ_ONLY
    first_name = Text(max_length=100)
    last_name = Text(max_length=100)
    email = serializers.EmailField(max_length=254, required=False, allow_blank=True, default="")
    phone = Text(max_length=40, required=False, default="")
    date_of_birth = BoundedDate(required=False, allow_null=True, default=None)
    billing_type = serializers.ChoiceField(choices=BillingType.choices)
    session_rate_cents = Cents(required=False, allow_null=True, default=None,
                               help_text="The full fee for self-pay clients, the negotiated rate for sliding "
                                         "scale.")
    active = StrictBoolean(required=False, default=True)


class CardOnFile(serializers.Serializer):
    brand = serializers.CharField()
    last4 = serializers.CharField()
    exp_month = serializers.IntegerField(allow_null=True)
    exp_year = serializers.IntegerField(allow_null=True)


# docs/api.md's link statuses; "ambiguous" waits in the same review queue as unmatched, "" is not linked yet.
LINK_STATUS_OUT: dict[str, str] = {StripeLinkStatus.MATCHED: "matched", StripeLinkStatus.CREATED: "created",
                   StripeLinkStatus.UNMATCHED: "unmatched", StripeLinkStatus.AMBIGUOUS: "unmatched",
                   StripeLinkStatus.IGNORED: "ignored"}


class ClientOut(serializers.Serializer):
    external_id = serializers.CharField()
    first_name = serializers.CharField()
    last_name = serializers.CharField()
    email = serializers.CharField()
    phone = serializers.CharField()
    date_of_birth = serializers.DateField(allow_null=True)
    billing_type = serializers.ChoiceField(choices=BillingType.choices)
    session_rate_cents = serializers.IntegerField(allow_null=True)
    active = serializers.BooleanField()
    balance_cents = serializers.IntegerField(help_text="What the client owes now; negative is a credit.")
    card_on_file = serializers.SerializerMethodField()
    stripe_link_status = serializers.SerializerMethodField()
    flagged_for_outreach = serializers.BooleanField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(CardOnFile(allow_null=True))
    def get_card_on_file(self, client: Client) -> dict[str, Any] | None:
        if not client.card_payment_method_id:
            return None
        return {"brand": client.card_brand, "last4": client.card_last4, "exp_month": client.card_exp_month,
                "exp_year": client.card_exp_year}

    @extend_schema_field(serializers.ChoiceField(choices=["matched", "created", "unmatched", "ignored"],
                                                 allow_null=True, help_text="null until the client is linked."))
    def get_stripe_link_status(self, client: Client) -> str | None:
        return LINK_STATUS_OUT.get(client.stripe_link_status)


# --- Coverage ---------------------------------------------------------------------------------------------

class CoverageIn(Strict):
    tolerated = frozenset({"client", "benefits_as_of", "created_at"})
    payer_name = Text(max_length=200, required=False, default="")
    payer_id = Text(max_length=50, required=False, allow_null=True, default="",
                    help_text="The clearinghouse payer id (e.g. 60054); an unknown one adds the payer.")
    member_id = Text(max_length=50, required=False, default="")
    plan_category = Text(max_length=50, required=False, default="",
                         help_text="Matches a fixed client amount by insurance category, e.g. EAP.")
    copay_cents = Cents(required=False, allow_null=True, default=None)
    coinsurance_percent = Percent(required=False, allow_null=True, default=None,
                                  help_text='0 to 100, at most two decimals: 20, 12.5 or "20".')
    deductible_cents = Cents(required=False, allow_null=True, default=None)
    deductible_met_cents = Cents(required=False, allow_null=True, default=None)
    effective_from = BoundedDate(required=False, allow_null=True, default=None)
    effective_to = BoundedDate(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        start, end = attrs.get("effective_from"), attrs.get("effective_to")
        if start and end and end < start:
            raise serializers.ValidationError({"effective_to": ["Coverage cannot end before it starts."]})
        if "payer_id" in attrs and attrs["payer_id"] is None:
            attrs["payer_id"] = ""
        return attrs


class CoverageOut(serializers.Serializer):
    client = serializers.CharField(help_text="The client's external id.")
    payer_name = serializers.CharField()
    payer_id = serializers.CharField()
    member_id = serializers.CharField()
    plan_category = serializers.CharField()
    copay_cents = serializers.IntegerField(allow_null=True)
    coinsurance_percent = serializers.DecimalField(max_digits=5, decimal_places=2, coerce_to_string=False,
                                                   allow_null=True)
    deductible_cents = serializers.IntegerField(allow_null=True)
    deductible_met_cents = serializers.IntegerField(allow_null=True)
    effective_from = serializers.DateField(allow_null=True)
    effective_to = serializers.DateField(allow_null=True)
    benefits_as_of = serializers.DateTimeField(help_text="When the deductible figures were last reported.")


# --- Policy acknowledgments and card links ---------------------------------------------------------------

class PolicyAcknowledgmentIn(Strict):
    tolerated = frozenset({"client"})
    policy_version = Text(max_length=40)
    acknowledged_at = AwareDateTime()


class PolicyAcknowledgmentOut(serializers.Serializer):
    client = serializers.CharField()
    policy_version = serializers.CharField()
    acknowledged_at = serializers.DateTimeField()
    is_current_policy = serializers.BooleanField(
        help_text="Whether this is the version the practice uses now (fees need the current one).")


class PolicyFees(serializers.Serializer):
    no_show_cents = serializers.IntegerField(help_text="The no-show fee (0: none).")
    late_cancel_cents = serializers.IntegerField(help_text="The late-cancellation fee (0: none).")
    review_hours = serializers.IntegerField(help_text="Hours staff have to waive a fee before it is charged.")


class PolicyOut(serializers.Serializer):
    version = serializers.CharField(help_text="The version a client acknowledges (policy-acknowledgments).")
    text = serializers.CharField(allow_blank=True, help_text="The policy as clients read it on the card page.")
    effective_date = serializers.DateField(allow_null=True,
                                           help_text="The practice's day the version took effect; null if not "
                                                     "recorded.")
    fees = PolicyFees()


class EnrollmentLinkIn(Strict):
    send_email = StrictBoolean(required=False, default=False)


class EnrollmentLinkOut(serializers.Serializer):
    url = serializers.URLField()
    expires_at = serializers.DateTimeField()


# --- Charges ----------------------------------------------------------------------------------------------

# "due" is the scheduler's internal step: the API shows it as "scheduled" (on its way) or "held" (waiting for a
# card, staff review or the client; docs/api.md). The database keeps its own states.
HELD = "held"
API_CHARGE_STATUSES = [s for s in ChargeStatus.values if s != ChargeStatus.DUE] + [HELD]
# Why a held charge waits, as the API names it, from the hold the scheduler wrote.
HELD_REASONS = {NO_CARD_HOLD: "no_card", CHOICE_HOLD: "client_choice", PORTAL_HOLD: "portal_payment"}
HELD_REASON_CODES = ["no_card", "above_cap", "above_estimate", "client_choice", "portal_payment", "staff_review"]


def charge_held_reason(charge: Charge) -> str | None:
    """Why a due charge is held, or None when it is not held (it goes with the next billing run)."""
    if charge.status != ChargeStatus.DUE or not charge.hold_reason:
        return None
    if charge.hold_reason.startswith(CAP_HOLD_PREFIX):
        return "above_cap"
    if charge.hold_reason.startswith(ESTIMATE_HOLD_PREFIX):
        return "above_estimate"
    return HELD_REASONS.get(charge.hold_reason, "staff_review")


class BreakdownLine(serializers.Serializer):
    label = serializers.CharField()  # type: ignore[assignment]
    amount_cents = serializers.IntegerField()


class ChargeOut(serializers.Serializer):
    id = serializers.IntegerField()
    client = serializers.CharField(source="client.external_id")
    appointment = serializers.SerializerMethodField()
    kind = serializers.ChoiceField(choices=ChargeKind.choices)
    amount_cents = serializers.IntegerField()
    insurance_cents = serializers.IntegerField(help_text="What insurance is expected to pay toward the session.")
    status = serializers.SerializerMethodField()
    scheduled_for = serializers.DateTimeField()
    attempts = serializers.IntegerField()
    last_failure_code = serializers.CharField()
    payment_reference = serializers.CharField(help_text="The Stripe PaymentIntent id once charged.")
    receipt_sent_at = serializers.DateTimeField(allow_null=True)
    refunded_cents = serializers.IntegerField()
    breakdown = BreakdownLine(many=True, help_text="How the amount was computed, as labelled lines.")
    created_at = serializers.DateTimeField()
    held_reason = serializers.SerializerMethodField(
        help_text="With status held, why it waits: no_card, above_cap (staff approve it), above_estimate ($400 or "
                  "more above the client's good faith estimate: staff revise it or release the charge), client_choice "
                  "(the client "
                  "chooses after saving a card), portal_payment (the client is paying it on the portal), "
                  "staff_review. Null otherwise.")

    @extend_schema_field(OpenApiTypes.STR)
    def get_appointment(self, charge: Charge) -> str | None:
        return charge.appointment.external_id if charge.appointment is not None else None

    @extend_schema_field(serializers.ChoiceField(choices=API_CHARGE_STATUSES))
    def get_status(self, charge: Charge) -> str:
        if charge.status == ChargeStatus.DUE:
            return HELD if charge.hold_reason else ChargeStatus.SCHEDULED
        return charge.status

    @extend_schema_field(serializers.ChoiceField(choices=HELD_REASON_CODES, allow_null=True))
    def get_held_reason(self, charge: Charge) -> str | None:
        return charge_held_reason(charge)


# --- Appointments -----------------------------------------------------------------------------------------

MAX_CLIENTS = 50  # per appointment (a group session)


class AppointmentIn(Strict):
    tolerated = frozenset({"external_id", "charges", "created_at", "updated_at"})
    clinician = ExternalId(help_text="The clinician's external id.")
    clients = DistinctList(child=ExternalId(), min_length=1, max_length=MAX_CLIENTS,
                           error_messages={"repeated": "A client is listed twice."},
                           help_text="Client external ids: one for an individual session, several for a group.")
    service_code = Text(max_length=5, min_length=5, validators=[cpt_pattern, validate_cpt],
                        help_text="CPT code, e.g. 90837.")
    diagnosis_codes = serializers.ListField(child=Text(max_length=8, validators=[icd10_pattern]), max_length=12,
                                            required=False, default=list, help_text="ICD-10, for superbills only.")
    starts_at = AwareDateTime()
    duration_minutes = serializers.IntegerField(min_value=1, max_value=1440, required=False, default=50)
    status = serializers.ChoiceField(choices=AppointmentStatus.choices, required=False,
                                     default=AppointmentStatus.SCHEDULED)
    note_signed_at = AwareDateTime(required=False, allow_null=True, default=None)
    fee_cents = Cents(required=False, allow_null=True, default=None,
                      help_text="Overrides the practice's fee schedule for this session.")
    place_of_service = TextChoice(
        choices=PlaceOfService.choices, required=False, allow_blank=True, default="",
        help_text="CMS place of service: 11 office, 02 telehealth, 10 telehealth in the client's home (both "
                  "telehealth codes put modifier 95 on the superbill); empty when not recorded.")

    def validate_diagnosis_codes(self, value: list[str]) -> list[str]:
        # Stored upper-case, so "f41.1" and "F41.1" are the same body and a repeat changes nothing.
        upper = [code.upper() for code in value]
        if any(not ICD10_RE.match(code) for code in upper):
            raise serializers.ValidationError("Enter ICD-10 codes such as F41.1.")
        return upper


class AppointmentOut(serializers.Serializer):
    external_id = serializers.CharField()
    clinician = serializers.CharField(source="clinician.external_id")
    clients = serializers.SerializerMethodField()
    service_code = serializers.CharField()
    diagnosis_codes = serializers.ListField(child=serializers.CharField())
    starts_at = serializers.DateTimeField()
    duration_minutes = serializers.IntegerField()
    status = serializers.ChoiceField(choices=AppointmentStatus.choices)
    note_signed_at = serializers.DateTimeField(allow_null=True)
    fee_cents = serializers.IntegerField(allow_null=True)
    place_of_service = serializers.ChoiceField(choices=[("", "not recorded"), *PlaceOfService.choices])
    charges = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_clients(self, appointment: Any) -> list[str]:
        return [p.client.external_id for p in appointment.participants.all()]

    @extend_schema_field(ChargeOut(many=True))
    def get_charges(self, appointment: Any) -> list[dict[str, Any]]:
        charges = list(appointment.charges.all())
        for charge in charges:
            charge.appointment = appointment  # already loaded: no query per charge
        return ChargeOut(charges, many=True).data  # type: ignore[return-value]


# --- Insurance payments -----------------------------------------------------------------------------------

class InsurancePaymentIn(Strict):
    tolerated = frozenset({"id", "created_at", "updated_at"})
    appointment = ExternalId(help_text="The appointment's external id.")
    client = ExternalId(help_text="The client's external id; the client attended the appointment.")
    payer_name = Text(max_length=200, required=False, default="")
    allowed_cents = Cents()
    paid_cents = Cents()
    patient_responsibility_cents = Cents()
    paid_on = BoundedDate()
    reference = Text(max_length=100, help_text="The EOB or remittance reference; with the appointment and "
                                               "client it identifies the line, so a repeat changes nothing.")


class InsurancePaymentOut(serializers.Serializer):
    id = serializers.IntegerField()
    appointment = serializers.CharField(source="appointment.external_id")
    client = serializers.CharField(source="client.external_id")
    payer_name = serializers.CharField()
    allowed_cents = serializers.IntegerField()
    paid_cents = serializers.IntegerField()
    patient_responsibility_cents = serializers.IntegerField()
    paid_on = serializers.DateField()
    reference = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


# --- Remittances (ERA, X12 835) ---------------------------------------------------------------------------

class RemittanceLineOut(serializers.Serializer):
    claim_id = serializers.CharField()
    claim_status = serializers.CharField(help_text="CLP02: 1 primary, 2 secondary, 4 denied, 22 reversal...")
    line_number = serializers.IntegerField()
    patient = serializers.CharField()
    member_id = serializers.CharField()
    cpt_code = serializers.CharField()
    service_date = serializers.CharField(help_text="YYYY-MM-DD, or empty when the line gives none.")
    charge_cents = serializers.IntegerField()
    paid_cents = serializers.IntegerField()
    patient_responsibility_cents = serializers.IntegerField()
    outcome = serializers.ChoiceField(choices=["posted", "unmatched", "already posted", "reversal"])
    detail = serializers.CharField()
    line_id = serializers.IntegerField(allow_null=True)


class RemittancePaymentOut(serializers.Serializer):
    payer_name = serializers.CharField()
    payee_name = serializers.CharField()
    payee_npi = serializers.CharField()
    trace_number = serializers.CharField()
    method = serializers.CharField()
    paid_cents = serializers.IntegerField()
    paid_on = serializers.DateField()
    dry_run = serializers.BooleanField()
    applied = serializers.BooleanField()
    remittance_id = serializers.IntegerField(allow_null=True)
    claims = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField())
    summary = serializers.CharField()
    notes = serializers.ListField(child=serializers.CharField())
    lines = RemittanceLineOut(many=True)


class RemittancePostOut(serializers.Serializer):
    dry_run = serializers.BooleanField()
    payments = RemittancePaymentOut(many=True)


# --- Events -----------------------------------------------------------------------------------------------

EVENT_TYPES = ("client", "coverage", "appointment", "insurance_payment", "policy_acknowledgment")
MAX_EVENTS = 1000


class EventIn(serializers.Serializer):
    """Documentation only: events are checked one by one so that a bad one does not stop the others."""

    type = serializers.ChoiceField(choices=EVENT_TYPES)
    external_id = ExternalId(required=False, help_text="The client's external id for client, coverage and "
                                                       "policy_acknowledgment; the appointment's for appointment; "
                                                       "not used for insurance_payment.")
    data = serializers.DictField(  # type: ignore[assignment]
        help_text="The body of the matching single-resource call.")


class EventBatchIn(serializers.Serializer):
    events = EventIn(many=True, max_length=MAX_EVENTS)  # type: ignore[call-arg]


EVENT_RESULT_STATUSES = ("created", "updated", "unchanged", "error")


class EventResultOut(serializers.Serializer):
    index = serializers.IntegerField(help_text="The event's position in the batch, from 0.")
    type = serializers.CharField(allow_null=True)
    external_id = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=EVENT_RESULT_STATUSES)
    code = serializers.ChoiceField(choices=["invalid", "not_found", "conflict", "retry"], required=False,
                                   help_text="With status error: what kind of error.")
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False,
                                   help_text="With status error: messages by field.")


class EventBatchOut(serializers.Serializer):
    results = EventResultOut(many=True)
    counts = serializers.DictField(child=serializers.IntegerField(),
                                   help_text="How many events ended created, updated, unchanged and error.")


# --- Balance and reconciliation ---------------------------------------------------------------------------

class AgingOut(serializers.Serializer):
    current = serializers.IntegerField(help_text="0 to 30 days old.")
    days_31_60 = serializers.IntegerField()
    days_61_90 = serializers.IntegerField()
    days_over_90 = serializers.IntegerField()


class BalanceOut(serializers.Serializer):
    client = serializers.CharField()
    balance_cents = serializers.IntegerField()
    aging = AgingOut()
    as_of = serializers.DateField(help_text="The practice's local date the aging is counted from.")


class StatementLineOut(serializers.Serializer):
    date = serializers.DateField(help_text="The practice's date of the entry (a session's date of service).")
    kind = serializers.CharField(help_text="The ledger entry's kind: session_charge, fee, payment, refund, "
                                           "adjustment, write_off, waiver or charge_canceled.")
    memo = serializers.CharField(allow_blank=True)
    service_code = serializers.CharField(allow_blank=True)
    clinician = serializers.CharField(allow_blank=True)
    amount_cents = serializers.IntegerField(help_text="Positive adds to the balance, negative reduces it.")


class StatementOut(serializers.Serializer):
    client = serializers.CharField()
    month = serializers.CharField(help_text="YYYY-MM.")
    starts = serializers.DateField()
    ends = serializers.DateField()
    issued_at = serializers.DateTimeField(allow_null=True, help_text="When the statement was issued (its figures "
                                                                     "frozen as sent); null: computed now.")
    final = serializers.BooleanField(help_text="False while the month is not over in the practice's zone.")
    opening_cents = serializers.IntegerField()
    charges_cents = serializers.IntegerField()
    payments_cents = serializers.IntegerField(help_text="Payments received, as a positive amount.")
    refunds_cents = serializers.IntegerField()
    adjustments_cents = serializers.IntegerField(help_text="Signed: negative reduces the balance.")
    closing_cents = serializers.IntegerField(help_text="opening + charges - payments + refunds + adjustments.")
    sessions = serializers.IntegerField()
    aging = AgingOut()
    lines = StatementLineOut(many=True)


class InstallmentOut(serializers.Serializer):
    number = serializers.IntegerField()
    due_on = serializers.DateField(help_text="The practice's day it is charged (10:00 practice time).")
    agreed_cents = serializers.IntegerField(help_text="The amount agreed.")
    amount_cents = serializers.IntegerField(
        help_text="What it takes or took: less than agreed (or 0, not charged) once the balance was paid otherwise.")
    charge = serializers.IntegerField(allow_null=True, help_text="Its charge (kind installment) once agreed, as in "
                                                                 "charges/<id>/; null while offered.")
    status = serializers.CharField(allow_null=True, help_text="Its charge's status; null while offered.")
    paid = serializers.BooleanField()


class PaymentPlanOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["offered", "current", "completed", "lapsed", "canceled"])
    total_cents = serializers.IntegerField()
    paid_cents = serializers.IntegerField(help_text="What its installments brought in.")
    lapse_after_days = serializers.IntegerField()
    offered_at = serializers.DateTimeField()
    agreed_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    end_reason = serializers.CharField(allow_blank=True)
    installments = InstallmentOut(many=True)


class PaymentPlansOut(serializers.Serializer):
    client = serializers.CharField()
    plans = PaymentPlanOut(many=True)


class EstimateLineOut(serializers.Serializer):
    cpt_code = serializers.CharField()
    description = serializers.CharField()
    quantity = serializers.IntegerField()
    unit_cents = serializers.IntegerField()
    total_cents = serializers.IntegerField()


class EstimateOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["issued", "superseded"],
                                     help_text="issued: in force; superseded: replaced by a revised estimate.")
    period_start = serializers.DateField()
    period_end = serializers.DateField()
    frequency = serializers.CharField()
    diagnosis_codes = serializers.ListField(child=serializers.CharField())
    total_cents = serializers.IntegerField()
    billed_cents = serializers.IntegerField(
        help_text="The client's session charges dated in the period, as the dispute guard counts them now.")
    lines = EstimateLineOut(many=True)
    supersedes = serializers.IntegerField(allow_null=True, source="supersedes_id")
    revision_reason = serializers.CharField()
    issued_at = serializers.DateTimeField()
    delivered_at = serializers.DateTimeField(allow_null=True)
    acknowledged_at = serializers.DateTimeField(allow_null=True)


class FindingOut(serializers.Serializer):
    kind = serializers.ChoiceField(choices=FINDING_KINDS)
    appointment = serializers.CharField(allow_null=True)
    client = serializers.CharField(allow_null=True, help_text="Null for a Stripe payment matching no client.")
    charge = serializers.IntegerField(allow_null=True)
    service_date = serializers.DateField(allow_null=True)
    expected_cents = serializers.IntegerField(allow_null=True)
    actual_cents = serializers.IntegerField(allow_null=True)
    detail = serializers.CharField()
    status = serializers.ChoiceField(choices=["open", "resolved", "ignored"],
                                     help_text="What staff decided about the finding; it survives re-runs.")


class ReconciliationOut(serializers.Serializer):
    week = serializers.CharField()
    starts = serializers.DateTimeField()
    ends = serializers.DateTimeField()
    findings = FindingOut(many=True)
    stripe_checked = serializers.BooleanField(help_text="False when Stripe could not be read for this week.")
