from __future__ import annotations

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
