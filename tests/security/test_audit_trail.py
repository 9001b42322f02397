"""Who saw and changed what: access entries for staff views and API reads, actors for commands and tasks,
the search page and its CSV, and audit rows nobody can change (and if the database is edited, the chain says so).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from io import StringIO

import pytest
from auditlog.context import set_actor
from auditlog.models import LogEntry
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone
from django_q.signals import post_execute_in_worker, pre_execute
from rest_framework.test import APIClient

from billing import tasks
from billing.audit.access import acting_as
from billing.models import Charge, Client, Practice
from billing.roles import AUDITOR, FRONT_DESK
from integrations.ehr.keys import api_key_create
from tests import factories
from tests.security.staff import staff_member

pytestmark = pytest.mark.django_db
ACCESS = LogEntry.Action.ACCESS


def accesses(client: Client) -> list[LogEntry]:
    return list(LogEntry.objects.filter(action=ACCESS, additional_data__client_id=client.pk).order_by("pk"))


@pytest.fixture
def dana(practice: Practice) -> User:
    return staff_member("dana", FRONT_DESK)


def test_opening_a_clients_page_writes_an_access_entry_with_who_when_and_where(dana: User) -> None:
    person = factories.ClientFactory.create(first_name="Maya", last_name="Lindqvist")
    http = HttpClient(REMOTE_ADDR="10.20.30.40")
    http.force_login(dana)
    assert http.get(reverse("admin:billing_client_change", args=[person.pk])).status_code == 200
    [entry] = accesses(person)
    assert entry.actor == dana
    assert entry.remote_addr == "10.20.30.40"
    assert entry.object_pk == str(person.pk) and entry.content_type.model == "client"
    assert timezone.now() - entry.timestamp < dt.timedelta(minutes=1)
    assert entry.additional_data["via"] == "admin"
    # A list of clients is not a view of one record; a page that failed (403) is not either.
    http.get(reverse("admin:billing_client_changelist"))
    assert len(accesses(person)) == 1


def test_pages_of_rows_that_belong_to_a_client_are_access_to_that_client(dana: User) -> None:
    charge = factories.ChargeFactory.create()
    http = HttpClient()
    http.force_login(dana)
    assert http.get(reverse("admin:billing_charge_change", args=[charge.pk])).status_code == 200
    assert http.get(reverse("admin:billing_appointment_change", args=[charge.appointment_id])).status_code == 200
    pages = [e.additional_data["page"] for e in accesses(charge.client)]
    assert pages == ["charge change", "appointment change"]


def test_a_forwarded_for_header_sent_by_the_client_is_not_believed(dana: User, settings: object) -> None:
    person = factories.ClientFactory.create()
    http = HttpClient(REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="1.2.3.4")
    http.force_login(dana)
    http.get(reverse("admin:billing_client_change", args=[person.pk]))
    assert accesses(person)[-1].remote_addr == "10.0.0.5"
    settings.TRUSTED_PROXY_COUNT = 1  # type: ignore[attr-defined]
    http.get(reverse("admin:billing_client_change", args=[person.pk]))
    assert accesses(person)[-1].remote_addr == "1.2.3.4"


def test_api_reads_of_client_data_are_logged_with_the_source_account(practice: Practice) -> None:
    issued = api_key_create(source="jane", now=timezone.now(), name="sync")
    api = APIClient(REMOTE_ADDR="192.0.2.7")
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {issued.key}")
    mine = factories.ClientFactory.create(source="jane", external_id="c-1")
    other = factories.ClientFactory.create(source="jane", external_id="c-2")
    elsewhere = factories.ClientFactory.create(source="simplepractice", external_id="c-1")
    factories.ChargeFactory.create(client=other)

    assert api.get("/api/v1/clients/c-1/").status_code == 200
    assert api.get("/api/v1/clients/c-1/balance/").status_code == 200
    [first, second] = accesses(mine)
    assert first.actor == issued.api_key.user and first.remote_addr == "192.0.2.7"
    assert (first.additional_data["route"], second.additional_data["route"]) == ("client", "balance")
    assert first.additional_data["source"] == "jane"

    assert api.get("/api/v1/charges/").status_code == 200
    assert [e.additional_data["route"] for e in accesses(other)] == ["charges"]
    assert api.get("/api/v1/clients/").status_code == 200
    assert len(accesses(mine)) == 3 and len(accesses(other)) == 2
    assert accesses(elsewhere) == []  # another source's client was never read
    # Writes are in the trail as changes, not as reads.
    assert api.put("/api/v1/clients/c-1/", {"first_name": "Ana", "last_name": "Example", "email": "",
                                            "billing_type": "self_pay"}, format="json").status_code == 200
    assert len(accesses(mine)) == 3


def test_commands_and_tasks_are_recorded_with_the_system_account(practice: Practice) -> None:
    person = factories.ClientFactory.create()
    call_command("shell", "-c", f"from billing.models import Client; c = Client.objects.get(pk={person.pk}); "
                                "c.phone = '555-0199'; c.save()", stdout=StringIO())
    entry = LogEntry.objects.filter(content_type__model="client", object_pk=str(person.pk),
                                    action=LogEntry.Action.UPDATE).latest("pk")
    assert entry.actor is not None and entry.actor.username == "system"
    assert entry.additional_data == {"via": "command:shell"}

    def task() -> None:  # what a django-q2 worker runs around a task function
        Client.objects.filter(pk=person.pk).update(phone="")
        found = Client.objects.get(pk=person.pk)
        found.phone = "555-0198"
        found.save()
        tasks.billing_tick()

    pre_execute.send(sender="django_q", func=tasks.billing_tick, task={"func": "billing.tasks.billing_tick"})
    try:
        task()
    finally:
        post_execute_in_worker.send(sender="django_q", func=tasks.billing_tick, task={})
    person.first_name = "Changed outside any task"
    person.save()
    first, second = LogEntry.objects.filter(content_type__model="client", object_pk=str(person.pk),
                                            action=LogEntry.Action.UPDATE).order_by("-pk")[:2]
    assert second.actor is not None and second.actor.username == "system"
    assert second.additional_data == {"via": "task:billing_tick"}
    assert first.actor is None  # the task's context ended with it
    system = User.objects.get(username="system")
    assert not system.is_active and not system.has_usable_password() and not system.is_staff


def test_rows_written_in_bulk_are_recorded_with_the_same_actor_as_rows_saved_one_by_one(dana: User) -> None:
    """Imports and the tick write rows in bulk (no signals): their entries still name who did it."""
    from billing.audit.bulk import audit_bulk_created

    def bulk_created() -> LogEntry:
        [person] = Client.objects.bulk_create([factories.ClientFactory.build()])
        audit_bulk_created([person])
        return LogEntry.objects.get(content_type__model="client", object_pk=str(person.pk))

    with acting_as("command:import_ehr_csv"):
        by_command = bulk_created()
    assert by_command.actor is not None and by_command.actor.username == "system"
    assert by_command.additional_data == {"via": "command:import_ehr_csv"}

    with set_actor(dana, remote_addr="10.0.0.7"):
        by_person = bulk_created()
    assert (by_person.actor, by_person.actor_email, by_person.remote_addr) == (dana, dana.email, "10.0.0.7")
    assert bulk_created().actor is None  # the person's context ended with its block


def test_the_audit_trail_is_searched_by_client_staff_member_and_date_and_exported(dana: User) -> None:
    maya = factories.ClientFactory.create(first_name="Maya", last_name="Lindqvist", email="maya@example.com")
    omar = factories.ClientFactory.create(first_name="Omar", last_name="Haddad")
    charge = factories.ChargeFactory.create(client=maya)
    front = HttpClient()
    front.force_login(dana)
    front.get(reverse("admin:billing_client_change", args=[maya.pk]))
    front.get(reverse("admin:billing_client_change", args=[omar.pk]))
    front.post(reverse("admin:billing_client_change", args=[maya.pk]), {
        "first_name": "Maya", "last_name": "Lindqvist", "email": "maya.l@example.com", "phone": "",
        "billing_type": maya.billing_type, "active": "on",
        **{f"{prefix}-{k}": v for prefix in ("coverages", "policy_acknowledgments")
           for k, v in (("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"))}})

    auditor = HttpClient()
    auditor.force_login(staff_member("ines", AUDITOR))
    page = auditor.get(reverse("admin:audit_trail"), {"client": "lindqvist"})
    assert page.status_code == 200
    text = page.content.decode()
    assert "Omar" not in text
    rows = page.context["rows"]
    assert {r["action"] for r in rows} >= {"access", "create"}
    assert any(r["what"] == "charge" and r["record"].startswith(f"#{charge.pk}") for r in rows)

    by_dana = auditor.get(reverse("admin:audit_trail"), {"staff": "dana"}).context["rows"]
    assert by_dana and all(r["who"] == "dana" for r in by_dana)
    assert {r["record"].split(" ", 1)[1] for r in by_dana if r["action"] == "access"} == {
        "Maya Lindqvist", "Omar Haddad"}
    today = timezone.localdate()
    assert auditor.get(reverse("admin:audit_trail"), {"staff": "dana", "start": str(today + dt.timedelta(days=1))}
                       ).context["rows"] == []

    export = auditor.get(reverse("admin:audit_trail_csv"), {"client": "#" + str(maya.pk), "staff": "dana"})
    assert export.status_code == 200 and export["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(export.getvalue().decode())))
    assert table and {row["who"] for row in table} == {"dana"}
    assert {row["action"] for row in table} >= {"access"}
    assert all(row["from"] == "127.0.0.1" for row in table)

    # Front desk staff cannot read the trail.
    assert front.get(reverse("admin:audit_trail")).status_code == 403
    assert front.get(reverse("admin:audit_trail_csv")).status_code == 403


def test_an_access_entry_changed_in_the_database_is_named_by_verify_audit_chain(dana: User) -> None:
    person = factories.ClientFactory.create()
    http = HttpClient()
    http.force_login(dana)
    http.get(reverse("admin:billing_client_change", args=[person.pk]))
    call_command("verify_audit_chain", stdout=StringIO())
    [entry] = accesses(person)
    with connection.cursor() as cursor:  # someone hides who looked
        cursor.execute("UPDATE auditlog_logentry SET actor_id = NULL WHERE id = %s", [entry.pk])
    with pytest.raises(CommandError, match=rf"audit_log row {entry.pk} .*changed after it was sealed"):
        call_command("verify_audit_chain", stdout=StringIO())


def test_every_change_to_a_client_is_in_the_trail_with_what_changed(dana: User, admin_client: HttpClient) -> None:
    person = factories.ClientFactory.create(first_name="Maya", last_name="Lindqvist", email="a@example.com")
    Client.objects.filter(pk=person.pk)  # (created by the factory: a create entry)
    person.email = "b@example.com"
    person.save()
    change = LogEntry.objects.filter(content_type__model="client", object_pk=str(person.pk),
                                     action=LogEntry.Action.UPDATE).latest("pk")
    assert change.changes["email"] == ["a@example.com", "b@example.com"]
    assert Charge.objects.count() == 0
