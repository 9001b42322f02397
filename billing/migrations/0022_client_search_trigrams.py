"""Trigram indexes for searching clients by any part of a name, email or phone (PostgreSQL's pg_trgm).

The admin's searches ask ``UPPER(column) LIKE UPPER('%word%')`` (Django's ``icontains``); a GIN index of
the same expression's trigrams answers that without reading every client, and the searches of sessions,
charges and the ledger start from the clients found. The indexes are on expressions the admin's lookups
produce, so they are made here rather than declared on the model."""

from django.db import migrations

COLUMNS = ("first_name", "last_name", "email", "phone")


def indexes_create(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        for column in COLUMNS:
            cursor.execute(f"CREATE INDEX IF NOT EXISTS client_{column}_trgm ON billing_client "
                           f"USING gin (UPPER({column}::text) gin_trgm_ops)")
        # The client list's search also asks for the EHR's id exactly (``=external_id``, case-insensitive).
        cursor.execute("CREATE INDEX IF NOT EXISTS client_external_id_upper ON billing_client (UPPER(external_id::text))")


def indexes_drop(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("DROP INDEX IF EXISTS client_external_id_upper")
        for column in COLUMNS:
            cursor.execute(f"DROP INDEX IF EXISTS client_{column}_trgm")


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0021_client_balances'),
    ]

    operations = [
        migrations.RunPython(indexes_create, indexes_drop),
    ]
