"""The staff console's money actions, against the fake Stripe server: linking, card links, refunds, holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core import mail
from django.db import connection
from django.db.models import Model, Sum
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    Appointment,
    AppointmentStatus,
    AttemptStatus,
    BillingType,
    Charge,
    ChargeStatus,
    Client,
    LedgerEntry,
    LedgerKind,
    Practice,
    Refund,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
    StripeLinkStatus,
)
from billing.services.schedule import appointment_set_status
from tests import factories
from tests.conftest import FakeStripe
from tests.payments.conftest import CARD_OK, outbox, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

SELECTED = "_selected_action"


def admin_url(model: type[Model], view: str, *args: object) -> str:
    return reverse(f"admin:billing_{model._meta.model_name}_{view}", args=args)


def run_action(http: HttpClient, model: type[Model], action: str, rows: list[Any], **fields: Any) -> Any:
    """Post an action from the list; with ``fields``, post its confirmation page too."""
    selection = {"action": action, SELECTED: [row.pk for row in rows]}
    confirm = http.post(admin_url(model, "changelist"), selection)
    if not fields:
        return confirm
    assert confirm.status_code == 200, confirm
    return http.post(admin_url(model, "changelist"), {**selection, "apply": "1", **fields}, follow=True)


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


def balance(client: Client) -> int:
    return LedgerEntry.objects.filter(client=client).aggregate(t=Sum("amount_cents"))["t"] or 0


def stripe_customer(stripe_server: FakeStripe, email: str, name: str = "Someone") -> str:
    response = stripe_server.http.post("/v1/customers", data={"email": email, "name": name})
    response.raise_for_status()
    return str(response.json()["id"])


@pytest.fixture
def make_staff(db: None) -> Callable[..., HttpClient]:
    """A signed-in staff member who may view and change billing rows, plus the named custom permissions."""
    def make(*codenames: str) -> HttpClient:
        user = User.objects.create_user("frontdesk", password="x", is_staff=True)
        user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="billing", codename__regex=r"^(view|change)_"))
        for codename in codenames:
            model = Charge if codename.endswith("_charge") else Client
            # The custom permissions come from the models' Meta once it declares them; until then, made here.
            permission, _ = Permission.objects.get_or_create(
                codename=codename, content_type=ContentType.objects.get_for_model(model),
                defaults={"name": codename.replace("_", " ")})
            user.user_permissions.add(permission)
        http = HttpClient()
        http.force_login(user)
        return http
    return make


# Client linking --------------------------------------------------------------------------------------------

def test_link_to_stripe_shows_the_match_report(
        admin_client: HttpClient, stripe_server: FakeStripe, practice: Practice) -> None:
    known = factories.ClientFactory.create(email="Known@Example.com")
    existing = stripe_customer(stripe_server, "known@example.com")
    twin = factories.ClientFactory.create(email="twin@example.com")
    stripe_customer(stripe_server, "twin@example.com", "Twin one")
    stripe_customer(stripe_server, "twin@example.com", "Twin two")
    new = factories.ClientFactory.create(email="new@example.com")
    no_email = factories.ClientFactory.create(email="")
    clients = [known, twin, new, no_email]

    confirm = run_action(admin_client, Client, "link_to_stripe", clients)
    assert confirm.status_code == 200 and "confirm-action" in confirm.text
    assert "Link to Stripe customers" in confirm.text
    assert Client.objects.exclude(stripe_link_status="").count() == 0  # nothing happens before confirming

    report = run_action(admin_client, Client, "link_to_stripe", clients, note="")
    assert report.status_code == 200
    counts = dict(report.context["counts"])
    assert (counts["Matched to an existing Stripe customer"], counts["New Stripe customer created"],
            counts["Unmatched (no email to match by)"], counts["Ambiguous (several customers share the email)"],
            counts["Ignored"]) == (1, 1, 1, 1, 0)
    assert [item.client for item in report.context["waiting"]] == sorted([twin, no_email],
                                                                         key=lambda c: (c.last_name, c.first_name))
    assert "2 Stripe customers share twin@example.com" in report.text
    assert "Linked to Stripe: 1 matched, 1 created, 1 unmatched, 1 ambiguous, 0 ignored." in report.text

    for client in clients:
        client.refresh_from_db()
    assert (known.stripe_link_status, known.stripe_customer_id) == (StripeLinkStatus.MATCHED, existing)
    assert new.stripe_link_status == StripeLinkStatus.CREATED and new.stripe_customer_id.startswith("cus_")
    assert stripe_server.http.get(f"/v1/customers/{new.stripe_customer_id}").json()["email"] == "new@example.com"
    assert (twin.stripe_link_status, twin.stripe_customer_id) == (StripeLinkStatus.AMBIGUOUS, "")
    assert no_email.stripe_link_status == StripeLinkStatus.UNMATCHED

    waiting = admin_client.get(admin_url(Client, "changelist") + "?stripe_link=needs_person").text
    assert admin_url(Client, "change", twin.pk) in waiting and admin_url(Client, "change", known.pk) not in waiting


def test_clients_match_stripe_customers_whatever_the_case_of_either_email(
        admin_client: HttpClient, stripe_server: FakeStripe, practice: Practice) -> None:
    """A customer made in the Stripe dashboard as Dup.Person@Example.com is the client dup.person@example.com:
    linked to it, no second customer created. Two customers differing only by case are two matches."""
    existing = stripe_customer(stripe_server, "Dup.Person@Example.com")
    lower = factories.ClientFactory.create(email="dup.person@example.com")
    shouting = factories.ClientFactory.create(email="DUP.PERSON@EXAMPLE.COM ")
    stripe_customer(stripe_server, "twin@example.com", "Twin one")
    stripe_customer(stripe_server, "Twin@Example.com", "Twin two")
    twin = factories.ClientFactory.create(email="twin@example.com")

    run_action(admin_client, Client, "link_to_stripe", [lower, shouting, twin], note="")

    for client in (lower, shouting, twin):
        client.refresh_from_db()
    assert (lower.stripe_link_status, lower.stripe_customer_id) == (StripeLinkStatus.MATCHED, existing)
    assert (shouting.stripe_link_status, shouting.stripe_customer_id) == (StripeLinkStatus.MATCHED, existing)
    assert (twin.stripe_link_status, twin.stripe_customer_id) == (StripeLinkStatus.AMBIGUOUS, "")
    customers = stripe_server.http.get("/v1/customers", params={"limit": 100}).json()["data"]
    assert len(customers) == 3  # none created


@pytest.fixture
def ambiguous(stripe_server: FakeStripe, practice: Practice) -> tuple[Client, ReviewItem, str]:
    """A client two Stripe customers share an email with, waiting in the review queue; and one of them."""
    from billing.services.cards import client_link_stripe

    client = factories.ClientFactory.create(email="twin@example.com")
    chosen = stripe_customer(stripe_server, "twin@example.com", "Twin one")
    stripe_customer(stripe_server, "twin@example.com", "Twin two")
    assert client_link_stripe(client=client, now=timezone.now()) == StripeLinkStatus.AMBIGUOUS
    return client, ReviewItem.objects.get(kind=ReviewKind.STRIPE_LINK, client=client, status=ReviewStatus.OPEN), chosen


def test_link_by_hand_to_a_chosen_customer_shows_stripes_error_for_a_wrong_id(
        admin_client: HttpClient, ambiguous: tuple[Client, ReviewItem, str]) -> None:
    client, item, chosen = ambiguous
    queue = admin_client.get(admin_url(ReviewItem, "changelist") + "?kind__exact=stripe_link&status__exact=open")
    assert admin_url(ReviewItem, "change", item.pk) in queue.text

    form = run_action(admin_client, ReviewItem, "stripe_link_chosen", [item])
    assert "Link to a chosen Stripe customer" in form.text and 'name="customer_id"' in form.text

    not_an_id = run_action(admin_client, ReviewItem, "stripe_link_chosen", [item], customer_id="twin@example.com")
    assert "A Stripe customer id starts with cus_." in not_an_id.text

    wrong = run_action(admin_client, ReviewItem, "stripe_link_chosen", [item], customer_id="cus_doesnotexist")
    [error] = messages_of(wrong)
    # Stripe's own words follow ("No such customer: ..." from Stripe, "Not Found" from the fake server).
    assert error.startswith(f"Stripe refused customer cus_doesnotexist for {client}: ") and error.split(": ", 1)[1]
    client.refresh_from_db()
    assert (client.stripe_link_status, client.stripe_customer_id) == (StripeLinkStatus.AMBIGUOUS, "")

    linked = run_action(admin_client, ReviewItem, "stripe_link_chosen", [item], customer_id=f" {chosen} ")
    assert messages_of(linked) == [f"Linked {client} to Stripe customer {chosen}."]
    client.refresh_from_db()
    item.refresh_from_db()
    assert (client.stripe_link_status, client.stripe_customer_id) == (StripeLinkStatus.MATCHED, chosen)
    assert item.status == ReviewStatus.RESOLVED


def test_create_a_new_customer_from_the_review_queue(
        admin_client: HttpClient, stripe_server: FakeStripe, ambiguous: tuple[Client, ReviewItem, str]) -> None:
    client, item, chosen = ambiguous
    done = run_action(admin_client, ReviewItem, "stripe_create_customer", [item], note="")
    assert messages_of(done) == [f"Created a new Stripe customer for {client}."]
    client.refresh_from_db()
    item.refresh_from_db()
    assert client.stripe_link_status == StripeLinkStatus.CREATED
    assert client.stripe_customer_id.startswith("cus_") and client.stripe_customer_id != chosen
    assert item.status == ReviewStatus.RESOLVED


def test_ignore_takes_the_client_out_of_the_queue(
        admin_client: HttpClient, ambiguous: tuple[Client, ReviewItem, str]) -> None:
    client, item, _ = ambiguous
    confirm = run_action(admin_client, Client, "ignore_stripe_link", [client])
    assert "Ignore for Stripe linking" in confirm.text
    done = run_action(admin_client, Client, "ignore_stripe_link", [client], note="")
    assert messages_of(done) == [f"{client} will not be linked to Stripe."]
    client.refresh_from_db()
    item.refresh_from_db()
    assert (client.stripe_link_status, item.status) == (StripeLinkStatus.IGNORED, ReviewStatus.RESOLVED)


# Card links ------------------------------------------------------------------------------------------------

def test_send_card_link_emails_the_client_and_never_shows_the_link(
        admin_client: HttpClient, practice: Practice,
        django_capture_on_commit_callbacks: Callable[..., Any]) -> None:
    client = factories.ClientFactory.create(email="pat@example.com")
    no_email = factories.ClientFactory.create(email="")

    confirm = run_action(admin_client, Client, "send_card_link", [client, no_email])
    assert "pat@example.com" in confirm.text and f"{no_email} has no email address" in confirm.text
    with django_capture_on_commit_callbacks(execute=True):
        done = run_action(admin_client, Client, "send_card_link", [client, no_email], note="")

    [email] = outbox("card_enrollment")
    assert email.to == ["pat@example.com"]
    link = next(word for word in email.body.split() if "/p/" in word)
    token = link.rstrip("/").rsplit("/", 1)[1]
    assert messages_of(done) == [f"Emailed a card link to {client} at pat@example.com.",
                                 f"{no_email} has no email address: add one, then send the card link."]
    assert token not in done.text
    issued = client.links.get()
    assert issued.created_by == f"staff:{done.wsgi_request.user.get_username()}"
    page = admin_client.get(admin_url(type(issued), "change", issued.pk))
    assert token not in page.text and issued.token_hash not in page.text


def test_a_client_without_email_gets_a_clear_message(
        admin_client: HttpClient, practice: Practice) -> None:
    no_email = factories.ClientFactory.create(email="")
    response = admin_client.post(admin_url(Client, "changelist"),
                                 {"action": "send_card_link", SELECTED: [no_email.pk]}, follow=True)
    assert messages_of(response) == [f"{no_email} has no email address: add one, then send the card link."]
    assert not mail.outbox and not no_email.links.exists()


# Refunds ---------------------------------------------------------------------------------------------------

@pytest.fixture
def paid_client(practice: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client]) -> Client:
    practice.charge_timing = "immediate"
    practice.save()
    client = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    return save_card(client, CARD_OK, stripe_server)


def complete_session(client: Client, make_appointment: Callable[..., Appointment]) -> Charge:
    appointment = make_appointment(client, starts_at=FRIDAY_10AM - dt.timedelta(hours=1))
    appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=FRIDAY_10AM,
                           actor="test")
    tick(FRIDAY_10AM)
    return Charge.objects.get(appointment=appointment)


@pytest.fixture
def paid_charge(paid_client: Client, make_appointment: Callable[..., Appointment]) -> Charge:
    charge = complete_session(paid_client, make_appointment)
    assert (charge.status, charge.amount_cents) == (ChargeStatus.SUCCEEDED, 14000)
    return charge


def refund(http: HttpClient, charge: Charge, amount: str, reason: str = "Overcharged",
           refunds_seen: int | None = None) -> Any:
    seen = charge.refunds.count() if refunds_seen is None else refunds_seen
    return http.post(admin_url(Charge, "refund", charge.pk), {"amount": amount, "reason": reason,
                                                              "refunds_seen": seen}, follow=True)


def refunded_on_stripe(stripe_server: FakeStripe) -> int:
    [paid] = [c for c in stripe_server.charges() if c["status"] == "succeeded"]
    return int(paid["amount_refunded"])


def test_refund_in_part_then_the_rest_never_above_what_was_paid(
        admin_client: HttpClient, stripe_server: FakeStripe, paid_charge: Charge) -> None:
    charge_page = admin_client.get(admin_url(Charge, "change", paid_charge.pk)).text
    refund_url = admin_url(Charge, "refund", paid_charge.pk)
    assert refund_url in charge_page

    form = admin_client.get(refund_url)
    assert form.status_code == 200
    assert "$140.00" in form.text and 'value="140.00"' in form.text  # the default: all that is refundable

    assert "This field is required." in refund(admin_client, paid_charge, "40.00", reason="").text
    done = refund(admin_client, paid_charge, "40.00")
    assert "Refunded $40.00 of charge" in done.text
    paid_charge.refresh_from_db()
    assert (paid_charge.status, paid_charge.refunded_cents) == (ChargeStatus.PARTIALLY_REFUNDED, 4000)
    assert refunded_on_stripe(stripe_server) == 4000

    too_much = refund(admin_client, paid_charge, "100.01")
    assert "At most $100.00 of this charge can be refunded." in too_much.text
    assert 'value="100.01"' in too_much.text  # what was typed stays, against what is left now
    stale = refund(admin_client, paid_charge, "10.00", refunds_seen=0)  # a second click on the first form
    assert "This charge was refunded since the form was opened" in stale.text

    refund(admin_client, paid_charge, "100.00", reason="Session canceled by the practice")
    paid_charge.refresh_from_db()
    assert (paid_charge.status, paid_charge.refunded_cents) == (ChargeStatus.REFUNDED, 14000)
    assert refunded_on_stripe(stripe_server) == 14000
    assert "At most $0.00 of this charge can be refunded." in refund(admin_client, paid_charge, "0.01").text
    assert refunded_on_stripe(stripe_server) == 14000

    refunds = LedgerEntry.objects.filter(charge=paid_charge, kind=LedgerKind.REFUND)
    assert sorted(refunds.values_list("amount_cents", flat=True)) == [4000, 10000]
    assert balance(paid_charge.client) == 0  # refunded money was not owed: written off, not chased
    assert list(Refund.objects.filter(charge=paid_charge).values_list("status", flat=True)) == [
        "succeeded", "succeeded"]

    page = admin_client.get(admin_url(Charge, "change", paid_charge.pk)).text
    assert "Session canceled by the practice" in page and "$100.00" in page  # the refunds inline
    assert refund_url not in page  # nothing left to refund
    assert admin_client.get(refund_url, follow=True).redirect_chain


# Held charges ----------------------------------------------------------------------------------------------

@pytest.fixture
def held_charge(paid_client: Client, practice: Practice, make_appointment: Callable[..., Appointment]) -> Charge:
    practice.max_charge_cents = 10000
    practice.save()
    charge = complete_session(paid_client, make_appointment)
    assert (charge.status, charge.hold_reason) == (ChargeStatus.DUE, "above the practice's cap of $100.00")
    return charge


def test_release_a_charge_held_above_the_cap(
        admin_client: HttpClient, stripe_server: FakeStripe, held_charge: Charge) -> None:
    on_hold = admin_client.get(admin_url(Charge, "changelist") + "?queue=on_hold").text
    assert admin_url(Charge, "change", held_charge.pk) in on_hold
    assert "above the practice&#x27;s cap of $100.00" in on_hold

    confirm = run_action(admin_client, Charge, "release_charge", [held_charge])
    assert "Charge now anyway" in confirm.text and "$140.00" in confirm.text
    assert "This field is required." not in confirm.text
    done = run_action(admin_client, Charge, "release_charge", [held_charge], why="Client agreed by phone")
    assert messages_of(done) == [f"Charge #{held_charge.pk} will be charged on the next billing run."]

    held_charge.refresh_from_db()
    assert (held_charge.status, held_charge.hold_reason) == (ChargeStatus.DUE, "")
    event = held_charge.events.order_by("-id").first()
    assert event is not None and event.reason.startswith("released by staff") and "Client agreed" in event.reason
    assert event.actor == f"staff:{done.wsgi_request.user.get_username()}"
    assert not ReviewItem.objects.filter(kind=ReviewKind.CHARGE_CAP, status=ReviewStatus.OPEN).exists()
    assert admin_url(Charge, "change", held_charge.pk) not in admin_client.get(
        admin_url(Charge, "changelist") + "?queue=on_hold").text


def test_a_released_charge_is_charged_on_the_next_run(
        admin_client: HttpClient, stripe_server: FakeStripe, held_charge: Charge) -> None:
    run_action(admin_client, Charge, "release_charge", [held_charge], why="Client agreed by phone")
    tick(FRIDAY_10AM + dt.timedelta(minutes=1))
    held_charge.refresh_from_db()
    assert held_charge.status == ChargeStatus.SUCCEEDED
    assert [c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"] == [14000]


def test_release_refuses_charges_not_held_above_the_cap(admin_client: HttpClient, paid_charge: Charge) -> None:
    response = admin_client.post(admin_url(Charge, "changelist"),
                                 {"action": "release_charge", SELECTED: [paid_charge.pk]}, follow=True)
    assert messages_of(response)[0].startswith("None of the selected charges is held above the practice's cap")


def test_a_mixed_selection_names_what_is_left_alone_and_releases_only_the_held_charge(
        admin_client: HttpClient, stripe_server: FakeStripe, held_charge: Charge) -> None:
    paid_charge = factories.ChargeFactory.create(status=ChargeStatus.SUCCEEDED)
    confirm = run_action(admin_client, Charge, "release_charge", [held_charge, paid_charge])
    assert f"Not held above the cap, left alone: #{paid_charge.pk}." in confirm.text
    done = run_action(admin_client, Charge, "release_charge", [held_charge, paid_charge], why="Agreed by phone")
    assert messages_of(done) == [f"Charge #{held_charge.pk} will be charged on the next billing run."]
    paid_charge.refresh_from_db()
    assert paid_charge.status == ChargeStatus.SUCCEEDED


def test_cancel_a_held_charge_takes_it_off_the_balance(
        admin_client: HttpClient, stripe_server: FakeStripe, held_charge: Charge) -> None:
    assert balance(held_charge.client) == 14000
    confirm = run_action(admin_client, Charge, "cancel_charge", [held_charge])
    assert "Cancel charges" in confirm.text
    done = run_action(admin_client, Charge, "cancel_charge", [held_charge], why="Billed by mistake")
    assert messages_of(done) == [f"Canceled charge #{held_charge.pk}."]

    held_charge.refresh_from_db()
    assert (held_charge.status, held_charge.hold_reason) == (ChargeStatus.CANCELED, "")
    assert held_charge.events.order_by("-id")[0].reason == "canceled by staff: Billed by mistake"
    assert list(LedgerEntry.objects.filter(charge=held_charge, kind=LedgerKind.CHARGE_CANCELED)
                .values_list("amount_cents", flat=True)) == [-14000]
    assert balance(held_charge.client) == 0
    assert not ReviewItem.objects.filter(kind=ReviewKind.CHARGE_CAP, status=ReviewStatus.OPEN).exists()
    tick(FRIDAY_10AM + dt.timedelta(minutes=1))
    assert stripe_server.charges() == []


def test_a_charge_canceled_by_staff_stays_canceled_when_the_session_is_checked_again(
        admin_client: HttpClient, held_charge: Charge) -> None:
    run_action(admin_client, Charge, "cancel_charge", [held_charge], why="Billed by mistake")
    assert held_charge.appointment is not None
    admin_client.post(admin_url(Appointment, "changelist"), {
        "action": "recheck_billing", SELECTED: [held_charge.appointment_id]})
    held_charge.refresh_from_db()
    assert held_charge.status == ChargeStatus.CANCELED
    assert balance(held_charge.client) == 0


def test_a_paid_charge_is_not_canceled(admin_client: HttpClient, paid_charge: Charge) -> None:
    response = admin_client.post(admin_url(Charge, "changelist"),
                                 {"action": "cancel_charge", SELECTED: [paid_charge.pk]}, follow=True)
    assert "refund a paid one instead" in messages_of(response)[0]
    paid_charge.refresh_from_db()
    assert paid_charge.status == ChargeStatus.SUCCEEDED


# Permissions -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("model", "action", "codename"), [
    (Client, "link_to_stripe", "link_stripe_customer"),
    (Client, "send_card_link", "send_card_link"),
    (Charge, "release_charge", "release_charge"),
    (Charge, "cancel_charge", "cancel_charge"),
    (ReviewItem, "stripe_link_chosen", "link_stripe_customer"),
])
def test_staff_without_the_permission_gets_no_action(
        make_staff: Callable[..., HttpClient], model: type[Model], action: str, codename: str) -> None:
    makers: dict[type[Model], Callable[[], Model]] = {
        Client: factories.ClientFactory.create, Charge: factories.ChargeFactory.create,
        ReviewItem: lambda: factories.ReviewItemFactory.create(kind=ReviewKind.STRIPE_LINK)}
    row = makers[model]()
    rows = model._default_manager.values()
    staff = make_staff()
    assert f'value="{action}"' not in staff.get(admin_url(model, "changelist")).text
    before = rows.get(pk=row.pk)
    for step in ({}, {"apply": "1", "why": "x", "customer_id": "cus_x"}):
        response = staff.post(admin_url(model, "changelist"), {"action": action, SELECTED: [row.pk], **step},
                              follow=True)
        assert response.status_code == 200 and "confirm-action" not in response.text
    assert rows.get(pk=row.pk) == before
    assert not mail.outbox

    allowed = make_staff_with(make_staff, codename)
    assert f'value="{action}"' in allowed.get(admin_url(model, "changelist")).text


def make_staff_with(make_staff: Callable[..., HttpClient], codename: str) -> HttpClient:
    User.objects.filter(username="frontdesk").delete()
    return make_staff(codename)


def test_staff_without_the_refund_permission_gets_403(
        make_staff: Callable[..., HttpClient], paid_charge: Charge) -> None:
    staff = make_staff()
    charge_page = admin_url(Charge, "change", paid_charge.pk)
    assert admin_url(Charge, "refund", paid_charge.pk) not in staff.get(charge_page).text
    assert staff.get(admin_url(Charge, "refund", paid_charge.pk)).status_code == 403
    assert refund(staff, paid_charge, "10.00").status_code == 403
    paid_charge.refresh_from_db()
    assert paid_charge.refunded_cents == 0

    allowed = make_staff_with(make_staff, "refund_charge")
    assert admin_url(Charge, "refund", paid_charge.pk) in allowed.get(charge_page).text
    assert "Refunded $10.00" in refund(allowed, paid_charge, "10.00").text


# The front page --------------------------------------------------------------------------------------------

def add_attention(n: int) -> None:
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    for _ in range(n):
        charge = factories.ChargeFactory.create(status=ChargeStatus.DUE, hold_reason="above the practice's cap of $1")
        processing = factories.ChargeFactory.create(status=ChargeStatus.PROCESSING)
        factories.PaymentAttemptFactory.create(charge=processing, started_at=long_ago)
        factories.ReviewItemFactory.create(kind=ReviewKind.STRIPE_LINK, client=charge.client,
                                           reason="2 Stripe customers share the email")


def test_today_shows_holds_unknown_payments_outreach_and_stripe_links(admin_client: HttpClient) -> None:
    held = factories.ChargeFactory.create(status=ChargeStatus.DUE, amount_cents=52_000,
                                          hold_reason="above the practice's cap of $500.00")
    waiting = factories.ChargeFactory.create(status=ChargeStatus.PROCESSING, amount_cents=7_700)
    unknown = factories.PaymentAttemptFactory.create(charge=waiting,
                                                     started_at=timezone.now() - dt.timedelta(minutes=3))
    recent = factories.PaymentAttemptFactory.create(
        charge=factories.ChargeFactory.create(status=ChargeStatus.PROCESSING, amount_cents=6_600))
    flagged = factories.ClientFactory.create(flagged_for_outreach=True, flagged_reason="3 failed card payments")
    link = factories.ReviewItemFactory.create(kind=ReviewKind.STRIPE_LINK, reason="2 Stripe customers share x@y.z")
    assert unknown.status == AttemptStatus.STARTED

    page = admin_client.get(reverse("admin:index")).text
    assert "Charges on hold" in page and "$520.00" in page and "above the practice&#x27;s cap of $500.00" in page
    assert admin_url(Charge, "change", held.pk) in page
    assert "Payments with no answer from Stripe" in page and "$77.00" in page
    assert "$66.00" not in page and admin_url(Charge, "change", recent.charge_id) not in page
    assert str(flagged) in page and "3 failed card payments" in page
    assert "Clients to link to Stripe" in page and "2 Stripe customers share x@y.z" in page
    assert admin_url(Client, "change", link.client_id) in page


def test_today_uses_as_many_queries_for_30_problems_as_for_3(admin_client: HttpClient) -> None:
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(reverse("admin:index")).status_code == 200
        return len(queries)

    add_attention(3)
    count()
    few = count()
    add_attention(27)
    assert count() == few
