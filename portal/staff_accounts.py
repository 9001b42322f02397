"""Staff accounts made from the command line: the first administrator of a real install, and staff with a
role (``manage.py create_staff``). The admin's Users page does the same for an administrator signed in.

An account is a staff member with exactly one role (billing/roles.py), never a superuser: the roles decide
what each may do, and nobody edits the audit trail. The password must pass the Django validators the
settings list (at least 12 characters, not common, not all digits, not like the username or email). The
second factor is not set here: the staff member enrolls an authenticator app at first sign-in
(portal/security_otp.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from billing.audit.access import SYSTEM_USERNAME
from billing.roles import ADMINISTRATOR, AUDITOR, BILLING_MANAGER, FRONT_DESK

# What the command line calls each role.
ROLE_CHOICES = {"administrator": ADMINISTRATOR, "billing-manager": BILLING_MANAGER, "front-desk": FRONT_DESK,
                "auditor": AUDITOR}


class StaffNotCreated(Exception):
    """The account cannot be made as asked; ``problems`` says why, one sentence each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class NewStaff:
    username: str
    email: str
    role: str


def staff_exists() -> bool:
    """Whether anyone can sign in to the staff console yet (the system account cannot)."""
    return get_user_model().objects.filter(is_staff=True, is_active=True).exclude(
        username=SYSTEM_USERNAME).exists()


def staff_problems(*, username: str, email: str, role: str) -> list[str]:
    """What is wrong with the account details, before a password is asked for."""
    problems = []
    user_model = get_user_model()
    if not username.strip():
        problems.append("Give a username.")
    elif username.strip().lower() == SYSTEM_USERNAME:
        problems.append(f"{SYSTEM_USERNAME!r} is the portal's own account for commands and tasks.")
    elif user_model.objects.filter(username__iexact=username.strip()).exists():
        problems.append(f"A user named {username.strip()!r} already exists; choose another username "
                        "(change an existing account in the admin, under Users).")
    if email.strip():
        try:
            validate_email(email.strip())
        except ValidationError:
            problems.append(f"{email.strip()!r} is not an email address.")
    if role not in ROLE_CHOICES:
        problems.append(f"{role!r} is not a role: choose {', '.join(ROLE_CHOICES)}.")
    elif not Group.objects.filter(name=ROLE_CHOICES[role]).exists():
        problems.append("The roles are not set up yet: run `python manage.py migrate` first.")
    return problems


def password_problems(password: str, *, username: str, email: str) -> list[str]:
    """The settings' password validators' messages (empty when the password will do)."""
    candidate = get_user_model()(username=username.strip(), email=email.strip())
    try:
        validate_password(password, user=candidate)
    except ValidationError as error:
        return list(error.messages)
    return []


def staff_create(*, username: str, email: str, role: str, password: str) -> NewStaff:
    """Create a staff member with one role. Raises StaffNotCreated (and writes nothing) when the details
    or the password will not do."""
    problems = staff_problems(username=username, email=email, role=role)
    problems += password_problems(password, username=username, email=email)
    if problems:
        raise StaffNotCreated(problems)
    with transaction.atomic():
        user: AbstractBaseUser = get_user_model().objects.create_user(
            username=username.strip(), email=email.strip(), password=password, is_staff=True)
        user.groups.add(Group.objects.get(name=ROLE_CHOICES[role]))  # type: ignore[attr-defined]
    return NewStaff(username=username.strip(), email=email.strip(), role=ROLE_CHOICES[role])
