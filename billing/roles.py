"""The staff roles, as Django groups with permissions (SECURITY.md, "Access control").

- Front desk: clients, coverage, policy acknowledgments, sessions and who attended, the review queue;
  sends card links and links clients to Stripe; takes card payments by phone and records payments taken
  outside Stripe; sees charges, the ledger and the rest. No refunds, waivers, adjustments, write-offs,
  holds, cancellations, practice or policy settings, email wording, users, audit trail.
- Billing manager: everything in billing: refunds, waivers, write-offs and cancellations, releasing holds,
  practice and billing policy, fee schedules, email templates, reports. Not users, API keys, audit trail.
- Auditor (read only): sees everything, the audit trail and sign-in history included; changes nothing.
- Administrator: everything (users and roles, second-factor resets and unlocks, API keys); but no one,
  an administrator included, may edit or delete audit rows.

The groups are created by a migration (portal/migrations/0001_staff_roles.py) and kept up to date after each
``migrate``: a permission added later (a new model, a new action) is added to the roles these rules give it
to. A permission removed from a built-in role by hand stays removed unless the rules change; for other
combinations, make a new group.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps as live_apps

FRONT_DESK = "Front desk"
BILLING_MANAGER = "Billing manager"
AUDITOR = "Auditor (read only)"
ADMINISTRATOR = "Administrator"
ROLES = (FRONT_DESK, BILLING_MANAGER, AUDITOR, ADMINISTRATOR)

# Rows front desk staff keep up to date (billing app model names).
FRONT_DESK_EDITS = {"client", "coverage", "policyacknowledgment", "appointment", "participant", "reviewitem",
                    "goodfaithestimate"}
FRONT_DESK_DELETES = {"coverage", "participant"}
FRONT_DESK_ACTIONS = {"send_card_link", "link_stripe_customer", "take_payment"}
# Practice configuration a billing manager may remove rows of; money and history rows are never deleted.
BILLING_MANAGER_DELETES = {"coverage", "participant", "service", "payer", "feescheduleentry", "categoryrate",
                           "emailtemplate"}
# Rows nobody changes through the application: the audit trail and its seals.
AUDIT_ROWS = {("auditlog", "logentry"), ("admin", "logentry"), ("billing", "auditseal")}
STANDARD = ("view", "add", "change", "delete")


def _split(codename: str) -> tuple[str, str]:
    """('change', 'client') for 'change_client'; ('', codename) for a custom permission."""
    verb, _, model = codename.partition("_")
    return (verb, model) if verb in STANDARD else ("", codename)


def role_grants(role: str, app_label: str, codename: str, model: str) -> bool:
    """Does the role get the permission ``app_label.codename`` (on ``model``, the content type's model)?"""
    verb, _ = _split(codename)
    if (app_label, model) in AUDIT_ROWS and verb != "view":
        return False
    if role == ADMINISTRATOR:
        return True
    if role == AUDITOR:
        return verb == "view"
    if app_label != "billing":
        return False
    if role == BILLING_MANAGER:
        return verb != "delete" or model in BILLING_MANAGER_DELETES
    if role == FRONT_DESK:
        if verb == "view":
            return True
        if verb == "delete":
            return model in FRONT_DESK_DELETES
        if verb in ("add", "change"):
            return model in FRONT_DESK_EDITS
        return codename in FRONT_DESK_ACTIONS
    return False


def roles_sync(apps: Any = None, *, only_add: bool = True) -> dict[str, int]:
    """Create the four groups if missing and give each the permissions the rules grant it.

    ``apps`` is a migration's historical registry (or None for the live one). With ``only_add`` a
    permission is never taken away, so an administrator's deliberate removal survives a deploy.
    Returns how many permissions each role has.
    """
    if apps is None:
        apps = live_apps
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    permissions = list(permission_model.objects.select_related("content_type"))
    counts: dict[str, int] = {}
    for role in ROLES:
        group, _ = group_model.objects.get_or_create(name=role)
        wanted = [p.pk for p in permissions
                  if role_grants(role, p.content_type.app_label, p.codename, p.content_type.model)]
        if only_add:
            group.permissions.add(*wanted)
        else:
            group.permissions.set(wanted)
        counts[role] = group.permissions.count()
    return counts


def role_permission_names(role: str, permissions: Iterable[tuple[str, str, str]]) -> set[str]:
    """The ``app_label.codename`` names the rules grant a role, from (app_label, codename, model) triples."""
    return {f"{app}.{codename}" for app, codename, model in permissions if role_grants(role, app, codename, model)}


def sync_after_migrate(sender: Any, **kwargs: Any) -> None:
    """post_migrate: once per ``migrate`` (for the last app), after every app's permissions exist."""
    if sender is list(live_apps.get_app_configs())[-1]:
        roles_sync()
