"""Entry points for the django-q2 task queue. They hold no logic: the services do."""

from __future__ import annotations

from django.utils import timezone

from billing.services.tick import tick_run


def billing_tick() -> dict[str, int]:
    return tick_run(now=timezone.now())
