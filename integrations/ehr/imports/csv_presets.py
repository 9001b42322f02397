"""Which columns the EHRs' CSV exports carry, and what their statuses mean here: the one place to adjust them.

Neither SimplePractice nor TherapyNotes publishes an export format, so these lists come from their public
help pages (see docs/ehr-notes.md) and from what staff see in the downloaded files; every
column has aliases because the wording moves between versions and reports (e.g. "Cancelled" became
"Canceled" in SimplePractice's 2024 help pages). Headers are compared without case, surrounding space or
a byte-order mark. Staff can always override a preset with their own mapping ("Column=field,...").

Where an export has no column for something the portal needs, the importer says so (missing column) rather
than guessing, except where noted below.

SimplePractice (help centre: "Managing appointment statuses and billing", "Reports"; reports download as
CSV or Excel):
- Appointment statuses: Show (the default, also for appointments still to come: billed once held),
  No Show, Late Cancelled, Cancelled, Clinician Canceled. Show on a session that has not started yet is
  ``scheduled`` here; once its start has passed it is ``completed``.
- Appointments (the "Appointment status" report / calendar export): Date of Service, Time, Client,
  Client ID, Clinician, Service Code, Status, Rate (the fee SimplePractice bills), Duration.
- Clients (client list export): Client ID, First Name, Last Name, Email, Phone, Date of Birth, Billing
  Type (Self-pay / Insurance; "Sliding Scale" where practices use it), Rate.
- Insurance payments ("Insurance payments" report): Client ID, Date of Service, Payer, Allowed Amount,
  Insurance Paid, Client Responsibility, Payment Date, Reference (check or EFT number).

TherapyNotes (help centre and billing-tool vendors describing its reports; exports as CSV):
- Appointment statuses: Scheduled, Show / Attended, Missed (no-show), Late Canceled, Canceled,
  Clinician Canceled. A "Canceled" or "Missed" row whose "Charge Fee" column says Yes is a billable
  late cancel / no-show; without that column, Canceled is a plain cancellation.
- Appointments: Date, Time, Patient, Patient ID, Clinician, Service Code, Status, Duration, Charge Fee.
- Patients: Patient ID, First Name, Last Name, Email, Phone, Date of Birth, Billing Type.
- ERA payments (835 lines as a report): Patient ID, Date of Service, Payer, Allowed, Paid, Patient
  Responsibility, Payment Date, Check Number.

Money columns are dollars ("$1,234.50", "120", "(15.00)" is refused as negative); dates MM/DD/YYYY or
YYYY-MM-DD; times like "10:00 AM" or "14:30" in the practice's time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from billing.models import AppointmentStatus

KINDS = ("clients", "appointments", "insurance-payments")


@dataclass(frozen=True)
class Field:
    name: str
    label: str
    required: bool = False


# The portal's fields a CSV column can fill, per kind. ``required`` ones must be mapped to a column.
FIELDS: dict[str, tuple[Field, ...]] = {
    "clients": (
        Field("external_id", "the EHR's client id", required=True),
        Field("first_name", "first name"),
        Field("last_name", "last name"),
        Field("name", "full name (\"Last, First\" or \"First Last\"), when there are no separate name columns"),
        Field("email", "email"),
        Field("phone", "phone"),
        Field("date_of_birth", "date of birth"),
        Field("billing_type", "billing type (insurance, self-pay, sliding scale)"),
        Field("session_rate", "session rate in dollars"),
        Field("active", "active (yes/no)"),
    ),
    "appointments": (
        Field("external_id", "the EHR's appointment id (derived from client, date and time when absent)"),
        Field("client", "the client's id in the EHR", required=True),
        Field("clinician", "the clinician (their id or name, as pushed to the portal)", required=True),
        Field("date", "date of service (may include the time)", required=True),
        Field("time", "start time"),
        Field("service_code", "CPT code", required=True),
        Field("status", "appointment status"),
        Field("duration_minutes", "duration in minutes"),
        Field("fee", "the session's fee in dollars (overrides the fee schedule)"),
        Field("place_of_service", "place of service: 11 (office), 02 (telehealth), 10 (telehealth in the "
                                  "client's home)"),
        Field("charge_fee", "TherapyNotes' \"Charge Fee\" flag (yes/no)"),
        Field("note_signed_at", "when the note was signed (date and time)"),
    ),
    "insurance-payments": (
        Field("appointment", "the EHR's appointment id (else found by client and date of service)"),
        Field("client", "the client's id in the EHR", required=True),
        Field("date_of_service", "date of service (used to find the session without an appointment id)"),
        Field("payer_name", "payer"),
        Field("allowed", "allowed amount in dollars", required=True),
        Field("paid", "amount paid by the payer in dollars", required=True),
        Field("patient_responsibility", "client responsibility in dollars", required=True),
        Field("paid_on", "payment date", required=True),
        Field("reference", "EOB / check / EFT reference", required=True),
    ),
}


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    # kind -> field -> header names the export may use (first found wins).
    columns: dict[str, dict[str, tuple[str, ...]]]
    # The EHR's status wording (lower case) -> ours.
    statuses: dict[str, str] = field(default_factory=dict)
    # The EHR marks sessions still to come with its "attended" status (SimplePractice's default Show).
    attended_before_it_happens: bool = False


COMMON_STATUSES = {
    "scheduled": AppointmentStatus.SCHEDULED, "completed": AppointmentStatus.COMPLETED,
    "no_show": AppointmentStatus.NO_SHOW, "late_cancel": AppointmentStatus.LATE_CANCEL,
    "canceled": AppointmentStatus.CANCELED,
}

SIMPLEPRACTICE = Preset(
    name="simplepractice",
    label="SimplePractice",
    columns={
        "clients": {
            "external_id": ("Client ID", "ID"),
            "first_name": ("First Name", "Legal First Name"),
            "last_name": ("Last Name", "Legal Last Name"),
            "name": ("Client", "Client Name", "Name"),
            "email": ("Email", "Email Address"),
            "phone": ("Phone", "Phone Number", "Mobile Phone"),
            "date_of_birth": ("Date of Birth", "DOB", "Birthdate"),
            "billing_type": ("Billing Type", "Billing"),
            "session_rate": ("Rate", "Client Rate", "Default Rate"),
            "active": ("Active", "Status"),
        },
        "appointments": {
            "external_id": ("Appointment ID",),
            "client": ("Client ID",),
            "clinician": ("Clinician", "Clinician Name"),
            "date": ("Date of Service", "Date", "Appointment Date"),
            "time": ("Time", "Start Time"),
            "service_code": ("Service Code", "Billing Code", "CPT Code"),
            "status": ("Status", "Appointment Status", "Attendance"),
            "duration_minutes": ("Duration", "Duration (min)", "Minutes"),
            "fee": ("Rate", "Fee", "Appointment Fee"),
            "place_of_service": ("Place of Service", "POS", "Place of Service Code"),
        },
        "insurance-payments": {
            "appointment": ("Appointment ID",),
            "client": ("Client ID",),
            "date_of_service": ("Date of Service", "DOS"),
            "payer_name": ("Payer", "Insurance Payer", "Insurance"),
            "allowed": ("Allowed Amount", "Allowed"),
            "paid": ("Insurance Paid", "Paid Amount", "Paid"),
            "patient_responsibility": ("Client Responsibility", "Patient Responsibility"),
            "paid_on": ("Payment Date", "Paid On", "Date Paid"),
            "reference": ("Reference", "Reference Number", "Check Number", "EFT Number"),
        },
    },
    statuses={
        **COMMON_STATUSES,
        "show": AppointmentStatus.COMPLETED,
        "no show": AppointmentStatus.NO_SHOW, "no-show": AppointmentStatus.NO_SHOW,
        "late cancelled": AppointmentStatus.LATE_CANCEL, "late canceled": AppointmentStatus.LATE_CANCEL,
        "cancelled": AppointmentStatus.CANCELED, "canceled": AppointmentStatus.CANCELED,
        "clinician canceled": AppointmentStatus.CANCELED, "clinician cancelled": AppointmentStatus.CANCELED,
        "client canceled": AppointmentStatus.CANCELED, "client cancelled": AppointmentStatus.CANCELED,
    },
    attended_before_it_happens=True,
)

THERAPYNOTES = Preset(
    name="therapynotes",
    label="TherapyNotes",
    columns={
        "clients": {
            "external_id": ("Patient ID", "Patient Account Number", "Account Number"),
            "first_name": ("First Name", "Patient First Name"),
            "last_name": ("Last Name", "Patient Last Name"),
            "name": ("Patient", "Patient Name", "Name"),
            "email": ("Email", "Email Address"),
            "phone": ("Phone", "Mobile Phone", "Home Phone"),
            "date_of_birth": ("Date of Birth", "DOB"),
            "billing_type": ("Billing Type", "Payment Type"),
            "session_rate": ("Rate", "Self-Pay Rate"),
            "active": ("Active", "Status"),
        },
        "appointments": {
            "external_id": ("Appointment ID", "Event ID"),
            "client": ("Patient ID", "Patient Account Number"),
            "clinician": ("Clinician", "Provider", "Rendering Provider"),
            "date": ("Date", "Date of Service", "Appointment Date"),
            "time": ("Time", "Start Time"),
            "service_code": ("Service Code", "CPT Code", "Service"),
            "status": ("Status", "Appointment Status"),
            "duration_minutes": ("Duration", "Minutes"),
            "charge_fee": ("Charge Fee", "Fee Charged"),
            "fee": ("Fee", "Charge Amount"),
            "place_of_service": ("Place of Service", "POS", "Place of Service Code"),
        },
        "insurance-payments": {
            "appointment": ("Appointment ID",),
            "client": ("Patient ID", "Patient Account Number"),
            "date_of_service": ("Date of Service", "DOS", "Service Date"),
            "payer_name": ("Payer", "Insurance Payer", "Payer Name"),
            "allowed": ("Allowed", "Allowed Amount"),
            "paid": ("Paid", "Insurance Paid", "Payment Amount"),
            "patient_responsibility": ("Patient Responsibility", "Pt Resp"),
            "paid_on": ("Payment Date", "Check Date", "Paid On"),
            "reference": ("Check Number", "Check/EFT Number", "EFT Number", "Reference"),
        },
    },
    statuses={
        **COMMON_STATUSES,
        "show": AppointmentStatus.COMPLETED, "attended": AppointmentStatus.COMPLETED,
        "missed": AppointmentStatus.NO_SHOW, "no show": AppointmentStatus.NO_SHOW,
        "late canceled": AppointmentStatus.LATE_CANCEL, "late cancelled": AppointmentStatus.LATE_CANCEL,
        "late cancellation": AppointmentStatus.LATE_CANCEL,
        "canceled": AppointmentStatus.CANCELED, "cancelled": AppointmentStatus.CANCELED,
        "clinician canceled": AppointmentStatus.CANCELED, "clinician cancelled": AppointmentStatus.CANCELED,
    },
)

# No preset: the portal's own field names as headers (what the API calls them), plus a mapping from staff.
CUSTOM = Preset(
    name="custom",
    label="Custom mapping",
    columns={kind: {f.name: (f.name,) for f in fields} for kind, fields in FIELDS.items()},
    statuses={**COMMON_STATUSES, "no show": AppointmentStatus.NO_SHOW, "late cancel": AppointmentStatus.LATE_CANCEL,
              "cancelled": AppointmentStatus.CANCELED},
)

PRESETS: dict[str, Preset] = {p.name: p for p in (SIMPLEPRACTICE, THERAPYNOTES, CUSTOM)}

BILLING_TYPES = {
    "insurance": "insurance", "self-pay": "self_pay", "self pay": "self_pay", "self_pay": "self_pay",
    "selfpay": "self_pay", "cash": "self_pay", "private pay": "self_pay", "sliding scale": "sliding_scale",
    "sliding_scale": "sliding_scale", "sliding-scale": "sliding_scale",
}
# A place-of-service cell: the CMS code (a spreadsheet drops the 0 of 02) or the word office; empty is
# not recorded. "Telehealth" alone is not taken: 02 and 10 are billed differently.
PLACES_OF_SERVICE = {"": "", "02": "02", "10": "10", "11": "11", "office": "11"}
TRUE_WORDS = {"yes", "y", "true", "1", "x", "active", "charge", "charged"}
FALSE_WORDS = {"no", "n", "false", "0", "", "inactive", "archived", "discharged"}
