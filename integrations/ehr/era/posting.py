"""Posting an 835 file, whichever way it came in (the admin's upload, ``POST /api/v1/remittances/``, the
``post_era`` command): read it whole, then post its payments in one transaction (all or nothing).

    reports = era_post(data=path.read_bytes(), file_name="aetna-1201.835", actor="staff:ana", dry_run=True)

A broken file raises ``RemittanceFileError`` before anything is written; a dry run posts and rolls back,
so its reports are exactly what applying would do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any

from auditlog.context import set_extra_data
from django.db import transaction

from billing.audit.access import auditlog_context_restored
from billing.local_time import practice_zone_active
from billing.services.remittances import PostReport, remittance_post
from integrations.ehr.era.x12 import RemittanceFileError, remittance_parse

__all__ = ["RemittanceFileError", "era_post", "summary"]


def era_post(*, data: bytes, file_name: str, actor: str, now: dt.datetime, dry_run: bool,
             audit_actor: Any = None) -> list[PostReport]:
    payments = remittance_parse(data)
    as_actor: contextlib.AbstractContextManager[Any] = (
        set_extra_data({"actor": audit_actor}) if audit_actor is not None else contextlib.nullcontext())
    with auditlog_context_restored(), as_actor, practice_zone_active(), transaction.atomic():
        reports = [remittance_post(remittance=payment, file_name=file_name, actor=actor, now=now, dry_run=dry_run)
                   for payment in payments]
        if dry_run:
            transaction.set_rollback(True)
    return reports


def summary(reports: list[PostReport]) -> str:
    return "; ".join(f"{r.payer_name} {r.trace_number}: {r.summary()}" for r in reports)[:300]
