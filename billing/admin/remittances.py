"""ERA remittances in the staff console: the payments posted, and their service lines, where staff pick the
session of a line the portal could not match (billing/services/remittances.py).

Uploading a file is the EHR room's page (integrations/ehr/admin.py); these pages never change figures.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from billing.admin.common import dollars, staff_user
from billing.errors import Refused
from billing.models import Participant, Practice, Remittance, RemittanceLine, RemittanceLineStatus
from billing.services.remittances import line_candidates, remittance_line_match


class RemittanceAdmin(admin.ModelAdmin):
    list_display = ("paid_on", "payer_name", "trace_number", "method", "paid", "payee_npi", "file_name",
                    "posted_by")
    search_fields = ("=trace_number", "payer_name", "file_name")
    date_hierarchy = "paid_on"
    show_full_result_count = False
    readonly_fields = ("payer_name", "payer_key", "payee_name", "payee_npi", "trace_number", "method",
                       "paid_cents", "paid_on", "file_name", "posted_by", "created_at")

    @admin.display(description="paid")
    def paid(self, obj: Remittance) -> str:
        return dollars(obj.paid_cents)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class RemittanceLineAdmin(admin.ModelAdmin):
    """Each service line of each remittance; an unmatched one's page lists sessions to post it to."""

    list_display = ("claim_id", "line_number", "patient_name", "member_id", "cpt_code", "service_date", "paid",
                    "owes", "status", "detail", "remittance")
    list_filter = ("status", "claim_status")
    list_select_related = ("remittance",)
    search_fields = ("=claim_id", "patient_name", "=member_id", "=remittance__trace_number")
    show_full_result_count = False

    @admin.display(description="paid")
    def paid(self, obj: RemittanceLine) -> str:
        return dollars(obj.paid_cents)

    @admin.display(description="client owes")
    def owes(self, obj: RemittanceLine) -> str:
        return dollars(obj.patient_responsibility_cents)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        line = self.get_object(request, object_id)
        if line is None or not self.has_view_permission(request, line):
            raise PermissionDenied
        zone = Practice.load().zone
        may_match = line.status == RemittanceLineStatus.UNMATCHED and self.has_change_permission(request, line)
        error = ""
        if request.method == "POST":
            if not may_match:
                raise PermissionDenied
            participant = Participant.objects.select_related("appointment", "client").filter(
                pk=request.POST.get("participant") or 0).first() if (request.POST.get("participant") or ""
                                                                      ).isdigit() else None
            if participant is None:
                error = "Pick the session this line pays for."
            else:
                try:
                    remittance_line_match(line=line, appointment=participant.appointment, client=participant.client,
                                          actor=staff_user(request).get_username(), now=timezone.now())
                except Refused as problem:
                    error = str(problem)
                else:
                    self.message_user(request, f"Posted to {participant.appointment} for {participant.client}.",
                                      messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:billing_remittanceline_changelist")
                                                + "?status__exact=unmatched")
        candidates = line_candidates(line, zone=zone) if may_match else []
        return TemplateResponse(request, "admin/billing/remittanceline/match.html", {
            **self.admin_site.each_context(request), "title": str(line),
            "line": line, "candidates": [(p, p.appointment.starts_at.astimezone(zone)) for p in candidates],
            "may_match": may_match, "error": error, "opts": self.model._meta})
