"""Browser tests: Debian's Chromium, driven by Playwright, against the live portal and the fake Stripe server.

One browser for the whole run, a fresh context (cookies, storage) per test. The portal runs in
pytest-django's ``live_server`` thread on the test database, so these tests use ``transactional_db``;
the page loads the fake Stripe.js from the fake Stripe server, which the portal's gateway also talks to.

Chromium comes from apt (``apt-get install chromium``; bin/test does it where it may), not ``playwright install``.
If it cannot start, every browser test fails with the reason: a missing browser is not a pass.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, Error, Page, Playwright, expect, sync_playwright

from billing.models import Appointment, AppointmentStatus, BillingType, Client, Practice
from billing.services.schedule import appointment_set_status
from tests.conftest import FakeStripe
from tests.payment_fixtures import save_card

CHROMIUM = os.environ.get("PORTAL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
FAILURES = ROOT / "test-artifacts" / "browser-failures"
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
TIMEOUT_MS = 15_000  # generous for a loaded CI machine; every wait is for something visible, never a sleep

CARD_OK = "4242424242424242"
CARD_NEEDS_AUTHENTICATION = "4000002760003184"

AUTHORIZATION = (
    "By saving this card you authorize Riverbend Counseling to charge it, without asking you each time, for "
    "your share of each completed session and for late-cancellation and no-show fees under our cancellation "
    "policy. We email you a receipt after each charge. You can withdraw this authorization by calling us.")
CANCELLATION_POLICY = "Please cancel at least 24 hours ahead. A late cancellation costs $50.00, a no-show $75.00."


# --- the browser ------------------------------------------------------------------------------------------

# Package scope: one browser for all the browser tests, stopped before any other test package runs.
@pytest.fixture(scope="package")
def playwright_driver() -> Iterator[Playwright]:
    # While Playwright's sync API is started, its asyncio loop counts as running on this thread, and
    # Django's ORM would refuse every query as "called from an async context". The tests are plain
    # synchronous code, so the guard is lifted for exactly as long as Playwright runs.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    driver = sync_playwright().start()
    try:
        yield driver
    finally:
        driver.stop()
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="package")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium is not installed at {CHROMIUM}: run `apt-get install -y chromium` (as bin/test does) "
                    "or set PORTAL_CHROMIUM to a Chromium binary. The browser tests cannot run without it.",
                    pytrace=False)
    try:
        launched = playwright_driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
    except Error as error:
        pytest.fail(f"Chromium at {CHROMIUM} could not start, so the browser tests cannot run:\n{error}",
                    pytrace=False)
    expect.set_options(timeout=TIMEOUT_MS)
    yield launched
    launched.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    setattr(item, f"report_{report.when}", report)  # lets the page fixture keep a screenshot of a failure
    return report


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh desktop-sized context; uncaught JavaScript errors fail the test."""
    context: BrowserContext = browser.new_context(viewport=VIEWPORTS["desktop"], locale="en-US")  # type: ignore[arg-type]
    context.set_default_timeout(TIMEOUT_MS)
    opened = context.new_page()
    script_errors: list[str] = []
    opened.on("pageerror", lambda error: script_errors.append(str(error)))
    yield opened
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        FAILURES.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        with contextlib.suppress(Error):  # a crashed page has no picture to keep
            opened.screenshot(path=str(FAILURES / f"{name}.png"), full_page=True)
    context.close()
    assert not script_errors, f"JavaScript errors on the page: {script_errors}"


# --- the portal -------------------------------------------------------------------------------------------

@dataclass
class Portal:
    url: str
    stripe: FakeStripe
    practice: Practice


@pytest.fixture
def portal(transactional_db: None, live_server: Any, stripe_server: FakeStripe, settings: Any,
           practice: Practice) -> Portal:
    """The live portal: emailed links point at it, charges run as soon as a session is complete."""
    settings.PORTAL_BASE_URL = live_server.url
    practice.charge_timing = "immediate"
    practice.card_authorization_text = AUTHORIZATION
    practice.cancellation_policy_text = CANCELLATION_POLICY
    practice.save()
    return Portal(live_server.url, stripe_server, practice)


@pytest.fixture
def self_pay_client(make_client: Callable[..., Client]) -> Client:
    return make_client(billing_type=BillingType.SELF_PAY, session_rate_cents=14000)


@pytest.fixture
def complete_session(make_appointment: Callable[..., Appointment]) -> Callable[..., Appointment]:
    """A session that ended at ``at``, marked complete then (the practice charges immediately)."""
    def complete(client: Client, at: dt.datetime) -> Appointment:
        appointment = make_appointment(client, starts_at=at - dt.timedelta(hours=1))
        return appointment_set_status(appointment=appointment, status=AppointmentStatus.COMPLETED, now=at,
                                      actor="test")
    return complete


@pytest.fixture
def payment_waiting(portal: Portal, self_pay_client: Client,
                    complete_session: Callable[..., Appointment]) -> str:
    """The link to a payment the bank held back (the card saved without a browser, as tests/payments does)."""
    now = timezone.now()
    save_card(self_pay_client, CARD_NEEDS_AUTHENTICATION, portal.stripe, now=now)
    complete_session(self_pay_client, at=now)
    tick(now)
    return link_in(emails("authentication_required")[0])


def tick(at: dt.datetime) -> str:
    out = StringIO()
    call_command("billing_tick", "--at", at.isoformat(), stdout=out)
    return out.getvalue()


def emails(template: str) -> list[Any]:
    return [m for m in mail.outbox if m.extra_headers.get("X-Portal-Email") == template]


def link_in(message: Any) -> str:
    """The portal link an email carries."""
    found = re.findall(r"https?://\S+/p/\S+/", message.body)
    assert len(found) == 1, f"expected one portal link in {message.subject!r}: {message.body}"
    return str(found[0])


# --- what a client does in the browser ---------------------------------------------------------------------

def open_link(page: Page, url: str, status: int = 200) -> None:
    response = page.goto(url)
    assert response is not None and response.status == status, (
        f"{url} answered {response and response.status}, expected {status}")


def type_card(page: Page, number: str, exp_month: str = "12", exp_year: str = "30", cvc: str = "123",
              postal_code: str = "07701") -> None:
    """Type into the fake Card Element's five inputs (its year input takes two digits)."""
    card = page.locator("#card-element")
    for placeholder, value in (("number", number), ("exp_month", exp_month), ("exp_year", exp_year),
                               ("cvc", cvc), ("postal_code", postal_code)):
        card.get_by_placeholder(placeholder, exact=True).fill(value)


def pass_three_d_secure(page: Page) -> None:
    """The fake bank's 3-D Secure dialog (the fake Stripe.js draws it in the page)."""
    page.get_by_role("button", name="Complete authentication").click()


def enroll_card(page: Page, link: str, number: str, *, three_d_secure: bool = False,
                shoot: Callable[[str], None] | None = None) -> None:
    """Open an enrollment link, agree, type a card and save it; waits for "Card saved"."""
    open_link(page, link)
    expect(page.locator("#authorization")).to_contain_text("By saving this card you authorize")
    page.get_by_label("I have read this and authorize").check()
    type_card(page, number)
    page.get_by_role("button", name="Save card").click()
    if three_d_secure:
        expect(page.get_by_text("3D Secure")).to_be_visible()
        if shoot:
            shoot("enroll-3ds-dialog")
        pass_three_d_secure(page)
    expect(page.locator("#save-card")).to_have_text("Card saved")
    expect(page.locator("#message")).to_contain_text(f"ending {number[-4:]}")


def screenshot(page: Page, name: str) -> None:
    """The page as it is now, at phone and at desktop width (full length), under test-artifacts/."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for device, viewport in VIEWPORTS.items():
        page.set_viewport_size(viewport)  # type: ignore[arg-type]
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{device}.png"), full_page=True)
    page.set_viewport_size(VIEWPORTS["desktop"])  # type: ignore[arg-type]
