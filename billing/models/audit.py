from __future__ import annotations

from django.db import models


class AuditSeal(models.Model):
    """A link in the tamper-evident chain over the money events and the audit trail.

    Each sealed row's content hash is chained to the previous seal's hash, so changing or deleting a
    sealed row, or a seal, breaks the chain from there on (``manage.py verify_audit_chain``).
    """

    sequence = models.BigIntegerField(unique=True)
    table = models.CharField(max_length=60)
    row_id = models.BigIntegerField()
    row_hash = models.CharField(max_length=64)
    chain_hash = models.CharField(max_length=64)
    sealed_at = models.DateTimeField()

    class Meta:
        ordering = ["sequence"]
        constraints = [models.UniqueConstraint(fields=["table", "row_id"], name="seal_once_per_row")]

    def __str__(self) -> str:
        return f"seal {self.sequence}: {self.table} #{self.row_id}"
