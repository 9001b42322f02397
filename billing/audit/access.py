"""The audit trail's other half: who *looked* at client data, and who acted when no person did.

- Every staff view of a client's record in the admin (the client's page and the pages of rows that belong
  to one client: charges, coverage, ledger entries, refunds...) and every API read of client data
  (GET on clients, balance, coverage, charges, appointments, insurance payments, reconciliation) is written
  to django-auditlog's ``LogEntry`` with the ACCESS action, on the client, with the actor, the time and the
  address it came from. ``additional_data`` says through what (``{"via": "admin", "page": ...}``).
- Commands and tasks run under ``acting_as("billing_tick")``: the changes they make are logged with the
  ``system`` service account as actor and ``{"via": "command:billing_tick"}``, so no row is anonymous.

These rows are sealed into the tamper-evident chain like every other audit row (billing.audit.chain). The
middleware that writes the access entries for each request is portal's (portal/middleware.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from auditlog.context import auditlog_value, set_extra_data
from auditlog.models import LogEntry
from auditlog.registry import auditlog
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand
from django.db import models
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from django_q.signals import post_execute_in_worker, pre_execute

from billing.models import Appointment, Client, Participant

SYSTEM_USERNAME = "system"


# --- Access entries ---------------------------------------------------------------------------------------

def record_access(*, client_ids: Iterable[int], actor: Any, remote_addr: str | None,
                  additional_data: dict[str, Any]) -> int:
    """One ACCESS entry per client, in one insert; the number written."""
    ids = sorted({int(i) for i in client_ids})
    if not ids:
        return 0
    content_type = ContentType.objects.get_for_model(Client)
    names = {pk: f"{first} {last}" for pk, first, last in
             Client.objects.filter(pk__in=ids).values_list("pk", "first_name", "last_name")}
    user = actor if isinstance(actor, get_user_model()) else None
    now = timezone.now()
    LogEntry.objects.bulk_create([
        LogEntry(content_type=content_type, object_pk=str(pk), object_id=pk,
                 object_repr=names.get(pk, f"Client #{pk}"),
                 action=LogEntry.Action.ACCESS, changes_text="", changes=None, actor=user,
                 actor_email=getattr(user, "email", None) or None, remote_addr=remote_addr,
                 timestamp=now, additional_data={"client_id": pk, **additional_data})
        for pk in ids
    ])
    return len(ids)


def clients_of_admin_row(model: type[models.Model], object_id: str) -> list[int]:
    """The client(s) a billing row's admin page shows: the client itself, the row's client, the attendees."""
    if not object_id.isdigit():
        return []
    pk = int(object_id)
    if model is Client:
        return [pk] if Client.objects.filter(pk=pk).exists() else []
    if model is Appointment:
        return list(Participant.objects.filter(appointment_id=pk).values_list("client_id", flat=True))
    field_names = {f.name for f in model._meta.get_fields()}
    if "client" in field_names:
        return [c for c in model._default_manager.filter(pk=pk).values_list("client_id", flat=True) if c]
    if "charge" in field_names:  # refunds, payment attempts, balance allocations
        return [c for c in model._default_manager.filter(pk=pk).values_list("charge__client_id", flat=True) if c]
    return []


# --- Who acted when no person did -------------------------------------------------------------------------

def system_user() -> AbstractBaseUser:
    """The service account named as the actor of commands and tasks; it cannot sign in."""
    user_model = get_user_model()
    user, created = user_model.objects.get_or_create(
        username=SYSTEM_USERNAME, defaults={"is_active": False, "is_staff": False, "first_name": "System",
                                            "last_name": "(commands and tasks)"})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


@contextlib.contextmanager
def acting_as(what: str) -> Iterator[None]:
    """Changes made inside are logged with the system account as actor and ``{"via": what}``.

    Inside a request (a person is already the actor) it changes nothing. ``what`` is e.g.
    ``command:billing_tick`` or ``task:billing_tick``. The account is looked up only when an entry is
    written, so a command that writes none (``check``, ``migrate``) never touches the users table.
    """
    current = auditlog_value.get(None)
    if current is not None and current.get("actor") is not None and not isinstance(current["actor"], AnonymousUser):
        yield
        return
    context = {"actor_id": _system_user_id, "actor_email": SYSTEM_USERNAME, "remote_addr": None,
               "additional_data": {"via": what}}
    with auditlog_context_restored(), set_extra_data(context):
        yield


@contextlib.contextmanager
def auditlog_context_restored() -> Iterator[None]:
    """Put auditlog's context back as it was on the way out. auditlog's own ``set_extra_data`` leaves its
    context set after its block ends (only the signal receiver goes), so without this a request's actor
    would outlive the request in its thread and a later ``acting_as`` there would defer to that person."""
    # When there was none, the block runs with one that matches no receiver, not with None: a receiver
    # left connected by a block that ended out of order reads the context and must find a dict.
    before = auditlog_value.get(None)
    token = auditlog_value.set(before if before is not None else {"signal_duid": None})
    try:
        yield
    finally:
        auditlog_value.reset(token)


def _system_user_id() -> int:
    return int(system_user().pk)


def as_system(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator form of ``acting_as`` for task functions and command handlers."""
    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with acting_as(what):
                return function(*args, **kwargs)
        return wrapper
    return decorate


# --- What else the audit trail records --------------------------------------------------------------------

def register_staff_models() -> None:
    """Staff accounts, roles and second-factor devices: changes to who may do what are audited too."""
    user_model = get_user_model()
    if not auditlog.contains(user_model):
        auditlog.register(user_model, exclude_fields=["last_login"], mask_fields=["password"],
                          m2m_fields={"groups", "user_permissions"})
    if not auditlog.contains(Group):
        auditlog.register(Group, m2m_fields={"permissions"})
    device_noise = ["key", "last_t", "drift", "throttling_failure_timestamp", "throttling_failure_count",
                    "last_used_at", "created_at"]
    for device in (TOTPDevice, StaticDevice):
        if not auditlog.contains(device):
            auditlog.register(device, exclude_fields=device_noise)


# Long-running servers: their requests and tasks name their own actors.
NOT_WRAPPED = {"runserver", "qcluster", "demo", "testserver"}


def install_command_actor() -> None:
    """Every management command (billing_tick, imports, seeds, a shell...) runs under ``acting_as``."""
    if getattr(BaseCommand.execute, "_acting_as", False):
        return
    original = BaseCommand.execute

    @functools.wraps(original)
    def execute(self: BaseCommand, *args: Any, **options: Any) -> Any:
        name = type(self).__module__.rsplit(".", 1)[-1]
        if name in NOT_WRAPPED:
            return original(self, *args, **options)
        with acting_as(f"command:{name}"):
            return original(self, *args, **options)

    execute._acting_as = True  # type: ignore[attr-defined]
    BaseCommand.execute = execute  # type: ignore[method-assign]


_task_contexts: list[contextlib.ExitStack] = []


def _task_started(sender: Any, func: Any = None, task: dict[str, Any] | None = None, **kwargs: Any) -> None:
    stack = contextlib.ExitStack()
    name = getattr(func, "__name__", None) or str((task or {}).get("func", "task"))
    stack.enter_context(acting_as(f"task:{name}"))
    _task_contexts.append(stack)


def _task_finished(sender: Any, **kwargs: Any) -> None:
    while _task_contexts:
        _task_contexts.pop().close()


def install_task_actor() -> None:
    """django-q2 tasks (billing_tick every minute) run under ``acting_as("task:<function>")``."""
    pre_execute.connect(_task_started, dispatch_uid="portal.task_actor_start")
    post_execute_in_worker.connect(_task_finished, dispatch_uid="portal.task_actor_finish")
