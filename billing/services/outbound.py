"""Write-back events to the EHR side: the one call billing makes when a charge's outcome is worth telling.

Called inside the transaction that changes the charge, so the event is written with the change (an
outbox) and delivered later by billing_tick's ``webhooks_delivered`` step. Billing owns this door and
knows nothing behind it: the EHR integration connects its writer and its deliverer when the apps load
(``writeback_connect``, from ``integrations.ehr.apps``), so billing never imports the integration.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from billing.models import Charge

CHARGE_SUCCEEDED = "charge.succeeded"
CHARGE_FAILED = "charge.failed"
CHARGE_REFUNDED = "charge.refunded"
FEE_WAIVED = "charge.fee_waived"


@dataclass(frozen=True)
class Writeback:
    """What is behind the door: ``enqueue(charges=, type=, now=)`` writes the events for the charges'
    sources (inside the caller's transaction); ``deliver(now=)`` sends what is due and says how many."""

    enqueue: Callable[..., object]
    deliver: Callable[..., int]


_connected: list[Writeback] = []


def writeback_connect(writeback: Writeback) -> None:
    _connected[:] = [writeback]


def charge_event_emit(*, charge: Charge, type: str, now: dt.datetime) -> None:
    """Queue a write-back event about ``charge`` for its client's source (nothing if it has no webhook)."""
    charge_events_emit(charges=[charge], type=type, now=now)


def charge_events_emit(*, charges: Sequence[Charge], type: str, now: dt.datetime) -> None:
    """``charge_event_emit`` for many charges in a few queries."""
    for writeback in _connected:
        writeback.enqueue(charges=charges, type=type, now=now)


def webhooks_deliver(*, now: dt.datetime) -> int:
    """The billing_tick step: deliver the write-back events that are due."""
    return sum(writeback.deliver(now=now) for writeback in _connected)
