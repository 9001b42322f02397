"""The gateway's own limits: it keeps under the configured request rate and backs off when Stripe says 429."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from integrations.stripe import gateway as gw


def test_rate_limiter_spaces_calls_to_the_configured_rate() -> None:
    limiter = gw.RateLimiter(rate=50)  # one call every 20 ms
    started = time.monotonic()
    for _ in range(11):
        limiter.wait()
    assert time.monotonic() - started >= 0.19  # ten gaps of 20 ms
    unlimited = gw.RateLimiter(rate=0)
    started = time.monotonic()
    for _ in range(1000):
        unlimited.wait()
    assert time.monotonic() - started < 0.05


def test_429_is_retried_with_backoff_then_reported_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(gw.time, "sleep", pauses.append)
    calls = {"n": 0}

    def busy_then_ok() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise stripe.RateLimitError("Too many requests")
        return "ok"

    stripe_gateway = gw.StripeGateway(client=Any, rate_per_second=0, max_429_retries=4)  # type: ignore[arg-type]
    assert stripe_gateway._call(busy_then_ok) == "ok"
    assert pauses == [0.5, 1.0]

    def always_busy() -> str:
        raise stripe.RateLimitError("Too many requests")

    with pytest.raises(gw.OutcomeUnknown, match="429"):
        stripe_gateway._call(always_busy)


def test_transport_failures_leave_the_outcome_unknown_and_refusals_are_final() -> None:
    stripe_gateway = gw.StripeGateway(client=Any, rate_per_second=0)  # type: ignore[arg-type]

    def timeout() -> str:
        raise stripe.APIConnectionError("read timed out")

    def refused() -> str:
        raise stripe.InvalidRequestError("No such payment_method: pm_gone", param="payment_method",
                                         code="resource_missing")

    with pytest.raises(gw.OutcomeUnknown):
        stripe_gateway._call(timeout)
    with pytest.raises(gw.GatewayRefused) as refusal:
        stripe_gateway._call(refused)
    assert refusal.value.code == "resource_missing"


@pytest.mark.parametrize(("decline_code", "hard"), [("lost_card", True), ("stolen_card", True),
                                                     ("insufficient_funds", False), ("generic_decline", False)])
def test_hard_declines_are_told_apart(decline_code: str, hard: bool) -> None:
    assert gw.Payment("failed", "pi_1", 100, "card_declined", decline_code).hard_decline is hard
