"""Audit entries for rows written with ``bulk_create``, which sends no signals for django-auditlog.

The entries are the ones auditlog's own ``post_save`` receiver would write for a creation (same
content type, representation, changes, correlation id), with the actor and address that the request's
auditlog context carries. Two things make them cheap for a 1,000-event batch (they were two thirds of its
time): the per-model part of auditlog's diff (which fields it tracks, their "before" value, masking, how
each value is read) is worked out once per model rather than once per row (see ``_reader``); and on
PostgreSQL the entries go in with one ``COPY`` instead of a multi-row INSERT, the columns common to all
of them (actor, address, time, correlation id) prepared once rather than per entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from auditlog.diff import get_field_value, get_fields_in_model, get_mask_function, is_primitive
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist
from django.db import connection, models
from django.utils.encoding import smart_str

from billing.audit import audit_bulk_fields


@dataclass(frozen=True)
class _Plan:
    """What auditlog's ``model_instance_diff(None, instance)`` works out that does not depend on the row."""

    fields: tuple[tuple[str, Callable[[models.Model], Any], Any, Callable[[str], str] | None], ...]
    # ^ name, how to read the row's value, the "before" value, the mask
    settings: tuple[bool, bool]  # AUDITLOG_STORE_JSON_CHANGES, AUDITLOG_USE_FK_STRING_REPRESENTATION


_plans: dict[type[models.Model], _Plan] = {}


def _reader(field: Any, sample: models.Model, use_json: bool, fk_as_string: bool) -> Callable[[models.Model], Any]:
    """auditlog's ``get_field_value(row, field, use_json)``, with the work that does not depend on the row
    done once. A reverse relation (``appointment.participants``) reads as its manager's name, such as
    "billing.Participant.None", whatever the row: building a related manager per relation per row was
    most of an appointment's entry. For a foreign key or a plain field, the branch ``get_field_value``
    picks is picked here, sparing it two settings look-ups per field per row; date-times and JSON go
    through ``get_field_value`` itself."""
    if field.one_to_many and field.auto_created and not field.concrete and sample.pk is not None:
        same = get_field_value(sample, field, use_json)
        return lambda row: same
    if use_json or isinstance(field, models.DateTimeField | models.JSONField) or not field.concrete:
        return lambda row: get_field_value(row, field, use_json)
    if not fk_as_string and (field.one_to_one or field.many_to_one) and hasattr(field, "rel_class"):
        attname = field.get_attname()
        return lambda row: smart_str(getattr(row, attname), strings_only=True)
    name = field.name

    def plain(row: models.Model) -> Any:
        value = smart_str(getattr(row, name))
        return str(value) if type(value).__name__ == "__proxy__" else value

    return plain


def _plan(model: type[models.Model], sample: models.Model) -> _Plan:
    use_json = bool(getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False))
    fk_as_string = bool(getattr(settings, "AUDITLOG_USE_FK_STRING_REPRESENTATION", False))
    plan = _plans.get(model)
    if plan is not None and plan.settings == (use_json, fk_as_string):
        return plan
    fields = list(get_fields_in_model(sample))
    options = auditlog.get_model_fields(model)
    if options["include_fields"]:
        fields = [f for f in fields if f.name in options["include_fields"]]
    if options["exclude_fields"]:
        fields = [f for f in fields if f.name not in options["exclude_fields"]]
    mask = get_mask_function(options.get("mask_callable"))
    plan = _Plan(tuple((f.name, _reader(f, sample, use_json, fk_as_string), get_field_value(None, f, use_json),
                        mask if f.name in options["mask_fields"] else None) for f in fields),
                 (use_json, fk_as_string))
    _plans[model] = plan
    return plan


def creation_changes(instance: models.Model) -> dict[str, Any] | None:
    """The same changes as ``auditlog.diff.model_instance_diff(None, instance)``."""
    plan = _plan(type(instance), instance)
    use_json = plan.settings[0]
    diff: dict[str, Any] = {}
    for name, read, old, mask in plan.fields:
        try:
            new = read(instance)
        except (ObjectDoesNotExist, AttributeError):
            new = get_field_value(instance, instance._meta.get_field(name), use_json)  # its default value
        if old == new:
            continue
        if mask is not None:
            diff[name] = (mask(smart_str(old)), mask(smart_str(new)))
        elif not use_json:  # (smart_str(old), smart_str(new)); most values are text already
            diff[name] = (old if type(old) is str else smart_str(old), new if type(new) is str else smart_str(new))
        else:
            diff[name] = (old if is_primitive(old) else smart_str(old), new if is_primitive(new) else smart_str(new))
    return diff or None


# The columns that differ from one entry to the next; the others are the same for the whole call.
_PER_ENTRY = ("content_type_id", "object_pk", "object_id", "object_repr", "changes")
_AS_IS = (str, int, type(None))


def audit_bulk_created(instances: Sequence[models.Model]) -> None:
    if not instances:
        return
    common = audit_bulk_fields(LogEntry.Action.CREATE)
    content_types: dict[type[models.Model], int | None] = {}
    rows = []
    for instance in instances:
        model = type(instance)
        if model not in content_types:
            content_types[model] = ContentType.objects.get_for_model(instance).pk if auditlog.contains(model) else None
        if content_types[model] is None:
            continue
        rows.append((content_types[model], str(instance.pk), instance.pk if isinstance(instance.pk, int) else None,
                     smart_str(instance), creation_changes(instance)))
    if connection.vendor == "postgresql" and rows:
        _copy(LogEntry(**common), rows)
    else:
        LogEntry.objects.bulk_create([LogEntry(**common, **dict(zip(_PER_ENTRY, row, strict=True))) for row in rows])


def _copy(template: LogEntry, rows: list[tuple[Any, ...]]) -> None:
    """INSERT by COPY, each value prepared exactly as ``bulk_create`` would (``pre_save``, ``get_db_prep_save``):
    the columns common to all entries once, from ``template``, the others per entry. Text, whole numbers
    and None are what those fields prepare them to, so only the changes (JSON) go through their field."""
    meta = LogEntry._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    line = [None if f.attname in _PER_ENTRY else f.get_db_prep_save(f.pre_save(template, True), connection)
            for f in fields]
    attnames = [f.attname for f in fields]
    per_entry = [(attnames.index(name), fields[attnames.index(name)]) for name in _PER_ENTRY]
    quote = connection.ops.quote_name
    sql = f"COPY {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in rows:
            for (position, field), value in zip(per_entry, row, strict=True):
                line[position] = value if type(value) in _AS_IS else field.get_db_prep_save(value, connection)
            copy.write_row(line)
