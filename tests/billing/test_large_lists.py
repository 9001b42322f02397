"""Staff lists as a large practice meets them: counts that stop at a cap, a date drill-down that does not
read every row, and searches through the clients found or an exact id."""

from __future__ import annotations

import datetime as dt
from typing import Any

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


def test_a_clients_page_shows_the_newest_20_charges_and_ledger_lines_and_links_to_all_of_them(
        admin_client: HttpClient) -> None:
    client = factories.ClientFactory.create(first_name="Ana", last_name="Quintero")
    start = dt.date(2025, 1, 6)
    charges = [factories.ChargeFactory.create(client=client, amount_cents=10_000 + week) for week in range(30)]
    for week, charge in enumerate(charges):
        factories.LedgerEntryFactory.create(client=client, charge=charge, amount_cents=charge.amount_cents,
                                            occurred_on=start + dt.timedelta(weeks=week))
    someone_else = factories.LedgerEntryFactory.create(client=factories.ClientFactory.create())
    page = admin_client.get(reverse("admin:billing_client_change", args=[client.pk]))
    html = page.content.decode()

    ledger_shown = [form.instance for form in _inline(page, "ledgerentry").forms]
    assert [e.occurred_on for e in ledger_shown] == [start + dt.timedelta(weeks=w) for w in range(29, 9, -1)]
    assert len(_inline(page, "charge").forms) == 20
    assert "Only the newest 20 are shown here." in html
    all_ledger = reverse("admin:billing_ledgerentry_changelist") + f"?client__id__exact={client.pk}"
    assert f'href="{all_ledger}"' in html.replace("&amp;", "&") and "All ledger entries of this client" in html
    listed = admin_client.get(all_ledger).context["cl"]
    assert listed.result_count == 30 and someone_else not in listed.result_list
    assert admin_client.get(reverse("admin:billing_charge_changelist")
                            + f"?client__id__exact={client.pk}").context["cl"].result_count == 30

    # The page still saves with only some of the rows on it.
    form = {key: value for key, value in _post_data(page).items()}
    form["last_name"] = "Quintero-Ruiz"
    assert admin_client.post(reverse("admin:billing_client_change", args=[client.pk]), form).status_code == 302
    client.refresh_from_db()
    assert client.last_name == "Quintero-Ruiz"


def test_a_client_with_a_few_rows_sees_them_all_and_no_link(admin_client: HttpClient) -> None:
    entry = factories.LedgerEntryFactory.create()
    html = admin_client.get(reverse("admin:billing_client_change", args=[entry.client_id])).content.decode()
    assert "Only the newest" not in html


def _inline(page: object, model_name: str) -> Any:
    formsets = [f.formset for f in page.context["inline_admin_formsets"]]  # type: ignore[attr-defined]
    return next(f for f in formsets if f.model._meta.model_name == model_name)


def _post_data(page: object) -> dict[str, str]:
    """What the browser would post back: the form's initial values and every inline's management form."""
    data: dict[str, str] = {}
    adminform = page.context["adminform"].form  # type: ignore[attr-defined]
    for name, field in adminform.fields.items():
        value = adminform.initial.get(name, field.initial)
        if value is not None:
            data[name] = "on" if value is True else ("" if value is False else str(value))
    for inline in page.context["inline_admin_formsets"]:  # type: ignore[attr-defined]
        management = inline.formset.management_form
        for name in management.fields:
            data[management.add_prefix(name)] = str(management.initial.get(name, ""))
        for form in inline.formset.forms:
            if form.instance.pk:
                data[form.add_prefix("id")] = str(form.instance.pk)
                fk = inline.formset.fk.name
                data[form.add_prefix(fk)] = str(inline.formset.instance.pk)
    return data
