from __future__ import annotations

from django.db import models
from django.utils import timezone

from billing.models.base import ExternalRecord, StatusEvent
from billing.models.people import Client, Clinician
from billing.validators import validate_cpt, validate_icd10_list


class AppointmentStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled"
    COMPLETED = "completed", "Completed"
    NO_SHOW = "no_show", "No-show"
    LATE_CANCEL = "late_cancel", "Late cancel"
    CANCELED = "canceled", "Canceled"


class PlaceOfService(models.TextChoices):
    """The CMS place-of-service codes a therapy session uses (CMS-1500 box 24B)."""

    TELEHEALTH = "02", "02 Telehealth (not in the client's home)"
    TELEHEALTH_HOME = "10", "10 Telehealth in the client's home"
    OFFICE = "11", "11 Office"


TELEHEALTH_PLACES = (PlaceOfService.TELEHEALTH, PlaceOfService.TELEHEALTH_HOME)
# CPT modifier 95: a synchronous audio-video telehealth service.
TELEHEALTH_MODIFIER = "95"


class Appointment(ExternalRecord):
    clinician = models.ForeignKey(Clinician, on_delete=models.PROTECT, related_name="appointments")
    clients = models.ManyToManyField(Client, through="Participant", related_name="appointments")
    service_code = models.CharField("CPT code", max_length=5, validators=[validate_cpt])
    diagnosis_codes = models.JSONField(default=list, blank=True, validators=[validate_icd10_list],
                                       help_text="ICD-10 codes, for superbills only. Never sent to Stripe.")
    starts_at = models.DateTimeField()
    duration_minutes = models.PositiveSmallIntegerField(default=50)
    status = models.CharField(max_length=20, choices=AppointmentStatus.choices,
                              default=AppointmentStatus.SCHEDULED)
    note_signed_at = models.DateTimeField(null=True, blank=True)
    fee_cents = models.PositiveIntegerField(null=True, blank=True,
                                            help_text="Overrides the practice's fee for this session.")
    place_of_service = models.CharField(
        max_length=2, choices=PlaceOfService.choices, blank=True, default="",
        help_text="Printed on superbills (telehealth adds modifier 95). Empty: not recorded.")

    class Meta:
        ordering = ["-starts_at"]
        constraints = [ExternalRecord.external_id_constraint("appointment_unique_external_id")]
        indexes = [
            models.Index(fields=["-starts_at"], name="appointment_starts"),
            models.Index(fields=["status", "-starts_at"], name="appointment_status_starts"),
            models.Index(fields=["clinician", "-starts_at"], name="appointment_clinician_starts"),
        ]

    @property
    def is_telehealth(self) -> bool:
        return self.place_of_service in TELEHEALTH_PLACES

    @property
    def cpt_modifiers(self) -> list[str]:
        return [TELEHEALTH_MODIFIER] if self.is_telehealth else []

    def __str__(self) -> str:
        # In the current zone: the practice's in a request, the tick and commands (billing/local_time.py).
        return f"{self.service_code} on {timezone.localtime(self.starts_at):%Y-%m-%d %H:%M}"


class Participant(models.Model):
    """A client attending an appointment: one for an individual session, several for a group."""

    appointment = models.ForeignKey(Appointment, on_delete=models.CASCADE, related_name="participants")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="participations")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["appointment", "client"], name="participant_once")]
        # A search finds clients first, then their sessions: from the index alone, no participant row read.
        indexes = [models.Index(fields=["client", "appointment"], name="participant_client_session")]

    def __str__(self) -> str:
        return str(self.client)


class AppointmentEvent(StatusEvent):
    """Append-only history of an appointment's status moves."""

    appointment = models.ForeignKey(Appointment, on_delete=models.CASCADE, related_name="events")

    class Meta(StatusEvent.Meta):
        pass
