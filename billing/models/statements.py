from __future__ import annotations

from typing import Any

from django.db import models

from billing.models.ledger import AppendOnlyError
from billing.models.payments import ClientLink
from billing.models.people import Client


class StatementRun(models.Model):
    """The monthly batch for one month: one tick at a time claims it (``claimed_at``), and it is finished
    once every client's statement is written, so a month is issued by the schedule once."""

    month = models.DateField(unique=True, help_text="The first day of the month the statements cover.")
    started_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    statements = models.PositiveIntegerField(default=0)
    emails = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-month"]

    def __str__(self) -> str:
        return f"Statements for {self.month:%B %Y}"


class Statement(models.Model):
    """A client's monthly statement as it was issued: the figures are frozen (later ledger entries dated in
    the month change what a new statement would say, never this one). One per client and month.

    closing = opening + charges - payments + refunds + adjustments, every figure from the ledger's entries
    dated (``occurred_on``, the practice's date) in the month; aging is the closing balance by age at the
    month's last day.
    """

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="statements")
    month = models.DateField(help_text="The first day of the month covered.")
    opening_cents = models.IntegerField()
    charges_cents = models.IntegerField(help_text="Sessions and fees (re-pricing included).")
    payments_cents = models.IntegerField(help_text="Payments received, as a positive amount.")
    refunds_cents = models.IntegerField(help_text="Refunds paid back to the client.")
    adjustments_cents = models.IntegerField(help_text="Adjustments, write-offs, waived fees and canceled charges, "
                                                      "signed as posted (negative reduces the balance).")
    closing_cents = models.IntegerField()
    aging_current_cents = models.IntegerField(default=0)
    aging_31_60_cents = models.IntegerField(default=0)
    aging_61_90_cents = models.IntegerField(default=0)
    aging_over_90_cents = models.IntegerField(default=0)
    sessions = models.PositiveIntegerField(default=0, help_text="Sessions charged in the month.")
    lines = models.JSONField(default=list, help_text="The month's ledger entries as listed on the statement.")
    trigger = models.CharField(max_length=20, help_text="schedule, staff or api")
    issued_at = models.DateTimeField()
    emailed_to = models.CharField(max_length=254, blank=True, help_text="Empty: not emailed (no address).")
    pay_link = models.ForeignKey(ClientLink, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        ordering = ["-month", "client_id"]
        constraints = [models.UniqueConstraint(fields=["client", "month"], name="statement_once_per_client_month")]
        indexes = [models.Index(fields=["month"], name="statement_month")]

    def __str__(self) -> str:
        return f"Statement for {self.month:%B %Y}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None:
            raise AppendOnlyError("A statement is kept as it was issued.")
        super().save(*args, **kwargs)
