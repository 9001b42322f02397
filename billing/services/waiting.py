"""Charges that waited for a card: nothing older than the card is taken without the client's say.

A due charge for a client without a card waits (``no card on file``) and the client is asked for one,
at most once a day, in one email listing everything that waits. When the client saves a card, those
charges do not go ahead by themselves: they wait for the client's choice (``CHOICE_HOLD``), which the
card page and an email put in front of them with the total: pay them now, on the page, or leave them
to the practice. Staff release them from the admin. A released charge is told first: one notice
listing them, the practice's lead time before the card is charged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from billing.errors import Refused
from billing.models import NO_CARD_HOLD, Charge, ChargeStatus, Client, LinkPurpose, Practice, ReviewKind
from billing.money import format_cents
from billing.services.charges import charges_transition
from billing.services.links import link_create
from billing.services.notify import email_enqueue
from billing.services.receipts import receipt_context
from billing.services.review import review_close_stale, review_open

SYSTEM = "system:waiting"
CHOICE_HOLD = "waiting for the client's choice: saved a card after it waited for one"


class NothingWaiting(Refused):
    """No charge of this client waits for a choice (paid, released or canceled meanwhile)."""


def waiting_charges(client: Client, *, hold: str = CHOICE_HOLD) -> list[Charge]:
    return list(Charge.objects.filter(client=client, status=ChargeStatus.DUE, hold_reason=hold)
                .select_related("appointment__clinician", "client").order_by("scheduled_for", "pk"))


def waiting_lines(charges: Iterable[Charge], practice: Practice | None = None) -> list[dict[str, object]]:
    """One line per charge, as the emails and pages list them (date of service, service, therapist, amount)."""
    practice = practice or Practice.load()
    lines = []
    for charge in charges:
        context = receipt_context(charge, practice)
        lines.append({"id": charge.pk, "session_date": context["session_date"], "service": context["service"],
                      "therapist": context["therapist"], "amount": context["amount"],
                      "amount_cents": charge.amount_cents})
    return lines


def card_needed_ask(*, client_ids: Iterable[int], now: dt.datetime) -> int:
    """Ask each client whose charges wait for a card to save one: one email a client a day (in the
    practice's zone), listing everything that waits."""
    practice = Practice.load()
    today = timezone.localdate(now, practice.zone)
    asked = 0
    for client in Client.objects.filter(pk__in=set(client_ids)).order_by("pk"):
        charges = waiting_charges(client, hold=NO_CARD_HOLD)
        if not charges or client.has_card:
            continue
        with transaction.atomic():
            issued = link_create(client=client, purpose=LinkPurpose.ENROLL_CARD, now=now, actor=SYSTEM)
            email_enqueue(key=f"card-needed:client:{client.pk}:{today.isoformat()}", client=client,
                          template="card_needed", now=now, practice=practice, context={
                              "waiting": waiting_lines(charges, practice), "link_url": issued.url,
                              "total": format_cents(sum(c.amount_cents for c in charges))})
        asked += 1
    return asked


def waiting_charges_hold(*, client: Client, now: dt.datetime) -> list[Charge]:
    """The client just saved a card: what waited for one now waits for their choice. The caller holds
    the client's row; the email with the choice goes out with the change."""
    charges = waiting_charges(client, hold=NO_CARD_HOLD)
    if not charges:
        return []
    Charge.objects.filter(pk__in=[c.pk for c in charges], hold_reason=NO_CARD_HOLD).update(
        hold_reason=CHOICE_HOLD, updated_at=now)
    total = format_cents(sum(c.amount_cents for c in charges))
    review_open(kind=ReviewKind.WAITING_CHOICE, client=client, now=now,
                reason=f"{len(charges)} charge(s), {total} in all, waited for a card. The client saved one and "
                       "was asked to pay them or leave them to the practice; none is charged automatically. "
                       "Release them (a notice goes first) or cancel them.")
    return charges


def waiting_choice_link(*, client: Client, now: dt.datetime, actor: str) -> str:
    """A pay-balance link whose page offers the choice for what waits."""
    return link_create(client=client, purpose=LinkPurpose.PAY_BALANCE, now=now, actor=actor).url


def waiting_charges_release(*, client: Client, now: dt.datetime, actor: str, user: User | None = None,
                            charge_ids: list[int] | None = None) -> list[Charge]:
    """Charge what waited, on the card on file, after a notice: one email listing them now, the card
    charged the practice's lead time later (the client's choice on the portal, or staff's release)."""
    practice = Practice.load()
    with transaction.atomic():
        Client.objects.select_for_update().filter(pk=client.pk).first()
        rows = Charge.objects.select_for_update(of=("self",)).select_related("appointment__clinician", "client").filter(
            client=client, status=ChargeStatus.DUE, hold_reason=CHOICE_HOLD).order_by("scheduled_for", "pk")
        if charge_ids is not None:
            rows = rows.filter(pk__in=charge_ids)
        charges = list(rows)
        if not charges:
            raise NothingWaiting(f"Nothing of {client} waits for a choice now.")
        charge_at = now + dt.timedelta(hours=practice.pre_charge_notice_hours)
        charges_transition(charges, to_status=ChargeStatus.SCHEDULED, now=now, actor=actor,
                           reason=lambda _: "released to be charged, after a notice",
                           changes=lambda _: {"hold_reason": "", "scheduled_for": charge_at, "notice_due_at": now,
                                              "notice_sent_at": now})
        total = sum(c.amount_cents for c in charges)
        email_enqueue(key=f"waiting-release:client:{client.pk}:charges:{'-'.join(str(c.pk) for c in charges)}:"
                          f"{total}", client=client, template="waiting_charges_notice", now=now, practice=practice,
                      context={"waiting": waiting_lines(charges, practice), "total": format_cents(total),
                               "charge_at": charge_at})
        if not waiting_charges(client):
            review_close_stale(kind=ReviewKind.WAITING_CHOICE, client=client, appointment=None, now=now,
                               note=f"Released by {actor}: charged after a notice.")
    return charges


def waiting_charges_leave(*, client: Client, now: dt.datetime) -> list[Charge]:
    """The client leaves what waited to the practice: it stays held, and staff are told so."""
    charges = waiting_charges(client)
    if not charges:
        raise NothingWaiting(f"Nothing of {client} waits for a choice now.")
    total = format_cents(sum(c.amount_cents for c in charges))
    review_open(kind=ReviewKind.WAITING_CHOICE, client=client, now=now,
                reason=f"{len(charges)} charge(s), {total} in all, waited for a card. The client chose to leave "
                       "them to the practice: contact them, then release (a notice goes first) or cancel.")
    return charges


def waiting_review_close_if_settled(*, client: Client, now: dt.datetime) -> None:
    """Nothing waits any more (paid on the portal, canceled): the staff item closes."""
    if not waiting_charges(client):
        review_close_stale(kind=ReviewKind.WAITING_CHOICE, client=client, appointment=None, now=now,
                           note="Nothing waits for the client's choice any more.")
