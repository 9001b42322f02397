"""Staff accounts (reset a lost second factor, unlock), roles, and view-only audit pages. The admin's
autodiscovery imports this after auth, auditlog, django-otp and django-axes registered their own pages."""

from __future__ import annotations

from typing import Any

from auditlog.models import LogEntry
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from axes.utils import reset
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group, User
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from portal import security_otp
from portal.security_admin import audit_entry_admin, view_only

# --- Staff accounts ---------------------------------------------------------------------------------------

class StaffUserAdmin(UserAdmin):
    """Staff accounts. Never deleted (that would blank the actor on their audit rows): deactivate instead."""

    list_display = ("username", "email", "first_name", "last_name", "is_staff", "is_active", "roles",
                    "second_factor", "locked_out")
    actions = ("reset_second_factor", "unlock_sign_in")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).prefetch_related("groups")

    @admin.display(description="Roles")
    def roles(self, user: Any) -> str:
        return ", ".join(group.name for group in user.groups.all()) or ("superuser" if user.is_superuser else "-")

    @admin.display(description="Second factor", boolean=True)
    def second_factor(self, user: Any) -> bool:
        return security_otp.has_confirmed_device(user)

    @admin.display(description="Locked out", boolean=True)
    def locked_out(self, user: Any) -> bool:
        return AccessAttempt.objects.filter(username=user.get_username(),
                                            failures_since_start__gte=settings.AXES_FAILURE_LIMIT).exists()

    @admin.action(description="Reset second factor (lost phone): enroll again at next sign-in",
                  permissions=["change"])
    def reset_second_factor(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for user in queryset:
            security_otp.second_factor_reset(user)
        self.message_user(request, f"Reset the second factor of {', '.join(u.get_username() for u in queryset)}: "
                                   "they set up a new authenticator app when they next sign in.", messages.SUCCESS)

    @admin.action(description="Unlock sign-in (after too many failed attempts)", permissions=["change"])
    def unlock_sign_in(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for user in queryset:
            reset(username=user.get_username())
        self.message_user(request, f"Unlocked {', '.join(u.get_username() for u in queryset)}.", messages.SUCCESS)


class RoleAdmin(GroupAdmin):
    """Roles are groups (billing/roles.py defines the built-in four)."""

    list_display = ("name", "members")

    @admin.display(description="Members")
    def members(self, group: Any) -> int:
        return int(group.user_set.count())


def _replace(model: type, model_admin: type[admin.ModelAdmin]) -> None:
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)


_replace(User, StaffUserAdmin)
_replace(Group, RoleAdmin)
_replace(LogEntry, audit_entry_admin())
# Sign-in history (django-axes) is part of the audit record: view only. Locked-out attempts
# (AccessAttempt) stay deletable by administrators: deleting one unlocks the account.
for record in (AccessLog, AccessFailureLog):
    if admin.site.is_registered(record):
        _replace(record, view_only(type(admin.site.get_model_admin(record))))


def _with_attempt_time(base: type[Any]) -> type[Any]:
    class AccessAttemptAdmin(base):
        @admin.action(description="Clean up expired attempts")
        def cleanup_expired_attempts(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
            # django-axes reads "now" from the request, which only its own sign-in handling sets.
            request.axes_attempt_time = timezone.now()  # type: ignore[attr-defined]
            super().cleanup_expired_attempts(request, queryset)

    return AccessAttemptAdmin


if admin.site.is_registered(AccessAttempt):
    _replace(AccessAttempt, _with_attempt_time(type(admin.site.get_model_admin(AccessAttempt))))
