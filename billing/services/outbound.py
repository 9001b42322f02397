"""Write-back events to the EHR side: the one call billing makes when a charge's outcome is worth telling.

Called inside the transaction that changes the charge, so the event is written with the change (an
outbox) and delivered later by billing_tick's ``webhooks_delivered`` step. The delivery itself lives in
``integrations.ehr.webhooks`` (billing reaches the outside world only through such narrow doors).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from billing.models import Charge

CHARGE_SUCCEEDED = "charge.succeeded"
CHARGE_FAILED = "charge.failed"
CHARGE_REFUNDED = "charge.refunded"
FEE_WAIVED = "charge.fee_waived"


def charge_event_emit(*, charge: Charge, type: str, now: dt.datetime) -> None:
    """Queue a write-back event about ``charge`` for its client's source (nothing if it has no webhook)."""
    charge_events_emit(charges=[charge], type=type, now=now)


def charge_events_emit(*, charges: Sequence[Charge], type: str, now: dt.datetime) -> None:
    """``charge_event_emit`` for many charges in a few queries."""
    from integrations.ehr.webhooks import events_enqueue

    events_enqueue(charges=charges, type=type, now=now)


def webhooks_deliver(*, now: dt.datetime) -> int:
    """The billing_tick step: deliver the write-back events that are due."""
    from integrations.ehr.webhooks import events_deliver

    return events_deliver(now=now)
