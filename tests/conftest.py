"""Shared fixtures. The suite runs against PostgreSQL (bin/test sets DATABASE_URL to this machine's)."""

from __future__ import annotations

import os

import pytest
from django.db import connection


@pytest.fixture(scope="session", autouse=True)
def _require_postgresql(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> None:
    # Concurrency and SQL-aggregate behaviour are PostgreSQL's; a run on SQLite would prove less than it says.
    if connection.vendor != "postgresql" and not os.environ.get("PORTAL_TEST_ALLOW_SQLITE"):
        pytest.exit("The tests need PostgreSQL: set DATABASE_URL (bin/test does) or start PostgreSQL.",
                    returncode=2)


@pytest.fixture(autouse=True)
def _emails_in_memory(settings: pytest.FixtureRequest) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # type: ignore[attr-defined]
