# The payment fixtures and helpers live in tests/payment_fixtures.py (loaded for the whole suite).
from tests.payment_fixtures import (
    CARD_DECLINES_WHEN_CHARGED,
    CARD_NEEDS_AUTHENTICATION,
    CARD_OK,
    outbox,
    save_card,
    tick,
)

__all__ = ["CARD_DECLINES_WHEN_CHARGED", "CARD_NEEDS_AUTHENTICATION", "CARD_OK", "outbox", "save_card", "tick"]
