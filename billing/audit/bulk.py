"""Audit entries for rows written in bulk, which send no signals for django-auditlog.

The entries are the ones auditlog's own ``post_save`` receiver would write for a creation (same
content type, representation, changes, correlation id), with the actor and address that the request's
auditlog context carries (``BulkAudit``, worked out where that context is set). What keeps them cheap for
a 1,000-event batch (they were two thirds of its time): the per-model part of auditlog's diff (which
fields it tracks, their "before" value, masking, how each value is read, and the changes that are the
same for every row) is worked out once per model (``_plan``); rows given as columns take turns on one
scratch instance rather than each building its own (``audit_bulk_created_columns``); and on PostgreSQL
the entries go in with one ``INSERT ... FROM UNNEST``, the columns common to all of them prepared once,
on a cursor that may be in pipeline mode, so that the database stores them while the batch reads on.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from auditlog.diff import get_field_value, get_fields_in_model, get_mask_function, is_primitive
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.conf import settings
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ObjectDoesNotExist
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.encoding import smart_str

from billing.audit.trail import audit_bulk_fields


@dataclass(frozen=True)
class _Plan:
    """What auditlog's ``model_instance_diff(None, instance)`` works out that does not depend on the row."""

    constant: dict[str, tuple[Any, Any]]  # the changes that are the same for every row (see ``_plan``)
    fields: tuple[tuple[str, Callable[[models.Model], Any], Any, Callable[[str], str] | None], ...]
    # ^ the others: name, how to read the row's value, the "before" value, the mask
    settings: tuple[bool, bool, bool]  # AUDITLOG_STORE_JSON_CHANGES, AUDITLOG_USE_FK_STRING_REPRESENTATION, USE_TZ


_plans: dict[type[models.Model], _Plan] = {}


def _reader(field: Any, use_json: bool, fk_as_string: bool) -> Callable[[models.Model], Any]:
    """auditlog's ``get_field_value(row, field, use_json)``, with the work that does not depend on the row
    done once: for a foreign key or a plain field, the branch ``get_field_value`` picks is picked here,
    sparing it two settings look-ups per field per row; date-times and JSON get readers of their own."""
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
        value = getattr(row, name)
        if type(value) is str:
            return value
        value = smart_str(value)
        return str(value) if type(value).__name__ == "__proxy__" else value

    return plain


def _moment_reader(field: models.DateTimeField[Any, Any]) -> Callable[[models.Model], Any]:
    """``get_field_value`` of a date-time: an aware one as naive UTC, read without its ``to_python`` (which
    returns a date-time as it is) or its settings look-up for each row."""
    name, use_tz = field.attname, bool(settings.USE_TZ)

    def read(row: models.Model) -> Any:
        value = getattr(row, name)
        if value is None:
            return None
        if type(value) is not dt.datetime:
            return get_field_value(row, field)
        return value.astimezone(dt.UTC).replace(tzinfo=None) if use_tz and value.utcoffset() is not None else value

    return read


def _document_reader(field: models.JSONField[Any]) -> Callable[[models.Model], Any]:
    """``get_field_value`` of a JSON field: its value as sorted JSON text (``to_python`` returns it as it is).
    The encoder is the one ``json.dumps(value, sort_keys=True, cls=field.encoder)`` builds, built once; a
    short list of text (diagnosis codes) is remembered, since a schedule repeats a few of them."""
    name = field.attname
    encode = (field.encoder or json.JSONEncoder)(sort_keys=True).encode
    texts: dict[tuple[str, ...], str] = {}

    def read(row: models.Model) -> Any:
        value = getattr(row, name)
        if type(value) is list and len(value) < 20 and all(type(item) is str for item in value):
            key = tuple(value)
            text = texts.get(key)
            if text is None:
                text = encode(value)
                if len(texts) < 1000:  # the reader lasts as long as the process: its memory is bounded
                    texts[key] = text
            return text
        try:
            return encode(value)
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
    # A reverse relation (``appointment.participants``) reads as its manager's name, such as
    # "billing.Participant.None", whatever the row (once it has a primary key): its change is worked out
    # once. Building a related manager per relation per row was most of an appointment's entry.
    same = {f.name for f in fields if f.one_to_many and f.auto_created and not f.concrete and sample.pk is not None}
    constant = {}
    for f in fields:
        if f.name in same:
            change = _change(get_field_value(None, f, use_json), get_field_value(sample, f, use_json),
                             mask if f.name in options["mask_fields"] else None, use_json)
            if change is not None:
                constant[f.name] = change
    varying = tuple((f.name, _reader(f, use_json, fk_as_string), get_field_value(None, f, use_json),
                     mask if f.name in options["mask_fields"] else None) for f in fields if f.name not in same)
    plan = _Plan(constant, varying, (use_json, fk_as_string, settings.USE_TZ))
    _plans[model] = plan
    return plan


def creation_changes(instance: models.Model, plan: _Plan | None = None) -> dict[str, Any] | None:
    """The same changes as ``auditlog.diff.model_instance_diff(None, instance)``; ``plan``, the model's
    ``_plan``, when the caller has it already."""
    plan = plan or _plan(type(instance), instance)
    use_json = plan.settings[0]
    diff: dict[str, Any] = dict(plan.constant)
    for name, read, old, mask in plan.fields:
        try:
            new = read(instance)
        except (ObjectDoesNotExist, AttributeError):
            new = get_field_value(instance, instance._meta.get_field(name), use_json)  # its default value
        if old == new:
            continue
        if mask is None and not use_json and type(old) is str:  # most changes: text before, and mostly after
            diff[name] = (old, new if type(new) is str else str(new) if type(new) in _AS_TEXT else smart_str(new))
        else:
            diff[name] = _change(old, new, mask, use_json)
    return diff or None


# Types whose ``smart_str`` is their ``str``.
_AS_TEXT = (int, float, bool, dt.datetime, dt.date, Decimal, type(None))


def _change(old: Any, new: Any, mask: Callable[[str], str] | None, use_json: bool) -> tuple[Any, Any] | None:
    """The pair ``model_instance_diff`` records for a field whose value went from ``old`` to ``new``."""
    if old == new:
        return None
    if mask is not None:
        return mask(smart_str(old)), mask(smart_str(new))
    if not use_json:
        return smart_str(old), smart_str(new)
    return old if is_primitive(old) else smart_str(old), new if is_primitive(new) else smart_str(new)


@dataclass(frozen=True)
class BulkAudit:
    """What entries for rows written in bulk take from where the write was asked for: the fields they
    share (actor, address, ``via``, correlation id, time; ``audit_bulk_fields``, which may query), the
    models' content types, and the connection. Worked out before a batch's rows are sent in pipeline
    mode, when no query can be made until the pipeline is synchronised."""

    common: dict[str, Any]
    content_types: dict[type[models.Model], int | None]
    db: BaseDatabaseWrapper


def bulk_audit(models_: Iterable[type[models.Model]]) -> BulkAudit:
    connections[DEFAULT_DB_ALIAS].ensure_connection()
    return BulkAudit(audit_bulk_fields(LogEntry.Action.CREATE),
                     {model: ContentType.objects.get_for_model(model).pk if auditlog.contains(model) else None
                      for model in models_},
                     connections[DEFAULT_DB_ALIAS])


def audit_bulk_created(instances: Sequence[models.Model], audit: BulkAudit | None = None,
                       cursor: psycopg.Cursor[Any] | None = None) -> None:
    """Creation entries for rows written in bulk, given as model instances; ``audit`` when the caller has it
    (naming their models), ``cursor`` as for ``audit_bulk_created_columns``."""
    if not instances:
        return
    audit = audit or bulk_audit({type(instance) for instance in instances})
    _write(audit, [(content_type, instance.pk, smart_str(instance), creation_changes(instance))
                   for instance in instances if (content_type := audit.content_types[type(instance)]) is not None],
           cursor)


def audit_bulk_created_columns(audit: BulkAudit, model: type[models.Model], columns: Mapping[str, Sequence[Any]],
                               cursor: psycopg.Cursor[Any] | None = None) -> None:
    """Creation entries for rows of ``model`` written in bulk from columns (``billing.bulk``), ``{attribute:
    values}`` with the primary key and every field, and any related row the model's ``__str__`` reads,
    under its field's name (a participant shows its client's name). ``cursor``: a psycopg cursor in
    pipeline mode, to send the entries on without waiting for them (as ``billing.bulk.rows_send``).

    One scratch instance takes each row's values in turn, so the representation is the model's own
    ``__str__`` and the changes come from the same readers as ``creation_changes``, without building
    a model instance per row."""
    content_type = audit.content_types[model]
    if content_type is None:
        return
    scratch = model()
    names = list(columns)
    plan = None
    entries = []
    for values in zip(*(columns[name] for name in names), strict=True):
        for name, value in zip(names, values, strict=True):
            setattr(scratch, name, value)
        plan = plan or _plan(model, scratch)  # once its primary key is set (see ``_reader``)
        entries.append((content_type, scratch.pk, smart_str(scratch), creation_changes(scratch, plan)))
    _write(audit, entries, cursor)


_Entry = tuple[int, Any, str, dict[str, Any] | None]  # content type, primary key, representation, changes


def audit_entries_write(audit: BulkAudit, entries: list[_Entry]) -> None:
    """Entries worked out by the caller (an update's changes, ``audit_bulk_updated``), written in one statement."""
    _write(audit, entries)


def _write(audit: BulkAudit, entries: list[_Entry], cursor: psycopg.Cursor[Any] | None = None) -> None:
    if not entries:
        return
    statement = _insert(audit, entries)
    if cursor is not None:
        cursor.execute(*statement)
        return
    with audit.db.wrap_database_errors, psycopg.Cursor(audit.db.connection) as own:
        own.execute(*statement)


def _insert(audit: BulkAudit, entries: list[_Entry]) -> tuple[str, list[Any]]:
    """One ``INSERT ... SELECT ... FROM UNNEST``, each value prepared as ``bulk_create`` would (``pre_save``,
    ``get_db_prep_save``): the columns common to all entries once, as plain parameters; per entry its
    own five, as arrays, its changes as the JSON text ``get_db_prep_save`` would send. Sent on a psycopg
    cursor of the connection itself, not Django's, which belongs to one thread."""
    db, meta, template = audit.db, LogEntry._meta, LogEntry(**audit.common)
    own = [meta.get_field(name) for name in _PER_ENTRY]
    common = [f for f in meta.concrete_fields if not f.primary_key and f.attname not in _PER_ENTRY]
    encoder = meta.get_field("changes").encoder
    content_types, pks, texts, changes = zip(*entries, strict=True)
    arrays = [list(content_types), [str(pk) for pk in pks], [pk if isinstance(pk, int) else None for pk in pks],
              list(texts), [None if c is None else json.dumps(c, cls=encoder) for c in changes]]
    quote = db.ops.quote_name
    names = [quote(f.column) for f in own]
    unnest = ", ".join(f"%b::{'text' if f.attname == 'changes' else f.db_type(db).split('(')[0]}[]" for f in own)
    per_entry = ", ".join(f"e.{name}::jsonb" if f.attname == "changes" else f"e.{name}"
                          for f, name in zip(own, names, strict=True))
    shared = ", ".join(f"%s::{f.db_type(db)}" for f in common)
    sql = (f"INSERT INTO {quote(meta.db_table)} ({', '.join([*names, *(quote(f.column) for f in common)])}) "
           f"SELECT {per_entry}, {shared} FROM UNNEST({unnest}) AS e ({', '.join(names)})")
    return sql, [*(f.get_db_prep_save(f.pre_save(template, True), db) for f in common), *arrays]


_PER_ENTRY = ("content_type_id", "object_pk", "object_id", "object_repr", "changes")
