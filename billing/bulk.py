"""Writing many rows in one statement, at a fraction of the Python cost of Django's bulk methods.

``rows_update``: Django's ``bulk_update`` builds a ``CASE WHEN pk = ... THEN ...`` expression per field and row, and
resolving those expressions costs more Python time than the database spends on the update (it was
most of the tick's bookkeeping per charge). On PostgreSQL ``rows_update`` sends one
``UPDATE ... FROM (VALUES ...)`` instead, each value prepared as ``save()`` would prepare it.

``bulk_insert_values``: ``bulk_create`` for a batch's thousand new rows, given column by column, at a
fraction of its Python cost (building 1,000 model instances alone costs as much as inserting them).

On PostgreSQL it sends what ``bulk_create`` sends there (one ``INSERT ... SELECT * FROM UNNEST(...)
RETURNING id``, though with the arrays bound in binary rather than spelt out in the SQL) and returns
the primary keys. What it saves besides the instances is the preparation of the values: ``bulk_create``
has each field prepare each value (``get_db_prep_save``), 12,000 calls for 1,000 appointments. A batch
repeats most values (its source, status, clinician, service code; the moment it is written), so here
each field prepares each distinct value once, and a value its field would send unchanged (a whole
number, text, an aware moment; see ``_as_is``) is not prepared at all. No signals are sent, as with
``bulk_create``.

``ids_reserve`` and ``rows_send``: the same INSERT on a cursor in pipeline mode, sent and not waited
for, the primary keys reserved from the table's sequence beforehand (integrations/ehr/api/events.py sends
a batch's new appointments so while it reads the next events).

``AnyOf``: ``__in`` for a thousand values, as one array parameter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import psycopg
from django.db import connection, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Lookup
from django.db.models.lookups import In


def rows_update(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write ``fields`` of each row (already set on the instances) to the database, in one statement."""
    if not rows:
        return
    meta = rows[0]._meta
    columns: list[models.Field[Any, Any]] = [meta.pk, *(meta.get_field(name) for name in fields)]  # type: ignore[list-item]
    quote = connection.ops.quote_name
    casts = ", ".join(f"%s::{column.db_type(connection)}" for column in columns)
    values = ", ".join(f"({casts})" for _ in rows)
    names = [quote(str(column.column)) for column in columns]
    assignments = ", ".join(f"{name} = v.{name}" for name in names[1:])
    sql = (f"UPDATE {quote(meta.db_table)} AS t SET {assignments} FROM (VALUES {values}) AS v ({', '.join(names)}) "
           f"WHERE t.{names[0]} = v.{names[0]}")
    params = [column.get_db_prep_save(getattr(row, column.attname), connection) for row in rows for column in columns]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


_SCALARS = (str, int, float, bool, type(None))


def _key(value: Any) -> Any:
    """A dictionary key for a value whose prepared form depends only on the value (None: one to remember by
    identity instead)."""
    if type(value) is list:
        return (list, tuple((type(item), item) for item in value)) if all(
            type(item) in _SCALARS for item in value) else None
    try:
        hash(value)
    except TypeError:
        return None
    return type(value), value


def bulk_insert_values(model: type[models.Model], columns: Mapping[str, Sequence[Any]],
                       db: BaseDatabaseWrapper | None = None) -> list[Any]:
    """Insert rows given column by column, ``{attname: values}`` with every column but the primary key
    named (``auto_now`` fields included); returns their primary keys, in order. Objects they point to
    must exist. A unique or lock conflict raises Django's IntegrityError or OperationalError.

    ``db``: the connection (default: this thread's), which the caller may have looked up already."""
    db = db or connections[connection.alias]  # the connection itself: the proxy looks it up on each use
    fields = _fields(model)
    assert set(columns) == {f.attname for f in fields}, "give every column"
    sql, arrays = _insert(model, fields, columns, db, f" RETURNING {db.ops.quote_name(str(model._meta.pk.column))}")
    db.ensure_connection()
    # Django's own cursor binds parameters client-side, spelling 12,000 values out as SQL text for the
    # server to parse back; a psycopg cursor on the same connection (and transaction) sends them bound,
    # in binary, which takes the server about half the time. ``wrap_database_errors``: a unique or lock
    # conflict is Django's IntegrityError or OperationalError, as it would be from the ORM.
    with db.wrap_database_errors, psycopg.Cursor(db.connection) as cursor:
        cursor.execute(sql, arrays)
        return [row[0] for row in cursor.fetchall()]


def instances_insert(objs: Sequence[models.Model], db: BaseDatabaseWrapper | None = None) -> None:
    """``bulk_insert_values`` for unsaved model instances of one model (built as ``save()`` would write them,
    ``auto_now`` fields filled in by the caller): every column read off the instances, so a field added
    to the model is written too; each instance gets its primary key."""
    if not objs:
        return
    model = type(objs[0])
    columns = {f.attname: [getattr(obj, f.attname) for obj in objs] for f in _fields(model)}
    for obj, pk in zip(objs, bulk_insert_values(model, columns, db), strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = (db or connection).alias


def instances_send(objs: Sequence[models.Model], db: BaseDatabaseWrapper, cursor: psycopg.Cursor[Any]) -> None:
    """``instances_insert`` on a cursor in pipeline mode (``rows_send``), with the instances' primary keys if
    they have them (``ids_reserve``; else the instances are left without)."""
    if not objs:
        return
    model = type(objs[0])
    fields = _fields(model)
    if all(obj.pk is not None for obj in objs):
        fields = [model._meta.pk, *fields]
    columns = {f.attname: [getattr(obj, f.attname) for obj in objs] for f in fields}
    rows_send(model, columns, db, cursor)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = db.alias


def _fields(model: type[models.Model]) -> list[Any]:
    assert not model._meta.parents, "multi-table inheritance is bulk_create's business"
    return [f for f in model._meta.local_concrete_fields if not f.primary_key]


_INTEGERS = (models.IntegerField, models.BigIntegerField, models.SmallIntegerField, models.PositiveIntegerField,
             models.PositiveBigIntegerField, models.PositiveSmallIntegerField, models.AutoField, models.BigAutoField,
             models.SmallAutoField)


def _as_is(field: Any) -> Callable[[Any], bool] | None:
    """Which values ``field.get_db_prep_save`` returns unchanged on PostgreSQL (a whole number for an
    integer column, text for a text column, an aware moment for a date-time), to pass them without
    the call: most of a batch's values are such. Only Django's own field classes: a subclass may
    prepare its values otherwise."""
    if isinstance(field, models.ForeignKey):
        return _as_is(field.target_field)
    if type(field) in _INTEGERS:
        return lambda value: type(value) is int
    if type(field) in (models.CharField, models.TextField):
        return lambda value: type(value) is str
    if type(field) is models.DateTimeField:
        return lambda value: type(value) is dt.datetime and value.tzinfo is not None
    return None


def ids_reserve(model: type[models.Model], n: int, db: BaseDatabaseWrapper) -> list[int]:
    """``n`` primary keys from the table's own sequence (PostgreSQL), for rows sent later with them
    (``rows_send``). One not used is a gap in the ids, as a rolled-back insert leaves."""
    meta = model._meta
    with db.wrap_database_errors, psycopg.Cursor(db.connection) as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                       [meta.db_table, meta.pk.column, n])
        return [row[0] for row in cursor.fetchall()]


def rows_send(model: type[models.Model], columns: Mapping[str, Sequence[Any]], db: BaseDatabaseWrapper,
              cursor: psycopg.Cursor[Any]) -> None:
    """``bulk_insert_values`` on PostgreSQL for a cursor in pipeline mode: the INSERT is sent, and the
    database writes the rows while the caller goes on; errors come when the pipeline is synchronised.
    Nothing comes back, so the primary key is given among the columns (``ids_reserve``) if the caller
    needs it."""
    pk, fields = model._meta.pk, _fields(model)
    names = {f.attname for f in fields}
    assert names <= set(columns) <= names | {pk.attname}, "give every column (and the primary key, or not)"
    cursor.execute(*_insert(model, [pk, *fields] if pk.attname in columns else fields, columns, db))


def _insert(model: type[models.Model], fields: Sequence[Any], columns: Mapping[str, Sequence[Any]],
            db: BaseDatabaseWrapper, returning: str = "") -> tuple[str, list[list[Any]]]:
    """The INSERT of ``columns`` and its parameters: one binary array per column, each value prepared
    by its field (once per distinct value, and not at all where ``_as_is``)."""
    arrays = []
    for field in fields:
        prepared: dict[Any, Any] = {}
        array = []
        as_is = _as_is(field)
        for value in columns[field.attname]:
            if as_is is not None and as_is(value):
                array.append(value)
                continue
            # An unhashable value (a dict, say) is remembered by identity: a column that repeats one
            # object is prepared once, and every object is alive, hence its id its own, for the call.
            key = _key(value) or (id, id(value))
            if key not in prepared:
                prepared[key] = field.get_db_prep_save(value, db)
            array.append(prepared[key])
        arrays.append(array)
    quote = db.ops.quote_name
    unnest = ", ".join(f"%b::{field.db_type(db).split('(')[0]}[]" for field in fields)
    sql = (f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "
           f"SELECT * FROM UNNEST({unnest}){returning}")
    return sql, arrays


class AnyOf(Lookup):
    """``field IN (values)``, sent on PostgreSQL as ``field = ANY(%s)`` with the values as one array.

    For a batch's thousand external ids, ``__in`` builds and binds a thousand parameters (Django compiles
    each, and psycopg splits the query text at each), which cost more than the query. The index on the
    column serves ``= ANY`` as it serves ``IN``. Used as ``filter(AnyOf(F("external_id"), ids))``.
    """

    lookup_name = "any_of"
    prepare_rhs = False

    def get_db_prep_lookup(self, value: Any, connection: Any) -> tuple[str, list[Any]]:  # type: ignore[override]
        return "%s", [list(value)]

    def as_sql(self, compiler: Any, connection: Any) -> tuple[str, Any]:
        return compiler.compile(In(self.lhs, list(self.rhs)))

    def as_postgresql(self, compiler: Any, connection: Any) -> tuple[str, Any]:
        lhs, lhs_params = self.process_lhs(compiler, connection)
        rhs, rhs_params = self.process_rhs(compiler, connection)
        return f"{lhs} = ANY({rhs})", (*lhs_params, *rhs_params)
