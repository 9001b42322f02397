"""Every email has text and HTML; the practice can reword any of them in the admin and preview it first."""

from __future__ import annotations

import datetime as dt
from io import StringIO
from pathlib import Path

import pytest
from django.core import mail
from django.core.management import call_command
from django.test import Client as HttpClient
from django.utils import timezone

from billing.models import Client, EmailStatus, EmailTemplate, OutboundEmail, Practice
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


def test_emails_are_listed_by_their_human_names_in_the_admin(practice: Practice, admin_client: HttpClient) -> None:
    import re

    from billing.services.email_catalogue import NAMES, email_title

    EmailTemplate.objects.create(name="pre_charge_notice", subject="Soon", body_text="Soon.")
    page = admin_client.get("/admin/billing/emailtemplate/").text
    cells = re.findall(r"<t[dh][^>]*>(?:<a [^>]*>)?([^<]*)", page)
    for name in NAMES:
        assert email_title(name) in page, name
        assert name not in cells, name  # the file name only in links, never shown as the email's name
    assert "Pre-charge notice" in cells and "Card declined" in cells
    change = admin_client.get(f"/admin/billing/emailtemplate/{EmailTemplate.objects.get().pk}/change/").text
    assert "Pre-charge notice" in change
    preview = admin_client.get("/admin/billing/emailtemplate/preview/payment_failed/").text
    assert "Preview: Card declined" in preview
    add = admin_client.get("/admin/billing/emailtemplate/add/").text
    assert "Receipt: After a successful charge" in add


SCRIPT = "<script>alert(1)</script>"


def _html_sent() -> str:
    [message] = mail.outbox
    return str(message.alternatives[0][0])  # type: ignore[union-attr]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("wording", ["files", "practice text", "practice html"])
def test_a_client_name_with_markup_is_escaped_in_the_html_of_every_email(practice: Practice, name: str,
                                                                         wording: str) -> None:
    if wording == "practice text":  # rendered without escaping (plain text), then wrapped into HTML
        EmailTemplate.objects.create(name=name, subject="For {{ client.first_name }}",
                                     body_text="Dear {{ client.first_name }},\nsee {{ link_url }}")
    elif wording == "practice html":
        EmailTemplate.objects.create(name=name, subject="For {{ client.first_name }}",
                                     body_text="Dear {{ client.first_name }}",
                                     body_html="<p>Dear {{ client.first_name }}, see {{ link_url }}</p>")
    client = Client.objects.create(first_name=SCRIPT, last_name=SCRIPT, email="ada@example.com")
    context = {**sample_context(name), "client": client}
    email_enqueue(key=f"markup:{name}", client=client, template=name, context=context, now=NOW)
    emails_send(now=NOW)
    html = _html_sent()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html
    assert SCRIPT in mail.outbox[0].body  # the text part stays plain text
    if wording == "practice text":
        assert 'href="https://portal.example/p/sample-link/"' in html  # the link still works


def test_every_email_file_is_in_the_catalogue_tested_above() -> None:
    folder = Path(__file__).resolve().parents[2] / "templates" / "emails"
    emails = {p.name.removesuffix(".txt") for p in folder.glob("*.txt")
              if ".subject." not in p.name and not p.name.startswith("_")}  # _name: a part others include
    assert emails == set(NAMES)


@pytest.mark.parametrize("html", ["<p>{{ client.first_name|safe }}</p>", "<p>{{ client.first_name | safe }}</p>",
                                  "{% autoescape off %}<p>{{ client.first_name }}</p>{% endautoescape %}"])
def test_the_practices_html_wording_cannot_turn_escaping_off(practice: Practice, admin_client: HttpClient,
                                                              html: str) -> None:
    refused = admin_client.post("/admin/billing/emailtemplate/add/", {
        "name": "balance_reminder", "subject": "Balance", "body_text": "Dear {{ client.first_name }}",
        "body_html": html})
    assert refused.status_code == 200 and b"cannot turn escaping off" in refused.content
    assert not EmailTemplate.objects.exists()


def _sending(key: str, claimed_ago: dt.timedelta) -> int:
    """An email a sender claimed ``claimed_ago`` (by the wall clock) and is, or was, sending."""
    client = Client.objects.create(first_name="Ada", last_name="Byrne", email=f"{key}@example.com")
    email_enqueue(key=key, client=client, template="card_saved", context={"card": "Visa ending 4242"}, now=NOW)
    OutboundEmail.objects.filter(key=key).update(status=EmailStatus.SENDING, attempts=1,
                                                 claimed_at=timezone.now() - claimed_ago)
    return OutboundEmail.objects.get(key=key).pk


def test_a_tick_run_for_a_time_far_ahead_leaves_an_email_being_sent_now_alone(practice: Practice) -> None:
    pk = _sending("now", dt.timedelta(minutes=1))  # another sender has it, this minute
    call_command("billing_tick", "--at", "2030-01-01T09:00:00+00:00", stdout=StringIO())
    assert mail.outbox == []  # no second copy
    assert OutboundEmail.objects.get(pk=pk).status == EmailStatus.SENDING


def test_a_tick_run_for_a_time_far_behind_still_recovers_an_email_whose_sender_died(practice: Practice) -> None:
    pk = _sending("stale", dt.timedelta(minutes=30))  # its sender died half an hour ago
    call_command("billing_tick", "--at", "2020-01-01T09:00:00+00:00", stdout=StringIO())
    assert len(mail.outbox) == 1
    assert OutboundEmail.objects.get(pk=pk).status == EmailStatus.SENT
