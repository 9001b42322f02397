"""Writing many rows' changes in one statement.

Django's ``bulk_update`` builds a ``CASE WHEN pk = ... THEN ...`` expression per field and row, and
resolving those expressions costs more Python time than the database spends on the update (it was
most of the tick's bookkeeping per charge). On PostgreSQL ``rows_update`` sends one
``UPDATE ... FROM (VALUES ...)`` instead, each value prepared as ``save()`` would prepare it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connection, models


def rows_update(rows: Sequence[models.Model], fields: Sequence[str]) -> None:
    """Write ``fields`` of each row (already set on the instances) to the database, in one statement."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        type(rows[0])._default_manager.bulk_update(rows, fields)
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
