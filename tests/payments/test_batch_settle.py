"""The tick claims and settles charges a batch at a time: each charge must end as if done alone."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Callable

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.utils import timezone

from billing.audit.access import acting_as
from billing.audit.trail import audit_bulk_updated
from billing.bulk import rows_update
from billing.models import (
    Appointment,
    BillingType,
    Charge,
    ChargeEvent,
    ChargeStatus,
    Client,
    LedgerEntry,
    Practice,
    ReviewItem,
    ReviewKind,
    ReviewStatus,
)
from billing.services.review import review_open
from integrations.ehr.models import WebhookEndpoint, WebhookEvent
from tests.conftest import FakeStripe
from tests.payment_fixtures import CARD_DECLINES_WHEN_CHARGED, CARD_OK, outbox, save_card, tick
from tests.practice_fixtures import FRIDAY_10AM


def _audited(charge: Charge) -> list[tuple[dict[str, list[str]], str | None, object]]:
    entries = LogEntry.objects.filter(content_type=ContentType.objects.get_for_model(Charge), object_id=charge.pk,
                                      action=LogEntry.Action.UPDATE).order_by("pk")
    return [({k: v for k, v in e.changes_dict.items() if k != "updated_at"}, e.actor_email,
             (e.additional_data or {}).get("via")) for e in entries]


def test_one_tick_over_a_mixed_batch_settles_each_charge_as_if_alone(
        immediate: Practice, stripe_server: FakeStripe, make_client: Callable[..., Client],
        completed_session: Callable[..., Appointment]) -> None:
    paying = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)
    declining = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=12000)
    from_ehr = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=9000, source="simplepractice",
                           external_id="c-9")
    WebhookEndpoint.objects.create(source="simplepractice", url="http://127.0.0.1:9/hook", secret="pws_x")
    for client, card in ((paying, CARD_OK), (declining, CARD_DECLINES_WHEN_CHARGED), (from_ehr, CARD_OK)):
        save_card(client, card, stripe_server)
    sessions = {client.pk: completed_session(client, external_id=f"a-{client.pk}") for client in
                (paying, declining, from_ehr)}
    held = Charge.objects.get(appointment=sessions[paying.pk])
    review_open(kind=ReviewKind.CHARGE_CAP, client=paying, appointment=held.appointment, charge=held,
                now=FRIDAY_10AM, reason="was above the cap")

    tick(FRIDAY_10AM)

    charges = {client.pk: Charge.objects.get(appointment=sessions[client.pk]) for client in
               (paying, declining, from_ehr)}
    assert {pk: (c.status, c.attempts) for pk, c in charges.items()} == {
        paying.pk: (ChargeStatus.SUCCEEDED, 1), declining.pk: (ChargeStatus.FAILED, 1),
        from_ehr.pk: (ChargeStatus.SUCCEEDED, 1)}
    succeeded = {c["payment_intent"]: c["amount"] for c in stripe_server.charges() if c["status"] == "succeeded"}
    assert succeeded == {charges[paying.pk].payment_reference: 14000, charges[from_ehr.pk].payment_reference: 9000}
    for pk in (paying.pk, from_ehr.pk):
        moves = list(ChargeEvent.objects.filter(charge=charges[pk]).values_list("from_status", "to_status", "reason"))
        assert moves[-2:] == [(ChargeStatus.DUE, ChargeStatus.PROCESSING, "attempt 1"),
                              (ChargeStatus.PROCESSING, ChargeStatus.SUCCEEDED, "paid on attempt 1")]
        assert sum(LedgerEntry.objects.filter(client_id=pk).values_list("amount_cents", flat=True)) == 0
    assert sum(LedgerEntry.objects.filter(client=declining).values_list("amount_cents", flat=True)) == 12000

    # The audit trail has each move, by the system account through the tick, with the fields it changed.
    reference = charges[paying.pk].payment_reference
    assert _audited(charges[paying.pk])[-2:] == [
        ({"status": ["due", "processing"], "attempts": ["0", "1"]}, "system", "command:billing_tick"),
        ({"status": ["processing", "succeeded"], "payment_reference": ["", reference],
          "receipt_sent_at": ["None", "2026-11-27 15:00:00"]}, "system", "command:billing_tick")]

    receipts = {m.to[0]: m.body for m in outbox("receipt")}
    assert set(receipts) == {paying.email, from_ehr.email}
    assert "Amount charged:  $140.00" in receipts[paying.email]
    assert "Amount charged:  $90.00" in receipts[from_ehr.email]
    assert len(outbox("payment_failed")) == 1
    assert ReviewItem.objects.get(kind=ReviewKind.CHARGE_CAP).status == ReviewStatus.RESOLVED
    [event] = WebhookEvent.objects.all()
    assert (event.type, event.payload["data"]["client"], event.payload["data"]["amount_cents"],
            event.payload["data"]["status"]) == ("charge.succeeded", "c-9", 9000, "succeeded")


@pytest.mark.django_db
def test_rows_update_writes_the_named_fields_of_each_row_and_nothing_else(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Appointment]) -> None:
    first, second = (make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=10000 + n) for n in (1, 2))
    one, two = (Charge.objects.get(appointment=completed_session(c)) for c in (first, second))
    untouched = Charge.objects.get(pk=two.pk)
    later = FRIDAY_10AM + dt.timedelta(days=3)
    one.next_retry_at, one.last_failure_code, one.breakdown = later, "card_declined", [{"label": "x", "cents": 1}]
    two.next_retry_at, two.last_failure_code, two.breakdown = None, "", []
    two.amount_cents = 1  # set on the instance but not named: must not be written
    rows_update([one, two], ["next_retry_at", "last_failure_code", "breakdown"])
    one.refresh_from_db()
    two.refresh_from_db()
    assert (one.next_retry_at, one.last_failure_code, one.breakdown) == (later, "card_declined",
                                                                        [{"label": "x", "cents": 1}])
    assert (two.next_retry_at, two.last_failure_code, two.breakdown) == (None, "", [])
    assert two.amount_cents == untouched.amount_cents


@pytest.mark.django_db
def test_bulk_audit_entries_match_what_a_save_writes(
        practice: Practice, make_client: Callable[..., Client], completed_session: Callable[..., Appointment]) -> None:
    client = make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=10000)
    saved, bulk = (Charge.objects.get(appointment=completed_session(client, external_id=f"s-{n}")) for n in (1, 2))
    with acting_as("task:billing_tick"):
        saved.last_failure_code, saved.hold_reason = "card_declined", "waiting"
        saved.save(update_fields=["last_failure_code", "hold_reason"])
        before = copy.copy(bulk)
        bulk.last_failure_code, bulk.hold_reason = "card_declined", "waiting"
        audit_bulk_updated([(before, bulk)], fields=["last_failure_code", "hold_reason"])
    charges = ContentType.objects.get_for_model(Charge)
    by_save, by_bulk = (LogEntry.objects.filter(content_type=charges, object_id=c.pk, action=LogEntry.Action.UPDATE)
                        .latest("pk") for c in (saved, bulk))
    assert by_bulk.changes_dict == by_save.changes_dict == {"last_failure_code": ["", "card_declined"],
                                                            "hold_reason": ["", "waiting"]}
    context = ("actor_id", "actor_email", "additional_data", "remote_addr")
    assert [getattr(by_bulk, f) for f in context] == [getattr(by_save, f) for f in context]
    assert by_bulk.object_repr == by_save.object_repr.replace(f"#{saved.pk}", f"#{bulk.pk}")
    assert by_bulk.actor_email == "system" and abs(by_bulk.timestamp - timezone.now()) < dt.timedelta(minutes=1)
