"""Every staff page in Chromium at 1280 and 1920 pixels wide, checked for what a person would see as broken:
a table cell squeezed so narrow its words break letter by letter, a page that scrolls sideways, a chart
label cut at the chart's edge, text squeezed into a tall sliver of a column, a page far longer than its rows.

One browser page for the whole tour: each page is loaded once at 1280, checked, widened to 1920 and
checked again. Full-length pictures of the Today page land in test-artifacts/screenshots/.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib import admin
from django.contrib.auth.models import User
from django.test import Client as HttpClient
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from playwright.sync_api import Page

from billing.models import (
    AppointmentStatus,
    ChargeKind,
    ChargeStatus,
    FindingKind,
    LedgerKind,
    Practice,
    ReconciliationFinding,
    ReviewKind,
)
from billing.services.waiting import NO_CARD_HOLD
from tests import factories
from tests.browser.conftest import FAILURES, SCREENSHOTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTHS = (1280, 1920)
NARROWEST_CELL = 60  # px: a cell narrower than this whose words break across lines is squeezed
TALLEST_ROW = 160  # px: a narrow cell taller than this is text squeezed into a sliver

LONG_REASONS = [
    "Cannot work out what the client owes: the client has no coverage on file for the date of service "
    "(Nov 20, 2026); add the benefits from the EHR, then re-check billing.",
    "Fee not charged: the client has not acknowledged the current cancellation policy (version 3).",
    "Balance payment #41 paid $80.00 toward charge #12, which was canceled meanwhile. The client has that much "
    "credit: refund it, or leave it for what they owe next.",
    "Stripe refused charge #18: This PaymentMethod was previously used without being attached to a Customer.",
]

LAYOUT_PROBLEMS = """(limits) => {
    const problems = [];
    const text = el => (el.innerText || "").trim().replace(/\\s+/g, " ");
    const root = document.documentElement;
    if (root.scrollWidth > root.clientWidth + 1) {
        const wide = [...document.querySelectorAll("body *")]
            .filter(el => el.getBoundingClientRect().right > root.clientWidth + 1)
            .filter(el => !el.closest(".results, .nav-sidebar, #toggle-nav-sidebar"))
            .slice(0, 3).map(el => el.tagName.toLowerCase() + "#" + el.id + "." + el.className);
        problems.push(`the page scrolls sideways: ${root.scrollWidth}px in ${root.clientWidth}px ${wide}`);
    }
    // The lines a cell's text takes: one box per line of text (its row may be taller than its text).
    const linesOf = el => {
        const range = document.createRange();
        range.selectNodeContents(el);
        return new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.bottom))).size;
    };
    for (const cell of document.querySelectorAll("td, th")) {
        const words = text(cell);
        const box = cell.getBoundingClientRect();
        if (words.length < 4 || box.width === 0 || cell.closest(".visually-hidden, .chart-table")) continue;
        const lines = linesOf(cell);
        if (box.width < limits.cell && lines > words.split(" ").length + 1) {
            problems.push(`a ${Math.round(box.width)}px cell breaks its words over ${lines} lines: `
                          + `"${words.slice(0, 40)}"`);
        }
        if (box.height > limits.row && box.width < 2 * limits.row && lines > 6) {
            problems.push(`a ${Math.round(box.width)}px wide, ${Math.round(box.height)}px tall cell: `
                          + `"${words.slice(0, 40)}"`);
        }
    }
    const rows = document.querySelectorAll("#content tr").length;
    if (rows > 0 && root.scrollHeight > 1500 + rows * limits.row) {
        problems.push(`the page is ${root.scrollHeight}px long for ${rows} table rows`);
    }
    for (const svg of document.querySelectorAll("svg.chart")) {
        const width = svg.viewBox.baseVal.width;
        for (const label of svg.querySelectorAll("text")) {
            const box = label.getBBox();
            if (box.x < -0.5 || box.x + box.width > width + 0.5) {
                const left = Math.round(box.x), right = Math.round(box.x + box.width);
                problems.push(`chart label cut: "${label.textContent}" spans ${left}-${right} of ${width}`);
            }
        }
    }
    return problems;
}"""


def layout_problems(page: Page) -> list[str]:
    return list(page.evaluate(LAYOUT_PROBLEMS, {"cell": NARROWEST_CELL, "row": TALLEST_ROW}))


@pytest.fixture
def busy_practice(practice: Practice) -> dict[str, Any]:
    """A practice with something in every queue, with reasons as long as the portal writes them."""
    now = timezone.now()
    person = factories.ClientFactory.create(first_name="Alexandra", last_name="Castellanos-Whitfield",
                                            email="alexandra.castellanos-whitfield@example.com",
                                            flagged_for_outreach=True, flagged_reason="3 failed card payments")
    for kind, reason in zip((ReviewKind.PRICING, ReviewKind.FEE_NO_ACK, ReviewKind.PAID_SESSION_CHANGED,
                             ReviewKind.PAYMENT_REFUSED), LONG_REASONS, strict=True):
        for week in range(5 if kind == ReviewKind.PRICING else 2):
            appointment = factories.AppointmentFactory.create(clients=[person],
                                                              starts_at=now - dt.timedelta(days=7 * week + 1))
            factories.ReviewItemFactory.create(kind=kind, client=person, appointment=appointment, reason=reason)
    factories.ReviewItemFactory.create(kind=ReviewKind.STRIPE_LINK, client=person,
                                       reason="Two Stripe customers share this client's email address.")
    factories.ChargeFactory.create(client=person, status=ChargeStatus.DUE, hold_reason=NO_CARD_HOLD,
                                   scheduled_for=now - dt.timedelta(hours=2))
    factories.ChargeFactory.create(client=person, status=ChargeStatus.DUE, amount_cents=90_000,
                                   hold_reason="above the practice's cap of $500.00", scheduled_for=now)
    factories.ChargeFactory.create(client=person, kind=ChargeKind.LATE_CANCEL_FEE, amount_cents=5_000,
                                   scheduled_for=now + dt.timedelta(hours=20),
                                   appointment__status=AppointmentStatus.LATE_CANCEL)
    factories.ChargeFactory.create(client=person, status=ChargeStatus.FAILED, last_failure_code="insufficient_funds",
                                   next_retry_at=now + dt.timedelta(days=3))
    factories.ChargeFactory.create(client=person, status=ChargeStatus.DUE, scheduled_for=now - dt.timedelta(minutes=5))
    charge = factories.ChargeFactory.create(client=person, status=ChargeStatus.SUCCEEDED, amount_cents=14_000)
    factories.LedgerEntryFactory.create(client=person, charge=charge, amount_cents=14_000)
    factories.LedgerEntryFactory.create(client=person, charge=charge, kind=LedgerKind.PAYMENT, amount_cents=-9_000)
    monday = now.date() - dt.timedelta(days=now.date().weekday() + 7)
    for n, finding_kind in enumerate(FindingKind.values):
        ReconciliationFinding.objects.create(kind=finding_kind, key=f"k{n}", week=monday, client=person,
                                             detail="Session with no payment: the card was declined twice",
                                             first_found_at=now, last_found_at=now)
    return {"client": person}


def staff_pages(client_pk: int) -> list[str]:
    """Today, every list page, a client's page, the reports."""
    pages = [reverse("admin:index")]
    for model in admin.site._registry:
        try:
            pages.append(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
        except NoReverseMatch:
            continue
    pages += [reverse("admin:billing_client_change", args=[client_pk]), reverse("admin:billing_ar_aging"),
              reverse("admin:audit_trail"), reverse("admin:billing_reconciliation_run"), "/admin/billing/"]
    return pages


def test_every_staff_page_fits_at_1280_and_1920(page: Page, live_server: Any, busy_practice: dict[str, Any]) -> None:
    user = User.objects.create_superuser("admin", "admin@practice.example", "a-long-test-password-42")
    http = HttpClient()
    http.force_login(user)
    cookie = django_settings.SESSION_COOKIE_NAME
    page.context.add_cookies([{"name": cookie, "value": http.cookies[cookie].value, "url": live_server.url}])

    problems: list[str] = []
    for path in staff_pages(busy_practice["client"].pk):
        page.set_viewport_size({"width": WIDTHS[0], "height": 900})
        response = page.goto(live_server.url + path)
        assert response is not None and response.status == 200, f"{path}: {response and response.status}"
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            found = layout_problems(page)
            problems += [f"{path} at {width}px: {problem}" for problem in found]
            if found:  # a picture of what is wrong, for the person fixing it
                FAILURES.mkdir(parents=True, exist_ok=True)
                name = path.strip("/").replace("/", "-") or "admin"
                page.screenshot(path=str(FAILURES / f"staff-{name}-{width}.png"), full_page=True)
            if path == reverse("admin:index"):
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SCREENSHOTS / f"staff-today-{width}.png"), full_page=True)
    assert not problems, "\n".join(problems)


def test_the_checks_catch_the_layout_they_were_written_for(page: Page, live_server: Any) -> None:
    """The checks fail on what the Today page used to show: a first column squeezed to a letter by long
    reasons beside it, and a chart label starting left of the chart."""
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})
    page.set_content("""<div id="content"><table style="width:300px"><tr>
        <th style="width:100%;word-break:break-word">Cannot work out what the client owes</th>
        <td style="white-space:nowrap">""" + LONG_REASONS[0] + " " + LONG_REASONS[2] + """</td></tr></table>
        <svg class="chart" viewBox="0 0 420 40" width="420" height="40">
        <text x="124" y="15" text-anchor="end" font-size="12">Session with no payment at all this week</text>
        </svg></div>""")
    found = layout_problems(page)
    assert any("breaks its words" in p for p in found), found
    assert any("tall cell" in p for p in found), found
    assert any("chart label cut" in p for p in found), found
    assert any("scrolls sideways" in p for p in found), found
