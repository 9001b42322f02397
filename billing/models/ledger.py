from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models

from billing.models.appointments import Appointment
from billing.models.charges import Charge
from billing.models.people import Client


class LedgerKind(models.TextChoices):
    SESSION_CHARGE = "session_charge", "Session charge"
    FEE = "fee", "No-show / late-cancel fee"
    PAYMENT = "payment", "Card payment"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"
    WRITE_OFF = "write_off", "Write-off"
    WAIVER = "waiver", "Fee waived"
    CHARGE_CANCELED = "charge_canceled", "Charge canceled"


class AppendOnlyError(Exception):
    pass


class LedgerEntry(models.Model):
    """What a client owes, as an append-only list. Positive amounts add to the balance, negative reduce it.

    A balance is the sum of a client's entries; AR aging groups the same sum by ``occurred_on``.
    Nothing here is ever edited or deleted: a mistake is corrected by another entry.
    """

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=20, choices=LedgerKind.choices)
    amount_cents = models.IntegerField(help_text="Positive: the client owes more. Negative: paid or credited.")
    occurred_on = models.DateField(help_text="The date aging counts from (the date of service for charges).")
    appointment = models.ForeignKey(Appointment, on_delete=models.PROTECT, null=True, blank=True,
                                    related_name="ledger_entries")
    charge = models.ForeignKey(Charge, on_delete=models.PROTECT, null=True, blank=True,
                               related_name="ledger_entries")
    memo = models.CharField(max_length=300, blank=True)
    actor = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["client", "occurred_on"], name="ledger_client_date"),
            models.Index(fields=["occurred_on"], name="ledger_date"),
            # Balances are sums per client: an index-only scan (admin "sort by balance" at 100k sessions).
            models.Index(fields=["client"], include=["amount_cents"], name="ledger_client_balance"),
            # AR aging reads the last 90 days' entries of every client (the older ones are the balance less
            # those): an index-only scan of that range.
            models.Index(fields=["occurred_on"], include=["client", "amount_cents"], name="ledger_date_amounts"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.amount_cents}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("Ledger entries are never changed; add a correcting entry instead.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise AppendOnlyError("Ledger entries are never deleted; add a correcting entry instead.")


class ClientBalance(models.Model):
    """A client's balance, the sum of their ledger entries, kept by the database itself: triggers on the
    ledger's table add each statement's new entries per client in the same transaction (migration
    ``client_balances``), whichever way they are written (one entry, the tick's bulk insert, COPY). A client
    with no ledger has no row (balance 0). ``manage.py verify_balances`` compares every row with the
    ledger's own sums; the client list and AR aging read these rows instead of summing the whole ledger.
    """

    client = models.OneToOneField(Client, on_delete=models.CASCADE, primary_key=True, related_name="balance_row")
    balance_cents = models.BigIntegerField(default=0)
    # The same entries netted by age as of AgingDay.as_of (0-30 days, future dates included; 31-60; 61-90):
    # set for every client when the tick rolls the day (aging_roll), then kept by the same triggers.
    aged_0_30_cents = models.BigIntegerField(default=0)
    aged_31_60_cents = models.BigIntegerField(default=0)
    aged_61_90_cents = models.BigIntegerField(default=0)

    class Meta:
        verbose_name = "client balance"

    def __str__(self) -> str:
        return f"{self.client_id}: {self.balance_cents}"


class AgingDay(models.Model):
    """The day ClientBalance's aged amounts are as of (one row). The tick moves it to the practice's today
    (``aging_roll``); AR aging reads the kept amounts when it is today, and the ledger's last 90 days
    otherwise."""

    as_of = models.DateField(null=True, blank=True)

    def __str__(self) -> str:
        return f"aging as of {self.as_of}"


class ReviewKind(models.TextChoices):
    PRICING = "pricing", "Cannot work out what the client owes"
    CHARGE_CAP = "charge_cap", "Charge above the practice's cap"
    PAID_SESSION_CHANGED = "paid_session_changed", "Session changed after payment"
    NO_CARD = "no_card", "No card on file"
    PAYMENT_UNKNOWN = "payment_unknown", "Payment outcome unknown"
    PAYMENT_REFUSED = "payment_refused", "Stripe refused the payment request"
    STRIPE_LINK = "stripe_link", "Stripe customer to link by hand"
    FEE_NO_ACK = "fee_no_ack", "Fee not charged: no current policy acknowledgment"
    WAITING_CHOICE = "waiting_choice", "Charges from before the card was saved, waiting for a choice"
    PLAN_LAPSED = "plan_lapsed", "Payment plan lapsed"
    ESTIMATE_WARNING = "estimate_warning", "Billed nearing $400 above the good faith estimate"
    ESTIMATE_HOLD = "estimate_hold", "Charge held: $400 or more above the good faith estimate"


# Causes about the client rather than one session: one open item per client, whatever the session.
CLIENT_REVIEW_KINDS = (ReviewKind.NO_CARD, ReviewKind.STRIPE_LINK, ReviewKind.WAITING_CHOICE)


class ReviewStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class ReviewItem(models.Model):
    """Something the portal would not decide on its own: it waits here for a person."""

    kind = models.CharField(max_length=30, choices=ReviewKind.choices)
    status = models.CharField(max_length=10, choices=ReviewStatus.choices, default=ReviewStatus.OPEN)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="review_items")
    appointment = models.ForeignKey(Appointment, on_delete=models.CASCADE, null=True, blank=True,
                                    related_name="review_items")
    charge = models.ForeignKey(Charge, on_delete=models.CASCADE, null=True, blank=True,
                               related_name="review_items")
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField()
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    resolution_note = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind", "client", "appointment"], name="review_open_once",
                                    condition=models.Q(status="open")),
            models.UniqueConstraint(fields=["kind", "client"], name="review_open_once_per_client",
                                    condition=models.Q(status="open", kind__in=CLIENT_REVIEW_KINDS)),
        ]
        indexes = [models.Index(fields=["status", "-created_at"], name="review_status_created")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.client}"


class OutsideMethod(models.TextChoices):
    """How a payment taken outside Stripe came in (its charge's ``payment_reference`` starts ``<method>:``)."""

    CASH = "cash", "Cash"
    CHECK = "check", "Check"
    OTHER = "other", "Other"


class StaffActionKind(models.TextChoices):
    CARD_PAYMENT = "card_payment", "Card payment taken by phone"
    OUTSIDE_PAYMENT = "outside_payment", "Payment taken outside Stripe"
    ADJUSTMENT = "adjustment", "Adjustment"
    WRITE_OFF = "write_off", "Write-off"
    REFUND = "refund", "Refund"
    LINK_SENT = "link_sent", "Link or statement emailed"


class StaffAction(models.Model):
    """One thing a staff member did about a client's money from the admin (workflow 15), once per form.

    ``form_key`` comes from the form the staff member filled in: the same form sent twice (a double click,
    the browser's retry) finds its key taken and does nothing more. The money itself is in the ledger and
    the charges; this row says who did it, why, and with what reference, and is in the audit trail.
    """

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="staff_actions")
    kind = models.CharField(max_length=20, choices=StaffActionKind.choices)
    form_key = models.CharField(max_length=64, unique=True)
    amount_cents = models.IntegerField(default=0, help_text="As posted to the ledger: negative reduces the balance.")
    method = models.CharField(max_length=20, blank=True, help_text="Cash, check, other; or the link sent.")
    reference = models.CharField(max_length=100, blank=True, help_text="Check number, receipt number...")
    reason = models.CharField(max_length=300, blank=True)
    payment = models.ForeignKey(Charge, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                                help_text="The payment this action took or recorded.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("take_payment", "Can take a card payment by phone or record a payment taken outside Stripe"),
                       ("adjust_balance", "Can post an adjustment or a write-off")]
        indexes = [models.Index(fields=["client", "-created_at"], name="staff_action_client")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.client}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("Staff actions are never changed.")
        super().save(*args, **kwargs)
