"""Emails to clients, through a durable outbox (``OutboundEmail``).

A service that decides an email should go calls ``email_enqueue`` inside its own transaction, with a
key naming what the email is about; the email is rendered then and sent after commit (and by every
billing_tick), so a crash never loses one and a repeated event never sends a second.

While the practice previews charging (``Practice.charging_preview``) the outbox is closed, here and nowhere
else: what is written is a draft (``EmailStatus.PREVIEW``, never sent, even after preview ends) and
``emails_send`` sends nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.db import transaction
from django.db.models import F, Q
from django.template import Context, Template, TemplateDoesNotExist
from django.template.loader import render_to_string
from django.utils import timezone

from billing.local_time import practice_zone_active
from billing.models import Client, EmailStatus, EmailTemplate, OutboundEmail, Practice

log = logging.getLogger(__name__)
# An email claimed this long ago whose sender never reported back is tried again (at least once).
STALE_CLAIM = dt.timedelta(minutes=10)
MAX_ATTEMPTS = 5
BATCH = 200


def render_email(template: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html): the practice's own wording from the admin if it has one, else the files
    templates/emails/<template>.{subject.txt,txt,html}. Without an HTML version, the text is wrapped.
    Dates and times are the practice's (``context["practice"]``), wherever rendering starts."""
    return _render(template, context, EmailTemplate.objects.filter(name=template).first())


def _render(template: str, context: dict[str, Any], own: EmailTemplate | None) -> tuple[str, str, str]:
    # Emails are rendered in a request, the tick, a command or the task cluster: only a request has the
    # practice's zone active, so every rendering sets it (a 04:30 charge in New York reads "4:30 AM").
    practice = context.get("practice")
    with practice_zone_active(practice if isinstance(practice, Practice) else None):
        return _render_in_current_zone(template, context, own)


def _render_in_current_zone(template: str, context: dict[str, Any],
                            own: EmailTemplate | None) -> tuple[str, str, str]:
    if own is not None:
        subject = Template(own.subject).render(Context(context))
        text = Template("{% autoescape off %}" + own.body_text + "{% endautoescape %}").render(Context(context))
        html = Template("{% load billing_money %}" + own.body_html).render(Context(context)) if own.body_html else ""
    else:
        subject = render_to_string(f"emails/{template}.subject.txt", context)
        text = render_to_string(f"emails/{template}.txt", context)
        try:
            html = render_to_string(f"emails/{template}.html", context)
        except TemplateDoesNotExist:
            html = ""
    if not html:
        html = render_to_string("emails/_wrapper.html", {**context, "text": text})
    return " ".join(str(subject).split())[:200], str(text), str(html)


@dataclass(frozen=True)
class Email:
    """One email to write to the outbox: ``key`` names what it is about (``receipt:charges:42``);
    ``charge_amounts`` the charges it announces or acknowledges, each with the amount it names."""

    key: str
    client: Client
    template: str
    context: dict[str, Any]
    charge_amounts: tuple[tuple[int, int], ...] = ()


def email_enqueue(*, key: str, client: Client, template: str, context: dict[str, Any],
                  now: dt.datetime, practice: Practice | None = None,
                  charge_amounts: tuple[tuple[int, int], ...] = ()) -> None:
    """Write the email to the outbox once per ``key``; nothing if it was already written or the
    client has no email address."""
    emails_enqueue([Email(key, client, template, context, charge_amounts)], now=now, practice=practice)


def emails_enqueue(emails: Sequence[Email], *, now: dt.datetime, practice: Practice | None = None) -> int:
    """``email_enqueue`` for many emails in a few queries (the tick's receipts); returns how many were written."""
    wanted = [email for email in emails if email.client.email]
    if not wanted:
        return 0
    written = set(OutboundEmail.objects.filter(key__in=[e.key for e in wanted]).values_list("key", flat=True))
    practice = practice or Practice.load()
    own = {t.name: t for t in EmailTemplate.objects.filter(name__in={e.template for e in wanted})}
    status = EmailStatus.PREVIEW if practice.charging_preview else EmailStatus.PENDING
    rows = []
    for email in wanted:
        if email.key in written:
            continue
        written.add(email.key)
        subject, text, html = _render(email.template, {"practice": practice, "client": email.client, **email.context},
                                      own.get(email.template))
        rows.append(OutboundEmail(key=email.key, client=email.client, template=email.template, to=email.client.email,
                                  subject=subject, body_text=text, body_html=html, created_at=now, status=status,
                                  charge_amounts=[list(pair) for pair in email.charge_amounts]))
    # A concurrent caller that wrote the same key first wins; ours is dropped.
    OutboundEmail.objects.bulk_create(rows, ignore_conflicts=True)
    if rows and status == EmailStatus.PENDING and not _deferred.get():
        keys = [row.key for row in rows]
        transaction.on_commit(lambda: emails_send(now=now, keys=keys))
    return len(rows)


@contextmanager
def emails_deferred() -> Iterator[None]:
    """Within this block emails wait in the outbox for ``emails_send`` instead of going out one by one
    after each commit (billing_tick sends them in one batch at its end)."""
    token = _deferred.set(True)
    try:
        yield
    finally:
        _deferred.reset(token)


def _claim(keys: list[str] | None, tried: set[int]) -> list[OutboundEmail]:
    """Claim a batch of sendable emails in one short transaction (SKIP LOCKED: concurrent senders
    share the work; a claim older than STALE_CLAIM is taken over, so nothing is lost).

    Claims are timed by the wall clock, never by the tick's ``now``: a ``billing_tick --at`` far ahead
    would otherwise take over emails another sender is sending this minute (a second copy), and one far
    behind would never recover a sender that died."""
    claimed_at = timezone.now()
    pending = Q(status=EmailStatus.PENDING, attempts__lt=MAX_ATTEMPTS)
    stale = Q(status=EmailStatus.SENDING, claimed_at__lt=claimed_at - STALE_CLAIM)
    with transaction.atomic():
        candidates = OutboundEmail.objects.select_for_update(skip_locked=True).filter(pending | stale)
        if keys is not None:
            candidates = candidates.filter(key__in=keys)
        candidates = candidates.exclude(pk__in=tried)  # a failure waits for the next run, not this one
        batch = list(candidates.order_by("created_at", "pk")[:BATCH])
        OutboundEmail.objects.filter(pk__in=[e.pk for e in batch]).update(
            status=EmailStatus.SENDING, claimed_at=claimed_at, attempts=F("attempts") + 1)
    for email in batch:
        email.attempts += 1
    return batch


def emails_send(*, now: dt.datetime, keys: list[str] | None = None) -> int:
    """Send what the outbox holds, a batch at a time over one mail-server connection. Nothing while the
    practice previews charging: what waits goes when preview ends."""
    sent = 0
    practice = Practice.load()
    if practice.charging_preview:
        return 0
    sender = practice.sender_email or settings.DEFAULT_FROM_EMAIL
    tried: set[int] = set()
    while batch := _claim(keys, tried):
        tried.update(email.pk for email in batch)
        delivered: list[int] = []
        with get_connection() as connection:
            for email in batch:
                message = EmailMultiAlternatives(email.subject, email.body_text, from_email=sender, to=[email.to],
                                                 headers={"X-Portal-Email": email.template}, connection=connection)
                if email.body_html:
                    message.attach_alternative(email.body_html, "text/html")
                try:
                    message.send()
                except Exception as error:  # any mail server failure: keep it for the next tick
                    log.warning("email %s not sent: %s", email.pk, type(error).__name__)
                    OutboundEmail.objects.filter(pk=email.pk).update(
                        status=EmailStatus.FAILED if email.attempts >= MAX_ATTEMPTS else EmailStatus.PENDING,
                        last_error=f"{type(error).__name__}: {error}"[:300])
                else:
                    delivered.append(email.pk)
        OutboundEmail.objects.filter(pk__in=delivered).update(status=EmailStatus.SENT, sent_at=now, last_error="")
        sent += len(delivered)
        if keys is not None or len(batch) < BATCH:
            return sent
    return sent


_deferred: ContextVar[bool] = ContextVar("emails_deferred", default=False)
