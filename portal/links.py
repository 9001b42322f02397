"""Client links as the API and the admin hand them out."""

from __future__ import annotations

import datetime as dt

from billing.models import Client
from billing.services.cards import enrollment_link_send


def enrollment_link_create(*, client: Client, send_email: bool, now: dt.datetime,
                           actor: str = "system") -> tuple[str, dt.datetime]:
    """A card-enrollment link for the client, optionally emailed; returns (url, expires_at)."""
    issued = enrollment_link_send(client=client, now=now, actor=actor, send_email=send_email)
    return issued.url, issued.expires_at
