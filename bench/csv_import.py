"""How fast a SimplePractice appointments export imports, and that memory stays flat as the file grows.

    .venv/bin/python bench/csv_import.py [--sizes 10000,100000] [--dry-run]

Uses its own PostgreSQL database (``portal_bench_csv``, dropped, created and migrated at each run), a
practice with one clinician and 2,000 clients (imported first from a clients CSV, not timed), then for each
size writes an appointments CSV in SimplePractice's columns (sessions still to come, "Show") and runs
``manage.py import_ehr_csv`` on it in a child process. For each it prints rows/s and the child's peak
resident memory (``ru_maxrss`` from ``os.wait4``): a streamed import's peak should not grow with the file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_PG_SERVER", "postgres://postgres@127.0.0.1:5432")
DATABASE = "portal_bench_csv"
SOURCE = "simplepractice"
CLIENTS = 2_000


def fresh_database() -> str:
    if os.environ.get("BENCH_DATABASE_URL"):  # a database given as it is (tests/test_benchmarks.py's smoke run)
        return os.environ["BENCH_DATABASE_URL"]
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return f"{SERVER}/{DATABASE}"


def write_clients(path: Path) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Client ID,First Name,Last Name,Email,Billing Type,Rate\n")
        for i in range(CLIENTS):
            out.write(f"c-{i},Client{i},Bench,c{i}@bench.example,Self-pay,$150.00\n")


def write_appointments(path: Path, n: int, first_day: dt.date) -> None:
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write("Date of Service,Time,Client,Client ID,Clinician,Service Code,Status,Rate,Duration\n")
        for i in range(n):
            day = first_day + dt.timedelta(days=i // 10)
            hour = 8 + i % 10
            out.write(f"{day:%m/%d/%Y},{(hour - 1) % 12 + 1}:00 {'AM' if hour < 12 else 'PM'},Client Bench,"
                      f"c-{i % CLIENTS},Dana Reyes,90837,Show,$200.00,53\n")


def run_import(env: dict[str, str], path: Path, kind: str, dry_run: bool) -> tuple[float, int, str]:
    """(seconds, peak RSS in KiB, output) of one import_ehr_csv child process."""
    command = [sys.executable, "manage.py", "import_ehr_csv", "--source", SOURCE, "--kind", kind,
               "--preset", "simplepractice", "--progress-every", "25000", str(path)]
    if dry_run:
        command.append("--dry-run")
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if child.returncode != 0:
        raise SystemExit(f"import_ehr_csv failed ({child.returncode}):\n{output}")
    return elapsed, usage.ru_maxrss, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dry-run", action="store_true", help="Preview only (the whole file, rolled back).")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    url = fresh_database()
    env = {**os.environ, "DATABASE_URL": url, "DEBUG": "false", "SECURE_SSL_REDIRECT": "false",
           "ALLOWED_HOSTS": "127.0.0.1,localhost", "LOG_LEVEL": "WARNING",
           "SECRET_KEY": "bench-only-0123456789abcdefghijklmnopqrstuvwxyz-0123456789",
           "STRIPE_SECRET_KEY": "sk_test_bench", "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
           "STRIPE_WEBHOOK_SECRET": "whsec_bench", "PORTAL_BASE_URL": "https://portal.example"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    setup = f"""
from billing.models import Clinician, Practice, Service
Practice.objects.create(name="Bench Counseling", phone="555-0100", sender_email="billing@bench.example")
Service.objects.create(cpt_code="90837", description="Individual therapy, 60 minutes", fee_cents=20000)
Clinician.objects.create(source={SOURCE!r}, external_id="clin-1", name="Dana Reyes", npi="1234567893")
"""
    subprocess.run([sys.executable, "manage.py", "shell", "-c", setup], cwd=ROOT, env=env, check=True)
    with tempfile.TemporaryDirectory(prefix="bench-csv-") as tmp:
        clients = Path(tmp) / "clients.csv"
        write_clients(clients)
        run_import(env, clients, "clients", dry_run=False)
        flag = " --dry-run" if args.dry_run else ""
        print(f"appointments CSV (SimplePractice columns) -> manage.py import_ehr_csv{flag} (PostgreSQL {DATABASE})")
        for index, n in enumerate(sizes):
            path = Path(tmp) / f"appointments-{n}.csv"
            write_appointments(path, n, dt.date(2030 + index * 40, 1, 1))
            seconds, peak_kib, output = run_import(env, path, "appointments", args.dry_run)
            summary = next((line for line in output.splitlines() if line.startswith(("Applied", "Dry run"))), "")
            print(f"  {n:>8,} rows: {n / seconds:8,.0f} rows/s ({seconds:6.1f} s, whole process)   "
                  f"peak RSS {peak_kib / 1024:6.1f} MiB   [{file_mb(path):.1f} MB file]")
            print(f"           {summary}")


def file_mb(path: Path) -> float:
    return path.stat().st_size / 1e6


if __name__ == "__main__":
    main()
