"""Every change to client data is in the audit trail (django-auditlog), with who and when."""

from __future__ import annotations

from collections.abc import Sequence

from auditlog.cid import get_cid
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.db.models.signals import pre_save
from django.utils import timezone
from django.utils.encoding import smart_str


def register_models() -> None:
    from billing import models

    for model in (models.Client, models.Coverage, models.PolicyAcknowledgment, models.Appointment,
                  models.Participant, models.Clinician, models.Practice, models.Charge, models.ReviewItem,
                  models.InsurancePayment):
        if not auditlog.contains(model):
            auditlog.register(model)


def audit_bulk_updated(changed: Sequence[tuple[models.Model, models.Model]], *, fields: Sequence[str]) -> None:
    """The audit entries auditlog's ``pre_save`` receiver would write had each ``(before, after)`` pair
    been saved with ``update_fields=fields``; for rows changed with ``bulk_update``, which sends no
    signals. The actor, address and ``via`` of the surrounding ``set_actor``/``acting_as`` block are
    filled in by LogEntry's ``pre_save`` as for auditlog's own entries: once, then copied to the rest
    (the context is the same for all, and resolving it may cost a query)."""
    use_json = bool(getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False))
    now = timezone.now()
    cid = get_cid()
    entries = []
    for before, after in changed:
        if not auditlog.contains(type(after)):
            continue
        diff = model_instance_diff(before, after, fields_to_check=fields, use_json_for_changes=use_json)
        if not diff:
            continue
        entry = LogEntry(content_type=ContentType.objects.get_for_model(after), object_pk=str(after.pk),
                         object_id=after.pk if isinstance(after.pk, int) else None, object_repr=smart_str(after),
                         action=LogEntry.Action.UPDATE, changes=diff, cid=cid, timestamp=now)
        entries.append(entry)
    if not entries:
        return
    first = entries[0]
    pre_save.send(sender=LogEntry, instance=first, raw=False, using="default", update_fields=None)
    for entry in entries[1:]:
        for name in _CONTEXT_FIELDS:
            setattr(entry, name, getattr(first, name))
    LogEntry.objects.bulk_create(entries)


# What auditlog's context (``set_actor``, ``set_extra_data``) may set on an entry.
_CONTEXT_FIELDS = ("actor_id", "actor_email", "remote_addr", "remote_port", "additional_data")
