from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from billing.models.charges import Charge
from billing.models.people import Client


class LinkPurpose(models.TextChoices):
    ENROLL_CARD = "enroll_card", "Save a card"
    AUTHENTICATE_PAYMENT = "authenticate_payment", "Confirm a payment"
    PAY_BALANCE = "pay_balance", "Pay the balance"
    RECEIPTS = "receipts", "See receipts"
    PAYMENT_PLAN = "payment_plan", "See and agree to a payment plan"
    ESTIMATE = "estimate", "See a good faith estimate"


class ClientLink(models.Model):
    """A secure emailed link: signed, random, expiring, and (for most purposes) used once.

    The URL carries only the token; we keep its SHA-256, so a copy of the database cannot be
    turned back into working links.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="links")
    purpose = models.CharField(max_length=30, choices=LinkPurpose.choices)
    token_hash = models.CharField(max_length=64, unique=True)
    charge = models.ForeignKey(Charge, on_delete=models.CASCADE, null=True, blank=True, related_name="links")
    plan = models.ForeignKey("billing.PaymentPlan", on_delete=models.CASCADE, null=True, blank=True,
                             related_name="links")
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    setup_intent_id = models.CharField(max_length=100, blank=True)
    created_by = models.CharField(max_length=100, help_text="staff:<username>, api:<source>, system")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["setup_intent_id"], name="link_setup_intent")]

    def __str__(self) -> str:
        return f"{self.get_purpose_display()} link for {self.client}"


class CardConsent(models.Model):
    """What the client agreed to when saving a card, word for word, with when and from where."""

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="card_consents")
    link = models.ForeignKey(ClientLink, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    text = models.TextField()
    text_sha256 = models.CharField(max_length=64)
    policy_version = models.CharField(max_length=40)
    agreed_at = models.DateTimeField()
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    payment_method_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-agreed_at"]

    def __str__(self) -> str:
        return f"Card authorization by {self.client} at {timezone.localtime(self.agreed_at):%Y-%m-%d %H:%M}"


class RefundStatus(models.TextChoices):
    STARTED = "started", "Started (outcome unknown)"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Refund(models.Model):
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="refunds")
    amount_cents = models.PositiveIntegerField()
    reason = models.CharField(max_length=300)
    status = models.CharField(max_length=20, choices=RefundStatus.choices, default=RefundStatus.STARTED)
    idempotency_key = models.CharField(max_length=100, unique=True)
    stripe_refund_id = models.CharField(max_length=100, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="+")
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Refund of {self.amount_cents} on {self.charge}"


class StripeEvent(models.Model):
    """Each webhook event once, by Stripe's id. We keep what it named, not its payload."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=100)
    received_at = models.DateTimeField()
    processed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class EmailStatus(models.TextChoices):
    PENDING = "pending", "Waiting to send"
    SENDING = "sending", "Sending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    # Written while the practice previews charging (``Practice.charging_preview``): kept to read, never sent.
    PREVIEW = "preview", "Drafted in preview: not sent"


class OutboundEmail(models.Model):
    """The outbox: each email is written with the change that caused it and sent after commit.

    ``key`` names what the email is about (``receipt:charges:42``), so a repeated event sends nothing.
    ``charge_amounts`` records the charges a notice announced or a receipt acknowledged, each with the amount
    the email named (``[[42, 14000], [43, 9000]]``): one email may be about several sessions.
    """

    key = models.CharField(max_length=200, unique=True)
    charge_amounts = models.JSONField(default=list, blank=True)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, null=True, blank=True, related_name="emails")
    template = models.CharField(max_length=60)
    to = models.EmailField()
    subject = models.CharField(max_length=200)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=EmailStatus.choices, default=EmailStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"], name="email_status_created")]

    def __str__(self) -> str:
        return f"{self.template} to {self.to}"


class BalanceEpisode(models.Model):
    """One stretch of a client's balance staying above the reminder threshold (workflow 9).

    It starts when the balance rose above the threshold (or at the last payment made while above
    it) and each reminder is sent once per episode; a payment or the balance falling below the
    threshold closes it.
    """

    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="balance_episodes")
    over_since = models.DateTimeField()
    first_reminder_at = models.DateTimeField(null=True, blank=True)
    second_reminder_at = models.DateTimeField(null=True, blank=True)
    flagged_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_reason = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-over_since"]
        constraints = [models.UniqueConstraint(fields=["client", "over_since"], name="balance_episode_once")]
        indexes = [models.Index(fields=["closed_at"], name="balance_episode_open")]

    def __str__(self) -> str:
        return f"Balance over threshold for {self.client} since {self.over_since:%Y-%m-%d}"


class BalanceAllocation(models.Model):
    """Which open charges a portal balance payment pays, and what to put back if it fails."""

    payment = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="allocations")
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="paid_by_allocations")
    amount_cents = models.PositiveIntegerField()
    previous_next_retry_at = models.DateTimeField(null=True, blank=True)
    previous_hold_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["payment", "charge"], name="allocation_once")]

    def __str__(self) -> str:
        return f"{self.amount_cents} of {self.charge} by {self.payment}"


# What staff call each email (its name is the template file's, templates/emails/<name>.txt).
EMAIL_TITLES = {
    "card_enrollment": "Card enrollment link",
    "card_saved": "Card saved",
    "card_needed": "A card is needed",
    "waiting_charges_notice": "Notice before charging what waited for a card",
    "pre_charge_notice": "Pre-charge notice",
    "receipt": "Receipt",
    "payment_failed": "Card declined",
    "authentication_required": "Payment needs the client to confirm it",
    "fee_notice": "No-show or late-cancel fee notice",
    "balance_reminder": "Balance reminder",
    "balance_second_reminder": "Second balance reminder",
    "balance_paid": "Thanks for paying the balance",
    "statement": "Monthly statement",
    "payment_plan_offer": "Payment plan offered",
    "payment_plan_lapsed": "Payment plan lapsed",
    "good_faith_estimate": "Good faith estimate",
}


class EmailTemplate(models.Model):
    """The practice's own wording for one of the portal's emails, replacing the template on disk.

    Written in Django's template language with the same variables as the file it replaces; the
    admin previews it with sample data before it is used.
    """

    name = models.CharField(max_length=60, unique=True)
    subject = models.CharField(max_length=200)
    body_text = models.TextField(help_text="The plain-text email.")
    body_html = models.TextField(blank=True, help_text="Optional: an HTML version. Left empty, the text is used.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.title_for(self.name)

    @staticmethod
    def title_for(name: str) -> str:
        """The email's human name; one not listed reads from its file name ("new_thing" is "New thing")."""
        return EMAIL_TITLES.get(name) or name.replace("_", " ").capitalize()
