"""Audit entries for rows written with ``bulk_create``, which sends no signals for django-auditlog.

The entries are the ones auditlog's own ``post_save`` receiver would write for a creation (same
content type, representation, JSON changes, correlation id), with the actor and address that the
request's auditlog context carries. Written in one INSERT for a whole events batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from auditlog.cid import get_cid
from auditlog.context import auditlog_value
from auditlog.diff import model_instance_diff
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.db import models
from django.utils import timezone
from django.utils.encoding import smart_str


def audit_bulk_created(instances: Sequence[models.Model]) -> None:
    if not instances:
        return
    context = auditlog_value.get(None) or {}
    actor = context.get("actor")
    now = timezone.now()
    cid = get_cid()
    entries = []
    for instance in instances:
        if not auditlog.contains(type(instance)):
            continue
        changes = model_instance_diff(None, instance,
                                      use_json_for_changes=getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False))
        entries.append(LogEntry(
            content_type=ContentType.objects.get_for_model(instance), object_pk=str(instance.pk),
            object_id=instance.pk if isinstance(instance.pk, int) else None, object_repr=smart_str(instance),
            action=LogEntry.Action.CREATE, changes=changes, cid=cid, actor=actor,
            actor_email=getattr(actor, "email", None) if actor is not None else None,
            remote_addr=context.get("remote_addr"), remote_port=context.get("remote_port"), timestamp=now))
    LogEntry.objects.bulk_create(entries)
