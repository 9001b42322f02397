"""The tamper-evident chain over money events and the audit trail (issue 7).

Sealing runs in ``billing_tick``: rows not yet sealed are hashed in id order and each hash is chained
to the last seal's. A row changed or deleted in the database afterwards no longer matches its seal;
``chain_verify`` walks the chain and names the first row or seal that does not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from auditlog.models import LogEntry
from django.db import connection, models, transaction

from billing.models import AppointmentEvent, AuditSeal, ChargeEvent, LedgerEntry

GENESIS = "0" * 64
# Only rows older than this may be reported as missing a seal (the sealer runs every minute).
UNSEALED_GRACE = dt.timedelta(minutes=10)
PROTECTED: dict[str, type[models.Model]] = {
    "ledger_entry": LedgerEntry,
    "charge_event": ChargeEvent,
    "appointment_event": AppointmentEvent,
    "audit_log": LogEntry,
}


def row_hash(row: models.Model) -> str:
    """SHA-256 over every stored column of the row, in a fixed order and form."""
    values: dict[str, Any] = {}
    for field in row._meta.concrete_fields:
        value = getattr(row, field.attname)
        values[field.attname] = value.isoformat() if isinstance(value, dt.datetime | dt.date) else value
    encoded = json.dumps(values, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def chain_hash(previous: str, table: str, row_id: int, digest: str) -> str:
    return hashlib.sha256(f"{previous}|{table}|{row_id}|{digest}".encode()).hexdigest()


def chain_seal(*, now: dt.datetime, batch: int = 2000) -> int:
    """Seal protected rows not sealed yet (up to ``batch`` per table a run). One sealer at a time."""
    sealed = 0
    with transaction.atomic():
        if not _sealer_lock():
            return 0  # another tick is sealing right now
        head = AuditSeal.objects.order_by("-sequence").first()
        previous = head.chain_hash if head else GENESIS
        sequence = head.sequence if head else 0
        for table, model in PROTECTED.items():
            last = AuditSeal.objects.filter(table=table).order_by("-row_id").values_list("row_id", flat=True).first()
            rows = model.objects.filter(pk__gt=last or 0).order_by("pk")[:batch]  # type: ignore[attr-defined]
            seals = []
            for row in rows:
                sequence += 1
                digest = row_hash(row)
                previous = chain_hash(previous, table, row.pk, digest)
                seals.append(AuditSeal(sequence=sequence, table=table, row_id=row.pk, row_hash=digest,
                                       chain_hash=previous, sealed_at=now))
            AuditSeal.objects.bulk_create(seals)
            sealed += len(seals)
    return sealed


SEALER_LOCK = 74_210_001  # an arbitrary, fixed PostgreSQL advisory-lock key for the one sealer


def _sealer_lock() -> bool:
    """Only one sealer at a time, even when there is no seal yet to lock (PostgreSQL advisory lock,
    released at commit)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [SEALER_LOCK])
        return bool(cursor.fetchone()[0])


@dataclass(frozen=True)
class ChainProblem:
    sequence: int
    table: str
    row_id: int
    problem: str

    def __str__(self) -> str:
        return f"{self.table} row {self.row_id} (seal {self.sequence}): {self.problem}"


def chain_verify(*, now: dt.datetime, batch: int = 5000) -> ChainProblem | None:
    """The first broken link, or None when every sealed row is as it was sealed."""
    previous = GENESIS
    expected_sequence = 0
    seals = AuditSeal.objects.order_by("sequence")
    for chunk_start in range(0, seals.count(), batch):
        chunk = list(seals[chunk_start:chunk_start + batch])
        rows: dict[str, dict[int, models.Model]] = {}
        for table, model in PROTECTED.items():
            ids = [s.row_id for s in chunk if s.table == table]
            rows[table] = model.objects.in_bulk(ids) if ids else {}  # type: ignore[attr-defined]
        for seal in chunk:
            expected_sequence += 1
            if seal.sequence != expected_sequence:
                return ChainProblem(seal.sequence, seal.table, seal.row_id,
                                    f"seal {expected_sequence} is missing (a seal was deleted)")
            if chain_hash(previous, seal.table, seal.row_id, seal.row_hash) != seal.chain_hash:
                return ChainProblem(seal.sequence, seal.table, seal.row_id, "the seal itself was altered")
            row = rows.get(seal.table, {}).get(seal.row_id)
            if row is None:
                return ChainProblem(seal.sequence, seal.table, seal.row_id, "the row was deleted")
            if row_hash(row) != seal.row_hash:
                return ChainProblem(seal.sequence, seal.table, seal.row_id, "the row was changed after it was sealed")
            previous = seal.chain_hash
    for table, model in PROTECTED.items():
        last = AuditSeal.objects.filter(table=table).order_by("-row_id").values_list("row_id", flat=True).first() or 0
        time_field = "timestamp" if model is LogEntry else ("at" if table.endswith("_event") else "created_at")
        stale = (model.objects.filter(pk__lte=last)  # type: ignore[attr-defined]
                 .exclude(pk__in=AuditSeal.objects.filter(table=table).values("row_id"))
                 .filter(**{f"{time_field}__lt": now - UNSEALED_GRACE}).order_by("pk").first())
        if stale is not None:
            return ChainProblem(0, table, stale.pk, "the row was inserted among sealed rows without a seal")
    return None
