"""Shared fixtures. The suite runs against PostgreSQL (bin/test sets DATABASE_URL: see devtools/localpg.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

pytest_plugins = ["tests.practice_fixtures", "tests.payment_fixtures"]

# factory_boy logs each row it builds (client names included) at DEBUG: test tooling, not the portal, so it
# stays out of the log output the privacy tests scan.
logging.getLogger("factory").setLevel(logging.INFO)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reports the ids to the scheduler
def pytest_collection_finish(session: pytest.Session) -> None:
    """Node ids as pytest-xdist schedules them (bin/test runs one worker per core, ``--dist loadgroup``):
    - schemathesis gives every operation's test item one id (the test function's): each gets its operation
      in its id, as a parametrized test would (``test_api_answers_as_its_schema_says[POST /api/v1/events/]``);
    - a test marked ``xdist_group`` gets its group in its id (``...@benchmarks``), which is how the scheduler
      keeps a group on one worker. pytest-xdist writes it where pytest 9 no longer reads it (``_nodeid``),
      so it is written here where pytest 9 does."""
    from _pytest.nodeid import coerce_node_id

    grouped = bool(getattr(session.config.option, "loadgroup", False))  # set on workers by pytest-xdist
    for item in session.items:
        nodeid = item.nodeid
        operation = getattr(item, "operation_label", None)
        if operation and not nodeid.endswith("]"):
            nodeid = f"{nodeid}[{operation}]"
        groups = sorted({str(mark.args[0]) for mark in item.iter_markers("xdist_group") if mark.args})
        if grouped and groups and "@" not in nodeid:
            nodeid = f"{nodeid}@{'_'.join(groups)}"
        if nodeid != item.nodeid:
            item._id = coerce_node_id(nodeid)


@pytest.fixture(autouse=True)
def _staff_pass_the_second_factor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Staff need a second factor for every admin page (portal.security.StaffSessionMiddleware). A test that
    signs a staff member in with ``force_login`` (pytest-django's ``admin_client`` does) gets a session that
    passed it; tests/security signs in without it where that is the point (tests/security/staff.py)."""
    from django.test import Client as HttpClient

    from tests.security.staff import force_login_with_second_factor

    monkeypatch.setattr(HttpClient, "force_login", force_login_with_second_factor)


@pytest.fixture(autouse=True)
def _fresh_audit_context() -> Iterator[None]:
    """auditlog keeps its actor in a context variable that its own context managers never reset: each test
    starts without one, so an actor a request left behind cannot sign another test's entries."""
    from auditlog.context import auditlog_value

    token = auditlog_value.set({"signal_duid": None})
    yield
    auditlog_value.reset(token)


# Staff personas, one per role (billing/roles.py), each a staff account with its role's group.
def _persona(username: str, role_name: str) -> Any:
    from billing import roles
    from tests.security.staff import staff_member

    return staff_member(username, getattr(roles, role_name))


@pytest.fixture
def front_desk(db: None) -> Any:
    return _persona("desk", "FRONT_DESK")


@pytest.fixture
def billing_manager(db: None) -> Any:
    return _persona("manager", "BILLING_MANAGER")


@pytest.fixture
def auditor(db: None) -> Any:
    return _persona("auditor", "AUDITOR")


@pytest.fixture
def administrator(db: None) -> Any:
    return _persona("head", "ADMINISTRATOR")


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Rate limits and throttles count in the cache: each test starts from zero."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _no_real_stripe(settings: Any) -> Iterator[None]:
    """No test talks to real Stripe: without the fake server (the stripe_server fixture), Stripe calls
    are refused at once by a closed local port."""
    from integrations.stripe.gateway import get_gateway

    settings.STRIPE_API_BASE = "http://127.0.0.1:9"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    get_gateway.cache_clear()
    yield
    get_gateway.cache_clear()


@pytest.fixture(autouse=True)
def _emails_in_memory(settings: pytest.FixtureRequest) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"  # type: ignore[attr-defined]


# The local fake Stripe server (localstripe + the fidelity layer in devtools/fakestripe), one process
# for the whole run, wiped before each test that uses it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def fake_stripe_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import subprocess
    import sys
    import time

    port_file = tmp_path_factory.mktemp("fakestripe") / "port"
    process = subprocess.Popen([sys.executable, "-m", "devtools.fakestripe", "--port", "0", "--port-file",
                                str(port_file)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not port_file.exists() or not port_file.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the fake Stripe server did not start: {process.stderr.read()!r}")  # type: ignore[union-attr]
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port_file.read_text()}"
    process.terminate()
    process.wait(10)


@pytest.fixture
def stripe_server(fake_stripe_url: str, settings: Any) -> Iterator[FakeStripe]:
    """A wiped fake Stripe server, with the portal's gateway pointed at it."""
    from integrations.stripe.gateway import get_gateway

    settings.STRIPE_API_BASE = fake_stripe_url
    settings.STRIPE_SECRET_KEY = "sk_test_portal"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_portal"
    settings.STRIPE_WEBHOOK_SECRET = "whsec_test_portal"
    settings.STRIPE_JS_URL = f"{fake_stripe_url}/js.stripe.com/v3/"
    settings.STRIPE_MAX_NETWORK_RETRIES = 0
    settings.STRIPE_MAX_REQUESTS_PER_SECOND = 0
    get_gateway.cache_clear()
    server = FakeStripe(fake_stripe_url)
    server.wipe()
    yield server
    get_gateway.cache_clear()


class FakeStripe:
    """What a test may ask the fake server directly (as Stripe.js or the Stripe dashboard would)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, headers={"Authorization": "Bearer sk_test_portal"}, timeout=10)

    def wipe(self) -> None:
        self.http.delete("/_config/everything").raise_for_status()

    def requests(self) -> list[dict[str, str]]:
        return self.http.get("/_config/requests").json()

    def confirm_setup(self, client_secret: str, number: str) -> dict[str, Any]:
        """What Stripe.js's confirmCardSetup does with the Card Element's inputs."""
        setup_intent = client_secret.split("_secret_")[0]
        response = self.http.post(f"/v1/setup_intents/{setup_intent}/confirm", json={
            "key": "pk_test_portal", "use_stripe_sdk": True, "client_secret": client_secret,
            "payment_method_data": {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030,
                                                             "cvc": "123"}}})
        body: dict[str, Any] = response.json()
        if body.get("status") == "requires_action":  # the client passes the bank's 3-D Secure check
            body = self.http.post(f"/v1/setup_intents/{setup_intent}/confirm", json={
                "key": "pk_test_portal", "use_stripe_sdk": True, "client_secret": client_secret}).json()
        return body

    def authenticate(self, payment_intent: str, client_secret: str, success: bool = True) -> dict[str, Any]:
        """What Stripe.js's confirmCardPayment does after the client passes 3-D Secure."""
        response = self.http.post(f"/v1/payment_intents/{payment_intent}/_authenticate?success={str(success).lower()}",
                                  json={"key": "pk_test_portal", "client_secret": client_secret})
        return response.json()

    def confirm_payment(self, client_secret: str, number: str) -> httpx.Response:
        """What Stripe.js's confirmCardPayment does with a card typed on the page (a payment made once): the
        publishable key and the intent's client secret, no secret key."""
        payment_intent = client_secret.split("_secret_")[0]
        return httpx.post(f"{self.url}/v1/payment_intents/{payment_intent}/confirm", timeout=10, json={
            "key": "pk_test_portal", "use_stripe_sdk": True, "client_secret": client_secret,
            "payment_method_data": {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2030,
                                                             "cvc": "123"}}})

    def charges(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        while True:
            page = self.http.get("/v1/charges", params=params).json()
            found += page["data"]
            if not page.get("has_more") or not page["data"]:
                return found
            params["starting_after"] = page["data"][-1]["id"]

    def payment_intent(self, payment_intent: str) -> dict[str, Any]:
        return self.http.get(f"/v1/payment_intents/{payment_intent}").json()
