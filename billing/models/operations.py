from __future__ import annotations

from django.db import models


class TickHeartbeat(models.Model):
    """When ``billing_tick`` last ran to its end (one row): the health endpoint and ``manage.py doctor`` say
    the tick has stopped when this grows old. Written by every tick, from the task cluster or a command."""

    SINGLETON_ID = 1

    finished_at = models.DateTimeField(help_text="The clock time the last tick ended.")
    as_of = models.DateTimeField(help_text="The moment the last tick acted as of (its --at, usually the same).")
    seconds = models.FloatField(help_text="How long the last tick took.")

    def __str__(self) -> str:
        return f"billing_tick ended {self.finished_at.isoformat()}"
