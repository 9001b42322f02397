"""Create a staff account with a role: the first administrator of a real install, then anyone else.

    python manage.py create_staff                       # asks for each detail and the password
    python manage.py create_staff --no-input --username ana --email ana@practice.example \
        --role administrator --password-file /run/secrets/ana
    STAFF_PASSWORD=... python manage.py create_staff --no-input --username bo --role front-desk

The password is never an argument (it would show in the process list and the shell's history): it is typed
twice at the prompt, or read from ``--password-file`` (its first line) or the STAFF_PASSWORD environment
variable. The staff member enrolls their second factor at first sign-in.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from portal.staff_accounts import (
    ROLE_CHOICES,
    StaffNotCreated,
    password_problems,
    staff_create,
    staff_exists,
    staff_problems,
)

PASSWORD_TRIES = 3


class Command(BaseCommand):
    help = ("Create a staff account with one role (administrator, billing-manager, front-desk, auditor): the "
            "first administrator of a new install, then other staff. Asks for what is not given; with "
            "--no-input everything comes from the flags, the password from --password-file or STAFF_PASSWORD. "
            "Weak passwords are refused. The second factor is enrolled at first sign-in.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username")
        parser.add_argument("--email", help="Their work email (optional).")
        parser.add_argument("--role", choices=list(ROLE_CHOICES),
                            help="Default: administrator when no staff account exists yet.")
        parser.add_argument("--password-file", type=Path,
                            help="A file whose first line is the password (else STAFF_PASSWORD, else asked).")
        parser.add_argument("--no-input", action="store_true", dest="no_input",
                            help="Ask nothing: fail, naming what is missing, instead.")

    def handle(self, *args: Any, **options: Any) -> None:
        interactive = not options["no_input"]
        first = not staff_exists()
        username = options["username"] or ""
        email = options["email"] or ""
        role = options["role"] or ("administrator" if first else "")
        if interactive:
            if first:
                self.stdout.write("No staff account yet: this creates the first administrator.")
            username = username or self._ask("Username: ")
            email = email if options["email"] is not None else self._ask("Email (optional): ")
            role = role or self._ask(f"Role ({', '.join(ROLE_CHOICES)}): ")
        elif not username or not role:
            missing = [flag for flag, value in (("--username", username), ("--role", role)) if not value]
            raise CommandError(f"Give {' and '.join(missing)} (or run without --no-input to be asked).")
        problems = staff_problems(username=username, email=email, role=role)
        if problems:
            raise CommandError(" ".join(problems))
        password = self._password(options, interactive=interactive, username=username, email=email)
        try:
            created = staff_create(username=username, email=email, role=role, password=password)
        except StaffNotCreated as refused:
            raise CommandError(" ".join(refused.problems)) from None
        self.stdout.write(self.style.SUCCESS(f"Created {created.username!r} with the role {created.role}."))
        self.stdout.write(
            f"At their first sign-in ({settings.PORTAL_BASE_URL}/admin/) they will enroll their second factor: "
            "scan a QR code with an authenticator app, confirm a code, and keep the ten recovery codes shown "
            "once. Until then no other staff page opens for them.")

    def _ask(self, prompt: str) -> str:
        try:
            return input(prompt).strip()
        except EOFError:
            raise CommandError("No answer (stdin closed): give the details as flags with --no-input.") from None

    def _password(self, options: dict[str, Any], *, interactive: bool, username: str, email: str) -> str:
        given = self._given_password(options)
        if given is not None:
            problems = password_problems(given, username=username, email=email)
            if problems:
                raise CommandError("Password refused: " + " ".join(problems))
            return given
        if not interactive:
            raise CommandError("Give the password with --password-file or the STAFF_PASSWORD environment "
                               "variable (or run without --no-input to type it).")
        for _ in range(PASSWORD_TRIES):
            password = self._ask_secret("Password: ")
            if password != self._ask_secret("Password (again): "):
                self.stderr.write("The two passwords differ. Try again.")
                continue
            problems = password_problems(password, username=username, email=email)
            if not problems:
                return password
            self.stderr.write("Password refused: " + " ".join(problems))
        raise CommandError("No acceptable password given; nothing was created.")

    def _ask_secret(self, prompt: str) -> str:
        try:
            return getpass.getpass(prompt)
        except EOFError:
            raise CommandError("No answer (stdin closed): give --password-file or STAFF_PASSWORD.") from None

    @staticmethod
    def _given_password(options: dict[str, Any]) -> str | None:
        path: Path | None = options["password_file"]
        if path is not None:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except OSError as error:
                raise CommandError(f"Cannot read the password file {str(path)!r}: {error.strerror}.") from None
            return lines[0] if lines else ""
        return os.environ.get("STAFF_PASSWORD")
