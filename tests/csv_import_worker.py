"""A CSV import's worker that stops part-way, so a test can look at the job while its transaction is open."""

from __future__ import annotations

import threading

import pytest

from integrations.ehr.imports import csv_jobs


def pause_after_progress(monkeypatch: pytest.MonkeyPatch, rows: int = 1000) -> tuple[threading.Event,
                                                                                     threading.Event]:
    """Progress is written at every chunk; once ``rows`` are reported the worker waits for ``resume``.
    Returns ``(reached, resume)``."""
    monkeypatch.setattr(csv_jobs, "PROGRESS_SECONDS", 0)
    reached, resume = threading.Event(), threading.Event()
    write = csv_jobs.ProgressWriter.write

    def write_then_pause(self: csv_jobs.ProgressWriter, done: int) -> None:
        write(self, done)
        if done >= rows and not reached.is_set():
            reached.set()
            resume.wait(60)

    monkeypatch.setattr(csv_jobs.ProgressWriter, "write", write_then_pause)
    return reached, resume
