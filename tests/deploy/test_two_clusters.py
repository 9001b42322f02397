"""Two task clusters (two machines' workers, as README's *Growing past one machine* describes) against one
database: every due charge is taken exactly once."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection
from django_q.models import OrmQ, Task
from django_q.tasks import async_task

from billing.models import Appointment, Charge, ChargeStatus, Client, LedgerEntry, LedgerKind, Practice
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_OK, save_card
from tests.practice_fixtures import FRIDAY_10AM

ROOT = Path(__file__).resolve().parents[2]
CLIENTS, SESSIONS_EACH, TICKS = 4, 5, 6


def _cluster_env(stripe_server: FakeStripe) -> dict[str, str]:
    database = connection.settings_dict
    return {**os.environ, "PYTHONUNBUFFERED": "1",
            "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
            "STRIPE_API_BASE": stripe_server.url, "STRIPE_SECRET_KEY": "sk_test_portal",
            "STRIPE_MAX_REQUESTS_PER_SECOND": "0", "STRIPE_MAX_NETWORK_RETRIES": "0", "EMAIL_URL": "dummymail://",
            # One worker each: a cluster holds at most a few tasks at once, so neither takes the whole queue.
            "Q_WORKERS": "1"}


def _wait(done: Callable[[], bool], clusters: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + 60
    while not done():
        assert all(c.poll() is None for c in clusters), [log.read_text() for log in logs]
        assert time.monotonic() < deadline, [log.read_text() for log in logs]
        time.sleep(0.1)


def _stop(clusters: list[subprocess.Popen[bytes]]) -> None:
    """As a process manager stops them (SIGTERM); what is still up after two seconds is killed (all their
    work is saved by then)."""
    for cluster in clusters:
        os.killpg(cluster.pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    for cluster in clusters:
        try:
            cluster.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)
            cluster.wait()


@pytest.mark.django_db(transaction=True)
def test_two_task_clusters_on_one_database_take_every_due_charge_exactly_once(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment], tmp_path: Path) -> None:
    for n in range(CLIENTS):
        client = make_client(billing_type="self_pay", session_rate_cents=9000 + n)
        save_card(client, CARD_OK, stripe_server)
        for k in range(SESSIONS_EACH):
            completed_session(client, at=FRIDAY_10AM - dt.timedelta(days=k))
    charges = CLIENTS * SESSIONS_EACH
    assert Charge.objects.filter(status__in=[ChargeStatus.SCHEDULED, ChargeStatus.DUE]).count() == charges
    logs = [tmp_path / f"cluster-{n}.log" for n in (1, 2)]
    clusters = [subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=_cluster_env(stripe_server),
                                 stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
                for log in logs]
    try:
        _wait(lambda: all(re.search(r"Q Cluster .+ running\.", log.read_text()) for log in logs), clusters, logs)
        # Both clusters are polling the queue when the ticks arrive, so both take some at the same moment.
        for _ in range(TICKS):
            async_task("billing.tasks.billing_tick")
        _wait(lambda: not OrmQ.objects.exists()
              and Task.objects.filter(func="billing.tasks.billing_tick").count() == TICKS, clusters, logs)
    finally:
        _stop(clusters)
    outputs = [log.read_text() for log in logs]

    ticks = list(Task.objects.filter(func="billing.tasks.billing_tick"))
    assert len(ticks) == TICKS and all(t.success for t in ticks), outputs
    # Both clusters ran ticks at the same time: each logged its own.
    assert all("billing_tick at " in out for out in outputs), outputs
    assert sum(t.result["payment_attempts"] for t in ticks) == charges

    assert Charge.objects.filter(status=ChargeStatus.SUCCEEDED).count() == charges
    paid = [c for c in stripe_server.charges() if c["status"] == "succeeded"]
    assert len(paid) == charges  # one successful payment at Stripe per charge
    assert len({c["payment_intent"] for c in paid}) == charges
    assert sorted(int(c["amount"]) for c in paid) == sorted(Charge.objects.values_list("amount_cents", flat=True))
    for charge in Charge.objects.all():
        assert LedgerEntry.objects.filter(charge=charge, kind=LedgerKind.PAYMENT).count() == 1
