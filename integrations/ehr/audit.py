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

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg.abc
from auditlog.diff import get_field_value, get_fields_in_model, get_mask_function, is_primitive
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist
from django.db import connection, models
from django.utils.encoding import smart_str
from psycopg.adapt import PyFormat, Transformer

from billing.audit import audit_bulk_fields


@dataclass(frozen=True)
class _Plan:
    """What auditlog's ``model_instance_diff(None, instance)`` works out that does not depend on the row."""

    fields: tuple[tuple[str, Callable[[models.Model], Any], Any, Callable[[str], str] | None], ...]
    # ^ name, how to read the row's value, the "before" value, the mask
    settings: tuple[bool, bool, bool]  # AUDITLOG_STORE_JSON_CHANGES, AUDITLOG_USE_FK_STRING_REPRESENTATION, USE_TZ


_plans: dict[type[models.Model], _Plan] = {}


def _reader(field: Any, sample: models.Model, use_json: bool, fk_as_string: bool) -> Callable[[models.Model], Any]:
    """auditlog's ``get_field_value(row, field, use_json)``, with the work that does not depend on the row
    done once. A reverse relation (``appointment.participants``) reads as its manager's name, such as
    "billing.Participant.None", whatever the row: building a related manager per relation per row was
    most of an appointment's entry. For a foreign key or a plain field, the branch ``get_field_value``
    picks is picked here, sparing it two settings look-ups per field per row; date-times and JSON get
    readers of their own."""
    if field.one_to_many and field.auto_created and not field.concrete and sample.pk is not None:
        same = get_field_value(sample, field, use_json)
        return lambda row: same
    if use_json or not field.concrete:
        return lambda row: get_field_value(row, field, use_json)
    if isinstance(field, models.DateTimeField):
        return _moment_reader(field)
    if isinstance(field, models.JSONField):
        return _document_reader(field)
    if not fk_as_string and (field.one_to_one or field.many_to_one) and hasattr(field, "rel_class"):
        attname = field.get_attname()
        return lambda row: smart_str(getattr(row, attname), strings_only=True)
    name = field.name

    def plain(row: models.Model) -> Any:
        value = smart_str(getattr(row, name))
        return str(value) if type(value).__name__ == "__proxy__" else value

    return plain


def _moment_reader(field: models.DateTimeField[Any, Any]) -> Callable[[models.Model], Any]:
    """``get_field_value`` of a date-time: an aware one as naive UTC, read without its ``to_python`` (which
    returns a date-time as it is) or its settings look-up for each row."""
    name, use_tz = field.attname, bool(settings.USE_TZ)

    def read(row: models.Model) -> Any:
        value = getattr(row, name)
        if type(value) is not dt.datetime:
            return get_field_value(row, field)
        return value.astimezone(dt.UTC).replace(tzinfo=None) if use_tz and value.utcoffset() is not None else value

    return read


def _document_reader(field: models.JSONField[Any]) -> Callable[[models.Model], Any]:
    """``get_field_value`` of a JSON field: its value as sorted JSON text (``to_python`` returns it as it is)."""
    name, encoder = field.attname, field.encoder

    def read(row: models.Model) -> Any:
        value = getattr(row, name)
        try:
            return json.dumps(value, sort_keys=True, cls=encoder)
        except TypeError:
            return value

    return read


def _plan(model: type[models.Model], sample: models.Model) -> _Plan:
    use_json = bool(getattr(settings, "AUDITLOG_STORE_JSON_CHANGES", False))
    fk_as_string = bool(getattr(settings, "AUDITLOG_USE_FK_STRING_REPRESENTATION", False))
    plan = _plans.get(model)
    if plan is not None and plan.settings == (use_json, fk_as_string, settings.USE_TZ):
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
                 (use_json, fk_as_string, settings.USE_TZ))
    _plans[model] = plan
    return plan


def creation_changes(instance: models.Model, plan: _Plan | None = None) -> dict[str, Any] | None:
    """The same changes as ``auditlog.diff.model_instance_diff(None, instance)``; ``plan``, the model's
    ``_plan``, when the caller has it already."""
    plan = plan or _plan(type(instance), instance)
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


def audit_bulk_created(instances: Sequence[models.Model]) -> None:
    """Creation entries for rows written in bulk, given as model instances."""
    entries = []
    for instance in instances:
        content_type = _content_type(type(instance))
        if content_type is not None:
            entries.append((content_type, instance.pk, smart_str(instance), creation_changes(instance)))
    _write(entries)


def audit_bulk_created_columns(model: type[models.Model], columns: Mapping[str, Sequence[Any]]) -> None:
    """Creation entries for rows of ``model`` written in bulk from columns (``billing.bulk.bulk_insert_values``),
    ``{attribute: values}`` with the primary key and every field, and any related row the model's
    ``__str__`` reads, under its field's name (a participant shows its client's name): the entries are
    worked out while they are being sent, when no query can be made.

    One scratch instance takes each row's values in turn, so the representation is the model's own
    ``__str__`` and the changes come from the same readers as ``creation_changes``, without building
    a model instance per row."""
    content_type = _content_type(model)
    if content_type is None:
        return
    scratch = model()
    names = list(columns)

    def entries() -> Iterator[_Entry]:
        plan = None
        for values in zip(*(columns[name] for name in names), strict=True):
            for name, value in zip(names, values, strict=True):
                setattr(scratch, name, value)
            plan = plan or _plan(model, scratch)  # once its primary key is set (see ``_reader``)
            yield content_type, scratch.pk, smart_str(scratch), creation_changes(scratch, plan)

    _write(entries())


_Entry = tuple[int, Any, str, dict[str, Any] | None]  # content type, primary key, representation, changes


def _content_type(model: type[models.Model]) -> int | None:
    return ContentType.objects.get_for_model(model).pk if auditlog.contains(model) else None


def _write(entries: Iterable[_Entry]) -> None:
    """Insert the entries with the fields common to one bulk write (``audit_bulk_fields``)."""
    common = audit_bulk_fields(LogEntry.Action.CREATE)
    if connection.vendor != "postgresql":
        LogEntry.objects.bulk_create([
            LogEntry(**common, content_type_id=content_type, object_pk=str(pk),
                     object_id=pk if isinstance(pk, int) else None, object_repr=text, changes=changes)
            for content_type, pk, text, changes in entries])
        return
    _copy(LogEntry(**common), entries)


def _copy(template: LogEntry, entries: Iterable[_Entry]) -> None:
    """INSERT by COPY, each value prepared as ``bulk_create`` would (``pre_save``, ``get_db_prep_save``).

    The columns common to all entries are prepared and turned into COPY's text once, from ``template``;
    per entry only its own columns are, its changes as the JSON text ``get_db_prep_save`` would send.
    COPY streams: the database stores each entry while the next ones are worked out (it takes about
    as long to index an entry as to work one out)."""
    meta = LogEntry._meta
    fields = [f for f in meta.concrete_fields if not f.primary_key]
    own = [meta.get_field(name) for name in _PER_ENTRY]
    common = [f for f in fields if f.attname not in _PER_ENTRY]
    encoder = meta.get_field("changes").encoder
    quote = connection.ops.quote_name
    sql = (f"COPY {quote(meta.db_table)} ({', '.join(quote(f.column) for f in [*own, *common])}) FROM STDIN")
    with connection.wrap_database_errors, connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        to_text = Transformer(cursor.cursor)
        tail = [_text(to_text, f.get_db_prep_save(f.pre_save(template, True), connection)) for f in common]
        for content_type, pk, text, changes in entries:
            copy.write_row((content_type, str(pk), pk if isinstance(pk, int) else None, text,
                            None if changes is None else json.dumps(changes, cls=encoder), *tail))


def _text(transformer: psycopg.abc.Transformer, value: Any) -> str | None:
    """``value`` as psycopg writes it in COPY's text format (which the column's type then reads)."""
    text = None if value is None else transformer.get_dumper(value, PyFormat.TEXT).dump(value)
    return None if text is None else bytes(text).decode()


_PER_ENTRY = ("content_type_id", "object_pk", "object_id", "object_repr", "changes")
