"""Staff lists as a large practice meets them: counts that stop at a cap, a date drill-down that does not
read every row, and searches through the clients found or an exact id."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from billing.admin.common import CappedCountPaginator
from billing.models import AppointmentStatus, LedgerKind
from tests import factories

pytestmark = pytest.mark.django_db


def test_a_list_past_the_cap_says_more_than_and_counts_no_further(admin_client: HttpClient,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CappedCountPaginator, "CAP", 3)
    factories.ClientFactory.create_batch(5)
    page = admin_client.get(reverse("admin:billing_client_changelist")).content.decode()
    assert "more than 3 clients" in page
    few = admin_client.get(reverse("admin:billing_client_changelist") + "?q=nobody-by-that-name").content.decode()
    assert "0 clients" in few


def test_the_date_drill_down_offers_the_months_between_the_first_and_last_session(admin_client: HttpClient) -> None:
    for day in (dt.datetime(2026, 1, 20, 15, tzinfo=dt.UTC), dt.datetime(2026, 3, 5, 15, tzinfo=dt.UTC)):
        factories.AppointmentFactory.create(starts_at=day)
    page = admin_client.get(reverse("admin:billing_appointment_changelist")).content.decode()
    assert all(month in page for month in ("January 2026", "February 2026", "March 2026"))
    days = admin_client.get(reverse("admin:billing_appointment_changelist")
                            + "?starts_at__year=2026&starts_at__month=3").content.decode()
    assert "March 5" in days and "March 6" not in days


def test_sessions_are_found_by_client_or_by_the_ehrs_id(admin_client: HttpClient) -> None:
    ana = factories.ClientFactory.create(first_name="Ana", last_name="Quintero")
    hers = factories.AppointmentFactory.create(clients=[ana], status=AppointmentStatus.COMPLETED)
    other = factories.AppointmentFactory.create(clients=[factories.ClientFactory.create()], external_id="ehr-777")
    url = reverse("admin:billing_appointment_changelist")
    by_name = admin_client.get(url + "?q=quinter").context["cl"].result_list
    assert [a.pk for a in by_name] == [hers.pk]
    by_id = admin_client.get(url + "?q=ehr-777").context["cl"].result_list
    assert [a.pk for a in by_id] == [other.pk]


def test_the_ledger_is_found_by_client_or_by_stripe_payment_id(admin_client: HttpClient) -> None:
    charge = factories.ChargeFactory.create()
    factories.PaymentAttemptFactory.create(charge=charge, payment_intent_id="pi_3Nfound")
    paid = factories.LedgerEntryFactory.create(client=charge.client, charge=charge, kind=LedgerKind.PAYMENT,
                                               amount_cents=-charge.amount_cents)
    someone = factories.LedgerEntryFactory.create(client=factories.ClientFactory.create(last_name="Zelinski"))
    url = reverse("admin:billing_ledgerentry_changelist")
    assert [e.pk for e in admin_client.get(url + "?q=pi_3Nfound").context["cl"].result_list] == [paid.pk]
    assert [e.pk for e in admin_client.get(url + "?q=zelinsk").context["cl"].result_list] == [someone.pk]
