from __future__ import annotations

import datetime as dt

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models.functions import Lower

from billing.models.base import ExternalRecord
from billing.validators import validate_cpt, validate_npi


class Clinician(ExternalRecord):
    name = models.CharField(max_length=200)
    email = models.EmailField(blank=True)
    npi = models.CharField("NPI", max_length=10, validators=[validate_npi])
    credentials = models.CharField(max_length=40, blank=True, help_text='For example "LCSW" or "PsyD".')
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [ExternalRecord.external_id_constraint("clinician_unique_external_id")]

    def __str__(self) -> str:
        return f"{self.name}, {self.credentials}" if self.credentials else self.name


class BillingType(models.TextChoices):
    INSURANCE = "insurance", "Insurance"
    SELF_PAY = "self_pay", "Self-pay"
    SLIDING_SCALE = "sliding_scale", "Sliding scale"


# Who is owed a good faith estimate: clients who pay for themselves (the law's uninsured or self-pay individuals).
ESTIMATE_BILLING_TYPES = [BillingType.SELF_PAY, BillingType.SLIDING_SCALE]


class StripeLinkStatus(models.TextChoices):
    NOT_LINKED = "", "Not yet linked"
    MATCHED = "matched", "Matched"
    CREATED = "created", "Created"
    UNMATCHED = "unmatched", "Unmatched"
    AMBIGUOUS = "ambiguous", "Ambiguous"
    IGNORED = "ignored", "Ignored"


class Client(ExternalRecord):
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    email = models.EmailField(blank=True)
    phone = models.CharField(max_length=40, blank=True)
    date_of_birth = models.DateField(null=True, blank=True)
    billing_type = models.CharField(max_length=20, choices=BillingType.choices, default=BillingType.SELF_PAY)
    session_rate_cents = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="Self-pay: the full fee for an individual session. Sliding scale: the negotiated rate.")
    active = models.BooleanField(default=True)

    stripe_customer_id = models.CharField(max_length=100, blank=True)
    stripe_link_status = models.CharField(max_length=20, choices=StripeLinkStatus.choices, blank=True,
                                          default=StripeLinkStatus.NOT_LINKED)
    card_payment_method_id = models.CharField(max_length=100, blank=True)
    card_brand = models.CharField(max_length=20, blank=True)
    card_last4 = models.CharField(max_length=4, blank=True)
    card_exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    card_exp_year = models.PositiveSmallIntegerField(null=True, blank=True)

    flagged_for_outreach = models.BooleanField(default=False)
    flagged_reason = models.CharField(max_length=200, blank=True)
    flagged_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["last_name", "first_name"]
        permissions = [("link_stripe_customer", "Can link a client to a Stripe customer"),
                       ("send_card_link", "Can send a client a card link")]
        constraints = [ExternalRecord.external_id_constraint("client_unique_external_id")]
        indexes = [
            models.Index(Lower("email"), name="client_email_lower"),
            models.Index(fields=["last_name", "first_name"], name="client_name"),
            models.Index(fields=["billing_type"], name="client_billing_type"),
            # Two of the Today page's queues, each a small part of every client: the clients to call (oldest flag
            # first), and the active self-pay clients a good faith estimate is owed to (in name order).
            models.Index(fields=["flagged_at", "id"], condition=models.Q(flagged_for_outreach=True),
                         name="client_flagged"),
            models.Index(fields=["last_name", "first_name", "id"], name="client_estimate_owed",
                         condition=models.Q(active=True, billing_type__in=ESTIMATE_BILLING_TYPES)),
        ]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}"

    @property
    def full_name(self) -> str:
        return str(self)

    @property
    def has_card(self) -> bool:
        return bool(self.card_payment_method_id)

    @property
    def card_summary(self) -> str:
        if not self.has_card:
            return ""
        return f"{self.card_brand.title()} ending {self.card_last4}, exp {self.card_exp_month:02d}/{self.card_exp_year}"


class Payer(models.Model):
    name = models.CharField(max_length=200)
    payer_id = models.CharField("payer ID", max_length=50, unique=True,
                                help_text="The clearinghouse payer id, e.g. 60054 for Aetna.")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Coverage(models.Model):
    """A client's insurance benefits over a period, as the EHR or staff recorded them."""

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="coverages")
    payer = models.ForeignKey(Payer, on_delete=models.PROTECT, null=True, blank=True, related_name="coverages")
    payer_name = models.CharField(max_length=200, blank=True)
    member_id = models.CharField("member ID", max_length=50, blank=True)
    plan_category = models.CharField(max_length=50, blank=True,
                                     help_text="Matches a fixed client amount by insurance category, if any.")
    copay_cents = models.PositiveIntegerField(null=True, blank=True)
    coinsurance_percent = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True,
                                              validators=[MinValueValidator(0), MaxValueValidator(100)])
    deductible_cents = models.PositiveIntegerField(null=True, blank=True)
    deductible_met_cents = models.PositiveIntegerField(null=True, blank=True)
    effective_from = models.DateField(null=True, blank=True)
    effective_to = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    benefits_as_of = models.DateTimeField(
        auto_now=True, help_text="When the deductible figures were last reported; deductible that the portal "
                                 "charged after this moment counts as met too.")

    class Meta:
        ordering = ["client", "-effective_from"]
        verbose_name_plural = "coverage"

    def __str__(self) -> str:
        return f"{self.payer_name or 'Coverage'} for {self.client}"

    def in_force_on(self, day: dt.date) -> bool:
        return (self.effective_from is None or self.effective_from <= day) and (
            self.effective_to is None or day <= self.effective_to)


class Service(models.Model):
    """A CPT code the practice bills, with the practice's own full fee."""

    cpt_code = models.CharField("CPT code", max_length=5, unique=True, validators=[validate_cpt])
    description = models.CharField(max_length=200, help_text="What clients see on receipts.")
    fee_cents = models.PositiveIntegerField(help_text="The practice's full fee.")
    is_group = models.BooleanField(default=False, help_text="Several clients attend, each billed separately.")

    class Meta:
        ordering = ["cpt_code"]

    def __str__(self) -> str:
        return f"{self.cpt_code} {self.description}"


class FeeScheduleEntry(models.Model):
    """What a payer allows for a CPT code: the most the client and insurer pay together."""

    payer = models.ForeignKey(Payer, on_delete=models.CASCADE, related_name="fee_schedule")
    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="fee_schedule")
    allowed_cents = models.PositiveIntegerField()

    class Meta:
        verbose_name_plural = "fee schedule"
        constraints = [models.UniqueConstraint(fields=["payer", "service"], name="fee_schedule_unique")]

    def __str__(self) -> str:
        return f"{self.payer} {self.service.cpt_code}"


class CategoryRate(models.Model):
    """A fixed amount the client pays per session for a plan category (e.g. EAP, Medicaid)."""

    plan_category = models.CharField(max_length=50, unique=True)
    amount_cents = models.PositiveIntegerField()

    class Meta:
        ordering = ["plan_category"]

    def __str__(self) -> str:
        return self.plan_category


class PolicyAcknowledgment(models.Model):
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="policy_acknowledgments")
    policy_version = models.CharField(max_length=40)
    acknowledged_at = models.DateTimeField()
    source = models.CharField(max_length=50, blank=True, help_text="api:<source>, portal or staff.")
    ip_address = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-acknowledged_at"]
        constraints = [models.UniqueConstraint(fields=["client", "policy_version"],
                                               name="policy_ack_once_per_version")]

    def __str__(self) -> str:
        return f"{self.client} acknowledged v{self.policy_version}"


