"""``manage.py demo``: the whole portal on one machine, without credentials (docs/product.md, workflow 14).

Migrates and seeds the demo practice, starts the local fake Stripe server (localstripe through
``devtools.fakestripe``, a separate GPL process the portal never imports), saves the demo clients' cards
through the enrollment flow against it, then runs the web server and the task cluster as child
processes until Ctrl-C. ``bin/demo`` is the usual way in: it makes the virtualenv and sets the demo's
defaults.

The demo's database is PostgreSQL, as in production: ``bin/demo`` points ``DATABASE_URL`` at the database
``portal_demo`` on this machine's server, or on an embedded one it starts under ``var/postgres``
(devtools/localpg.py). The fake server keeps its data in ``var/fakestripe.pickle``, so the Stripe ids the
database holds stay valid when the demo is restarted. Its webhooks are not kept, so the
portal's endpoint is registered on every start.
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

import httpx
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from devtools.demo import ADMIN_PASSWORD, ADMIN_USERNAME, demo_enrollment_link, seed_demo_cards
from devtools.demo_staff import demo_sign_in_hint
from devtools.management.commands.seed_demo import describe_cards
from integrations.stripe.gateway import get_gateway

HOST = "127.0.0.1"
STOP_GRACE_SECONDS = 10
# localstripe's own default port. Fixed rather than random so the fake Stripe URL the banner prints stays
# the same from one start to the next; the ids themselves live in the store file, so another port (when
# this one is taken) loses nothing.
STRIPE_PORT = 8420
STRIPE_START_SECONDS = 30
# The demo's keys for the fake server (any sk_/pk_ key works there); never real credentials.
FAKE_STRIPE_KEYS = {"STRIPE_SECRET_KEY": "sk_test_demo", "STRIPE_PUBLISHABLE_KEY": "pk_test_demo",
                    "STRIPE_WEBHOOK_SECRET": "whsec_demo"}
WEBHOOK_ID = "portal"


class Child(NamedTuple):
    name: str
    argv: list[str]


class Running(NamedTuple):
    name: str
    process: subprocess.Popen[bytes]


def demo_children(port: int) -> list[Child]:
    """The portal's processes, started in this order (after the fake Stripe server) and stopped in reverse."""
    manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
    return [
        Child("web server", [*manage, "runserver", f"{HOST}:{port}", "--noreload"]),
        Child("task cluster", [*manage, "qcluster"]),
    ]


def portal_base_url(port: int) -> str:
    # Links in emails must point at this server unless the operator chose another address.
    return os.environ.get("PORTAL_BASE_URL") or f"http://{HOST}:{port}"


def stripe_settings(stripe_url: str) -> dict[str, str]:
    """What points the portal at the fake server; always set, so a real key in the shell is never used."""
    return {"STRIPE_API_BASE": stripe_url, "STRIPE_JS_URL": f"{stripe_url}/js.stripe.com/v3/", **FAKE_STRIPE_KEYS}


def child_environment(port: int, stripe_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PORTAL_BASE_URL"] = portal_base_url(port)
    env.update(stripe_settings(stripe_url))
    env["PYTHONUNBUFFERED"] = "1"  # the children's log lines show up as they happen
    return env


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves bind: connections of a demo just stopped (TIME_WAIT) do not count.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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


def stripe_store_path() -> Path:
    return Path(settings.VAR_DIR) / "fakestripe.pickle"


def start_fake_stripe(port: int) -> tuple[Running, str]:
    """Start the fake Stripe server on ``port`` (0: any free port) and wait until it answers."""
    var = Path(settings.VAR_DIR)
    var.mkdir(parents=True, exist_ok=True)
    port_file = var / "fakestripe.port"
    port_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "devtools.fakestripe", "--port", str(port), "--port-file", str(port_file),
            "--store", str(stripe_store_path())]
    # Its own session, like the other children; its "listening on" line is replaced by the banner.
    process = subprocess.Popen(argv, cwd=settings.BASE_DIR, stdout=subprocess.DEVNULL, start_new_session=True)
    running = Running("fake Stripe server", process)
    deadline = time.monotonic() + STRIPE_START_SECONDS
    while not (port_file.exists() and port_file.read_text().strip()):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_children([running])
            raise CommandError("The fake Stripe server did not start; its output above says why (is localstripe "
                               "installed? bin/demo installs it).")
        time.sleep(0.05)
    actual = int(port_file.read_text())
    port_file.unlink()
    # The port file is written while the server starts up: wait until it accepts connections too.
    if not wait_for_port(actual, process, seconds=STRIPE_START_SECONDS):
        stop_children([running])
        raise CommandError("The fake Stripe server did not start listening.")
    return running, f"http://{HOST}:{actual}"


def use_fake_stripe(stripe_url: str, port: int) -> None:
    """Point this process (the card seed, the banner's link) where the children are pointed."""
    for name, value in stripe_settings(stripe_url).items():
        setattr(settings, name, value)
    settings.PORTAL_BASE_URL = portal_base_url(port)
    # The request limit protects real Stripe; the fake server is ours, so the seed need not wait for it.
    # The children keep the configured limit, so the demo charges at the pace production would.
    settings.STRIPE_MAX_REQUESTS_PER_SECOND = 0
    get_gateway.cache_clear()  # the gateway reads the settings once, at first use


def register_webhook(stripe_url: str, port: int) -> None:
    """The fake server forgets webhooks when it stops: tell it again where the portal's endpoint is."""
    answer = httpx.post(f"{stripe_url}/_config/webhooks/{WEBHOOK_ID}", timeout=10, data={
        "url": f"http://{HOST}:{port}/stripe/webhook/", "secret": FAKE_STRIPE_KEYS["STRIPE_WEBHOOK_SECRET"]})
    if answer.status_code != 200:
        raise CommandError(f"The fake Stripe server refused the webhook endpoint: {answer.status_code} {answer.text}")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = ("Run the demo: migrate, seed the demo practice and its staff login, start the local fake Stripe "
            "server and save the demo cards, then serve the admin and run the task cluster until Ctrl-C.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="Web server port on 127.0.0.1 (default 8000).")
        parser.add_argument("--stripe-port", type=int, default=STRIPE_PORT,
                            help=f"Fake Stripe server port on 127.0.0.1 (default {STRIPE_PORT}; another free "
                                 "port if it is taken).")
        parser.add_argument("--no-serve", action="store_true",
                            help="Set up, seed and save the demo cards, then stop (for tests and CI).")
        parser.add_argument("--fresh", action="store_true",
                            help="Empty the demo's database (one whose name has 'demo' in it) and delete the "
                                 "fake Stripe data first, to start from a new practice.")

    def handle(self, *args: Any, **options: Any) -> None:
        port: int = options["port"]
        stripe_port: int = options["stripe_port"]
        for name, number in (("--port", port), ("--stripe-port", stripe_port)):
            if not 1 <= number <= 65535:
                raise CommandError(f"{name} {number} is not a port number (1 to 65535).")
        if stripe_port == port:
            raise CommandError("--port and --stripe-port must differ.")
        if not options["no_serve"] and not port_is_free(port):
            raise CommandError(f"Port {port} on {HOST} is in use; pick another with --port.")
        if options["fresh"]:
            self.delete_data()
        self.stdout.write("Setting up the database ...")
        call_command("migrate", interactive=False, verbosity=0)
        call_command("seed_demo", stdout=self.stdout, stderr=self.stderr)

        # A plain `kill` stops the demo as cleanly as Ctrl-C does, from here on (the fake server is a child).
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        running: list[Running] = []
        try:
            if not port_is_free(stripe_port):
                self.stdout.write(f"Port {stripe_port} is taken: the fake Stripe server uses another free port.")
                stripe_port = 0
            self.stdout.write("Starting the fake Stripe server ...")
            fake, stripe_url = start_fake_stripe(stripe_port)
            running.append(fake)
            use_fake_stripe(stripe_url, port)
            self.stdout.write("Saving the demo clients' cards through the enrollment flow ...")
            self.stdout.write(describe_cards(seed_demo_cards()))
            enrollment = demo_enrollment_link()
            connections.close_all()  # the children open their own connections to the same database

            if options["no_serve"]:
                self.stdout.write(self.style.SUCCESS("Demo is set up (--no-serve: no servers left running)."))
                self.print_access(port, stripe_url, enrollment)
                return
            register_webhook(stripe_url, port)
            running += start_children(demo_children(port), child_environment(port, stripe_url))
            web = next(child.process for child in running if child.name == "web server")
            if not wait_for_port(port, web, seconds=30):
                raise CommandError("The web server did not start; its output above says why.")
            self.stdout.write(self.style.SUCCESS("\nThe demo is running: Riverbend Counseling Group."))
            self.print_access(port, stripe_url, enrollment)
            self.stdout.write("  Press Ctrl-C to stop.\n")
            self.stdout.flush()
            self.watch(running)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the demo ...")
        finally:
            stop_children(running)
            signal.signal(signal.SIGTERM, previous)
        self.stdout.write("Stopped.")

    def watch(self, running: list[Running]) -> None:
        while True:
            for child in running:
                code = child.process.poll()
                if code is not None:
                    raise CommandError(f"The {child.name} stopped (exit code {code}); stopping the demo.")
            time.sleep(0.5)

    def delete_data(self) -> None:
        name = str(settings.DATABASES["default"]["NAME"])
        if "demo" not in name:
            raise CommandError(f"--fresh empties only a demo database (its name has 'demo' in it, as bin/demo's "
                               f"portal_demo does), not {name!r}; empty other databases yourself.")
        connections.close_all()
        # Dropped and made again from the server's maintenance database (the demo's own cannot drop itself).
        database = connections["default"]
        with database._nodb_cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database.ops.quote_name(name)} WITH (FORCE)")
            cursor.execute(f"CREATE DATABASE {database.ops.quote_name(name)}")
        connections.close_all()
        # The fake Stripe data goes too: its customers belong to the clients of the database emptied here.
        stripe_store_path().unlink(missing_ok=True)
        self.stdout.write(f"Emptied the database {name} and deleted {stripe_store_path()}.")

    def print_access(self, port: int, stripe_url: str, enrollment: tuple[Any, str] | None) -> None:
        emails = settings.EMAIL_FILE_PATH or "the console (set EMAIL_FILE_PATH to write them to files)"
        database = settings.DATABASES["default"]
        lines = [
            "",
            f"  Staff admin:  http://{HOST}:{port}/admin/",
            f"  Log in as:    username {ADMIN_USERNAME}   password {ADMIN_PASSWORD}",
            f"  {demo_sign_in_hint()}",
            f"  Fake Stripe:  {stripe_url}  (test cards: 4242 4242 4242 4242 pays, 4000 0000 0000 0341 "
            "declines, 4000 0027 6000 3184 asks to authenticate)",
            f"  Database:     PostgreSQL, {database['NAME']} on {database['HOST']}:{database['PORT']} (DATABASE_URL="
            f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']} for other "
            "commands)",
            f"  Emails go to: {emails}",
            "                Emails with links for clients (card, payment, receipts) land there; open a link "
            "in a browser to act as the client.",
        ]
        if enrollment is not None:
            client, url = enrollment
            lines.append(f"  Try it now:   {url}")
            lines.append(f"                saves a card for {client.full_name} (a demo client with none on file; "
                         "the link works once, for 7 days).")
        self.stdout.write("\n".join(lines) + "\n")
