"""The one transition map per stateful model. A move not listed here raises ``TransitionNotAllowed``."""

from __future__ import annotations

from billing.errors import Refused
from billing.models import AppointmentStatus, ChargeStatus


class TransitionNotAllowed(Refused):
    pass


S = ChargeStatus
CHARGE_TRANSITIONS: dict[str, set[str]] = {
    # A canceled charge comes back when its session becomes billable again (same row: never two).
    # SCHEDULED, DUE or FAILED -> SUCCEEDED: paid through a balance payment on the portal.
    S.SCHEDULED: {S.DUE, S.PROCESSING, S.CANCELED, S.SUCCEEDED},
    S.DUE: {S.PROCESSING, S.CANCELED, S.SCHEDULED, S.SUCCEEDED},
    S.PROCESSING: {S.SUCCEEDED, S.FAILED, S.REQUIRES_ACTION},
    S.FAILED: {S.DUE, S.PROCESSING, S.CANCELED, S.SUCCEEDED},
    S.REQUIRES_ACTION: {S.PROCESSING, S.SUCCEEDED, S.FAILED, S.CANCELED},
    S.SUCCEEDED: {S.REFUNDED, S.PARTIALLY_REFUNDED},
    S.PARTIALLY_REFUNDED: {S.REFUNDED, S.PARTIALLY_REFUNDED},
    S.REFUNDED: set(),
    S.CANCELED: {S.SCHEDULED},
}

# Appointment statuses follow the EHR, which may correct any status to any other: every move is
# allowed, but each is recorded, and billing follows it.
APPOINTMENT_TRANSITIONS: dict[str, set[str]] = {
    status: {other for other in AppointmentStatus.values if other != status} for status in AppointmentStatus.values
}


def check_transition(transitions: dict[str, set[str]], from_status: str, to_status: str) -> None:
    if to_status not in transitions.get(from_status, set()):
        raise TransitionNotAllowed(f"Cannot move from {from_status} to {to_status}.")
