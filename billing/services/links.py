"""Secure client links: a signed random token in the URL, its hash in the database.

The token is random (unguessable) and signed with the site's secret (so a forged or truncated token is
refused before any lookup). It never carries an id or anything about the client.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.urls import reverse

from billing.models import Charge, Client, ClientLink, LinkPurpose, PaymentPlan

SALT = "portal.client-link"
LIFETIME = {
    LinkPurpose.ENROLL_CARD: dt.timedelta(days=7),
    LinkPurpose.AUTHENTICATE_PAYMENT: dt.timedelta(days=7),
    LinkPurpose.PAY_BALANCE: dt.timedelta(days=14),
    LinkPurpose.RECEIPTS: dt.timedelta(days=30),
    # A plan's page shows its installments while it is paid, not only the offer.
    LinkPurpose.PAYMENT_PLAN: dt.timedelta(days=120),
    # A good faith estimate: the client may come back to read it, and acknowledge it, for a while.
    LinkPurpose.ESTIMATE: dt.timedelta(days=60),
}


class LinkProblem(Exception):
    """The link cannot be used; ``reason`` is one of unknown, expired, used."""

    def __init__(self, reason: str, link: ClientLink | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.link = link


@dataclass(frozen=True)
class IssuedLink:
    link: ClientLink
    url: str

    @property
    def expires_at(self) -> dt.datetime:
        return self.link.expires_at


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def link_create(*, client: Client, purpose: str, now: dt.datetime, actor: str,
                charge: Charge | None = None, plan: PaymentPlan | None = None) -> IssuedLink:
    token = signing.Signer(salt=SALT).sign(secrets.token_urlsafe(32))
    link = ClientLink.objects.create(client=client, purpose=purpose, token_hash=_hash(token), charge=charge, plan=plan,
                                     created_at=now, expires_at=now + LIFETIME[LinkPurpose(purpose)],
                                     created_by=actor)
    return IssuedLink(link, settings.PORTAL_BASE_URL + reverse("portal:link", args=[token]))


def links_create(*, clients: list[Client], purpose: str, now: dt.datetime, actor: str) -> dict[int, IssuedLink]:
    """One link per client (by client id) in one query: the receipts a billing run writes each carry one."""
    tokens = {client.pk: signing.Signer(salt=SALT).sign(secrets.token_urlsafe(32)) for client in clients}
    links = ClientLink.objects.bulk_create([
        ClientLink(client=client, purpose=purpose, token_hash=_hash(tokens[client.pk]), created_at=now,
                   expires_at=now + LIFETIME[LinkPurpose(purpose)], created_by=actor) for client in clients])
    # One reverse() for the batch (each costs a resolver walk): the token is the path's last part.
    base = settings.PORTAL_BASE_URL + reverse("portal:link", args=["TOKEN"]).removesuffix("TOKEN/")
    return {link.client_id: IssuedLink(link, f"{base}{tokens[link.client_id]}/") for link in links}


def link_resolve(*, token: str, now: dt.datetime) -> ClientLink:
    """The link a token names, if it may still be used; raises LinkProblem otherwise."""
    try:
        signing.Signer(salt=SALT).unsign(token)
    except signing.BadSignature:
        raise LinkProblem("unknown") from None
    link = ClientLink.objects.select_related("client", "charge", "plan").filter(token_hash=_hash(token)).first()
    if link is None:
        raise LinkProblem("unknown")
    if link.used_at is not None:
        raise LinkProblem("used", link)
    if link.expires_at <= now:
        raise LinkProblem("expired", link)
    return link


def link_mark_used(*, link: ClientLink, now: dt.datetime) -> None:
    ClientLink.objects.filter(pk=link.pk, used_at__isnull=True).update(used_at=now)
