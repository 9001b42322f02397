"""Client linking to Stripe customers, and saving a card with the client's consent (workflows 1 and 2)."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter

from django.db import transaction

from billing.models import (
    PAYMENT_KINDS,
    CardConsent,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    ClientLink,
    LinkPurpose,
    PaymentPlan,
    PlanStatus,
    PolicyAcknowledgment,
    Practice,
    ReviewKind,
    StripeLinkStatus,
)
from billing.money import format_cents
from billing.services.links import IssuedLink, link_create, link_mark_used
from billing.services.notify import email_enqueue
from billing.services.payments import PORTAL_HOLD
from billing.services.review import review_close_stale, review_open
from billing.services.schedule import failed_charges_renotify
from billing.services.waiting import waiting_charges_hold, waiting_choice_link, waiting_lines
from integrations.stripe.gateway import get_gateway


def normalise_email(email: str) -> str:
    return (email or "").strip().lower()


def client_link_stripe(*, client: Client, now: dt.datetime) -> str:
    """Find the client's Stripe customer by email, or create one. Returns the link status.

    Two customers with the same email are never chosen between automatically: the client waits in
    the review queue for a person to pick one, create a new one, or ignore it.
    """
    if client.stripe_customer_id or client.stripe_link_status == StripeLinkStatus.IGNORED:
        return client.stripe_link_status
    email = normalise_email(client.email)
    if not email:
        return _link_set(client, StripeLinkStatus.UNMATCHED, "", now,
                         "The client has no email address to match a Stripe customer by.")
    # Matched whatever the case of either email: Dup.Person@Example.com is dup.person@example.com.
    found = {c.id: c for c in get_gateway().customers_by_email(client.email)}
    if len(found) > 1:
        return _link_set(client, StripeLinkStatus.AMBIGUOUS, "", now,
                         f"{len(found)} Stripe customers share {email}: choose one, create a new one, or ignore.")
    if len(found) == 1:
        return _link_set(client, StripeLinkStatus.MATCHED, next(iter(found)), now)
    return client_customer_create(client=client, now=now)


def client_customer_create(*, client: Client, now: dt.datetime) -> str:
    customer = get_gateway().customer_create(name=client.full_name, email=normalise_email(client.email),
                                             reference=f"client-{client.pk}")
    return _link_set(client, StripeLinkStatus.CREATED, customer.id, now)


def client_customer_link(*, client: Client, customer_id: str, now: dt.datetime) -> str:
    """Staff chose the customer by hand; it must exist in Stripe."""
    customer = get_gateway().customer_get(customer_id.strip())
    return _link_set(client, StripeLinkStatus.MATCHED, customer.id, now)


def client_link_ignore(*, client: Client, now: dt.datetime) -> str:
    return _link_set(client, StripeLinkStatus.IGNORED, client.stripe_customer_id, now)


def _link_set(client: Client, status: str, customer_id: str, now: dt.datetime, problem: str = "") -> str:
    client.stripe_link_status = status
    client.stripe_customer_id = customer_id
    client.save(update_fields=["stripe_link_status", "stripe_customer_id", "updated_at"])
    if problem:
        review_open(kind=ReviewKind.STRIPE_LINK, client=client, reason=problem, now=now)
    else:
        review_close_stale(kind=ReviewKind.STRIPE_LINK, client=client, appointment=None, now=now,
                           note=f"Stripe customer {status}.")
    return status


def clients_link_stripe(*, clients: list[Client], now: dt.datetime) -> Counter[str]:
    """The match report: how many clients were matched, created, unmatched, ambiguous or ignored."""
    report: Counter[str] = Counter()
    for client in clients:
        report[client_link_stripe(client=client, now=now) or "not linked"] += 1
    return report


def enrollment_link_send(*, client: Client, now: dt.datetime, actor: str, send_email: bool) -> IssuedLink:
    issued = link_create(client=client, purpose=LinkPurpose.ENROLL_CARD, now=now, actor=actor)
    if send_email:
        email_enqueue(key=f"enroll:link:{issued.link.pk}", client=client, template="card_enrollment",
                      context={"link_url": issued.url, "expires_at": issued.expires_at}, now=now)
    return issued


def standard_authorization_text(practice: Practice) -> str:
    """What the client agrees to when the practice has not written its own words: what is charged,
    when, and how amounts are set, taken from the practice's billing policy."""
    if practice.charge_timing == "immediate":
        when = "as soon as a session is recorded as complete"
    elif practice.charge_timing == "delayed":
        when = f"{practice.charge_delay_hours} hours after a session is recorded as complete"
    else:
        when = (f"in a weekly batch on {practice.get_weekly_batch_weekday_display()}s at "
                f"{practice.weekly_batch_hour:02d}:00 for the sessions of the week before")
    notice = (f" You will get an email {practice.pre_charge_notice_hours} hours before each charge, and"
              if practice.pre_charge_notice_hours else " You will get")
    return (
        f"I authorize {practice.name} to keep this card on file and to charge it, without my being present, "
        f"for what I owe for my sessions: the copay, coinsurance or deductible my insurance sets, or the "
        f"session fee or sliding-scale rate agreed with me; no-show and late-cancellation fees under the "
        f"cancellation policy I have acknowledged; and balances I have not paid otherwise. Charges are made "
        f"{when}.{notice} a receipt after. I can replace or remove this card at any time by contacting "
        f"{practice.name}{' at ' + practice.phone if practice.phone else ''}.")


def authorization_text(practice: Practice) -> str:
    """The words the client agrees to; they are stored verbatim with each consent."""
    parts = [practice.card_authorization_text.strip() or standard_authorization_text(practice)]
    if practice.cancellation_policy_text.strip():
        parts.append(f"Cancellation policy (version {practice.cancellation_policy_version}):\n"
                     + practice.cancellation_policy_text.strip())
    return "\n\n".join(part for part in parts if part)


def enrollment_begin(*, link: ClientLink, ip_address: str | None, user_agent: str,
                     now: dt.datetime) -> str:
    """The client agreed to the authorization: record it and return a SetupIntent client secret."""
    client = link.client
    if not client.stripe_customer_id:
        status = client_link_stripe(client=client, now=now)
        if status in (StripeLinkStatus.AMBIGUOUS, StripeLinkStatus.UNMATCHED, StripeLinkStatus.IGNORED):
            # The client is here and agreeing: a customer of their own is the safe choice.
            client_customer_create(client=client, now=now)
        client.refresh_from_db()
    practice = Practice.load()
    text = authorization_text(practice)
    CardConsent.objects.create(
        client=client, link=link, text=text, text_sha256=hashlib.sha256(text.encode()).hexdigest(),
        policy_version=practice.cancellation_policy_version, agreed_at=now, ip_address=ip_address,
        user_agent=user_agent[:300])
    if practice.cancellation_policy_text.strip():
        # The consent showed the current cancellation policy word for word: agreeing to it acknowledges that
        # version (what a no-show or late-cancel fee needs). An earlier acknowledgment of it stands.
        PolicyAcknowledgment.objects.get_or_create(
            client=client, policy_version=practice.cancellation_policy_version,
            defaults={"acknowledged_at": now, "source": "portal", "ip_address": ip_address})
    intent = get_gateway().setup_intent_create(customer_id=client.stripe_customer_id)
    ClientLink.objects.filter(pk=link.pk).update(setup_intent_id=intent.id)
    return intent.client_secret


def card_save_from_setup_intent(*, setup_intent_id: str, now: dt.datetime) -> Client | None:
    """Keep the card a SetupIntent saved (from the browser or the webhook; the second call does nothing).

    Only the payment method id, brand, last4 and expiry are kept. Open failed charges are retried
    on the new card at once.
    """
    link = ClientLink.objects.select_related("client").filter(setup_intent_id=setup_intent_id).first()
    if link is None:
        return None
    gateway = get_gateway()
    intent = gateway.setup_intent_get(setup_intent_id)
    if intent.status != "succeeded" or not intent.payment_method_id:
        return None
    card = gateway.card_get(intent.payment_method_id)
    with transaction.atomic():
        client = Client.objects.select_for_update().get(pk=link.client_id)
        if client.card_payment_method_id == card.payment_method_id:
            return client
        client.card_payment_method_id = card.payment_method_id
        client.card_brand = card.brand[:20]
        client.card_last4 = card.last4
        client.card_exp_month = card.exp_month
        client.card_exp_year = card.exp_year
        client.save(update_fields=["card_payment_method_id", "card_brand", "card_last4", "card_exp_month",
                                   "card_exp_year", "updated_at"])
        CardConsent.objects.filter(link=link, payment_method_id="").update(payment_method_id=card.payment_method_id)
        link_mark_used(link=link, now=now)
        # A new card: failed charges (each told before it was first tried) are tried again now; those that
        # waited for a card wait for the client's choice (pay now, or leave them to the practice).
        waiting = waiting_charges_hold(client=client, now=now)
        # A retry never comes sooner than the lead time after the charge's last notice.
        practice = Practice.load()
        # (A portal or weekly card payment that failed is a record, never retried off-session: the charges it
        # was for are what is retried. A plan's installment is retried: the client agreed to it in advance.)
        failed_rows = Charge.objects.filter(client=client, status=ChargeStatus.FAILED).exclude(
            hold_reason=PORTAL_HOLD).exclude(kind__in=PAYMENT_KINDS)
        if PaymentPlan.objects.filter(client=client, status=PlanStatus.CURRENT).exists():
            # While a plan is current it pays what was declined before it: only its installments are retried.
            failed_rows = failed_rows.filter(kind=ChargeKind.INSTALLMENT)
        failed = list(failed_rows.select_related("appointment__clinician", "client").order_by("pk"))
        # A new card: what failed is announced again (the amounts, and when: one notice), then tried after the lead.
        for charge in failed:
            charge.next_retry_at = None
        failed_charges_renotify(charges=failed, practice=practice, now=now)
        for charge in failed:
            charge.save(update_fields=["next_retry_at", "notice_sent_at", "notice_due_at", "updated_at"])
        review_close_stale(kind=ReviewKind.NO_CARD, client=client, appointment=None, now=now,
                           note="The client saved a card.")
        for item in client.review_items.filter(kind=ReviewKind.NO_CARD, status="open"):
            review_close_stale(kind=ReviewKind.NO_CARD, client=client, appointment=item.appointment, now=now,
                               note="The client saved a card.")
        context: dict[str, object] = {"card": client.card_summary, "waiting": []}
        if waiting:
            context.update(waiting=waiting_lines(waiting), total=format_cents(sum(c.amount_cents for c in waiting)),
                           link_url=waiting_choice_link(client=client, now=now, actor="system:cards"))
        email_enqueue(key=f"card-saved:{card.payment_method_id}", client=client, template="card_saved",
                      context=context, now=now)
    return client
