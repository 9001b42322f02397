"""Staff take and record money from a client's page (workflow 15), against PostgreSQL, the fake Stripe server
and the email outbox: a card payment by phone, a payment taken outside Stripe, adjustments and write-offs,
links and statements by email, and a reconciliation finding settled from its page; each as each role, and
each form sent twice (one after the other, and at the same moment from two threads) doing one thing."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from auditlog.models import LogEntry
from django.core import mail
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from billing.models import (
    BillingType,
    Charge,
    ChargeKind,
    ChargeStatus,
    Client,
    FindingKind,
    FindingStatus,
    LedgerEntry,
    LedgerKind,
    Practice,
    ReconciliationFinding,
    Refund,
    RefundStatus,
    StaffAction,
    StaffActionKind,
)
from billing.roles import roles_sync
from billing.services.balance import client_balance_cents
from billing.services.notify import emails_send
from billing.services.refunds import refundable_cents
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_NEEDS_AUTHENTICATION, CARD_OK, outbox, post_at_once, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM

DAY = dt.timedelta(days=1)
KEY = re.compile(rb'name="form_key" value="([^"]+)"')


def delivered(template: str) -> list[Any]:
    """The emails of a template once the outbox is sent (after commit, or by the next tick: a test's
    transaction never commits)."""
    emails_send(now=timezone.now())
    return outbox(template)


def succeeded(stripe_server: FakeStripe) -> list[int]:
    return sorted(c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded")


def page(person: Client, what: str) -> str:
    return reverse("admin:billing_client_money", args=[person.pk, what])


def signed_in(user: Any) -> HttpClient:
    http = HttpClient()
    http.force_login(user)
    return http


def form_key(http: HttpClient, path: str) -> str:
    response = http.get(path)
    assert response.status_code == 200, response.status_code
    found = KEY.search(response.content)
    assert found
    return found.group(1).decode()


def errors(response: Any) -> str:
    return " ".join(str(e) for e in response.context["form"].errors.values()) if response.context else ""


def charges_of(person: Client) -> list[Charge]:
    return list(Charge.objects.filter(client=person).exclude(kind=ChargeKind.BALANCE_PAYMENT).order_by("pk"))


@pytest.fixture(autouse=True)
def _roles(db: None) -> None:
    """The role groups, as ``migrate`` makes them (a test on real transactions empties the database after it)."""
    roles_sync()


@pytest.fixture
def owes_280(practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Any],
             stripe_server: FakeStripe) -> Client:
    """Two sessions, $140 each, waiting for the practice's weekly batch; a card on file."""
    practice.charge_timing = "weekly"
    practice.save()
    person = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    completed_session(person, at=FRIDAY_10AM - 2 * DAY)
    completed_session(person, at=FRIDAY_10AM - DAY)
    save_card(person, CARD_OK, stripe_server)
    mail.outbox.clear()
    return person


# --- A card payment by phone ----------------------------------------------------------------------------

def test_front_desk_charges_the_card_on_file_by_phone_with_a_receipt_and_an_audit_entry(
        owes_280: Client, front_desk: Any, stripe_server: FakeStripe) -> None:
    http = signed_in(front_desk)
    client_page = http.get(reverse("admin:billing_client_change", args=[owes_280.pk]))
    assert b"Charge the card on file" in client_page.content
    assert b"Adjustment or write-off" not in client_page.content  # not front desk's

    key = form_key(http, page(owes_280, "charge-card"))
    form = {"form_key": key, "amount": "280.00", "reason": "Client called to pay both sessions"}
    done = http.post(page(owes_280, "charge-card"), form, follow=True)
    assert "Charged $280.00 to Visa ending 4242" in done.content.decode()
    assert succeeded(stripe_server) == [28000]
    assert client_balance_cents(owes_280) == 0
    assert {c.status for c in charges_of(owes_280)} == {ChargeStatus.SUCCEEDED}
    [receipt] = delivered("receipt")
    assert "We charged $280.00" in receipt.body

    action = StaffAction.objects.get(client=owes_280)
    assert (action.kind, action.amount_cents, action.user) == (StaffActionKind.CARD_PAYMENT, -28000, front_desk)
    payment = action.payment
    assert payment is not None and payment.events.first().actor == "staff:desk"  # type: ignore[union-attr]
    entry = LogEntry.objects.get(content_type__model="staffaction", object_pk=str(action.pk))
    assert entry.actor == front_desk

    again = http.post(page(owes_280, "charge-card"), form)  # Back and submit, or a double click
    assert "already sent" in errors(again)
    assert succeeded(stripe_server) == [28000]
    assert StaffAction.objects.count() == 1


@pytest.mark.parametrize(("amount", "message"), [
    ("300.00", "The client can pay at most $280.00 now."),
    ("0", "Enter an amount above $0.00"),
    ("-5", "greater than or equal to 0"),
    ("abc", "Enter a number"),
    ("", "Enter an amount above $0.00"),
])
def test_a_phone_payment_that_is_not_payable_is_refused_on_the_form_and_changes_nothing(
        owes_280: Client, front_desk: Any, stripe_server: FakeStripe, amount: str, message: str) -> None:
    http = signed_in(front_desk)
    path = page(owes_280, "charge-card")
    refused = http.post(path, {"form_key": form_key(http, path), "amount": amount, "reason": "on the phone"})
    assert refused.status_code == 200
    assert message in errors(refused)
    assert succeeded(stripe_server) == []
    assert client_balance_cents(owes_280) == 28000
    assert not StaffAction.objects.exists()
    assert not Charge.objects.filter(kind=ChargeKind.BALANCE_PAYMENT).exists()


def test_a_phone_payment_pays_chosen_charges_and_needs_a_reason(
        owes_280: Client, front_desk: Any, stripe_server: FakeStripe) -> None:
    http = signed_in(front_desk)
    path = page(owes_280, "charge-card")
    first, second = charges_of(owes_280)
    no_reason = http.post(path, {"form_key": form_key(http, path), "charges": [second.pk], "reason": ""})
    assert "This field is required" in errors(no_reason)
    assert succeeded(stripe_server) == []
    http.post(path, {"form_key": form_key(http, path), "charges": [second.pk], "reason": "the later session"})
    assert succeeded(stripe_server) == [14000]
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == (ChargeStatus.SCHEDULED, ChargeStatus.SUCCEEDED)
    assert client_balance_cents(owes_280) == 14000


def test_a_card_whose_bank_wants_the_client_cannot_be_charged_by_phone_and_nothing_is_taken(
        owes_280: Client, front_desk: Any, stripe_server: FakeStripe) -> None:
    save_card(owes_280, CARD_NEEDS_AUTHENTICATION, stripe_server)
    http = signed_in(front_desk)
    path = page(owes_280, "charge-card")
    answer = http.post(path, {"form_key": form_key(http, path), "amount": "140.00", "reason": "phone"})
    assert "cannot be done over the phone: nothing was charged" in errors(answer)
    assert succeeded(stripe_server) == []
    assert client_balance_cents(owes_280) == 28000
    assert all(c.status == ChargeStatus.SCHEDULED and not c.hold_reason for c in charges_of(owes_280))
    payment = Charge.objects.get(kind=ChargeKind.BALANCE_PAYMENT)
    assert payment.status == ChargeStatus.FAILED
    assert stripe_server.payment_intent(payment.payment_reference)["status"] == "canceled"


def _post_at_once(user: Any, path: str, forms: list[dict[str, Any]]) -> list[int]:
    """Each form posted by the same signed-in staff member at once; the status codes of the answers."""
    return [response.status_code for response in post_at_once(path, forms, cookies=signed_in(user).cookies)]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("same_form", [True, False])
def test_a_phone_payment_sent_twice_at_once_charges_the_card_once(
        owes_280: Client, front_desk: Any, stripe_server: FakeStripe, same_form: bool) -> None:
    path = page(owes_280, "charge-card")
    keys = ["the-same-staff-form-0001"] * 2 if same_form else ["a-staff-form-key-0001", "a-staff-form-key-0002"]
    answers = _post_at_once(front_desk, path, [{"form_key": key, "amount": "280.00", "reason": "phone"}
                                               for key in keys])
    assert sorted(answers) == [200, 302]  # one done (redirected), one shown again with the refusal
    assert succeeded(stripe_server) == [28000]
    assert client_balance_cents(owes_280) == 0
    assert LedgerEntry.objects.filter(client=owes_280, kind=LedgerKind.PAYMENT).count() == 1


# --- A payment taken outside Stripe ---------------------------------------------------------------------

def test_front_desk_records_a_check_against_a_chosen_charge_and_the_card_is_not_charged_for_it(
        owes_280: Client, front_desk: Any, stripe_server: FakeStripe) -> None:
    http = signed_in(front_desk)
    path = page(owes_280, "record-payment")
    first, _ = charges_of(owes_280)
    no_number = http.post(path, {"form_key": form_key(http, path), "charges": [first.pk], "method": "check",
                                 "reference": ""})
    assert "Give the check number" in errors(no_number)
    assert client_balance_cents(owes_280) == 28000 and not StaffAction.objects.exists()

    form = {"form_key": form_key(http, path), "charges": [first.pk], "method": "check", "reference": "1042"}
    done = http.post(path, form, follow=True)
    assert "Recorded a check payment of $140.00." in done.content.decode()
    first.refresh_from_db()
    assert (first.status, first.payment_reference) == (ChargeStatus.SUCCEEDED, "check:1042")
    assert client_balance_cents(owes_280) == 14000
    [entry] = LedgerEntry.objects.filter(client=owes_280, kind=LedgerKind.PAYMENT)
    assert (entry.amount_cents, entry.memo, entry.user) == (-14000, "Check payment 1042", front_desk)
    action = StaffAction.objects.get()
    assert (action.kind, action.method, action.reference) == (StaffActionKind.OUTSIDE_PAYMENT, "check", "1042")
    assert LogEntry.objects.filter(content_type__model="staffaction", object_pk=str(action.pk),
                                   actor=front_desk).exists()
    assert refundable_cents(first) == 0  # a check goes back outside Stripe too

    assert "already sent" in errors(http.post(path, form))
    assert client_balance_cents(owes_280) == 14000

    tick(FRIDAY_10AM + 14 * DAY)  # the weekly batch: only the session not paid by check goes to the card
    assert succeeded(stripe_server) == [14000]
    assert client_balance_cents(owes_280) == 0


def test_cash_against_the_balance_pays_the_oldest_charge_first_and_never_more_than_is_owed(
        owes_280: Client, front_desk: Any) -> None:
    http = signed_in(front_desk)
    path = page(owes_280, "record-payment")
    too_much = http.post(path, {"form_key": form_key(http, path), "amount": "300", "method": "cash"})
    assert "The client can pay at most $280.00 now." in errors(too_much)
    http.post(path, {"form_key": form_key(http, path), "amount": "100", "method": "cash", "reason": "at the desk"})
    first, second = charges_of(owes_280)
    assert (first.amount_cents, first.prepaid_cents, first.status) == (4000, 10000, ChargeStatus.SCHEDULED)
    assert (second.amount_cents, second.status) == (14000, ChargeStatus.SCHEDULED)
    assert client_balance_cents(owes_280) == 18000


@pytest.mark.django_db(transaction=True)
def test_the_same_payment_record_sent_twice_at_once_is_recorded_once(owes_280: Client, front_desk: Any) -> None:
    form = {"form_key": "a-cash-form-key-000001", "amount": "50.00", "method": "cash"}
    answers = _post_at_once(front_desk, page(owes_280, "record-payment"), [form, form])
    assert sorted(answers) == [200, 302]
    assert client_balance_cents(owes_280) == 23000
    assert StaffAction.objects.count() == 1


# --- Adjustments and write-offs -------------------------------------------------------------------------

def test_front_desk_and_auditors_cannot_adjust_and_auditors_take_or_record_nothing(
        owes_280: Client, front_desk: Any, auditor: Any) -> None:
    desk = signed_in(front_desk)
    assert desk.get(page(owes_280, "adjust")).status_code == 403
    refused = desk.post(page(owes_280, "adjust"), {"form_key": "a-desk-form-key-00001", "choice": "write_off",
                                                   "amount": "10", "reason": "x"})
    assert refused.status_code == 403
    reader = signed_in(auditor)
    assert b"Charge the card on file" not in reader.get(
        reverse("admin:billing_client_change", args=[owes_280.pk])).content
    for what in ("charge-card", "record-payment", "adjust", "send-link"):
        assert reader.get(page(owes_280, what)).status_code == 403
        assert reader.post(page(owes_280, what), {"form_key": "an-auditor-key-000001", "amount": "10",
                                                  "method": "cash", "what": "card"}).status_code == 403
    assert client_balance_cents(owes_280) == 28000
    assert not StaffAction.objects.exists() and not mail.outbox


def test_a_billing_manager_writes_off_a_charge_so_it_is_never_charged(
        owes_280: Client, billing_manager: Any, stripe_server: FakeStripe) -> None:
    http = signed_in(billing_manager)
    path = page(owes_280, "adjust")
    first, _ = charges_of(owes_280)
    no_reason = http.post(path, {"form_key": form_key(http, path), "choice": "write_off", "charges": [first.pk]})
    assert "This field is required" in errors(no_reason)
    assert client_balance_cents(owes_280) == 28000

    http.post(path, {"form_key": form_key(http, path), "choice": "write_off", "charges": [first.pk],
                     "reason": "hardship agreed with the clinician"})
    first.refresh_from_db()
    assert (first.status, first.canceled_by_staff) == (ChargeStatus.CANCELED, True)
    [entry] = LedgerEntry.objects.filter(client=owes_280, kind=LedgerKind.WRITE_OFF)
    assert (entry.amount_cents, entry.charge, entry.user) == (-14000, first, billing_manager)
    assert "hardship" in entry.memo
    action = StaffAction.objects.get()
    assert (action.kind, action.amount_cents) == (StaffActionKind.WRITE_OFF, -14000)
    assert LogEntry.objects.filter(content_type__model="staffaction", actor=billing_manager).exists()

    tick(FRIDAY_10AM + 14 * DAY)
    assert succeeded(stripe_server) == [14000]  # the other session only
    assert client_balance_cents(owes_280) == 0


def test_an_amount_taken_off_must_not_be_money_an_open_charge_will_still_collect(
        owes_280: Client, billing_manager: Any) -> None:
    http = signed_in(billing_manager)
    path = page(owes_280, "adjust")
    refused = http.post(path, {"form_key": form_key(http, path), "choice": "reduce", "amount": "20",
                               "reason": "courtesy"})
    assert "choose the charges to take off instead" in errors(refused)
    assert client_balance_cents(owes_280) == 28000

    http.post(path, {"form_key": form_key(http, path), "choice": "add", "amount": "25",
                     "reason": "returned check fee"})
    assert client_balance_cents(owes_280) == 30500
    assert LedgerEntry.objects.get(kind=LedgerKind.ADJUSTMENT).amount_cents == 2500
    over = http.post(path, {"form_key": form_key(http, path), "choice": "reduce", "amount": "30",
                            "reason": "courtesy"})
    assert "At most $25.00 of this balance" in errors(over)
    http.post(path, {"form_key": form_key(http, path), "choice": "reduce", "amount": "25", "reason": "fee waived"})
    assert client_balance_cents(owes_280) == 28000
    assert [a.amount_cents for a in StaffAction.objects.order_by("pk")] == [2500, -2500]


# --- Links and statements -------------------------------------------------------------------------------

def test_front_desk_emails_a_pay_link_a_statement_and_a_card_link_each_once(
        owes_280: Client, front_desk: Any, client: HttpClient) -> None:
    http = signed_in(front_desk)
    path = page(owes_280, "send-link")
    for what in ("pay_balance", "statement", "card"):
        form = {"form_key": form_key(http, path), "what": what}
        assert http.post(path, form).status_code == 302
        assert "already sent" in errors(http.post(path, form))
    [pay] = delivered("pay_balance_link")
    assert "$280.00" in pay.body
    [statement] = delivered("statement")  # the last month that is over, as of today
    assert re.search(r"Balance on \w+ \d+, \d{4}: \$280\.00", statement.body)
    assert len(delivered("card_enrollment")) == 1
    assert StaffAction.objects.filter(kind=StaffActionKind.LINK_SENT).count() == 3

    link = next(line for line in statement.body.splitlines() if "/p/" in line).strip()
    balance = client.get(link.split("127.0.0.1:8000", 1)[1])
    assert balance.status_code == 200 and b"$280.00" in balance.content


def test_a_link_sent_while_the_practice_previews_is_reported_as_drafted_not_sent(
        owes_280: Client, front_desk: Any) -> None:
    Practice.objects.update(charging_preview=True)
    http = signed_in(front_desk)
    path = page(owes_280, "send-link")
    answer = http.post(path, {"form_key": form_key(http, path), "what": "pay_balance"}, follow=True)
    said = " ".join(str(m) for m in answer.context["messages"])
    assert "not sent" in said and "emailed" not in said
    assert not mail.outbox and not delivered("pay_balance_link")


def test_a_client_without_an_email_gets_no_link_and_staff_are_told(
        practice: Practice, make_client: Callable[..., Client], front_desk: Any) -> None:
    person = make_client()
    Client.objects.filter(pk=person.pk).update(email="")
    person.refresh_from_db()
    http = signed_in(front_desk)
    path = page(person, "send-link")
    answer = http.post(path, {"form_key": form_key(http, path), "what": "pay_balance"})
    assert "no email address" in errors(answer)
    assert not mail.outbox and not StaffAction.objects.exists()


# --- A reconciliation finding, settled from its page -----------------------------------------------------

def _finding(person: Client, charge: Charge, kind: str, expected: int, actual: int) -> ReconciliationFinding:
    return ReconciliationFinding.objects.create(
        kind=kind, key=f"charge:{charge.pk}", week=dt.date(2026, 11, 23), client=person, charge=charge,
        expected_cents=expected, actual_cents=actual, detail="found by the weekly run",
        first_found_at=FRIDAY_10AM, last_found_at=FRIDAY_10AM)


def test_a_billing_manager_settles_an_overcharge_finding_with_a_refund_once(
        owes_280: Client, billing_manager: Any, front_desk: Any, stripe_server: FakeStripe) -> None:
    tick(FRIDAY_10AM + 14 * DAY)
    first, _ = charges_of(owes_280)
    finding = _finding(owes_280, first, FindingKind.AMOUNT_MISMATCH, 12000, 14000)
    settle = reverse("admin:billing_reconciliationfinding_settle", args=[finding.pk])
    assert signed_in(front_desk).get(settle).status_code == 403

    http = signed_in(billing_manager)
    finding_page = http.get(reverse("admin:billing_reconciliationfinding_change", args=[finding.pk]))
    assert b"Settle (refund, adjustment, write-off)" in finding_page.content
    too_much = http.post(settle, {"form_key": form_key(http, settle), "choice": "refund", "amount": "150",
                                  "reason": "EOB says $120"})
    assert "At most $140.00" in errors(too_much)
    form = {"form_key": form_key(http, settle), "choice": "refund", "amount": "20", "reason": "EOB says $120"}
    assert http.post(settle, form).status_code == 302
    assert "already sent" in errors(http.post(settle, form))
    [refund] = Refund.objects.all()
    assert (refund.amount_cents, refund.status) == (2000, RefundStatus.SUCCEEDED)
    finding.refresh_from_db()
    assert finding.status == FindingStatus.RESOLVED
    assert finding.status_reason == "Refund of $20.00: EOB says $120"
    assert finding.status_by == billing_manager
    settled_again = http.post(settle, {"form_key": form_key(http, settle), "choice": "refund", "amount": "20",
                                       "reason": "again"})
    assert "already resolved" in errors(settled_again)
    assert Refund.objects.count() == 1


def test_a_finding_refund_refused_leaves_no_staff_action_and_the_form_can_be_sent_again(
        owes_280: Client, billing_manager: Any, stripe_server: FakeStripe) -> None:
    tick(FRIDAY_10AM + 14 * DAY)
    first, _ = charges_of(owes_280)
    finding = _finding(owes_280, first, FindingKind.AMOUNT_MISMATCH, 12000, 14000)
    # Another refund of this charge is still waiting for Stripe's answer: this one is refused.
    waiting = Refund.objects.create(charge=first, amount_cents=500, reason="earlier", idempotency_key="refund-waiting",
                                    created_at=FRIDAY_10AM + 14 * DAY)
    settle = reverse("admin:billing_reconciliationfinding_settle", args=[finding.pk])
    http = signed_in(billing_manager)
    form = {"form_key": form_key(http, settle), "choice": "refund", "amount": "20", "reason": "EOB says $120"}
    assert "still waiting for Stripe" in errors(http.post(settle, form))
    assert StaffAction.objects.count() == 0
    finding.refresh_from_db()
    assert finding.status == FindingStatus.OPEN

    Refund.objects.filter(pk=waiting.pk).update(status=RefundStatus.FAILED)
    assert http.post(settle, form).status_code == 302  # the same form, once the cause is gone
    assert StaffAction.objects.count() == 1


def test_an_unpaid_session_finding_is_written_off_from_its_page(
        owes_280: Client, billing_manager: Any, stripe_server: FakeStripe) -> None:
    first, _ = charges_of(owes_280)
    finding = _finding(owes_280, first, FindingKind.UNPAID_SESSION, 14000, 0)
    settle = reverse("admin:billing_reconciliationfinding_settle", args=[finding.pk])
    http = signed_in(billing_manager)
    http.post(settle, {"form_key": form_key(http, settle), "choice": "write_off", "amount": "140",
                       "reason": "client moved away"})
    first.refresh_from_db()
    assert first.status == ChargeStatus.CANCELED
    assert LedgerEntry.objects.get(kind=LedgerKind.WRITE_OFF).amount_cents == -14000
    finding.refresh_from_db()
    assert (finding.status, finding.status_reason) == (FindingStatus.RESOLVED,
                                                       "Write-off of $140.00: client moved away")
    assert "Finding #" in StaffAction.objects.get().reason


# --- Who may open which page ----------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "allowed"), [
    ("front_desk", {"charge-card", "record-payment", "send-link"}),
    ("billing_manager", {"charge-card", "record-payment", "adjust", "send-link"}),
    ("administrator", {"charge-card", "record-payment", "adjust", "send-link"}),
    ("auditor", set()),
])
def test_each_role_opens_the_money_pages_its_role_allows(
        owes_280: Client, request: pytest.FixtureRequest, role: str, allowed: set[str]) -> None:
    http = signed_in(request.getfixturevalue(role))
    client_page = http.get(reverse("admin:billing_client_change", args=[owes_280.pk])).content.decode()
    for what in ("charge-card", "record-payment", "adjust", "send-link"):
        status = http.get(page(owes_280, what)).status_code
        assert status == (200 if what in allowed else 403), (role, what)
        assert (page(owes_280, what) in client_page) == (what in allowed), (role, what)
