"""Every email has text and HTML; the practice can reword any of them in the admin and preview it first."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.test import Client as HttpClient

from billing.models import Client, EmailTemplate, Practice
from billing.services.email_catalogue import NAMES, sample_context
from billing.services.notify import email_enqueue, emails_send, render_email

NOW = dt.datetime(2026, 11, 27, 15, tzinfo=dt.UTC)


@pytest.mark.parametrize("name", NAMES)
def test_every_email_renders_as_text_and_html_with_sample_data(practice: Practice, name: str) -> None:
    subject, text, html = render_email(name, {"practice": practice, **sample_context(name)})
    assert subject and "{" not in subject
    assert "Jordan" in text or "Jordan" in html
    assert "<html" in html or "<div" in html
    assert "Riverbend Counseling" in text + html


def test_sent_email_carries_both_versions(practice: Practice) -> None:
    client = Client.objects.create(first_name="Ada", last_name="Byrne", email="ada@example.com")
    email_enqueue(key="k1", client=client, template="card_saved", context={"card": "Visa ending 4242"}, now=NOW)
    emails_send(now=NOW)
    [message] = mail.outbox
    assert "Your card (Visa ending 4242) is saved" in message.body
    assert message.alternatives[0][1] == "text/html"  # type: ignore[attr-defined]
    assert "Your card (Visa ending 4242) is saved" in message.alternatives[0][0]  # type: ignore[attr-defined]


def test_practice_rewords_an_email_in_the_admin_after_previewing_it(
        practice: Practice, admin_client: HttpClient) -> None:
    preview = admin_client.get("/admin/billing/emailtemplate/preview/balance_reminder/")
    assert preview.status_code == 200
    assert b"Your balance with Riverbend Counseling" in preview.content
    start = admin_client.get("/admin/billing/emailtemplate/add/?name=balance_reminder")
    assert b"friendly note" in start.content  # starts from the wording in use

    broken = admin_client.post("/admin/billing/emailtemplate/add/", {
        "name": "balance_reminder", "subject": "Balance", "body_text": "{% if %}", "body_html": ""})
    assert b"The template has an error" in broken.content
    assert not EmailTemplate.objects.exists()

    saved = admin_client.post("/admin/billing/emailtemplate/add/", {
        "name": "balance_reminder", "subject": "A note from {{ practice.name }}",
        "body_text": "Dear {{ client.first_name }}, you owe {{ balance }}. Pay here: {{ link_url }}",
        "body_html": ""})
    assert saved.status_code == 302
    client = Client.objects.create(first_name="Ada", last_name="Byrne", email="ada@example.com")
    email_enqueue(key="k2", client=client, template="balance_reminder",
                  context={"balance": "$200.00", "link_url": "https://x/p/t/"}, now=NOW)
    emails_send(now=NOW)
    [message] = mail.outbox
    assert message.subject == "A note from Riverbend Counseling"
    assert message.body == "Dear Ada, you owe $200.00. Pay here: https://x/p/t/"
