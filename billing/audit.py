"""Every change to client data is in the audit trail (django-auditlog), with who and when."""

from __future__ import annotations

from auditlog.registry import auditlog


def register_models() -> None:
    from billing import models

    for model in (models.Client, models.Coverage, models.PolicyAcknowledgment, models.Appointment,
                  models.Participant, models.Clinician, models.Practice, models.Charge, models.ReviewItem,
                  models.InsurancePayment):
        if not auditlog.contains(model):
            auditlog.register(model)
