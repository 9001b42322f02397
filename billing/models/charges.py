from __future__ import annotations

from django.db import models

from billing.models.appointments import Appointment
from billing.models.base import StatusEvent
from billing.models.people import Client


class ChargeKind(models.TextChoices):
    COPAY = "copay", "Copay / client share"
    SESSION_FEE = "session_fee", "Session fee"
    NO_SHOW_FEE = "no_show_fee", "No-show fee"
    LATE_CANCEL_FEE = "late_cancel_fee", "Late-cancel fee"
    BALANCE_PAYMENT = "balance_payment", "Balance payment"
    # One card payment for a client's charges of a weekly batch (``Practice.weekly_one_payment``); each session
    # charge keeps its own record, ledger line and refunds.
    WEEKLY_PAYMENT = "weekly_payment", "Weekly card payment"
    # One agreed payment of a payment plan (``billing.models.plans``): money collected against the balance.
    INSTALLMENT = "installment", "Payment plan installment"


# Charges that pay other charges (through ``BalanceAllocation``) rather than a session or fee of their own.
PAYMENT_KINDS = (ChargeKind.BALANCE_PAYMENT, ChargeKind.WEEKLY_PAYMENT)
# Charges that collect money toward what the client owes rather than owing it: the payments above and plan
# installments (charged on their own, and retried like a session's charge, unlike the payments above).
COLLECTION_KINDS = (*PAYMENT_KINDS, ChargeKind.INSTALLMENT)


class ChargeStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    DUE = "due", "Due"
    PROCESSING = "processing", "Processing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    REQUIRES_ACTION = "requires_action", "Needs the client to authenticate"
    CANCELED = "canceled", "Canceled"
    REFUNDED = "refunded", "Refunded"
    PARTIALLY_REFUNDED = "partially_refunded", "Partially refunded"


# Each status as it reads after "the charge is" or "was": the labels above are column headings
# ("Needs the client to authenticate", "Succeeded") and make no sentence there.
CHARGE_STATUS_PHRASES: dict[str, str] = {
    ChargeStatus.SCHEDULED: "scheduled",
    ChargeStatus.DUE: "due",
    ChargeStatus.PROCESSING: "being charged",
    ChargeStatus.SUCCEEDED: "paid",
    ChargeStatus.FAILED: "declined",
    ChargeStatus.REQUIRES_ACTION: "waiting for the client to authenticate",
    ChargeStatus.CANCELED: "canceled",
    ChargeStatus.REFUNDED: "refunded",
    ChargeStatus.PARTIALLY_REFUNDED: "partly refunded",
}

# Why a due charge waits instead of being taken: the client has no card on file.
NO_CARD_HOLD = "no card on file"

# The status sets the money rules use, defined once.
# Not charged yet: the charge still follows its appointment (re-priced or canceled).
PENDING_STATUSES = (ChargeStatus.SCHEDULED, ChargeStatus.DUE)
# Open, with no money on its way: may be re-priced, and is offered for payment on the portal.
OPEN_STATUSES = (ChargeStatus.SCHEDULED, ChargeStatus.DUE, ChargeStatus.FAILED)
# Money on its way: being taken, or waiting for the client's bank.
IN_FLIGHT_STATUSES = (ChargeStatus.PROCESSING, ChargeStatus.REQUIRES_ACTION)
# Stuck with the client: declined, or waiting for them to authenticate.
STUCK_STATUSES = (ChargeStatus.FAILED, ChargeStatus.REQUIRES_ACTION)
# Nothing paid yet, so it may be canceled (one waiting for the client's bank is withdrawn at Stripe).
CANCELABLE_STATUSES = (*OPEN_STATUSES, ChargeStatus.REQUIRES_ACTION)
# An attempt on it may still turn into money for it.
AWAITING_PAYMENT_STATUSES = (ChargeStatus.PROCESSING, ChargeStatus.REQUIRES_ACTION, ChargeStatus.FAILED)
# Paid, whether or not refunded since, in part or in whole.
PAID_STATUSES = (ChargeStatus.SUCCEEDED, ChargeStatus.PARTIALLY_REFUNDED, ChargeStatus.REFUNDED)
# Money moved, or may have: later changes are adjustments, never edits.
MONEY_MOVED_STATUSES = (ChargeStatus.PROCESSING, ChargeStatus.SUCCEEDED, ChargeStatus.REFUNDED,
                        ChargeStatus.PARTIALLY_REFUNDED)


class Charge(models.Model):
    """One amount to take from one client's card, for one thing: exactly once."""

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="charges")
    appointment = models.ForeignKey(Appointment, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="charges")
    kind = models.CharField(max_length=20, choices=ChargeKind.choices)
    amount_cents = models.PositiveIntegerField()
    insurance_cents = models.PositiveIntegerField(
        default=0, help_text="What insurance is expected to pay toward this session (for receipts).")
    deductible_applied_cents = models.PositiveIntegerField(
        default=0, help_text="How much of the amount counts toward the client's deductible.")
    breakdown = models.JSONField(default=list, help_text="How the amount was computed, as labelled lines.")
    status = models.CharField(max_length=20, choices=ChargeStatus.choices, default=ChargeStatus.SCHEDULED)
    scheduled_for = models.DateTimeField(help_text="When the card is charged.")
    notice_due_at = models.DateTimeField(null=True, blank=True,
                                         help_text="When the pre-charge notice goes out.")
    notice_sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    last_failure_code = models.CharField(max_length=60, blank=True)
    payment_reference = models.CharField(max_length=100, blank=True, help_text="The Stripe PaymentIntent id.")
    receipt_sent_at = models.DateTimeField(null=True, blank=True)
    refunded_cents = models.PositiveIntegerField(default=0)
    cap_approved_cents = models.PositiveIntegerField(
        null=True, blank=True, help_text="Staff approved charging this exact amount above the practice's cap.")
    canceled_by_staff = models.BooleanField(
        default=False, help_text="Staff canceled it: a later change to the session does not bring it back.")
    prepaid_cents = models.PositiveIntegerField(
        default=0, help_text="Already paid toward this charge through a balance payment on the portal.")
    hold_reason = models.CharField(
        max_length=200, blank=True,
        help_text="Why a due charge waits for staff instead of being charged (no card, above the cap).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("refund_charge", "Can refund a charge"),
                       ("release_charge", "Can charge a held charge above the cap anyway"),
                       ("cancel_charge", "Can cancel a charge"),
                       ("waive_fee", "Can waive a no-show or late-cancel fee")]
        constraints = [
            models.UniqueConstraint(fields=["appointment", "client", "kind"], name="charge_once_per_thing",
                                    condition=models.Q(appointment__isnull=False)),
        ]
        indexes = [
            models.Index(fields=["status", "scheduled_for"], name="charge_status_due"),
            models.Index(fields=["client", "-created_at"], name="charge_client_created"),
            models.Index(fields=["-created_at"], name="charge_created"),
            # The Today page's "failed or waiting" queue, most recent first: its first rows without sorting
            # every failed charge the practice ever had.
            models.Index(fields=["-updated_at", "-id"], condition=models.Q(status__in=STUCK_STATUSES),
                         name="charge_stuck_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING_STATUSES

    @property
    def status_phrase(self) -> str:
        """The status for a sentence: "The charge is waiting for the client to authenticate."."""
        return CHARGE_STATUS_PHRASES.get(self.status, self.status)


class ChargeEvent(StatusEvent):
    """Append-only history of a charge: every status move and every re-pricing."""

    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="events")
    amount_cents = models.PositiveIntegerField(help_text="The charge's amount after this event.")

    class Meta(StatusEvent.Meta):
        pass


class AttemptStatus(models.TextChoices):
    STARTED = "started", "Started (outcome unknown)"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    REQUIRES_ACTION = "requires_action", "Requires authentication"


class PaymentAttempt(models.Model):
    """One call to Stripe for a charge, written and committed before the call is made."""

    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, related_name="payment_attempts")
    number = models.PositiveSmallIntegerField()
    idempotency_key = models.CharField(max_length=100, unique=True)
    status = models.CharField(max_length=20, choices=AttemptStatus.choices, default=AttemptStatus.STARTED)
    # What was sent, so an unknown outcome can be asked about with exactly the same request.
    amount_cents = models.PositiveIntegerField()
    customer_id = models.CharField(max_length=100)
    payment_method_id = models.CharField(max_length=100)
    payment_intent_id = models.CharField(max_length=100, blank=True)
    decline_code = models.CharField(max_length=60, blank=True)
    failure_code = models.CharField(max_length=60, blank=True)
    failure_message = models.CharField(max_length=300, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["charge", "number"]
        constraints = [models.UniqueConstraint(fields=["charge", "number"], name="attempt_number_once")]
        indexes = [
            models.Index(fields=["status", "started_at"], name="attempt_status_started"),
            models.Index(fields=["payment_intent_id"], name="attempt_payment_intent"),
        ]

    def __str__(self) -> str:
        return f"Attempt {self.number} of {self.charge}"
