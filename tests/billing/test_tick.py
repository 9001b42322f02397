"""billing_tick is safe to run twice and concurrently: each charge is marked due exactly once."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from billing.models import Appointment, BillingType, Charge, ChargeEvent, ChargeStatus, Client, Practice
from billing.services.schedule import appointment_set_status
from tests.practice_fixtures import FRIDAY_10AM

ROOT = Path(__file__).resolve().parents[2]


def _seed_completed_sessions(count: int, make_client: Callable[..., Client],
                             make_appointment: Callable[..., Appointment]) -> None:
    client = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=12000)
    for n in range(count):
        appointment = make_appointment(client, starts_at=FRIDAY_10AM - dt.timedelta(days=n % 20, hours=n % 7))
        appointment_set_status(appointment=appointment, status="completed", now=FRIDAY_10AM, actor="test")


@pytest.mark.django_db(transaction=True)
def test_four_concurrent_ticks_mark_each_charge_due_exactly_once(
        practice: Practice, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    _seed_completed_sessions(200, make_client, make_appointment)
    database = connection.settings_dict
    env = {**os.environ,
           "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}"}
    at = (FRIDAY_10AM + dt.timedelta(days=2)).isoformat()
    ticks = [subprocess.Popen([sys.executable, "manage.py", "billing_tick", "--at", at], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outputs = [tick.communicate(timeout=120) for tick in ticks]
    assert [tick.returncode for tick in ticks] == [0, 0, 0, 0], outputs

    assert Charge.objects.filter(status=ChargeStatus.DUE).count() == 200
    assert ChargeEvent.objects.filter(to_status=ChargeStatus.DUE).count() == 200
    marked = sum(int(out.rsplit("charges_marked_due: ", 1)[1].split(",")[0]) for out, _ in outputs)
    assert marked == 200


def test_tick_twice_at_the_same_moment_does_nothing_the_second_time(
        practice: Practice, make_client: Callable[..., Client],
        make_appointment: Callable[..., Appointment]) -> None:
    _seed_completed_sessions(3, make_client, make_appointment)
    at = (FRIDAY_10AM + dt.timedelta(days=2)).isoformat()
    first, second = StringIO(), StringIO()
    call_command("billing_tick", "--at", at, stdout=first)
    call_command("billing_tick", "--at", at, stdout=second)
    assert "charges_marked_due: 3" in first.getvalue()
    assert "charges_marked_due: 0" in second.getvalue()


@pytest.mark.parametrize(("value", "message"), [
    ("next friday", "is not an ISO 8601 time"),
    ("2026-11-27T09:00", "has no UTC offset"),
])
def test_tick_rejects_a_moment_it_cannot_read(db: None, value: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("billing_tick", "--at", value)


def test_task_queue_runs_the_tick_every_minute(db: None) -> None:
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="billing_tick")
    assert (schedule.func, schedule.schedule_type, schedule.minutes) == ("billing.tasks.billing_tick", "I", 1)
