"""How fast an EHR can push its schedule through the API, against plain inserts of the same rows.

    .venv/bin/python bench/ingest.py [--appointments 20000] [--batch 1000] [--status scheduled|completed]
                                     [--server gunicorn|runserver] [--workers 2] [--concurrency 1]

Uses its own PostgreSQL database (``portal_bench_ingest``, dropped, created and migrated at each run).
It starts the portal as a real HTTP server (``gunicorn`` with ``--workers`` processes, as a deployment
runs it, or ``manage.py runserver --noreload``; DEBUG off, persistent database connections, in a child
process), with
``--concurrency`` client threads pushing batches at once (an integrator's parallel sync),
creates an API key, pushes 10 clinicians and 2,000 clients (not timed), then times
N appointments pushed through ``POST /api/v1/events/`` in batches with httpx: each event validated and
its references looked up, then written with its participant, status event and two audit entries (new,
merely scheduled sessions are gathered and sent 200 at a time in pipeline mode while the batch reads on;
see ``QuietCreates`` in integrations/ehr/api/events.py), all in one transaction per batch.

In the same run it inserts the equivalent rows (appointment, participant, status event) with plain
psycopg ``executemany``, one transaction per batch, from as many connections at once as ``--concurrency``
(threads), and prints both rates and their ratio.
Targets: at least 1,000 appointments/s through the API, and at least 40% of the raw rate.

``--status completed`` pushes sessions already held instead: each is then billed as it arrives (priced,
its charge scheduled with its status event and ledger line, audited; new completed sessions are gathered
and billed 500 at a time, see ``BilledCreates``), and the raw side inserts the same charge, charge event
and ledger line per session too. Target then: at least 25% of the raw rate.

``BENCH_DATABASE`` names the database instead (when several people bench on one server).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_PG_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE = os.environ.get("BENCH_DATABASE", "portal_bench_ingest")
SOURCE = "benchehr"
CLIENTS = 2_000
CLINICIANS = 10
NPIS = ["1234567893", "1245319599", "1679576722", "1003000126", "1497758544", "1215930367", "1023005410",
        "1932102084", "1811991938", "1740283779"]


def fresh_database() -> str:
    """The bench's own database, created anew each run (migrations in flux cannot leave it half-built)."""
    if os.environ.get("BENCH_DATABASE_URL"):  # a database given as it is (tests/test_benchmarks.py's smoke run)
        return os.environ["BENCH_DATABASE_URL"]
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"{SERVER}/{DATABASE}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(env: dict[str, str]) -> str:
    """Migrate, set up the practice and an API key; returns the key."""
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    script = """
from django.utils import timezone
from billing.models import Practice, Service
from integrations.ehr.keys import api_key_create
Practice.objects.create(name="Bench Counseling", phone="555-0100", sender_email="billing@bench.example",
                        charge_timing="delayed")
Service.objects.create(cpt_code="90837", description="Individual therapy, 60 minutes", fee_cents=20000)
print(api_key_create(source=SOURCE, now=timezone.now()).key)
""".replace("SOURCE", repr(SOURCE))
    out = subprocess.run([sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def start_server(env: dict[str, str], port: int, kind: str = "runserver", workers: int = 2
                 ) -> subprocess.Popen[bytes]:
    if kind == "gunicorn":
        command = [str(Path(sys.executable).with_name("gunicorn")), "portal.wsgi:application", "--workers",
                   str(workers), "--bind", f"127.0.0.1:{port}", "--timeout", "600", "--log-level", "warning"]
    else:
        command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/schema/", timeout=2)
            return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("The portal server did not start.")


def appointment(i: int, status: str) -> dict[str, Any]:
    starts = dt.datetime(2026, 11, 2, 13, tzinfo=dt.UTC) + dt.timedelta(hours=i % 2000, days=7 * (i // 2000))
    return {"clinician": f"clin-{i % CLINICIANS}", "clients": [f"client-{i % CLIENTS}"], "service_code": "90837",
            "diagnosis_codes": ["F41.1"], "starts_at": starts.isoformat(), "duration_minutes": 53, "status": status}


def push(http: httpx.Client, events: list[dict[str, Any]]) -> dict[str, int]:
    response = http.post("/api/v1/events/", content=json.dumps({"events": events}),
                         headers={"Content-Type": "application/json"})
    response.raise_for_status()
    body = response.json()
    errors = [r for r in body["results"] if r["status"] == "error"]
    if errors:
        raise SystemExit(f"{len(errors)} events failed, e.g. {errors[0]}")
    return dict(body["counts"])


def through_api(base: str, key: str, n: int, batch: int, status: str, concurrency: int = 1) -> float:
    with httpx.Client(base_url=base, headers={"Authorization": f"Api-Key {key}"}, timeout=600) as http:
        for c in range(CLINICIANS):
            http.put(f"/api/v1/clinicians/clin-{c}/", json={"name": f"Clinician {c}", "npi": NPIS[c]}
                     ).raise_for_status()
        clients = [{"type": "client", "external_id": f"client-{i}",
                    "data": {"first_name": f"Client{i}", "last_name": "Bench", "email": f"c{i}@bench.example",
                             "billing_type": "self_pay", "session_rate_cents": 15000}} for i in range(CLIENTS)]
        for start in range(0, CLIENTS, batch):
            push(http, clients[start:start + batch])
        bodies = [[{"type": "appointment", "external_id": f"appt-{i}", "data": appointment(i, status)}
                   for i in range(start, min(start + batch, n))] for start in range(0, n, batch)]
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            created = sum(counts["created"] for counts in pool.map(lambda events: push(http, events), bodies))
        elapsed = time.perf_counter() - started
    assert created == n, created
    return n / elapsed


def raw_inserts(url: str, n: int, batch: int, status: str, concurrency: int = 1) -> float:
    """The same appointments, participants and status events with plain psycopg, one transaction per batch;
    with ``concurrency`` connections inserting batches at once, as the API side gets that many pushes."""
    with psycopg.connect(url) as conn:
        clinicians = [r[0] for r in conn.execute(
            "SELECT id FROM billing_clinician WHERE source = %s ORDER BY external_id", [SOURCE])]
        client_ids: dict[str, int] = dict(conn.execute(
            "SELECT external_id, id FROM billing_client WHERE source = %s", [SOURCE]))
    rows = [appointment(i, status) for i in range(n)]
    now = dt.datetime.now(dt.UTC)
    connections = [psycopg.connect(url) for _ in range(concurrency)]
    free = list(connections)

    def insert(chunk: range) -> None:
        conn = free.pop()
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO billing_appointment (source, external_id, created_at, updated_at, clinician_id, "
                "service_code, diagnosis_codes, starts_at, duration_minutes, status, note_signed_at, fee_cents, "
                "place_of_service) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, NULL, '') RETURNING id",
                [("raw", f"raw-{i}", now, now, clinicians[i % CLINICIANS], rows[i]["service_code"],
                  Jsonb(rows[i]["diagnosis_codes"]), rows[i]["starts_at"], rows[i]["duration_minutes"],
                  rows[i]["status"]) for i in chunk], returning=True)
            ids = []
            while True:
                ids.append(cur.fetchone()[0])  # type: ignore[index]
                if not cur.nextset():
                    break
            cur.executemany("INSERT INTO billing_participant (appointment_id, client_id) VALUES (%s, %s)",
                            [(ids[k], client_ids[rows[i]["clients"][0]]) for k, i in enumerate(chunk)])
            cur.executemany(
                "INSERT INTO billing_appointmentevent (appointment_id, from_status, to_status, at, actor, reason) "
                "VALUES (%s, '', %s, %s, 'raw', 'bench')",
                [(ids[k], rows[i]["status"], now) for k, i in enumerate(chunk)])
            if status == "completed":
                _raw_charges(cur, [(ids[k], client_ids[rows[i]["clients"][0]]) for k, i in enumerate(chunk)], now)
        conn.commit()
        free.append(conn)

    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(insert, [range(start, min(start + batch, n)) for start in range(0, n, batch)]))
        elapsed = time.perf_counter() - started
    finally:
        for conn in connections:
            conn.close()
    return n / elapsed


def _raw_charges(cur: psycopg.Cursor[Any], sessions: list[tuple[int, int]], now: dt.datetime) -> None:
    """What billing a completed session writes besides the appointment: its charge (with the breakdown), the
    charge's status event and its ledger line, one row each per session."""
    due = now + dt.timedelta(hours=24)
    breakdown = Jsonb([{"label": "Your session rate: Individual therapy, 60 minutes", "amount_cents": 15000},
                       {"label": "You owe", "amount_cents": 15000}])
    cur.executemany(
        "INSERT INTO billing_charge (client_id, appointment_id, kind, amount_cents, insurance_cents, "
        "deductible_applied_cents, breakdown, status, scheduled_for, notice_due_at, attempts, last_failure_code, "
        "payment_reference, refunded_cents, canceled_by_staff, prepaid_cents, hold_reason, created_at, updated_at) "
        "VALUES (%s, %s, 'session_fee', 15000, 0, 0, %s, 'scheduled', %s, %s, 0, '', '', 0, false, 0, '', %s, %s) "
        "RETURNING id",
        [(client, appointment, breakdown, due, due - dt.timedelta(hours=2), now, now)
         for appointment, client in sessions], returning=True)
    charges = []
    while True:
        charges.append(cur.fetchone()[0])  # type: ignore[index]
        if not cur.nextset():
            break
    cur.executemany(
        "INSERT INTO billing_chargeevent (charge_id, from_status, to_status, amount_cents, at, actor, reason) "
        "VALUES (%s, '', 'scheduled', 15000, %s, 'raw', 'session billable')", [(c, now) for c in charges])
    cur.executemany(
        "INSERT INTO billing_ledgerentry (client_id, kind, amount_cents, occurred_on, appointment_id, charge_id, "
        "memo, actor, created_at) VALUES (%s, 'session_charge', 15000, %s, %s, %s, 'Session fee', 'raw', %s)",
        [(client, now.date(), appointment, charge, now)
         for (appointment, client), charge in zip(sessions, charges, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--appointments", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--status", choices=["scheduled", "completed"], default="scheduled")
    parser.add_argument("--server", choices=["gunicorn", "runserver"], default="gunicorn")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--concurrency", type=int, default=1, help="batches pushed at once")
    args = parser.parse_args()

    url = fresh_database()
    # Persistent database connections (conn_max_age), as a deployment sets them: the raw side below also
    # keeps its one connection, rather than opening one per batch.
    env = {**os.environ, "DATABASE_URL": f"{url}?conn_max_age=600", "DEBUG": "false", "SECURE_SSL_REDIRECT": "false",
           "ALLOWED_HOSTS": "127.0.0.1,localhost", "EHR_API_RATE": "1000000/min", "LOG_LEVEL": "WARNING",
           "Q_WORKERS": "1",
           # DEBUG off starts only with a production's settings (portal/checks.py): the bench's own.
           "SECRET_KEY": "bench-only-0123456789abcdefghijklmnopqrstuvwxyz-0123456789",
           "STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
           "STRIPE_WEBHOOK_SECRET": "whsec_bench", "PORTAL_BASE_URL": "https://portal.example"}
    key = prepare(env)
    port = free_port()
    server = start_server(env, port, args.server, args.workers)
    try:
        api_rate = through_api(f"http://127.0.0.1:{port}", key, args.appointments, args.batch, args.status,
                               args.concurrency)
    finally:
        server.terminate()
        server.wait(timeout=10)
    raw_rate = raw_inserts(url, args.appointments, args.batch, args.status, args.concurrency)

    print(f"{args.appointments:,} {args.status} appointments in batches of {args.batch:,} (PostgreSQL {DATABASE})")
    how = "runserver" if args.server == "runserver" else f"gunicorn x{args.workers}"
    print(f"  through POST /api/v1/events/ (HTTP, {how}, {args.concurrency} at once): {api_rate:10,.0f} "
          "appointments/s   (target >= 1,000)")
    print(f"  plain psycopg executemany, same rows ({args.concurrency} at once):      {raw_rate:10,.0f} appointments/s")
    target = 0.25 if args.status == "completed" else 0.40
    print(f"  ratio: {api_rate / raw_rate:.0%} of the raw rate   (target >= {target:.0%})")
    print(f"  load average (1, 5, 15 min) at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
