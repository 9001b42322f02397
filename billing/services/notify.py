"""Emails to clients, through a durable outbox (``OutboundEmail``).

A service that decides an email should go calls ``email_enqueue`` inside its own transaction, with a
key naming what the email is about; the email is rendered then and sent after commit (and by every
billing_tick), so a crash never loses one and a repeated event never sends a second.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import IntegrityError, transaction
from django.template import Context, Template, TemplateDoesNotExist
from django.template.loader import render_to_string

from billing.models import Client, EmailStatus, EmailTemplate, OutboundEmail, Practice

log = logging.getLogger(__name__)
# An email claimed this long ago whose sender never reported back is tried again (at least once).
STALE_CLAIM = dt.timedelta(minutes=10)
MAX_ATTEMPTS = 5


def render_email(template: str, context: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html): the practice's own wording from the admin if it has one, else the files
    templates/emails/<template>.{subject.txt,txt,html}. Without an HTML version, the text is wrapped."""
    own = EmailTemplate.objects.filter(name=template).first()
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


def email_enqueue(*, key: str, client: Client, template: str, context: dict[str, Any],
                  now: dt.datetime) -> OutboundEmail | None:
    """Write the email to the outbox once per ``key``; returns None if it was already written or the
    client has no email address."""
    if not client.email:
        return None
    if OutboundEmail.objects.filter(key=key).exists():
        return None
    practice = Practice.load()
    subject, text, html = render_email(template, {"practice": practice, "client": client, **context})
    try:
        with transaction.atomic():
            email = OutboundEmail.objects.create(key=key, client=client, template=template, to=client.email,
                                                 subject=subject, body_text=text, body_html=html, created_at=now)
    except IntegrityError:
        return None  # a concurrent caller wrote it first
    transaction.on_commit(lambda: emails_send(now=now, only=[email.pk]))
    return email


def emails_send(*, now: dt.datetime, only: list[int] | None = None) -> int:
    """Send what the outbox holds. Each email is claimed in its own short transaction, then sent."""
    sent = 0
    practice = Practice.load()
    pending = OutboundEmail.objects.filter(status=EmailStatus.PENDING, attempts__lt=MAX_ATTEMPTS)
    stale = OutboundEmail.objects.filter(status=EmailStatus.SENDING, claimed_at__lt=now - STALE_CLAIM)
    candidates = (pending | stale).order_by("created_at", "pk")
    if only is not None:
        candidates = candidates.filter(pk__in=only)
    for pk in list(candidates.values_list("pk", flat=True)[:500]):
        with transaction.atomic():
            email = (OutboundEmail.objects.select_for_update(skip_locked=True)
                     .filter(pk=pk).filter(status__in=[EmailStatus.PENDING, EmailStatus.SENDING]).first())
            if email is None or (email.status == EmailStatus.SENDING and email.claimed_at
                                 and email.claimed_at >= now - STALE_CLAIM):
                continue
            email.status = EmailStatus.SENDING
            email.claimed_at = now
            email.attempts += 1
            email.save(update_fields=["status", "claimed_at", "attempts"])
        try:
            message = EmailMultiAlternatives(email.subject, email.body_text,
                                             from_email=practice.sender_email or settings.DEFAULT_FROM_EMAIL,
                                             to=[email.to], headers={"X-Portal-Email": email.template})
            if email.body_html:
                message.attach_alternative(email.body_html, "text/html")
            message.send()
        except Exception as error:  # any mail server failure: keep it for the next tick
            log.warning("email %s not sent: %s", email.pk, type(error).__name__)
            failed = email.attempts >= MAX_ATTEMPTS
            OutboundEmail.objects.filter(pk=email.pk).update(
                status=EmailStatus.FAILED if failed else EmailStatus.PENDING,
                last_error=f"{type(error).__name__}: {error}"[:300])
            continue
        OutboundEmail.objects.filter(pk=email.pk).update(status=EmailStatus.SENT, sent_at=now, last_error="")
        sent += 1
    return sent
