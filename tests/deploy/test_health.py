"""/healthz: what a monitor or a load balancer asks, with no sign-in and no client data in the answer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client as HttpClient
from django.utils import timezone
from django_q.models import OrmQ

from billing.models import Practice, TickHeartbeat
from billing.services.tick import tick_run

pytestmark = pytest.mark.django_db


def _get(path: str = "/healthz", **extra: Any) -> tuple[int, dict[str, Any]]:
    response = HttpClient().get(path, **extra)
    assert response["Content-Type"] == "application/json"
    assert "Set-Cookie" not in response
    return response.status_code, response.json()


def _ticked(seconds_ago: float) -> None:
    moment = timezone.now() - dt.timedelta(seconds=seconds_ago)
    TickHeartbeat.objects.update_or_create(pk=TickHeartbeat.SINGLETON_ID,
                                           defaults={"finished_at": moment, "as_of": moment, "seconds": 0.2})


def test_a_portal_whose_tick_just_ran_is_healthy_and_says_only_what_a_monitor_needs(practice: Practice) -> None:
    tick_run(now=timezone.now())
    status, body = _get()
    assert status == 200
    assert body["status"] == "ok" and body["problems"] == [] and body["database"] == "ok"
    assert body["tick"]["age_seconds"] < 60
    assert body["queue"]["queued"] == 0 and body["queue"]["oldest_age_seconds"] is None
    assert set(body) == {"status", "problems", "checked_at", "database", "tick", "queue"}


def test_a_tick_that_never_ran_or_stopped_running_is_a_503_with_the_reason() -> None:
    status, body = _get()
    assert status == 503 and body["status"] == "unhealthy"
    assert body["problems"] == ["billing_tick has never run: is the task cluster (manage.py qcluster) running?"]

    _ticked(seconds_ago=601)
    status, body = _get()
    assert status == 503
    assert body["problems"][0].startswith("billing_tick last ran 601 s ago (more than 300 s)")
    assert body["tick"]["age_seconds"] == pytest.approx(601, abs=2)

    _ticked(seconds_ago=90)
    assert _get()[0] == 200


def test_a_task_waiting_too_long_in_the_queue_is_a_503_but_one_a_worker_holds_is_not() -> None:
    _ticked(seconds_ago=5)
    now = timezone.now()
    OrmQ.objects.create(key="portal", payload="held by a worker", lock=now + dt.timedelta(minutes=4))
    OrmQ.objects.create(key="portal", payload="just queued", lock=now - dt.timedelta(seconds=3))
    status, body = _get()
    assert status == 200 and body["queue"]["queued"] == 1

    OrmQ.objects.create(key="portal", payload="waiting", lock=now - dt.timedelta(minutes=10))
    status, body = _get()
    assert status == 503
    assert body["queue"]["queued"] == 2 and body["queue"]["oldest_age_seconds"] >= 600
    assert body["problems"][0].startswith("The oldest queued task has waited 60")


def test_an_unreachable_database_is_a_503_and_the_database_only_check_serves_a_load_balancer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The database alone: a web server can serve while the task cluster is down.
    status, body = _get("/healthz?check=database")
    assert status == 200 and body["database"] == "ok"

    class Down:
        def cursor(self) -> Any:
            raise OperationalError("connection refused")

    monkeypatch.setattr("portal.health.connection", Down())
    for path in ("/healthz", "/healthz?check=database"):
        status, body = _get(path)
        assert status == 503
        assert body["database"] == "unreachable"
        assert body["problems"] == ["The database is unreachable (OperationalError)."]


def test_a_probe_over_plain_http_by_any_host_name_gets_the_answer_not_a_redirect(settings: Any) -> None:
    """A container's health check reaches the server by its own address; production redirects to HTTPS and
    refuses unknown hosts for every other page."""
    _ticked(seconds_ago=5)
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["billing.example.org"]
    assert HttpClient().get("/admin/login/", HTTP_HOST="billing.example.org").status_code == 301
    assert HttpClient().get("/admin/login/", HTTP_HOST="10.0.0.5:8000").status_code == 400
    for path in ("/healthz", "/healthz/"):
        assert _get(path, HTTP_HOST="10.0.0.5:8000")[0] == 200
    assert HttpClient().post("/healthz").status_code == 405
