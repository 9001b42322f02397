"""Every change to client data is in the audit trail (django-auditlog), with who and when."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from auditlog.cid import get_cid
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.models.signals import pre_save
from django.utils import timezone
from django.utils.encoding import smart_str

from billing import models as billing_models


def register_models() -> None:
    for model in (billing_models.Client, billing_models.Coverage, billing_models.PolicyAcknowledgment,
                  billing_models.Appointment, billing_models.Participant, billing_models.Clinician,
                  billing_models.Practice, billing_models.Charge, billing_models.ReviewItem,
                  billing_models.InsurancePayment, billing_models.StaffAction, billing_models.Remittance,
                  billing_models.RemittanceLine, billing_models.GoodFaithEstimate):
        if not auditlog.contains(model):
            auditlog.register(model)


def audit_bulk_fields(action: int) -> dict[str, Any]:
    """The fields every entry of one bulk write shares: action, correlation id, time, and the actor,
    address and ``via`` of the surrounding auditlog context (``set_actor``, the request's middleware,
    ``acting_as``). The context is resolved once, by LogEntry's ``pre_save`` as for auditlog's own
    entries (rows written in bulk send no signals; resolving it may cost a query)."""
    probe = LogEntry()
    pre_save.send(sender=LogEntry, instance=probe, raw=False, using="default", update_fields=None)
    return {"action": action, "cid": get_cid(), "timestamp": timezone.now(),
            **{name: getattr(probe, name) for name in ("actor_id", "actor_email", "remote_addr", "remote_port",
                                                       "additional_data")}}


def audit_bulk_updated(changed: Sequence[tuple[models.Model, models.Model]], *, fields: Sequence[str]) -> None:
    """The audit entries auditlog's receiver would write had each ``(before, after)`` pair been saved
    with ``update_fields=fields``; for rows changed with a bulk update, which sends no signals."""
    # billing.audit.bulk imports this module (``audit_bulk_fields``): imported here, when first used.
    from billing.audit.bulk import BulkAudit, audit_entries_write

    use_json = bool(getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False))
    entries = []
    for before, after in changed:
        if not auditlog.contains(type(after)):
            continue
        diff = model_instance_diff(before, after, fields_to_check=fields, use_json_for_changes=use_json)
        if diff:
            entries.append((ContentType.objects.get_for_model(after).pk, after.pk, smart_str(after), diff))
    if entries:
        connections[DEFAULT_DB_ALIAS].ensure_connection()
        # One INSERT ... FROM UNNEST with the shared fields bound once (bulk_create spelt out every field of
        # every entry: most of the tick's bookkeeping per charge).
        audit_entries_write(BulkAudit(audit_bulk_fields(LogEntry.Action.UPDATE), {}, connections[DEFAULT_DB_ALIAS]),
                            entries)
