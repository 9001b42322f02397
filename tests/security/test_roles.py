"""Each role can do what it should and gets 403 elsewhere: a table over the staff console's pages and actions.

Roles are groups made by a migration (billing/roles.py). The EHR API is not staff-facing: it answers API
keys (one per EHR source), never a staff session, so a signed-in staff member gets 401 there.
"""

from __future__ import annotations

from typing import Any

import pytest
from auditlog.models import LogEntry
from django.contrib.auth.models import Group, User
from django.test import Client as HttpClient
from django.urls import reverse

from billing.models import Charge, ChargeKind, ChargeStatus, Client, EmailTemplate, Practice
from billing.roles import ADMINISTRATOR, AUDITOR, BILLING_MANAGER, FRONT_DESK, ROLES
from tests import factories
from tests.security.staff import staff_member

pytestmark = pytest.mark.django_db
FD, BM, AU, AD = FRONT_DESK, BILLING_MANAGER, AUDITOR, ADMINISTRATOR
ALL = {FD, BM, AU, AD}


@pytest.fixture
def rows(practice: Practice) -> dict[str, Any]:
    client = factories.ClientFactory.create()
    fee = factories.ChargeFactory.create(client=client, kind=ChargeKind.NO_SHOW_FEE, amount_cents=7500)
    paid = factories.ChargeFactory.create(client=client, status=ChargeStatus.SUCCEEDED)
    template = EmailTemplate.objects.create(name="receipt", subject="Receipt", body_text="Thanks")
    http = HttpClient()
    http.get(reverse("admin:login"))  # any request: makes sure an audit entry exists below
    entry = LogEntry.objects.order_by("pk").first()
    assert entry is not None
    return {"client": client, "fee": fee, "paid": paid, "practice": practice, "template": template,
            "entry": entry, "user": User.objects.get(username="system")}


def offered_actions(listing: Any) -> set[str]:
    form = listing.context["action_form"]  # None when the page offers no action at all
    return {choice[0] for choice in form.fields["action"].choices} if form else set()


def signed_in(role: str) -> HttpClient:
    http = HttpClient()
    http.force_login(staff_member(role.split()[0].lower(), role))  # second factor passed (tests/conftest.py)
    return http


# (what, method, url, who may). Everyone else must get 403.
PAGES: list[tuple[str, str, str, set[str]]] = [
    ("client list", "get", "admin:billing_client_changelist", ALL),
    ("a client's page", "get", "admin:billing_client_change:client", ALL),
    ("add a client", "get", "admin:billing_client_add", {FD, BM, AD}),
    ("save a client", "post", "admin:billing_client_change:client", {FD, BM, AD}),
    ("add a session", "get", "admin:billing_appointment_add", {FD, BM, AD}),
    ("add coverage", "get", "admin:billing_coverage_add", {FD, BM, AD}),
    ("charges", "get", "admin:billing_charge_changelist", ALL),
    ("refund a charge", "get", "admin:billing_charge_refund:paid", {BM, AD}),
    ("refund a charge (post)", "post", "admin:billing_charge_refund:paid", {BM, AD}),
    ("practice settings (view)", "get", "admin:billing_practice_change:practice", ALL),
    ("practice settings (save)", "post", "admin:billing_practice_change:practice", {BM, AD}),
    ("preview report", "get", "admin:billing_practice_preview", ALL),
    ("fee schedule (add)", "get", "admin:billing_feescheduleentry_add", {BM, AD}),
    ("email templates (edit)", "post", "admin:billing_emailtemplate_change:template", {BM, AD}),
    ("email templates (add)", "get", "admin:billing_emailtemplate_add", {BM, AD}),
    ("ledger", "get", "admin:billing_ledgerentry_changelist", ALL),
    ("staff accounts", "get", "admin:auth_user_changelist", {AU, AD}),
    ("add a staff account", "get", "admin:auth_user_add", {AD}),
    ("roles", "get", "admin:auth_group_changelist", {AU, AD}),
    ("edit a role", "post", "admin:auth_group_add", {AD}),
    ("API keys", "get", "admin:ehr_apikey_changelist", {AU, AD}),
    ("add an API key", "get", "admin:ehr_apikey_add", {AD}),
    ("second-factor devices", "get", "admin:otp_totp_totpdevice_changelist", {AU, AD}),
    ("sign-in lockouts", "get", "admin:axes_accessattempt_changelist", {AU, AD}),
    ("audit trail search", "get", "admin:audit_trail", {AU, AD}),
    ("audit trail CSV", "get", "admin:audit_trail_csv", {AU, AD}),
    ("audit entries", "get", "admin:auditlog_logentry_changelist", {AU, AD}),
    ("an audit entry", "get", "admin:auditlog_logentry_change:entry", {AU, AD}),
    ("delete an audit entry", "post", "admin:auditlog_logentry_delete:entry", set()),
    ("change an audit entry", "post", "admin:auditlog_logentry_change:entry", set()),
    ("audit seals (change)", "post", "admin:billing_auditseal_add", set()),
    ("delete a staff account", "post", "admin:auth_user_delete:user", set()),
    ("task queue", "get", "admin:django_q_schedule_changelist", {AU, AD}),
]


def url(name: str, rows: dict[str, Any]) -> str:
    parts = name.split(":")
    if len(parts) == 3:
        return reverse(f"{parts[0]}:{parts[1]}", args=[rows[parts[2]].pk])
    return reverse(name)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_reaches_its_pages_and_gets_403_elsewhere(role: str, rows: dict[str, Any]) -> None:
    http = signed_in(role)
    wrong = []
    for what, method, name, allowed in PAGES:
        response = getattr(http, method)(url(name, rows), {})
        if role in allowed:
            # Allowed: the page (200), a form answered with errors (200) or a redirect within the admin (302).
            refused = response.status_code in (403, 404) or "/login/" in response.get("Location", "")
            if refused:
                wrong.append(f"{what}: {response.status_code}, expected to be allowed")
        elif response.status_code != 403:
            wrong.append(f"{what}: {response.status_code}, expected 403")
    assert wrong == [], f"{role}: {wrong}"


# (action, model, row, who may) through the change list's action menu. Not allowed: offered to no one
# outside the role and, when posted anyway, nothing changes.
def post_action(http: HttpClient, model: str, action: str, pk: int, **extra: str) -> Any:
    return http.post(reverse(f"admin:billing_{model}_changelist"),
                     {"action": action, "_selected_action": [pk], "apply": "1", **extra}, follow=True)


@pytest.mark.parametrize("role", ROLES)
def test_waiving_and_canceling_charges_is_for_billing_managers_and_administrators(
        role: str, rows: dict[str, Any]) -> None:
    http = signed_in(role)
    fee: Charge = rows["fee"]
    post_action(http, "charge", "waive_fee", fee.pk, why="Goodwill")
    fee.refresh_from_db()
    may = role in (BM, AD)
    assert (fee.status == ChargeStatus.CANCELED) is may, role
    listing = http.get(reverse("admin:billing_charge_changelist"))
    if listing.status_code == 200:
        offered = offered_actions(listing)
        assert ({"waive_fee", "cancel_charge", "release_charge", "release_preview"} <= offered) is may, role


@pytest.mark.parametrize("role", ROLES)
def test_card_links_are_sent_by_front_desk_billing_managers_and_administrators(
        role: str, rows: dict[str, Any]) -> None:
    http = signed_in(role)
    listing = http.get(reverse("admin:billing_client_changelist"))
    offered = offered_actions(listing)
    assert ("send_card_link" in offered) is (role in (FD, BM, AD))
    assert ("link_to_stripe" in offered) is (role in (FD, BM, AD))


@pytest.mark.parametrize("role", ROLES)
def test_only_administrators_reset_devices_and_unlock(role: str, rows: dict[str, Any]) -> None:
    http = signed_in(role)
    listing = http.get(reverse("admin:auth_user_changelist"))
    if role not in (AU, AD):
        assert listing.status_code == 403
        return
    offered = offered_actions(listing)
    assert ({"reset_second_factor", "unlock_sign_in"} <= offered) is (role == AD)


def test_the_auditor_changes_nothing(rows: dict[str, Any]) -> None:
    http = signed_in(AUDITOR)
    client: Client = rows["client"]
    page = http.get(reverse("admin:billing_client_change", args=[client.pk]))
    assert page.status_code == 200 and 'name="_save"' not in page.text
    assert http.post(reverse("admin:billing_client_change", args=[client.pk]),
                     {"first_name": "Changed"}).status_code == 403
    client.refresh_from_db()
    assert client.first_name != "Changed"


def test_no_role_may_change_or_delete_audit_rows() -> None:
    for role in ROLES:
        names = set(Group.objects.get(name=role).permissions.values_list("content_type__app_label", "codename"))
        assert not {("auditlog", "change_logentry"), ("auditlog", "delete_logentry"), ("auditlog", "add_logentry"),
                    ("billing", "change_auditseal"), ("billing", "delete_auditseal")} & names, role


def test_a_superuser_cannot_delete_or_edit_audit_rows_either(admin_client: HttpClient, rows: dict[str, Any]) -> None:
    entry = rows["entry"]
    assert admin_client.post(reverse("admin:auditlog_logentry_delete", args=[entry.pk]), {"post": "yes"}
                             ).status_code == 403
    assert admin_client.post(reverse("admin:auditlog_logentry_change", args=[entry.pk]), {}).status_code == 403
    assert LogEntry.objects.filter(pk=entry.pk).exists()


def test_the_ehr_api_does_not_accept_a_staff_session(rows: dict[str, Any]) -> None:
    http = signed_in(ADMINISTRATOR)
    assert http.get("/api/v1/clients/").status_code == 401


def test_the_roles_exist_after_migrating_with_their_permissions() -> None:
    front_desk = Group.objects.get(name=FRONT_DESK)
    codenames = set(front_desk.permissions.values_list("codename", flat=True))
    assert {"change_client", "add_appointment", "send_card_link"} <= codenames
    assert not {"refund_charge", "waive_fee", "cancel_charge", "release_charge", "change_practice",
                "change_emailtemplate", "change_feescheduleentry"} & codenames
    manager = set(Group.objects.get(name=BILLING_MANAGER).permissions.values_list("codename", flat=True))
    assert {"refund_charge", "waive_fee", "cancel_charge", "release_charge", "change_practice",
            "change_emailtemplate"} <= manager
    assert not {"add_user", "change_user", "view_logentry"} & manager
    auditor = Group.objects.get(name=AUDITOR).permissions.values_list("codename", flat=True)
    assert all(codename.startswith("view_") for codename in auditor)
