"""``manage.py demo``: the whole portal on one machine, without credentials (PRODUCT.md workflow 14).

Migrates, seeds the demo practice, then runs the web server and the task cluster as child processes
until Ctrl-C. ``bin/demo`` is the usual way in: it makes the virtualenv and sets the demo's defaults.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any, NamedTuple

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from billing.demo import ADMIN_PASSWORD, ADMIN_USERNAME

HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 10


class Child(NamedTuple):
    name: str
    argv: list[str]


class Running(NamedTuple):
    name: str
    process: subprocess.Popen[bytes]


def demo_children(port: int) -> list[Child]:
    """The processes the demo runs, started in this order and stopped in reverse."""
    manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
    return [
        # FAKE STRIPE GOES HERE: the local fake Stripe server (localstripe, see notes/fake-stripe.md) will be
        # the first child, so it is up before the web server and the task cluster talk to it; its URL
        # is passed to them as STRIPE_API_BASE in child_environment().
        Child("web server", [*manage, "runserver", f"{HOST}:{port}", "--noreload"]),
        Child("task cluster", [*manage, "qcluster"]),
    ]


def child_environment(port: int) -> dict[str, str]:
    env = dict(os.environ)
    # Links in emails must point at this server unless the operator chose another address.
    env.setdefault("PORTAL_BASE_URL", f"http://{HOST}:{port}")
    env["PYTHONUNBUFFERED"] = "1"  # the children's log lines show up as they happen
    return env


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def start_children(children: list[Child], env: dict[str, str]) -> list[Running]:
    running = []
    for child in children:
        # A session of its own: the terminal's Ctrl-C reaches only this command, which then stops each
        # child in order, instead of every process receiving it at once.
        running.append(Running(child.name, subprocess.Popen(child.argv, env=env, start_new_session=True)))
    return running


def stop_children(running: list[Running]) -> None:
    for child in reversed(running):
        if child.process.poll() is None:
            # SIGTERM, not SIGINT: a demo started in the background inherits SIGINT ignored, and the
            # task cluster stops its workers gracefully on SIGTERM.
            child.process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in reversed(running):
        try:
            child.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            # Still up after the grace period: end its whole process group (the cluster's workers too).
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = ("Run the demo: migrate, seed the demo practice and its staff login, then serve the admin and run "
            "the task cluster until Ctrl-C.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="Web server port on 127.0.0.1 (default 8000).")
        parser.add_argument("--no-serve", action="store_true",
                            help="Set up and seed, but start no servers (for tests and CI).")
        parser.add_argument("--fresh", action="store_true",
                            help="Delete the demo's SQLite database first, to start from a new practice.")

    def handle(self, *args: Any, **options: Any) -> None:
        port: int = options["port"]
        if not 1 <= port <= 65535:
            raise CommandError(f"--port {port} is not a port number (1 to 65535).")
        if options["fresh"]:
            self.delete_database()
        self.stdout.write("Setting up the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("seed_demo", stdout=self.stdout, stderr=self.stderr)
        connections.close_all()  # the children open their own connections to the same database

        admin_url = f"http://{HOST}:{port}/admin/"
        if options["no_serve"]:
            self.stdout.write(self.style.SUCCESS("Demo is set up (--no-serve: no servers started)."))
            self.print_access(admin_url)
            return
        if not port_is_free(port):
            raise CommandError(f"Port {port} on {HOST} is in use; pick another with --port.")
        self.serve(port, admin_url)

    def delete_database(self) -> None:
        database = settings.DATABASES["default"]
        if database["ENGINE"] != "django.db.backends.sqlite3":
            raise CommandError("--fresh deletes only the demo's SQLite database; empty other databases yourself.")
        connections.close_all()
        path = Path(database["NAME"])
        for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            file.unlink(missing_ok=True)
        self.stdout.write(f"Deleted {path}.")

    def print_access(self, admin_url: str) -> None:
        emails = settings.EMAIL_FILE_PATH or "the console (set EMAIL_FILE_PATH to write them to files)"
        self.stdout.write(
            "\n"
            f"  Staff admin:  {admin_url}\n"
            f"  Log in as:    username {ADMIN_USERNAME}   password {ADMIN_PASSWORD}\n"
            f"  Emails go to: {emails}\n")

    def serve(self, port: int, admin_url: str) -> None:
        # A plain `kill` stops the demo as cleanly as Ctrl-C does.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        running = start_children(demo_children(port), child_environment(port))
        try:
            web = next(child.process for child in running if child.name == "web server")
            if not wait_for_port(port, web, seconds=30):
                raise CommandError("The web server did not start; its output above says why.")
            self.stdout.write(self.style.SUCCESS("\nThe demo is running: Riverbend Counseling Group."))
            self.print_access(admin_url)
            self.stdout.write("  Press Ctrl-C to stop.\n")
            self.stdout.flush()
            while True:
                for child in running:
                    code = child.process.poll()
                    if code is not None:
                        raise CommandError(f"The {child.name} stopped (exit code {code}); stopping the demo.")
                time.sleep(0.5)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the demo ...")
        finally:
            stop_children(running)
        self.stdout.write("Stopped.")
