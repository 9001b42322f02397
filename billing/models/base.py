from __future__ import annotations

from django.conf import settings
from django.db import models


class ExternalRecord(models.Model):
    """A record an EHR may push: keyed by the EHR's own id, unique within that source.

    Records staff create in the admin have an empty external id.
    """

    source = models.CharField(max_length=50, blank=True, default="",
                              help_text="The EHR or integration this record came from.")
    external_id = models.CharField("external ID", max_length=100, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @classmethod
    def external_id_constraint(cls, name: str) -> models.UniqueConstraint:
        return models.UniqueConstraint(fields=["source", "external_id"], condition=~models.Q(external_id=""),
                                       name=name)


class StatusEvent(models.Model):
    """One status move of a stateful row: who, when, from, to, why. Append-only."""

    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20)
    at = models.DateTimeField()
    actor = models.CharField(max_length=100, help_text="staff:<username>, api:<source>, system")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="+")
    reason = models.CharField(max_length=300, blank=True)

    class Meta:
        abstract = True
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.from_status or '-'} -> {self.to_status}"
