"""Every benchmark in bench/ runs to the end at a tiny size and prints its figures, so a change that breaks
one (a page that now answers a redirect, a renamed service, a new required setting) fails here rather than
the next time someone wants the figures. No figure is asserted: the machine running the suite is not the
one the README's figures come from.

Each runs as it is run by hand, in its own process, against a scratch copy of the suite's migrated test
database (``CREATE DATABASE ... TEMPLATE``: no migrations to run), named by ``BENCH_DATABASE_URL`` or
``--database``. They are all started at once when the first of these tests runs (most of each run is
starting Python and Django, or waiting for a server), each test then waits for its own; the copies are
dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import psycopg
import pytest
from django.db import connection, connections

# With pytest-xdist (bin/test runs one worker per core) this module's tests run on one worker: each worker
# that ran any of them would otherwise start every bench (the module fixture below).
pytestmark = pytest.mark.xdist_group("benchmarks")

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 300

# name: (command, scratch databases it uses, how it is given them)
BENCHES: dict[str, tuple[list[str], list[str], str]] = {
    # One size each (--no-smaller): the run at a tenth of the size is the same script run again.
    "admin_lists": (["bench/admin_lists.py", "--appointments", "200", "--repeat", "1", "--no-warm-up", "--no-smaller"],
                    ["admin_lists"], "--database"),
    "reports": (["bench/reports.py", "--appointments", "200", "--repeat", "1", "--no-smaller"], ["reports"],
                "--database"),
    "charge_run": (["bench/charge_run.py", "--charges", "3", "--rounds", "2"], ["charges"], "env"),
    "csv_import": (["bench/csv_import.py", "--sizes", "30"], ["csv"], "env"),
    "ingest": (["bench/ingest.py", "--appointments", "40", "--batch", "20", "--server", "runserver"], ["ingest"],
               "env"),
    "money_state_machine": (["bench/money_state_machine.py", "--rounds", "1", "--examples", "1", "--steps", "5",
                             "--seed", "1"], ["money"], "env"),
    "api_fuzz": (["bench/api_fuzz.sh", "1"], ["fuzz"], "env"),
}


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    output: IO[bytes]

    def stop(self) -> None:
        """Stop a bench still running and whatever it started (a portal server, a fake Stripe server): its whole
        session. One that ended has stopped its own servers, and its process id may be another's by now."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def finished(self) -> str:
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.stop()
        self.output.seek(0)
        return self.output.read().decode(errors="replace")


@pytest.fixture(scope="module")
def runs(django_db_setup: None, django_db_blocker: pytest.FixtureRequest) -> Iterator[dict[str, Run]]:
    settings = connection.settings_dict
    server = f"postgres://{settings['USER']}@{settings['HOST'] or '127.0.0.1'}:{settings['PORT'] or 5432}"
    template = settings["NAME"]
    names = [f"{template}_{suffix}" for _, suffixes, _ in BENCHES.values() for suffix in suffixes]

    def each(sql: str) -> None:
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            for name in names:
                admin.execute(sql.format(name=name))

    connections.close_all()  # a database is copied only while no one is connected to it
    each('DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    each(f'CREATE DATABASE "{{name}}" TEMPLATE "{template}"')
    started: dict[str, Run] = {}
    try:
        for bench, (command, suffixes, how) in BENCHES.items():
            first = f"{template}_{suffixes[0]}"
            env = {**os.environ, "LOG_LEVEL": "ERROR", "BENCH_PG_SERVER": server, "PYTHON": sys.executable,
                   "FUZZ_PHASES": "fuzzing"}
            if how == "env":
                env["BENCH_DATABASE_URL"] = f"{server}/{first}"
            else:
                command = [*command, how, first]
            program = [sys.executable] if command[0].endswith(".py") else ["bash"]
            output = tempfile.TemporaryFile()  # noqa: SIM115 - closed at teardown, after the test read it
            # Each in a session of its own, so stopping it stops the servers it started too.
            started[bench] = Run(subprocess.Popen([*program, *command], cwd=ROOT, env=env, stdout=output,
                                                  stderr=subprocess.STDOUT, start_new_session=True), output)
        yield started
    finally:
        for run in started.values():
            run.stop()
            run.output.close()
        each('DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def finished(runs: dict[str, Run], bench: str) -> str:
    run = runs[bench]
    output = run.finished()
    assert run.process.returncode == 0, f"bench/{bench} failed ({run.process.returncode}):\n{output[-5000:]}"
    return output


def test_admin_lists_renders_every_staff_page(runs: dict[str, Run]) -> None:
    output = finished(runs, "admin_lists")
    assert "200 sessions" in output
    assert "AR aging: insurance, oldest first" in output


def test_reports(runs: dict[str, Run]) -> None:
    output = finished(runs, "reports")
    assert "Dashboard (Today page)" in output


def test_charge_run(runs: dict[str, Run]) -> None:
    assert "ratio tick / bare" in finished(runs, "charge_run")


def test_csv_import(runs: dict[str, Run]) -> None:
    assert "rows/s" in finished(runs, "csv_import")


def test_ingest(runs: dict[str, Run]) -> None:
    assert "of the raw rate" in finished(runs, "ingest")


def test_money_state_machine(runs: dict[str, Run]) -> None:
    assert "failures found: 0" in finished(runs, "money_state_machine")


def test_api_fuzz(runs: dict[str, Run]) -> None:
    output = finished(runs, "api_fuzz")
    # Schemathesis' own summary line (a warning, such as the X12 upload refusing most generated bodies, is
    # not a failure), then the server log's count of 5xx tracebacks.
    cases = re.search(r"Test cases:\s*\n\s*(.+)", output)
    assert cases is not None and "passed" in cases.group(1) and "fail" not in cases.group(1), output[-3000:]
    assert "server log errors (5xx tracebacks):\n0" in output
