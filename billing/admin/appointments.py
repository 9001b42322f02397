"""Sessions, as the EHR pushed them or staff entered them, with who attended and what each was charged."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Prefetch, QuerySet
from django.forms import BaseInlineFormSet, ModelForm
from django.http import HttpRequest
from django.utils import timezone

from billing.admin.common import (
    DollarsMixin,
    IdCheckedAutocompleteMixin,
    ReadOnlyInline,
    ViewOnlyMixin,
    dollars,
    staff_user,
)
from billing.admin.people import clients_matching
from billing.models import Appointment, AppointmentEvent, Charge, Participant, Service
from billing.services.schedule import appointment_set_status, appointment_sync_charges


class ServiceFilter(admin.SimpleListFilter):
    """Sessions by CPT code, offered from the practice's few services rather than read off every session."""

    title = "service"
    parameter_name = "service_code"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(service.cpt_code, str(service)) for service in Service.objects.all()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(service_code=self.value()) if self.value() else queryset


class ParticipantInline(IdCheckedAutocompleteMixin, admin.TabularInline):
    model = Participant
    extra = 0
    autocomplete_fields = ("client",)


class AppointmentChargeInline(ReadOnlyInline):
    model = Charge
    verbose_name_plural = "charges"
    fields = ("client", "kind", "amount", "status", "scheduled_for", "payment_reference")
    ordering = ("client__last_name", "id")

    def get_queryset(self, request: HttpRequest) -> QuerySet[Charge]:
        return super().get_queryset(request).select_related("client")

    @admin.display(description="Amount")
    def amount(self, charge: Charge) -> str:
        return dollars(charge.amount_cents)


class AppointmentEventInline(ReadOnlyInline):
    model = AppointmentEvent
    verbose_name_plural = "status history"
    fields = ("at", "from_status", "to_status", "actor", "reason")
    show_change_link = False


class AppointmentAdmin(DollarsMixin, admin.ModelAdmin):
    list_display = ("starts_at", "clinician", "client_names", "service_code", "status", "note_signed",
                    "fee_override")
    list_filter = ("status", "clinician", ServiceFilter)
    list_select_related = ("clinician",)
    # Searched by get_search_results; naming the field here is what shows the search box.
    search_fields = ("=external_id",)
    search_help_text = "A client's name or email, or the EHR's id for the session."
    date_hierarchy = "starts_at"
    show_full_result_count = False
    ordering = ("-starts_at",)
    readonly_fields = ("source", "external_id", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("clinician", "starts_at", "duration_minutes", "service_code", "place_of_service",
                           "diagnosis_codes", "status", "note_signed_at", "fee_cents")}),
        ("From the EHR", {"fields": ("source", "external_id", "created_at", "updated_at")}),
    )
    inlines = (ParticipantInline, AppointmentChargeInline, AppointmentEventInline)
    actions = ("recheck_billing",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Appointment]:
        # One query for the attendees of the whole page, not one per row.
        attendees = Prefetch("participants", queryset=Participant.objects.select_related("client"))
        return super().get_queryset(request).prefetch_related(attendees)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Appointment],
                           search_term: str) -> tuple[QuerySet[Appointment], bool]:
        # The stock search through participants__client joins every attendee and makes the list DISTINCT,
        # which reads the whole table; a semi-join on the few matching clients reads only their sessions.
        # One path per search, never both OR-ed (which reads every session): the EHR's id of a session when
        # one has it (one look-up through the (source, external id) index), else the clients' sessions.
        term = search_term.strip()
        if not term:
            return queryset, False
        by_id = list(Appointment.objects.filter(external_id=term).values_list("pk", flat=True)[:20])
        if by_id:
            return queryset.filter(pk__in=by_id), False
        attended = Participant.objects.filter(client__in=clients_matching(term)).values("appointment_id")
        return queryset.filter(pk__in=attended), False

    @admin.display(description="Clients")
    def client_names(self, appointment: Appointment) -> str:
        return ", ".join(str(p.client) for p in appointment.participants.all())

    @admin.display(description="Note signed", boolean=True)
    def note_signed(self, appointment: Appointment) -> bool:
        return appointment.note_signed_at is not None

    @admin.display(description="Fee override", ordering="fee_cents")
    def fee_override(self, appointment: Appointment) -> str:
        return "" if appointment.fee_cents is None else dollars(appointment.fee_cents)

    def save_model(self, request: HttpRequest, obj: Appointment, form: ModelForm, change: bool) -> None:
        # A status move goes through the schedule service (in save_related), which records it.
        if change and "status" in form.changed_data:
            obj.status = form.initial["status"]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: ModelForm, formsets: list[BaseInlineFormSet],
                     change: bool) -> None:
        super().save_related(request, form, formsets, change)
        # A session edited by hand is a session that changed: its pending charges follow, as they do
        # for a change the EHR pushes. This runs after the attendees are saved so they are priced too.
        user = staff_user(request)
        actor = f"staff:{user.get_username()}"
        if change and "status" in form.changed_data:
            appointment_set_status(appointment=form.instance, status=form.cleaned_data["status"],
                                   now=timezone.now(), actor=actor, user=user, reason="Changed in the admin")
        else:
            appointment_sync_charges(appointment=form.instance, now=timezone.now(), actor=actor, user=user)

    @admin.action(description="Re-check billing", permissions=["change"])
    def recheck_billing(self, request: HttpRequest, queryset: QuerySet[Appointment]) -> None:
        user, count = staff_user(request), 0
        for appointment in queryset:
            appointment_sync_charges(appointment=appointment, now=timezone.now(),
                                     actor=f"staff:{user.get_username()}", user=user)
            count += 1
        self.message_user(request, f"Re-checked billing for {count} session{'s' if count != 1 else ''}.",
                          messages.SUCCESS)


class AppointmentEventAdmin(ViewOnlyMixin, admin.ModelAdmin):
    list_display = ("at", "appointment", "from_status", "to_status", "actor", "reason")
    list_filter = ("to_status",)
    list_select_related = ("appointment",)
    date_hierarchy = "at"
    show_full_result_count = False
    ordering = ("-at", "-id")
