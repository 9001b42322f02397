"""The demo's cards: saved through the real enrollment flow against the fake Stripe server, once."""

from __future__ import annotations

import datetime as dt

import pytest
from django.test import override_settings

from billing.models import CardConsent, Client, ClientLink, LinkPurpose
from devtools.demo import (
    CARD_DECLINED_WHEN_CHARGED,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    SOURCE,
    demo_card_number,
    demo_enrollment_link,
    seed_demo,
    seed_demo_cards,
)
from tests.conftest import FakeStripe

NOW = dt.datetime(2026, 11, 26, 20, 0, tzinfo=dt.UTC)
# The first twelve clients hold one of each card path (see devtools.demo.CARD_CHOSEN) and keep the test quick.
SMALL = 12
FAST_HASHER = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def demo_clients(db: None) -> list[Client]:
    with override_settings(PASSWORD_HASHERS=FAST_HASHER):
        seed_demo(now=NOW, clients=SMALL)
    return list(Client.objects.filter(source=SOURCE).order_by("external_id"))


def test_demo_cards_are_saved_through_the_enrollment_flow_once(demo_clients: list[Client],
                                                               stripe_server: FakeStripe) -> None:
    wanted = {c.external_id: demo_card_number(c.external_id) for c in demo_clients}
    assert {CARD_OK, CARD_DECLINED_WHEN_CHARGED, CARD_NEEDS_AUTHENTICATION, None} <= set(wanted.values())

    first = seed_demo_cards(now=NOW)

    with_card = [key for key, number in wanted.items() if number]
    assert sum(first.saved.values()) == len(with_card)
    assert first.without == len(wanted) - len(with_card) and first.already == 0
    for client in Client.objects.filter(source=SOURCE):
        number = wanted[client.external_id]
        assert client.card_last4 == (number[-4:] if number else ""), client.external_id
        if number:  # the consent the client gave, tied to the card, as on the real page
            assert CardConsent.objects.filter(client=client, payment_method_id=client.card_payment_method_id,
                                              ip_address="127.0.0.1").exists()
            assert client.stripe_customer_id
    # Stripe.js's part went to the fake server like the browser's would: one confirmed SetupIntent per card.
    confirms = [r for r in stripe_server.requests() if r["path"].endswith("/confirm")]
    assert len({r["path"] for r in confirms}) == len(with_card)

    again = seed_demo_cards(now=NOW + dt.timedelta(hours=1))

    assert again.saved == {} and again.already == len(with_card) and again.relinked == 0
    assert CardConsent.objects.filter(client__source=SOURCE).count() == len(with_card)


def test_demo_cards_are_saved_again_when_the_fake_server_lost_its_data(demo_clients: list[Client],
                                                                       stripe_server: FakeStripe) -> None:
    seed_demo_cards(now=NOW)
    stripe_server.wipe()  # as if var/fakestripe.pickle were deleted and the database kept

    again = seed_demo_cards(now=NOW)

    assert again.relinked == sum(1 for c in demo_clients if demo_card_number(c.external_id))
    assert sum(again.saved.values()) == again.relinked
    customers = stripe_server.http.get("/v1/customers", params={"limit": 100}).json()["data"]
    assert {c.stripe_customer_id for c in Client.objects.filter(source=SOURCE).exclude(stripe_customer_id="")} \
        == {c["id"] for c in customers}


def test_the_banner_link_enrolls_a_client_without_a_card(demo_clients: list[Client], stripe_server: FakeStripe,
                                                          settings: object) -> None:
    seed_demo_cards(now=NOW)

    found = demo_enrollment_link(now=NOW)

    assert found is not None
    client, url = found
    assert not client.has_card and "/p/" in url
    assert ClientLink.objects.filter(client=client, purpose=LinkPurpose.ENROLL_CARD, used_at__isnull=True).exists()


def test_demo_cards_need_the_fake_server(demo_clients: list[Client], settings: object) -> None:
    settings.STRIPE_API_BASE = ""  # type: ignore[attr-defined]

    with pytest.raises(ValueError, match="fake Stripe"):
        seed_demo_cards(now=NOW)
