"""Is the portal working: the database, the tick, the task queue. Read by ``/healthz`` and ``manage.py doctor``.

``/healthz`` needs no sign-in and says nothing about clients: only whether the database answers, when the tick
last ran and how old that is, and how many tasks wait in the queue and for how long. 200 when all is well,
503 with the reasons when not. ``/healthz?check=database`` checks the database alone: for a load balancer
deciding whether a web server can serve, which it can while the task cluster is down.

It is answered by ``HealthMiddleware``, first in the chain, before the host check and the HTTPS redirect: a
container's or load balancer's probe reaches the server by its own address, over plain HTTP.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import OrmQ

from billing.models import TickHeartbeat

HEALTH_PATH = "/healthz"


@dataclass
class Health:
    checked_at: dt.datetime
    database: bool = False
    tick_finished_at: dt.datetime | None = None
    queued: int | None = None
    oldest_queued_at: dt.datetime | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def age(self, moment: dt.datetime | None) -> float | None:
        return None if moment is None else round(max((self.checked_at - moment).total_seconds(), 0.0), 1)

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.healthy else "unhealthy",
            "problems": self.problems,
            "checked_at": self.checked_at.isoformat(),
            "database": "ok" if self.database else "unreachable",
            "tick": {"last_run": self.tick_finished_at.isoformat() if self.tick_finished_at else None,
                     "age_seconds": self.age(self.tick_finished_at),
                     "max_age_seconds": settings.HEALTH_TICK_MAX_AGE_SECONDS},
            "queue": {"queued": self.queued, "oldest_age_seconds": self.age(self.oldest_queued_at),
                      "max_lag_seconds": settings.HEALTH_QUEUE_MAX_LAG_SECONDS},
        }


def _database(health: Health) -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        health.problems.append(f"The database is unreachable ({type(exc).__name__}).")
        return False
    health.database = True
    return True


def _tick(health: Health) -> None:
    health.tick_finished_at = (TickHeartbeat.objects.filter(pk=TickHeartbeat.SINGLETON_ID)
                               .values_list("finished_at", flat=True).first())
    limit = settings.HEALTH_TICK_MAX_AGE_SECONDS
    if health.tick_finished_at is None:
        health.problems.append("billing_tick has never run: is the task cluster (manage.py qcluster) running?")
    elif (age := health.age(health.tick_finished_at)) is not None and age > limit:
        health.problems.append(f"billing_tick last ran {age:.0f} s ago (more than {limit} s): is the task cluster "
                               "(manage.py qcluster) running?")


def _queue(health: Health) -> None:
    limit = settings.HEALTH_QUEUE_MAX_LAG_SECONDS
    if settings.Q_CLUSTER.get("orm"):
        # A task waiting to be picked up carries the time it was queued (django-q2's "lock"); one a worker
        # holds carries a time in the future, until which no other worker takes it.
        waiting = OrmQ.objects.filter(lock__lte=health.checked_at)
        health.queued = waiting.count()
        health.oldest_queued_at = waiting.order_by("lock").values_list("lock", flat=True).first()
    else:
        health.queued = get_broker().queue_size()
    if (age := health.age(health.oldest_queued_at)) is not None and age > limit:
        health.problems.append(f"The oldest queued task has waited {age:.0f} s (more than {limit} s): the task "
                               "cluster is behind or stopped.")


def health_check(*, now: dt.datetime, database_only: bool = False) -> Health:
    health = Health(checked_at=now)
    if not _database(health) or database_only:
        return health
    steps: list[Callable[[Health], None]] = [_tick, _queue]
    for step in steps:
        try:
            step(health)
        except Exception as exc:  # the report says what failed; it never fails itself
            health.problems.append(f"Could not check {step.__name__.strip('_')} ({type(exc).__name__}).")
    return health


def healthz(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return JsonResponse({"error": "GET only."}, status=405, headers={"Allow": "GET, HEAD"})
    health = health_check(now=timezone.now(), database_only=request.GET.get("check") == "database")
    response = JsonResponse(health.as_json(), status=200 if health.healthy else 503)
    response["Cache-Control"] = "no-store"
    return response


class HealthMiddleware:
    """Answers ``/healthz`` before anything else (host check, HTTPS redirect, sessions, throttles)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.rstrip("/") == HEALTH_PATH:
            return healthz(request)
        return self.get_response(request)
