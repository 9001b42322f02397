"""The staff console's security: the admin site asks for the second factor and serves the sign-in and
audit-trail pages; audit rows are view only. ``StaffSecuritySiteMixin`` is mixed into
``portal.admin_site.PracticeAdminSite``; portal/admin.py holds the staff-account admin.

Nothing here imports an app's admin module: this is imported while the admin site itself is being built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponseBase
from django.urls import URLPattern, URLResolver, path
from django.views.decorators.cache import never_cache

from billing.admin import audit
from billing.admin.common import ViewOnlyMixin
from portal import security_otp
from portal.security import is_verified


class StaffSecuritySiteMixin:
    """No admin page without the second factor; the sign-in pages and the audit trail's search."""

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and is_verified(request.user)  # type: ignore[misc]

    def get_urls(self) -> list[URLPattern | URLResolver]:
        site: Any = self

        def bound(view: Callable[[Any, HttpRequest], HttpResponseBase]) -> Callable[[HttpRequest], HttpResponseBase]:
            @never_cache
            def page(request: HttpRequest) -> HttpResponseBase:
                return view(site, request)
            return page

        own = [
            # Reachable with the password alone: the second step itself.
            path("otp/verify/", bound(security_otp.verify_view), name="otp_verify"),
            path("otp/enroll/", bound(security_otp.enroll_view), name="otp_enroll"),
            # The rest needs a full sign-in (admin_view checks has_permission, which asks for the factor).
            path("otp/recovery-codes/", site.admin_view(bound(security_otp.recovery_codes_view)),
                 name="otp_recovery_codes"),
            path("audit-trail/", site.admin_view(bound(audit.audit_trail_view)), name="audit_trail"),
            path("audit-trail/export.csv", site.admin_view(bound(audit.audit_trail_csv)), name="audit_trail_csv"),
        ]
        return [*own, *super().get_urls()]  # type: ignore[misc]


# --- Audit rows: view only, for everyone ------------------------------------------------------------------

def audit_entry_admin() -> type[admin.ModelAdmin]:
    """django-auditlog's own pages for the entries, never editable; the search is at admin/audit-trail/."""
    # Imported here, not above: auditlog's admin module registers on the default site as it is imported, and
    # this module is imported while that site is being built.
    from auditlog.admin import LogEntryAdmin

    return view_only(LogEntryAdmin)


def view_only(base: type[admin.ModelAdmin]) -> type[admin.ModelAdmin]:
    return type(f"ViewOnly{base.__name__}", (ViewOnlyMixin, base), {})
