"""CSV imports from the admin run in the task cluster (django-q2), with progress staff can watch.

    job = job_start(csv_import=record, action=CsvImportJobAction.PREVIEW, requested_by=user, now=now)

``job_start`` records a queued ``CsvImportJob`` and hands ``csv_import_job_run`` to the task queue; the admin's
page polls ``job_progress`` (JSON) until the job is done or failed, then shows the report. The run is
``csv_import`` itself, as the command line runs it: the dry run and the apply are the same code as before, and
an apply is still one transaction.

**Progress while the transaction is open.** Nothing an apply writes is visible to anyone else until it
commits, and that would include the job row if the import's connection updated it. ``ProgressWriter`` opens a
second connection to the same database, in autocommit, and updates only ``rows_done`` and ``progress_at`` of
the job row through it: each update commits at once, so the admin's poll sees it while the import's own rows
are still invisible. The import's transaction does not touch the job row until its very end (an apply is
marked done inside it, so "applied" commits with the rows or not at all), so the two connections never wait on
each other.

**Running once.** The task queue gives a task to another worker when it has not finished within Q_CLUSTER's
``retry`` (5 minutes), which a large import can outlast. A run holds an advisory lock for its
job until it has written the outcome, and a second delivery that finds the lock held leaves at once. If a
worker dies mid-run (the cluster was restarted), PostgreSQL rolls its transaction back (nothing written) and
drops the lock: the task queue's next delivery starts the job again, and the admin's page marks it failed
as soon as it finds the lock free, whichever comes first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field
from django.utils import timezone
from django_q.exceptions import TimeoutException
from django_q.tasks import async_task

from integrations.ehr.imports.csv_import import ImportFileError, Report, count_rows, csv_import, parse_mapping
from integrations.ehr.models import CsvImport, CsvImportJob, CsvImportJobAction, CsvImportJobStatus, CsvImportStatus

log = logging.getLogger(__name__)

JOB_LOCK_SPACE = 74_210_002  # the first key of the two-key advisory locks on import jobs (the second is the job id)
PROGRESS_EVERY_ROWS = 100  # how often csv_import reports; ProgressWriter writes at most every PROGRESS_SECONDS
PROGRESS_SECONDS = 0.5
DEFAULT_TIMEOUT = 3600  # seconds; at ~1,000 rows/s an hour is a few million rows
QUEUED_HINT_SECONDS = 30  # after this long without a worker, the page asks whether the task cluster runs
STALLED_SECONDS = 120

ACTIVE = (CsvImportJobStatus.QUEUED, CsvImportJobStatus.RUNNING)


class ImportBusy(Exception):
    """The import already has a run waiting or in progress."""


def staging_root() -> Path:
    root = getattr(settings, "EHR_CSV_STAGING_DIR", None) or Path(settings.VAR_DIR) / "csv-imports"
    Path(root).mkdir(parents=True, exist_ok=True)
    return Path(root)


def unstage(record: CsvImport) -> None:
    if record.staged_path:
        shutil.rmtree(Path(record.staged_path).parent, ignore_errors=True)
        record.staged_path = ""


def latest_job(record: CsvImport) -> CsvImportJob | None:
    return record.jobs.order_by("-queued_at", "-id").first()


# --- Starting ----------------------------------------------------------------------------------------------

def job_start(*, csv_import: CsvImport, action: str, requested_by: User | None,
              now: dt.datetime) -> CsvImportJob:
    """Record a queued run of the import and hand it to the task queue.

    Called outside a transaction (the admin's views run in autocommit): the job row is committed before
    the task is enqueued, so a worker that picks the task up at once finds it.
    """
    with transaction.atomic():
        locked = CsvImport.objects.select_for_update().get(pk=csv_import.pk)
        if locked.jobs.filter(status__in=ACTIVE).exists():
            raise ImportBusy("This import is already running; wait for it to finish.")
        csv_import.status = (CsvImportStatus.PREVIEWING if action == CsvImportJobAction.PREVIEW
                             else CsvImportStatus.APPLYING)
        csv_import.save()
        job = CsvImportJob.objects.create(csv_import=csv_import, action=action, queued_at=now,
                                          requested_by=requested_by)
    try:
        task_id = async_task("integrations.ehr.imports.csv_jobs.csv_import_job_run", job.pk, q_options={
            "task_name": f"csv-import-{job.pk}-{action}",
            # Longer than Q_CLUSTER's 240 s: a large apply is one long transaction that cannot be split.
            "timeout": int(getattr(settings, "EHR_CSV_IMPORT_TIMEOUT", DEFAULT_TIMEOUT))})
    except Exception as error:
        # Left queued, the run would wait for ever: say so now, and keep the file to try again.
        log.exception("CSV import job %s could not be queued", job.pk)
        _fail(job, error, "The task queue could not be reached, so nothing ran. Nothing was written; try again.")
    else:
        CsvImportJob.objects.filter(pk=job.pk).update(task_id=str(task_id or "")[:40])
    job.refresh_from_db()
    return job


def job_cancel(*, job: CsvImportJob, now: dt.datetime, reason: str) -> bool:
    """Fail a run the task queue has not started (a worker that gets it later leaves it alone)."""
    return bool(CsvImportJob.objects.filter(pk=job.pk, status=CsvImportJobStatus.QUEUED).update(
        status=CsvImportJobStatus.FAILED, finished_at=now, error=reason))


# --- Progress through a connection of its own ---------------------------------------------------------------

class ProgressWriter:
    """``csv_import``'s progress callback: writes ``rows_done`` to the job row where others can see it now.

    The import runs in a transaction on the thread's own connection; these updates go through a second
    connection in autocommit, so each is committed (and visible to the admin's poll) at once. A failed write
    is logged and skipped: progress must never stop an import.
    """

    def __init__(self, job_id: int, *, every_seconds: float | None = None) -> None:
        self.job_id = job_id
        self.every_seconds = PROGRESS_SECONDS if every_seconds is None else every_seconds
        self.last = float("-inf")
        self.writes = 0
        self._connection: BaseDatabaseWrapper | None = None

    def __call__(self, rows: int, seconds: float) -> None:
        if time.monotonic() - self.last < self.every_seconds:
            return
        self.last = time.monotonic()
        self.write(rows)

    def _side_connection(self) -> BaseDatabaseWrapper:
        if self._connection is None:
            # Not registered in ``connections``: it is this writer's alone, and it is closed with it.
            self._connection = connections.create_connection(DEFAULT_DB_ALIAS)
            with self._connection.cursor() as cursor:
                # The job row is never locked while rows are read; should it be, skip a beat, never wait.
                cursor.execute("SET lock_timeout = '2s'")
        return self._connection

    def write(self, rows: int) -> None:
        meta = CsvImportJob._meta
        try:
            side = self._side_connection()

            def column(name: str) -> str:
                field = meta.get_field(name)
                assert isinstance(field, Field)
                return side.ops.quote_name(str(field.column))

            with side.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {side.ops.quote_name(meta.db_table)} SET {column('rows_done')} = %s, "
                    f"{column('progress_at')} = %s WHERE {column('id')} = %s AND {column('status')} = %s",
                    [rows, side.ops.adapt_datetimefield_value(timezone.now()), self.job_id,
                     CsvImportJobStatus.RUNNING])
            self.writes += 1
        except Exception:
            log.warning("CSV import job %s: progress not written", self.job_id, exc_info=True)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


# --- One run at a time --------------------------------------------------------------------------------------

@contextlib.contextmanager
def _run_lock(job_id: int) -> Iterator[bool]:
    """Hold the job's advisory lock on this thread's connection; yields whether it was free.

    Session-level, not transaction-level: it is held across the import's transaction and until the outcome
    is written, and released when the process dies with its connection.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [JOB_LOCK_SPACE, job_id])
        row = cursor.fetchone()
        held = bool(row and row[0])
    try:
        yield held
    finally:
        if held:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [JOB_LOCK_SPACE, job_id])
            except DatabaseError:
                # The connection is gone, and the lock with it; the error that broke it is the one to report.
                log.warning("CSV import job %s: advisory lock not released", job_id, exc_info=True)


def _claim(job_id: int, now: dt.datetime, *, lock_held: bool) -> CsvImportJob | None:
    """Mark the job running if this delivery should run it; None if another run has it or it is over.

    A job already running is taken over only under its advisory lock: holding it means the
    run that marked it running is gone, its transaction rolled back with its connection.
    """
    claimable = [CsvImportJobStatus.QUEUED]
    if lock_held:
        claimable.append(CsvImportJobStatus.RUNNING)
    job = CsvImportJob.objects.filter(pk=job_id).first()
    if job is None or job.status not in claimable:
        return None
    taken = CsvImportJob.objects.filter(pk=job_id, status=job.status).update(
        status=CsvImportJobStatus.RUNNING, started_at=now, progress_at=now, rows_done=0, rows_total=None,
        finished_at=None, error="", attempts=job.attempts + 1)
    if not taken:
        return None
    if job.status == CsvImportJobStatus.RUNNING:
        log.warning("CSV import job %s: started again (its earlier run stopped without finishing)", job_id)
    job.refresh_from_db()
    return job


def job_check_stopped(job: CsvImportJob, now: dt.datetime) -> bool:
    """A running job whose advisory lock is free has lost its worker: mark it failed. True if it did.

    The lock is taken before the check, so a run finishing meanwhile is seen as done, never as stopped.
    """
    if job.status != CsvImportJobStatus.RUNNING:
        return False
    with _run_lock(job.pk) as held:
        if not held:
            return False
        stopped = CsvImportJob.objects.filter(pk=job.pk, status=CsvImportJobStatus.RUNNING).update(
            status=CsvImportJobStatus.FAILED, finished_at=now,
            error="The task queue stopped while this ran (restarted?). Nothing was written; run it again.")
        if stopped:
            CsvImport.objects.filter(pk=job.csv_import_id, status__in=(
                CsvImportStatus.PREVIEWING, CsvImportStatus.APPLYING)).update(status=CsvImportStatus.FAILED)
    job.refresh_from_db()
    return bool(stopped)


# --- The task ---------------------------------------------------------------------------------------------

def csv_import_job_run(job_id: int) -> str:
    """The task: run one import job (dry run or apply) and record its outcome. Returns what happened."""
    with _run_lock(job_id) as held:
        if not held:
            return "already running elsewhere"
        job = _claim(job_id, timezone.now(), lock_held=held)
        if job is None:
            return "nothing to do"
        try:
            return _run(job)
        except (Exception, TimeoutException) as error:
            _fail(job, error)
            if isinstance(error, TimeoutException):
                raise  # the worker is being stopped: let django-q2 replace it
            return "failed"


def _run(job: CsvImportJob) -> str:
    record = job.csv_import
    path = Path(record.staged_path) if record.staged_path else None
    if path is None or not path.is_file():
        raise ImportFileError("The uploaded file is no longer on the server; upload it again.")
    total = count_rows(path)
    CsvImportJob.objects.filter(pk=job.pk).update(rows_total=total)
    apply = job.action == CsvImportJobAction.APPLY
    actor = job.requested_by or record.created_by
    writer = ProgressWriter(job.pk)

    def applied(report: Report) -> None:
        # Inside the import's transaction: "applied" commits together with the rows, or not at all.
        _finish(job, record, report)

    try:
        report = csv_import(path=path, source=record.source, kind=record.kind, preset=record.preset,
                            mapping=parse_mapping(record.mapping), dry_run=not apply, actor=actor,
                            progress=writer, progress_every=PROGRESS_EVERY_ROWS, before_commit=applied)
    finally:
        writer.close()
    if not report.applied:
        _finish(job, record, report)
    if apply:
        unstage(record)
        CsvImport.objects.filter(pk=record.pk).update(staged_path="")
    return report.summary()


def _finish(job: CsvImportJob, record: CsvImport, report: Report) -> None:
    now = timezone.now()
    if job.action == CsvImportJobAction.PREVIEW:
        status = CsvImportStatus.PREVIEWED
    else:
        status = CsvImportStatus.APPLIED if report.applied else CsvImportStatus.REFUSED
    CsvImport.objects.filter(pk=record.pk).update(
        status=status, report=report.as_dict(),
        **({"rows_per_second": report.rows_per_second, "applied_at": now if report.applied else None}
           if job.action == CsvImportJobAction.APPLY else {}))
    refused = job.action == CsvImportJobAction.APPLY and not report.applied
    CsvImportJob.objects.filter(pk=job.pk).update(
        status=CsvImportJobStatus.FAILED if refused else CsvImportJobStatus.DONE, rows_done=report.rows,
        rows_total=report.rows, progress_at=now, finished_at=now, summary=report.summary()[:300],
        error=_refusal(report) if refused else "")


def _refusal(report: Report) -> str:
    """Why an apply wrote nothing, naming the first rejected rows and their problems."""
    if not report.rows:
        return "Nothing was imported: the file has no rows."
    shown = report.problems[:5]
    rows = "; ".join(f"row {p.row}: {p.message}" for p in shown)
    more = report.rejected - len(shown)
    return (f"Nothing was imported: {report.rejected:,} {'row is' if report.rejected == 1 else 'rows are'} "
            f"rejected now (the portal's data changed since the dry run?). {rows}"
            f"{f'; and {more:,} more' if more > 0 else ''}. Fix the file and upload it again.")


def _fail(job: CsvImportJob, error: BaseException, message: str = "") -> None:
    """Record why the run stopped. Its transaction has rolled back: nothing of the file was written."""
    if message:
        pass
    elif isinstance(error, ImportFileError):
        message = str(error)
    elif isinstance(error, TimeoutException):
        message = (f"The import took longer than the task queue allows ({error}). Nothing was written. Split "
                   "the file, or raise EHR_CSV_IMPORT_TIMEOUT.")
    else:
        log.exception("CSV import job %s failed", job.pk)
        message = f"The import stopped on an unexpected error ({type(error).__name__}). Nothing was written."
    failed = CsvImportJob.objects.filter(pk=job.pk, status__in=ACTIVE).update(
        status=CsvImportJobStatus.FAILED, finished_at=timezone.now(), error=message)
    if not failed:
        return  # it had ended already (an apply marked applied commits with its rows): nothing to take back
    record = CsvImport.objects.get(pk=job.csv_import_id)
    if isinstance(error, ImportFileError):
        unstage(record)  # the file itself is the problem: it has to be fixed and uploaded again
    CsvImport.objects.filter(pk=record.pk, status__in=(CsvImportStatus.PREVIEWING, CsvImportStatus.APPLYING)).update(
        status=CsvImportStatus.FAILED, staged_path=record.staged_path)


# --- What the admin's page polls -----------------------------------------------------------------------------

def job_progress(job: CsvImportJob, now: dt.datetime) -> dict[str, Any]:
    """The job's state for the progress bar: rows done of total, rows/s and the time left when known."""
    rate: float | None = None
    seconds_left: float | None = None
    if job.started_at and job.progress_at and job.rows_done:
        elapsed = (job.progress_at - job.started_at).total_seconds()
        if elapsed > 0:
            rate = job.rows_done / elapsed
            if job.rows_total is not None and job.status == CsvImportJobStatus.RUNNING:
                seconds_left = max(job.rows_total - job.rows_done, 0) / rate
    percent = (100.0 * job.rows_done / job.rows_total if job.rows_total else
               (100.0 if job.status == CsvImportJobStatus.DONE else None))
    hint = ""
    if job.status == CsvImportJobStatus.QUEUED and (now - job.queued_at).total_seconds() > QUEUED_HINT_SECONDS:
        hint = ("No worker has picked this up yet: is the task cluster running (manage.py qcluster; bin/demo "
                "starts it)?")
    elif job.status == CsvImportJobStatus.RUNNING and job.progress_at and (
            now - job.progress_at).total_seconds() > STALLED_SECONDS:
        hint = "No progress for a while: the import may be waiting for a lock held by other work."
    return {
        "job": job.pk, "import": job.csv_import_id, "action": job.action, "status": job.status,
        "status_label": job.get_status_display(), "rows_done": job.rows_done, "rows_total": job.rows_total,
        "percent": round(percent, 1) if percent is not None else None,
        "rows_per_second": round(rate, 1) if rate is not None else None,
        "seconds_left": round(seconds_left, 1) if seconds_left is not None else None,
        "queued_at": job.queued_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "summary": job.summary, "error": job.error, "hint": hint,
        "finished": job.status in (CsvImportJobStatus.DONE, CsvImportJobStatus.FAILED),
    }
